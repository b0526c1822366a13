//! `PartitionLog`: one partition's append-only log, written by the topics store thread only: a
//! directory of segment files named by base offset with a sparse offset index each, rolled at
//! `segment_bytes`, retained whole segments at a time. Readers use `PartitionReader`.

mod appender;
mod reader;
pub mod record;
pub mod segment;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

pub use appender::{AppendDone, Appender, Batch, Done, Flushed};
pub use reader::PartitionReader;
pub use record::{Corrupt, Record, decode_record};
pub use segment::scan;

use super::Message;
use crate::store::StoreFail;
use reader::{Seg, Shared};
use segment::{HEADER, Scanned};

/// The error class a failed write answers with: 507 for a full disk or file size limit.
pub fn fail_of(e: &io::Error) -> StoreFail {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::EDQUOT) => StoreFail::Full,
        _ => StoreFail::Io,
    }
}

/// Messages `write` put in the files, not yet published to readers.
pub struct Written(Vec<Pending>);

/// One segment written to by an `append` that has not been published to readers yet.
struct Pending {
    base: i64,
    file: Arc<File>,
    /// Length before this append (0 for a segment the append created).
    start_len: u64,
    /// Length once `buf` is written.
    len: u64,
    written: u64,
    created: bool,
    end: i64,
    newest_ms: u64,
    last_entry: Option<u64>,
    new_entries: Vec<(i64, u64)>,
}

pub struct PartitionLog {
    shared: Arc<Shared>,
    dir: PathBuf,
    segment_bytes: u64,
    active: Arc<File>,
    active_base: i64,
    active_len: u64,
    active_newest_ms: u64,
    /// Position of the active segment's last index entry.
    last_entry: Option<u64>,
    latest: i64,
    buf: Vec<u8>,
}

fn open_rw(path: &Path) -> io::Result<File> {
    File::options().read(true).append(true).open(path)
}

impl PartitionLog {
    /// Opens (or creates) the partition in `dir`. Sealed segments come with their `.idx` or are
    /// scanned (and the `.idx` written); the last segment is scanned and a torn or corrupt tail
    /// cut at the last good record, with a WARN.
    pub fn open(dir: &Path, segment_bytes: u64) -> io::Result<PartitionLog> {
        std::fs::create_dir_all(dir)?;
        let mut bases = segment::list(dir)?;
        if bases.is_empty() {
            segment::create(dir, 0)?;
            bases.push(0);
        }
        let mut table = BTreeMap::new();
        let last = bases.len() - 1;
        let mut active = None;
        for (i, &base) in bases.iter().enumerate() {
            let path = segment::seg_path(dir, base);
            let file = open_rw(&path)?;
            let len = file.metadata()?.len();
            let known = if i < last {
                std::fs::read(segment::idx_path(dir, base))
                    .ok()
                    .and_then(|b| segment::decode_idx(&b, base, len))
            } else {
                None
            };
            let s = match known {
                Some(s) => s,
                None => {
                    let s = segment::scan(&file, base, |_, _, _| {}).map_err(|e| {
                        io::Error::new(e.kind(), format!("{}: {e}", path.display()))
                    })?;
                    if s.good_end < s.file_len.max(HEADER) {
                        crate::warn!(
                            "topics cut a torn tail segment={} at={} dropped_bytes={}",
                            path.display(),
                            s.good_end,
                            s.file_len - s.good_end
                        );
                        file.set_len(s.good_end)?;
                        if s.good_end < HEADER {
                            (&file).write_all(&segment::header())?;
                        }
                        file.sync_all()?;
                    }
                    let s = Scanned { good_end: s.good_end.max(HEADER), ..s };
                    if i < last {
                        write_idx(dir, base, &s);
                    }
                    s
                }
            };
            let file = Arc::new(file);
            if i == last {
                active = Some((file.clone(), s.clone()));
            }
            let seg =
                Seg { file, len: s.good_end, end: s.end, newest_ms: s.newest_ms, index: s.index };
            table.insert(base, seg);
        }
        let (active, s) = active.expect("the last segment is the active one");
        let active_base = bases[last];
        let latest = s.end;
        let shared = Arc::new(Shared {
            oldest: AtomicI64::new(bases[0]),
            end: AtomicI64::new(latest),
            table: Mutex::new(table),
        });
        Ok(PartitionLog {
            shared,
            dir: dir.to_path_buf(),
            segment_bytes,
            active,
            active_base,
            active_len: s.good_end,
            active_newest_ms: s.newest_ms,
            last_entry: s.index.last().map(|e| e.1),
            latest,
            buf: Vec::new(),
        })
    }

    pub fn reader(&self) -> PartitionReader {
        PartitionReader(self.shared.clone())
    }

    /// The offset the next message gets.
    pub fn latest(&self) -> i64 {
        self.latest
    }

    /// Whether `bytes` more of records fit in the active segment (an append of them does not
    /// roll it, which would fsync and create a file).
    pub fn fits_without_roll(&self, bytes: u64) -> bool {
        self.active_len + bytes <= self.segment_bytes
    }

    /// The oldest retained offset.
    pub fn oldest(&self) -> i64 {
        self.shared.oldest.load(Ordering::Acquire)
    }

    /// Appends messages whose offsets run on from `latest()`, with one write per segment
    /// touched (one, unless the batch fills the active segment). On any error nothing of the
    /// batch stays: files are cut back, segments it created removed, `latest()` unchanged.
    pub fn append(&mut self, msgs: &[Arc<Message>]) -> Result<(), StoreFail> {
        self.append_all(msgs.iter())
    }

    /// `append` of messages that sit in several lists (an `Appender`'s queue), without
    /// gathering them into one.
    pub fn append_all<'m>(
        &mut self,
        msgs: impl Iterator<Item = &'m Arc<Message>> + Clone,
    ) -> Result<(), StoreFail> {
        let written = self.write_iter(msgs)?;
        self.publish_written(written);
        Ok(())
    }

    /// `append` in two steps, for a caller that must make something else durable in between
    /// (the journal): the messages are in the files but not yet the log's (readers do not see
    /// them, `latest()` has not moved) until `publish_written`; `unwrite` takes them out again.
    /// Nothing else may append in between.
    pub fn write(&mut self, msgs: &[Arc<Message>]) -> Result<Written, StoreFail> {
        self.write_iter(msgs.iter())
    }

    fn write_iter<'m>(
        &mut self,
        msgs: impl Iterator<Item = &'m Arc<Message>> + Clone,
    ) -> Result<Written, StoreFail> {
        let mut any = false;
        for (i, m) in msgs.clone().enumerate() {
            any = true;
            if m.offset != self.latest + i as i64 || !Record::of(m).fits() {
                crate::warn!(
                    "topics refused an append dir={} offset={} expected={} (a bug upstream)",
                    self.dir.display(),
                    m.offset,
                    self.latest + i as i64
                );
                return Err(StoreFail::Io);
            }
        }
        let mut pending = vec![Pending {
            base: self.active_base,
            file: self.active.clone(),
            start_len: self.active_len,
            len: self.active_len,
            written: self.active_len,
            created: false,
            end: self.latest,
            newest_ms: self.active_newest_ms,
            last_entry: self.last_entry,
            new_entries: Vec::new(),
        }];
        if !any {
            return Ok(Written(pending));
        }
        let result = self.write_all(msgs, &mut pending);
        if let Err(e) = result {
            self.unwrite(Written(pending));
            crate::warn!("topics append failed dir={} error={e}", self.dir.display());
            return Err(fail_of(&e));
        }
        Ok(Written(pending))
    }

    /// Makes written messages the log's (see `write`).
    pub fn publish_written(&mut self, w: Written) {
        self.publish(w.0);
    }

    /// Takes written messages out of the files again (see `write`).
    pub fn unwrite(&mut self, w: Written) {
        for p in w.0.iter().rev() {
            if p.created {
                let _ = std::fs::remove_file(segment::seg_path(&self.dir, p.base));
            } else {
                let _ = p.file.set_len(p.start_len);
            }
        }
    }

    fn write_all<'m>(
        &mut self,
        msgs: impl Iterator<Item = &'m Arc<Message>>,
        pending: &mut Vec<Pending>,
    ) -> io::Result<()> {
        self.buf.clear();
        for m in msgs {
            let r = Record::of(m);
            let n = r.encoded_len() as u64;
            let cur = pending.last_mut().expect("one pending segment at least");
            if cur.len > HEADER && cur.len + n > self.segment_bytes {
                // Roll: this segment is done, synced before its successor exists.
                (&*cur.file).write_all(&self.buf)?;
                cur.written = cur.len;
                self.buf.clear();
                cur.file.sync_data()?;
                let file = segment::create(&self.dir, m.offset)?;
                pending.push(Pending {
                    base: m.offset,
                    file: Arc::new(file),
                    start_len: 0,
                    len: HEADER,
                    written: HEADER,
                    created: true,
                    end: m.offset,
                    newest_ms: 0,
                    last_entry: None,
                    new_entries: Vec::new(),
                });
            }
            let cur = pending.last_mut().expect("one pending segment at least");
            if segment::wants_entry(cur.last_entry, cur.len) {
                cur.new_entries.push((m.offset, cur.len));
                cur.last_entry = Some(cur.len);
            }
            r.encode(&mut self.buf);
            cur.len += n;
            cur.end = m.offset + 1;
            cur.newest_ms = cur.newest_ms.max(m.time_ms);
        }
        let cur = pending.last_mut().expect("one pending segment at least");
        (&*cur.file).write_all(&self.buf)?;
        cur.written = cur.len;
        Ok(())
    }

    /// Makes a successful append visible to readers; seals the segments it filled.
    fn publish(&mut self, pending: Vec<Pending>) {
        let last = pending.len() - 1;
        let mut sealed = Vec::new();
        {
            let mut table = self.shared.lock();
            for (i, p) in pending.into_iter().enumerate() {
                let seg = table.entry(p.base).or_insert_with(|| Seg {
                    file: p.file.clone(),
                    len: HEADER,
                    end: p.base,
                    newest_ms: 0,
                    index: Vec::new(),
                });
                seg.len = p.written;
                seg.end = p.end;
                seg.newest_ms = p.newest_ms;
                seg.index.extend_from_slice(&p.new_entries);
                if i < last {
                    sealed.push((p.base, summary(seg)));
                } else {
                    self.active = p.file;
                    self.active_base = p.base;
                    self.active_len = p.written;
                    self.active_newest_ms = p.newest_ms;
                    self.last_entry = p.last_entry;
                    self.latest = p.end;
                }
            }
            self.shared.end.store(self.latest, Ordering::Release);
        }
        for (base, s) in sealed {
            write_idx(&self.dir, base, &s);
        }
    }

    /// Flushes the active segment to disk (sealed ones were synced when they were rolled).
    pub fn sync(&mut self) -> io::Result<()> {
        self.active.sync_data()
    }

    /// The active segment, for a background sync (`ESUB_FSYNC=interval`): what was appended
    /// before this call reaches the disk with that file's `sync_data`, later rolls sync the
    /// segments they seal themselves.
    pub fn sync_handle(&self) -> Arc<File> {
        self.active.clone()
    }

    /// Starts a fresh, empty active segment at `latest` (the current one is sealed).
    fn roll_empty(&mut self) -> io::Result<()> {
        self.active.sync_data()?;
        let file = Arc::new(segment::create(&self.dir, self.latest)?);
        let old = self.active_base;
        let sealed = {
            let mut table = self.shared.lock();
            let s = table.get(&old).map(summary);
            let seg = Seg {
                file: file.clone(),
                len: HEADER,
                end: self.latest,
                newest_ms: 0,
                index: Vec::new(),
            };
            table.insert(self.latest, seg);
            s
        };
        if let Some(s) = sealed {
            write_idx(&self.dir, old, &s);
        }
        self.active = file;
        self.active_base = self.latest;
        self.active_len = HEADER;
        self.active_newest_ms = 0;
        self.last_entry = None;
        Ok(())
    }

    /// Drops whole segments, oldest first: by time each sealed segment whose newest message is
    /// more than `retention_ms` old, and the active one too when all of the log expired (a fresh
    /// empty segment at `latest` replaces it); by bytes (`retention_bytes` >= 0) the oldest
    /// sealed segments while the partition is over it, never the active one. `latest` never
    /// moves; answers the new oldest offset when it moved. An error (rolling an expired active
    /// segment failed) leaves the log as it was; a segment file that cannot be unlinked is a WARN.
    pub fn retain(
        &mut self,
        now_ms: u64,
        retention_ms: u64,
        retention_bytes: i64,
    ) -> io::Result<Option<i64>> {
        let before = self.oldest();
        let expired = |newest: u64| now_ms.saturating_sub(newest) > retention_ms;
        let segs: Vec<(i64, u64, u64)> =
            self.shared.lock().iter().map(|(b, s)| (*b, s.len, s.newest_ms)).collect();
        let mut drop = Vec::new();
        for &(base, _, newest) in &segs {
            if base == self.active_base || !expired(newest) {
                break;
            }
            drop.push(base);
        }
        let all_gone = drop.len() + 1 == segs.len();
        if all_gone && self.latest > self.active_base && expired(self.active_newest_ms) {
            drop.push(self.active_base);
            self.roll_empty()?;
        }
        if retention_bytes >= 0 {
            let mut total: u64 =
                segs.iter().filter(|s| !drop.contains(&s.0)).map(|s| s.1).sum::<u64>();
            for &(base, len, _) in &segs {
                if total <= retention_bytes as u64 || base == self.active_base {
                    break;
                }
                if !drop.contains(&base) {
                    drop.push(base);
                    total -= len;
                }
            }
        }
        if drop.is_empty() {
            return Ok(None);
        }
        {
            let mut table = self.shared.lock();
            for base in &drop {
                table.remove(base);
            }
            let oldest = table.first_key_value().map_or(self.latest, |(b, _)| *b);
            self.shared.oldest.store(oldest, Ordering::Release);
        }
        for base in &drop {
            let _ = std::fs::remove_file(segment::idx_path(&self.dir, *base));
            // Readers no longer find it; a file left behind comes back at the next start-up as
            // old messages, which retention removes again.
            if let Err(e) = std::fs::remove_file(segment::seg_path(&self.dir, *base)) {
                crate::warn!(
                    "topics cannot remove segment dir={} base={base} error={e}",
                    self.dir.display()
                );
            }
        }
        let after = self.oldest();
        Ok((after != before).then_some(after))
    }
}

fn summary(seg: &Seg) -> Scanned {
    Scanned {
        good_end: seg.len,
        file_len: seg.len,
        end: seg.end,
        newest_ms: seg.newest_ms,
        index: seg.index.clone(),
    }
}

/// Writes a sealed segment's `.idx`; a failure costs only a scan at the next start-up.
fn write_idx(dir: &Path, base: i64, s: &Scanned) {
    if let Err(e) = std::fs::write(segment::idx_path(dir, base), segment::encode_idx(s, base)) {
        crate::warn!("topics cannot write an index dir={} base={base} error={e}", dir.display());
    }
}

#[cfg(test)]
pub(crate) mod tests;
