//! STUB signatures until the codecs land.
#![allow(unused_variables)]

pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    todo!()
}
pub struct Limits {
    pub max_payload: usize,
    pub max_key: usize,
    pub max_tag: usize,
    pub max_records: usize,
}
pub struct BatchRecord<'a> {
    pub key: &'a [u8],
    pub tag: &'a [u8],
    pub payload: &'a [u8],
}
#[derive(Clone, Copy, Debug)]
pub enum BatchError {
    Illegal,
}
impl BatchError {
    pub fn status(self) -> u16 {
        400
    }
    pub fn text(self) -> &'static str {
        "illegal batch"
    }
}
pub fn decode_batch<'a>(
    body: &'a [u8],
    limits: &Limits,
) -> Result<Vec<BatchRecord<'a>>, BatchError> {
    todo!()
}
#[derive(Clone, Copy, Debug)]
pub enum AckError {
    Partial,
}
impl AckError {
    pub fn text(self) -> &'static str {
        "partial ack not allowed"
    }
}
pub fn parse_ack_lists(p: &[&[u8]], o: &[&[u8]]) -> Result<Vec<(i64, i64)>, AckError> {
    todo!()
}
pub fn parse_ack_json(body: &[u8]) -> Option<Vec<(i64, i64)>> {
    todo!()
}
pub fn escape_key(key: &[u8], out: &mut String) {
    todo!()
}
pub fn tag_tokens(v: &[u8]) -> Vec<&[u8]> {
    todo!()
}
pub fn tag_matches(filter: &[&[u8]], tag: &[u8]) -> bool {
    todo!()
}
pub fn sub_record_head(partition: i32, offset: i64, len: i32) -> [u8; 16] {
    todo!()
}
