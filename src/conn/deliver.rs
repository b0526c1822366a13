//! The delivering side of a connection: a rep's body written to a parked sub or a psub member,
//! a stored body replayed to a `/rsub`, takeovers and shutdown, and the reply metrics.

use std::sync::Arc;

use crate::conn::{Conn, Keep, Next, State, Stream};
use crate::http::response::{self, Persist};
use crate::metrics::{Event, Series};
use crate::registry::PoolRef;
use crate::server::Ctx;
use crate::server::mailbox::{Msg, Undelivered};
use crate::ws::{self, Delivery};
use std::time::Instant;

impl<S: Stream> Conn<S> {
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

    /// Answers a forwarded `/rsub` with another node's body (already removed there); if it
    /// cannot be written, it is stored here (`relay::store_back`).
    pub fn replay_remote(&mut self, keep: Keep, remaining: usize, ctx: &mut Ctx) {
        self.record(ctx, true);
        let persist = self.persist;
        let extra = format!("X-Esub-Remaining: {remaining}\r\n");
        let len = keep.body.len();
        self.out.with_bytes(|v| response::head(v, 200, response::OCTETS, len, persist, &extra));
        self.out.push_shared(keep.body.clone());
        self.state = State::ReplayingRemote(Box::new(keep));
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
        if self.topic_ws_drain(ctx) {
            self.sync_ws_deadline(ctx);
            return;
        }
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
        topic: None,
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
