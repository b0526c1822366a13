//! `Mailbox`: how other threads talk to a worker. A queue behind a short lock plus a
//! `mio::Waker`; posting wakes the worker only when the queue was empty, so a burst costs one
//! wake-up. Depth is bounded by connections: every message answers or starts one step of one
//! connection, and a connection has at most one such step outstanding.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::conn::buffer::Body;

/// Names one connection anywhere in the process; `generation` makes a reused slab slot harmless.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub worker: usize,
    pub token: usize,
    pub generation: u64,
}

/// Cross-worker messages.
pub enum Msg {
    /// Write `body` to the parked sub `sub`, then answer `rep` with `Delivered` or `Gone`.
    Deliver {
        sub: ConnId,
        rep: ConnId,
        body: Body,
        arrived: Instant,
    },
    /// The sub's whole response was written: the rep gets 200.
    Delivered { rep: ConnId },
    /// The sub was gone or its write failed: the rep gets 404 (and keeps the body).
    Gone { rep: ConnId, body: Body },
    /// Another sub took the key over: `sub` gets 409.
    TakenOver { sub: ConnId },
    /// Shut down: stop accepting, finish in-flight work, close the rest.
    Drain,
}

impl Msg {
    /// The worker that must handle this message (`None` for broadcasts like `Drain`).
    pub fn target(&self) -> Option<usize> {
        match self {
            Msg::Deliver { sub, .. } | Msg::TakenOver { sub } => Some(sub.worker),
            Msg::Delivered { rep } | Msg::Gone { rep, .. } => Some(rep.worker),
            Msg::Drain => None,
        }
    }
}

pub struct Mailbox {
    queue: Mutex<Vec<Msg>>,
    waker: mio::Waker,
}

impl Mailbox {
    pub fn new(waker: mio::Waker) -> Mailbox {
        Mailbox {
            queue: Mutex::new(Vec::new()),
            waker,
        }
    }

    pub fn post(&self, msg: Msg) {
        // A poisoned lock only means another thread panicked mid-push; the Vec is still whole.
        let was_empty = {
            let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            q.push(msg);
            q.len() == 1
        };
        if was_empty {
            // A failed wake leaves the message queued; the worker drains it on its next wake-up.
            let _ = self.waker.wake();
        }
    }

    /// Moves every queued message into `into` (which the worker keeps to reuse its capacity).
    pub fn drain(&self, into: &mut Vec<Msg>) {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *q, into);
    }
}
