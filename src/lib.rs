//! esub: one process waits for the answer another process will produce.
//!
//! A caller parks `GET /sub/<key>`; a worker's `POST /rep/<key>` lands in the caller's socket.
//!
//! ```text
//!  main: read Config, bind, spawn, wait for a signal, ask workers to drain, join
//!   |
//!   +-- worker 0 .. N-1   one per core (ESUB_WORKERS); each owns a mio::Poll, its own
//!                         SO_REUSEPORT listener, a Slab<Conn>, a timer wheel and a mailbox
//!   +-- esub-store        (ESUB_STORE) the relay's stored reps, group commit
//!   +-- esub-topics       (ESUB_TOPICS) topic partition logs and the metadata log, group
//!                         commit; answers come back through the workers' mailboxes
//! ```
//! A rep claims its sub in the sharded `Registry` and posts the body (an `Arc`, never copied)
//! to the sub's worker, which writes head and body with one vectored write and answers back.

pub mod announce;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod http;
pub mod log;
pub mod metrics;
pub mod node;
pub mod registry;
pub mod relay;
pub mod router;
pub mod server;
pub mod store;
pub mod topics;
pub mod ws;
