//! `Appender`: one partition's log with the queue of appends waiting for it. With
//! `ESUB_FSYNC=interval` the workers write the log themselves instead of handing every pub to
//! the topics store thread and back (two thread wake-ups per group of pubs, the larger part of
//! a pub's CPU after the socket calls):
//!
//! - under the topic lock a pub takes its offsets and queues its messages here, so the queue is
//!   in offset order;
//! - at the end of its loop iteration the worker `flush`es: if nobody else holds the log it
//!   writes everything queued (one write per partition for the whole iteration) and answers
//!   each append; if somebody does, it leaves its messages to them. A worker never waits for
//!   the log's lock, so no worker waits on another thread's I/O; whoever holds the lock looks
//!   at the queue again after letting it go, so nothing is left behind;
//! - a write that would roll the active segment (an fsync and a file creation) is left to the
//!   store thread (`NeedsStore`), as are retention and the interval fsyncs.
//!
//! With `ESUB_FSYNC=always` the store thread does every append (group commit), through the same
//! lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{PartitionLog, Record};
use crate::store::StoreFail;
use crate::topics::Message;

/// Told once whether a request was stored, on whichever thread wrote it.
pub type Done = Box<dyn FnOnce(Result<(), StoreFail>) + Send>;

/// `Done` for a queued append, handed the append's messages back (so the caller need not keep
/// a copy of the list).
pub type AppendDone = Box<dyn FnOnce(&[Arc<Message>], Result<(), StoreFail>) + Send>;

/// An append's messages: one (every single pub) without a `Vec` of its own, or several.
pub enum Batch {
    One(Arc<Message>),
    Many(Vec<Arc<Message>>),
}

impl Batch {
    pub fn as_slice(&self) -> &[Arc<Message>] {
        match self {
            Batch::One(m) => std::slice::from_ref(m),
            Batch::Many(v) => v,
        }
    }

    pub fn into_vec(self) -> Vec<Arc<Message>> {
        match self {
            Batch::One(m) => vec![m],
            Batch::Many(v) => v,
        }
    }
}

impl From<Vec<Arc<Message>>> for Batch {
    fn from(v: Vec<Arc<Message>>) -> Batch {
        Batch::Many(v)
    }
}

struct Queued {
    msgs: Batch,
    done: AppendDone,
}

pub struct Appender {
    log: Mutex<PartitionLog>,
    queue: Mutex<Vec<Queued>>,
    /// Written since the last fsync (interval mode).
    dirty: AtomicBool,
}

/// How a `flush` ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Nothing is queued that this call could have written: all written, or left to the
    /// thread that holds the log (it looks at the queue again before it lets go).
    Done,
    /// The queued messages would roll the active segment: the store thread must flush.
    NeedsStore,
}

impl Appender {
    pub fn new(log: PartitionLog) -> Appender {
        Appender {
            log: Mutex::new(log),
            queue: Mutex::new(Vec::new()),
            dirty: AtomicBool::new(false),
        }
    }

    /// Runs `f` on the log, for the store thread (it may wait for a worker's write; workers
    /// never call this), then writes what was queued meanwhile: a worker that found the log
    /// taken left its appends to the holder.
    pub fn with_log<R>(&self, f: impl FnOnce(&mut PartitionLog) -> R) -> R {
        let r = f(&mut self.lock());
        self.flush(true);
        r
    }

    fn lock(&self) -> MutexGuard<'_, PartitionLog> {
        // A panic holding the log leaves it as the last append left it; use it as it is.
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an append whose offsets follow the queued ones (the caller holds the topic lock).
    pub fn queue(&self, msgs: impl Into<Batch>, done: AppendDone) {
        let msgs = msgs.into();
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).push(Queued { msgs, done });
    }

    /// Writes what is queued, one write for all of it, and answers each append in order (under
    /// the log lock, so answers keep offset order whoever writes). `may_roll`: the caller may
    /// fsync and create a segment (the store thread); a worker gets `NeedsStore` instead.
    pub fn flush(&self, may_roll: bool) -> Flushed {
        // The queue's list, taken whole and given back empty: its capacity serves the next
        // iteration's appends.
        let mut taken = Vec::new();
        loop {
            {
                let mut log = match self.log.try_lock() {
                    Ok(log) => log,
                    Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) if may_roll => self.lock(),
                    Err(std::sync::TryLockError::WouldBlock) => return Flushed::Done,
                };
                {
                    let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                    if !may_roll {
                        let bytes = q
                            .iter()
                            .flat_map(|a| a.msgs.as_slice())
                            .map(|m| Record::of(m).encoded_len() as u64)
                            .sum();
                        if !log.fits_without_roll(bytes) {
                            return Flushed::NeedsStore;
                        }
                    }
                    std::mem::swap(&mut *q, &mut taken);
                }
                if !taken.is_empty() {
                    let result = log.append_all(taken.iter().flat_map(|a| a.msgs.as_slice()));
                    if result.is_ok() {
                        self.dirty.store(true, Ordering::Release);
                    }
                    for a in taken.drain(..) {
                        (a.done)(a.msgs.as_slice(), result);
                    }
                }
            }
            // Appends queued by a thread that found the log taken are this thread's to write.
            let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if q.is_empty() {
                if q.capacity() < taken.capacity() {
                    std::mem::swap(&mut *q, &mut taken);
                }
                return Flushed::Done;
            }
        }
    }

    /// Whether anything was written since the last `take_dirty`.
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// Clears the dirty mark, answering whether it was set (the caller syncs, or `mark_dirty`s
    /// again when it could not).
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests;
