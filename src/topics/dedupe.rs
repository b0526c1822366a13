//! The idempotent-pub window (API-topics 4.4): `(topic, X-Msg-Id)` → the offset its first pub
//! got. A duplicate within `ESUB_DEDUPE_MS` stores nothing and answers the first one's offset;
//! two pubs with one id in flight at once store once (the second waits for the first). Bounded
//! by `ESUB_DEDUPE_MAX_IDS`: past it the oldest ids are forgotten first. Rebuilt from the log at
//! start-up (ids are stored with their messages).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::FxBuild;
use crate::server::mailbox::ConnId;

/// Who waits for an in-flight first pub: a connection, and a websocket frame's number.
pub type Waiter = (ConnId, Option<u64>);

/// What a pub with an id finds.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// No pub with this id in the window: this one goes ahead (and must `place` then `settle`).
    First,
    /// Stored already at (partition, offset): answer that, with `X-Duplicate: 1`.
    Stored(u32, i64),
    /// The first pub is in flight; this one waits (it was added as a waiter) for its outcome.
    Waiting,
}

#[derive(Debug)]
enum Entry {
    /// Claimed, offset not assigned yet.
    Claimed {
        waiters: Vec<Waiter>,
    },
    /// Assigned, not stored yet.
    Placed {
        partition: u32,
        offset: i64,
        waiters: Vec<Waiter>,
    },
    Stored {
        partition: u32,
        offset: i64,
    },
}

/// One topic's ids (looked up by `&[u8]`, no allocation).
type Ids = HashMap<Arc<[u8]>, (u64, Entry), FxBuild>;

pub struct Dedupe {
    window_ms: u64,
    max_ids: usize,
    topics: HashMap<Arc<str>, Ids, FxBuild>,
    len: usize,
    /// Ids in the order they arrived, with their time: the oldest go first.
    order: VecDeque<(u64, Arc<str>, Arc<[u8]>)>,
}

/// An id is 1..128 bytes of 0x21–0x7E.
pub fn valid_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len()) && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

impl Dedupe {
    pub fn new(window_ms: u64, max_ids: usize) -> Dedupe {
        Dedupe { window_ms, max_ids, topics: HashMap::default(), len: 0, order: VecDeque::new() }
    }

    pub fn enabled(&self) -> bool {
        self.window_ms > 0 && self.max_ids > 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn get_mut(&mut self, topic: &str, id: &[u8]) -> Option<&mut (u64, Entry)> {
        self.topics.get_mut(topic)?.get_mut(id)
    }

    fn remove(&mut self, topic: &str, id: &[u8]) {
        if let Some(ids) = self.topics.get_mut(topic)
            && ids.remove(id).is_some()
        {
            self.len -= 1;
            if ids.is_empty() {
                self.topics.remove(topic);
            }
        }
    }

    fn insert(&mut self, topic: &Arc<str>, id: &[u8], at: u64, e: Entry) {
        let id: Arc<[u8]> = Arc::from(id);
        let ids = self.topics.entry(topic.clone()).or_default();
        if ids.insert(id.clone(), (at, e)).is_none() {
            self.len += 1;
        }
        self.order.push_back((at, topic.clone(), id));
    }

    /// Forgets what is older than the window, and the oldest past the bound. An id in flight
    /// is never forgotten (its waiters need its outcome); it is at most one store round old.
    fn expire(&mut self, now_ms: u64) {
        let cutoff = now_ms.saturating_sub(self.window_ms);
        let mut budget = self.order.len();
        while budget > 0 {
            budget -= 1;
            let Some((t, _, _)) = self.order.front() else { break };
            if *t >= cutoff && self.len <= self.max_ids {
                break;
            }
            let Some((t, topic, id)) = self.order.pop_front() else { break };
            match self.get_mut(&topic, &id) {
                // The id came back later: this is a stale place in the queue.
                Some((at, _)) if *at != t => {}
                Some((_, Entry::Stored { .. })) => self.remove(&topic, &id),
                // In flight: kept (behind the others) until it settles.
                Some(_) => self.order.push_back((t, topic, id)),
                None => {}
            }
        }
    }

    /// A pub of `topic` with `id` at `now_ms`; `waiter` is kept when the first is in flight.
    pub fn claim(&mut self, topic: &Arc<str>, id: &[u8], now_ms: u64, waiter: Waiter) -> Claim {
        if !self.enabled() {
            return Claim::First;
        }
        self.expire(now_ms);
        let cutoff = now_ms.saturating_sub(self.window_ms);
        match self.get_mut(topic, id) {
            // In flight, however old: its outcome decides (and its waiters need it).
            Some((_, Entry::Claimed { waiters } | Entry::Placed { waiters, .. })) => {
                waiters.push(waiter);
                return Claim::Waiting;
            }
            Some((t, Entry::Stored { partition, offset })) if *t >= cutoff => {
                return Claim::Stored(*partition, *offset);
            }
            _ => {}
        }
        self.insert(topic, id, now_ms, Entry::Claimed { waiters: Vec::new() });
        Claim::First
    }

    /// The first pub got its offset.
    pub fn place(&mut self, topic: &Arc<str>, id: &[u8], partition: u32, offset: i64) {
        if let Some((_, e)) = self.get_mut(topic, id)
            && let Entry::Claimed { waiters } = e
        {
            let waiters = std::mem::take(waiters);
            *e = Entry::Placed { partition, offset, waiters };
        }
    }

    /// The first pub's outcome: stored (its duplicates get its offset) or not (the id is free
    /// again, and the duplicates waiting share the failure). Returns the waiters and where the
    /// message is.
    pub fn settle(&mut self, topic: &Arc<str>, id: &[u8], ok: bool) -> (Vec<Waiter>, u32, i64) {
        let Some((_, e)) = self.get_mut(topic, id) else { return (Vec::new(), 0, -1) };
        let (waiters, partition, offset) = match e {
            Entry::Placed { partition, offset, waiters } => {
                (std::mem::take(waiters), *partition, *offset)
            }
            Entry::Claimed { waiters } => (std::mem::take(waiters), 0, -1),
            Entry::Stored { partition, offset } => (Vec::new(), *partition, *offset),
        };
        if ok && offset >= 0 {
            *e = Entry::Stored { partition, offset };
        } else {
            self.remove(topic, id);
        }
        (waiters, partition, offset)
    }

    /// Start-up: a stored message with an id (in log order, oldest first).
    pub fn restore(
        &mut self,
        topic: &Arc<str>,
        id: &[u8],
        time_ms: u64,
        partition: u32,
        offset: i64,
    ) {
        if self.get_mut(topic, id).is_none() {
            self.insert(topic, id, time_ms, Entry::Stored { partition, offset });
        }
    }

    /// Start-up, after every `restore`: the queue in time order, trimmed to the window.
    pub fn finish_restore(&mut self, now_ms: u64) {
        self.order.make_contiguous().sort_by_key(|(t, _, _)| *t);
        self.expire(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(n: usize) -> Waiter {
        (ConnId { worker: 0, token: n, generation: n as u64 }, None)
    }

    #[test]
    fn ids_are_printable_ascii() {
        assert!(valid_id(b"a") && valid_id(&[b'~'; 128]) && valid_id(b"!x"));
        assert!(
            !valid_id(b"") && !valid_id(&[b'a'; 129]) && !valid_id(b"a b") && !valid_id(b"\x7f")
        );
    }

    #[test]
    fn first_then_duplicates() {
        let t: Arc<str> = Arc::from("a.t.v");
        let mut d = Dedupe::new(1000, 10);
        assert_eq!(d.claim(&t, b"x", 0, conn(1)), Claim::First);
        assert_eq!(d.claim(&t, b"x", 1, conn(2)), Claim::Waiting);
        d.place(&t, b"x", 2, 7);
        assert_eq!(d.claim(&t, b"x", 2, conn(3)), Claim::Waiting);
        let (w, p, o) = d.settle(&t, b"x", true);
        assert_eq!((w, p, o), (vec![conn(2), conn(3)], 2, 7));
        assert_eq!(d.claim(&t, b"x", 500, conn(4)), Claim::Stored(2, 7));
        // Another topic, another id space.
        assert_eq!(d.claim(&Arc::from("a.u.v"), b"x", 500, conn(5)), Claim::First);
        // Past the window the id is new again.
        assert_eq!(d.claim(&t, b"x", 1001, conn(6)), Claim::First);
    }

    #[test]
    fn a_zero_window_is_off() {
        let t: Arc<str> = Arc::from("a.t.v");
        let mut d = Dedupe::new(0, 10);
        assert_eq!(d.claim(&t, b"x", 0, conn(1)), Claim::First);
        d.place(&t, b"x", 0, 0);
        assert_eq!(d.claim(&t, b"x", 0, conn(2)), Claim::First);
        assert!(d.settle(&t, b"x", true).0.is_empty());
        assert!(d.is_empty());
    }

    #[test]
    fn an_old_first_in_flight_still_collects_its_duplicates() {
        let t: Arc<str> = Arc::from("a.t.v");
        let mut d = Dedupe::new(10, 10);
        assert_eq!(d.claim(&t, b"x", 0, conn(1)), Claim::First);
        d.place(&t, b"x", 1, 5);
        // Far past the window, the first pub is still in flight.
        assert_eq!(d.claim(&t, b"x", 1000, conn(2)), Claim::Waiting);
        assert_eq!(d.settle(&t, b"x", true), (vec![conn(2)], 1, 5));
    }

    #[test]
    fn a_failed_first_frees_the_id() {
        let t: Arc<str> = Arc::from("a.t.v");
        let mut d = Dedupe::new(1000, 10);
        assert_eq!(d.claim(&t, b"x", 0, conn(1)), Claim::First);
        d.place(&t, b"x", 0, 3);
        assert_eq!(d.claim(&t, b"x", 0, conn(2)), Claim::Waiting);
        assert_eq!(d.settle(&t, b"x", false).0, vec![conn(2)]);
        assert_eq!(d.claim(&t, b"x", 1, conn(3)), Claim::First);
    }

    #[test]
    fn bounded_oldest_first() {
        let t: Arc<str> = Arc::from("a.t.v");
        let mut d = Dedupe::new(1_000_000, 3);
        for (i, id) in [b"a", b"b", b"c", b"d"].iter().enumerate() {
            assert_eq!(d.claim(&t, *id, i as u64, conn(i)), Claim::First);
            d.place(&t, *id, 0, i as i64);
            d.settle(&t, *id, true);
        }
        assert_eq!(d.claim(&t, b"e", 10, conn(9)), Claim::First);
        assert!(d.len() <= 4, "{}", d.len());
        // "a" was forgotten first; "d" is still known.
        assert_eq!(d.claim(&t, b"d", 11, conn(10)), Claim::Stored(0, 3));
        assert_eq!(d.claim(&t, b"a", 11, conn(11)), Claim::First);
    }

    #[test]
    fn restore_keeps_the_window() {
        let t: Arc<str> = Arc::from("a.t.v");
        let mut d = Dedupe::new(100, 10);
        d.restore(&t, b"old", 0, 0, 0);
        d.restore(&t, b"new", 950, 0, 1);
        d.finish_restore(1000);
        assert_eq!(d.claim(&t, b"new", 1000, conn(1)), Claim::Stored(0, 1));
        assert_eq!(d.claim(&t, b"old", 1000, conn(2)), Claim::First);
    }
}
