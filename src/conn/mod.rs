//! `Conn`: one client connection and its state machine. `drive` moves it as far as its socket
//! allows (edge-triggered: read and write until `WouldBlock`) and returns what the loop should
//! do next; the loop never looks inside.

pub mod buffer;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;

use crate::conn::buffer::{Buffer, Io, OutQueue, READ_CHUNK};
use crate::http::request::{ChunkedDecoder, Framing, HttpError, parse_head};
use crate::http::response::{self, Persist};
use crate::metrics::{Event, RouteTag, Series};
use crate::registry::PoolRef;
use crate::relay;
use crate::router::{self, Route, RouteError};
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
    pub auth: bool,
    /// The rep's 200 came from a member's receipt.
    pub confirmed: bool,
}

/// A request whose head is read and routed.
pub struct Request {
    pub route: Result<Route, RouteError>,
    pub upgrade: UpgradeHeaders,
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
    /// A stored body being written to a `/rsub`; the store hears how it ends.
    Replaying {
        key: Arc<str>,
        id: u64,
    },
    /// A websocket: a psub member or a `/prep` socket.
    Ws(Box<Ws>),
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
            State::AwaitRep(_) => "await-rep",
            State::AwaitStore { .. } => "await-store",
            State::AwaitTake => "await-take",
            State::Replaying { .. } => "replaying",
            State::Ws(_) => "websocket",
            State::Closing => "closing",
        }
    }

    /// The connection is closing for good: undo what it holds elsewhere (registry entry,
    /// a delivery someone waits on, reps in a member's care) and give its buffer back.
    pub fn fail(&mut self, ctx: &mut Ctx) {
        self.record(ctx, false);
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
            State::Ws(mut ws) => {
                if ws.is_prep() {
                    ctx.shared.prep_sockets.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
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
        self.out.with_bytes(|v| response::full(v, status, ctype, body, persist, extra));
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

    /// Answers 101 and turns the connection into a websocket session. Bytes the client sent
    /// behind the upgrade request are already in the buffer and become its first frames.
    pub fn upgrade(&mut self, ws: Ws, accept: &str, ctx: &mut Ctx) {
        self.record(ctx, true);
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

    /// A rep's body for this connection: a parked sub starts writing its response; a psub
    /// member sends a frame (or redirects). `Err` gives the delivery back when this
    /// connection is neither.
    pub fn deliver(&mut self, d: Delivery, ctx: &mut Ctx) -> Result<(), Delivery> {
        match &mut self.state {
            State::Ws(ws) => {
                let mut io = ws::Io { rx: &mut self.rx, out: &mut self.out, id: self.id };
                ws.deliver(d, &mut io, ctx);
                self.sync_ws_deadline(ctx);
                return Ok(());
            }
            State::Parked { .. } => {}
            _ => return Err(d),
        }
        let State::Parked { key, auth } = &self.state else { return Err(d) };
        let (key, auth) = (key.clone(), *auth);
        // A client that closed just now may not have woken us yet: look before writing, so a
        // rep right after a disconnect gets 404, not a 200 for bytes nobody will read.
        if self.read_parked(ctx) == Next::Close {
            return Err(d);
        }
        let persist = self.persist;
        let len = d.body.len();
        self.out.with_bytes(|v| response::head(v, 200, response::OCTETS, len, persist, ""));
        self.out.push_shared(d.body.clone());
        self.state = State::Delivering { d, key, auth };
        self.set_deadline(Some(ctx.now + ctx.shared.config.write_timeout), ctx);
        Ok(())
    }

    /// Answers a `/rsub` with a stored body (moved, not copied) and `X-Esub-Remaining`.
    pub fn replay(
        &mut self,
        key: Arc<str>,
        id: u64,
        body: Vec<u8>,
        remaining: usize,
        ctx: &mut Ctx,
    ) {
        self.record(ctx, true);
        let persist = self.persist;
        let extra = format!("X-Esub-Remaining: {remaining}\r\n");
        let len = body.len();
        self.out.with_bytes(|v| response::head(v, 200, response::OCTETS, len, persist, &extra));
        self.out.push_shared(Arc::new(body));
        self.state = State::Replaying { key, id };
        self.set_deadline(Some(ctx.now + ctx.shared.config.write_timeout), ctx);
    }

    /// The store's answer to a replaying psub member; `Err` gives it back when this connection
    /// is not one (the caller releases a leased record).
    pub fn replay_taken(
        &mut self,
        taken: crate::store::Taken,
        ctx: &mut Ctx,
    ) -> Result<(), crate::store::Taken> {
        let State::Ws(ws) = &mut self.state else { return Err(taken) };
        let mut io = ws::Io { rx: &mut self.rx, out: &mut self.out, id: self.id };
        let r = ws.on_taken(taken, &mut io, ctx);
        self.sync_ws_deadline(ctx);
        r
    }

    /// Another sub or member took the key over.
    pub fn taken_over(&mut self, ctx: &mut Ctx) {
        match &mut self.state {
            State::Parked { .. } => self.respond_text(ctx, 409, "Sub taken over"),
            State::Ws(ws) => {
                let mut io = ws::Io { rx: &mut self.rx, out: &mut self.out, id: self.id };
                ws.close(1001, "taken over", &mut io, ctx);
                self.sync_ws_deadline(ctx);
            }
            _ => {}
        }
    }

    /// Shutdown: a parked sub gets 503, a websocket a 1001 close.
    pub fn drain(&mut self, ctx: &mut Ctx) {
        match &mut self.state {
            State::Parked { key, .. } => {
                ctx.shared.registry.unpark(key, self.id);
                self.persist = Persist::Close;
                self.respond_text(ctx, 503, "Shutting down");
            }
            State::Ws(ws) => {
                let mut io = ws::Io { rx: &mut self.rx, out: &mut self.out, id: self.id };
                ws.close(1001, "shutting down", &mut io, ctx);
                self.sync_ws_deadline(ctx);
            }
            _ => {}
        }
    }

    /// The answer to one of this prep socket's reps.
    pub fn prep_answer(&mut self, seq: u64, text: &'static str) {
        if let State::Ws(ws) = &mut self.state {
            let mut io = ws::Io { rx: &mut self.rx, out: &mut self.out, id: self.id };
            ws.on_answer(seq, text, &mut io);
        }
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
                    ws.on_written(&self.out, self.id, ctx);
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
                State::Replaying { key, id } if self.out.is_empty() => {
                    if let Some(store) = &ctx.shared.store {
                        let (key, id) = (key.clone(), *id);
                        let _ = store.send(crate::store::Req::Done { key, id, delivered: true });
                    }
                    self.after_response(ctx);
                    continue;
                }
                State::Closing if self.out.is_empty() => return Next::Close,
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
                if matches!(self.state, State::Parked { .. } | State::Ws(_))
                    && let Some(storage) = self.rx.release()
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
            State::AwaitRep(_) | State::AwaitStore { .. } | State::AwaitTake => Next::Continue,
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

    /// Parses and starts one request from the buffer; `true` when one was taken.
    fn parse(&mut self, ctx: &mut Ctx) -> bool {
        let config = &ctx.shared.config;
        let (max_head, max_body) = (config.max_header_bytes, config.max_body_bytes);
        let close_all = config.close_connections;
        let head = match parse_head(self.rx.filled(), max_head, max_body) {
            Ok(None) => return false,
            Ok(Some(head)) => head,
            Err(e) => {
                self.reject(e, ctx);
                return true;
            }
        };
        let route = router::route(head.method, head.target);
        let (framing, expect, head_len) = (head.framing, head.expect_continue, head.len);
        self.persist = if !head.keep_alive || close_all || ctx.draining {
            Persist::Close
        } else if head.minor == 0 {
            Persist::KeepAlive10
        } else {
            Persist::KeepAlive
        };
        // The path only: the query may carry a token, and tokens are never logged.
        if crate::log::level() >= 1 {
            let path = head.target.split(|&b| b == b'?').next().unwrap_or_default();
            let path = String::from_utf8_lossy(path);
            crate::debug!(
                "request conn={} method={} path={path} framing={framing:?}",
                self.id.token,
                head.method
            );
        }
        let request = Request { route, upgrade: head.upgrade };
        self.rx.consume(head_len);
        self.started = ctx.now;

        if expect && request.route.is_err() {
            // Refuse before the client sends a body nobody will read.
            self.persist = Persist::Close;
            relay::dispatch(self, ctx, request, Vec::new());
            return true;
        }
        let read = match framing {
            Framing::None => {
                relay::dispatch(self, ctx, request, Vec::new());
                return true;
            }
            Framing::Length(n) => {
                // The one copy a body takes in user space is of the bytes that came with its
                // head; the rest is read from the socket straight into its final place.
                let mut body = vec![0; n];
                let take = n.min(self.rx.len());
                body[..take].copy_from_slice(&self.rx.filled()[..take]);
                self.rx.consume(take);
                BodyRead::Length { body, filled: take }
            }
            Framing::Chunked => BodyRead::Chunked {
                body: Vec::new(),
                decoder: ChunkedDecoder::new(max_body, max_head),
            },
        };
        let started = !self.rx.is_empty() || matches!(read, BodyRead::Length { filled: 1.., .. });
        if expect && !started {
            self.out.with_bytes(|v| v.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n"));
        }
        self.state = State::Body(request, read);
        let at = ctx.now + ctx.shared.config.header_timeout;
        self.set_deadline(Some(at), ctx);
        self.feed_body(ctx);
        true
    }

    /// Moves buffered bytes into the body being read; dispatches it when complete.
    fn feed_body(&mut self, ctx: &mut Ctx) -> bool {
        let State::Body(_, read) = &mut self.state else {
            return false;
        };
        let outcome = match read {
            BodyRead::Length { body, filled } if *filled < body.len() => return false,
            BodyRead::Length { .. } => Ok(true),
            BodyRead::Chunked { .. } if self.rx.is_empty() => return false,
            BodyRead::Chunked { body, decoder } => match decoder.decode(self.rx.filled(), body) {
                Ok((0, false)) => return false,
                Ok((used, done)) => {
                    self.rx.consume(used);
                    Ok(done)
                }
                Err(e) => Err(e),
            },
        };
        match outcome {
            Err(e) => self.reject(e, ctx),
            Ok(false) => {}
            Ok(true) => {
                let State::Body(request, read) = std::mem::replace(&mut self.state, State::Head)
                else {
                    unreachable!("matched above")
                };
                let (BodyRead::Length { body, .. } | BodyRead::Chunked { body, .. }) = read;
                relay::dispatch(self, ctx, request, body);
            }
        }
        true
    }

    /// Answers a framing error and closes: after one, the stream cannot be trusted.
    fn reject(&mut self, e: HttpError, ctx: &mut Ctx) {
        crate::debug!("bad request conn={} status={}", self.id.token, e.status());
        self.persist = Persist::Close;
        self.respond_text(ctx, e.status(), e.text());
    }
}

/// Times a rep's way from its arrival to its subscriber's socket (`member`: a psub member).
pub fn record_reply(
    ctx: &mut Ctx,
    d: &Delivery,
    member: bool,
    key: &Arc<str>,
    auth: bool,
    success: bool,
    confirmed: bool,
) {
    let series = match (d.prep, member) {
        (true, _) => Series::PrepMessage,
        (false, true) => Series::PsubReply,
        (false, false) => Series::SubReply,
    };
    ctx.metrics.record(Event {
        series,
        route: series.route(),
        key: Some(key),
        auth,
        success,
        confirmed,
        took: Instant::now().saturating_duration_since(d.arrived),
    });
}

/// A delivery that found no connection to take it: a pool's rep goes to another member, a
/// sub's rep gets 404 `Unknown key`.
pub fn undeliverable(d: Delivery, pool: Option<&PoolRef>, ctx: &mut Ctx) {
    match pool {
        Some(pool) => ws::redirect(pool, d, ctx),
        None => {
            if let Some(reply) = d.reply {
                ctx.post(Msg::Failed { reply, body: d.body, why: Undelivered::UnknownKey });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::collections::VecDeque;
    use std::io;

    /// Bytes in, in the given pieces (then `WouldBlock`); everything written is kept.
    struct Mem {
        input: VecDeque<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Mem {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(front) = self.input.front_mut() else {
                return Err(io::ErrorKind::WouldBlock.into());
            };
            let n = front.len().min(buf.len());
            buf[..n].copy_from_slice(&front[..n]);
            front.drain(..n);
            if front.is_empty() {
                self.input.pop_front();
            }
            Ok(n)
        }
    }

    impl Write for Mem {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Feeds `pieces` one readiness event at a time, as the loop would; returns what was written.
    fn run(pieces: &[&[u8]]) -> (String, bool) {
        let config = Config::from_lookup(|_| None).unwrap();
        let (mut ctx, _poll) = Ctx::standalone(config).unwrap();
        let id = ConnId { worker: 0, token: 0, generation: 1 };
        let mem = Mem { input: VecDeque::new(), output: Vec::new() };
        let mut conn = Conn::new(mem, id, &mut ctx);
        let mut closed = false;
        for piece in pieces {
            conn.stream.input.push_back(piece.to_vec());
            conn.can_read = true;
            if conn.drive(&mut ctx) == Next::Close {
                closed = true;
                break;
            }
        }
        (String::from_utf8_lossy(&conn.stream.output).into_owned(), closed)
    }

    #[test]
    fn pipelined_requests_in_any_split_answer_in_order() {
        let wire = b"GET /ping HTTP/1.1\r\n\r\nPOST /rep/nobody HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /keys HTTP/1.1\r\n\r\n";
        for cut in 1..wire.len() {
            let (out, closed) = run(&[&wire[..cut], &wire[cut..]]);
            assert!(!closed, "cut {cut}");
            // Bodies end without a newline: find each status line by its prefix.
            let statuses: Vec<&str> = out
                .match_indices("HTTP/1.1 ")
                .filter_map(|(i, _)| out[i..].lines().next())
                .collect();
            assert_eq!(
                statuses,
                ["HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found", "HTTP/1.1 204 No Content"],
                "cut {cut}: {out}"
            );
        }
    }

    #[test]
    fn garbage_gets_400_and_closes() {
        let (out, closed) = run(&[b"NOT HTTP AT ALL\r\n\r\n"]);
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        assert!(out.contains("Connection: close"));
        assert!(closed);
    }
}
