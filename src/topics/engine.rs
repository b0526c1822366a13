//! STUB (in memory) until the topics store thread lands.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Message;
use super::log::PartitionReader;
use super::meta::{CommitKey, MetaRec};
use crate::store::StoreFail;

#[derive(Clone, Debug)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: u32,
    pub retention_hours: f64,
    pub retention_bytes: i64,
}

pub struct EngineConfig {
    pub dir: PathBuf,
    pub fsync: crate::config::Fsync,
    pub fsync_interval: Duration,
    pub segment_bytes: u64,
    pub retention_check: Duration,
}

pub type Done = Box<dyn FnOnce(Result<(), StoreFail>) + Send>;

pub enum TReq {
    Topic { spec: TopicSpec, done: Box<dyn FnOnce(Result<Vec<PartitionReader>, StoreFail>) + Send> },
    Append { topic: Arc<str>, partition: u32, msgs: Vec<Arc<Message>>, done: Done },
    Meta { recs: Vec<MetaRec>, done: Done },
    Shutdown,
}

pub struct OpenedTopic {
    pub spec: TopicSpec,
    pub readers: Vec<PartitionReader>,
}

pub struct Opened {
    pub topics: Vec<OpenedTopic>,
    pub commits: BTreeMap<CommitKey, i64>,
}

pub struct TopicEngine {
    topics: HashMap<String, Vec<PartitionReader>>,
}

impl TopicEngine {
    pub fn open(_cfg: EngineConfig) -> Result<(TopicEngine, Opened), String> {
        Ok((
            TopicEngine { topics: HashMap::new() },
            Opened { topics: Vec::new(), commits: BTreeMap::new() },
        ))
    }

    pub fn run(
        mut self,
        rx: std::sync::mpsc::Receiver<TReq>,
        _on_retention: Box<dyn Fn(&str, u32, i64) + Send>,
    ) {
        while let Ok(req) = rx.recv() {
            match req {
                TReq::Topic { spec, done } => {
                    let r = self
                        .topics
                        .entry(spec.name.clone())
                        .or_insert_with(|| {
                            vec![PartitionReader::default(); spec.partitions as usize]
                        })
                        .clone();
                    done(Ok(r));
                }
                TReq::Append { topic, partition, msgs, done } => {
                    let r = &self.topics[&*topic][partition as usize];
                    done(r.stub_append(&msgs).map_err(|_| StoreFail::Io));
                }
                TReq::Meta { done, .. } => done(Ok(())),
                TReq::Shutdown => return,
            }
        }
    }
}
