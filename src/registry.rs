//! `Registry`: which connection waits on which key, shared by all workers. Sharded by key hash
//! into mutex-guarded maps so that two workers rarely meet on one lock; locks are held to look
//! up, insert or remove, never across I/O.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::server::mailbox::ConnId;

/// 64 shards: with a handful of workers the chance that two lock the same one at once is small,
/// and 64 empty maps cost nothing.
const SHARDS: usize = 64;

/// The sub waiting on a key.
#[derive(Debug)]
struct Waiter {
    conn: ConnId,
    token: Option<Box<str>>,
}

/// Names a pool for redirects: its key and token, shared by reference count, never copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolRef {
    pub key: Arc<str>,
    pub token: Option<Arc<str>>,
}

/// The persistent subscribers (websockets) of a key: one token and one `shared` flag for all.
#[derive(Debug)]
struct Pool {
    name: PoolRef,
    shared: bool,
    /// In join order; reps go round-robin from `next`.
    members: Vec<ConnId>,
    next: usize,
}

#[derive(Debug, Default)]
struct Slot {
    sub: Option<Waiter>,
    pool: Option<Pool>,
    /// Cluster mode: which of the key's subjects the cluster thread holds (`SUB_SUBJECTS`,
    /// `POOL_SUBJECT`). A slot with no holder stays while it has some (they linger).
    subscribed: u8,
}

/// The key's `rr` and `claim` subjects (they follow its waiting sub).
pub const SUB_SUBJECTS: u8 = 1;
/// The key's `pool` subject.
pub const POOL_SUBJECT: u8 = 2;

impl Slot {
    /// No holder: the key is not listed.
    fn is_empty(&self) -> bool {
        self.sub.is_none() && self.pool.is_none()
    }

    /// Nothing left to keep: the slot goes.
    fn unused(&self) -> bool {
        self.is_empty() && self.subscribed == 0
    }

    /// The subjects its holders need that the cluster thread does not hold yet.
    fn missing(&self) -> bool {
        let want = if self.sub.is_some() { SUB_SUBJECTS } else { 0 }
            | if self.pool.is_some() { POOL_SUBJECT } else { 0 };
        want & !self.subscribed != 0
    }
}

/// Members one pool may hold: past this a join is refused (403) rather than growing without end.
pub const MAX_POOL_MEMBERS: usize = 10_000;

/// What `join` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Join {
    /// Joined; these members of an exclusive pool were displaced (they get 1001 `taken over`).
    Joined(Vec<ConnId>),
    /// Token or `shared` flag differs from the pool's, or the pool is full: 403.
    Forbidden,
}
/// What `park` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Park {
    Parked,
    /// Parked, and this sub was displaced (it gets 409).
    Displaced(ConnId),
    /// A sub with another non-empty token waits: 403, nothing changed.
    Forbidden,
}

/// What `claim` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The sub is removed from the registry and belongs to the caller.
    Sub(ConnId),
    /// A psub pool member, picked round-robin; it stays in the pool.
    Member(ConnId, PoolRef),
    Unknown,
    InvalidToken,
}

type Shard = HashMap<Arc<str>, Slot>;

/// What happened to a key's holders (its waiting sub and its pool), as the announce feed names
/// it (`API-cluster.md` section 2). A local takeover and pool deliveries change no holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The key appeared: its first sub or pool.
    New,
    /// The key left because its sub got a rep.
    Fulfilled,
    /// The key left otherwise: disconnect, takeover by another node, last pool member.
    Gone,
    /// A sub or pool appeared or went while the key stayed.
    Holders,
}

/// Told, after the change and outside the shard lock, that a key's sub or pool appeared or
/// went, and whether its holders now need cluster subjects the cluster thread does not hold
/// (it then subscribes them; a departure needs nothing: the thread's sweep lets subjects without
/// holders go). The announce feed records `New`, `Fulfilled` and `Gone`.
pub type Watch = Box<dyn Fn(&Arc<str>, Change, bool) + Send + Sync>;

pub struct Registry {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    /// Waiting subs plus psub members (the `sub.waiting` gauge).
    waiting: AtomicUsize,
    watch: Option<Watch>,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            waiting: AtomicUsize::new(0),
            watch: None,
        }
    }
}

/// What `take_over` found.
#[derive(Debug, PartialEq, Eq)]
pub enum TakeOver {
    /// No sub waits on the key.
    Free,
    /// The sub was removed; it gets 409.
    Taken(ConnId),
    /// The waiting sub has a non-empty token other than the newcomer's: 403.
    Forbidden,
}

impl Registry {
    /// A registry that tells `watch` when a key's waiting sub appears or goes.
    pub fn watched(watch: Watch) -> Registry {
        Registry { watch: Some(watch), ..Registry::default() }
    }

    fn changed(&self, key: &Arc<str>, change: Change, missing: bool) {
        if let Some(w) = &self.watch {
            w(key, change, missing);
        }
    }

    /// The cluster thread now holds `bits` of `key`'s subjects too.
    pub fn add_subscribed(&self, key: &Arc<str>, bits: u8) {
        if bits != 0 {
            self.shard(key).entry(key.clone()).or_default().subscribed |= bits;
        }
    }

    /// The cluster thread would let `bits` of `key`'s subjects go: those whose holders are
    /// absent (all of `bits` when `force`d: a takeover by another node) are marked gone here,
    /// under the shard lock, and returned for it to unsubscribe. A holder that arrives after
    /// finds them missing and the thread subscribes again.
    pub fn release_subscribed(&self, key: &str, bits: u8, force: bool) -> u8 {
        let mut shard = self.shard(key);
        let Some(slot) = shard.get_mut(key) else { return 0 };
        let held = if slot.sub.is_some() { SUB_SUBJECTS } else { 0 }
            | if slot.pool.is_some() { POOL_SUBJECT } else { 0 };
        let release = if force { bits } else { bits & !held } & slot.subscribed;
        slot.subscribed &= !release;
        if slot.unused() {
            shard.remove(key);
        }
        release
    }

    /// The map's own `Arc` of `key` (no copy of its bytes for the watch), removing its slot
    /// when it is `unused`.
    fn own_key(shard: &mut Shard, key: &str, unused: bool) -> Arc<str> {
        let found = if unused {
            shard.remove_entry(key).map(|(k, _)| k)
        } else {
            shard.get_key_value(key).map(|(k, _)| k.clone())
        };
        // The caller holds the slot it just changed: the key is there.
        found.unwrap_or_else(|| Arc::from(key))
    }

    /// `change` when the key left (its slot is empty), `Holders` when it is still held.
    fn left(slot_empty: bool, change: Change) -> Change {
        if slot_empty { change } else { Change::Holders }
    }

    /// Whether a sub waits on `key`.
    pub fn has_sub(&self, key: &str) -> bool {
        self.shard(key).get(key).is_some_and(|s| s.sub.is_some())
    }

    /// Whether `key` has a sub waiting, and whether it has a pool.
    pub fn holders(&self, key: &str) -> (bool, bool) {
        self.shard(key).get(key).map_or((false, false), |s| (s.sub.is_some(), s.pool.is_some()))
    }

    /// Another node's sub claims `key` (the rules of `park`, without parking anything here).
    pub fn take_over(&self, key: &str, token: Option<&str>) -> TakeOver {
        self.take_over_if(key, token, false)
    }

    /// Removes `key`'s waiting sub whatever its token (it gets 409): it lost a tie with another
    /// node's sub that claimed the free key at the same moment.
    pub fn evict_sub(&self, key: &str) -> Option<ConnId> {
        match self.take_over_if(key, None, true) {
            TakeOver::Taken(conn) => Some(conn),
            _ => None,
        }
    }

    fn take_over_if(&self, key: &str, token: Option<&str>, force: bool) -> TakeOver {
        let taken = {
            let mut shard = self.shard(key);
            let Some(slot) = shard.get_mut(key) else { return TakeOver::Free };
            let Some(old) = &slot.sub else { return TakeOver::Free };
            if !force && old.token.as_deref().is_some_and(|t| Some(t) != token) {
                return TakeOver::Forbidden;
            }
            let conn = old.conn;
            slot.sub = None;
            let empty = slot.is_empty();
            let unused = slot.unused();
            let k = Self::own_key(&mut shard, key, unused);
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            (k, conn, empty)
        };
        self.changed(&taken.0, Self::left(taken.2, Change::Gone), false);
        TakeOver::Taken(taken.1)
    }

    /// Waiting subs and pools (keys with a pool), counted for heartbeats.
    pub fn counts(&self) -> (usize, usize) {
        let (mut subs, mut pools) = (0, 0);
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for slot in shard.values() {
                subs += usize::from(slot.sub.is_some());
                pools += usize::from(slot.pool.is_some());
            }
        }
        (subs, pools)
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        // A panic while holding a shard aborts the process (panic = "abort"), so poison is moot.
        self.shards[i].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Parks `conn` on `key` with `token` (API.md section 2: 403 or takeover).
    pub fn park(&self, key: &Arc<str>, conn: ConnId, token: Option<&str>) -> Park {
        self.park_if(key, conn, token, false).unwrap_or(Park::Forbidden)
    }

    /// Cluster mode: parks `conn` as `park` does, but only while a sub waits on the key here or
    /// the cluster thread holds its sub subjects (so no other node took the key since: that
    /// drops them), deciding under the shard lock; `None`: the sub must claim the key over NATS
    /// first.
    pub fn park_held(&self, key: &Arc<str>, conn: ConnId, token: Option<&str>) -> Option<Park> {
        self.park_if(key, conn, token, true)
    }

    fn park_if(
        &self,
        key: &Arc<str>,
        conn: ConnId,
        token: Option<&str>,
        held_only: bool,
    ) -> Option<Park> {
        let (park, fresh, missing) = {
            let mut shard = self.shard(key);
            // A sub waiting here settles it here too (a local takeover or 403).
            let held = |s: &Slot| s.sub.is_some() || s.subscribed & SUB_SUBJECTS != 0;
            if held_only && !shard.get(&**key).is_some_and(held) {
                return None;
            }
            let slot = shard.entry(key.clone()).or_default();
            if let Some(old) = &slot.sub
                && old.token.as_deref().is_some_and(|t| Some(t) != token)
            {
                return Some(Park::Forbidden);
            }
            let fresh = slot.pool.is_none();
            let new = Waiter { conn, token: token.map(Box::from) };
            match slot.sub.replace(new) {
                Some(old) => (Park::Displaced(old.conn), false, false),
                None => {
                    self.waiting.fetch_add(1, Ordering::Relaxed);
                    (Park::Parked, fresh, slot.missing())
                }
            }
        };
        if park == Park::Parked {
            self.changed(key, if fresh { Change::New } else { Change::Holders }, missing);
        }
        Some(park)
    }

    /// Finds where a rep to `key` goes: the waiting sub first (taken out of the registry), then
    /// the psub pool (`pool_only` skips the sub). Tokens must match exactly, both ways.
    pub fn claim(&self, key: &str, token: Option<&str>, pool_only: bool) -> Claim {
        let mut shard = self.shard(key);
        let Some(slot) = shard.get_mut(key) else {
            return Claim::Unknown;
        };
        if let Some(sub) = slot.sub.as_ref().filter(|_| !pool_only) {
            if sub.token.as_deref() != token {
                return Claim::InvalidToken;
            }
            let conn = sub.conn;
            slot.sub = None;
            let empty = slot.is_empty();
            let unused = slot.unused();
            let k = Self::own_key(&mut shard, key, unused);
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            drop(shard);
            self.changed(&k, Self::left(empty, Change::Fulfilled), false);
            return Claim::Sub(conn);
        }
        let Some(pool) = &mut slot.pool else {
            return Claim::Unknown;
        };
        if pool.name.token.as_deref() != token {
            return Claim::InvalidToken;
        }
        let i = pool.next % pool.members.len();
        pool.next = i + 1;
        Claim::Member(pool.members[i], pool.name.clone())
    }

    /// Adds a websocket member to `key`'s pool (API.md section 3: 403 or takeover).
    pub fn join(&self, key: &Arc<str>, conn: ConnId, token: Option<&str>, shared: bool) -> Join {
        let mut shard = self.shard(key);
        let slot = shard.entry(key.clone()).or_default();
        let Some(pool) = &mut slot.pool else {
            let fresh = slot.sub.is_none();
            let name = PoolRef { key: key.clone(), token: token.map(Arc::from) };
            slot.pool = Some(Pool { name, shared, members: vec![conn], next: 0 });
            self.waiting.fetch_add(1, Ordering::Relaxed);
            let missing = slot.missing();
            drop(shard);
            self.changed(key, if fresh { Change::New } else { Change::Holders }, missing);
            return Join::Joined(Vec::new());
        };
        if pool.name.token.as_deref() != token || pool.shared != shared {
            return Join::Forbidden;
        }
        if shared {
            if pool.members.len() >= MAX_POOL_MEMBERS {
                return Join::Forbidden;
            }
            pool.members.push(conn);
            self.waiting.fetch_add(1, Ordering::Relaxed);
            return Join::Joined(Vec::new());
        }
        pool.next = 0;
        let displaced = std::mem::replace(&mut pool.members, vec![conn]);
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.waiting.fetch_sub(displaced.len(), Ordering::Relaxed);
        Join::Joined(displaced)
    }

    /// Removes a member from `key`'s pool; the pool goes with its last member.
    pub fn leave(&self, key: &str, conn: ConnId) -> bool {
        let mut shard = self.shard(key);
        let Some(slot) = shard.get_mut(key) else {
            return false;
        };
        let Some(pool) = &mut slot.pool else {
            return false;
        };
        let Some(i) = pool.members.iter().position(|m| *m == conn) else {
            return false;
        };
        pool.members.remove(i);
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        if i < pool.next {
            pool.next -= 1;
        }
        if pool.members.is_empty() {
            slot.pool = None;
            let empty = slot.is_empty();
            let unused = slot.unused();
            let k = Self::own_key(&mut shard, key, unused);
            drop(shard);
            self.changed(&k, Self::left(empty, Change::Gone), false);
        }
        true
    }

    /// Members in `key`'s pool now (0 when there is none).
    pub fn pool_size(&self, key: &str) -> usize {
        let shard = self.shard(key);
        shard.get(key).and_then(|s| s.pool.as_ref()).map_or(0, |p| p.members.len())
    }

    /// Removes `conn`'s sub from `key` if it is still the one waiting there.
    pub fn unpark(&self, key: &str, conn: ConnId) -> bool {
        let mut shard = self.shard(key);
        let Some(slot) = shard.get_mut(key) else {
            return false;
        };
        if slot.sub.as_ref().is_none_or(|w| w.conn != conn) {
            return false;
        }
        slot.sub = None;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let empty = slot.is_empty();
        let unused = slot.unused();
        let k = Self::own_key(&mut shard, key, unused);
        drop(shard);
        self.changed(&k, Self::left(empty, Change::Gone), false);
        true
    }

    /// Waiting subs plus psub members.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Every key with a waiter, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            keys.extend(shard.iter().filter(|(_, s)| !s.is_empty()).map(|(k, _)| k.to_string()));
        }
        keys.sort_unstable();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(token: usize) -> ConnId {
        ConnId { worker: 0, token, generation: token as u64 }
    }

    #[test]
    fn park_claim_takeover_forbidden() {
        let r = Registry::default();
        let k: Arc<str> = Arc::from("k");
        assert_eq!(r.claim("k", None, false), Claim::Unknown);
        assert_eq!(r.park(&k, id(1), Some("t")), Park::Parked);
        assert_eq!(r.park(&k, id(2), Some("u")), Park::Forbidden);
        assert_eq!(r.park(&k, id(3), None), Park::Forbidden);
        assert_eq!(r.claim("k", None, false), Claim::InvalidToken);
        assert_eq!(r.claim("k", Some("u"), false), Claim::InvalidToken);
        assert_eq!(r.park(&k, id(4), Some("t")), Park::Displaced(id(1)));
        assert_eq!(r.keys(), vec!["k".to_string()]);
        assert_eq!(r.claim("k", Some("t"), false), Claim::Sub(id(4)));
        assert_eq!(r.claim("k", Some("t"), false), Claim::Unknown);
        assert!(r.keys().is_empty());
        // A tokenless sub may be taken over by anyone, and refuses a rep with a token.
        assert_eq!(r.park(&k, id(5), None), Park::Parked);
        assert_eq!(r.claim("k", Some("x"), false), Claim::InvalidToken);
        assert_eq!(r.park(&k, id(6), Some("x")), Park::Displaced(id(5)));
        assert!(!r.unpark("k", id(5)));
        assert!(r.unpark("k", id(6)));
        assert!(r.keys().is_empty());
        assert_eq!(r.waiting(), 0);
    }

    #[test]
    fn pools_round_robin_takeover_and_leave() {
        let r = Registry::default();
        let k: Arc<str> = Arc::from("p");
        assert_eq!(r.join(&k, id(1), Some("t"), true), Join::Joined(vec![]));
        assert_eq!(r.join(&k, id(2), Some("t"), true), Join::Joined(vec![]));
        assert_eq!(r.join(&k, id(3), Some("t"), true), Join::Joined(vec![]));
        assert_eq!(r.join(&k, id(4), Some("u"), true), Join::Forbidden);
        assert_eq!(r.join(&k, id(4), Some("t"), false), Join::Forbidden);
        assert_eq!(r.join(&k, id(4), None, true), Join::Forbidden);
        let picks: Vec<_> = (0..6).map(|_| r.claim("p", Some("t"), false)).collect();
        let pool = PoolRef { key: k.clone(), token: Some(Arc::from("t")) };
        let want = [1, 2, 3, 1, 2, 3].map(|i| Claim::Member(id(i), pool.clone()));
        assert_eq!(picks, want);
        assert_eq!(r.claim("p", None, true), Claim::InvalidToken);
        // Leaving keeps the rotation fair: after 1 leaves, 2 and 3 alternate.
        assert!(r.leave("p", id(1)));
        let picks: Vec<_> = (0..4).map(|_| r.claim("p", Some("t"), true)).collect();
        assert_eq!(picks, [2, 3, 2, 3].map(|i| Claim::Member(id(i), pool.clone())));
        // A waiting sub comes first unless psub=1.
        r.park(&k, id(9), Some("t"));
        assert_eq!(r.claim("p", Some("t"), true), Claim::Member(id(2), pool.clone()));
        assert_eq!(r.claim("p", Some("t"), false), Claim::Sub(id(9)));
        assert!(r.leave("p", id(2)) && r.leave("p", id(3)));
        assert!(!r.leave("p", id(3)));
        assert!(r.keys().is_empty());
        // Exclusive pools: a newcomer with the pool's token displaces every member.
        assert_eq!(r.join(&k, id(5), None, false), Join::Joined(vec![]));
        assert_eq!(r.join(&k, id(6), None, false), Join::Joined(vec![id(5)]));
        assert_eq!(r.join(&k, id(7), None, true), Join::Forbidden);
        assert_eq!(r.pool_size("p"), 1);
        assert_eq!(r.waiting(), 1);
        assert_eq!(r.keys(), vec!["p"]);
    }

    #[test]
    fn take_over_counts_and_watch() {
        let seen = Arc::new(Mutex::new(Vec::<(String, Change)>::new()));
        let log = seen.clone();
        let r = Registry::watched(Box::new(move |k, c, _| {
            log.lock().unwrap().push((k.to_string(), c))
        }));
        let k: Arc<str> = Arc::from("k");
        assert_eq!(r.take_over("k", None), TakeOver::Free);
        r.park(&k, id(1), Some("t"));
        r.park(&k, id(2), Some("t"));
        r.join(&k, id(3), None, true);
        assert!(r.has_sub("k"));
        assert_eq!(r.counts(), (1, 1));
        assert_eq!(r.take_over("k", Some("u")), TakeOver::Forbidden);
        assert_eq!(r.take_over("k", Some("t")), TakeOver::Taken(id(2)));
        assert!(!r.has_sub("k"));
        r.park(&k, id(4), None);
        assert_eq!(r.claim("k", None, false), Claim::Sub(id(4)));
        r.park(&k, id(5), None);
        assert!(r.unpark("k", id(5)));
        assert!(r.leave("k", id(3)));
        // Appearances and departures only: the takeover by id(2) of id(1) is not one.
        use Change::*;
        let want = [New, Holders, Holders, Holders, Holders, Holders, Holders, Gone];
        let got: Vec<Change> = seen.lock().unwrap().iter().map(|(_, c)| *c).collect();
        assert_eq!(got, want);
        assert!(seen.lock().unwrap().iter().all(|(k, _)| k == "k"));
    }

    #[test]
    fn cluster_subjects_follow_holders_under_the_lock() {
        let missing = Arc::new(Mutex::new(Vec::<bool>::new()));
        let log = missing.clone();
        let r = Registry::watched(Box::new(move |_, _, m| log.lock().unwrap().push(m)));
        let k: Arc<str> = Arc::from("k");
        // A first sub needs the sub subjects; once held, a re-park after a rep needs nothing.
        r.park(&k, id(1), None);
        r.add_subscribed(&k, SUB_SUBJECTS);
        assert_eq!(r.claim("k", None, false), Claim::Sub(id(1)));
        assert!(r.keys().is_empty(), "a slot kept for its subjects lists no key");
        r.park(&k, id(2), None);
        // A pool needs its own subject.
        r.join(&k, id(3), None, true);
        assert_eq!(*missing.lock().unwrap(), vec![true, false, false, true]);
        // While the sub subjects are held, a sub parks without asking (a takeover here).
        let k2: Arc<str> = Arc::from("k2");
        assert_eq!(r.park_held(&k2, id(7), None), None);
        // A sub waiting here settles it here, subjects or not.
        let k3: Arc<str> = Arc::from("k3");
        assert_eq!(r.park(&k3, id(10), None), Park::Parked);
        assert_eq!(r.park_held(&k3, id(11), None), Some(Park::Displaced(id(10))));
        assert_eq!(r.park_held(&k, id(8), None), Some(Park::Displaced(id(2))));
        assert_eq!(r.park_held(&k, id(2), Some("t")), Some(Park::Displaced(id(8))));
        assert_eq!(r.park_held(&k, id(9), Some("u")), Some(Park::Forbidden));
        assert_eq!(r.park(&k, id(2), Some("t")), Park::Displaced(id(2)));
        // Release keeps what has holders, unless forced.
        assert_eq!(r.release_subscribed("k", SUB_SUBJECTS | POOL_SUBJECT, false), 0);
        assert_eq!(r.release_subscribed("k", SUB_SUBJECTS, true), SUB_SUBJECTS);
        assert!(r.unpark("k", id(2)));
        assert!(r.leave("k", id(3)));
        // Released: the next sub needs them again; with none held, the slot goes.
        r.park(&k, id(4), None);
        assert_eq!(missing.lock().unwrap().last(), Some(&true));
        assert!(r.unpark("k", id(4)));
        assert_eq!(r.release_subscribed("k", SUB_SUBJECTS, false), 0);
        assert!(r.shard("k").get("k").is_none());
    }

    #[test]
    fn keys_sorted_across_shards() {
        let r = Registry::default();
        for (i, k) in ["b", "a", "c", "aa"].iter().enumerate() {
            r.park(&Arc::from(*k), id(i), None);
        }
        assert_eq!(r.keys(), vec!["a", "aa", "b", "c"]);
    }

    #[test]
    fn exactly_one_claim_wins() {
        let r = Arc::new(Registry::default());
        r.park(&Arc::from("k"), id(1), None);
        let wins: usize = (0..8)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    usize::from(matches!(r.claim("k", None, false), Claim::Sub(_)))
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(wins, 1);
    }
}
