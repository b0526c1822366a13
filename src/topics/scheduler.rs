//! `Scheduler`: the delayed jobs' owner on the topics store thread (API-topics.md section 7).
//! Adds and cancels are staged into the store thread's group commit and answered with it;
//! firing a job is a pub (through the hub's offset assignment), and a job is forgotten only
//! once that append is stored, so a crash in between fires it again (at-least-once).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::joblog::{self, Job, JobLog, Rec};
use super::jobs::{Entry, Schedule, next_id};
use super::log::fail_of;
use crate::server::unix_ms;
use crate::store::StoreFail;

/// Jobs fired per round: bounds how many appends one round queues before requests get a turn
/// and the first of them is stored (a backlog, such as every job overdue at start-up, fires
/// over several rounds back to back).
const ROUND: usize = 1024;

pub type AddDone = Box<dyn FnOnce(Result<i64, StoreFail>) + Send>;
/// `Ok(true)`: cancelled (it never fires); `Ok(false)`: unknown, fired or another topic's.
pub type CancelDone = Box<dyn FnOnce(Result<bool, StoreFail>) + Send>;
/// A fired job: its id, and the record to publish (key, tag, payload).
pub type FiredJob = (i64, (Vec<u8>, Vec<u8>, Vec<u8>));

/// Where the answers to fired jobs' appends go (on the store thread): the scheduler forgets
/// the stored ones after the commit.
#[derive(Clone, Default)]
pub struct FireSink(Arc<Mutex<Vec<Answered>>>);

impl FireSink {
    pub fn answered(&self, ids: &[i64], r: Result<(), StoreFail>) {
        let mut q = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        q.extend(ids.iter().map(|id| (*id, r)));
    }

    fn take(&self) -> Vec<Answered> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// What became of a job handed to `OnFire`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fired {
    /// Its append is queued; `done` will be called.
    Queued,
    /// Its topic is gone: the job is dropped.
    NoTopic,
    /// The server is draining: no job fires any more.
    Draining,
}

/// Publishes a round's fired jobs of one topic (raw name), in order, each like a pub: the hub's
/// offset assignment queues the appends, whose answers go to the sink.
pub type OnFire = Box<dyn Fn(&str, Vec<FiredJob>, &FireSink) -> Fired + Send>;

pub struct JobAdd {
    /// Raw name, `appid.topic.ver`.
    pub topic: String,
    pub due_ms: u64,
    pub key: Vec<u8>,
    pub tag: Vec<u8>,
    pub payload: Vec<u8>,
    pub done: AddDone,
}

pub struct JobCancel {
    pub topic: String,
    pub id: i64,
    pub done: CancelDone,
}

/// A request staged into a group commit, answered once the jobs log write is known.
pub enum Staged {
    Add(AddDone, i64),
    /// The entry removed (to restore if the write fails); `None` answers "not found".
    Cancel(CancelDone, Option<(i64, Entry)>),
}

/// A fired job's id and its append's result.
type Answered = (i64, Result<(), StoreFail>);

pub struct Scheduler {
    dir: PathBuf,
    log: Option<JobLog>,
    sched: Schedule,
    /// Records staged for the next write.
    buf: Vec<u8>,
    last_id: i64,
    tick: Duration,
    /// No round before this: rounds are a tenth of a tick apart at least.
    next_round: Instant,
    /// Set once the drain began: nothing fires after.
    paused: bool,
    /// Fired jobs whose append was answered.
    fired: FireSink,
    /// Written since the last fsync.
    pub dirty: bool,
    gauge: Arc<AtomicU64>,
}

impl Scheduler {
    /// No jobs yet: the topics dir does not exist.
    pub fn empty(dir: PathBuf, tick: Duration) -> Scheduler {
        Scheduler {
            dir,
            log: None,
            sched: Schedule::default(),
            buf: Vec::new(),
            last_id: 0,
            tick,
            next_round: Instant::now(),
            paused: false,
            fired: FireSink::default(),
            dirty: false,
            gauge: Arc::default(),
        }
    }

    /// Replays `dir/jobs.log` when there is one (payloads are read again only to fire).
    pub fn open(dir: PathBuf, tick: Duration) -> std::io::Result<Scheduler> {
        let mut s = Scheduler::empty(dir, tick);
        let (sched, last_id) = (&mut s.sched, &mut s.last_id);
        s.log = JobLog::open(&s.dir, |rec, pos, len| match rec {
            Rec::Add(j) => {
                *last_id = (*last_id).max(j.id);
                let topic = sched.topic_id(j.topic);
                sched.insert(j.id, Entry { at: j.due_ms, pos, len, topic });
            }
            Rec::Done(id) => {
                sched.remove(id);
            }
            Rec::Floor(id) => *last_id = (*last_id).max(id),
        })?;
        s.compact_if_worth();
        s.publish_gauge();
        Ok(s)
    }

    /// Pending jobs, kept current for `/v1/status` and the `jobs` gauge.
    pub fn gauge(&self) -> Arc<AtomicU64> {
        self.gauge.clone()
    }

    pub fn pending(&self) -> usize {
        self.sched.pending()
    }

    fn publish_gauge(&self) {
        self.gauge.store(self.sched.pending() as u64, Ordering::Relaxed);
    }

    /// Stages an add: its id, its record, its place in the schedule (undone if the write fails).
    pub fn stage_add(&mut self, add: JobAdd) -> Staged {
        let id = next_id(self.last_id, unix_ms());
        self.last_id = id;
        let pos = self.log.as_ref().map_or(joblog::HEADER, JobLog::end) + self.buf.len() as u64;
        let job = Job {
            id,
            due_ms: add.due_ms,
            topic: &add.topic,
            key: &add.key,
            tag: &add.tag,
            payload: &add.payload,
        };
        let len = Rec::Add(job).encode(&mut self.buf);
        let topic = self.sched.topic_id(&add.topic);
        self.sched.insert(id, Entry { at: add.due_ms, pos, len, topic });
        Staged::Add(add.done, id)
    }

    /// Stages a cancel: a pending job of that topic leaves the schedule now (so it cannot fire),
    /// and comes back if the write fails.
    pub fn stage_cancel(&mut self, c: JobCancel) -> Staged {
        if !self.sched.cancellable(c.id, &c.topic) {
            return Staged::Cancel(c.done, None);
        }
        let entry = self.sched.remove(c.id).map(|e| (c.id, e));
        Rec::Done(c.id).encode(&mut self.buf);
        Staged::Cancel(c.done, entry)
    }

    /// Writes what was staged (synced when `sync`); the log is created on first use.
    pub fn flush(&mut self, sync: bool) -> Result<(), StoreFail> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let r = (|| {
            if self.log.is_none() {
                self.log = Some(JobLog::create(&self.dir)?);
            }
            let log = self.log.as_mut().expect("just set");
            log.append(&self.buf)?;
            if sync { log.sync() } else { Ok(()) }
        })();
        self.buf.clear();
        match r {
            Ok(()) => {
                self.dirty |= !sync;
                Ok(())
            }
            Err(e) => {
                crate::warn!("topics jobs log write failed dir={} error={e}", self.dir.display());
                Err(fail_of(&e))
            }
        }
    }

    /// Answers a staged request with the write's result.
    pub fn settle(&mut self, staged: Staged, result: Result<(), StoreFail>) {
        match staged {
            Staged::Add(done, id) => {
                if result.is_err() {
                    self.sched.remove(id);
                }
                done(result.map(|()| id));
            }
            Staged::Cancel(done, None) => done(Ok(false)),
            Staged::Cancel(done, Some((id, entry))) => {
                if result.is_err() {
                    self.sched.insert(id, entry);
                }
                done(result.map(|()| true));
            }
        }
        self.publish_gauge();
    }

    /// When the store thread should wake up for the next round.
    pub fn next_wake(&self) -> Option<Instant> {
        if self.paused {
            return None;
        }
        let at = self.sched.next_at()?;
        let wait = Duration::from_millis(at.saturating_sub(unix_ms()));
        Some((Instant::now() + wait).max(self.next_round))
    }

    /// Fires the jobs that are due (up to `ROUND`), in (due, id) order.
    pub fn fire_round(&mut self, on_fire: &OnFire) {
        if self.paused || Instant::now() < self.next_round {
            return;
        }
        let now = unix_ms();
        if self.sched.next_at().is_none_or(|at| at > now) {
            return;
        }
        self.next_round = Instant::now() + self.tick / 10;
        // Per topic, in (due, id) order: one publish (one append per partition) each.
        let mut by_topic: Vec<(u32, Vec<FiredJob>, Vec<u64>)> = Vec::new();
        for n in 0..ROUND {
            if n + 1 == ROUND {
                // A backlog: the next round follows this one's commit at once.
                self.next_round = Instant::now();
            }
            let Some((id, e)) = self.sched.pop_due(now) else { break };
            let frame = self.log.as_ref().map(|log| log.read(e.pos, e.len));
            match frame.as_ref().map(|f| f.as_ref().map(|f| joblog::decode(f))) {
                Some(Ok(Ok(Rec::Add(j)))) if j.id == id => {
                    let rec = (j.key.to_vec(), j.tag.to_vec(), j.payload.to_vec());
                    match by_topic.iter_mut().find(|(t, ..)| *t == e.topic) {
                        Some((_, jobs, ats)) => {
                            jobs.push((id, rec));
                            ats.push(e.at);
                        }
                        None => by_topic.push((e.topic, vec![(id, rec)], vec![e.at])),
                    }
                }
                other => {
                    crate::warn!("topics cannot read a job id={id} pos={} read={other:?}", e.pos);
                    self.sched.refire(id, now + self.tick.as_millis() as u64);
                }
            }
        }
        let mut dropped = Vec::new();
        for (topic, jobs, ats) in by_topic {
            let ids: Vec<i64> = jobs.iter().map(|(id, _)| *id).collect();
            let fired = if self.paused {
                Fired::Draining
            } else {
                on_fire(self.sched.topic_name(topic), jobs, &self.fired)
            };
            match fired {
                Fired::Queued => {}
                Fired::NoTopic => {
                    crate::warn!(
                        "topics dropped jobs whose topic is gone topic={} jobs={}",
                        self.sched.topic_name(topic),
                        ids.len()
                    );
                    dropped.extend(ids.into_iter().map(|id| (id, Ok(()))));
                }
                Fired::Draining => {
                    for (id, at) in ids.into_iter().zip(ats) {
                        self.sched.refire(id, at);
                    }
                    self.paused = true;
                }
            }
        }
        self.forget(dropped);
        self.publish_gauge();
    }

    /// Forgets the jobs whose firing append was stored; a failed one fires again a tick later.
    pub fn settle_fired(&mut self) {
        let fired = self.fired.take();
        if !fired.is_empty() {
            self.forget(fired);
        }
    }

    fn forget(&mut self, fired: Vec<Answered>) {
        if fired.is_empty() {
            return;
        }
        let retry = unix_ms() + self.tick.as_millis() as u64;
        for (id, r) in fired {
            match r {
                Ok(()) => {
                    self.sched.remove(id);
                    Rec::Done(id).encode(&mut self.buf);
                }
                Err(f) => {
                    crate::warn!("topics job append failed, firing again id={id} error={f:?}");
                    self.sched.refire(id, retry);
                }
            }
        }
        // Not synced: a forget lost in a crash only fires the job again (at-least-once).
        let _ = self.flush(false);
        self.compact_if_worth();
        self.publish_gauge();
    }

    fn compact_if_worth(&mut self) {
        let Some(log) = self.log.as_mut() else { return };
        if !log.worth_compacting(self.sched.live_bytes()) {
            return;
        }
        let started = Instant::now();
        match log.compact(self.last_id, &self.sched.by_position()) {
            Ok(moved) => {
                for (id, pos) in moved {
                    self.sched.relocate(id, pos);
                }
                self.dirty = false;
                crate::debug!(
                    "topics jobs compacted jobs={} ms={}",
                    self.sched.live(),
                    started.elapsed().as_millis()
                );
            }
            Err(e) => crate::warn!("topics jobs log compaction failed error={e}"),
        }
    }

    pub fn sync(&mut self) -> std::io::Result<()> {
        if let Some(log) = &self.log {
            log.sync()?;
        }
        self.dirty = false;
        Ok(())
    }

    pub fn sync_handle(&self) -> Option<std::fs::File> {
        self.log.as_ref().and_then(|l| l.sync_handle().ok())
    }
}
