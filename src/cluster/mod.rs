//! Cluster mode (`API-cluster.md`): our own NATS client, driven by the cluster thread's
//! `mio::Poll`. `proto` and `headers` are pure (the wire text); `client` is the state machine;
//! `config`, `subject` and `members` are the cluster's settings, subjects and members table.

pub mod client;
pub mod config;
mod dialer;
pub mod event;
pub mod headers;
mod link;
pub mod members;
pub mod proto;
pub mod subject;
pub mod url;

pub use client::{Client, Options};
pub use event::{Event, Message, Payload, PubError, Reason, RequestError, RequestToken, Sid};
pub use headers::Headers;
pub use url::ServerUrl;
