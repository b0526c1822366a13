//! `TimerWheel`: a hashed wheel of deadlines per worker. Entries are never cancelled: each names
//! a connection slot and its generation, and the owner checks, when it fires, whether the
//! deadline still stands (and re-arms if it moved later). That keeps insert O(1) and allocation
//! free once the slots' vectors have grown.

use std::time::{Duration, Instant};

/// 10 ms: coarser than any timeout we offer is precise, finer than any a user would notice.
pub const TICK: Duration = Duration::from_millis(10);
/// 1024 slots of 10 ms cover ~10 s per turn: header timeouts fire on their first pass.
const SLOTS: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub token: usize,
    pub generation: u64,
    pub at: Instant,
}

/// The time `ticks` ticks after the origin. In u64 nanoseconds: a tick count squeezed into a
/// u32 wraps after 2^32 ticks (497 days of uptime) into a deadline in the past, and the loop spins.
fn tick_span(ticks: u64) -> Duration {
    Duration::from_nanos(ticks.saturating_mul(TICK.as_nanos() as u64))
}

pub struct TimerWheel {
    slots: Vec<Vec<Entry>>,
    /// Instant of tick 0.
    origin: Instant,
    /// The next tick to process.
    cursor: u64,
    len: usize,
}

impl TimerWheel {
    pub fn new(now: Instant) -> TimerWheel {
        TimerWheel {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            origin: now,
            cursor: 0,
            len: 0,
        }
    }

    fn tick_of(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin);
        // Round up: an entry never fires before its deadline.
        since.as_nanos().div_ceil(TICK.as_nanos()) as u64
    }

    pub fn insert(&mut self, token: usize, generation: u64, at: Instant) {
        let tick = self.tick_of(at).max(self.cursor);
        self.slots[(tick % SLOTS as u64) as usize].push(Entry { token, generation, at });
        self.len += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How long poll may sleep before the next entry could fire (`None`: no entry at all).
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        if self.len == 0 {
            return None;
        }
        // The first non-empty slot from the cursor; an entry there may belong to a later turn,
        // which costs one early wake-up per turn, never a late one.
        let ahead = (0..SLOTS as u64)
            .find(|i| !self.slots[((self.cursor + i) % SLOTS as u64) as usize].is_empty())?;
        let at = self.origin + tick_span(self.cursor + ahead);
        Some(at.saturating_duration_since(now))
    }

    /// Moves every entry whose deadline has passed into `due`.
    pub fn expire(&mut self, now: Instant, due: &mut Vec<Entry>) {
        // Every tick up to `now_tick` lies wholly in the past (deadlines round up to ticks).
        let now_tick = self.tick_of(now).saturating_sub(1);
        if now_tick < self.cursor {
            return;
        }
        // At most one full turn of slots needs visiting, however long we slept.
        let last = now_tick.min(self.cursor + SLOTS as u64 - 1);
        for tick in self.cursor..=last {
            let slot = &mut self.slots[(tick % SLOTS as u64) as usize];
            let mut i = 0;
            while i < slot.len() {
                if slot[i].at <= now {
                    due.push(slot.swap_remove(i));
                    self.len -= 1;
                } else {
                    i += 1;
                }
            }
        }
        self.cursor = now_tick + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_of_deadline_never_early() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        // Two ticks apart or more: within one tick the wheel keeps no order.
        let deadlines = [5u64, 25, 95, 10_000, 25_000, 50];
        for (i, ms) in deadlines.iter().enumerate() {
            w.insert(i, 1, t0 + Duration::from_millis(*ms));
        }
        let mut fired = Vec::new();
        let mut due = Vec::new();
        let mut now = t0;
        while !w.is_empty() {
            let wait = w.timeout(now).unwrap();
            now += wait.max(Duration::from_millis(1));
            w.expire(now, &mut due);
            for e in due.drain(..) {
                assert!(e.at <= now, "fired early");
                assert!(
                    now - e.at <= TICK * 2 + Duration::from_millis(1),
                    "fired late: {:?}",
                    now - e.at
                );
                fired.push(e.token);
            }
        }
        assert_eq!(fired, vec![0, 1, 5, 2, 3, 4]);
    }

    #[test]
    fn after_497_days_the_next_deadline_is_still_ahead() {
        // Found by fuzzing: past 2^32 ticks the poll timeout came out as zero (a busy loop).
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let mut due = Vec::new();
        let later = t0 + Duration::from_secs(500 * 86_400);
        w.expire(later, &mut due);
        w.insert(1, 1, later + Duration::from_secs(5));
        let wait = w.timeout(later).unwrap();
        assert!(wait >= Duration::from_secs(4), "wait {wait:?}");
        assert!(wait <= Duration::from_secs(5) + TICK, "wait {wait:?}");
        w.expire(later + Duration::from_secs(5) + TICK, &mut due);
        assert_eq!(due.len(), 1);
    }

    #[test]
    fn long_sleep_fires_everything_past() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        for i in 0..100 {
            w.insert(i, 0, t0 + Duration::from_millis(i as u64 * 137));
        }
        let mut due = Vec::new();
        w.expire(t0 + Duration::from_secs(60), &mut due);
        assert_eq!(due.len(), 100);
        assert!(w.is_empty());
        assert_eq!(w.timeout(t0), None);
        // An entry inserted in the past fires within a tick.
        w.insert(7, 0, t0);
        w.expire(t0 + Duration::from_secs(60) + TICK, &mut due);
        assert_eq!(due.len(), 101);
    }
}
