//! `TopicEngine`: the topics store thread. It owns every partition log and the metadata log,
//! and commits in groups: each batch of queued requests costs one write per partition touched,
//! one metadata write, and (with `ESUB_FSYNC=always`) one fsync per file before any answer.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Message;
use super::journal::{self, Journal};
use super::log::{Appender, PartitionLog, PartitionReader, fail_of};
use super::meta::{CommitKey, MetaLog, MetaRec};
use super::scheduler::{JobAdd, JobCancel, OnFire, Scheduler, Staged};
use crate::config::Fsync;
use crate::server::unix_ms;
use crate::store::StoreFail;
pub use inbox::{Inbox, Source};
use syncer::{Op, Syncer};

mod inbox;
mod syncer;

/// Requests taken per group commit: bounds one batch's memory and latency.
const BATCH: usize = 4096;
/// A topic's directory name is its raw name up to this many bytes; longer names (shadow queues
/// can reach ~290 bytes, past NAME_MAX) keep a prefix and a hash.
const DIR_NAME_MAX: usize = 200;

/// A topic as the metadata log keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicSpec {
    /// Raw name, `appid.topic.ver`.
    pub name: String,
    pub partitions: u32,
    pub retention_hours: f64,
    /// Per partition; -1 = unlimited.
    pub retention_bytes: i64,
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// `ESUB_DATA_DIR/topics`.
    pub dir: PathBuf,
    pub fsync: Fsync,
    pub fsync_interval: Duration,
    pub segment_bytes: u64,
    pub retention_check: Duration,
    /// `ESUB_JOB_TICK_MS`: a due job fires within this, normally.
    pub job_tick: Duration,
}

pub use super::log::Done;
pub type TopicDone = Box<dyn FnOnce(Result<Parts, StoreFail>) + Send>;
/// `(topic, partition, new_oldest)`, called on the store thread when retention moved `oldest`.
pub type OnRetention = Box<dyn Fn(&str, u32, i64) + Send>;

/// What workers ask of the topics store thread. Every `done` is called once, on that thread, in
/// the order the requests arrived.
pub enum TReq {
    /// Create a topic (dirs + meta record, synced before `done`), or when it exists with the same
    /// partition count replace its retention (another count is an error). Answers the readers of
    /// its partitions.
    Topic {
        spec: TopicSpec,
        done: TopicDone,
    },
    /// Append to one partition (caller assigned consecutive offsets, in order per partition).
    /// After an error nothing of it is stored and the partition's `end()` is unchanged.
    /// `ESUB_FSYNC=always` only: in interval mode appends go through the partition's
    /// `Appender` queue.
    Append {
        topic: Arc<str>,
        partition: u32,
        msgs: Vec<Arc<Message>>,
        done: Done,
    },
    /// Metadata records (commits, forget-group).
    Meta {
        recs: Vec<MetaRec>,
        done: Done,
    },
    /// Write what a partition's `Appender` queued: a worker found it would roll the segment.
    Flush(Arc<Appender>),
    /// Store a delayed job (7); `done` hears its id once it is stored.
    JobAdd(JobAdd),
    /// Remove a pending job of that topic; `done` hears whether it did (once stored).
    JobCancel(JobCancel),
    Shutdown,
}

/// One batch's appends to one partition: topic, partition, messages.
type AppendGroup = (Arc<str>, u32, Vec<Arc<Message>>);

/// A topic's partitions as workers use them: to read, and (interval mode) to append.
pub struct Parts {
    pub readers: Vec<PartitionReader>,
    pub appenders: Vec<Arc<Appender>>,
}

pub struct OpenedTopic {
    pub spec: TopicSpec,
    pub parts: Parts,
}

/// What start-up found on disk.
#[derive(Default)]
pub struct Opened {
    pub topics: Vec<OpenedTopic>,
    pub commits: BTreeMap<CommitKey, i64>,
}

struct Topic {
    spec: TopicSpec,
    logs: Vec<Arc<Appender>>,
}

impl Topic {
    fn parts(&self) -> Parts {
        Parts {
            readers: self.logs.iter().map(|a| a.with_log(|log| log.reader())).collect(),
            appenders: self.logs.clone(),
        }
    }
}

pub struct TopicEngine {
    cfg: EngineConfig,
    /// `None` until the first topic exists: nothing is written before.
    meta: Option<MetaLog>,
    meta_dirty: bool,
    topics: HashMap<String, Topic>,
    jobs: Scheduler,
    on_fire: Option<OnFire>,
    /// `ESUB_FSYNC=always`: the one file each group commit syncs (opened at the first append).
    journal: Option<Journal>,
}

/// The directory of a topic's partitions under the topics dir.
pub fn topic_dir(root: &Path, name: &str) -> PathBuf {
    if name.len() <= DIR_NAME_MAX {
        return root.join(name);
    }
    // FNV-1a 64: stable across builds, and names are ours, not an attacker's choice of hash.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let cut = (0..=DIR_NAME_MAX - 20).rev().find(|i| name.is_char_boundary(*i)).unwrap_or(0);
    root.join(format!("{}~{hash:016x}", &name[..cut]))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn open_logs(root: &Path, spec: &TopicSpec, segment_bytes: u64) -> io::Result<Vec<Arc<Appender>>> {
    let dir = topic_dir(root, &spec.name);
    (0..spec.partitions)
        .map(|p| {
            let log = PartitionLog::open(&dir.join(p.to_string()), segment_bytes)?;
            Ok(Arc::new(Appender::new(log)))
        })
        .collect()
}

/// What a request in a batch is waiting for.
enum Waiting {
    Answered(Done, Result<(), StoreFail>),
    Append(Done, usize),
    Meta(Done),
    Topic(TopicDone, Result<Parts, StoreFail>),
    Job(Staged),
}

impl TopicEngine {
    /// Reads what `cfg.dir` holds: the metadata log (replayed, compacted) and every topic's
    /// partitions (torn tails cut). Creates nothing when the dir does not exist. An unusable dir
    /// is an error naming `ESUB_DATA_DIR`, for exit code 2.
    pub fn open(cfg: EngineConfig) -> Result<(TopicEngine, Opened), String> {
        let ctx = |what: &str, e: &dyn std::fmt::Display| {
            format!("ESUB_DATA_DIR: {}: {what}: {e}", cfg.dir.display())
        };
        let started = Instant::now();
        let jobs = match std::fs::metadata(&cfg.dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(ctx("cannot read", &e)),
            Ok(m) if !m.is_dir() => return Err(ctx("cannot use", &"not a directory")),
            Ok(_) => Some(
                Scheduler::open(cfg.dir.clone(), cfg.job_tick).map_err(|e| ctx("jobs log", &e))?,
            ),
        };
        let exists = jobs.is_some();
        let jobs = jobs.unwrap_or_else(|| Scheduler::empty(cfg.dir.clone(), cfg.job_tick));
        let mut engine = TopicEngine {
            cfg: cfg.clone(),
            meta: None,
            meta_dirty: false,
            topics: HashMap::new(),
            jobs,
            on_fire: None,
            journal: None,
        };
        if !exists {
            return Ok((engine, Opened::default()));
        }
        let (meta, state) = MetaLog::open(&cfg.dir).map_err(|e| ctx("metadata log", &e))?;
        let mut opened = Opened { topics: Vec::new(), commits: state.commits };
        for spec in state.topics.into_values() {
            let logs = open_logs(&cfg.dir, &spec, cfg.segment_bytes)
                .map_err(|e| ctx(&format!("topic {}", spec.name), &e))?;
            let t = Topic { logs, spec: spec.clone() };
            opened.topics.push(OpenedTopic { spec: spec.clone(), parts: t.parts() });
            engine.topics.insert(spec.name, t);
        }
        engine.replay_journal().map_err(|e| ctx("always.journal", &e))?;
        crate::info!(
            "topics store opened dir={} topics={} commits={} jobs={} ms={}",
            cfg.dir.display(),
            opened.topics.len(),
            opened.commits.len(),
            engine.jobs.pending(),
            started.elapsed().as_millis()
        );
        engine.meta = Some(meta);
        Ok((engine, opened))
    }

    /// Pending jobs, kept current by the store thread (`/v1/status`, the `jobs` gauge).
    pub fn jobs_gauge(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.jobs.gauge()
    }

    /// How fired jobs are published; without it jobs are stored but never fire.
    pub fn set_on_fire(&mut self, on_fire: OnFire) {
        self.on_fire = Some(on_fire);
    }

    /// The store thread: group commits until `Shutdown` (or every sender is gone), then a last
    /// sync. `on_retention(topic, partition, new_oldest)` is called when retention moved a
    /// partition's oldest offset.
    pub fn run(mut self, rx: impl Source, on_retention: OnRetention) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut syncer = Syncer::start();
        let mut next_sync = Instant::now() + self.cfg.fsync_interval;
        let mut next_retention = Instant::now() + self.cfg.retention_check;
        loop {
            // Workers write the logs in interval mode without telling this thread: it looks
            // at their dirty marks every interval while there are topics.
            let dirty = self.is_dirty() || !self.topics.is_empty();
            let mut wake = if dirty { next_sync.min(next_retention) } else { next_retention };
            if self.on_fire.is_some()
                && let Some(due) = self.jobs.next_wake()
            {
                wake = wake.min(due);
            }
            let mut stop =
                rx.next_batch(&mut batch, BATCH, wake.saturating_duration_since(Instant::now()));
            stop |= batch.iter().any(|r| matches!(r, TReq::Shutdown));
            if !batch.is_empty() {
                self.commit(&mut batch);
            }
            // Fired jobs whose appends this commit stored are forgotten; then the next round
            // (its appends arrive with the next batch).
            self.jobs.settle_fired();
            if !stop && let Some(on_fire) = &self.on_fire {
                self.jobs.fire_round(on_fire);
            }
            let now = Instant::now();
            if stop {
                // Everything answered so far reaches the disk before the thread ends.
                syncer.finish();
                self.flush_all();
                self.sync_dirty();
                self.checkpoint();
            } else if self.cfg.fsync != Fsync::Always && self.is_dirty() && now >= next_sync {
                self.sync_in_background(&syncer);
            } else if self.cfg.fsync == Fsync::Always && now >= next_sync {
                self.write_back(&syncer);
            }
            if now >= next_sync {
                next_sync = now + self.cfg.fsync_interval;
            }
            if now >= next_retention && !stop {
                self.retain(&*on_retention);
                next_retention = Instant::now() + self.cfg.retention_check;
            }
            if stop {
                crate::info!("topics store closed");
                return;
            }
        }
    }

    /// `ESUB_FSYNC=always`: each group is written to its partitions, then to the journal, whose
    /// one fdatasync makes the whole batch durable; only then do the partitions publish it. A
    /// journal that cannot take the batch (a full disk or file limit) is started over by a
    /// checkpoint and tried once more; if it still fails, the partitions' writes are taken out
    /// again and every append gets the error.
    fn append_journaled(
        &mut self,
        groups: &[AppendGroup],
        results: &mut Vec<Result<(), StoreFail>>,
    ) {
        let mut written = Vec::with_capacity(groups.len());
        for (topic, p, msgs) in groups {
            let log = &self.topics[&**topic].logs[*p as usize];
            match log.with_log(|log| log.write(msgs)) {
                Ok(w) => {
                    written.push(Some(w));
                    results.push(Ok(()));
                }
                Err(f) => {
                    written.push(None);
                    results.push(Err(f));
                }
            }
        }
        let stored = self.journal_commit(groups, results);
        for (i, (topic, p, _)) in groups.iter().enumerate() {
            let Some(w) = written[i].take() else { continue };
            let log = &self.topics[&**topic].logs[*p as usize];
            match stored {
                Ok(()) => {
                    log.with_log(|log| log.publish_written(w));
                    log.mark_dirty();
                }
                Err(f) => {
                    log.with_log(|log| log.unwrite(w));
                    results[i] = Err(f);
                }
            }
        }
        if self.journal.as_ref().is_some_and(Journal::needs_checkpoint) {
            self.checkpoint();
        }
    }

    /// Writes the successful groups to the journal and syncs it (see `append_journaled`).
    fn journal_commit(
        &mut self,
        groups: &[AppendGroup],
        results: &[Result<(), StoreFail>],
    ) -> Result<(), StoreFail> {
        if self.journal.is_none() {
            // A new journal's directory entry is durable before the journal is relied on.
            let j = Journal::open(&self.cfg.dir)
                .and_then(|(j, _)| sync_dir(&self.cfg.dir).map(|()| j))
                .map_err(|e| {
                    crate::warn!("topics cannot open the journal error={e}");
                    fail_of(&e)
                })?;
            self.journal = Some(j);
        }
        let j = self.journal.as_mut().expect("opened above");
        for (i, (topic, p, msgs)) in groups.iter().enumerate() {
            if results[i].is_ok() {
                j.add(topic, *p, msgs);
            }
        }
        if !j.pending() {
            return Ok(());
        }
        if j.commit().is_ok() {
            return Ok(());
        }
        self.checkpoint();
        let j = self.journal.as_mut().expect("opened above");
        let r = j.commit().map_err(|e| {
            crate::warn!("topics journal write failed error={e}");
            fail_of(&e)
        });
        j.discard();
        r
    }

    /// Syncs every partition written since the last checkpoint, then starts the journal over
    /// (kept whole when a sync failed: it still covers those writes).
    fn checkpoint(&mut self) {
        let synced = self.sync_partitions();
        if let (true, Some(j)) = (synced, self.journal.as_mut())
            && let Err(e) = j.reset()
        {
            crate::warn!("topics cannot start the journal over error={e}");
        }
    }

    /// Start-up: appends to each partition what the journal holds past its end (lost with the
    /// page cache: the journal was synced, the partition was not), syncs them, and starts the
    /// journal over.
    fn replay_journal(&mut self) -> io::Result<()> {
        if !journal::path(&self.cfg.dir).exists() {
            return Ok(());
        }
        let (j, parsed) = Journal::open(&self.cfg.dir)?;
        let mut restored = 0usize;
        for (topic, p, msgs) in parsed.entries {
            let Some(log) = self.topics.get(&topic).and_then(|t| t.logs.get(p as usize)) else {
                crate::warn!(
                    "topics journal names an unknown partition topic={topic} partition={p}"
                );
                continue;
            };
            let r = log.with_log(|log| {
                let latest = log.latest();
                let missing: Vec<Arc<Message>> =
                    msgs.into_iter().filter(|m| m.offset >= latest).map(Arc::new).collect();
                match missing.first() {
                    None => Ok(0),
                    Some(m) if m.offset != latest => {
                        crate::warn!(
                            "topics journal gap topic={topic} partition={p} latest={latest} journal={}",
                            m.offset
                        );
                        Ok(0)
                    }
                    Some(_) => log.append(&missing).map(|()| missing.len()).map_err(|_| {
                        io::Error::other(format!("cannot restore topic {topic} partition {p}"))
                    }),
                }
            })?;
            // Synced before the journal starts over, restored or not: what it covered may be
            // in the page cache only (a process killed, not a power cut).
            log.mark_dirty();
            restored += r;
        }
        if restored > 0 || parsed.torn {
            crate::warn!(
                "topics journal replayed restored_msgs={restored} torn_tail={}",
                parsed.torn
            );
        }
        self.journal = Some(j);
        self.checkpoint();
        Ok(())
    }

    /// `ESUB_FSYNC=interval`: hands the dirty files to the syncer thread, so appends never
    /// wait behind a periodic fsync (they would, for milliseconds, on this thread). Files stay
    /// dirty when the syncer is still busy with the last round.
    fn sync_in_background(&mut self, syncer: &Syncer) {
        if !syncer.available() {
            return self.sync_dirty();
        }
        let mut files: Vec<Arc<File>> = Vec::new();
        let mut taken: Vec<&Appender> = Vec::new();
        for t in self.topics.values() {
            for log in &t.logs {
                if log.take_dirty() {
                    files.push(log.with_log(|log| log.sync_handle()));
                    taken.push(log);
                }
            }
        }
        if self.meta_dirty
            && let Some(Ok(f)) = self.meta.as_ref().map(MetaLog::sync_handle)
        {
            files.push(Arc::new(f));
        }
        if self.jobs.dirty
            && let Some(f) = self.jobs.sync_handle()
        {
            files.push(Arc::new(f));
        }
        if syncer.offer(files, Op::Sync) {
            self.meta_dirty = false;
            self.jobs.dirty = false;
        } else {
            taken.iter().for_each(|log| log.mark_dirty());
        }
    }

    /// `ESUB_FSYNC=always`, every `ESUB_FSYNC_MS`: the partitions written since the last
    /// checkpoint start writing their pages out in the background (`Op::WriteBack`), so the
    /// checkpoint's fsyncs (and a roll's) find little left to write. Their dirty marks stay:
    /// only the checkpoint's own fsync lets the journal start over.
    fn write_back(&self, syncer: &Syncer) {
        let files: Vec<Arc<File>> = self
            .topics
            .values()
            .flat_map(|t| t.logs.iter())
            .filter(|log| log.is_dirty())
            .map(|log| log.with_log(|log| log.sync_handle()))
            .collect();
        if !files.is_empty() {
            // A round still running is enough: the next interval offers again.
            let _ = syncer.offer(files, Op::WriteBack);
        }
    }

    fn is_dirty(&self) -> bool {
        self.meta_dirty
            || self.jobs.dirty
            || self.topics.values().any(|t| t.logs.iter().any(|log| log.is_dirty()))
    }

    /// Syncs every partition marked dirty (a failure is logged and leaves it dirty); `true`
    /// when all of them synced.
    fn sync_partitions(&self) -> bool {
        let mut synced = true;
        for (name, t) in &self.topics {
            for (p, log) in t.logs.iter().enumerate() {
                if log.take_dirty()
                    && let Err(e) = log.with_log(PartitionLog::sync)
                {
                    log.mark_dirty();
                    synced = false;
                    crate::warn!("topics fsync failed topic={name} partition={p} error={e}");
                }
            }
        }
        synced
    }

    /// Interval mode's fsync of everything written since the last one. A failure is logged: the
    /// writes it covered were answered already.
    fn sync_dirty(&mut self) {
        self.sync_partitions();
        if self.meta_dirty {
            match self.meta.as_mut().map_or(Ok(()), MetaLog::sync) {
                Ok(()) => self.meta_dirty = false,
                Err(e) => crate::warn!("topics meta fsync failed error={e}"),
            }
        }
        if self.jobs.dirty
            && let Err(e) = self.jobs.sync()
        {
            crate::warn!("topics jobs fsync failed error={e}");
        }
    }

    /// The metadata log, created with the topics dir on first use.
    fn meta(&mut self) -> io::Result<&mut MetaLog> {
        if self.meta.is_none() {
            std::fs::create_dir_all(&self.cfg.dir)?;
            let (meta, _) = MetaLog::open(&self.cfg.dir)?;
            if let Some(parent) = self.cfg.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
            self.meta = Some(meta);
        }
        Ok(self.meta.as_mut().expect("just set"))
    }

    /// Creates a topic's partitions (not yet its meta record), or checks the partition count of
    /// an existing one. Answers the readers and the spec it replaced (`None`: it is new).
    fn prepare_topic(&mut self, spec: &TopicSpec) -> Result<(Parts, Option<TopicSpec>), StoreFail> {
        if let Some(t) = self.topics.get_mut(&spec.name) {
            if t.spec.partitions != spec.partitions {
                crate::warn!(
                    "topics refused a partition count change topic={} from={} to={}",
                    spec.name,
                    t.spec.partitions,
                    spec.partitions
                );
                return Err(StoreFail::Io);
            }
            let old = std::mem::replace(&mut t.spec, spec.clone());
            return Ok((t.parts(), Some(old)));
        }
        let created = (|| {
            self.meta()?;
            let logs = open_logs(&self.cfg.dir, spec, self.cfg.segment_bytes)?;
            sync_dir(&topic_dir(&self.cfg.dir, &spec.name))?;
            sync_dir(&self.cfg.dir)?;
            Ok::<_, io::Error>(logs)
        })();
        let logs = created.map_err(|e| {
            crate::warn!("topics cannot create topic={} error={e}", spec.name);
            fail_of(&e)
        })?;
        let t = Topic { spec: spec.clone(), logs };
        let parts = t.parts();
        self.topics.insert(spec.name.clone(), t);
        Ok((parts, None))
    }

    /// One group commit: topics prepared in order, appends gathered per partition and written
    /// once each, metadata written once, syncs as `ESUB_FSYNC` says, then every answer in order.
    fn commit(&mut self, batch: &mut Vec<TReq>) {
        let mut waiting = Vec::with_capacity(batch.len());
        let mut groups: Vec<AppendGroup> = Vec::new();
        let mut group_of: HashMap<(Arc<str>, u32), usize> = HashMap::new();
        let mut recs = Vec::new();
        // Topics whose meta record is in `recs`, with the spec to restore if it fails.
        let mut undo: Vec<(String, Option<TopicSpec>)> = Vec::new();
        for req in batch.drain(..) {
            match req {
                TReq::Topic { spec, done } => {
                    let r = self.prepare_topic(&spec).map(|(readers, old)| {
                        undo.push((spec.name.clone(), old));
                        recs.push(MetaRec::Topic(spec));
                        readers
                    });
                    waiting.push(Waiting::Topic(done, r));
                }
                TReq::Append { topic, partition, msgs, done } => {
                    let known = self
                        .topics
                        .get(&*topic)
                        .is_some_and(|t| (partition as usize) < t.logs.len());
                    if !known {
                        crate::warn!(
                            "topics append to an unknown partition topic={topic} partition={partition}"
                        );
                        waiting.push(Waiting::Answered(done, Err(StoreFail::Io)));
                        continue;
                    }
                    let g = *group_of.entry((topic.clone(), partition)).or_insert_with(|| {
                        groups.push((topic, partition, Vec::new()));
                        groups.len() - 1
                    });
                    groups[g].2.extend(msgs);
                    waiting.push(Waiting::Append(done, g));
                }
                TReq::Meta { recs: r, done } => {
                    recs.extend(r);
                    waiting.push(Waiting::Meta(done));
                }
                TReq::Flush(log) => {
                    log.flush(true);
                }
                TReq::JobAdd(add) => waiting.push(Waiting::Job(self.jobs.stage_add(add))),
                TReq::JobCancel(c) => waiting.push(Waiting::Job(self.jobs.stage_cancel(c))),
                TReq::Shutdown => {}
            }
        }
        let always = self.cfg.fsync == Fsync::Always;
        let mut results = Vec::with_capacity(groups.len());
        if always {
            self.append_journaled(&groups, &mut results);
        } else {
            for (topic, p, msgs) in &groups {
                let log = &self.topics[&**topic].logs[*p as usize];
                let r = log.with_log(|log| log.append(msgs));
                if r.is_ok() {
                    log.mark_dirty();
                }
                results.push(r);
            }
        }
        let meta_result = if recs.is_empty() {
            Ok(())
        } else {
            self.write_meta(&recs, always || !undo.is_empty())
        };
        if meta_result.is_err() {
            for (name, old) in undo {
                match old {
                    Some(spec) => {
                        if let Some(t) = self.topics.get_mut(&name) {
                            t.spec = spec;
                        }
                    }
                    None => {
                        self.topics.remove(&name);
                    }
                }
            }
        }
        let jobs_result = self.jobs.flush(always);
        // One post (and one wake-up) per worker for the whole batch's answers.
        crate::server::mailbox::hold();
        for w in waiting {
            match w {
                Waiting::Answered(done, r) => done(r),
                Waiting::Append(done, g) => done(results[g]),
                Waiting::Meta(done) => done(meta_result),
                Waiting::Topic(done, r) => done(r.and_then(|readers| meta_result.map(|_| readers))),
                Waiting::Job(staged) => self.jobs.settle(staged, jobs_result),
            }
        }
        crate::server::mailbox::release();
    }

    fn write_meta(&mut self, recs: &[MetaRec], sync: bool) -> Result<(), StoreFail> {
        let meta = self.meta().map_err(|e| {
            crate::warn!("topics cannot open the metadata log error={e}");
            fail_of(&e)
        })?;
        meta.append(recs)?;
        if !sync {
            self.meta_dirty = true;
            return Ok(());
        }
        meta.sync().map_err(|e| {
            crate::warn!("topics meta fsync failed error={e}");
            fail_of(&e)
        })?;
        self.meta_dirty = false;
        Ok(())
    }

    /// Writes what every partition's queue holds (at the end: workers have stopped).
    fn flush_all(&self) {
        for t in self.topics.values() {
            for log in &t.logs {
                log.flush(true);
            }
        }
    }

    /// Applies every topic's retention to each of its partitions.
    fn retain(&mut self, on_retention: &dyn Fn(&str, u32, i64)) {
        let now = unix_ms();
        for (name, t) in &self.topics {
            let ms = (t.spec.retention_hours * 3_600_000.0) as u64;
            for (p, log) in t.logs.iter().enumerate() {
                match log.with_log(|log| log.retain(now, ms, t.spec.retention_bytes)) {
                    Ok(Some(oldest)) => {
                        crate::debug!(
                            "topics retention topic={name} partition={p} oldest={oldest}"
                        );
                        on_retention(name, p as u32, oldest);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        crate::warn!("topics retention failed topic={name} partition={p} error={e}")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
