//! `Ws`: a websocket session on a connection: a psub pool member receiving reps as frames, or a
//! `/prep` socket sending reps as JSON messages. Keepalive (pings, silence limit), receipts,
//! backpressure and redirects on failure live here; the frame codec is in `frame`.

pub mod announce;
pub mod frame;
pub mod handshake;
pub mod prep;
pub mod replay;
pub mod topic;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use tungstenite::protocol::frame::coding::Control;

use crate::conn::buffer::{Body, Buffer, OutQueue};
use crate::registry::{Claim, PoolRef};
use crate::server::Ctx;
use crate::server::mailbox::{ConnId, Msg, ReplyTo, Undelivered};
use frame::{Incoming, Reader, WsError};
use prep::Prep;

/// Redirects one rep may take through a pool before it gets `No listeners remain`: enough to
/// pass a few backlogged members, few enough that a pool of stuck members answers quickly.
const MAX_ATTEMPTS: u8 = 8;
/// Reps queued behind the one awaiting a receipt; more are redirected (bounded memory).
pub const MAX_QUEUED: usize = 1024;

/// A rep on its way to a member.
pub struct Delivery {
    pub reply: Option<ReplyTo>,
    pub body: Body,
    pub attempts: u8,
    /// When the rep arrived (its reply is timed from here).
    pub arrived: Instant,
    /// It came over `/prep`.
    pub prep: bool,
}

/// A psub pool member's side of the deliveries.
pub struct Member {
    pub pool: PoolRef,
    shared: bool,
    receipt: bool,
    /// Still in the registry's pool (until it fails, closes or is displaced).
    joined: bool,
    /// Keepalive mode: frames queued whose reps wait, each with the out-stream offset it ends at.
    inflight: VecDeque<(u64, Delivery)>,
    /// Receipt mode: the rep sent and waiting for the member's receipt, and until when.
    awaiting: Option<(Delivery, Instant)>,
    /// Receipt mode: reps waiting for their turn.
    queued: VecDeque<Delivery>,
    /// The last rep written to this member (re-sent elsewhere if the member dies: the write may
    /// never have reached the client).
    last_delivered: Option<Body>,
    /// Joined with `replay=1` and still sending stored bodies.
    pub replay: Option<replay::Replay>,
}

// One per websocket, inside the already boxed `Ws`: boxing the member again would only add a
// pointer chase to every delivery.
#[allow(clippy::large_enum_variant)]
pub enum Role {
    Psub(Member),
    Prep(Prep),
    /// A topics pub socket (API-topics 4.3).
    TopicPub(topic::TPub),
    /// A topics consumer instance (API-topics 5.5).
    TopicSub(topic::TSub),
    /// An announce feed listener (API-cluster 2).
    Announce(announce::Listener),
}

pub struct Ws {
    pub role: Role,
    reader: Reader,
    /// A close frame is queued: flush it, then close the socket.
    pub closing: bool,
    /// A topics pub socket with frames still unanswered: the close (code, reason) waits for
    /// their answers, and nothing more is read meanwhile (API-topics 4.3: every frame is
    /// answered, in order).
    pub deferred_close: Option<(u16, String)>,
    last_seen: Instant,
    pinged: bool,
}

/// What a session step asks of its connection.
#[derive(Debug, PartialEq, Eq)]
pub enum WsNext {
    /// Something changed; call again.
    Progress,
    /// Nothing to do until more bytes arrive.
    Idle,
    /// Close the socket now (the close handshake is complete, or the peer is unfit).
    Close,
}

/// The parts of a connection a session works with.
pub struct Io<'a> {
    pub rx: &'a mut Buffer,
    pub out: &'a mut OutQueue,
    pub id: ConnId,
}

/// Sends `d` to another member of the pool, or answers its rep `No listeners remain`.
pub fn redirect(pool: &PoolRef, d: Delivery, ctx: &mut Ctx) {
    if d.attempts < MAX_ATTEMPTS
        && let Claim::Member(to, pool) =
            ctx.shared.registry.claim(&pool.key, pool.token.as_deref(), true)
    {
        let attempts = d.attempts + 1;
        let msg = Msg::Deliver {
            to,
            reply: d.reply,
            body: d.body,
            pool: Some(pool),
            attempts,
            arrived: d.arrived,
            prep: d.prep,
        };
        ctx.post(msg);
        return;
    }
    if let Some(reply) = d.reply {
        ctx.post(Msg::Failed { reply, body: d.body, why: Undelivered::NoListeners });
    }
}

impl Member {
    pub fn new(
        key: Arc<str>,
        token: Option<&str>,
        shared: bool,
        receipt: bool,
        replay: bool,
    ) -> Member {
        Member {
            pool: PoolRef { key, token: token.map(Arc::from) },
            shared,
            receipt,
            joined: true,
            inflight: VecDeque::new(),
            awaiting: None,
            queued: VecDeque::new(),
            last_delivered: None,
            replay: replay.then(replay::Replay::default),
        }
    }

    fn leave(&mut self, id: ConnId, ctx: &mut Ctx) {
        if self.joined {
            self.joined = false;
            ctx.shared.registry.leave(&self.pool.key, id);
        }
    }

    fn redirect(&self, d: Delivery, ctx: &mut Ctx) {
        redirect(&self.pool, d, ctx);
    }

    fn send(&mut self, d: Delivery, out: &mut OutQueue, ctx: &mut Ctx) {
        out.with_bytes(|v| frame::data_header(v, &d.body));
        out.push_shared(d.body.clone());
        if self.receipt {
            self.awaiting = Some((d, ctx.now + ctx.shared.config.confirm_timeout));
        } else {
            self.inflight.push_back((out.total_queued(), d));
        }
    }

    fn deliver(&mut self, d: Delivery, closing: bool, out: &mut OutQueue, ctx: &mut Ctx) {
        if closing || !self.joined {
            return self.redirect(d, ctx);
        }
        if let Some(r) = &mut self.replay {
            if let Err(d) = r.hold(d) {
                self.redirect(d, ctx);
            }
            return;
        }
        if self.receipt {
            if self.awaiting.is_none() {
                self.send(d, out, ctx);
            } else if self.queued.len() < MAX_QUEUED {
                self.queued.push_back(d);
            } else {
                self.redirect(d, ctx);
            }
            return;
        }
        // A member that does not read counts as a failed delivery: memory stays bounded.
        if out.pending() > ctx.shared.config.max_psub_backlog {
            return self.redirect(d, ctx);
        }
        self.send(d, out, ctx);
    }

    /// Keepalive mode: reps whose frames are now wholly written get their 200.
    fn on_written(&mut self, out: &OutQueue, id: ConnId, ctx: &mut Ctx) {
        if !self.receipt
            && let Some(r) = &mut self.replay
        {
            r.on_sent(out, true, &self.pool, id, ctx);
        }
        while self.inflight.front().is_some_and(|(end, _)| *end <= out.total_written()) {
            let Some((_, d)) = self.inflight.pop_front() else {
                break;
            };
            let auth = self.pool.token.is_some();
            crate::conn::record_reply(ctx, &d, true, &self.pool.key, auth, true, false);
            if let Some(reply) = d.reply {
                ctx.post(Msg::Delivered { reply, confirmed: false });
            }
            self.last_delivered = Some(d.body);
        }
    }

    /// Receipt mode: a data frame from the member confirms the rep it was sent.
    fn on_receipt(&mut self, out: &mut OutQueue, id: ConnId, ctx: &mut Ctx) {
        if let Some(r) = &mut self.replay
            && r.on_sent(out, false, &self.pool, id, ctx)
        {
            return;
        }
        let Some((d, _)) = self.awaiting.take() else {
            return;
        };
        let auth = self.pool.token.is_some();
        crate::conn::record_reply(ctx, &d, true, &self.pool.key, auth, true, true);
        if let Some(reply) = d.reply {
            ctx.post(Msg::Delivered { reply, confirmed: true });
        }
        self.last_delivered = Some(d.body);
        if let Some(next) = self.queued.pop_front() {
            self.send(next, out, ctx);
        }
    }

    /// The member is gone: every rep it held goes to another member (or gets 404), and in
    /// keepalive mode its last delivered rep is re-sent to the next member of a shared pool.
    fn fail(&mut self, id: ConnId, ctx: &mut Ctx) {
        self.leave(id, ctx);
        if let Some(mut r) = self.replay.take() {
            self.queued.extend(r.abandon(ctx));
        }
        let held: Vec<Delivery> = self
            .awaiting
            .take()
            .map(|(d, _)| d)
            .into_iter()
            .chain(self.inflight.drain(..).map(|(_, d)| d))
            .chain(self.queued.drain(..))
            .collect();
        let resend = self.last_delivered.take().filter(|_| self.shared && !self.receipt);
        for d in held {
            self.redirect(d, ctx);
        }
        if let Some(body) = resend {
            let d = Delivery { reply: None, body, attempts: 0, arrived: ctx.now, prep: false };
            self.redirect(d, ctx);
        }
    }
}

impl Ws {
    pub fn new(role: Role, ctx: &Ctx) -> Ws {
        Ws::with_limit(role, ctx.shared.config.max_body_bytes, ctx)
    }

    /// A session whose messages may be at most `max` bytes (1009 beyond).
    pub fn with_limit(role: Role, max: usize, ctx: &Ctx) -> Ws {
        Ws {
            role,
            reader: Reader::new(max),
            closing: false,
            deferred_close: None,
            last_seen: ctx.now,
            pinged: false,
        }
    }

    /// A `/prep` socket (counted in the `rep.waiting` gauge).
    pub fn is_prep(&self) -> bool {
        matches!(self.role, Role::Prep(_))
    }

    /// A topics socket, pub or sub (counted in `GET /v1/status`'s `ws`).
    pub fn is_topic(&self) -> bool {
        matches!(self.role, Role::TopicPub(_) | Role::TopicSub(_))
    }

    /// When this session next needs the timer: a receipt wait, a ping, or the silence limit.
    pub fn deadline(&self, ctx: &Ctx) -> Option<Instant> {
        let freq = ctx.shared.config.ping_frequency;
        let keepalive = self.last_seen + if self.pinged { freq } else { freq / 2 };
        let write_timeout = ctx.shared.config.write_timeout;
        let receipt = match &self.role {
            // A receipt wait, or the oldest frame not yet written: neither waits forever.
            Role::Psub(m) => m
                .awaiting
                .as_ref()
                .map(|(_, at)| *at)
                .or_else(|| m.inflight.front().map(|(_, d)| d.arrived + write_timeout)),
            Role::Prep(_) | Role::TopicPub(_) | Role::TopicSub(_) | Role::Announce(_) => None,
        };
        Some(receipt.map_or(keepalive, |r| r.min(keepalive)))
    }

    /// Queues a close frame and leaves the pool; the socket closes once it is flushed.
    pub fn close(&mut self, code: u16, reason: &str, io: &mut Io, ctx: &mut Ctx) {
        if self.closing || self.deferred_close.is_some() {
            return;
        }
        if let Role::TopicPub(p) = &self.role
            && p.pending()
        {
            self.deferred_close = Some((code, reason.to_string()));
            return;
        }
        self.closing = true;
        io.out.with_bytes(|v| frame::close(v, code, reason));
        if let Role::Psub(m) = &mut self.role {
            m.leave(io.id, ctx);
            // A close handshake is no write error: what was written was read (API.md 3).
            m.last_delivered = None;
        }
    }

    /// The connection is going away without a close handshake.
    pub fn fail(&mut self, id: ConnId, ctx: &mut Ctx) {
        match &mut self.role {
            Role::Psub(m) => m.fail(id, ctx),
            // A listener's place goes with its lease, when the session is dropped.
            Role::Prep(_) | Role::TopicPub(_) | Role::TopicSub(_) | Role::Announce(_) => {}
        }
    }

    pub fn deliver(&mut self, d: Delivery, io: &mut Io, ctx: &mut Ctx) {
        match &mut self.role {
            Role::Psub(m) => m.deliver(d, self.closing, io.out, ctx),
            // A prep, topics or announce socket is not a subscriber; a stale address cannot
            // reach it.
            Role::Prep(_) | Role::TopicPub(_) | Role::TopicSub(_) | Role::Announce(_) => {
                if let Some(reply) = d.reply {
                    ctx.post(Msg::Failed { reply, body: d.body, why: Undelivered::UnknownKey });
                }
            }
        }
    }

    /// Bytes were written: reps whose frames are now out get their answer.
    pub fn on_written(&mut self, out: &mut OutQueue, id: ConnId, ctx: &mut Ctx) {
        match &mut self.role {
            Role::Psub(m) => m.on_written(out, id, ctx),
            Role::TopicSub(t) => {
                t.on_written(out, ctx);
                // Room again after a backlog: fetch on (a parked socket waits for a wake-up).
                if !self.closing && !t.parked {
                    t.fetch(out, id, ctx);
                }
            }
            _ => {}
        }
    }

    /// The store's answer to a replaying member; when the replay is over, the held live reps go
    /// out in order.
    pub fn on_taken(
        &mut self,
        taken: crate::store::Taken,
        io: &mut Io,
        ctx: &mut Ctx,
    ) -> Result<(), crate::store::Taken> {
        let Role::Psub(m) = &mut self.role else { return Err(taken) };
        let Some(r) = &mut m.replay else { return Err(taken) };
        if self.closing {
            return Err(taken);
        }
        if r.on_taken(taken, io.out) {
            return Ok(());
        }
        let held = std::mem::take(&mut r.held);
        m.replay = None;
        for d in held {
            m.deliver(d, false, io.out, ctx);
        }
        Ok(())
    }

    /// The announce feed has news for this listener: send it (or close a laggard).
    pub fn announce(&mut self, io: &mut Io, ctx: &mut Ctx) {
        if let Role::Announce(l) = &mut self.role
            && !self.closing
            && let Err((code, reason)) = l.fetch(io.out, io.id)
        {
            self.close(code, reason, io, ctx);
        }
    }

    /// The answer to one of this prep socket's reps.
    pub fn on_answer(&mut self, seq: u64, text: &'static str, io: &mut Io) {
        if let Role::Prep(p) = &mut self.role
            && !self.closing
        {
            p.answer(seq, text, io.out);
        }
    }

    /// A topics pub's answers are all out: a close that waited for them goes now.
    pub fn close_if_answered(&mut self, io: &mut Io, ctx: &mut Ctx) {
        if let Role::TopicPub(p) = &self.role
            && !p.pending()
            && let Some((code, reason)) = self.deferred_close.take()
        {
            self.close(code, &reason, io, ctx);
        }
    }

    /// Handles frames waiting in the receive buffer.
    pub fn step(&mut self, io: &mut Io, ctx: &mut Ctx) -> WsNext {
        if self.closing {
            // After our close frame only the peer's close matters; everything else is dropped.
            return match self.reader.next(io.rx) {
                Ok(Some(Incoming::Close(_))) | Err(_) => WsNext::Close,
                Ok(Some(_)) => WsNext::Progress,
                Ok(None) => WsNext::Idle,
            };
        }
        if let Role::Prep(p) = &self.role
            && p.is_full()
        {
            return WsNext::Idle;
        }
        if let Role::TopicPub(p) = &self.role
            && (p.is_full() || self.deferred_close.is_some())
        {
            return WsNext::Idle;
        }
        let incoming = match self.reader.next(io.rx) {
            Ok(Some(m)) => m,
            Ok(None) => return WsNext::Idle,
            Err(e) => {
                crate::debug!(
                    "websocket error conn={} code={} reason={}",
                    io.id.token,
                    e.code(),
                    e.reason()
                );
                self.close(e.code(), e.reason(), io, ctx);
                return WsNext::Progress;
            }
        };
        self.last_seen = ctx.now;
        self.pinged = false;
        let is_text = matches!(incoming, Incoming::Text(_));
        match incoming {
            Incoming::Ping(payload) => {
                io.out.with_bytes(|v| frame::control(v, Control::Pong, &payload))
            }
            Incoming::Pong => {}
            Incoming::Close(code) => {
                // Echo the peer's code; a close without one is answered with a plain 1000.
                self.close(code.unwrap_or(1000), "", io, ctx);
            }
            Incoming::Text(data) | Incoming::Binary(data)
                if matches!(self.role, Role::TopicPub(_) | Role::TopicSub(_)) =>
            {
                let text = is_text;
                let result = match &mut self.role {
                    Role::TopicPub(p) => {
                        p.on_frame(text, data, io, ctx).map_err(|e| (e.code(), e.reason()))
                    }
                    // Acks come as TEXT frames; other data frames are ignored.
                    Role::TopicSub(t) if text => t.on_ack(&data, ctx),
                    _ => Ok(()),
                };
                if let Err((code, reason)) = result {
                    self.close(code, reason, io, ctx);
                }
            }
            // A listener's data frames mean nothing; they prove it alive, like any frame.
            Incoming::Text(data) | Incoming::Binary(data)
                if matches!(self.role, Role::Psub(_) | Role::Announce(_)) =>
            {
                let _ = data;
                if let Role::Psub(m) = &mut self.role
                    && m.receipt
                {
                    m.on_receipt(io.out, io.id, ctx);
                }
            }
            Incoming::Text(data) => {
                if let Role::Prep(p) = &mut self.role
                    && let Err(e) = p.on_message(&data, io, ctx)
                {
                    self.close(e.code(), e.reason(), io, ctx);
                }
            }
            Incoming::Binary(_) => {
                let e = WsError::InvalidData("binary frames are not reps");
                self.close(e.code(), e.reason(), io, ctx);
            }
        }
        WsNext::Progress
    }

    /// The timer fired: fail a member whose receipt is late, close a silent peer, or ping it.
    pub fn on_timer(&mut self, io: &mut Io, ctx: &mut Ctx) -> WsNext {
        if self.closing {
            return WsNext::Close;
        }
        if let Role::Psub(m) = &self.role {
            if m.awaiting.as_ref().is_some_and(|(_, at)| *at <= ctx.now) {
                crate::debug!("receipt timeout conn={}", io.id.token);
                return WsNext::Close;
            }
            let write_timeout = ctx.shared.config.write_timeout;
            if m.inflight.front().is_some_and(|(_, d)| d.arrived + write_timeout <= ctx.now) {
                crate::debug!("psub write timeout conn={}", io.id.token);
                return WsNext::Close;
            }
        }
        let freq = ctx.shared.config.ping_frequency;
        if ctx.now >= self.last_seen + freq {
            self.close(1001, "keepalive timeout", io, ctx);
            return WsNext::Progress;
        }
        if !self.pinged && ctx.now >= self.last_seen + freq / 2 {
            self.pinged = true;
            io.out.with_bytes(|v| frame::control(v, Control::Ping, b""));
            return WsNext::Progress;
        }
        WsNext::Idle
    }
}
