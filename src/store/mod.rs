//! `Engine`: the phase-2 store. Append-only segment files of CRC-framed records, an in-memory
//! index (key → its live records, bitcask style), one thread that owns the files and commits in
//! groups: every request that queued while the last write or fsync ran goes into the next one.
//! Deletes are tombstones; retention and compaction drop whole segments.

mod maintain;
pub mod record;
pub mod segment;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::{Config, Fsync};
use crate::conn::buffer::Body;
use crate::server::Shared;
use crate::server::mailbox::{Msg, ReplyTo};
use crate::server::unix_ms;
use record::{Kind, Record};

/// Requests taken per group commit: bounds one batch's memory and latency.
const BATCH: usize = 4096;
/// How often retention and compaction look at the segments.
const MAINTENANCE: Duration = Duration::from_secs(1);

/// Why a record could not be stored; the rep gets this status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreFail {
    /// 507: the disk (or the file size limit) is full.
    Full,
    /// 500: any other I/O error.
    Io,
}

/// What a `/rsub` found.
#[derive(Debug)]
pub enum Taken {
    /// The oldest stored body, leased to this replay until `Done`.
    Got {
        key: Arc<str>,
        id: u64,
        body: Vec<u8>,
        remaining: usize,
    },
    Nothing,
    InvalidToken,
    Failed,
    /// Another node's stored body, already removed there (`/rsub` forwarded over NATS): if it
    /// cannot be written to the client, it is stored here.
    Remote {
        key: Arc<str>,
        token: Option<Arc<str>>,
        body: Vec<u8>,
        remaining: usize,
    },
}

/// Which keys have stored reps and how many reps are stored: written by the store thread after
/// each batch, read by `HEAD /rsub`, heartbeats and the cluster thread (which subscribes a
/// key's `stored` subject while it has some).
#[derive(Default)]
pub struct StoredKeys {
    keys: Mutex<HashSet<Arc<str>>>,
    count: AtomicU64,
}

impl StoredKeys {
    pub fn has(&self, key: &str) -> bool {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner).contains(key)
    }

    /// Every key with stored reps.
    pub fn keys(&self) -> Vec<Arc<str>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }

    /// Reps stored now (leased ones included).
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Records that `key` has stored reps or not; `true` when that changed.
    fn set(&self, key: &Arc<str>, present: bool) -> bool {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if present { keys.insert(key.clone()) } else { keys.remove(key) }
    }
}

/// What workers ask of the store thread.
pub enum Req {
    Append {
        key: Arc<str>,
        token: Option<Arc<str>>,
        body: Body,
        reply: ReplyTo,
    },
    /// Lease the oldest record of `key` for a replay.
    Take {
        key: String,
        token: Option<String>,
        reply: ReplyTo,
    },
    /// A leased record was written to its client (`delivered`: tombstone it) or not (release).
    Done {
        key: Arc<str>,
        id: u64,
        delivered: bool,
    },
    Shutdown,
}

struct Entry {
    id: u64,
    seg: u64,
    offset: u64,
    len: u32,
    time_ms: u64,
    token: Option<Arc<str>>,
    leased: bool,
}

#[derive(Default)]
struct Seg {
    len: u64,
    /// Bytes of records still in the index.
    live: u64,
    newest_ms: u64,
}

pub struct Engine {
    dir: PathBuf,
    fsync: Fsync,
    fsync_every: Duration,
    retention_ms: u64,
    retention_bytes: u64,
    segment_bytes: u64,
    active: File,
    active_seq: u64,
    segments: BTreeMap<u64, Seg>,
    readers: HashMap<u64, File>,
    index: HashMap<Arc<str>, VecDeque<Entry>>,
    next_id: u64,
    dirty: bool,
    /// Encoded records of the batch being committed.
    buf: Vec<u8>,
    /// Records in the index.
    records: u64,
    /// Keys whose first record arrived or whose last went since `publish` last ran.
    touched: Vec<Arc<str>>,
}

fn fail_of(e: &io::Error) -> StoreFail {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::EDQUOT) => StoreFail::Full,
        _ => StoreFail::Io,
    }
}

impl Engine {
    /// Opens (or creates) the data dir and rebuilds the index by scanning every segment; a torn
    /// or corrupt tail is cut at the last good record and logged.
    pub fn open(config: &Config) -> Result<Engine, String> {
        let dir = config.data_dir.clone();
        let ctx =
            |what: &str, e: io::Error| format!("ESUB_DATA_DIR={}: {what}: {e}", dir.display());
        std::fs::create_dir_all(&dir).map_err(|e| ctx("cannot create", e))?;
        let seqs = segment::list(&dir).map_err(|e| ctx("cannot list", e))?;
        let started = Instant::now();
        let mut index: HashMap<Arc<str>, VecDeque<Entry>> = HashMap::new();
        let mut segments = BTreeMap::new();
        let mut next_id = 1;
        let mut records = 0u64;
        for &seq in &seqs {
            let path = segment::path(&dir, seq);
            let mut f = File::options()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| ctx("cannot open a segment", e))?;
            let mut seg = Seg::default();
            let scanned = segment::scan(&mut f, |r, offset, len| {
                records += 1;
                next_id = next_id.max(r.id + 1);
                apply(&mut index, &mut segments, &mut seg, seq, r, offset, len);
            })
            .map_err(|e| ctx(&format!("segment {}", path.display()), e))?;
            if scanned.good_end < scanned.file_len {
                crate::warn!(
                    "store cut a torn tail segment={} at={} dropped_bytes={}",
                    path.display(),
                    scanned.good_end,
                    scanned.file_len - scanned.good_end
                );
                f.set_len(scanned.good_end).map_err(|e| ctx("cannot cut a torn tail", e))?;
                f.sync_all().map_err(|e| ctx("cannot sync", e))?;
            }
            seg.len = scanned.good_end;
            segments.insert(seq, seg);
        }
        let last = seqs.last().copied().filter(|s| segments[s].len < config.segment_bytes);
        let (active_seq, active) = match last {
            Some(seq) => {
                let f = File::options().read(true).append(true).open(segment::path(&dir, seq));
                (seq, f.map_err(|e| ctx("cannot open the last segment", e))?)
            }
            None => {
                let seq = seqs.last().map_or(1, |s| s + 1);
                let f =
                    segment::create(&dir, seq).map_err(|e| ctx("cannot create a segment", e))?;
                segments.insert(seq, Seg { len: segment::HEADER, ..Seg::default() });
                (seq, f)
            }
        };
        let live: usize = index.values().map(VecDeque::len).sum();
        crate::info!(
            "store opened dir={} segments={} records={records} live={live} keys={} ms={}",
            dir.display(),
            segments.len(),
            index.len(),
            started.elapsed().as_millis()
        );
        Ok(Engine {
            dir,
            fsync: config.fsync,
            fsync_every: config.fsync_interval,
            retention_ms: config.retention.as_millis() as u64,
            retention_bytes: config.retention_bytes,
            segment_bytes: config.segment_bytes,
            active,
            active_seq,
            segments,
            readers: HashMap::new(),
            index,
            next_id,
            dirty: false,
            buf: Vec::new(),
            records: live as u64,
            touched: Vec::new(),
        })
    }

    /// The store thread: group commits until `Shutdown`, then a last sync.
    pub fn run(mut self, shared: Arc<Shared>, rx: Receiver<Req>) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut next_sync = Instant::now() + self.fsync_every;
        let mut next_maintenance = Instant::now() + MAINTENANCE;
        // The keys found at start-up.
        self.touched.extend(self.index.keys().cloned());
        self.publish(&shared);
        loop {
            let wake = if self.dirty { next_sync.min(next_maintenance) } else { next_maintenance };
            let mut stop = false;
            match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                Ok(req) => batch.push(req),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(req) => batch.push(req),
                    Err(_) => break,
                }
            }
            if batch.iter().any(|r| matches!(r, Req::Shutdown)) {
                stop = true;
            }
            if !batch.is_empty() {
                self.commit(&mut batch, &shared);
            }
            let now = Instant::now();
            if self.dirty && (now >= next_sync || stop) {
                self.sync();
                next_sync = now + self.fsync_every;
            }
            if now >= next_maintenance {
                self.maintain();
                next_maintenance = now + MAINTENANCE;
            }
            self.publish(&shared);
            if stop {
                crate::info!("store closed");
                return;
            }
        }
    }

    /// Tells `shared.stored` (and the cluster thread) which keys gained their first stored rep
    /// or lost their last one, and the count.
    fn publish(&mut self, shared: &Shared) {
        shared.stored.count.store(self.records, Ordering::Relaxed);
        for key in self.touched.drain(..) {
            let present = self.index.contains_key(&key);
            if shared.stored.set(&key, present)
                && let Some(cluster) = shared.cluster()
            {
                cluster.post(crate::cluster::handle::ClusterMsg::KeyChanged(key));
            }
        }
    }

    fn sync(&mut self) {
        match self.active.sync_data() {
            Ok(()) => self.dirty = false,
            Err(e) => crate::warn!("store fsync failed error={e}"),
        }
    }

    /// One group commit: tombstones and appends written with one write (one fsync with
    /// `ESUB_FSYNC=always`), then answers; takes are served after, so they see this batch.
    fn commit(&mut self, batch: &mut Vec<Req>, shared: &Shared) {
        self.buf.clear();
        let time_ms = unix_ms();
        let mut appended: Vec<(ReplyTo, Arc<str>, u64)> = Vec::new();
        let mut takes = Vec::new();
        for req in batch.drain(..) {
            match req {
                Req::Done { key, id, delivered } => self.done(&key, id, delivered, time_ms),
                Req::Append { key, token, body, reply } => {
                    let id = self.next_id;
                    self.next_id += 1;
                    let at = self.buf.len();
                    let t = token.as_deref().unwrap_or("").as_bytes();
                    Record {
                        kind: Kind::Rep,
                        id,
                        time_ms,
                        key: key.as_bytes(),
                        token: t,
                        body: &body,
                    }
                    .encode(&mut self.buf);
                    let len = (self.buf.len() - at) as u32;
                    // Offsets are fixed below, once the segment the batch goes to is known.
                    let e =
                        Entry { id, seg: 0, offset: at as u64, len, time_ms, token, leased: false };
                    let q = self.index.entry(key.clone()).or_default();
                    if q.is_empty() {
                        self.touched.push(key.clone());
                    }
                    q.push_back(e);
                    self.records += 1;
                    appended.push((reply, key, id));
                }
                Req::Take { key, token, reply } => takes.push((key, token, reply)),
                Req::Shutdown => {}
            }
        }
        let result = if self.buf.is_empty() { Ok(()) } else { self.write_batch(&appended) };
        if let Err(fail) = result {
            // Nothing of this batch is on disk: forget its entries too.
            for (_, key, id) in &appended {
                self.forget(key, *id);
            }
            crate::warn!("store write failed appends={} fail={fail:?}", appended.len());
        }
        for (reply, key, _) in appended {
            let msg = Msg::Stored { reply, result };
            shared.mailboxes[reply.conn.worker].post(msg);
            if result.is_ok() {
                shared.announce(&key, crate::announce::Kind::Stored);
            }
        }
        for (key, token, reply) in takes {
            let taken = self.take(&key, token.as_deref(), time_ms);
            // A take may come from the cluster thread (a `/rsub` forwarded from another node).
            shared.post(Msg::Taken { reply, taken });
        }
    }

    /// Writes `self.buf` at the end of the active segment (rolling first when it is full),
    /// fixes the new entries' offsets, and syncs as `ESUB_FSYNC` promises.
    fn write_batch(&mut self, appended: &[(ReplyTo, Arc<str>, u64)]) -> Result<(), StoreFail> {
        let active_len = self.segments.get(&self.active_seq).map_or(segment::HEADER, |s| s.len);
        if active_len > segment::HEADER && active_len + self.buf.len() as u64 > self.segment_bytes {
            self.roll().map_err(|e| fail_of(&e))?;
        }
        let seq = self.active_seq;
        let base = self.segments.get(&seq).map_or(segment::HEADER, |s| s.len);
        if let Err(e) = self.active.write_all(&self.buf) {
            // Leave nothing partial: cut the file back to where the batch began.
            let _ = self.active.set_len(base);
            return Err(fail_of(&e));
        }
        // Tombstones alone need no fsync of their own: losing one in a crash only replays its
        // record again (at-least-once), and they reach the disk with the next sync.
        if self.fsync == Fsync::Always && !appended.is_empty() {
            if let Err(e) = self.active.sync_data() {
                let _ = self.active.set_len(base);
                return Err(fail_of(&e));
            }
        } else {
            self.dirty = true;
        }
        let mut live = 0;
        let mut newest = 0;
        for (_, key, id) in appended {
            if let Some(e) =
                self.index.get_mut(key).and_then(|q| q.iter_mut().rev().find(|e| e.id == *id))
            {
                e.seg = seq;
                e.offset += base;
                live += e.len as u64;
                newest = newest.max(e.time_ms);
            }
        }
        let seg = self.segments.entry(seq).or_default();
        seg.len = base + self.buf.len() as u64;
        seg.live += live;
        seg.newest_ms = seg.newest_ms.max(newest);
        Ok(())
    }

    fn roll(&mut self) -> io::Result<()> {
        self.active.sync_data()?;
        let seq = self.active_seq + 1;
        self.active = segment::create(&self.dir, seq)?;
        self.active_seq = seq;
        self.segments.insert(seq, Seg { len: segment::HEADER, ..Seg::default() });
        self.dirty = false;
        Ok(())
    }

    /// Drops an entry from the index (and its bytes from its segment's live count).
    fn forget(&mut self, key: &str, id: u64) -> Option<Entry> {
        let q = self.index.get_mut(key)?;
        let i = q.iter().position(|e| e.id == id)?;
        let e = q.remove(i)?;
        self.records -= 1;
        if q.is_empty()
            && let Some((k, _)) = self.index.remove_entry(key)
        {
            self.touched.push(k);
        }
        if let Some(s) = self.segments.get_mut(&e.seg) {
            s.live = s.live.saturating_sub(e.len as u64);
        }
        Some(e)
    }

    fn done(&mut self, key: &Arc<str>, id: u64, delivered: bool, time_ms: u64) {
        if !delivered {
            if let Some(e) = self.index.get_mut(key).and_then(|q| q.iter_mut().find(|e| e.id == id))
            {
                e.leased = false;
            }
            return;
        }
        if self.forget(key, id).is_some() {
            Record {
                kind: Kind::Tombstone,
                id,
                time_ms,
                key: key.as_bytes(),
                token: b"",
                body: b"",
            }
            .encode(&mut self.buf);
        }
    }

    fn take(&mut self, key: &str, token: Option<&str>, time_ms: u64) -> Taken {
        let cutoff = time_ms.saturating_sub(self.retention_ms);
        // Expired records are dropped as they are met.
        while let Some(e) =
            self.index.get(key).and_then(|q| q.front()).filter(|e| e.time_ms < cutoff && !e.leased)
        {
            let id = e.id;
            self.forget(key, id);
        }
        let Some((key_arc, q)) = self.index.get_key_value(key) else { return Taken::Nothing };
        let Some(i) = q.iter().position(|e| !e.leased) else { return Taken::Nothing };
        let e = &q[i];
        if e.token.as_deref() != token {
            return Taken::InvalidToken;
        }
        let (seg, offset, len, id) = (e.seg, e.offset, e.len as usize, e.id);
        let remaining = q.iter().skip(i + 1).filter(|e| !e.leased).count();
        let key_arc = key_arc.clone();
        let mut frame = vec![0u8; len];
        let read = self.reader(seg).and_then(|f| f.read_exact_at(&mut frame, offset));
        let body = match (read, record::decode(&frame)) {
            (Ok(()), Ok(Some((r, _)))) if r.id == id => r.body.to_vec(),
            (read, _) => {
                crate::warn!(
                    "store read failed key_len={} id={id} error={:?}",
                    key.len(),
                    read.err()
                );
                return Taken::Failed;
            }
        };
        if let Some(e) = self.index.get_mut(key).and_then(|q| q.get_mut(i)) {
            e.leased = true;
        }
        Taken::Got { key: key_arc, id, body, remaining }
    }

    fn reader(&mut self, seq: u64) -> io::Result<&File> {
        if !self.readers.contains_key(&seq) {
            let f = File::open(segment::path(&self.dir, seq))?;
            self.readers.insert(seq, f);
        }
        Ok(&self.readers[&seq])
    }
}

/// Applies one scanned record to the index being rebuilt.
fn apply(
    index: &mut HashMap<Arc<str>, VecDeque<Entry>>,
    segments: &mut BTreeMap<u64, Seg>,
    seg: &mut Seg,
    seq: u64,
    r: &Record,
    offset: u64,
    len: usize,
) {
    let Ok(key) = std::str::from_utf8(r.key) else { return };
    match r.kind {
        Kind::Rep => {
            let token = std::str::from_utf8(r.token).ok().filter(|t| !t.is_empty()).map(Arc::from);
            let e = Entry {
                id: r.id,
                seg: seq,
                offset,
                len: len as u32,
                time_ms: r.time_ms,
                token,
                leased: false,
            };
            seg.live += len as u64;
            seg.newest_ms = seg.newest_ms.max(r.time_ms);
            let q = match index.get_mut(key) {
                Some(q) => q,
                None => index.entry(Arc::from(key)).or_default(),
            };
            // Records come in id order, except compacted copies, which come later than newer
            // records: keep each key's queue in id order (oldest first) whatever the file order.
            if q.back().is_none_or(|b| b.id < r.id) {
                q.push_back(e);
                return;
            }
            match q.binary_search_by_key(&r.id, |old| old.id) {
                // A copy of a record already seen (a compaction cut short): the later place wins.
                Ok(i) => {
                    let old = std::mem::replace(&mut q[i], e);
                    if let Some(s) = segments.get_mut(&old.seg) {
                        s.live = s.live.saturating_sub(old.len as u64);
                    }
                }
                Err(i) => q.insert(i, e),
            }
        }
        Kind::Tombstone => {
            let Some(q) = index.get_mut(key) else { return };
            if let Some(i) = q.iter().position(|e| e.id == r.id) {
                let old = q.remove(i).expect("position is in range");
                if old.seg == seq {
                    seg.live = seg.live.saturating_sub(old.len as u64);
                } else if let Some(s) = segments.get_mut(&old.seg) {
                    s.live = s.live.saturating_sub(old.len as u64);
                }
            }
            if q.is_empty() {
                index.remove(key);
            }
        }
    }
}
