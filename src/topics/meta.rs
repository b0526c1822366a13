//! STUB until the metadata log lands.

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CommitKey {
    pub topic: String,
    pub app: String,
    pub group: String,
    pub queue: String,
    pub partition: u32,
}

pub enum MetaRec {
    Commit { key: CommitKey, offset: i64 },
    ForgetGroup { topic: String, app: String, group: String },
}
