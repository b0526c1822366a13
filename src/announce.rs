//! `Feed`: the announce feed (`API-cluster.md` section 2). Key events of this node (from the
//! registry's watch and the store) and of other nodes (over `C.ev`) in one bounded ring, and
//! the listeners waiting for the next one, woken through their worker's mailbox.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::registry::Change;
use crate::server::mailbox::ConnId;

/// Events kept, this node's and others' together (`API-cluster.md` section 2).
pub const RING: usize = 1000;
/// Listeners at once (parked GETs plus websockets): each costs a connection and a wake-up per
/// burst of events; past this a new one gets 503 rather than making every event dearer.
pub const MAX_LISTENERS: usize = 10_000;
/// This node's events waiting to go out on `C.ev` at most (the cluster thread takes them every
/// few milliseconds); past it the newest are not sent (they stay in this node's ring).
const MAX_OUTBOX: usize = 10_000;
/// A plain GET waits this long for its first event by default (`API-cluster.md` section 2).
pub const DEFAULT_WAIT_MS: u64 = 25_000;
/// Longer waits are cut to this: a long poll that outlives the proxies in front of it helps
/// nobody (the topics long poll defaults to 30 s).
pub const MAX_WAIT_MS: u64 = 60_000;

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The key appeared on its node: first sub or pool.
    New,
    /// It left because its sub got a rep.
    Fulfilled,
    /// It left otherwise: disconnect, takeover by another node, last pool member.
    Gone,
    /// A rep for it was stored.
    Stored,
}

impl Kind {
    /// The feed's event for a registry change (`Holders` is none).
    pub fn of(change: Change) -> Option<Kind> {
        match change {
            Change::New => Some(Kind::New),
            Change::Fulfilled => Some(Kind::Fulfilled),
            Change::Gone => Some(Kind::Gone),
            Change::Holders => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::New => "new",
            Kind::Fulfilled => "fulfilled",
            Kind::Gone => "gone",
            Kind::Stored => "stored",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        [Kind::New, Kind::Fulfilled, Kind::Gone, Kind::Stored].into_iter().find(|k| k.name() == s)
    }
}

/// One key event. Node and key are shared with the registry and the feed: recording one
/// copies no bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Counts the events of `node` from 1.
    pub seq: u64,
    pub node: Arc<str>,
    pub key: Arc<str>,
    pub kind: Kind,
}

impl Event {
    /// `{"seq":..,"node":..,"key":..,"event":..}` appended to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let _ = write!(out, "{{\"seq\":{},\"node\":", self.seq);
        // Strings are escaped straight into `out`; writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &*self.node);
        out.extend_from_slice(b",\"key\":");
        let _ = serde_json::to_writer(&mut *out, &*self.key);
        let _ = write!(out, ",\"event\":\"{}\"}}", self.kind.name());
    }

    /// An event as another node published it on `C.ev`; `None` when it is not one.
    pub fn parse(payload: &[u8]) -> Option<Event> {
        let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
        Some(Event {
            seq: v.get("seq")?.as_u64()?,
            node: Arc::from(v.get("node")?.as_str()?),
            key: Arc::from(v.get("key")?.as_str()?),
            kind: Kind::parse(v.get("event")?.as_str()?)?,
        })
    }
}

/// `seq` is above `since` (any seq is above a negative one).
fn after(seq: u64, since: i64) -> bool {
    u64::try_from(since).map_or(true, |s| seq > s)
}

/// A JSON array of `events`, the plain GET's body.
pub fn json_array(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + events.len() * 64);
    out.push(b'[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        e.write_json(&mut out);
    }
    out.push(b']');
    out
}

struct Ring {
    /// The seq of this node's next event.
    next_seq: u64,
    /// Events ever appended (this node's and others'): the position after the newest. The
    /// oldest kept is at `end - events.len()`. Websocket listeners follow positions, not seqs,
    /// since seqs of several nodes interleave.
    end: u64,
    events: VecDeque<Event>,
    /// Listeners to wake at the next event; each is woken once, then registers again.
    waiters: Vec<ConnId>,
    /// Cluster mode: this node's events not yet taken by the cluster thread (`None`: a
    /// single node, nothing to send).
    outbox: Option<Vec<Event>>,
}

impl Ring {
    fn push(&mut self, e: Event) -> Vec<ConnId> {
        if self.events.len() == RING {
            self.events.pop_front();
        }
        self.events.push_back(e);
        self.end += 1;
        std::mem::take(&mut self.waiters)
    }

    fn wait(&mut self, id: ConnId) {
        if !self.waiters.contains(&id) {
            self.waiters.push(id);
        }
    }
}

/// A websocket listener fell behind: events it had not read left the ring.
#[derive(Debug, PartialEq, Eq)]
pub struct Lagged;

pub struct Feed {
    node: Arc<str>,
    ring: Mutex<Ring>,
    listeners: AtomicUsize,
}

impl Feed {
    pub fn new(node: &str) -> Feed {
        Feed {
            node: Arc::from(node),
            ring: Mutex::new(Ring {
                next_seq: 1,
                end: 0,
                events: VecDeque::with_capacity(RING),
                waiters: Vec::new(),
                outbox: None,
            }),
            listeners: AtomicUsize::new(0),
        }
    }

    /// A feed whose own events are also kept for the cluster thread (`take_outbox`).
    pub fn for_cluster(node: &str) -> Feed {
        let f = Feed::new(node);
        f.ring().outbox = Some(Vec::new());
        f
    }

    /// Keeps this node's events for the cluster thread from now on (a `/join`), dropping any
    /// kept before.
    pub fn start_outbox(&self) {
        self.ring().outbox = Some(Vec::new());
    }

    /// This node's events since the last call, for `C.ev`.
    pub fn take_outbox(&self, into: &mut Vec<Event>) {
        if let Some(out) = &mut self.ring().outbox {
            std::mem::swap(out, into);
        }
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        // A panic aborts the process (panic = "abort"): poison cannot be observed.
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records an event of this node (one short lock); returns the listeners to wake, and
    /// whether it is the first the cluster thread has not taken yet (it is told then only).
    pub fn record(&self, key: &Arc<str>, kind: Kind) -> (Vec<ConnId>, bool) {
        let mut ring = self.ring();
        let e = Event { seq: ring.next_seq, node: self.node.clone(), key: key.clone(), kind };
        ring.next_seq += 1;
        let first = match &mut ring.outbox {
            Some(out) if out.len() < MAX_OUTBOX => {
                out.push(e.clone());
                out.len() == 1
            }
            _ => false,
        };
        (ring.push(e), first)
    }

    /// Appends another node's event; returns the listeners to wake. This node's own echo is
    /// ignored (it is in the ring already).
    pub fn append(&self, e: Event) -> Vec<ConnId> {
        if e.node == self.node {
            return Vec::new();
        }
        self.ring().push(e)
    }

    /// The events with seq above `since`, in ring order. None: `wait` (when given) is woken
    /// at the next event.
    pub fn since(&self, since: i64, wait: Option<ConnId>) -> Vec<Event> {
        let mut ring = self.ring();
        let found: Vec<Event> =
            ring.events.iter().filter(|e| after(e.seq, since)).cloned().collect();
        if let (true, Some(id)) = (found.is_empty(), wait) {
            ring.wait(id);
        }
        found
    }

    /// The position after the newest event: a websocket without `since` starts there.
    pub fn end(&self) -> u64 {
        self.ring().end
    }

    /// A websocket listener's next events: those at positions from `cursor` on (with seq above
    /// `since` when given), moving `cursor` past them; `id` is woken at the next event.
    pub fn follow(
        &self,
        cursor: &mut u64,
        since: Option<i64>,
        id: ConnId,
    ) -> Result<Vec<Event>, Lagged> {
        let mut ring = self.ring();
        let oldest = ring.end - ring.events.len() as u64;
        if *cursor < oldest && since.is_none() {
            return Err(Lagged);
        }
        let skip = cursor.saturating_sub(oldest) as usize;
        let found: Vec<Event> = ring
            .events
            .iter()
            .skip(skip)
            .filter(|e| since.is_none_or(|s| after(e.seq, s)))
            .cloned()
            .collect();
        *cursor = ring.end;
        ring.wait(id);
        Ok(found)
    }

    /// A place among the listeners for `id`, held until the lease drops (which also forgets
    /// a pending wake-up); `None` when `MAX_LISTENERS` are listening.
    pub fn lease(self: &Arc<Feed>, id: ConnId) -> Option<Lease> {
        let n = self.listeners.fetch_add(1, Ordering::Relaxed);
        if n >= MAX_LISTENERS {
            self.listeners.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Lease { feed: self.clone(), id })
    }

    /// Listeners now.
    pub fn listeners(&self) -> usize {
        self.listeners.load(Ordering::Relaxed)
    }
}

/// A listener's place: dropping it (answered, closed, failed) frees the place and the
/// registration, so a listener that goes away in any way leaves nothing behind.
pub struct Lease {
    feed: Arc<Feed>,
    pub id: ConnId,
}

impl Lease {
    pub fn feed(&self) -> &Feed {
        &self.feed
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut ring = self.feed.ring();
        ring.waiters.retain(|w| *w != self.id);
        drop(ring);
        self.feed.listeners.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(token: usize) -> ConnId {
        ConnId { worker: 0, token, generation: 1 }
    }

    fn ev(seq: u64, node: &str, key: &str, kind: Kind) -> Event {
        Event { seq, node: Arc::from(node), key: Arc::from(key), kind }
    }

    #[test]
    fn json_rows() {
        let rows = [
            (ev(1, "a", "k", Kind::New), r#"{"seq":1,"node":"a","key":"k","event":"new"}"#),
            (
                ev(7, "h:1", "a \"q\"\n", Kind::Fulfilled),
                r#"{"seq":7,"node":"h:1","key":"a \"q\"\n","event":"fulfilled"}"#,
            ),
            (ev(2, "é", "", Kind::Gone), r#"{"seq":2,"node":"é","key":"","event":"gone"}"#),
            (ev(3, "n", "s", Kind::Stored), r#"{"seq":3,"node":"n","key":"s","event":"stored"}"#),
        ];
        for (e, want) in rows {
            let mut out = Vec::new();
            e.write_json(&mut out);
            assert_eq!(String::from_utf8(out).unwrap(), want);
            assert_eq!(Event::parse(want.as_bytes()), Some(e));
        }
        for bad in [&b"{}"[..], b"[]", b"x", br#"{"seq":1,"node":"a","key":"k","event":"x"}"#] {
            assert_eq!(Event::parse(bad), None);
        }
        let two = [ev(1, "a", "k", Kind::New), ev(2, "a", "k", Kind::Gone)];
        let arr = String::from_utf8(json_array(&two)).unwrap();
        assert!(arr.starts_with("[{\"seq\":1,") && arr.contains("},{\"seq\":2,"), "{arr}");
        assert_eq!(json_array(&[]), b"[]");
    }

    #[test]
    fn the_cluster_outbox_takes_own_events_and_says_when_it_was_empty() {
        let f = Feed::for_cluster("me");
        let k: Arc<str> = Arc::from("k");
        assert!(f.record(&k, Kind::New).1);
        assert!(!f.record(&k, Kind::Fulfilled).1);
        assert!(f.append(ev(1, "other", "x", Kind::Stored)).is_empty());
        let mut out = Vec::new();
        f.take_outbox(&mut out);
        let got: Vec<(u64, Kind)> = out.iter().map(|e| (e.seq, e.kind)).collect();
        assert_eq!(got, [(1, Kind::New), (2, Kind::Fulfilled)]);
        out.clear();
        assert!(f.record(&k, Kind::Gone).1, "empty again after a take");
        for _ in 0..MAX_OUTBOX + 5 {
            f.record(&k, Kind::New);
        }
        f.take_outbox(&mut out);
        assert_eq!(out.len(), MAX_OUTBOX);
    }

    #[test]
    fn since_filters_and_waits_once() {
        let f = Arc::new(Feed::new("me"));
        let k: Arc<str> = Arc::from("k");
        let _lease = f.lease(id(1)).unwrap();
        assert!(f.since(0, Some(id(1))).is_empty());
        let (woken, first) = f.record(&k, Kind::New);
        assert_eq!((woken, first), (vec![id(1)], false), "a single node keeps no outbox");
        let e = f.since(0, None).remove(0);
        assert_eq!((e.seq, &*e.node, e.kind), (1, "me", Kind::New));
        // Woken once: the next event wakes nobody until it registers again.
        assert!(f.record(&k, Kind::Gone).0.is_empty());
        // Another node's events join the ring with their own seqs; our echo is ignored.
        assert!(f.append(ev(1, "other", "x", Kind::Stored)).is_empty());
        assert!(f.append(ev(1, "me", "k", Kind::New)).is_empty());
        let seqs =
            |v: Vec<Event>| v.iter().map(|e| (e.seq, e.node.to_string())).collect::<Vec<_>>();
        assert_eq!(
            seqs(f.since(0, None)),
            [(1, "me".into()), (2, "me".into()), (1, "other".into())]
        );
        assert_eq!(seqs(f.since(1, None)), [(2, "me".into())]);
        assert_eq!(seqs(f.since(-5, None)).len(), 3);
        assert!(f.since(2, Some(id(1))).is_empty());
        assert_eq!(f.append(ev(3, "other", "x", Kind::Gone)), vec![id(1)]);
    }

    #[test]
    fn ring_keeps_the_last_thousand_and_follow_detects_lag() {
        let f = Arc::new(Feed::new("me"));
        let k: Arc<str> = Arc::from("k");
        let mut cursor = f.end();
        assert_eq!(cursor, 0);
        for _ in 0..RING + 5 {
            f.record(&k, Kind::New);
        }
        let all = f.since(0, None);
        assert_eq!(all.len(), RING);
        assert_eq!((all[0].seq, all[RING - 1].seq), (6, RING as u64 + 5));
        assert_eq!(f.follow(&mut cursor, None, id(1)), Err(Lagged));
        // With `since` the listener starts from what the ring holds.
        let got = f.follow(&mut cursor, Some(RING as i64), id(1)).unwrap();
        assert_eq!(
            got.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1001..=1005).collect::<Vec<_>>()
        );
        assert_eq!(cursor, RING as u64 + 5);
        assert!(f.follow(&mut cursor, None, id(1)).unwrap().is_empty());
        assert_eq!(f.record(&k, Kind::Gone).0, vec![id(1)]);
        assert_eq!(f.follow(&mut cursor, None, id(1)).unwrap()[0].kind, Kind::Gone);
    }

    #[test]
    fn leases_are_bounded_and_forget_their_wakeups() {
        let f = Arc::new(Feed::new("me"));
        let leases: Vec<Lease> = (0..MAX_LISTENERS).map(|i| f.lease(id(i)).unwrap()).collect();
        assert!(f.lease(id(MAX_LISTENERS)).is_none());
        assert_eq!(f.listeners(), MAX_LISTENERS);
        f.since(0, Some(id(3)));
        drop(leases);
        assert_eq!(f.listeners(), 0);
        assert!(f.record(&Arc::from("k"), Kind::New).0.is_empty());
    }
}
