//! `Journal`: with `ESUB_FSYNC=always` every group commit's appends are also written to this one
//! file, and it is the only file fsynced before the answers: one fdatasync per group however
//! many partitions the group touched (each partition's own fsync cost about as much as the
//! whole group's here, `bench/fsync_groups.py`). The partition files are synced at a checkpoint
//! (every `CHECKPOINT_BYTES` of journal, and at shutdown), after which the journal starts over.
//! At start-up whatever a partition lacks of the journal (its tail lost with the page cache) is
//! appended again from it before anyone reads.
//!
//! The file is written over, never appended to: its space is zeroed ahead of the entries in
//! `STEP`s and kept across checkpoints, so a group's fdatasync flushes data blocks only, not
//! the file's size and extents (about 40 % cheaper on this disk, `bench/fsync_groups.py`). A
//! checkpoint therefore does not empty the file: it bumps the generation in the header, and
//! entries of an earlier generation (or zeros) end the journal.
//!
//! Layout: a `HEAD`-byte header block (one frame: `MAGIC`, generation u64), then entries from
//! `HEAD` on, each a header frame (`'J'`, generation u64, partition u32, count u32, topic name)
//! followed by `count` record frames as the partition logs write them. A torn or corrupt entry
//! ends the journal: it was never answered.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Message;
use super::log::record::{FRAME_HEAD, Fields, begin_frame, decode_record, end_frame, split_frame};
use super::log::{Corrupt, Record};

/// Journal bytes past which the store thread checkpoints.
pub const CHECKPOINT_BYTES: u64 = 64 << 20;
/// Zeroed space is added in steps of this many bytes.
pub const STEP: u64 = 4 << 20;
/// A file grown past this (by a group larger than a checkpoint) is cut back to it at the next
/// checkpoint; below it the space is kept.
pub const KEEP_BYTES: u64 = CHECKPOINT_BYTES + 2 * STEP;
/// The header block: entries start here, so rewriting the header never touches their pages.
pub const HEAD: u64 = 4096;
const NAME: &str = "always.journal";
const MAGIC: &[u8; 8] = b"ESUBJRN1";
const TAG: u8 = b'J';
/// Entry header payload besides the topic name: tag, generation, partition, count.
const ENTRY_FIXED: usize = 1 + 8 + 4 + 4;

pub struct Journal {
    file: File,
    generation: u64,
    /// Where the next group goes.
    len: u64,
    /// Bytes of the file known written (zeros or entries).
    cap: u64,
    buf: Vec<u8>,
}

/// One entry read back: topic, partition, its messages in offset order.
pub type Entry = (String, u32, Vec<Message>);

/// What `parse` found in the entry area.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// The current generation's whole entries, in order.
    pub entries: Vec<Entry>,
    /// Bytes they take from the start of the area.
    pub used: usize,
    /// Whether what follows them is neither zeros, nor the end, nor an earlier generation's
    /// whole entry: a group that was being written (never answered) or damage.
    pub torn: bool,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(NAME)
}

impl Journal {
    /// Opens (creating) `dir/always.journal` and reads it: the journal, positioned after its
    /// current entries, and what `parse` found. A file without a valid header (new, or a
    /// header torn by a crash during a checkpoint, when everything it covered was synced) is
    /// started over at generation 1.
    pub fn open(dir: &Path) -> io::Result<(Journal, Parsed)> {
        let mut file =
            File::options().read(true).write(true).create(true).truncate(false).open(path(dir))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut j =
            Journal { file, generation: 0, len: HEAD, cap: bytes.len() as u64, buf: Vec::new() };
        let Some((generation, parsed)) = scan(&bytes) else {
            j.file.set_len(0)?;
            j.cap = 0;
            j.reset()?;
            return Ok((j, Parsed::default()));
        };
        j.generation = generation;
        j.len = HEAD + parsed.used as u64;
        Ok((j, parsed))
    }

    /// Adds one partition's appended messages to the group being built.
    pub fn add(&mut self, topic: &str, partition: u32, msgs: &[Arc<Message>]) {
        encode_entry(&mut self.buf, self.generation, topic, partition, msgs);
    }

    /// Whether `add` was called since the last `commit`.
    pub fn pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Writes the group and fdatasyncs the journal. On an error the group's place is zeroed
    /// (as far as the disk lets) and the group kept, to be tried again or `discard`ed.
    pub fn commit(&mut self) -> io::Result<()> {
        let end = self.len + self.buf.len() as u64;
        let r = self
            .grow(end)
            .and_then(|()| self.file.write_all_at(&self.buf, self.len))
            .and_then(|()| self.file.sync_data());
        match r {
            Ok(()) => {
                self.len = end;
                self.buf.clear();
                Ok(())
            }
            Err(e) => {
                let _ = self.zero(self.len, end.min(self.cap));
                Err(e)
            }
        }
    }

    /// Forgets the group being built.
    pub fn discard(&mut self) {
        self.buf.clear();
    }

    pub fn needs_checkpoint(&self) -> bool {
        self.len >= CHECKPOINT_BYTES
    }

    /// Starts the journal over once every partition it covers is synced: a new generation in
    /// the header, synced; the space stays (cut back to `KEEP_BYTES` when a huge group grew it).
    pub fn reset(&mut self) -> io::Result<()> {
        if self.cap > KEEP_BYTES {
            self.file.set_len(KEEP_BYTES)?;
            self.cap = KEEP_BYTES;
        }
        self.grow(STEP)?;
        let next = self.generation + 1;
        let mut head = Vec::with_capacity(FRAME_HEAD + 16);
        let start = begin_frame(&mut head);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&next.to_le_bytes());
        end_frame(&mut head, start);
        self.file.write_all_at(&head, 0)?;
        self.file.sync_data()?;
        self.generation = next;
        self.len = HEAD;
        Ok(())
    }

    /// Makes sure the file is written (zeros) up to at least `end`, in `STEP`s.
    fn grow(&mut self, end: u64) -> io::Result<()> {
        if end <= self.cap {
            return Ok(());
        }
        let to = end.div_ceil(STEP) * STEP;
        self.zero(self.cap, to)?;
        self.cap = to;
        Ok(())
    }

    fn zero(&self, from: u64, to: u64) -> io::Result<()> {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let mut at = from;
        while at < to {
            let n = (to - at).min(ZEROS.len() as u64) as usize;
            self.file.write_all_at(&ZEROS[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }
}

/// Appends one entry (header frame and record frames) to `out`.
pub fn encode_entry(
    out: &mut Vec<u8>,
    generation: u64,
    topic: &str,
    partition: u32,
    msgs: &[Arc<Message>],
) {
    let start = begin_frame(out);
    out.push(TAG);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&partition.to_le_bytes());
    out.extend_from_slice(&(msgs.len() as u32).to_le_bytes());
    out.extend_from_slice(topic.as_bytes());
    end_frame(out, start);
    for m in msgs {
        Record::of(m).encode(out);
    }
}

/// Reads `dir/always.journal` when there is one: its generation and what `parse` finds
/// (generation 0 and nothing without a valid header).
pub fn read(dir: &Path) -> io::Result<Option<(u64, Parsed)>> {
    let mut bytes = Vec::new();
    match File::open(path(dir)) {
        Ok(mut f) => f.read_to_end(&mut bytes)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(scan(&bytes).unwrap_or_default()))
}

/// A whole journal file's generation and current entries; `None` without a valid header.
fn scan(bytes: &[u8]) -> Option<(u64, Parsed)> {
    let generation = header(bytes)?;
    Some((generation, parse(&bytes[HEAD as usize..], generation)))
}

/// The generation of a valid header block at the front of `bytes`.
pub fn header(bytes: &[u8]) -> Option<u64> {
    let block = bytes.get(..HEAD as usize)?;
    let (payload, _) = split_frame(block, MAGIC.len() + 8).ok()??;
    let mut f = Fields(payload);
    (f.bytes(MAGIC.len()).ok()? == MAGIC).then_some(())?;
    f.u64().ok()
}

/// The entries of `generation` at the front of the entry area `bytes`.
pub fn parse(bytes: &[u8], generation: u64) -> Parsed {
    let mut entries = Vec::new();
    let mut at = 0;
    let torn = loop {
        let rest = &bytes[at..];
        match entry(rest) {
            Ok(Some(((g, e), used))) if g == generation => {
                entries.push(e);
                at += used;
            }
            Ok(Some(_)) => break false,
            Ok(None) | Err(_) => break !rest.iter().take(FRAME_HEAD).all(|&b| b == 0),
        }
    };
    Parsed { entries, used: at, torn }
}

/// The entry at the front of `input` (with its generation) and its length; `Ok(None)` when
/// it is incomplete.
#[allow(clippy::type_complexity)]
fn entry(input: &[u8]) -> Result<Option<((u64, Entry), usize)>, Corrupt> {
    let Some((head, mut used)) = split_frame(input, ENTRY_FIXED)? else { return Ok(None) };
    let mut f = Fields(head);
    if f.u8()? != TAG {
        return Err(Corrupt::Layout);
    }
    let generation = f.u64()?;
    let partition = f.u32()?;
    let count = f.u32()? as usize;
    let topic = String::from_utf8(f.0.to_vec()).map_err(|_| Corrupt::Layout)?;
    let mut msgs = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let Some((r, n)) = decode_record(&input[used..])? else { return Ok(None) };
        msgs.push(r.to_message());
        used += n;
    }
    Ok(Some(((generation, (topic, partition, msgs)), used)))
}

#[cfg(test)]
mod tests;
