//! `Hub`: what every worker shares of the topics half: the topics by raw name (read-mostly),
//! the auth mode (swapped on SIGHUP), the store thread's queue, counters. Topic creation and
//! every store answer come back to the asking connection through its worker's mailbox.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::Message;
use super::auth::{Auth, parse_apps};
use super::engine::{EngineConfig, Inbox, Opened, Parts, TReq, TopicEngine, TopicSpec};
use super::log::{Appender, Batch, Flushed, PartitionReader};
use super::meta::MetaRec;
use super::rate::Rates;
use super::scheduler::{FireSink, FiredJob};
use super::state::{GroupId, Part, Plan, TopicState};
use crate::config::Config;
use crate::server::Shared;
use crate::server::mailbox::{ConnId, Msg, TopicEv, post_or_hold};
use crate::server::unix_ms;
use crate::store::StoreFail;

pub struct Topic {
    pub name: Arc<str>,
    pub readers: Vec<PartitionReader>,
    /// Where pubs queue their appends with `ESUB_FSYNC=interval` (`Hub::direct`).
    appenders: Vec<Arc<Appender>>,
    pub state: Mutex<TopicState>,
}

impl Topic {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, TopicState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn partitions(&self) -> u32 {
        self.readers.len() as u32
    }

    /// The stored message at `offset` of `partition` (from the tail, else from disk).
    pub fn message_at(&self, partition: u32, offset: i64) -> Option<Message> {
        {
            let st = self.lock();
            let part = st.parts.get(partition as usize)?;
            if offset >= part.stored {
                return None;
            }
            if let Some(m) = part.get(offset) {
                return Some((**m).clone());
            }
        }
        let got = self.readers.get(partition as usize)?.read(offset, 1, DISK_READ_BYTES).ok()?;
        got.into_iter().find(|m| m.offset == offset)
    }

    /// Takes up to `max` messages the way `TopicState::fetch` planned them: from the tail, or
    /// read from disk (outside the lock) for a cursor behind it, which is released after.
    pub fn take(
        &self,
        gid: &GroupId,
        inst: u64,
        max: usize,
    ) -> (Vec<(u32, Arc<Message>)>, Vec<MetaRec>) {
        let (plan, recs) = self.lock().fetch(gid, inst, max);
        let msgs = match plan {
            Plan::Tail(v) => v,
            Plan::Disk { partition, from, upto } => {
                let n = max.min((upto - from) as usize);
                let got = match self.readers[partition as usize].read(from, n, DISK_READ_BYTES) {
                    Ok(v) => v,
                    Err(e) => {
                        crate::warn!(
                            "topic read failed topic={} partition={partition} offset={from} error={e}",
                            self.name
                        );
                        Vec::new()
                    }
                };
                let got: Vec<Message> =
                    got.into_iter().filter(|m| m.offset >= from && m.offset < upto).collect();
                let count = got.last().map_or(0, |m| (m.offset + 1 - from) as usize);
                self.lock().finish_read(gid, inst, partition, from, count);
                got.into_iter().map(|m| (partition, Arc::new(m))).collect()
            }
        };
        (msgs, recs)
    }
}

/// Bytes read from disk per fetch step: bounds a worker's pause on a cold read.
const DISK_READ_BYTES: usize = 4 << 20;

pub struct Hub {
    pub cfg: crate::config::TopicsConfig,
    auth: RwLock<Arc<Auth>>,
    pub auth_file: bool,
    store: Arc<Inbox>,
    topics: RwLock<HashMap<String, Arc<Topic>, super::FxBuild>>,
    next_instance: AtomicU64,
    pub msgs_in: AtomicU64,
    pub msgs_out: AtomicU64,
    /// Pending jobs, kept by the store thread's scheduler.
    jobs: Arc<AtomicU64>,
    /// Set when the drain begins: no job fires after (9).
    draining: AtomicBool,
    /// The IP and appid buckets (1.3).
    pub rates: Rates,
    /// Open topics websockets (pub and sub), for `GET /v1/status`: counted at the upgrade,
    /// uncounted when the connection goes (`Conn::fail`).
    pub ws: AtomicUsize,
    /// The `X-Msg-Id` window (4.4).
    pub dedupe: Mutex<super::dedupe::Dedupe>,
    /// `ESUB_FSYNC=interval`: workers write the partition logs themselves (`Appender`); with
    /// `always` every append goes to the store thread's group commit.
    direct: bool,
}

thread_local! {
    /// The partitions this thread queued appends to since its last `Hub::flush_appends`.
    static TOUCHED: std::cell::RefCell<Vec<Arc<Appender>>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn touch(appender: &Arc<Appender>) {
    TOUCHED.with(|t| {
        let mut t = t.borrow_mut();
        if !t.iter().any(|a| Arc::ptr_eq(a, appender)) {
            t.push(appender.clone());
        }
    });
}

/// Reads and parses the apps file.
pub fn load_apps(path: &std::path::Path) -> Result<Auth, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_apps(&bytes).map(Auth::File)
}

impl Hub {
    /// Opens the topics store (`ESUB_DATA_DIR/topics`) and the apps file; `Err` is the
    /// start-up error (exit 2). The engine is returned for its thread.
    pub fn open(config: &Config) -> Result<(Hub, TopicEngine, Arc<Inbox>), String> {
        let cfg = config.topics.clone().ok_or("topics are off")?;
        let auth = match &cfg.apps_file {
            Some(path) => load_apps(path).map_err(|e| format!("ESUB_APPS_FILE: {e}"))?,
            None => Auth::Open,
        };
        let auth_file = cfg.apps_file.is_some();
        let (engine, opened) = TopicEngine::open(EngineConfig {
            dir: config.data_dir.join("topics"),
            fsync: config.fsync,
            fsync_interval: config.fsync_interval,
            segment_bytes: cfg.segment_bytes,
            retention_check: cfg.retention_check,
            job_tick: cfg.job_tick,
        })?;
        let inbox = Arc::new(Inbox::default());
        let rates = Rates::new(&cfg);
        let hub = Hub {
            cfg,
            auth: RwLock::new(Arc::new(auth)),
            auth_file,
            store: inbox.clone(),
            topics: RwLock::new(HashMap::default()),
            next_instance: AtomicU64::new(1),
            msgs_in: AtomicU64::new(0),
            msgs_out: AtomicU64::new(0),
            jobs: engine.jobs_gauge(),
            draining: AtomicBool::new(false),
            rates,
            ws: AtomicUsize::new(0),
            dedupe: Mutex::new(super::dedupe::Dedupe::new(
                config.topics.as_ref().map_or(0, |t| t.dedupe_ms),
                config.topics.as_ref().map_or(0, |t| t.dedupe_max_ids),
            )),
            direct: config.fsync != crate::config::Fsync::Always,
        };
        hub.restore(opened);
        hub.restore_dedupe();
        Ok((hub, engine, inbox))
    }

    /// Rebuilds topics and commits from what the store found.
    fn restore(&self, opened: Opened) {
        let mut map = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        for t in opened.topics {
            let topic = new_topic(&t.spec, t.parts);
            map.insert(t.spec.name.clone(), Arc::new(topic));
        }
        for (k, offset) in opened.commits {
            let Some(t) = map.get(&k.topic) else { continue };
            let mut st = t.lock();
            let p = st.partitions() as usize;
            let gid = GroupId { app: k.app, group: k.group, queue: k.queue };
            let g = st.groups.entry(gid).or_default();
            g.committed.resize(p, None);
            if let Some(c) = g.committed.get_mut(k.partition as usize) {
                *c = Some(offset);
            }
        }
    }

    /// Counters and gauges for the metrics: (redelivered, reset_skipped, live instances).
    pub fn tallies(&self) -> (u64, u64, u64) {
        let (mut red, mut skip, mut inst) = (0, 0, 0);
        for t in self.all() {
            let st = t.lock();
            red += st.redelivered;
            skip += st.skipped;
            inst += st.groups.values().map(|g| g.instances.len() as u64).sum::<u64>();
        }
        (red, skip, inst)
    }

    /// Jobs waiting to fire (`/v1/status`, the `jobs` gauge).
    pub fn pending_jobs(&self) -> u64 {
        self.jobs.load(Ordering::Relaxed)
    }

    /// The drain began: the scheduler fires nothing more.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Every topic (shadows included), in no order; the map's lock is held only to copy.
    pub fn all(&self) -> Vec<Arc<Topic>> {
        self.topics.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    /// Rebuilds the `X-Msg-Id` window from the newest messages of every partition (at most
    /// `ESUB_DEDUPE_MAX_IDS` of each, and only those inside `ESUB_DEDUPE_MS`).
    fn restore_dedupe(&self) {
        let mut d = self.dedupe.lock().unwrap_or_else(PoisonError::into_inner);
        if !d.enabled() {
            return;
        }
        let now = unix_ms();
        let cutoff = now.saturating_sub(self.cfg.dedupe_ms);
        let started = std::time::Instant::now();
        for t in self.all() {
            for (p, r) in t.readers.iter().enumerate() {
                let mut at = r.oldest().max(r.end() - self.cfg.dedupe_max_ids as i64);
                while at < r.end() {
                    let Ok(msgs) = r.read(at, 4096, 16 << 20) else { break };
                    let Some(last) = msgs.last().map(|m| m.offset) else { break };
                    for m in msgs.iter().filter(|m| !m.msg_id.is_empty() && m.time_ms >= cutoff) {
                        d.restore(&t.name, &m.msg_id, m.time_ms, p as u32, m.offset);
                    }
                    at = last + 1;
                }
            }
        }
        d.finish_restore(now);
        if !d.is_empty() {
            crate::info!(
                "topics dedupe window restored ids={} ms={}",
                d.len(),
                started.elapsed().as_millis()
            );
        }
    }

    pub fn topic_count(&self) -> usize {
        self.topics.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether `n` more topics fit under `ESUB_MAX_TOPICS` (creations already under way are
    /// not counted: a burst may pass it by as many as run at once).
    pub fn room_for(&self, n: usize) -> bool {
        self.topic_count() + n <= self.cfg.max_topics
    }

    pub fn auth(&self) -> Arc<Auth> {
        self.auth.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// SIGHUP: re-reads the apps file; a bad one is logged and the old one kept.
    pub fn reload_auth(&self) {
        let Some(path) = &self.cfg.apps_file else { return };
        match load_apps(path) {
            Ok(auth) => {
                *self.auth.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(auth);
                crate::info!("apps file reloaded path={}", path.display());
            }
            Err(e) => crate::warn!("apps file reload failed, keeping the old one: {e}"),
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().unwrap_or_else(PoisonError::into_inner).get(name).cloned()
    }

    pub fn instance_id(&self) -> u64 {
        self.next_instance.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues a request for the store thread; a worker announces its requests once per loop
    /// iteration (`wake`).
    pub fn send(&self, req: TReq) {
        self.store.push(req);
    }

    /// Writes the appends this thread queued (interval mode; the end of a worker's iteration):
    /// one write per partition for the whole iteration, unless another thread holds that log
    /// (it writes them) or they would roll a segment (the store thread does).
    pub fn flush_appends(&self) {
        self.flush_touched(false);
    }

    /// `flush_appends` for `may_roll` (the store thread's: it may wait for a log and roll) or
    /// not (a worker's: what would roll goes to the store thread).
    fn flush_touched(&self, may_roll: bool) {
        let mut touched = TOUCHED.with(|t| std::mem::take(&mut *t.borrow_mut()));
        for a in touched.drain(..) {
            if a.flush(may_roll) == Flushed::NeedsStore {
                self.send(TReq::Flush(a));
            }
        }
        // Keep the capacity for the next iteration.
        TOUCHED.with(|t| {
            let mut t = t.borrow_mut();
            if t.is_empty() {
                *t = touched;
            }
        });
    }

    /// Wakes the store thread for what this thread queued (the end of a worker's iteration).
    pub fn wake(&self) {
        self.store.wake();
    }

    /// Queues a request and wakes the store thread at once (from outside a worker loop).
    pub fn send_now(&self, req: TReq) {
        self.store.push_now(req);
    }

    /// Stores metadata; `to` hears `Done` once it is stored.
    pub fn commit_then(&self, shared: &Arc<Shared>, recs: Vec<MetaRec>, to: ConnId) {
        let shared = shared.clone();
        self.send(TReq::Meta {
            recs,
            done: Box::new(move |result| {
                post_or_hold(&shared, to.worker, Msg::Topic { to, ev: TopicEv::Done(result) });
            }),
        });
    }

    /// Stores commits; nobody waits on them (auto-commit, piggy-back acks, reset starts).
    pub fn commit(&self, recs: Vec<MetaRec>) {
        if !recs.is_empty() {
            self.send(TReq::Meta { recs, done: Box::new(|_| {}) });
        }
    }

    /// Creates (or updates the retention of) a topic; `to` hears `Created` (or `Done`, when
    /// `done`) with the result.
    pub fn create(&self, shared: &Arc<Shared>, spec: TopicSpec, to: ConnId, done: bool) {
        let shared = shared.clone();
        let spec2 = spec.clone();
        self.send(TReq::Topic {
            spec,
            done: Box::new(move |result: Result<Parts, StoreFail>| {
                let result = result.map(|parts| {
                    if let Some(hub) = &shared.hub {
                        hub.insert(&spec2, parts);
                    }
                });
                let ev = if done { TopicEv::Done(result) } else { TopicEv::Created(result) };
                post_or_hold(&shared, to.worker, Msg::Topic { to, ev });
            }),
        });
    }

    /// Adds a created topic (a topic already there keeps its state; its retention changes).
    fn insert(&self, spec: &TopicSpec, parts: Parts) {
        let mut map = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        match map.get(&spec.name) {
            Some(t) => {
                let mut st = t.lock();
                st.retention_hours = spec.retention_hours;
                st.retention_bytes = spec.retention_bytes;
            }
            None => {
                map.insert(spec.name.clone(), Arc::new(new_topic(spec, parts)));
            }
        }
    }

    /// Retention moved `oldest` of a partition (from the store thread).
    pub fn retained(&self, topic: &str, partition: u32, oldest: i64) {
        if let Some(t) = self.get(topic) {
            t.lock().retained(partition, oldest);
        }
    }
}

/// One message to publish: key, tag, payload (empty key/tag = none).
pub type Record = (Vec<u8>, Vec<u8>, Vec<u8>);

/// Where a pub's records went, (partition, offset) in order: a single pub's without a vector.
pub enum Placed {
    One([(u32, i64); 1]),
    Many(Vec<(u32, i64)>),
}

impl std::ops::Deref for Placed {
    type Target = [(u32, i64)];

    fn deref(&self) -> &[(u32, i64)] {
        match self {
            Placed::One(one) => one,
            Placed::Many(many) => many,
        }
    }
}

impl Hub {
    /// Assigns partitions and offsets to `records` (2: keys hash, keyless ones share one round
    /// robin step) and hands them to the store in the same critical section, one append per
    /// partition. Each stored append wakes the partition's waiting consumers and, unless
    /// `reply` is `None`, posts `Stored { seq, .. }` to `reply.0`. Returns each record's
    /// (partition, offset) in order and the number of appends.
    pub fn publish(
        &self,
        shared: &Arc<Shared>,
        topic: &Arc<Topic>,
        records: impl IntoIterator<Item = Record, IntoIter: ExactSizeIterator>,
        reply: Option<(ConnId, Option<u64>)>,
        msg_id: Option<Box<[u8]>>,
        time_ms: u64,
    ) -> (Placed, usize) {
        let mut records = records.into_iter();
        let p = topic.partitions();
        let mut st = topic.lock();
        let keyless = st.rr % p;
        let place = |st: &mut TopicState, (key, tag, payload): Record| {
            let partition =
                if key.is_empty() { keyless } else { super::codec::partition_of(&key, p) };
            let m = super::Message {
                offset: 0,
                time_ms,
                key,
                tag,
                msg_id: msg_id.as_deref().map(<[u8]>::to_vec).unwrap_or_default(),
                payload,
            };
            let (m, epoch) = st.assign_offset(partition, m);
            if let Some(id) = &msg_id {
                self.dedupe.lock().unwrap_or_else(PoisonError::into_inner).place(
                    &topic.name,
                    id,
                    partition,
                    m.offset,
                );
            }
            (partition, m, epoch)
        };
        // One record (every single pub): no per-partition tables, no vectors but its own.
        if records.len() == 1 {
            let record = records.next().expect("one record");
            if record.0.is_empty() {
                st.rr = st.rr.wrapping_add(1);
            }
            let (partition, m, epoch) = place(&mut st, record);
            let placed = Placed::One([(partition, m.offset)]);
            self.submit(shared, topic, partition, epoch, Batch::One(m), reply, msg_id);
            drop(st);
            return (placed, 1);
        }
        let records: Vec<Record> = records.collect();
        if records.iter().any(|(k, _, _)| k.is_empty()) {
            st.rr = st.rr.wrapping_add(1);
        }
        let mut per_part: Vec<Vec<Arc<super::Message>>> = vec![Vec::new(); p as usize];
        let mut placed = Vec::with_capacity(records.len());
        let mut epochs = vec![0u64; p as usize];
        for record in records {
            let (partition, m, epoch) = place(&mut st, record);
            epochs[partition as usize] = epoch;
            placed.push((partition, m.offset));
            per_part[partition as usize].push(m);
        }
        let mut appends = 0;
        for (partition, msgs) in per_part.into_iter().enumerate() {
            if msgs.is_empty() {
                continue;
            }
            appends += 1;
            let epoch = epochs[partition];
            self.submit(shared, topic, partition as u32, epoch, msgs.into(), reply, msg_id.clone());
        }
        drop(st);
        (Placed::Many(placed), appends)
    }

    /// Queues one partition's share of a pub, answered through `appended` (and `reply`, and
    /// the duplicates waiting for `msg_id`).
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        shared: &Arc<Shared>,
        topic: &Arc<Topic>,
        partition: u32,
        epoch: u64,
        msgs: Batch,
        reply: Option<(ConnId, Option<u64>)>,
        id: Option<Box<[u8]>>,
    ) {
        let (shared, t) = (shared.clone(), topic.clone());
        let done = move |kept: &[Arc<Message>], result: Result<(), StoreFail>| {
            appended(&shared, &t, partition, epoch, kept, result);
            if let Some((to, seq)) = reply {
                let ev = TopicEv::Stored { seq, result };
                post_or_hold(&shared, to.worker, Msg::Topic { to, ev });
            }
            // Duplicates that waited for this pub get its outcome.
            if let (Some(id), Some(hub)) = (&id, &shared.hub) {
                let (waiters, p, o) = hub
                    .dedupe
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .settle(&t.name, id, result.is_ok());
                for (to, seq) in waiters {
                    let ev = TopicEv::Duplicate { seq, result: result.map(|_| (p, o)) };
                    post_or_hold(&shared, to.worker, Msg::Topic { to, ev });
                }
            }
        };
        self.append(topic, partition, msgs, done);
    }

    /// Hands one partition's append to its writer (under the topic lock, so in offset order):
    /// the partition's queue, written at this thread's `flush_appends` (interval mode), or the
    /// store thread's group commit (`always`).
    fn append(
        &self,
        topic: &Topic,
        partition: u32,
        msgs: Batch,
        done: impl FnOnce(&[Arc<Message>], Result<(), StoreFail>) + Send + 'static,
    ) {
        if self.direct {
            let a = &topic.appenders[partition as usize];
            a.queue(msgs, Box::new(done));
            touch(a);
        } else {
            // The store thread's answer does not hand the messages back: keep the list.
            let msgs = msgs.into_vec();
            let kept = msgs.clone();
            let done: super::engine::Done = Box::new(move |result| done(&kept, result));
            self.send(TReq::Append { topic: topic.name.clone(), partition, msgs, done });
        }
    }
}

/// An append's answer on the store thread: the partition's stored offset moves (waking its
/// consumers), or its unstored tail is dropped.
fn appended(
    shared: &Arc<Shared>,
    t: &Topic,
    partition: u32,
    epoch: u64,
    kept: &[Arc<Message>],
    result: Result<(), StoreFail>,
) {
    let n = kept.len() as u64;
    let wake = match result {
        Ok(()) => t.lock().stored(partition, kept),
        Err(_) => {
            let end = t.readers[partition as usize].end();
            t.lock().append_failed(partition, epoch, end);
            Vec::new()
        }
    };
    if let Some(hub) = &shared.hub
        && result.is_ok()
    {
        hub.msgs_in.fetch_add(n, Ordering::Relaxed);
    }
    for w in wake {
        post_or_hold(shared, w.worker, Msg::Topic { to: w, ev: TopicEv::Wake });
    }
}

impl Hub {
    /// Publishes fired jobs (7), each like a pub of one record (keys hash, keyless ones take
    /// one round robin step each), in order, one append per partition; the sink hears each
    /// append's result for its jobs. Called from the store thread itself: the appends are
    /// queued, never waited for.
    pub fn publish_jobs(
        &self,
        shared: &Arc<Shared>,
        topic: &Arc<Topic>,
        jobs: Vec<FiredJob>,
        sink: &FireSink,
    ) {
        let p = topic.partitions();
        let time_ms = unix_ms();
        let mut st = topic.lock();
        let mut per_part: Vec<(Vec<Arc<Message>>, Vec<i64>, u64)> =
            (0..p).map(|_| (Vec::new(), Vec::new(), 0)).collect();
        for (id, (key, tag, payload)) in jobs {
            let partition = if key.is_empty() {
                let rr = st.rr % p;
                st.rr = st.rr.wrapping_add(1);
                rr
            } else {
                super::codec::partition_of(&key, p)
            };
            let m = Message { offset: 0, time_ms, key, tag, msg_id: Vec::new(), payload };
            let (m, epoch) = st.assign_offset(partition, m);
            let part = &mut per_part[partition as usize];
            part.0.push(m);
            part.1.push(id);
            part.2 = epoch;
        }
        for (partition, (msgs, ids, epoch)) in per_part.into_iter().enumerate() {
            if msgs.is_empty() {
                continue;
            }
            let (shared, t, sink) = (shared.clone(), topic.clone(), sink.clone());
            let done = move |kept: &[Arc<Message>], result| {
                appended(&shared, &t, partition as u32, epoch, kept, result);
                sink.answered(&ids, result);
            };
            self.append(topic, partition as u32, msgs.into(), done);
        }
        drop(st);
        // This is the store thread: it writes what it queued now (and may roll a segment).
        self.flush_touched(true);
    }
}

fn new_topic(spec: &TopicSpec, parts: Parts) -> Topic {
    let Parts { readers, appenders } = parts;
    let parts = readers.iter().map(|r| Part::new(r.oldest(), r.end())).collect();
    let name: Arc<str> = Arc::from(spec.name.as_str());
    Topic {
        name: name.clone(),
        readers,
        appenders,
        state: Mutex::new(TopicState {
            name,
            retention_hours: spec.retention_hours,
            retention_bytes: spec.retention_bytes,
            parts,
            rr: 0,
            groups: HashMap::new(),
            skipped: 0,
            redelivered: 0,
        }),
    }
}
