//! topics-bench: esub's topics (`API-topics.md`) against Redis Streams, the same workload on
//! both: single and batch pubs, end to end through a consumer group, fsync always.

pub mod config;
pub mod esub;
pub mod payload;
pub mod redis;
pub mod report;
pub mod resp;
pub mod run;
pub mod setup;
