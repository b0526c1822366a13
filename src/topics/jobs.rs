//! Delayed jobs, the pure parts (API-topics.md section 7): the `due`/`delay` rule, job ids, and
//! `Schedule`, the due-ordered index of pending jobs the scheduler keeps (payloads stay on disk).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// Ids are at least this (18 digits), so a short id is refused before any lookup.
pub const MIN_ID: i64 = 100_000_000_000_000_000;
/// Ids start from the clock in milliseconds times this: a million ids per millisecond before
/// they run ahead of it, and 19 digits until the year 2262.
const IDS_PER_MS: i64 = 1_000_000;

/// When a job is due (unix ms), from the query's `due` (unix s, wins) or `delay` (s); `Err` is
/// the 400 text. `now_ms` is the request's arrival.
pub fn due_ms(due: Option<&[u8]>, delay: Option<&[u8]>, now_ms: u64) -> Result<u64, &'static str> {
    let int = |v: &[u8]| std::str::from_utf8(v).ok().and_then(|s| s.parse::<i64>().ok());
    let at = match (due, delay) {
        (Some(d), _) => int(d).ok_or("invalid due param")?.saturating_mul(1000),
        (None, Some(d)) => {
            let d = int(d).ok_or("invalid delay param")?;
            (now_ms as i64).saturating_add(d.saturating_mul(1000))
        }
        (None, None) => return Err("invalid delay param"),
    };
    if at <= now_ms as i64 {
        return Err("invalid param");
    }
    // `now_ms` is the arrival's millisecond, rounded down: a delay counts from the next one,
    // so a job never fires before `delay` seconds after its request really arrived.
    let round_up = i64::from(due.is_none());
    Ok(at.saturating_add(round_up) as u64)
}

/// A cancel's `id`: an i64 written with at least 18 digits (and nothing else).
pub fn job_id(text: &[u8]) -> Option<i64> {
    if text.len() < 18 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// The id after `last`: increasing, and from the clock so that ids keep increasing across a
/// restart even when every earlier job is gone from the log.
pub fn next_id(last: i64, now_ms: u64) -> i64 {
    let clock = (now_ms as i64).saturating_mul(IDS_PER_MS);
    (last.saturating_add(1)).max(clock).max(MIN_ID)
}

/// Where a job's record is in the jobs log, and when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// When it fires (unix ms): its due time, or later after a failed firing.
    pub at: u64,
    pub pos: u64,
    pub len: u32,
    /// Index into the interned topic names.
    pub topic: u32,
}

/// Pending jobs in (fire time, id) order, plus those being fired (appended, not yet
/// forgotten). About 80 bytes a job: an ordered key, a map slot, no payload.
#[derive(Default)]
pub struct Schedule {
    queue: BTreeSet<(u64, i64)>,
    jobs: HashMap<i64, Entry>,
    firing: HashSet<i64>,
    topics: Vec<Arc<str>>,
    topic_ids: HashMap<Arc<str>, u32>,
    /// Log bytes of every job in `jobs`.
    live_bytes: u64,
}

impl Schedule {
    /// The index of a topic name (names are few: interned once).
    pub fn topic_id(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.topic_ids.get(name) {
            return i;
        }
        let name: Arc<str> = Arc::from(name);
        let i = self.topics.len() as u32;
        self.topics.push(name.clone());
        self.topic_ids.insert(name, i);
        i
    }

    pub fn topic_name(&self, i: u32) -> &Arc<str> {
        &self.topics[i as usize]
    }

    /// Adds (or replaces) a pending job.
    pub fn insert(&mut self, id: i64, e: Entry) {
        self.remove(id);
        self.queue.insert((e.at, id));
        self.live_bytes += u64::from(e.len);
        self.jobs.insert(id, e);
    }

    /// Drops a job, pending or firing.
    pub fn remove(&mut self, id: i64) -> Option<Entry> {
        let e = self.jobs.remove(&id)?;
        self.queue.remove(&(e.at, id));
        self.firing.remove(&id);
        self.live_bytes -= u64::from(e.len);
        Some(e)
    }

    /// A pending (not firing) job of `topic`: the one a cancel may remove.
    pub fn cancellable(&self, id: i64, topic: &str) -> bool {
        self.jobs
            .get(&id)
            .is_some_and(|e| !self.firing.contains(&id) && *self.topics[e.topic as usize] == *topic)
    }

    /// The earliest fire time of a pending job.
    pub fn next_at(&self) -> Option<u64> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// The first pending job due by `now_ms`, now marked firing.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<(i64, Entry)> {
        let &(at, id) = self.queue.first()?;
        if at > now_ms {
            return None;
        }
        self.queue.pop_first();
        self.firing.insert(id);
        Some((id, self.jobs[&id]))
    }

    /// A firing job back to pending, to fire at `at` (a failed append, or the drain began).
    pub fn refire(&mut self, id: i64, at: u64) {
        if self.firing.remove(&id)
            && let Some(e) = self.jobs.get_mut(&id)
        {
            e.at = at;
            self.queue.insert((at, id));
        }
    }

    /// Jobs waiting to fire (the `jobs` gauge).
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Jobs the log must keep: pending and firing.
    pub fn live(&self) -> usize {
        self.jobs.len()
    }

    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Every job the log must keep, by position in the log.
    pub fn by_position(&self) -> Vec<(u64, u32, i64)> {
        let mut v: Vec<_> = self.jobs.iter().map(|(id, e)| (e.pos, e.len, *id)).collect();
        v.sort_unstable();
        v
    }

    /// The job's record moved (compaction).
    pub fn relocate(&mut self, id: i64, pos: u64) {
        if let Some(e) = self.jobs.get_mut(&id) {
            e.pos = pos;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_and_delay_in_the_contract_order() {
        let now = 1_700_000_000_000u64;
        let b = |s: &'static str| Some(s.as_bytes());
        type Case<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, Result<u64, &'a str>);
        let cases: &[Case] = &[
            (None, None, Err("invalid delay param")),
            (None, b("x"), Err("invalid delay param")),
            (None, b(""), Err("invalid delay param")),
            (None, b("1.5"), Err("invalid delay param")),
            (None, b("0"), Err("invalid param")),
            (None, b("-3"), Err("invalid param")),
            (None, b("1"), Ok(now + 1001)),
            (b("x"), b("1"), Err("invalid due param")),
            (b(""), None, Err("invalid due param")),
            (b("1700000000"), b("5"), Err("invalid param")),
            (b("1699999999"), None, Err("invalid param")),
            (b("1700000001"), b("x"), Ok(now + 1000)),
            (None, b("99999999999999999999"), Err("invalid delay param")),
            (None, b("9223372036854775807"), Ok(i64::MAX as u64)),
        ];
        for (due, delay, want) in cases {
            assert_eq!(due_ms(*due, *delay, now), *want, "due={due:?} delay={delay:?}");
        }
    }

    #[test]
    fn job_ids_need_eighteen_digits() {
        let cases: &[(&str, Option<i64>)] = &[
            ("", None),
            ("12345678901234567", None),
            ("123456789012345678", Some(123_456_789_012_345_678)),
            ("1700000000000000000", Some(1_700_000_000_000_000_000)),
            ("-12345678901234567", None),
            ("+123456789012345678", None),
            ("12345678901234567x", None),
            ("9223372036854775808", None),
            ("000000000000000001", Some(1)),
        ];
        for (text, want) in cases {
            assert_eq!(job_id(text.as_bytes()), *want, "{text}");
        }
    }

    #[test]
    fn ids_increase_from_the_clock() {
        let a = next_id(0, 1_700_000_000_000);
        assert_eq!(a, 1_700_000_000_000_000_000);
        assert_eq!(a.to_string().len(), 19);
        assert_eq!(next_id(a, 1_700_000_000_000), a + 1);
        assert_eq!(next_id(a + 5, 1_700_000_000_001), 1_700_000_000_001_000_000);
        assert_eq!(next_id(0, 0), MIN_ID);
    }

    fn entry(at: u64, topic: u32) -> Entry {
        Entry { at, pos: at * 10, len: 10, topic }
    }

    #[test]
    fn fires_in_due_then_id_order() {
        let mut s = Schedule::default();
        let t = s.topic_id("a.t.v");
        assert_eq!(s.topic_id("a.t.v"), t);
        for (id, at) in [(5, 200), (3, 100), (4, 100), (1, 300)] {
            s.insert(id, entry(at, t));
        }
        assert_eq!(s.next_at(), Some(100));
        assert_eq!(s.pop_due(99), None);
        let order: Vec<i64> = std::iter::from_fn(|| s.pop_due(250).map(|(id, _)| id)).collect();
        assert_eq!(order, [3, 4, 5]);
        assert_eq!((s.pending(), s.live(), s.live_bytes()), (1, 4, 40));
    }

    #[test]
    fn cancel_only_pending_jobs_of_the_same_topic() {
        let mut s = Schedule::default();
        let (a, b) = (s.topic_id("a.t.v"), s.topic_id("b.t.v"));
        s.insert(1, entry(100, a));
        s.insert(2, entry(100, b));
        assert!(s.cancellable(1, "a.t.v"));
        assert!(!s.cancellable(1, "b.t.v"));
        assert!(!s.cancellable(9, "a.t.v"));
        assert_eq!(s.pop_due(100).map(|(id, _)| id), Some(1));
        assert!(!s.cancellable(1, "a.t.v"), "a firing job is not cancellable");
        s.refire(1, 150);
        assert!(s.cancellable(1, "a.t.v"));
        assert_eq!(s.pop_due(120).map(|(id, _)| id), Some(2));
        assert_eq!(s.remove(1).map(|e| e.at), Some(150));
        assert_eq!(s.remove(2).map(|e| e.at), Some(100));
        assert_eq!((s.pending(), s.live(), s.live_bytes()), (0, 0, 0));
    }
}
