//! A partition's segment files: `<base offset, 20 digits>.seg`, a 16-byte header (magic,
//! version) then message records with consecutive offsets from the base; a sealed segment's
//! sparse index beside it as `<base>.idx`. Scanning checks frames and offsets and reports where
//! the last good record ends; every read it makes is bounded by the file's length.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{self, Record};

pub const MAGIC: &[u8; 8] = b"ESUBTSG\0";
pub const VERSION: u32 = 1;
pub const HEADER: u64 = 16;
/// A sparse index entry every this many bytes of log: a fetch then reads at most this much
/// before the first record it wants, in the same read as the records themselves.
pub const INDEX_EVERY: u64 = 4096;
/// Scanning reads this much at a time (less near the file's end).
const SCAN_CHUNK: usize = 8 << 20;
const IDX_MAGIC: &[u8; 8] = b"ESUBTIX\0";

pub fn header() -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h
}

pub fn seg_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

pub fn idx_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.idx"))
}

/// The base offsets of the segments in `dir`, ascending. Other files are left alone.
pub fn list(dir: &Path) -> io::Result<Vec<i64>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = name
            .strip_suffix(".seg")
            .filter(|s| s.len() == 20)
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|b| *b >= 0)
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Creates a segment holding only its header, synced along with its directory entry.
pub fn create(dir: &Path, base: i64) -> io::Result<File> {
    let path = seg_path(dir, base);
    // A file left by a roll that crashed before its header was synced holds no record.
    let mut f = OpenOptions::new().create(true).read(true).append(true).open(path)?;
    f.set_len(0)?;
    f.write_all(&header())?;
    f.sync_all()?;
    File::open(dir)?.sync_all()?;
    Ok(f)
}

/// Where a sparse index wants an entry: at a segment's first record, then at the first record
/// at least `INDEX_EVERY` bytes past the previous entry.
pub fn wants_entry(last_entry_pos: Option<u64>, pos: u64) -> bool {
    last_entry_pos.is_none_or(|p| pos - p >= INDEX_EVERY)
}

/// What a scan learned about a segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scanned {
    /// Byte just past the last good record.
    pub good_end: u64,
    /// The file's length: more than `good_end` when the tail is torn or corrupt.
    pub file_len: u64,
    /// Offset after the last good record (the base when there is none).
    pub end: i64,
    pub newest_ms: u64,
    /// Sparse index: (offset, file position).
    pub index: Vec<(i64, u64)>,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Checks the header, then reads every record in order, calling `each(record, position,
/// frame_len)`. Stops at the first incomplete or corrupt record, or one whose offset is not the
/// next (`base` first). `read_at` fills a buffer from a file position; `len` is the file's
/// length. A bad header is an error; a short one (a roll cut before its header) is no record.
pub fn scan_with(
    len: u64,
    mut read_at: impl FnMut(&mut [u8], u64) -> io::Result<()>,
    base: i64,
    chunk: usize,
    mut each: impl FnMut(&Record, u64, usize),
) -> io::Result<Scanned> {
    let mut s = Scanned { good_end: HEADER, file_len: len, end: base, ..Scanned::default() };
    if len < HEADER {
        s.good_end = 0;
        return Ok(s);
    }
    let mut head = [0u8; HEADER as usize];
    read_at(&mut head, 0)?;
    if head[..8] != MAGIC[..] || head[8..12] != VERSION.to_le_bytes() {
        return Err(bad("not an esub topic segment (magic or version)"));
    }
    let chunk = chunk.max(record::FRAME_HEAD);
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_pos = HEADER; // file position of buf[0]
    let mut at = 0usize;
    loop {
        match record::decode_record(&buf[at..]) {
            // (The last offset there is ends a segment: nothing can follow it.)
            Ok(Some((r, used))) if r.offset == s.end && s.end < i64::MAX => {
                let pos = buf_pos + at as u64;
                if wants_entry(s.index.last().map(|e| e.1), pos) {
                    s.index.push((r.offset, pos));
                }
                each(&r, pos, used);
                s.end += 1;
                s.newest_ms = s.newest_ms.max(r.time_ms);
                at += used;
                s.good_end = buf_pos + at as u64;
                continue;
            }
            Ok(Some(_)) | Err(_) => return Ok(s),
            Ok(None) => {}
        }
        // Need more: keep the partial record, read what the file still holds of it (or a chunk).
        buf.drain(..at);
        buf_pos += at as u64;
        at = 0;
        let left = len - (buf_pos + buf.len() as u64);
        if left == 0 {
            return Ok(s);
        }
        let want = match record::record_len(&buf) {
            Ok(Some(total)) => (total - buf.len()).max(chunk),
            Ok(None) => chunk,
            Err(_) => return Ok(s),
        };
        let want = want.min(left as usize);
        let start = buf.len();
        buf.resize(start + want, 0);
        read_at(&mut buf[start..], buf_pos + start as u64)?;
    }
}

/// `scan_with` over a file.
pub fn scan(file: &File, base: i64, each: impl FnMut(&Record, u64, usize)) -> io::Result<Scanned> {
    let len = file.metadata()?.len();
    scan_with(len, |b, pos| file.read_exact_at(b, pos), base, SCAN_CHUNK, each)
}

/// `scan_with` over bytes, read `chunk` bytes at a time (for tests and the fuzz target).
pub fn scan_slice(
    bytes: &[u8],
    base: i64,
    chunk: usize,
    each: impl FnMut(&Record, u64, usize),
) -> io::Result<Scanned> {
    let read_at = |b: &mut [u8], pos: u64| {
        let src = usize::try_from(pos).ok().and_then(|p| bytes.get(p..p + b.len()));
        b.copy_from_slice(src.ok_or_else(|| bad("read past the end"))?);
        Ok(())
    };
    scan_with(bytes.len() as u64, read_at, base, chunk, each)
}

/// A sealed segment's summary as its `.idx` file keeps it: magic, base, end, data length,
/// newest time, entry count, entries, then a CRC32 of all before it.
pub fn encode_idx(s: &Scanned, base: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + s.index.len() * 16);
    out.extend_from_slice(IDX_MAGIC);
    out.extend_from_slice(&base.to_le_bytes());
    out.extend_from_slice(&s.end.to_le_bytes());
    out.extend_from_slice(&s.good_end.to_le_bytes());
    out.extend_from_slice(&s.newest_ms.to_le_bytes());
    out.extend_from_slice(&(s.index.len() as u32).to_le_bytes());
    for (o, p) in &s.index {
        out.extend_from_slice(&o.to_le_bytes());
        out.extend_from_slice(&p.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads an `.idx` back; `None` when it is damaged or does not describe a segment of
/// `base` that is `seg_len` bytes long (the segment is then scanned instead).
pub fn decode_idx(b: &[u8], base: i64, seg_len: u64) -> Option<Scanned> {
    let (body, crc) = b.split_at_checked(b.len().checked_sub(4)?)?;
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    let mut f = record::Fields(body);
    if f.bytes(8).ok()? != IDX_MAGIC || f.u64().ok()? as i64 != base {
        return None;
    }
    let end = f.u64().ok()? as i64;
    let good_end = f.u64().ok()?;
    let newest_ms = f.u64().ok()?;
    let n = f.u32().ok()? as usize;
    if good_end != seg_len || end < base || f.0.len() != n.checked_mul(16)? {
        return None;
    }
    let mut index = Vec::with_capacity(n);
    for _ in 0..n {
        let entry = (f.u64().ok()? as i64, f.u64().ok()?);
        if entry.0 < base || entry.0 >= end || entry.1 < HEADER || entry.1 >= seg_len {
            return None;
        }
        index.push(entry);
    }
    Some(Scanned { good_end, file_len: seg_len, end, newest_ms, index })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(n: i64, base: i64) -> Vec<u8> {
        let mut v = header().to_vec();
        for i in 0..n {
            let body = vec![i as u8; (i * 997 % 3000) as usize];
            let r = Record {
                offset: base + i,
                time_ms: 1000 + i as u64,
                key: b"k",
                tag: b"",
                msg_id: b"",
                payload: &body,
            };
            r.encode(&mut v);
        }
        v
    }

    #[test]
    fn scan_in_any_chunk_size_and_cut_torn_tails() {
        let whole = segment(50, 7);
        for chunk in [1, 9, 100, 4096, 1 << 20] {
            let mut seen = Vec::new();
            let s = scan_slice(&whole, 7, chunk, |r, _, _| seen.push(r.offset)).unwrap();
            assert_eq!(seen, (7..57).collect::<Vec<_>>(), "chunk {chunk}");
            assert_eq!((s.good_end, s.end, s.newest_ms), (whole.len() as u64, 57, 1049));
            assert!(s.index.len() > 5 && s.index[0] == (7, HEADER), "{:?}", s.index);
        }
        let mut torn = whole.clone();
        torn.extend_from_slice(&[200, 0, 0, 0, 1, 2]);
        let s = scan_slice(&torn, 7, 64, |_, _, _| {}).unwrap();
        assert_eq!((s.good_end, s.file_len, s.end), (whole.len() as u64, torn.len() as u64, 57));
        // An offset out of sequence ends the good part.
        let s = scan_slice(&whole, 8, 64, |_, _, _| {}).unwrap();
        assert_eq!((s.good_end, s.end), (HEADER, 8));
        assert!(scan_slice(b"ESUBSEG\0\x01\0\0\0\0\0\0\0", 0, 64, |_, _, _| {}).is_err());
        assert_eq!(scan_slice(b"ESUB", 0, 64, |_, _, _| {}).unwrap().good_end, 0);
    }

    #[test]
    fn idx_round_trip_and_rejects() {
        let whole = segment(30, 100);
        let s = scan_slice(&whole, 100, 1 << 20, |_, _, _| {}).unwrap();
        let b = encode_idx(&s, 100);
        assert_eq!(decode_idx(&b, 100, s.good_end), Some(s.clone()));
        assert_eq!(decode_idx(&b, 101, s.good_end), None);
        assert_eq!(decode_idx(&b, 100, s.good_end + 1), None);
        for cut in 0..b.len() {
            assert_eq!(decode_idx(&b[..cut], 100, s.good_end), None);
        }
        let mut flipped = b.clone();
        flipped[20] ^= 1;
        assert_eq!(decode_idx(&flipped, 100, s.good_end), None);
    }
}
