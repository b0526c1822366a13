//! `Replay`: a psub member that joined with `replay=1` first receives its key's stored bodies,
//! oldest first, one leased record at a time (tombstoned once written, or once confirmed in
//! receipt mode); live reps that arrive meanwhile are held and sent after, in order.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::conn::buffer::OutQueue;
use crate::registry::PoolRef;
use crate::server::Ctx;
use crate::server::mailbox::{ConnId, ReplyTo};
use crate::store::{Req, Taken};
use crate::ws::{Delivery, MAX_QUEUED, frame};

#[derive(Default)]
pub struct Replay {
    /// The stored record on its way: key, id, and the out-stream offset where its frame ends.
    current: Option<(Arc<str>, u64, u64)>,
    /// Live reps that arrived during the replay.
    pub held: VecDeque<Delivery>,
}

/// Asks the store for the next stored body of the pool's key.
pub fn request(pool: &PoolRef, id: ConnId, ctx: &Ctx) -> bool {
    let Some(store) = &ctx.shared.store else { return false };
    let req = Req::Take {
        key: pool.key.to_string(),
        token: pool.token.as_deref().map(str::to_string),
        reply: ReplyTo { conn: id, seq: 0 },
    };
    store.send(req).is_ok()
}

impl Replay {
    /// Room for one more held rep (`false`: redirect it instead).
    pub fn hold(&mut self, d: Delivery) -> Result<(), Delivery> {
        if self.held.len() >= MAX_QUEUED {
            return Err(d);
        }
        self.held.push_back(d);
        Ok(())
    }

    /// The store's answer. `true` while the replay goes on; `false` when it is over (nothing
    /// more stored, or stored for another token) and the held reps are to be sent.
    pub fn on_taken(&mut self, taken: Taken, out: &mut OutQueue) -> bool {
        match taken {
            Taken::Got { key, id, body, .. } => {
                out.with_bytes(|v| frame::data_header(v, &body));
                out.push_shared(Arc::new(body));
                self.current = Some((key, id, out.total_queued()));
                true
            }
            // A replay asks this node's store only: `Remote` answers a forwarded `/rsub`.
            Taken::Nothing | Taken::InvalidToken | Taken::Failed | Taken::Remote { .. } => false,
        }
    }

    /// The current record's frame is out (keepalive mode) or confirmed (receipt mode): it is
    /// gone from the store, and the next one is asked for. `false` when no record was current.
    pub fn on_sent(
        &mut self,
        out: &OutQueue,
        need_written: bool,
        pool: &PoolRef,
        id: ConnId,
        ctx: &Ctx,
    ) -> bool {
        let Some((_, _, end)) = &self.current else { return false };
        if need_written && *end > out.total_written() {
            return false;
        }
        let Some((key, rid, _)) = self.current.take() else { return false };
        if let Some(store) = &ctx.shared.store {
            let _ = store.send(Req::Done { key, id: rid, delivered: true });
        }
        request(pool, id, ctx);
        true
    }

    /// The member is gone: the record in flight stays stored; held reps are handed back.
    pub fn abandon(&mut self, ctx: &Ctx) -> VecDeque<Delivery> {
        if let (Some((key, id, _)), Some(store)) = (self.current.take(), &ctx.shared.store) {
            let _ = store.send(Req::Done { key, id, delivered: false });
        }
        std::mem::take(&mut self.held)
    }
}
