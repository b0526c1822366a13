//! What workers see of the cluster thread: its mailbox (a `Mailbox`, as a worker has), whether
//! it is in the cluster, and the members it knows.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::members::Beat;
use crate::conn::buffer::Body;
use crate::server::mailbox::{ConnId, Mailbox, ReplyTo};

/// The `worker` of a `ReplyTo` that names the cluster thread: a delivery it asked a worker for
/// (a forwarded rep) answers there, and `token` numbers the delivery.
pub const CLUSTER_WORKER: usize = usize::MAX;

/// What workers (and the registry) ask of the cluster thread.
pub enum ClusterMsg {
    /// A key's waiting sub appeared or went: subscribe or unsubscribe its subjects as the
    /// registry now says (so the order of these messages does not matter).
    KeyChanged(Arc<str>),
    /// A rep with no local holder: ask the holder over NATS; `reply` hears the status.
    Forward { key: Arc<str>, token: Option<Arc<str>>, psub: bool, body: Body, reply: ReplyTo },
    /// A `/rsub` with nothing stored here: ask a node with stored reps for `key` (`Taken` with
    /// `Taken::Remote`, or `Answer`).
    Rsub { key: Arc<str>, token: Option<Arc<str>>, reply: ReplyTo },
    /// The store's answer to a forwarded `/rsub` (delivery `id`).
    Taken { id: usize, taken: crate::store::Taken },
    /// `GET /keys`: gather every live node's keys (`Json`).
    Keys { reply: ReplyTo },
    /// A `HEAD` with no local holder: ask which node holds `key` (`Located`).
    Where { key: Arc<str>, of: crate::router::Holder, reply: ReplyTo },
    /// A sub with no local sub for its key: ask the holder to give the key up (`Claimed`).
    Claim { key: Arc<str>, token: Option<Arc<str>>, conn: ConnId },
    /// A worker's outcome for the delivery `id` of a forwarded rep.
    Outcome { id: usize, status: u16, text: &'static str },
    /// This node's feed has key events for `C.ev` (told once per batch: the thread takes
    /// them from the feed a few milliseconds later; dropped while not in the cluster).
    Events,
    /// `POST /join?nats=<url>`: join that NATS now (a node without a cluster), or say whether
    /// this node is already in it; `reply` hears `Json` (200, the members) or `Answer`.
    Join { url: super::url::ServerUrl, reply: ReplyTo },
    /// SIGTERM: publish the leave message, close NATS, stop.
    Shutdown,
}

pub struct ClusterHandle {
    mailbox: Mailbox<ClusterMsg>,
    /// Cluster mode is on: configured, or a `/join` is under way or done. Off (before any
    /// `/join`, or after one failed), the node behaves as a single node.
    active: AtomicBool,
    /// Connected, and this node's name passed its check.
    joined: AtomicBool,
    /// Unix ms when this node entered the cluster (0 before).
    since_ms: AtomicU64,
    /// The other live nodes, sorted by name.
    members: Mutex<Vec<Beat>>,
}

impl ClusterHandle {
    pub fn new(waker: mio::Waker) -> ClusterHandle {
        ClusterHandle {
            mailbox: Mailbox::new(waker),
            active: AtomicBool::new(false),
            joined: AtomicBool::new(false),
            since_ms: AtomicU64::new(0),
            members: Mutex::new(Vec::new()),
        }
    }

    /// Queues a message; wakes the thread only when the queue was empty.
    pub fn post(&self, msg: ClusterMsg) {
        self.mailbox.post(msg);
    }

    pub(super) fn drain(&self, into: &mut Vec<ClusterMsg>) {
        self.mailbox.drain(into);
    }

    /// Whether cluster mode is on (see `active`).
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    pub(super) fn set_active(&self, on: bool) {
        self.active.store(on, Ordering::Release);
    }

    /// Whether reps and claims can go over NATS now.
    pub fn joined(&self) -> bool {
        self.joined.load(Ordering::Acquire)
    }

    pub(super) fn set_joined(&self, on: bool) {
        self.joined.store(on, Ordering::Release);
    }

    pub fn since_ms(&self) -> u64 {
        self.since_ms.load(Ordering::Relaxed)
    }

    pub(super) fn set_since_ms(&self, ms: u64) {
        self.since_ms.store(ms, Ordering::Relaxed);
    }

    /// The other live nodes, sorted by name.
    pub fn others(&self) -> Vec<Beat> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(super) fn set_others(&self, beats: Vec<Beat>) {
        *self.members.lock().unwrap_or_else(PoisonError::into_inner) = beats;
    }
}
