//! Store maintenance on the store thread: retention by age and by bytes, and compaction, each a
//! whole segment at a time and strictly oldest first.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::{Engine, segment};
use crate::server::unix_ms;

impl Engine {
    /// Retention by age and by bytes, and compaction of mostly-dead segments: whole segments
    /// go, after their still-live records (for compaction) are copied to the active one.
    ///
    /// Always from the oldest segment forward: a tombstone sits in a later segment than its
    /// record, so dropping a later segment while an older one still holds the record would bring
    /// the record back at the next start-up. Taking segments in order keeps every tombstone
    /// until its record's segment is gone.
    pub(super) fn maintain(&mut self) {
        let cutoff = unix_ms().saturating_sub(self.retention_ms);
        let sealed: Vec<u64> =
            self.segments.keys().copied().filter(|s| *s != self.active_seq).collect();
        for seq in sealed {
            let seg = &self.segments[&seq];
            if seg.newest_ms < cutoff {
                self.drop_segment(seq, "expired");
            } else if seg.live == 0 {
                self.drop_segment(seq, "empty");
            } else if seg.live * 2 < seg.len {
                self.compact(seq);
            } else {
                break;
            }
        }
        let mut total: u64 = self.segments.values().map(|s| s.len).sum();
        while total > self.retention_bytes {
            let Some(oldest) =
                self.segments.keys().next().copied().filter(|s| *s != self.active_seq)
            else {
                break;
            };
            total -= self.segments[&oldest].len;
            self.drop_segment(oldest, "over ESUB_RETENTION_BYTES");
        }
    }

    fn drop_segment(&mut self, seq: u64, why: &str) {
        self.segments.remove(&seq);
        self.readers.remove(&seq);
        let mut lost = 0;
        let touched = &mut self.touched;
        self.index.retain(|key, q| {
            let before = q.len();
            q.retain(|e| e.seg != seq);
            lost += before - q.len();
            if q.is_empty() {
                touched.push(key.clone());
            }
            !q.is_empty()
        });
        self.records -= lost as u64;
        if let Err(e) = std::fs::remove_file(segment::path(&self.dir, seq)) {
            crate::warn!("store cannot remove segment={seq} error={e}");
        }
        if lost > 0 {
            crate::info!("store dropped segment={seq} why={why} records={lost}");
        }
    }

    /// Copies a segment's live records (frames byte for byte, same ids) to the active segment,
    /// then drops it. A crash in between leaves two copies with one id: the scan keeps the later.
    fn compact(&mut self, seq: u64) {
        let mut moving: Vec<(Arc<str>, u64, u64, u32)> = Vec::new();
        for (key, q) in &self.index {
            moving.extend(
                q.iter().filter(|e| e.seg == seq).map(|e| (key.clone(), e.id, e.offset, e.len)),
            );
        }
        moving.sort_by_key(|m| m.2);
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut places = Vec::with_capacity(moving.len());
        for (key, id, offset, len) in &moving {
            let at = buf.len();
            buf.resize(at + *len as usize, 0);
            if self.reader(seq).and_then(|f| f.read_exact_at(&mut buf[at..], *offset)).is_err() {
                crate::warn!("store compaction read failed segment={seq}");
                self.buf = buf;
                return;
            }
            places.push((key.clone(), *id, at as u64));
        }
        self.buf = buf;
        let active_len = self.segments[&self.active_seq].len;
        if active_len > segment::HEADER
            && active_len + self.buf.len() as u64 > self.segment_bytes
            && self.roll().is_err()
        {
            return;
        }
        let base = self.segments[&self.active_seq].len;
        if self.active.write_all(&self.buf).and_then(|_| self.active.sync_data()).is_err() {
            let _ = self.active.set_len(base);
            crate::warn!("store compaction write failed segment={seq}");
            return;
        }
        let active_seq = self.active_seq;
        let mut moved = 0;
        for (key, id, at) in places {
            if let Some(e) =
                self.index.get_mut(&key).and_then(|q| q.iter_mut().find(|e| e.id == id))
            {
                e.seg = active_seq;
                e.offset = base + at;
                moved += e.len as u64;
            }
        }
        let seg = self.segments.get_mut(&active_seq).expect("the active segment is always listed");
        seg.len = base + self.buf.len() as u64;
        seg.live += moved;
        let newest = self.segments.get(&seq).map_or(0, |s| s.newest_ms);
        let seg = self.segments.get_mut(&active_seq).expect("the active segment is always listed");
        seg.newest_ms = seg.newest_ms.max(newest);
        crate::debug!("store compacted segment={seq} records={}", moving.len());
        self.drop_segment(seq, "compacted");
    }
}
