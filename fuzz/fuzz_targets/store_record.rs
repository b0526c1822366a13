//! The store's record codec and segment scan on arbitrary bytes.
//!
//! Input: `[mode, bytes...]`.
//! - Always: `record::decode` and `frame_len` on `bytes` (a decoded record re-encodes to exactly
//!   the bytes it consumed, and every truncation of it is `Ok(None)`), and a record built from
//!   the input's first bytes round-trips through `encode` and `decode`.
//! - mode bit 0: before scanning, every complete frame in `bytes` gets its CRC recomputed, so
//!   the fuzzer reaches the layout checks behind the checksum.
//! - mode bit 1: the file is `bytes` alone, header included (checks the header verdict);
//!   otherwise it is a valid 16-byte header followed by `bytes`.
//!
//! `segment::scan` must never fail on the body, stop at the first record `decode` refuses, and
//! report records that re-encode to the bytes between the header and `good_end`.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs::File;
use std::path::PathBuf;
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, Ordering};

use esub::store::record::{self, Corrupt, FRAME_HEAD, Kind, Record};
use esub::store::segment::{self, HEADER, MAGIC, VERSION};
use libfuzzer_sys::fuzz_target;

/// `scan` reads in 8 MiB chunks (`segment::SCAN_CHUNK`), so every scan allocates and frees
/// 8 MiB; fresh from the sanitizer's allocator that is an mmap and 2048 page faults, which
/// made this target run at ~250 inputs/s. The allocator keeps one such block for the next scan.
/// Only where the memory comes from changes: ASan still sees one malloc'd block.
const SCAN_CHUNK: usize = 8 << 20;

struct KeepScanChunk;

static KEPT: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());

fn is_chunk(layout: Layout) -> bool {
    layout.size() == SCAN_CHUNK && layout.align() <= 16
}

// SAFETY: every block comes from `System` with the same layout it is returned with; a kept
// block is handed out at most once (swap) and kept at most once (compare_exchange).
unsafe impl GlobalAlloc for KeepScanChunk {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_chunk(layout) {
            let p = KEPT.swap(ptr::null_mut(), Ordering::AcqRel);
            if !p.is_null() {
                return p;
            }
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if is_chunk(layout)
            && KEPT
                .compare_exchange(ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return;
        }
        unsafe { System.dealloc(p, layout) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if is_chunk(layout) || new_size == SCAN_CHUNK {
            // Through alloc and dealloc, so a kept block is neither resized nor lost.
            let new =
                unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
            if !new.is_null() {
                unsafe { ptr::copy_nonoverlapping(p, new, layout.size().min(new_size)) };
                unsafe { self.dealloc(p, layout) };
            }
            return new;
        }
        unsafe { System.realloc(p, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: KeepScanChunk = KeepScanChunk;

/// One scratch file per process (libFuzzer's fork mode runs jobs in processes of their own),
/// in RAM where the system offers it, unlinked as soon as it is open.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        let dir = if shm.is_dir() { shm } else { std::env::temp_dir() };
        dir.join(format!("esub-fuzz-segment-{}.log", std::process::id()))
    })
}

fn header() -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER as usize);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&[0; 4]);
    h
}

/// Checks one `decode` of the front of `input`; returns the record's length when it decoded.
fn check_decode(input: &[u8]) -> Option<usize> {
    let decoded = record::decode(input);
    let len = record::frame_len(input);
    match (&decoded, len) {
        (_, Ok(None)) => {
            assert!(input.len() < FRAME_HEAD, "frame_len waits on {} bytes", input.len());
            assert_eq!(decoded, Ok(None), "no head yet");
        }
        (_, Err(e)) => {
            assert_eq!(e, Corrupt::Length);
            assert_eq!(decoded, Err(Corrupt::Length), "frame_len refused the length");
        }
        (Ok(None), Ok(Some(total))) => {
            assert!(input.len() < total, "complete frame of {total} left undecoded")
        }
        (Err(e), Ok(Some(total))) => {
            assert!(input.len() >= total, "{e:?} on an incomplete frame");
            assert_ne!(*e, Corrupt::Length, "frame_len accepted the length");
        }
        (Ok(Some((rec, used))), Ok(Some(total))) => {
            assert_eq!(*used, total, "decode consumed {used}, frame_len says {total}");
            assert_eq!(rec.encoded_len(), *used, "encoded_len");
            let mut again = Vec::new();
            rec.encode(&mut again);
            assert_eq!(again, input[..*used], "re-encoding differs from the bytes consumed");
            // A record never completes early.
            for cut in 0..*used {
                assert_eq!(record::decode(&input[..cut]), Ok(None), "cut at {cut} of {used}");
            }
        }
    }
    match decoded {
        Ok(Some((_, used))) => Some(used),
        _ => None,
    }
}

/// A record made of the input: encoded, it decodes to itself; truncated, it waits.
fn check_round_trip(data: &[u8]) {
    let take = |at: usize, n: usize| data.get(at..).map_or(&[][..], |d| &d[..n.min(d.len())]);
    let num = |at: usize| {
        let mut b = [0u8; 8];
        let src = take(at, 8);
        b[..src.len()].copy_from_slice(src);
        u64::from_le_bytes(b)
    };
    let n = |at: usize| usize::from(data.get(at).copied().unwrap_or(0));
    let rec = Record {
        kind: if n(0) & 1 == 0 { Kind::Rep } else { Kind::Tombstone },
        id: num(1),
        time_ms: num(9),
        key: take(20, n(17)),
        token: take(20 + n(17), n(18)),
        body: take(20 + n(17) + n(18), n(19) * 7),
    };
    let mut enc = Vec::new();
    rec.encode(&mut enc);
    assert_eq!(enc.len(), rec.encoded_len());
    assert_eq!(record::frame_len(&enc), Ok(Some(enc.len())));
    assert_eq!(record::decode(&enc), Ok(Some((rec.clone(), enc.len()))), "round trip");
    for cut in 0..enc.len() {
        assert_eq!(record::decode(&enc[..cut]), Ok(None), "cut at {cut}");
    }
    // Bytes behind a record are the next record's business.
    enc.extend_from_slice(data);
    assert_eq!(record::decode(&enc), Ok(Some((rec.clone(), rec.encoded_len()))));
}

/// Recomputes the CRC of every complete frame, front to back, as far as lengths allow.
fn fix_crcs(body: &mut [u8]) {
    let mut at = 0;
    while let Ok(Some(total)) = record::frame_len(&body[at..]) {
        if body.len() - at < total {
            break;
        }
        let crc = crc32fast::hash(&body[at + FRAME_HEAD..at + total]);
        body[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        at += total;
    }
}

fn check_scan(file: &[u8]) {
    let path = scratch();
    std::fs::write(path, file).expect("write the scratch segment");
    let mut f = File::open(path).expect("open the scratch segment");
    // The open file is all `scan` needs: no scratch file outlives the run.
    std::fs::remove_file(path).expect("unlink the scratch segment");
    let mut seen: Vec<(Vec<u8>, u64, usize)> = Vec::new();
    let result = segment::scan(&mut f, |rec, offset, len| {
        let mut enc = Vec::new();
        rec.encode(&mut enc);
        assert_eq!(enc.len(), len, "the callback's frame length");
        seen.push((enc, offset, len));
    });
    let good_header = file.len() >= HEADER as usize
        && &file[..8] == MAGIC
        && file[8..12] == VERSION.to_le_bytes();
    let scanned = match result {
        Ok(s) => s,
        Err(e) => {
            assert!(!good_header, "scan failed past a good header: {e}");
            assert!(seen.is_empty(), "records before a header error");
            return;
        }
    };
    assert!(good_header, "scan accepted a bad header");
    assert_eq!(scanned.file_len, file.len() as u64, "file_len");
    assert!(scanned.good_end <= scanned.file_len, "{scanned:?}");
    assert!(scanned.good_end >= HEADER, "{scanned:?}");
    // The records, in order and back to back, re-encode to the bytes up to good_end.
    let mut at = HEADER;
    for (enc, offset, len) in &seen {
        assert_eq!(*offset, at, "records are back to back");
        let start = *offset as usize;
        assert_eq!(&file[start..start + len], enc.as_slice(), "record at {offset} re-encodes");
        at += *len as u64;
    }
    assert_eq!(at, scanned.good_end, "good_end is where the last record ends");
    // And scanning stopped where decoding does.
    let mut expect = Vec::new();
    let mut pos = HEADER as usize;
    while let Ok(Some((_, used))) = record::decode(&file[pos..]) {
        expect.push(pos as u64);
        pos += used;
    }
    assert_eq!(seen.iter().map(|s| s.1).collect::<Vec<_>>(), expect, "decode's records");
    assert_eq!(pos as u64, scanned.good_end, "scan stops where decode does");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    // Every record boundary `decode` finds in the bytes, decoded from there.
    let mut at = 0;
    while let Some(used) = check_decode(&bytes[at..]) {
        at += used;
    }
    check_decode(&bytes[at.min(bytes.len())..]);
    check_round_trip(bytes);

    let mut body = bytes.to_vec();
    if mode & 1 != 0 {
        fix_crcs(&mut body);
        let mut at = 0;
        while let Some(used) = check_decode(&body[at..]) {
            at += used;
        }
    }
    if mode & 2 != 0 {
        check_scan(&body);
    } else {
        let file = [header(), body].concat();
        check_scan(&file);
    }
});
