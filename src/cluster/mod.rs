//! Cluster mode (`API-cluster.md`): our own NATS client, driven by the cluster thread's
//! `mio::Poll`. `proto` and `headers` are pure (the wire text); `client` is the state machine.

pub mod client;
mod dialer;
pub mod event;
pub mod headers;
mod link;
pub mod proto;
pub mod url;

pub use client::{Client, Options};
pub use event::{Event, Message, Payload, PubError, Reason, RequestError, RequestToken, Sid};
pub use headers::Headers;
pub use url::ServerUrl;
