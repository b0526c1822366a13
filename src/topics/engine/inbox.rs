//! Where the topics store thread takes its requests from: `Inbox`, the workers' queue (one
//! wake-up per worker loop iteration), or a channel in tests.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use super::TReq;

/// Where the store thread takes its requests from: a channel (tests), or the workers' `Inbox`.
pub trait Source {
    /// Moves up to `max` requests into `into`, waiting at most `wait` for the first one;
    /// `true` when no request can ever come again.
    fn next_batch(&self, into: &mut Vec<TReq>, max: usize, wait: Duration) -> bool;
}

impl Source for Receiver<TReq> {
    fn next_batch(&self, into: &mut Vec<TReq>, max: usize, wait: Duration) -> bool {
        match self.recv_timeout(wait) {
            Ok(req) => into.push(req),
            Err(RecvTimeoutError::Timeout) => return false,
            Err(RecvTimeoutError::Disconnected) => return true,
        }
        while into.len() < max {
            match self.try_recv() {
                Ok(req) => into.push(req),
                Err(_) => break,
            }
        }
        false
    }
}

/// The workers' queue to the store thread. A worker pushes inside its topic's critical
/// section (so each partition arrives in offset order) but wakes the store thread once per
/// loop iteration (`Inbox::wake`), not once per request: under load the store thread takes
/// a whole iteration's pubs in one group commit, and two threads trade far fewer futex
/// wake-ups.
#[derive(Default)]
pub struct Inbox {
    queue: std::sync::Mutex<Vec<TReq>>,
    ready: std::sync::Condvar,
    /// Set by a push, cleared by the wake-up that follows it.
    unannounced: std::sync::atomic::AtomicBool,
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<TReq>> {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `req`; the store thread hears of it at the next `wake`.
    pub fn push(&self, req: TReq) {
        self.lock().push(req);
        self.unannounced.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Queues `req` and wakes the store thread at once.
    pub fn push_now(&self, req: TReq) {
        self.lock().push(req);
        self.ready.notify_one();
    }

    /// Wakes the store thread if anything was pushed since the last wake-up.
    pub fn wake(&self) {
        if self.unannounced.swap(false, std::sync::atomic::Ordering::AcqRel) {
            self.ready.notify_one();
        }
    }
}

impl Source for Inbox {
    fn next_batch(&self, into: &mut Vec<TReq>, max: usize, wait: Duration) -> bool {
        let mut q = self.lock();
        if q.is_empty() {
            // A push whose wake-up is still to come is found by the timed wait at worst: the
            // workers announce every push at the end of their loop iteration.
            q = self
                .ready
                .wait_timeout(q, wait)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        let take = q.len().min(max);
        into.extend(q.drain(..take));
        false
    }
}

impl Source for std::sync::Arc<Inbox> {
    fn next_batch(&self, into: &mut Vec<TReq>, max: usize, wait: Duration) -> bool {
        (**self).next_batch(into, max, wait)
    }
}
