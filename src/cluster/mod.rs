//! Cluster mode (`API-cluster.md`): our own NATS client, driven by the cluster thread's
//! `mio::Poll`. `proto` and `headers` are pure (the wire text); `client` is the state machine;
//! `node` is the cluster thread (membership), `routing` its phase 4 half, `handle` what workers see.
//! `link` is one socket, `tls` the TLS session on it.

pub mod client;
pub mod config;
mod dialer;
pub mod event;
pub mod handle;
pub mod headers;
mod link;
pub mod members;
pub mod node;
pub mod proto;
mod routing;
pub mod subject;
pub mod tls;
pub mod url;

pub use client::{Client, Options};
pub use event::{Event, Message, Payload, PubError, Reason, RequestError, RequestToken, Sid};
pub use headers::Headers;
pub use url::ServerUrl;
