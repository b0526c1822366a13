//! Segment files: `<20-digit sequence>.log` under the data dir, each starting with a 16-byte
//! header (magic, format version), then framed records. Scanning reads a whole segment in large
//! chunks, hands every record to a callback, and reports where the last good record ends.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::record::{self, Record};

pub const MAGIC: &[u8; 8] = b"ESUBSEG\0";
pub const VERSION: u32 = 1;
pub const HEADER: u64 = 16;
/// Scanning reads this much at a time: large enough to stream at disk speed.
const SCAN_CHUNK: usize = 8 << 20;

pub fn path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.log"))
}

/// The sequence numbers of the segments in `dir`, ascending. Other files are left alone.
pub fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) =
            name.strip_suffix(".log").filter(|s| s.len() == 20).and_then(|s| s.parse().ok())
        {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Creates a new segment with its header, synced along with its directory entry.
pub fn create(dir: &Path, seq: u64) -> io::Result<File> {
    let mut f = OpenOptions::new().create_new(true).read(true).append(true).open(path(dir, seq))?;
    let mut head = Vec::with_capacity(HEADER as usize);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&[0; 4]);
    f.write_all(&head)?;
    f.sync_all()?;
    File::open(dir)?.sync_all()?;
    Ok(f)
}

/// How a scan ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Scanned {
    /// File offset just past the last good record.
    pub good_end: u64,
    /// The file's length: more than `good_end` when the tail is torn or corrupt.
    pub file_len: u64,
}

/// Reads every record of a segment in order, calling `each(record, offset, frame_len)`.
/// Stops at the first incomplete or corrupt record. A bad header is an error.
pub fn scan(file: &mut File, mut each: impl FnMut(&Record, u64, usize)) -> io::Result<Scanned> {
    let file_len = file.metadata()?.len();
    let mut head = [0u8; HEADER as usize];
    file.read_exact(&mut head)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "short segment header"))?;
    if &head[..8] != MAGIC || u32::from_le_bytes([head[8], head[9], head[10], head[11]]) != VERSION
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not an esub segment (magic or version)",
        ));
    }
    let mut buf: Vec<u8> = Vec::with_capacity(SCAN_CHUNK);
    let mut buf_offset = HEADER; // file offset of buf[0]
    let mut pos = 0usize; // next record in buf
    let mut eof = false;
    loop {
        match record::decode(&buf[pos..]) {
            Ok(Some((rec, used))) => {
                each(&rec, buf_offset + pos as u64, used);
                pos += used;
                continue;
            }
            Ok(None) if !eof => {}
            Ok(None) | Err(_) => {
                return Ok(Scanned { good_end: buf_offset + pos as u64, file_len });
            }
        }
        // Need more: keep the partial record, read the next chunk (more if one record is larger).
        buf.drain(..pos);
        buf_offset += pos as u64;
        pos = 0;
        let left = file_len.saturating_sub(buf_offset + buf.len() as u64);
        let want = match next_read(&buf, left) {
            NextRead::Bytes(want) => want,
            NextRead::Eof => {
                eof = true;
                continue;
            }
            NextRead::TornTail => return Ok(Scanned { good_end: buf_offset, file_len }),
        };
        let start = buf.len();
        buf.resize(start + want, 0);
        let mut got = 0;
        while got < want {
            match file.read(&mut buf[start + got..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(start + got);
    }
}

/// What a scan reads next, given the partial record `buf` and the file bytes `left` past it.
#[derive(Debug, PartialEq, Eq)]
enum NextRead {
    /// Read this many bytes: a chunk, or the rest of one larger record; never past the file end.
    Bytes(usize),
    /// Nothing is left to read.
    Eof,
    /// The record announces more bytes than the file holds: a torn tail, nothing to read.
    TornTail,
}

/// Sizes the next read. The announced length is only trusted up to the file's end, so a torn
/// header never makes the buffer grow towards `MAX_PAYLOAD`.
fn next_read(buf: &[u8], left: u64) -> NextRead {
    let want = match record::frame_len(buf) {
        Ok(Some(total)) if total > buf.len() => {
            let missing = total - buf.len();
            if missing as u64 > left {
                return NextRead::TornTail;
            }
            missing.max(SCAN_CHUNK)
        }
        _ => SCAN_CHUNK,
    };
    match usize::try_from(left).map_or(want, |left| want.min(left)) {
        0 => NextRead::Eof,
        n => NextRead::Bytes(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::Kind;

    #[test]
    fn scan_stops_at_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("esub-seg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut f = create(&dir, 1).unwrap();
        let mut bytes = Vec::new();
        for i in 0..100u64 {
            let body = vec![i as u8; (i * 997 % 5000) as usize];
            Record { kind: Kind::Rep, id: i, time_ms: i, key: b"k", token: b"", body: &body }
                .encode(&mut bytes);
        }
        let whole = bytes.len();
        bytes.extend_from_slice(&[9, 0, 0]); // a torn record
        f.write_all(&bytes).unwrap();
        let mut f = File::open(path(&dir, 1)).unwrap();
        let mut ids = Vec::new();
        let s = scan(&mut f, |r, _, _| ids.push(r.id)).unwrap();
        assert_eq!(ids, (0..100).collect::<Vec<_>>());
        assert_eq!(
            s,
            Scanned { good_end: HEADER + whole as u64, file_len: HEADER + whole as u64 + 3 }
        );
        assert_eq!(list(&dir).unwrap(), vec![1]);
        std::fs::write(path(&dir, 2), b"garbage-header!!").unwrap();
        assert!(scan(&mut File::open(path(&dir, 2)).unwrap(), |_, _, _| {}).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A record head announcing `len` payload bytes.
    fn head(len: u32) -> Vec<u8> {
        let mut h = len.to_le_bytes().to_vec();
        h.extend_from_slice(&[0; 4]);
        h
    }

    #[test]
    fn next_read_never_passes_the_file_end() {
        let big = (record::MAX_PAYLOAD - 1) as u32;
        let rows: &[(&str, Vec<u8>, u64, NextRead)] = &[
            ("empty, plenty left", vec![], 1 << 40, NextRead::Bytes(SCAN_CHUNK)),
            ("empty, a little left", vec![], 10, NextRead::Bytes(10)),
            ("empty, nothing left", vec![], 0, NextRead::Eof),
            ("partial head", vec![1, 0], 3, NextRead::Bytes(3)),
            ("huge record, torn", head(big), SCAN_CHUNK as u64, NextRead::TornTail),
            ("huge record, whole", head(big), big as u64, NextRead::Bytes(big as usize)),
            ("small record, rest of file", head(100), 200, NextRead::Bytes(200)),
            ("small record, exactly", head(100), 100, NextRead::Bytes(100)),
            ("small record, one byte short", head(100), 99, NextRead::TornTail),
            ("corrupt length", head(u32::MAX), 7, NextRead::Bytes(7)),
        ];
        for (name, buf, left, expect) in rows {
            assert_eq!(&next_read(buf, *left), expect, "{name}");
        }
    }

    #[test]
    fn scan_stops_at_a_huge_torn_head_across_the_chunk_boundary() {
        let dir = std::env::temp_dir().join(format!("esub-seg-huge-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut f = create(&dir, 1).unwrap();
        let mut bytes = Vec::new();
        // One record filling the first chunk to 4 bytes short of its end.
        let empty = Record { kind: Kind::Rep, id: 1, time_ms: 1, key: b"k", token: b"", body: b"" };
        let body = vec![7u8; SCAN_CHUNK - 4 - empty.encoded_len()];
        Record { body: &body, ..empty }.encode(&mut bytes);
        assert_eq!(bytes.len(), SCAN_CHUNK - 4);
        let whole = bytes.len();
        // A head announcing ~1 GiB straddles the boundary; the file ends 100 bytes later.
        bytes.extend_from_slice(&head((record::MAX_PAYLOAD - 1) as u32));
        bytes.extend_from_slice(&[0; 100]);
        f.write_all(&bytes).unwrap();
        let mut f = File::open(path(&dir, 1)).unwrap();
        let mut ids = Vec::new();
        let s = scan(&mut f, |r, _, _| ids.push(r.id)).unwrap();
        assert_eq!(ids, vec![1]);
        assert_eq!(
            s,
            Scanned { good_end: HEADER + whole as u64, file_len: HEADER + bytes.len() as u64 }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
