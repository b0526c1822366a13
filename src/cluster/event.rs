//! What the NATS client says and takes: its options, its events (messages, replies, connection
//! changes), the reasons and errors in them, the ids it hands out, and payloads to send.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::headers::Headers;
use super::proto::{self, Info, Op, ProtoError};
use crate::conn::buffer::Body;

/// Tuning; `Default` gives the values below with their reasons.
#[derive(Debug, Clone)]
pub struct Options {
    /// Sent in CONNECT (the server's `connz` shows it): the node name.
    pub name: String,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub token: Option<String>,
    /// 2 s: with the cluster's 1 s heartbeat, a server that went silent without closing the
    /// socket is noticed in about three intervals.
    pub ping_interval: Duration,
    /// 2: the connection is dead when a PING is due and this many are unanswered.
    pub max_pings_out: u32,
    /// 2 s for TCP connect, INFO, CONNECT and its PONG together (`ESUB_CLUSTER_TIMEOUT_MS`).
    pub connect_timeout: Duration,
    /// Back-off after a round of failed attempts: 100 ms, doubling, at most 2 s, so a restarted
    /// server is found within 2 s and a down one costs a few attempts a second.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// 8 MiB of queued output: several maximum-size (1 MB) forwarded reps in flight; past it a
    /// publish fails at once (the caller answers 503) instead of growing memory.
    pub max_outgoing: usize,
    /// Requests waiting for a reply; each is a few dozen bytes of bookkeeping.
    pub max_requests: usize,
    /// How to verify servers over TLS (`tls::client_config`). With it, a `tls://` URL, or a
    /// server whose INFO says `tls_required`, gets TLS after the plaintext INFO; without it
    /// (the default, for tests of the plain protocol) either fails the attempt.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Whether the server delivers this client's own messages to its subscriptions (`true`,
    /// NATS's default). The cluster turns it off: a node's claim must reach other nodes only.
    pub echo: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            name: "esub".into(),
            user: None,
            pass: None,
            token: None,
            ping_interval: Duration::from_secs(2),
            max_pings_out: 2,
            connect_timeout: Duration::from_secs(2),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
            max_outgoing: 8 << 20,
            max_requests: 65_536,
            tls: None,
            echo: true,
        }
    }
}

/// A subscription's id on the wire (`SUB ... <sid>`), kept across reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sid(pub u64);

/// Names one request; its `Event::Reply` carries it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestToken(pub u64);

/// A message as delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub subject: String,
    pub sid: Sid,
    pub reply: Option<String>,
    pub headers: Option<Headers>,
    pub payload: Vec<u8>,
}

/// What happened, returned by the `on_*` calls in order.
#[derive(Debug)]
pub enum Event {
    /// Handshake done, and every subscription is in place on the server (its PONG came after
    /// our SUBs). Publishing works from here.
    Connected {
        addr: SocketAddr,
        server_id: String,
    },
    /// An attempt failed before `Connected` (`addr` is `None` when a name did not resolve); the
    /// client tries the next server, or waits its back-off after a whole round.
    ConnectFailed {
        addr: Option<SocketAddr>,
        reason: Reason,
    },
    /// A live connection was lost; its pending requests failed; reconnecting has begun.
    Disconnected(Reason),
    Msg(Message),
    Reply {
        token: RequestToken,
        result: Result<Message, RequestError>,
    },
    /// A `-ERR` the server did not close the connection for (a permissions violation).
    ServerError(String),
}

/// Why a connection or an attempt ended.
#[derive(Debug)]
pub enum Reason {
    Io(std::io::Error),
    /// The server closed the connection.
    Eof,
    Protocol(ProtoError),
    /// The first thing the server sent was not INFO.
    NoInfo,
    /// A `-ERR` during the handshake (such as an authorization violation).
    Server(String),
    /// The handshake did not finish within `connect_timeout`.
    Timeout,
    /// `max_pings_out` PINGs unanswered.
    StalePings,
    /// TLS is wanted (a `tls://` URL, or INFO's `tls_required`) but `Options::tls` is unset.
    TlsRequired,
    /// A `tls://` URL, and the server's INFO does not offer TLS: nothing goes out in the clear.
    TlsUnavailable,
    /// The TLS handshake or a record failed: an unknown issuer, a name mismatch, an alert from
    /// the server, bytes that are not TLS.
    Tls(String),
    /// A host name resolved to no address.
    Unresolved(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Io(e) => write!(f, "{e}"),
            Reason::Eof => f.write_str("closed by the server"),
            Reason::Protocol(e) => write!(f, "protocol error: {e:?}"),
            Reason::NoInfo => f.write_str("no INFO from the server"),
            Reason::Server(t) => write!(f, "server error: {t}"),
            Reason::Timeout => f.write_str("handshake timed out"),
            Reason::StalePings => f.write_str("PINGs unanswered"),
            Reason::TlsRequired => f.write_str("TLS is required but not configured"),
            Reason::TlsUnavailable => f.write_str("tls:// URL but the server does not offer TLS"),
            Reason::Tls(e) => write!(f, "TLS: {e}"),
            Reason::Unresolved(h) => write!(f, "{h} resolves to no address"),
        }
    }
}

/// A failed socket call; a TLS error inside it (see `tls::error`) is `Reason::Tls`.
impl From<std::io::Error> for Reason {
    fn from(e: std::io::Error) -> Reason {
        match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(tls) => Reason::Tls(tls.to_string()),
            None => Reason::Io(e),
        }
    }
}

impl Reason {
    /// Whether retrying cannot cure it without an operator (settings or certificates): worth
    /// a WARN at every attempt rather than a debug line.
    pub fn is_misconfiguration(&self) -> bool {
        matches!(self, Reason::TlsRequired | Reason::TlsUnavailable | Reason::Tls(_))
    }
}

/// Why a request got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// Nobody subscribes to the subject (the server's 503 status).
    NoResponders,
    /// No reply within the request's timeout; it may still have been delivered.
    Timeout,
    /// The connection was lost first; it may have been delivered.
    Disconnected,
}

/// Why a publish, request or subscribe was refused; nothing was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubError {
    /// Not connected (or still handshaking): the caller answers "unavailable".
    NotConnected,
    /// The send queue is at `max_outgoing` (or `max_requests` are waiting): back off.
    Full,
    /// Headers and payload exceed the server's `max_payload`.
    TooLarge,
    BadSubject,
    BadHeader,
}

/// A payload to send: borrowed bytes are copied into the send queue, a shared body is not.
pub enum Payload<'a> {
    Bytes(&'a [u8]),
    Shared(Body),
}

impl Payload<'_> {
    pub(super) fn len(&self) -> usize {
        match self {
            Payload::Bytes(b) => b.len(),
            Payload::Shared(b) => b.len(),
        }
    }
}

impl<'a> From<&'a [u8]> for Payload<'a> {
    fn from(b: &'a [u8]) -> Self {
        Payload::Bytes(b)
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for Payload<'a> {
    fn from(b: &'a [u8; N]) -> Self {
        Payload::Bytes(b)
    }
}

impl<'a> From<&'a Vec<u8>> for Payload<'a> {
    fn from(b: &'a Vec<u8>) -> Self {
        Payload::Bytes(b)
    }
}

impl From<Body> for Payload<'_> {
    fn from(b: Body) -> Self {
        Payload::Shared(b)
    }
}

impl Message {
    /// An owned copy of a parsed `MSG`/`HMSG`; `None` when its subject or reply is not UTF-8
    /// or its header block does not parse (the caller drops it: the stream itself is fine).
    pub fn from_wire(m: proto::Msg<'_>) -> Option<Message> {
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
        let reply = match m.reply {
            Some(r) => Some(text(r)?),
            None => None,
        };
        let headers = match m.headers {
            Some(h) => Some(Headers::parse(h).ok()?),
            None => None,
        };
        Some(Message {
            subject: text(m.subject)?,
            sid: Sid(m.sid),
            reply,
            headers,
            payload: m.payload.to_vec(),
        })
    }
}

/// The operations that matter, owned, so the receive buffer can move on before they are acted on.
pub(super) enum Incoming {
    Info(Box<Info>),
    Msg(Option<Message>),
    Ping,
    Pong,
    Ok,
    Err(String),
}

/// Turns a parsed operation into owned data. A message whose subject or reply is not UTF-8, or
/// whose header block does not parse, is `Msg(None)`: dropped, not a broken connection.
impl From<Op<'_>> for Incoming {
    fn from(op: Op<'_>) -> Incoming {
        match op {
            Op::Info(info) => Incoming::Info(info),
            Op::Ping => Incoming::Ping,
            Op::Pong => Incoming::Pong,
            Op::Ok => Incoming::Ok,
            Op::Err(text) => Incoming::Err(String::from_utf8_lossy(text).into_owned()),
            Op::Msg(m) => Incoming::Msg(Message::from_wire(m)),
        }
    }
}
