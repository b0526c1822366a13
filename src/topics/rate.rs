//! Leaky buckets for the `/v1/` rate limits (API-topics 1.3): per client IP and per appid,
//! bounded in memory, with the wait a refused caller is told (`Retry-After`). Pure: the clock
//! is passed in.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Shards of a limiter: workers charging different keys rarely meet on one mutex.
const SHARDS: usize = 16;
/// Buckets kept per shard (65,536 per limiter, about 2 MiB): past it the emptiest go. A bucket
/// dropped early hands its owner at most one burst more, never more memory.
const SHARD_CAP: usize = 4096;

/// One limiter's buckets (a shard). Each key keeps one instant, the time its bucket will be
/// empty (GCRA's "theoretical arrival time"): a cost of `n` pours `n * interval` in, the bucket
/// leaks in real time, and it holds at most `burst * interval`. A bucket empty by `now` is the
/// same as no bucket, so only the non-empty ones need to be kept.
#[derive(Debug)]
pub struct Buckets {
    /// The time one unit of cost takes to leak out: one second over the rate.
    interval: Duration,
    burst: u32,
    cap: usize,
    /// Key hash -> when its bucket is empty.
    empty_at: HashMap<u64, Instant>,
}

impl Buckets {
    /// `rate` per second (at least 1), `burst` units at once (at least 1), at most `cap` keys.
    pub fn new(rate: u32, burst: u32, cap: usize) -> Buckets {
        Buckets {
            interval: Duration::from_secs(1) / rate.max(1),
            burst: burst.max(1),
            cap: cap.max(1),
            empty_at: HashMap::new(),
        }
    }

    /// Pours `cost` (capped at the burst, so any request can fit an empty bucket) into `key`'s
    /// bucket. `Err(wait)`: it would overflow, nothing is poured, and it fits after `wait`.
    pub fn take(&mut self, key: u64, cost: u32, now: Instant) -> Result<(), Duration> {
        let cost = cost.clamp(1, self.burst);
        let capacity = self.interval * self.burst;
        let from = self.empty_at.get(&key).map_or(now, |&t| t.max(now));
        let after = from + self.interval * cost;
        let level = after - now;
        if level > capacity {
            return Err(level - capacity);
        }
        if !self.empty_at.contains_key(&key) && self.empty_at.len() >= self.cap {
            self.evict(now);
        }
        self.empty_at.insert(key, after);
        Ok(())
    }

    /// Makes room: drops every bucket already empty, else the quarter that empties first (the
    /// least budget handed back). A quarter at once keeps a flood of new keys at one scan per
    /// `cap / 4` of them, not one per key.
    fn evict(&mut self, now: Instant) {
        self.empty_at.retain(|_, t| *t > now);
        if self.empty_at.len() < self.cap {
            return;
        }
        let mut times: Vec<Instant> = self.empty_at.values().copied().collect();
        let nth = (times.len() / 4).min(times.len() - 1);
        let (_, &mut cut, _) = times.select_nth_unstable(nth);
        self.empty_at.retain(|_, t| *t > cut);
    }

    pub fn len(&self) -> usize {
        self.empty_at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.empty_at.is_empty()
    }
}

/// A sharded set of buckets keyed by bytes (an IP, an appid). Keys are kept as 64-bit hashes
/// under a per-process random seed: a long key costs no memory, and a client cannot aim its
/// keys at another's bucket.
pub struct Limiter {
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<Buckets>>,
}

impl Limiter {
    pub fn new(rate: u32, burst: u32) -> Limiter {
        Limiter {
            hasher: std::collections::hash_map::RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(Buckets::new(rate, burst, SHARD_CAP))).collect(),
        }
    }

    /// `Buckets::take` for `key`; the shard's mutex is held for this call only.
    pub fn take(&self, key: &[u8], cost: u32, now: Instant) -> Result<(), Duration> {
        let h = self.hasher.hash_one(key);
        let shard = &self.shards[(h as usize) % SHARDS];
        shard.lock().unwrap_or_else(PoisonError::into_inner).take(h, cost, now)
    }
}

/// `Retry-After` for a wait: whole seconds, rounded up, at least 1.
pub fn retry_after(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// The two limiters of 1.3; `None` is off.
pub struct Rates {
    pub ip: Option<Limiter>,
    pub appid: Option<Limiter>,
}

impl Rates {
    pub fn new(cfg: &crate::config::TopicsConfig) -> Rates {
        let make = |r: Option<(u32, u32)>| r.map(|(rate, burst)| Limiter::new(rate, burst));
        Rates { ip: make(cfg.rate_ip), appid: make(cfg.rate_appid) }
    }

    /// Charges the client IP one request. `Err(seconds)`: refused, `Retry-After` seconds.
    pub fn charge_ip(&self, ip: &str, now: Instant) -> Result<(), u64> {
        charge(&self.ip, ip.as_bytes(), 1, now)
    }

    /// Charges an authenticated appid `cost` units (a request or a ws frame: 1; a batch pub:
    /// its records). `Err(seconds)`: refused, `Retry-After` seconds.
    pub fn charge_appid(&self, appid: &[u8], cost: u32, now: Instant) -> Result<(), u64> {
        charge(&self.appid, appid, cost, now)
    }
}

fn charge(l: &Option<Limiter>, key: &[u8], cost: u32, now: Instant) -> Result<(), u64> {
    match l {
        None => Ok(()),
        Some(l) => l.take(key, cost, now).map_err(retry_after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn burst_then_refill_at_the_rate() {
        let t0 = Instant::now();
        let mut b = Buckets::new(2, 2, 100);
        assert_eq!(b.take(1, 1, t0), Ok(()));
        assert_eq!(b.take(1, 1, t0), Ok(()));
        // Full: the next unit fits once one has leaked out (half a second at 2/s).
        assert_eq!(b.take(1, 1, t0), Err(500 * MS));
        assert_eq!(b.take(1, 1, t0 + 499 * MS), Err(MS));
        assert_eq!(b.take(1, 1, t0 + 500 * MS), Ok(()));
        // Another key has its own bucket.
        assert_eq!(b.take(2, 1, t0), Ok(()));
    }

    #[test]
    fn costs_are_capped_at_the_burst_and_refusals_pour_nothing() {
        let t0 = Instant::now();
        let mut b = Buckets::new(10, 5, 100);
        // A batch of 1000 records costs the burst: it fits an empty bucket.
        assert_eq!(b.take(1, 1000, t0), Ok(()));
        assert_eq!(b.take(1, 1, t0), Err(100 * MS));
        assert_eq!(b.take(1, 3, t0 + 100 * MS), Err(200 * MS));
        // The refusals poured nothing: one unit fits after 100 ms.
        assert_eq!(b.take(1, 1, t0 + 100 * MS), Ok(()));
        // An idle bucket is empty again after burst / rate.
        assert_eq!(b.take(1, 5, t0 + 600 * MS), Ok(()));
    }

    #[test]
    fn a_burst_above_the_rate_is_allowed_at_once() {
        let t0 = Instant::now();
        let mut b = Buckets::new(1, 3, 100);
        for _ in 0..3 {
            assert_eq!(b.take(7, 1, t0), Ok(()));
        }
        assert_eq!(b.take(7, 1, t0), Err(1000 * MS));
    }

    #[test]
    fn memory_is_bounded_and_empty_buckets_go_first() {
        let t0 = Instant::now();
        let mut b = Buckets::new(1, 3, 3);
        b.take(1, 1, t0).unwrap(); // empty at t0 + 1 s
        b.take(2, 2, t0).unwrap(); // at t0 + 2 s
        b.take(3, 3, t0).unwrap(); // at t0 + 3 s
        // Full of live buckets: the one that empties first goes (a quarter, at least one).
        b.take(4, 3, t0).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(b.take(2, 2, t0), Err(1000 * MS), "key 2 was kept");
        assert_eq!(b.take(3, 1, t0), Err(1000 * MS), "key 3 was kept");
        // Key 1 was dropped: a fresh bucket (kept, it would hold half a unit still).
        assert_eq!(b.take(1, 3, t0 + 500 * MS), Ok(()));
        // Making room for it dropped key 2, the next to empty.
        assert_eq!(b.take(2, 3, t0 + 500 * MS), Ok(()));
        b.take(5, 1, t0 + 500 * MS).unwrap();
        assert_eq!(b.len(), 3);
        // Once every bucket is empty, room is made by dropping them all.
        b.take(6, 1, t0 + 10_000 * MS).unwrap();
        assert_eq!(b.len(), 1);
        // Known keys never evict.
        let mut b = Buckets::new(1, 5, 1);
        for i in 0..5 {
            assert_eq!(b.take(9, 1, t0 + i * MS), Ok(()));
        }
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        for (wait, secs) in [
            (Duration::ZERO, 1),
            (MS, 1),
            (1000 * MS, 1),
            (1001 * MS, 2),
            (2500 * MS, 3),
            (Duration::from_secs(60), 60),
        ] {
            assert_eq!(retry_after(wait), secs, "{wait:?}");
        }
    }

    #[test]
    fn limiter_keys_by_bytes_and_off_is_free() {
        let t0 = Instant::now();
        let l = Limiter::new(1, 1);
        assert_eq!(l.take(b"10.0.0.1", 1, t0), Ok(()));
        assert_eq!(l.take(b"10.0.0.1", 1, t0), Err(1000 * MS));
        assert_eq!(l.take(b"10.0.0.2", 1, t0), Ok(()));
        let rates = Rates { ip: Some(l), appid: None };
        assert_eq!(rates.charge_ip("10.0.0.1", t0 + 200 * MS), Err(1));
        for _ in 0..100 {
            assert_eq!(rates.charge_appid(b"app1", 1000, t0), Ok(()));
        }
    }
}
