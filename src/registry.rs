//! `Registry`: which connection waits on which key, shared by all workers. Sharded by key hash
//! into mutex-guarded maps so that two workers rarely meet on one lock; locks are held to look
//! up, insert or remove, never across I/O.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
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

#[derive(Debug, Default)]
struct Slot {
    sub: Option<Waiter>,
}

impl Slot {
    fn is_empty(&self) -> bool {
        self.sub.is_none()
    }
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
    Unknown,
    InvalidToken,
}

type Shard = HashMap<Arc<str>, Slot>;

pub struct Registry {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Registry {
    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        // A panic while holding a shard aborts the process (panic = "abort"), so poison is moot.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Parks `conn` on `key` with `token` (API.md section 2: 403 or takeover).
    pub fn park(&self, key: &Arc<str>, conn: ConnId, token: Option<&str>) -> Park {
        let mut shard = self.shard(key);
        let slot = shard.entry(key.clone()).or_default();
        if let Some(old) = &slot.sub
            && old.token.as_deref().is_some_and(|t| Some(t) != token)
        {
            return Park::Forbidden;
        }
        let new = Waiter {
            conn,
            token: token.map(Box::from),
        };
        match slot.sub.replace(new) {
            Some(old) => Park::Displaced(old.conn),
            None => Park::Parked,
        }
    }

    /// Takes the sub waiting on `key` if `token` matches it exactly (absent matches absent).
    pub fn claim(&self, key: &str, token: Option<&str>) -> Claim {
        let mut shard = self.shard(key);
        let Some(slot) = shard.get_mut(key) else {
            return Claim::Unknown;
        };
        let Some(sub) = &slot.sub else {
            return Claim::Unknown;
        };
        if sub.token.as_deref() != token {
            return Claim::InvalidToken;
        }
        let conn = sub.conn;
        slot.sub = None;
        if slot.is_empty() {
            shard.remove(key);
        }
        Claim::Sub(conn)
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
        if slot.is_empty() {
            shard.remove(key);
        }
        true
    }

    /// Every key with a waiter, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            keys.extend(
                shard
                    .iter()
                    .filter(|(_, s)| !s.is_empty())
                    .map(|(k, _)| k.to_string()),
            );
        }
        keys.sort_unstable();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(token: usize) -> ConnId {
        ConnId {
            worker: 0,
            token,
            generation: token as u64,
        }
    }

    #[test]
    fn park_claim_takeover_forbidden() {
        let r = Registry::default();
        let k: Arc<str> = Arc::from("k");
        assert_eq!(r.claim("k", None), Claim::Unknown);
        assert_eq!(r.park(&k, id(1), Some("t")), Park::Parked);
        assert_eq!(r.park(&k, id(2), Some("u")), Park::Forbidden);
        assert_eq!(r.park(&k, id(3), None), Park::Forbidden);
        assert_eq!(r.claim("k", None), Claim::InvalidToken);
        assert_eq!(r.claim("k", Some("u")), Claim::InvalidToken);
        assert_eq!(r.park(&k, id(4), Some("t")), Park::Displaced(id(1)));
        assert_eq!(r.keys(), vec!["k".to_string()]);
        assert_eq!(r.claim("k", Some("t")), Claim::Sub(id(4)));
        assert_eq!(r.claim("k", Some("t")), Claim::Unknown);
        assert!(r.keys().is_empty());
        // A tokenless sub may be taken over by anyone, and refuses a rep with a token.
        assert_eq!(r.park(&k, id(5), None), Park::Parked);
        assert_eq!(r.claim("k", Some("x")), Claim::InvalidToken);
        assert_eq!(r.park(&k, id(6), Some("x")), Park::Displaced(id(5)));
        assert!(!r.unpark("k", id(5)));
        assert!(r.unpark("k", id(6)));
        assert!(r.keys().is_empty());
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
                std::thread::spawn(move || usize::from(matches!(r.claim("k", None), Claim::Sub(_))))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(wins, 1);
    }
}
