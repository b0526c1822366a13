//! `MetaLog`: the topics metadata log, `meta.log` in the topics dir: a 16-byte header, then
//! records framed as the partition logs' (`[len u32][crc32 u32][kind u8, fields]`) for topics,
//! commits and forgotten groups. Replayed and compacted at start-up, and again when it grows.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::engine::TopicSpec;
use super::log::fail_of;
use super::log::record::{self, Corrupt, Fields};
use crate::store::StoreFail;

pub const FILE: &str = "meta.log";
const TMP: &str = "meta.log.tmp";
const MAGIC: &[u8; 8] = b"ESUBTMT\0";
const VERSION: u32 = 1;
const HEADER: u64 = 16;
/// The log is compacted again once it is this many times its compacted size…
const GROWTH: u64 = 4;
/// …and at least this big: commits come with every ack, so a busy server's log grows fast, but
/// rewriting a small state is cheap.
const COMPACT_MIN: u64 = 16 << 20;

// Record kinds. Part 2 adds shadows and jobs after these; a kind this build does not know is an
// error at start-up (a newer esub wrote it), never skipped silently.
const TOPIC: u8 = 1;
const COMMIT: u8 = 2;
const FORGET_GROUP: u8 = 3;

/// Whose committed offset: a group of app `app` on `queue` ("" the topic, "retry", "dead") of
/// the topic `topic` (raw name `appid.topic.ver`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommitKey {
    pub topic: String,
    pub app: String,
    pub group: String,
    pub queue: String,
    pub partition: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum MetaRec {
    /// A topic was created or its retention changed.
    Topic(TopicSpec),
    /// The last processed offset (-1: none).
    Commit { key: CommitKey, offset: i64 },
    /// Drops every commit of the group on the topic and its queues.
    ForgetGroup { topic: String, app: String, group: String },
}

/// What the log adds up to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetaState {
    pub topics: BTreeMap<String, TopicSpec>,
    pub commits: BTreeMap<CommitKey, i64>,
}

impl MetaState {
    pub fn apply(&mut self, rec: &MetaRec) {
        match rec {
            MetaRec::Topic(spec) => {
                self.topics.insert(spec.name.clone(), spec.clone());
            }
            MetaRec::Commit { key, offset } => {
                self.commits.insert(key.clone(), *offset);
            }
            MetaRec::ForgetGroup { topic, app, group } => self
                .commits
                .retain(|k, _| !(k.topic == *topic && k.app == *app && k.group == *group)),
        }
    }

    /// The records that rebuild this state.
    pub fn records(&self) -> impl Iterator<Item = MetaRec> + '_ {
        let topics = self.topics.values().map(|s| MetaRec::Topic(s.clone()));
        let commits =
            self.commits.iter().map(|(k, o)| MetaRec::Commit { key: k.clone(), offset: *o });
        topics.chain(commits)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Names are bounded far below u16 (`API-topics.md` §1); longer would be a bug upstream.
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

impl MetaRec {
    /// Appends the framed record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = record::begin_frame(out);
        match self {
            MetaRec::Topic(s) => {
                out.push(TOPIC);
                put_str(out, &s.name);
                out.extend_from_slice(&s.partitions.to_le_bytes());
                out.extend_from_slice(&s.retention_hours.to_bits().to_le_bytes());
                out.extend_from_slice(&s.retention_bytes.to_le_bytes());
            }
            MetaRec::Commit { key, offset } => {
                out.push(COMMIT);
                put_str(out, &key.topic);
                put_str(out, &key.app);
                put_str(out, &key.group);
                put_str(out, &key.queue);
                out.extend_from_slice(&key.partition.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
            }
            MetaRec::ForgetGroup { topic, app, group } => {
                out.push(FORGET_GROUP);
                put_str(out, topic);
                put_str(out, app);
                put_str(out, group);
            }
        }
        record::end_frame(out, start);
    }
}

/// How a record failed to decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bad {
    Corrupt(Corrupt),
    /// A well-framed record of a kind this build does not know.
    UnknownKind(u8),
}

fn string(f: &mut Fields) -> Result<String, Bad> {
    let b = f.short().map_err(Bad::Corrupt)?;
    String::from_utf8(b.to_vec()).map_err(|_| Bad::Corrupt(Corrupt::Layout))
}

/// Decodes the record at the front of `input`: `Ok(None)` while it is incomplete.
pub fn decode(input: &[u8]) -> Result<Option<(MetaRec, usize)>, Bad> {
    let Some((payload, total)) = record::split_frame(input, 1).map_err(Bad::Corrupt)? else {
        return Ok(None);
    };
    let mut f = Fields(payload);
    let c = Bad::Corrupt;
    let rec = match f.u8().map_err(c)? {
        TOPIC => MetaRec::Topic(TopicSpec {
            name: string(&mut f)?,
            partitions: f.u32().map_err(c)?,
            retention_hours: f64::from_bits(f.u64().map_err(c)?),
            retention_bytes: f.u64().map_err(c)? as i64,
        }),
        COMMIT => MetaRec::Commit {
            key: CommitKey {
                topic: string(&mut f)?,
                app: string(&mut f)?,
                group: string(&mut f)?,
                queue: string(&mut f)?,
                partition: f.u32().map_err(c)?,
            },
            offset: f.u64().map_err(c)? as i64,
        },
        FORGET_GROUP => MetaRec::ForgetGroup {
            topic: string(&mut f)?,
            app: string(&mut f)?,
            group: string(&mut f)?,
        },
        kind => return Err(Bad::UnknownKind(kind)),
    };
    if !f.0.is_empty() {
        return Err(c(Corrupt::Layout));
    }
    Ok(Some((rec, total)))
}

fn header() -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER as usize);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&[0; 4]);
    h
}

/// Replays a whole log: the state and the length of its good part.
pub fn replay(bytes: &[u8]) -> io::Result<(MetaState, u64)> {
    let mut state = MetaState::default();
    if bytes.len() < HEADER as usize {
        // A file cut before its header was synced holds nothing.
        return Ok((state, 0));
    }
    if bytes[..8] != MAGIC[..] || bytes[8..12] != VERSION.to_le_bytes() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not an esub meta log"));
    }
    let mut at = HEADER as usize;
    loop {
        match decode(&bytes[at..]) {
            Ok(Some((rec, used))) => {
                state.apply(&rec);
                at += used;
            }
            Ok(None) | Err(Bad::Corrupt(_)) => return Ok((state, at as u64)),
            Err(Bad::UnknownKind(k)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("record kind {k} at byte {at} is unknown (written by a newer esub?)"),
                ));
            }
        }
    }
}

pub struct MetaLog {
    dir: PathBuf,
    file: File,
    len: u64,
    compact_at: u64,
    /// The state the file adds up to, kept to compact it while running.
    state: MetaState,
    buf: Vec<u8>,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `state` as a fresh log: temp file, fsync, rename over `meta.log`, fsync the dir.
fn write_compacted(dir: &Path, state: &MetaState) -> io::Result<(File, u64)> {
    let mut buf = header();
    for rec in state.records() {
        rec.encode(&mut buf);
    }
    let tmp = dir.join(TMP);
    let mut f = File::options().create(true).write(true).truncate(true).open(&tmp)?;
    f.write_all(&buf)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(FILE))?;
    sync_dir(dir)?;
    let f = File::options().append(true).open(dir.join(FILE))?;
    Ok((f, buf.len() as u64))
}

impl MetaLog {
    /// Opens `dir/meta.log` (creating the dir and the file when missing), replays it, cutting a
    /// torn tail with a WARN, and compacts it.
    pub fn open(dir: &Path) -> io::Result<(MetaLog, MetaState)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let (state, good) = replay(&bytes)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        if good < bytes.len() as u64 {
            crate::warn!(
                "topics cut a torn meta log tail file={} at={good} dropped_bytes={}",
                path.display(),
                bytes.len() as u64 - good
            );
        }
        let (file, len) = write_compacted(dir, &state)?;
        let log = MetaLog {
            dir: dir.to_path_buf(),
            file,
            len,
            compact_at: (len * GROWTH).max(COMPACT_MIN),
            state: state.clone(),
            buf: Vec::new(),
        };
        Ok((log, state))
    }

    /// Appends the records with one write; on error nothing of them stays.
    pub fn append(&mut self, recs: &[MetaRec]) -> Result<(), StoreFail> {
        self.buf.clear();
        for r in recs {
            r.encode(&mut self.buf);
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            let _ = self.file.set_len(self.len);
            crate::warn!("topics meta append failed dir={} error={e}", self.dir.display());
            return Err(fail_of(&e));
        }
        self.len += self.buf.len() as u64;
        for r in recs {
            self.state.apply(r);
        }
        if self.len >= self.compact_at {
            self.compact();
        }
        Ok(())
    }

    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// A second handle on the log file, for a background sync.
    pub fn sync_handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Rewrites the log as its state (which also syncs everything appended so far).
    fn compact(&mut self) {
        match write_compacted(&self.dir, &self.state) {
            Ok((file, len)) => {
                crate::debug!("topics meta compacted from={} to={len}", self.len);
                self.file = file;
                self.len = len;
                self.compact_at = (len * GROWTH).max(COMPACT_MIN);
            }
            Err(e) => {
                // The old file is whole (the rename is atomic): go on with it, try again later.
                crate::warn!("topics meta compaction failed dir={} error={e}", self.dir.display());
                self.compact_at = self.len + COMPACT_MIN;
            }
        }
    }
}

#[cfg(test)]
mod tests;
