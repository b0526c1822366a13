//! `JobLog`: pending jobs on disk, `jobs.log` in the topics dir: a 16-byte header, then records
//! framed as the partition logs' (`[len u32][crc32 u32][kind u8, fields]`): a job added (with
//! its payload), a job done (cancelled, or fired and forgotten), and the id floor. Replayed at
//! start-up without holding payloads; compacted when mostly dead.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::log::record::{self, Corrupt, FRAME_HEAD, Fields};

pub const FILE: &str = "jobs.log";
const TMP: &str = "jobs.log.tmp";
const MAGIC: &[u8; 8] = b"ESUBJOB\0";
const VERSION: u32 = 1;
pub const HEADER: u64 = 16;
/// Compaction waits until the file is this big…
const COMPACT_MIN: u64 = 16 << 20;
/// …and this many times what its live jobs take: each compaction copies the live records
/// once, so the copying costs at most one extra write of every byte appended.
const GROWTH: u64 = 2;

const ADD: u8 = 1;
const DONE: u8 = 2;
/// The last id handed out, first in a compacted file: ids keep increasing after every job
/// whose record named a higher id is gone.
const FLOOR: u8 = 3;

/// A job as its record holds it.
#[derive(Debug, PartialEq, Eq)]
pub struct Job<'a> {
    pub id: i64,
    pub due_ms: u64,
    pub topic: &'a str,
    pub key: &'a [u8],
    pub tag: &'a [u8],
    pub payload: &'a [u8],
}

#[derive(Debug, PartialEq, Eq)]
pub enum Rec<'a> {
    Add(Job<'a>),
    Done(i64),
    Floor(i64),
}

fn short(out: &mut Vec<u8>, b: &[u8]) {
    // Topic names, keys and tags are bounded below u16 by the contract's limits.
    let b = &b[..b.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

impl Rec<'_> {
    /// Appends the framed record to `out`; returns its length.
    pub fn encode(&self, out: &mut Vec<u8>) -> u32 {
        let start = record::begin_frame(out);
        match self {
            Rec::Add(j) => {
                out.push(ADD);
                out.extend_from_slice(&j.id.to_le_bytes());
                out.extend_from_slice(&j.due_ms.to_le_bytes());
                short(out, j.topic.as_bytes());
                short(out, j.key);
                short(out, j.tag);
                out.extend_from_slice(j.payload);
            }
            Rec::Done(id) => {
                out.push(DONE);
                out.extend_from_slice(&id.to_le_bytes());
            }
            Rec::Floor(id) => {
                out.push(FLOOR);
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
        record::end_frame(out, start);
        (out.len() - start) as u32
    }
}

/// How a record failed to decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bad {
    Corrupt(Corrupt),
    /// A well-framed record of a kind this build does not know (a newer esub wrote it).
    UnknownKind(u8),
}

/// Decodes a whole frame (head included), checking its CRC.
pub fn decode(frame: &[u8]) -> Result<Rec<'_>, Bad> {
    let c = Bad::Corrupt;
    let (payload, total) = record::split_frame(frame, 9).map_err(c)?.ok_or(c(Corrupt::Length))?;
    if total != frame.len() {
        return Err(c(Corrupt::Length));
    }
    let mut f = Fields(payload);
    let kind = f.u8().map_err(c)?;
    let id = f.u64().map_err(c)? as i64;
    let rec = match kind {
        ADD => {
            let due_ms = f.u64().map_err(c)?;
            let topic =
                std::str::from_utf8(f.short().map_err(c)?).map_err(|_| c(Corrupt::Layout))?;
            let key = f.short().map_err(c)?;
            let tag = f.short().map_err(c)?;
            let payload = std::mem::take(&mut f.0);
            Rec::Add(Job { id, due_ms, topic, key, tag, payload })
        }
        DONE => Rec::Done(id),
        FLOOR => Rec::Floor(id),
        k => return Err(Bad::UnknownKind(k)),
    };
    if !f.0.is_empty() {
        return Err(c(Corrupt::Layout));
    }
    Ok(rec)
}

fn header() -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER as usize);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&[0; 4]);
    h
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn invalid(path: &Path, what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", path.display()))
}

/// Reads one frame from `r` into `buf`: `Ok(false)` at a clean end or a torn / corrupt tail.
fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<bool> {
    buf.resize(FRAME_HEAD, 0);
    if let Err(e) = r.read_exact(buf) {
        return if e.kind() == io::ErrorKind::UnexpectedEof { Ok(false) } else { Err(e) };
    }
    let Ok(Some(total)) = record::frame_len(buf, 9) else { return Ok(false) };
    buf.resize(total, 0);
    match r.read_exact(&mut buf[FRAME_HEAD..]) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

pub struct JobLog {
    dir: PathBuf,
    file: File,
    len: u64,
}

impl JobLog {
    /// Opens `dir/jobs.log` when it exists, replaying each record with its position and
    /// length (payloads are not kept); a torn or corrupt tail is cut with a WARN.
    pub fn open(
        dir: &Path,
        mut visit: impl FnMut(Rec<'_>, u64, u32),
    ) -> io::Result<Option<JobLog>> {
        let path = dir.join(FILE);
        let file = match File::options().read(true).append(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let size = file.metadata()?.len();
        if size < HEADER {
            // Cut before its header was synced: it held nothing.
            return JobLog::create(dir).map(Some);
        }
        let mut r = BufReader::with_capacity(1 << 20, &file);
        let mut head = [0u8; HEADER as usize];
        r.read_exact(&mut head)?;
        if head[..8] != MAGIC[..] || head[8..12] != VERSION.to_le_bytes() {
            return Err(invalid(&path, "not an esub jobs log".into()));
        }
        let mut at = HEADER;
        let mut buf = Vec::new();
        while read_frame(&mut r, &mut buf)? {
            match decode(&buf) {
                Ok(rec) => visit(rec, at, buf.len() as u32),
                Err(Bad::Corrupt(_)) => break,
                Err(Bad::UnknownKind(k)) => {
                    return Err(invalid(&path, format!("record kind {k} at byte {at} is unknown")));
                }
            }
            at += buf.len() as u64;
        }
        drop(r);
        if at < size {
            crate::warn!(
                "topics cut a torn jobs log tail file={} at={at} dropped_bytes={}",
                path.display(),
                size - at
            );
            file.set_len(at)?;
            file.sync_all()?;
        }
        Ok(Some(JobLog { dir: dir.to_path_buf(), file, len: at }))
    }

    /// A new, empty log (the dir exists: jobs need a topic).
    pub fn create(dir: &Path) -> io::Result<JobLog> {
        let (file, len) = write_new(dir, &header())?;
        Ok(JobLog { dir: dir.to_path_buf(), file, len })
    }

    /// Bytes in the file: where the next record goes.
    pub fn end(&self) -> u64 {
        self.len
    }

    /// Appends framed records with one write; on error nothing of them stays.
    pub fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        if let Err(e) = self.file.write_all(buf) {
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += buf.len() as u64;
        Ok(())
    }

    /// The frame at `pos`.
    pub fn read(&self, pos: u64, len: u32) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len as usize];
        self.file.read_exact_at(&mut buf, pos)?;
        Ok(buf)
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    pub fn sync_handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Whether the live records are few enough beside the file to rewrite it.
    pub fn worth_compacting(&self, live_bytes: u64) -> bool {
        self.len >= COMPACT_MIN && self.len > (HEADER + live_bytes) * GROWTH
    }

    /// Rewrites the log as `floor` plus the frames at `live` (position, length, id, sorted by
    /// position): temp file, fsync, rename, fsync the dir. Returns each id's new position.
    pub fn compact(&mut self, floor: i64, live: &[(u64, u32, i64)]) -> io::Result<Vec<(i64, u64)>> {
        let mut buf = header();
        Rec::Floor(floor).encode(&mut buf);
        let mut moved = Vec::with_capacity(live.len());
        let mut frame = Vec::new();
        for &(pos, len, id) in live {
            frame.resize(len as usize, 0);
            self.file.read_exact_at(&mut frame, pos)?;
            moved.push((id, buf.len() as u64));
            buf.extend_from_slice(&frame);
        }
        let (file, len) = write_new(&self.dir, &buf)?;
        crate::debug!("topics jobs log compacted from={} to={len} jobs={}", self.len, live.len());
        self.file = file;
        self.len = len;
        Ok(moved)
    }
}

/// Writes `bytes` as the whole log: temp file, fsync, rename over `jobs.log`, fsync the dir.
fn write_new(dir: &Path, bytes: &[u8]) -> io::Result<(File, u64)> {
    let tmp = dir.join(TMP);
    let mut f = File::options().create(true).write(true).truncate(true).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(FILE))?;
    sync_dir(dir)?;
    let f = File::options().read(true).append(true).open(dir.join(FILE))?;
    Ok((f, bytes.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("esub-joblog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn job(id: i64, payload: &[u8]) -> Rec<'_> {
        Rec::Add(Job { id, due_ms: 5, topic: "a.t.v", key: b"k", tag: b"x=y", payload })
    }

    type Seen = Vec<(String, u64, u32)>;

    fn replay(dir: &Path) -> (Option<JobLog>, Seen) {
        let mut seen = Vec::new();
        let log = JobLog::open(dir, |r, pos, len| seen.push((format!("{r:?}"), pos, len))).unwrap();
        (log, seen)
    }

    #[test]
    fn records_round_trip() {
        for rec in [job(7, b"payload"), job(8, b""), Rec::Done(7), Rec::Floor(9)] {
            let mut out = Vec::new();
            let n = rec.encode(&mut out);
            assert_eq!(n as usize, out.len());
            assert_eq!(decode(&out), Ok(rec));
        }
        let mut out = Vec::new();
        Rec::Done(1).encode(&mut out);
        out[8] = 9;
        assert_eq!(decode(&out), Err(Bad::Corrupt(Corrupt::Checksum)));
    }

    #[test]
    fn replays_positions_and_cuts_a_torn_tail() {
        let dir = tmp("replay");
        assert!(replay(&dir).0.is_none(), "no file, no log");
        let mut log = JobLog::create(&dir).unwrap();
        let mut buf = Vec::new();
        let a = job(1, b"one").encode(&mut buf);
        Rec::Done(1).encode(&mut buf);
        log.append(&buf).unwrap();
        let end = log.end();
        let mut torn = Vec::new();
        job(2, b"two").encode(&mut torn);
        log.append(&torn[..torn.len() - 1]).unwrap();
        drop(log);
        let (log, seen) = replay(&dir);
        assert_eq!(log.unwrap().end(), end);
        assert_eq!(seen.len(), 2);
        assert_eq!((seen[0].1, seen[0].2), (HEADER, a));
        assert_eq!(seen[1].0, "Done(1)");
        assert_eq!(std::fs::metadata(dir.join(FILE)).unwrap().len(), end);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn compaction_keeps_the_live_frames_and_the_floor() {
        let dir = tmp("compact");
        let mut log = JobLog::create(&dir).unwrap();
        let mut buf = Vec::new();
        let mut at = HEADER;
        let mut live = Vec::new();
        for id in 1..=4 {
            let n = job(id, b"data").encode(&mut buf);
            if id % 2 == 0 {
                live.push((at, n, id));
            }
            at += u64::from(n);
        }
        log.append(&buf).unwrap();
        let moved = log.compact(40, &live).unwrap();
        assert_eq!(moved.len(), 2);
        for (id, pos) in &moved {
            let frame = log.read(*pos, live[0].1).unwrap();
            assert!(matches!(decode(&frame), Ok(Rec::Add(j)) if j.id == *id));
        }
        drop(log);
        let (_, seen) = replay(&dir);
        let kinds: Vec<&str> = seen.iter().map(|s| &s.0[..4]).collect();
        assert_eq!(kinds, ["Floo", "Add(", "Add("]);
        assert!(!dir.join(TMP).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
