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

/// One stored (or being stored) message. Shared as `Arc<Message>` between the store thread,
/// the in-memory tail and the sockets it is written to (`OutQueue::push_message`); the payload
/// is never copied. The payload is the message's own `Vec`, not a second `Arc`: one allocation
/// fewer per pub, and one fewer cold block to free when the tail lets the message go.
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
    pub payload: Vec<u8>,
}

/// FxHash (rustc's), for the maps every pub looks in (topics by name, `X-Msg-Id`s): their keys
/// come from clients, but only what was created or stored is in them (bounded by
/// `ESUB_MAX_TOPICS` and the id window), so a crafted collision costs a probe, not a flood;
/// SipHash showed in the pub profiles.
#[derive(Default, Clone, Copy)]
pub struct Fx(u64);

impl std::hash::Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let v = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
}

pub type FxBuild = std::hash::BuildHasherDefault<Fx>;
