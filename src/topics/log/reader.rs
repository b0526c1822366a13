//! `PartitionReader`: how worker threads read a partition. It looks a segment and index entry up
//! under a short lock, takes the segment's `Arc<File>`, and reads with `pread` after the lock is
//! gone, so readers never wait on the writer's I/O.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::record::{self, FIXED, FRAME_HEAD};
use super::segment::{HEADER, INDEX_EVERY};
use crate::topics::Message;

/// A read never asks for less than this: one syscall for a few records more is cheaper than two.
const READ_MIN: usize = 64 << 10;
/// Nor more than this at a time: bounds a reader's buffer whatever `max_bytes` says.
const READ_MAX: usize = 1 << 20;

/// One segment as readers see it. The writer changes it under the table lock only.
pub(super) struct Seg {
    pub file: Arc<File>,
    /// Bytes of whole records (and the header): readers never read past it.
    pub len: u64,
    /// Offset after the segment's last record.
    pub end: i64,
    pub newest_ms: u64,
    /// Sparse index: (offset, file position), ascending.
    pub index: Vec<(i64, u64)>,
}

/// What the writer and its readers share.
pub(super) struct Shared {
    /// Segments by base offset.
    pub table: Mutex<BTreeMap<i64, Seg>>,
    pub oldest: AtomicI64,
    pub end: AtomicI64,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, BTreeMap<i64, Seg>> {
        // A panic holding this lock leaves plain data behind; use it as it is.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A cheap handle on one partition's log for any thread.
#[derive(Clone)]
pub struct PartitionReader(pub(super) Arc<Shared>);

impl std::fmt::Debug for PartitionReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PartitionReader {{ oldest: {}, end: {} }}", self.oldest(), self.end())
    }
}

/// Where a read goes next, found under the lock.
struct Spot {
    file: Arc<File>,
    pos: u64,
    len: u64,
    seg_end: i64,
    /// The offset to read from (moved forward past a gap left by a cut segment tail).
    from: i64,
}

fn below_oldest(from: i64, oldest: i64) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("offset {from} is below the oldest retained offset {oldest}"),
    )
}

fn corrupt(pos: u64) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("corrupt topic record at byte {pos}"))
}

impl PartitionReader {
    /// The oldest retained offset.
    pub fn oldest(&self) -> i64 {
        self.0.oldest.load(Ordering::Acquire)
    }

    /// The offset after the last record written (not necessarily synced yet).
    pub fn end(&self) -> i64 {
        self.0.end.load(Ordering::Acquire)
    }

    fn locate(&self, from: i64) -> io::Result<Option<Spot>> {
        let table = self.0.lock();
        let Some((&oldest, _)) = table.first_key_value() else { return Ok(None) };
        if from < oldest {
            return Err(below_oldest(from, oldest));
        }
        let Some((_, seg)) = table.range(..=from).next_back() else { return Ok(None) };
        let (seg, from) = if from < seg.end {
            (seg, from)
        } else {
            // Past this segment's records: the next segment, if any, holds what follows.
            match table.range(from + 1..).next() {
                Some((&base, next)) => (next, base),
                None => return Ok(None),
            }
        };
        if from >= seg.end {
            return Ok(None);
        }
        let i = seg.index.partition_point(|e| e.0 <= from);
        let pos = if i == 0 { HEADER } else { seg.index[i - 1].1 };
        Ok(Some(Spot { file: seg.file.clone(), pos, len: seg.len, seg_end: seg.end, from }))
    }

    /// Up to `max_msgs` messages from offset `from` on, in order, their payloads adding up to at
    /// most `max_bytes` (but always one message when there is one). Empty when `from >= end()`.
    /// `from < oldest()` is an error of kind `NotFound` (the caller clamps to `oldest` and
    /// retries); a corrupt record is `InvalidData`. Offsets a cut tail lost are skipped.
    pub fn read(&self, from: i64, max_msgs: usize, max_bytes: usize) -> io::Result<Vec<Message>> {
        let mut out: Vec<Message> = Vec::new();
        let mut bytes = 0usize;
        let mut next = from;
        let mut buf = Vec::new();
        while out.len() < max_msgs {
            let spot = match self.locate(next) {
                Ok(Some(s)) => s,
                Ok(None) => break,
                // Retention overtook a read already under way: hand over what was read.
                Err(_) if !out.is_empty() => break,
                Err(e) => return Err(e),
            };
            next = spot.from;
            let mut pos = spot.pos;
            while pos < spot.len {
                let budget = max_bytes.saturating_sub(bytes).saturating_add(INDEX_EVERY as usize);
                let want = budget.clamp(READ_MIN, READ_MAX).min((spot.len - pos) as usize);
                buf.resize(want, 0);
                spot.file.read_exact_at(&mut buf, pos)?;
                let mut at = 0;
                loop {
                    match record::decode_record(&buf[at..]) {
                        Ok(Some((r, used))) => {
                            if r.offset >= next {
                                let size = r.payload.len();
                                if !out.is_empty() && bytes.saturating_add(size) > max_bytes {
                                    return Ok(out);
                                }
                                out.push(r.to_message());
                                bytes = bytes.saturating_add(size);
                                next = r.offset + 1;
                                if out.len() >= max_msgs || bytes >= max_bytes {
                                    return Ok(out);
                                }
                            }
                            at += used;
                        }
                        Ok(None) if at == 0 => {
                            // One record larger than the read: read exactly all of it.
                            let total = record::record_len(&buf)
                                .ok()
                                .flatten()
                                .filter(|t| *t as u64 <= spot.len - pos && *t >= FRAME_HEAD + FIXED)
                                .ok_or_else(|| corrupt(pos))?;
                            buf.resize(total, 0);
                            spot.file.read_exact_at(&mut buf, pos)?;
                            if !matches!(record::decode_record(&buf), Ok(Some(_))) {
                                return Err(corrupt(pos));
                            }
                        }
                        Ok(None) => break,
                        Err(_) => return Err(corrupt(pos + at as u64)),
                    }
                }
                pos += at as u64;
            }
            // This segment is done: go on after its last record.
            next = next.max(spot.seg_end);
        }
        Ok(out)
    }
}
