//! A topic partition's segment on arbitrary bytes: `log::decode_record` and `segment::scan_slice`.
//!
//! Input: `[mode, chunk, bytes...]`.
//! - Always: `decode_record` at every record boundary it finds (a decoded record re-encodes to
//!   exactly the bytes it consumed, every truncation of it is `Ok(None)`, `record_len` agrees),
//!   and a record built from the input's first bytes round-trips.
//! - mode bit 2: complete frames get consecutive offsets from the base (0 or, with bit 3, the
//!   first frame's own offset), so the scan's offset check passes; bit 0: their CRCs recomputed.
//! - mode bit 1: the segment is `bytes` alone (header included); otherwise a valid header first.
//!
//! `scan_slice` is run with reads of `chunk + 1` bytes and in one piece: both give the same
//! verdict, which matches a plain `decode_record` loop; its sparse index points at record
//! starts, first at the header's end, entries at least `INDEX_EVERY` apart; its `.idx`
//! encoding round-trips. No allocation may exceed 1 MiB: inputs are at most 8 KiB, so a bigger
//! one would come from a length read off the input and not checked against it.
#![no_main]

use esub::topics::log::record::{self, FRAME_HEAD, Record, decode_record};
use esub::topics::log::segment::{self, HEADER, INDEX_EVERY, Scanned};
use libfuzzer_sys::fuzz_target;

#[path = "shared/bounded.rs"]
mod bounded;

/// Checks one `decode_record` of the front of `input`; the record's length when it decoded.
fn check_decode(input: &[u8]) -> Option<usize> {
    let decoded = decode_record(input);
    match (&decoded, record::record_len(input)) {
        (_, Ok(None)) => {
            assert!(input.len() < FRAME_HEAD);
            assert_eq!(decoded, Ok(None));
        }
        (_, Err(e)) => assert_eq!(decoded, Err(e)),
        (Ok(None), Ok(Some(total))) => assert!(input.len() < total, "complete frame undecoded"),
        (Err(_), Ok(Some(total))) => assert!(input.len() >= total, "error on an incomplete frame"),
        (Ok(Some((rec, used))), Ok(Some(total))) => {
            assert_eq!(*used, total);
            assert_eq!(rec.encoded_len(), *used);
            assert!(rec.fits());
            let mut again = Vec::new();
            rec.encode(&mut again);
            assert_eq!(again, input[..*used], "re-encoding differs");
            for cut in 0..*used {
                assert_eq!(decode_record(&input[..cut]), Ok(None), "cut at {cut} of {used}");
            }
        }
    }
    decoded.ok().flatten().map(|(_, used)| used)
}

fn check_round_trip(data: &[u8]) {
    let take = |at: usize, n: usize| data.get(at..).map_or(&[][..], |d| &d[..n.min(d.len())]);
    let num = |at: usize| {
        let mut b = [0u8; 8];
        let src = take(at, 8);
        b[..src.len()].copy_from_slice(src);
        u64::from_le_bytes(b)
    };
    let n = |at: usize| usize::from(data.get(at).copied().unwrap_or(0));
    let (k, t, m) = (n(16), n(17), n(18));
    let rec = Record {
        offset: num(0) as i64,
        time_ms: num(8),
        key: take(20, k),
        tag: take(20 + k, t),
        msg_id: take(20 + k + t, m),
        payload: take(20 + k + t + m, n(19) * 7),
    };
    let mut enc = Vec::new();
    rec.encode(&mut enc);
    assert_eq!(enc.len(), rec.encoded_len());
    assert_eq!(decode_record(&enc), Ok(Some((rec.clone(), enc.len()))), "round trip");
    let msg = rec.to_message();
    assert_eq!(Record::of(&msg), rec);
    enc.extend_from_slice(data);
    assert_eq!(decode_record(&enc), Ok(Some((rec.clone(), rec.encoded_len()))));
}

/// Renumbers (bit 2) and re-checksums (bit 0) every complete frame, front to back.
fn fix_frames(body: &mut [u8], mode: u8) {
    let mut at = 0;
    let mut next: Option<i64> = if mode & 8 == 0 { Some(0) } else { None };
    while let Ok(Some(total)) = record::record_len(&body[at..]) {
        if body.len() - at < total {
            break;
        }
        if mode & 4 != 0 {
            let p = at + FRAME_HEAD;
            let own = i64::from_le_bytes(body[p..p + 8].try_into().unwrap());
            let o = *next.get_or_insert(own);
            body[p..p + 8].copy_from_slice(&o.to_le_bytes());
            next = Some(o.wrapping_add(1));
        }
        if mode & 1 != 0 {
            let crc = crc32fast::hash(&body[at + FRAME_HEAD..at + total]);
            body[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        }
        at += total;
    }
}

fn check_scan(file: &[u8], chunk: usize) {
    // Magic and version; the last four header bytes are reserved.
    let good_header = file.len() >= HEADER as usize && file[..12] == segment::header()[..12];
    // The base: the first record's own offset when there is one (else 0).
    let base = file
        .get(HEADER as usize + FRAME_HEAD..HEADER as usize + FRAME_HEAD + 8)
        .map_or(0, |b| i64::from_le_bytes(b.try_into().unwrap()));
    let mut seen = Vec::new();
    let split = segment::scan_slice(file, base, chunk, |r, pos, len| {
        let mut enc = Vec::new();
        r.encode(&mut enc);
        assert_eq!(enc.len(), len);
        seen.push((r.offset, pos, len));
    });
    let mut seen_whole = Vec::new();
    let whole = segment::scan_slice(file, base, usize::MAX / 2, |r, pos, len| {
        seen_whole.push((r.offset, pos, len))
    });
    assert_eq!(seen, seen_whole, "records differ by read size");
    let s: Scanned = match (split, whole) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "verdict differs by read size");
            a
        }
        (Err(_), Err(_)) => {
            assert!(file.len() >= HEADER as usize && !good_header, "a good header refused");
            assert!(seen.is_empty());
            return;
        }
        (a, b) => panic!("one read size failed: {a:?} / {b:?}"),
    };
    assert_eq!(s.file_len, file.len() as u64);
    if file.len() < HEADER as usize {
        assert_eq!((s.good_end, s.end), (0, base));
        assert!(seen.is_empty());
        return;
    }
    assert!(good_header, "a bad header accepted");
    // A plain decode loop stops at the same record.
    let mut pos = HEADER as usize;
    let mut next = base;
    let mut newest = 0;
    let mut i = 0;
    while let Ok(Some((r, used))) = decode_record(&file[pos..]) {
        if r.offset != next || next == i64::MAX {
            break;
        }
        assert_eq!(seen[i], (r.offset, pos as u64, used));
        newest = newest.max(r.time_ms);
        next += 1;
        pos += used;
        i += 1;
    }
    assert_eq!(i, seen.len());
    assert_eq!((s.good_end, s.end, s.newest_ms), (pos as u64, next, newest));
    assert!(s.good_end <= s.file_len);
    // The sparse index: record starts, the first at the header's end, INDEX_EVERY apart.
    if let Some(first) = s.index.first() {
        assert_eq!(*first, (base, HEADER));
    } else {
        assert!(seen.is_empty());
    }
    for w in s.index.windows(2) {
        assert!(w[1].1 - w[0].1 >= INDEX_EVERY && w[1].0 > w[0].0, "{:?}", s.index);
    }
    for (o, p) in &s.index {
        assert!(seen.iter().any(|r| r.0 == *o && r.1 == *p), "entry {o}@{p} is no record");
    }
    let idx = segment::encode_idx(&s, base);
    let back = Scanned { file_len: s.good_end, ..s.clone() };
    assert_eq!(segment::decode_idx(&idx, base, s.good_end), Some(back));
    assert_eq!(segment::decode_idx(&idx[..idx.len() - 1], base, s.good_end), None);
}

fuzz_target!(|data: &[u8]| {
    let [mode, chunk, bytes @ ..] = data else {
        return;
    };
    let mut at = 0;
    while let Some(used) = check_decode(&bytes[at..]) {
        at += used;
    }
    check_round_trip(bytes);
    let mut body = bytes.to_vec();
    fix_frames(&mut body, *mode);
    let mut at = 0;
    while let Some(used) = check_decode(&body[at..]) {
        at += used;
    }
    let chunk = usize::from(*chunk) + 1;
    if mode & 2 != 0 {
        check_scan(&body, chunk);
    } else {
        check_scan(&[&segment::header()[..], &body].concat(), chunk);
    }
});
