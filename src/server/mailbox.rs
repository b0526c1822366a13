//! `Mailbox`: how other threads talk to a worker. A queue behind a short lock plus a
//! `mio::Waker`; posting wakes the worker only when the queue was empty, so a burst costs one
//! wake-up. Depth is bounded by connections: every message answers or starts one step of one
//! connection, and a connection has at most one such step outstanding.

use std::sync::{Arc, Mutex, PoisonError};
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

/// How a sub's claim of its key across the cluster ended (`API-cluster.md` section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Nobody else holds it (or the holder gave it up, or NATS is down): park here.
    Free,
    /// The holder's sub has another non-empty token: 403.
    Forbidden,
    /// No answer in time: 504 `Cluster timeout`.
    Timeout,
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
    /// A forwarded rep's status, from the cluster thread (the holder's, or the cluster's own
    /// 503, 504 or 413).
    Answer { reply: ReplyTo, status: u16, text: &'static str },
    /// A cluster route's JSON answer (`/keys`), from the cluster thread.
    Json { reply: ReplyTo, status: u16, body: Vec<u8> },
    /// Where a `HEAD`'s key is held: 200 with the holder's advertise address, 404 (nobody),
    /// 503 or 504 (the cluster could not tell).
    Located { reply: ReplyTo, status: u16, addr: Option<Arc<str>> },
    /// The cluster's verdict on sub `to`'s claim of its key.
    Claimed { to: ConnId, outcome: ClaimOutcome },
    /// Shut down: stop accepting, finish in-flight work, close the rest.
    Drain,
    /// The announce feed has news for listener `to`.
    Announce { to: ConnId },
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
    /// The first pub of the `X-Msg-Id` this one duplicates was stored at (partition, offset),
    /// or failed; `seq` numbers a websocket pub's frames.
    Duplicate { seq: Option<u64>, result: Result<(u32, i64), StoreFail> },
    /// Metadata it waits for (commits, seek) was stored.
    Done(Result<(), StoreFail>),
    /// One of its instance's partitions has a new message, or the partitions moved.
    Wake,
    /// Its job was stored (the id) or cancelled (`true`), or was not found (`false`).
    Job(Result<JobDone, StoreFail>),
}

/// The store's answer to a job request (API-topics.md section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobDone {
    Added(i64),
    Cancelled,
    NotFound,
}

impl Msg {
    /// The connection this message is for (`None` for broadcasts like `Drain`).
    pub fn target(&self) -> Option<ConnId> {
        match self {
            Msg::Deliver { to, .. }
            | Msg::TakenOver { to }
            | Msg::Topic { to, .. }
            | Msg::Claimed { to, .. }
            | Msg::Announce { to } => Some(*to),
            Msg::Delivered { reply, .. }
            | Msg::Failed { reply, .. }
            | Msg::Stored { reply, .. }
            | Msg::Taken { reply, .. }
            | Msg::Answer { reply, .. }
            | Msg::Located { reply, .. }
            | Msg::Json { reply, .. } => Some(reply.conn),
            Msg::Drain => None,
        }
    }
}

/// A thread's queue behind a short lock, and the `mio::Waker` of its poll: a worker's (of
/// `Msg`), and the cluster thread's (of `ClusterMsg`).
pub struct Mailbox<T = Msg> {
    queue: Mutex<Vec<T>>,
    waker: mio::Waker,
}

impl<T> Mailbox<T> {
    pub fn new(waker: mio::Waker) -> Mailbox<T> {
        Mailbox { queue: Mutex::new(Vec::new()), waker }
    }

    /// Queues a message; wakes the thread only when the queue was empty.
    pub fn post(&self, msg: T) {
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

    /// Posts several messages with one lock and at most one wake-up.
    pub fn post_many(&self, msgs: impl IntoIterator<Item = T>) {
        let was_empty = {
            let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            let before = q.len();
            q.extend(msgs);
            before == 0 && !q.is_empty()
        };
        if was_empty {
            let _ = self.waker.wake();
        }
    }

    /// Moves every queued message into `into` (which the thread keeps to reuse its capacity).
    pub fn drain(&self, into: &mut Vec<T>) {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *q, into);
    }
}

thread_local! {
    /// Posts held back on this thread (`hold`) until `release`: the topics store thread answers
    /// a whole group commit with one post, and one wake-up, per worker.
    static HELD: std::cell::RefCell<Option<Held>> = const { std::cell::RefCell::new(None) };
}

struct Held {
    shared: Option<std::sync::Arc<crate::server::Shared>>,
    msgs: Vec<(usize, Msg)>,
}

/// From now on, `post_or_hold` on this thread keeps its messages until `release`.
pub fn hold() {
    HELD.with(|h| *h.borrow_mut() = Some(Held { shared: None, msgs: Vec::new() }));
}

/// Posts what was held, grouped by worker (in order per worker), and stops holding.
pub fn release() {
    release_to(None);
}

/// `release` on worker `me`: its own messages go to `local` (no wake-up of itself), the rest
/// are posted as `release` posts them.
pub fn release_local(me: usize, local: &mut std::collections::VecDeque<Msg>) {
    release_to(Some((me, local)));
}

fn release_to(mut local: Option<(usize, &mut std::collections::VecDeque<Msg>)>) {
    let Some(held) = HELD.with(|h| h.borrow_mut().take()) else { return };
    let Some(shared) = held.shared else { return };
    let mut by_worker: Vec<Vec<Msg>> = (0..shared.mailboxes.len()).map(|_| Vec::new()).collect();
    for (w, msg) in held.msgs {
        match &mut local {
            Some((me, local)) if *me == w => local.push_back(msg),
            _ => by_worker[w].push(msg),
        }
    }
    for (w, msgs) in by_worker.into_iter().enumerate() {
        if !msgs.is_empty() {
            shared.mailboxes[w].post_many(msgs);
        }
    }
}

/// Posts `msg` to `worker`'s mailbox, or holds it when this thread is holding (see `hold`).
pub fn post_or_hold(shared: &std::sync::Arc<crate::server::Shared>, worker: usize, msg: Msg) {
    let msg = HELD.with(|h| match h.borrow_mut().as_mut() {
        Some(held) => {
            held.shared.get_or_insert_with(|| shared.clone());
            held.msgs.push((worker, msg));
            None
        }
        None => Some(msg),
    });
    if let Some(msg) = msg {
        shared.mailboxes[worker].post(msg);
    }
}
