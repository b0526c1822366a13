//! `GET /announce` on a connection (`API-cluster.md` section 2): a long poll answered with the
//! events after `since` (or `[]` when `wait_ms` passes first), or the upgrade to a websocket
//! listener (its frames are `ws::announce`'s).

use std::time::Duration;

use crate::announce::{DEFAULT_WAIT_MS, MAX_WAIT_MS, json_array};
use crate::conn::{Conn, State, Stream};
use crate::http::response::{self, Persist};
use crate::server::Ctx;
use crate::ws::announce::Listener;
use crate::ws::{self, Role, Ws};

/// The 503 text when `announce::MAX_LISTENERS` are listening.
const TOO_MANY: &str = "Too many announce listeners";

impl<S: Stream> Conn<S> {
    /// A plain GET: the events after `since` at once, else the first ones within `wait_ms`.
    pub fn announce_poll(&mut self, ctx: &mut Ctx, since: i64, wait_ms: Option<u64>) {
        let feed = ctx.shared.announce.clone();
        let found = feed.since(since, None);
        let wait = Duration::from_millis(wait_ms.unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS));
        if !found.is_empty() || wait.is_zero() {
            return self.respond(ctx, 200, response::JSON, &json_array(&found), "");
        }
        let Some(lease) = feed.lease(self.id) else {
            return self.respond_text(ctx, 503, TOO_MANY);
        };
        // Looked at again under the lock that registers the wake-up: nothing slips between.
        let found = feed.since(since, Some(self.id));
        if !found.is_empty() {
            drop(lease);
            return self.respond(ctx, 200, response::JSON, &json_array(&found), "");
        }
        self.state = State::Announce { lease, since };
        self.set_deadline(Some(ctx.now + wait), ctx);
        if let Some(storage) = self.rx.release() {
            ctx.give_buffer(storage);
        }
        self.out.shrink();
    }

    /// The upgrade: a websocket listener, sent the ring's events after `since` when given,
    /// then every new event.
    pub fn announce_ws(&mut self, ctx: &mut Ctx, since: Option<i64>, accept: &str) {
        let feed = ctx.shared.announce.clone();
        let Some(lease) = feed.lease(self.id) else {
            return self.respond_text(ctx, 503, TOO_MANY);
        };
        let cursor = if since.is_some() { 0 } else { feed.end() };
        let ws = Ws::new(Role::Announce(Listener::new(lease, cursor, since)), ctx);
        self.upgrade(ws, accept, ctx);
        self.announce_wake(ctx);
    }

    /// The feed has news: a long poll answers when some of it is after its `since`; a
    /// websocket sends it.
    pub fn announce_wake(&mut self, ctx: &mut Ctx) {
        match &mut self.state {
            State::Announce { .. } => self.announce_answer(ctx, false),
            State::Ws(w) => {
                let mut io = ws::Io { rx: &mut self.rx, out: &mut self.out, id: self.id };
                w.announce(&mut io, ctx);
                self.sync_ws_deadline(ctx);
            }
            _ => {}
        }
    }

    /// A long poll answers the events after its `since`; with `now` (its wait is over, or the
    /// server drains) even when there are none: `[]`.
    pub fn announce_answer(&mut self, ctx: &mut Ctx, now: bool) {
        let State::Announce { lease, since } = &self.state else { return };
        let found = lease.feed().since(*since, (!now).then_some(self.id));
        if found.is_empty() && !now {
            return;
        }
        // The new state drops the lease, and with it any wake-up still registered.
        self.respond(ctx, 200, response::JSON, &json_array(&found), "");
    }

    /// SIGTERM: a long poll answers at once and the connection closes.
    pub fn announce_drain(&mut self, ctx: &mut Ctx) {
        if matches!(self.state, State::Announce { .. }) {
            self.persist = Persist::Close;
            self.announce_answer(ctx, true);
        }
    }
}
