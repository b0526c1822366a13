//! Topics: the Kafka-style half (`API-topics.md`). Partitioned logs on disk (`log`), a metadata
//! log for topics and commits (`meta`), delayed jobs (`jobs`, `joblog`, `scheduler`), one store
//! thread that owns them all and commits in groups (`engine`), pure codecs (`codec`), the apps
//! file (`auth`), the rate limits (`rate`), and the in-memory state workers share (`state`)
//! behind the `/v1/` routes.

pub mod auth;
pub mod codec;
pub mod dedupe;
pub mod engine;
pub mod hub;
pub mod joblog;
pub mod jobs;
pub mod journal;
pub mod log;
pub mod meta;
pub mod rate;
pub mod route;
pub mod scheduler;
pub mod state;
pub mod status;

use crate::conn::buffer::Body;

/// One stored (or being stored) message. Shared as `Arc<Message>` between the store thread,
/// the in-memory tail and the sockets it is written to; the payload is never copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub offset: i64,
    /// Append time, unix milliseconds.
    pub time_ms: u64,
    /// Empty = no key.
    pub key: Vec<u8>,
    /// Empty = no tag.
    pub tag: Vec<u8>,
    /// Idempotency id (`X-Msg-Id`, part 2); empty = none.
    pub msg_id: Vec<u8>,
    pub payload: Body,
}
