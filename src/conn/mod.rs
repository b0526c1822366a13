//! `Conn`: one client connection and its state machine. `drive` moves it as far as its socket
//! allows (edge-triggered: read and write until `WouldBlock`) and returns what the loop should
//! do next; the loop never looks inside.

mod announce;
pub mod buffer;
mod deliver;
mod request;
mod topic;
mod topic_checks;
mod topic_jobs;
mod topic_pub;
mod topic_shadow;
mod topic_status;
mod topic_sub;

pub use deliver::{record_reply, undeliverable};
pub use topic::TopicWait;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;

use crate::conn::buffer::{Buffer, Io, OutQueue, READ_CHUNK};
use crate::http::request::ChunkedDecoder;
use crate::http::response::{self, Persist};
use crate::metrics::{Event, RouteTag, Series};
use crate::router::{Route, RouteError};
use crate::server::Ctx;
use crate::server::mailbox::{ConnId, Msg, Undelivered};
use crate::ws::handshake::{self, UpgradeHeaders};
use crate::ws::{self, Delivery, Ws, WsNext};

/// Responses queued past this many bytes stop us parsing further pipelined requests until the
/// client reads: a client that pipelines without reading cannot grow our memory.
const OUT_HIGH_WATER: usize = 256 * 1024;
/// A websocket frame header is at most 14 bytes.
const WS_HEADER_MAX: usize = 14;

/// What the loop does with a connection after a step.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Continue,
    Close,
}

/// What a rep keeps while its delivery is under way, in case it must be stored.
pub struct Keep {
    pub key: Arc<str>,
    pub token: Option<Arc<str>>,
    pub body: crate::conn::buffer::Body,
}

/// What the metrics need of the request being answered.
pub struct ReqMetric {
    pub route: RouteTag,
    pub key: Option<Arc<str>>,
    /// The topics half: topic (raw name) and group, with `ESUB_TAG_KEYS`.
    pub topic: Option<(Arc<str>, Option<Arc<str>>)>,
    pub auth: bool,
    /// The rep's 200 came from a member's receipt.
    pub confirmed: bool,
}

/// A request whose head is read and routed.
pub struct Request {
    pub route: Result<Route, RouteError>,
    /// `X-Esub-Cluster-Token`, for the cluster routes.
    pub cluster_token: Option<Vec<u8>>,
    pub upgrade: UpgradeHeaders,
    /// `/v1/` requests: the headers the topics routes read.
    pub topic: Option<Box<crate::http::request::TopicHeaders>>,
}

pub enum BodyRead {
    /// `body` has its final length; bytes before `filled` are real.
    Length {
        body: Vec<u8>,
        filled: usize,
    },
    Chunked {
        body: Vec<u8>,
        decoder: ChunkedDecoder,
    },
}

pub enum State {
    /// Between requests, or reading a head.
    Head,
    Body(Request, BodyRead),
    /// A sub waiting on `key` for a rep (`auth`: it gave a token).
    Parked {
        key: Arc<str>,
        auth: bool,
    },
    /// A sub whose response is being written; the delivery's `reply` hears how it ends.
    Delivering {
        d: Delivery,
        key: Arc<str>,
        auth: bool,
    },
    /// A sub waiting for the cluster's verdict on its claim of `key` (cluster mode).
    AwaitClaim {
        key: Arc<str>,
        token: Option<Arc<str>>,
    },
    /// A rep waiting to hear whether its sub got the body; with a store it keeps what it
    /// may have to store.
    AwaitRep(Option<Box<Keep>>),
    /// A rep waiting for the store; then it answers `status` with `text`.
    AwaitStore {
        status: u16,
        text: &'static str,
    },
    /// A `/rsub` waiting for the store.
    AwaitTake,
    /// A cluster route (`/keys`) waiting for the cluster thread's JSON.
    AwaitCluster,
    /// A `HEAD` waiting for the cluster to say which node holds its key; `path` goes in the
    /// `Location`.
    AwaitWhere {
        path: Box<str>,
    },
    /// A stored body being written to a `/rsub`; the store hears how it ends.
    Replaying {
        key: Arc<str>,
        id: u64,
    },
    /// Another node's stored body being written to a forwarded `/rsub`; stored here if the
    /// client goes first.
    ReplayingRemote(Box<Keep>),
    /// A websocket: a psub member or a `/prep` socket.
    Ws(Box<Ws>),
    /// A `GET /announce` long poll waiting for an event with seq above `since`.
    Announce {
        lease: crate::announce::Lease,
        since: i64,
    },
    /// A topics request waiting for the store, its topic's creation, or messages.
    Topic(TopicWait),
    /// Flush what is queued, then close.
    Closing,
}

/// What a connection reads and writes: a `TcpStream` in the server, bytes in memory in the
/// fuzz target that drives the same state machine without sockets.
pub trait Stream: Read + Write {}
impl<S: Read + Write> Stream for S {}

pub struct Conn<S = TcpStream> {
    pub stream: S,
    pub id: ConnId,
    pub state: State,
    rx: Buffer,
    pub out: OutQueue,
    /// How the current request's response treats the connection.
    pub persist: Persist,
    /// The client sent EOF; close once the current request is answered.
    peer_closed: bool,
    /// When the current state times out (`None`: never).
    pub deadline: Option<Instant>,
    /// The earliest entry this connection has in the timer wheel.
    pub armed: Option<Instant>,
    /// The current head's first byte has arrived (the header timeout runs).
    head_started: bool,
    /// The socket may hold unread bytes: set by a readiness event, cleared by a short read or
    /// `WouldBlock`. Saves the `EAGAIN` read that "read until WouldBlock" costs per request.
    pub can_read: bool,
    /// The loop registered write interest for this socket (only while output waits: with
    /// edge-triggered polling, permanent write interest wakes the loop for every ACK).
    pub write_interest: bool,
    /// When the current request's head was complete.
    pub started: Instant,
    /// The current request, for metrics (`None` for routes that are not measured).
    pub req: Option<ReqMetric>,
    /// The topics consumer instance this connection holds (API-topics 5.1).
    pub topic: Option<Box<topic::Binding>>,
    /// The current request is a `/v1/` one: its errors are JSON.
    pub v1: bool,
    /// `Allow` of a `/v1/` 405.
    topic_allow: Option<&'static str>,
    /// The current `/v1/` request passed its head checks and was charged to its buckets: a
    /// second pass (after the body, after its topic's creation) does neither again.
    topic_checked: bool,
    /// The client's address (`None` off a socket, in the fuzz target).
    pub peer: Option<std::net::IpAddr>,
    /// The current request is a `HEAD`: its response carries no body.
    pub head_only: bool,
}

impl<S: Stream> Conn<S> {
    pub fn new(stream: S, id: ConnId, ctx: &mut Ctx) -> Conn<S> {
        let mut conn = Conn {
            stream,
            id,
            state: State::Head,
            rx: Buffer::default(),
            out: OutQueue::default(),
            persist: Persist::KeepAlive,
            peer_closed: false,
            deadline: None,
            armed: None,
            head_started: true,
            can_read: true,
            write_interest: false,
            started: ctx.now,
            req: None,
            topic: None,
            v1: false,
            topic_allow: None,
            topic_checked: false,
            peer: None,
            head_only: false,
        };
        // "Opened and has not completed a head" runs the header timeout from the accept.
        conn.set_deadline(Some(ctx.now + ctx.shared.config.header_timeout), ctx);
        conn
    }

    /// Sets the state's deadline, adding a wheel entry only when it is earlier than the armed
    /// one (a later deadline is found when the earlier entry fires, and re-armed then).
    pub fn set_deadline(&mut self, at: Option<Instant>, ctx: &mut Ctx) {
        self.deadline = at;
        if let Some(at) = at
            && self.armed.is_none_or(|armed| at < armed)
        {
            ctx.timers.insert(self.id.token, self.id.generation, at);
            self.armed = Some(at);
        }
    }

    /// A wheel entry for this connection fired.
    pub fn on_timer(&mut self, ctx: &mut Ctx) -> Next {
        self.armed = None;
        match self.deadline {
            None => Next::Continue,
            Some(at) if at > ctx.now => {
                self.set_deadline(Some(at), ctx);
                Next::Continue
            }
            Some(_) if matches!(self.state, State::Topic(_)) => {
                self.topic_deadline(ctx);
                Next::Continue
            }
            Some(_) if matches!(self.state, State::Announce { .. }) => {
                self.announce_answer(ctx, true);
                Next::Continue
            }
            Some(_) => {
                if let State::Ws(ws) = &mut self.state {
                    let mut io = ws::Io { rx: &mut self.rx, out: &mut self.out, id: self.id };
                    if ws.on_timer(&mut io, ctx) != WsNext::Close {
                        self.sync_ws_deadline(ctx);
                        return Next::Continue;
                    }
                }
                crate::debug!("timeout conn={} state={}", self.id.token, self.state_name());
                self.fail(ctx);
                Next::Close
            }
        }
    }

    /// Between requests with nothing buffered either way: safe to close at shutdown.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Head)
            && !self.head_started
            && self.rx.is_empty()
            && self.out.is_empty()
    }

    fn state_name(&self) -> &'static str {
        match self.state {
            State::Head => "head",
            State::Body(..) => "body",
            State::Parked { .. } => "parked",
            State::Delivering { .. } => "delivering",
            State::AwaitClaim { .. } => "await-claim",
            State::AwaitRep(_) => "await-rep",
            State::AwaitStore { .. } => "await-store",
            State::AwaitTake => "await-take",
            State::AwaitWhere { .. } => "await-where",
            State::AwaitCluster => "await-cluster",
            State::Replaying { .. } => "replaying",
            State::ReplayingRemote(_) => "replaying-remote",
            State::Ws(_) => "websocket",
            State::Announce { .. } => "announce",
            State::Topic(_) => "topic",
            State::Closing => "closing",
        }
    }

    /// The connection is closing for good: undo what it holds elsewhere (registry entry,
    /// a delivery someone waits on, reps in a member's care) and give its buffer back.
    pub fn fail(&mut self, ctx: &mut Ctx) {
        self.record(ctx, false);
        self.topic_unbind(ctx);
        match std::mem::replace(&mut self.state, State::Closing) {
            State::Parked { key, .. } => {
                ctx.shared.registry.unpark(&key, self.id);
            }
            State::Delivering { d, key, auth } => {
                record_reply(ctx, &d, false, &key, auth, false, false);
                if let Some(reply) = d.reply {
                    ctx.post(Msg::Failed { reply, body: d.body, why: Undelivered::UnknownKey });
                }
            }
            State::Replaying { key, id } => {
                if let Some(store) = &ctx.shared.store {
                    let _ = store.send(crate::store::Req::Done { key, id, delivered: false });
                }
            }
            State::ReplayingRemote(keep) => {
                let reply = crate::server::mailbox::ReplyTo { conn: self.id, seq: 0 };
                crate::relay::store_back(ctx, reply, *keep);
            }
            State::Ws(mut ws) => {
                if ws.is_prep() {
                    ctx.shared.prep_sockets.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }
                if ws.is_topic()
                    && let Some(hub) = &ctx.shared.hub
                {
                    hub.ws.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }
                ws.fail(self.id, ctx);
            }
            _ => {}
        }
        self.out.clear();
        if let Some(storage) = self.rx.release() {
            ctx.give_buffer(storage);
        }
    }

    /// Counts the current request as answered.
    fn record(&mut self, ctx: &mut Ctx, success: bool) {
        if let Some(m) = self.req.take() {
            ctx.metrics.record(Event {
                series: Series::Requests,
                route: m.route,
                key: m.key.as_ref(),
                topic: m.topic.as_ref(),
                auth: m.auth,
                success,
                confirmed: m.confirmed,
                // The loop's cached clock is as old as the poll wake-up: read it afresh here.
                took: Instant::now().saturating_duration_since(self.started),
            });
        }
    }

    /// Queues a small whole response for the current request and moves to what follows it.
    pub fn respond(&mut self, ctx: &mut Ctx, status: u16, ctype: &str, body: &[u8], extra: &str) {
        self.record(ctx, (200..300).contains(&status));
        let persist = self.persist;
        // A `HEAD` gets the head alone, `Content-Length: 0` (API-cluster.md section 3): every
        // response stays self-delimiting whatever a client assumes about HEAD.
        let body = if self.head_only { &b""[..] } else { body };
        self.out.with_bytes(|v| response::full(v, status, ctype, body, persist, extra));
        self.after_response(ctx);
    }

    /// `respond` with a body built for this response: a large one (the status routes' JSON) is
    /// queued as it is beside its head, not copied into the outgoing bytes.
    pub fn respond_owned(&mut self, ctx: &mut Ctx, status: u16, ctype: &str, body: Vec<u8>) {
        if body.len() < 4096 || self.head_only {
            return self.respond(ctx, status, ctype, &body, "");
        }
        self.record(ctx, (200..300).contains(&status));
        let persist = self.persist;
        self.out.with_bytes(|v| response::head(v, status, ctype, body.len(), persist, ""));
        self.out.push_shared(std::sync::Arc::new(body));
        self.after_response(ctx);
    }

    /// Queues a plain-text response (every error and `OK` takes this form).
    pub fn respond_text(&mut self, ctx: &mut Ctx, status: u16, text: &str) {
        self.respond(ctx, status, response::TEXT, text.as_bytes(), "");
    }

    /// The current request's response is queued: wait for the next request, or close.
    pub fn after_response(&mut self, ctx: &mut Ctx) {
        if self.persist == Persist::Close || self.peer_closed || ctx.draining {
            self.state = State::Closing;
            self.set_deadline(Some(ctx.now + ctx.shared.config.write_timeout), ctx);
            return;
        }
        self.state = State::Head;
        self.head_started = !self.rx.is_empty();
        let config = &ctx.shared.config;
        let wait = if self.head_started { config.header_timeout } else { config.idle_timeout };
        self.set_deadline(Some(ctx.now + wait), ctx);
    }

    /// Parks this connection as a sub on `key`; the registry entry is already in place.
    pub fn park(&mut self, key: Arc<str>, auth: bool, ctx: &mut Ctx) {
        self.state = State::Parked { key, auth };
        self.set_deadline(None, ctx);
        if let Some(storage) = self.rx.release() {
            ctx.give_buffer(storage);
        }
        self.out.shrink();
    }

    /// The client sent EOF.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Answers 101 and turns the connection into a websocket session. Bytes the client sent
    /// behind the upgrade request are already in the buffer and become its first frames.
    pub fn upgrade(&mut self, ws: Ws, accept: &str, ctx: &mut Ctx) {
        self.record(ctx, true);
        if ws.is_topic()
            && let Some(hub) = &ctx.shared.hub
        {
            hub.ws.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.out.with_bytes(|v| handshake::response(v, accept));
        self.state = State::Ws(Box::new(ws));
        self.sync_ws_deadline(ctx);
    }

    fn sync_ws_deadline(&mut self, ctx: &mut Ctx) {
        let at = match &self.state {
            State::Ws(ws) if ws.closing => {
                // Never wait on a peer that does not read our close frame.
                let limit = ctx.now + ctx.shared.config.write_timeout;
                Some(self.deadline.map_or(limit, |d| d.min(limit)))
            }
            State::Ws(ws) => ws.deadline(ctx),
            _ => return,
        };
        self.set_deadline(at, ctx);
    }

    /// For a parked connection: reads what is there (pipelined bytes are kept) to learn
    /// whether the client is still connected. `Close` when it is not.
    fn read_parked(&mut self, ctx: &mut Ctx) -> Next {
        let cap = self.rx_cap(ctx);
        loop {
            if !self.rx.has_storage() {
                self.rx.adopt(ctx.take_buffer());
            }
            match self.rx.read_from(&mut self.stream, cap) {
                Io::Progress(_) => continue,
                Io::WouldBlock => break,
                Io::Eof | Io::Fatal(_) => {
                    self.fail(ctx);
                    return Next::Close;
                }
            }
        }
        if let Some(storage) = self.rx.release() {
            ctx.give_buffer(storage);
        }
        Next::Continue
    }

    fn rx_cap(&self, ctx: &Ctx) -> usize {
        match self.state {
            // A whole frame of the largest allowed message must fit.
            State::Ws(_) => ctx.shared.config.max_body_bytes + WS_HEADER_MAX + READ_CHUNK,
            _ => ctx.shared.config.max_header_bytes + READ_CHUNK,
        }
    }

    /// Moves the connection as far as the socket allows.
    pub fn drive(&mut self, ctx: &mut Ctx) -> Next {
        loop {
            if !self.out.is_empty() {
                match self.out.write_to(&mut self.stream) {
                    Io::Progress(_) => continue,
                    Io::WouldBlock => {}
                    Io::Eof | Io::Fatal(_) => {
                        self.fail(ctx);
                        return Next::Close;
                    }
                }
            }
            match &mut self.state {
                State::Ws(ws) => {
                    let queued = self.out.total_queued();
                    ws.on_written(&mut self.out, self.id, ctx);
                    if !ws.closing && self.out.total_queued() != queued {
                        // A topics sub fetched more: write it now.
                        continue;
                    }
                    if ws.closing && self.out.is_empty() {
                        self.fail(ctx);
                        return Next::Close;
                    }
                }
                State::Delivering { d, key, auth } if self.out.is_empty() => {
                    record_reply(ctx, d, false, key, *auth, true, false);
                    if let Some(reply) = d.reply {
                        ctx.post(Msg::Delivered { reply, confirmed: false });
                    }
                    // The sub's own request is answered too.
                    self.record(ctx, true);
                    self.after_response(ctx);
                    continue;
                }
                State::ReplayingRemote(_) if self.out.is_empty() => {
                    self.after_response(ctx);
                    continue;
                }
                State::Replaying { key, id } if self.out.is_empty() => {
                    if let Some(store) = &ctx.shared.store {
                        let (key, id) = (key.clone(), *id);
                        let _ = store.send(crate::store::Req::Done { key, id, delivered: true });
                    }
                    self.after_response(ctx);
                    continue;
                }
                State::Closing if self.out.is_empty() => return Next::Close,
                State::Topic(w) if self.out.is_empty() && w.is_fetch() => {
                    self.topic_written(ctx);
                    if !matches!(self.state, State::Topic(_)) {
                        continue;
                    }
                }
                _ => {}
            }
            match self.step(ctx) {
                WsNext::Progress => continue,
                WsNext::Close => {
                    self.fail(ctx);
                    return Next::Close;
                }
                WsNext::Idle => {}
            }
            match self.read(ctx) {
                Some(Next::Close) => return Next::Close,
                Some(Next::Continue) => continue,
                None => return Next::Continue,
            }
        }
    }

    /// Uses buffered input.
    fn step(&mut self, ctx: &mut Ctx) -> WsNext {
        let progressed = match &mut self.state {
            State::Head if self.out.pending() < OUT_HIGH_WATER && !self.rx.is_empty() => {
                self.parse(ctx)
            }
            State::Body(..) => self.feed_body(ctx),
            State::Ws(ws) if !self.rx.is_empty() && self.out.pending() < OUT_HIGH_WATER => {
                let mut io = ws::Io { rx: &mut self.rx, out: &mut self.out, id: self.id };
                let next = ws.step(&mut io, ctx);
                self.sync_ws_deadline(ctx);
                return next;
            }
            _ => false,
        };
        if progressed { WsNext::Progress } else { WsNext::Idle }
    }

    /// One read, into the body or the buffer as the state wants. `None`: nothing more to do
    /// until the socket is ready again.
    fn read(&mut self, ctx: &mut Ctx) -> Option<Next> {
        if matches!(self.state, State::Closing) || self.peer_closed || !self.can_read {
            return None;
        }
        if let State::Body(_, BodyRead::Length { body, filled }) = &mut self.state {
            let want = body.len() - *filled;
            return match buffer::classify(self.stream.read(&mut body[*filled..])) {
                Io::Progress(n) => {
                    self.can_read = n == want;
                    *filled += n;
                    let at = ctx.now + ctx.shared.config.header_timeout;
                    self.set_deadline(Some(at), ctx);
                    Some(Next::Continue)
                }
                Io::WouldBlock => {
                    self.can_read = false;
                    None
                }
                Io::Eof | Io::Fatal(_) => {
                    self.fail(ctx);
                    Some(Next::Close)
                }
            };
        }
        let backlogged = self.out.pending() >= OUT_HIGH_WATER;
        if backlogged && matches!(self.state, State::Head | State::Ws(_)) {
            return None;
        }
        if !self.rx.has_storage() {
            self.rx.adopt(ctx.take_buffer());
        }
        let before = self.rx.len();
        let cap = self.rx_cap(ctx);
        match self.rx.read_from(&mut self.stream, cap) {
            Io::Progress(n) => {
                if self.rx.drained(n) {
                    self.can_read = false;
                }
                let fresh = self.rx.len() > before;
                match self.state {
                    State::Head if fresh && !self.head_started => {
                        self.head_started = true;
                        let at = ctx.now + ctx.shared.config.header_timeout;
                        self.set_deadline(Some(at), ctx);
                    }
                    State::Body(..) => {
                        let at = ctx.now + ctx.shared.config.header_timeout;
                        self.set_deadline(Some(at), ctx);
                    }
                    _ => {}
                }
                Some(Next::Continue)
            }
            Io::WouldBlock => {
                // A full buffer also says WouldBlock; then the socket still holds bytes.
                if self.rx.len() < cap {
                    self.can_read = false;
                }
                if matches!(
                    self.state,
                    State::Parked { .. } | State::Ws(_) | State::Announce { .. }
                ) && let Some(storage) = self.rx.release()
                {
                    ctx.give_buffer(storage);
                }
                None
            }
            Io::Eof => Some(self.on_eof(ctx)),
            Io::Fatal(_) => {
                self.fail(ctx);
                Some(Next::Close)
            }
        }
    }

    fn on_eof(&mut self, ctx: &mut Ctx) -> Next {
        self.peer_closed = true;
        match self.state {
            // The answer is on its way; a half-closed client may still read it.
            State::AwaitRep(_)
            | State::AwaitStore { .. }
            | State::AwaitTake
            | State::AwaitWhere { .. }
            | State::AwaitCluster
            | State::AwaitClaim { .. } => Next::Continue,
            State::Topic(ref w) if !w.is_fetch() => Next::Continue,
            State::Head if !self.out.is_empty() && self.rx.is_empty() => {
                self.state = State::Closing;
                Next::Continue
            }
            _ => {
                self.fail(ctx);
                Next::Close
            }
        }
    }
}

#[cfg(test)]
mod tests;
