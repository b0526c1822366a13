//! `Mailbox`: how other threads talk to a worker. A queue behind a short lock plus a
//! `mio::Waker`; posting wakes the worker only when the queue was empty, so a burst costs one
//! wake-up. Depth is bounded by connections: every message answers or starts one step of one
//! connection, and a connection has at most one such step outstanding.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::conn::buffer::Body;
use crate::registry::PoolRef;
use crate::store::{StoreFail, Taken};

/// Names one connection anywhere in the process; `generation` makes a reused slab slot harmless.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub worker: usize,
    pub token: usize,
    pub generation: u64,
}

/// Where a rep waits for its outcome: an HTTP rep connection (`seq` 0), or one message of a
/// `/prep` websocket (`seq` numbers its messages so answers go back in order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyTo {
    pub conn: ConnId,
    pub seq: u64,
}

/// Why a rep was not delivered; each names the rep's 404 text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Undelivered {
    /// The sub had gone: `Unknown key`.
    UnknownKey,
    /// Every psub member that could take it failed: `No listeners remain`.
    NoListeners,
}

impl Undelivered {
    pub fn text(self) -> &'static str {
        match self {
            Undelivered::UnknownKey => "Unknown key",
            Undelivered::NoListeners => "No listeners remain",
        }
    }
}

/// Cross-worker messages.
pub enum Msg {
    /// Write `body` to `to`: a parked sub, or a member of the psub pool `pool` (which names
    /// where to redirect if that member has gone). `reply` hears how it ends; `None` for an
    /// at-least-once re-send nobody waits on. `attempts` counts redirects so far.
    Deliver {
        to: ConnId,
        reply: Option<ReplyTo>,
        body: Body,
        pool: Option<PoolRef>,
        attempts: u8,
        /// When the rep arrived, and whether over `/prep` (for the reply metrics).
        arrived: Instant,
        prep: bool,
    },
    /// The body was written (and, in receipt mode, confirmed): the rep gets 200.
    Delivered { reply: ReplyTo, confirmed: bool },
    /// The rep gets 404 with the reason's text; the body comes back (phase 2 stores it).
    Failed { reply: ReplyTo, body: Body, why: Undelivered },
    /// The store's answer to an append: the rep gets its status (with `X-Esub-Stored: true`).
    Stored { reply: ReplyTo, result: Result<(), StoreFail> },
    /// The store's answer to a `/rsub`.
    Taken { reply: ReplyTo, taken: Taken },
    /// Another sub or member took the key over: `to` gets 409 or a 1001 close.
    TakenOver { to: ConnId },
    /// Shut down: stop accepting, finish in-flight work, close the rest.
    Drain,
    /// The topics half: a store answer or a wake-up for connection `to`.
    Topic { to: ConnId, ev: TopicEv },
}

/// What a topics connection hears from the store thread or another worker.
#[derive(Debug)]
pub enum TopicEv {
    /// The topic it waits for was created (or the creation failed).
    Created(Result<(), StoreFail>),
    /// One append of its pub was stored (or not); `seq` numbers a websocket pub's frames.
    Stored { seq: Option<u64>, result: Result<(), StoreFail> },
    /// Metadata it waits for (commits, seek) was stored.
    Done(Result<(), StoreFail>),
    /// One of its instance's partitions has a new message, or the partitions moved.
    Wake,
}

impl Msg {
    /// The connection this message is for (`None` for broadcasts like `Drain`).
    pub fn target(&self) -> Option<ConnId> {
        match self {
            Msg::Deliver { to, .. } | Msg::TakenOver { to } | Msg::Topic { to, .. } => Some(*to),
            Msg::Delivered { reply, .. }
            | Msg::Failed { reply, .. }
            | Msg::Stored { reply, .. }
            | Msg::Taken { reply, .. } => Some(reply.conn),
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
        Mailbox { queue: Mutex::new(Vec::new()), waker }
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
