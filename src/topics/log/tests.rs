//! `PartitionLog` and `PartitionReader` against real files in a temp dir.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// A temp dir removed when dropped, unique per process and test.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("esub-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn msg(offset: i64, time_ms: u64) -> Arc<Message> {
    let len = (offset as usize * 37) % 700;
    Arc::new(Message {
        offset,
        time_ms,
        key: if offset % 3 == 0 { Vec::new() } else { format!("k{offset}").into_bytes() },
        tag: if offset % 5 == 0 { b"a=b".to_vec() } else { Vec::new() },
        msg_id: if offset % 7 == 0 { format!("id{offset}").into_bytes() } else { Vec::new() },
        payload: vec![offset as u8; len],
    })
}

fn append_range(log: &mut PartitionLog, from: i64, to: i64, time_ms: u64, per_call: usize) {
    let all: Vec<_> = (from..to).map(|o| msg(o, time_ms)).collect();
    for chunk in all.chunks(per_call) {
        log.append(chunk).unwrap();
    }
}

fn check_all(r: &PartitionReader, oldest: i64, latest: i64) {
    assert_eq!((r.oldest(), r.end()), (oldest, latest));
    for from in oldest..latest {
        // Times vary by test; everything else is a function of the offset.
        let got: Vec<Message> = r
            .read(from, 3, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|m| Message { time_ms: 0, ..m })
            .collect();
        let want: Vec<Message> =
            (from..latest.min(from + 3)).map(|o| (*msg(o, 0)).clone()).collect();
        assert_eq!(got, want, "from {from}");
    }
    assert!(r.read(latest, 10, 1 << 20).unwrap().is_empty());
    let all = r.read(oldest, usize::MAX, usize::MAX).unwrap();
    assert_eq!(all.len() as i64, latest - oldest);
}

fn segs(dir: &Path) -> Vec<i64> {
    segment::list(dir).unwrap()
}

#[test]
fn append_read_every_offset_across_rolls_and_reopen() {
    let t = TempDir::new("tlog-rt");
    let mut log = PartitionLog::open(&t.0, 2000).unwrap();
    assert_eq!((log.oldest(), log.latest()), (0, 0));
    let r = log.reader();
    assert!(r.read(0, 10, 100).unwrap().is_empty());
    append_range(&mut log, 0, 50, 5, 1);
    append_range(&mut log, 50, 200, 5, 17);
    append_range(&mut log, 200, 230, 5, 30);
    assert!(segs(&t.0).len() > 10, "{:?}", segs(&t.0));
    check_all(&r, 0, 230);
    assert_eq!(r.read(229, 1, 1).unwrap()[0].time_ms, 5);
    // Reads stop at max_bytes, but take one message whatever its size.
    let one = r.read(10, 100, 1).unwrap();
    assert_eq!(one.len(), 1);
    let some = r.read(0, 100, 3000).unwrap();
    let sum: usize = some.iter().map(|m| m.payload.len()).sum();
    assert!(sum <= 3000 && some.len() > 1 && some.len() < 100, "{} {sum}", some.len());
    drop(log);
    // The sealed segments' .idx files were written; reopening gives the same log.
    let idx = std::fs::read_dir(&t.0)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("idx".as_ref()))
        .count();
    assert_eq!(idx, segs(&t.0).len() - 1);
    let mut log = PartitionLog::open(&t.0, 2000).unwrap();
    assert_eq!((log.oldest(), log.latest()), (0, 230));
    check_all(&log.reader(), 0, 230);
    append_range(&mut log, 230, 240, 5, 4);
    check_all(&log.reader(), 0, 240);
    // A damaged .idx is only a scan at start-up.
    std::fs::write(segment::idx_path(&t.0, 0), b"junk").unwrap();
    drop(log);
    let log = PartitionLog::open(&t.0, 2000).unwrap();
    check_all(&log.reader(), 0, 240);
}

#[test]
fn large_messages_and_big_reads() {
    let t = TempDir::new("tlog-big");
    let mut log = PartitionLog::open(&t.0, 1 << 20).unwrap();
    let big = |o: i64, n: usize| {
        Arc::new(Message {
            offset: o,
            time_ms: 1,
            key: Vec::new(),
            tag: Vec::new(),
            msg_id: Vec::new(),
            payload: vec![o as u8; n],
        })
    };
    let msgs: Vec<_> =
        (0..40).map(|o| big(o, if o % 4 == 0 { 300_000 } else { 10 + o as usize })).collect();
    log.append(&msgs).unwrap();
    let r = log.reader();
    for from in 0..40 {
        let got = r.read(from, 2, 100).unwrap();
        assert_eq!(got[0], *msgs[from as usize], "from {from}");
    }
    let all = r.read(0, 1000, usize::MAX).unwrap();
    assert_eq!(all.len(), 40);
}

#[test]
fn refuses_a_gap_and_leaves_the_log_alone() {
    let t = TempDir::new("tlog-gap");
    let mut log = PartitionLog::open(&t.0, 4096).unwrap();
    append_range(&mut log, 0, 3, 1, 3);
    assert_eq!(log.append(&[msg(4, 1)]), Err(StoreFail::Io));
    assert_eq!(log.append(&[msg(3, 1), msg(5, 1)]), Err(StoreFail::Io));
    assert_eq!(log.latest(), 3);
    check_all(&log.reader(), 0, 3);
}

#[test]
fn torn_tail_is_cut_on_open() {
    let t = TempDir::new("tlog-torn");
    let mut log = PartitionLog::open(&t.0, 3000).unwrap();
    append_range(&mut log, 0, 40, 1, 7);
    let last = *segs(&t.0).last().unwrap();
    drop(log);
    let path = segment::seg_path(&t.0, last);
    let len = std::fs::metadata(&path).unwrap().len();
    // Cut mid-record: the last record goes.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 3).unwrap();
    let mut log = PartitionLog::open(&t.0, 3000).unwrap();
    assert_eq!(log.latest(), 39);
    check_all(&log.reader(), 0, 39);
    append_range(&mut log, 39, 45, 1, 6);
    drop(log);
    // Garbage after the last record.
    OpenOptions::new().append(true).open(&path).unwrap().write_all(b"\x10\0\0\0garbage").unwrap();
    let log = PartitionLog::open(&t.0, 3000).unwrap();
    assert_eq!(log.latest(), 45);
    check_all(&log.reader(), 0, 45);
    drop(log);
    // A roll cut before its header: an empty active segment at that base.
    for (i, junk) in [&b"ESUB"[..], b""].iter().enumerate() {
        let base = 45 + 2 * i as i64;
        std::fs::write(segment::seg_path(&t.0, base), junk).unwrap();
        let mut log = PartitionLog::open(&t.0, 3000).unwrap();
        assert_eq!(log.latest(), base);
        append_range(&mut log, base, base + 2, 1, 2);
        check_all(&log.reader(), 0, base + 2);
        drop(log);
        let log = PartitionLog::open(&t.0, 3000).unwrap();
        check_all(&log.reader(), 0, base + 2);
    }
}

#[test]
fn retention_by_time_and_bytes() {
    let t = TempDir::new("tlog-ret");
    let mut log = PartitionLog::open(&t.0, 2500).unwrap();
    append_range(&mut log, 0, 60, 1_000, 5);
    append_range(&mut log, 60, 120, 50_000, 5);
    let r = log.reader();
    let n = segs(&t.0).len();
    // Nothing is old enough yet.
    assert_eq!(log.retain(60_000, 100_000, -1).unwrap(), None);
    // The old half goes, as whole segments: oldest moves to a segment base at or below 60.
    let oldest = log.retain(60_000, 30_000, -1).unwrap().unwrap();
    assert!(oldest > 0 && oldest <= 60, "{oldest}");
    assert_eq!((r.oldest(), r.end(), log.latest()), (oldest, 120, 120));
    assert_eq!(segs(&t.0)[0], oldest);
    check_all(&r, oldest, 120);
    assert_eq!(r.read(0, 1, 100).unwrap_err().kind(), io::ErrorKind::NotFound);
    // By bytes: down to the limit, never the active segment.
    let before = segs(&t.0).len();
    assert!(before < n);
    let o2 = log.retain(60_000, u64::MAX, 3000).unwrap().unwrap();
    let left = segs(&t.0);
    assert!(left.len() <= 2 && o2 > oldest, "{left:?}");
    let o3 = log.retain(60_000, u64::MAX, 0).unwrap();
    assert_eq!(segs(&t.0), vec![*left.last().unwrap()]);
    assert!(o3.is_none_or(|o| o > o2));
    let active_oldest = r.oldest();
    check_all(&r, active_oldest, 120);
    assert_eq!(log.retain(60_000, u64::MAX, 0).unwrap(), None);
    // By time, the active segment too once all of it expired: empty, oldest = latest = 120.
    assert_eq!(log.retain(1_000_000, 10_000, -1).unwrap(), Some(120));
    assert_eq!((r.oldest(), r.end(), log.latest()), (120, 120, 120));
    assert_eq!(segs(&t.0), vec![120]);
    assert_eq!(log.retain(2_000_000, 10_000, -1).unwrap(), None);
    append_range(&mut log, 120, 125, 2_000_000, 5);
    check_all(&r, 120, 125);
    drop(log);
    let log = PartitionLog::open(&t.0, 2500).unwrap();
    assert_eq!((log.oldest(), log.latest()), (120, 125));
}

#[test]
fn reads_below_oldest_are_not_found() {
    let t = TempDir::new("tlog-race");
    let mut log = PartitionLog::open(&t.0, 2000).unwrap();
    append_range(&mut log, 0, 30, 1, 3);
    let r = log.reader();
    let first = r.read(0, 1, 10).unwrap();
    assert_eq!(first[0].offset, 0);
    log.retain(1_000_000, 1, -1).unwrap();
    let e = r.read(0, 1, 10).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    assert_eq!((r.oldest(), r.end()), (30, 30));
    assert!(r.read(30, 1, 10).unwrap().is_empty());
}

#[test]
fn a_failed_write_leaves_nothing() {
    let t = TempDir::new("tlog-fail");
    let mut log = PartitionLog::open(&t.0, 1 << 20).unwrap();
    append_range(&mut log, 0, 5, 1, 5);
    let before = std::fs::metadata(segment::seg_path(&t.0, 0)).unwrap().len();
    // Swap the active file for a read-only handle on it: the write fails with EBADF.
    log.active = Arc::new(std::fs::File::open(segment::seg_path(&t.0, 0)).unwrap());
    let r = log.append(&[msg(5, 1), msg(6, 1)]);
    assert_eq!(r, Err(StoreFail::Io));
    assert_eq!(log.latest(), 5);
    assert_eq!(std::fs::metadata(segment::seg_path(&t.0, 0)).unwrap().len(), before);
    drop(log);
    let mut log = PartitionLog::open(&t.0, 1 << 20).unwrap();
    assert_eq!(log.latest(), 5);
    append_range(&mut log, 5, 8, 1, 3);
    check_all(&log.reader(), 0, 8);
    // A failure after a roll removes the new segment and cuts the old one back.
    let before = std::fs::metadata(segment::seg_path(&t.0, 0)).unwrap().len();
    let mut log = PartitionLog::open(&t.0, before + 1500).unwrap();
    let many: Vec<_> = (8..30).map(|o| msg(o, 1)).collect();
    std::fs::remove_dir_all(&t.0).unwrap();
    assert_eq!(log.append(&many), Err(StoreFail::Io));
    assert_eq!((log.latest(), log.reader().end()), (8, 8));
    assert_eq!(log.active.metadata().unwrap().len(), before);
}

#[test]
fn readers_go_to_other_threads() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<PartitionReader>();
}

#[test]
fn full_disk_errors_are_507() {
    for (errno, fail) in [
        (libc::ENOSPC, StoreFail::Full),
        (libc::EFBIG, StoreFail::Full),
        (libc::EDQUOT, StoreFail::Full),
        (libc::EIO, StoreFail::Io),
        (libc::EBADF, StoreFail::Io),
    ] {
        assert_eq!(fail_of(&io::Error::from_raw_os_error(errno)), fail, "errno {errno}");
    }
}
