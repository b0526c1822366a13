//! `Journal`: with `ESUB_FSYNC=always` every group commit's appends are also written to this one
//! file, and it is the only file fsynced before the answers: one fdatasync per group however
//! many partitions the group touched (each partition's own fsync cost about as much as the
//! whole group's here, `bench/fsync_groups.py`). The partition files are synced at a checkpoint
//! (every `CHECKPOINT_BYTES` of journal, and at shutdown), after which the journal is emptied.
//! At start-up whatever a partition lacks of the journal (its tail lost with the page cache) is
//! appended again from it before anyone reads.
//!
//! Layout: entries, each a header frame (`'J'`, partition u32, count u32, topic name) followed
//! by `count` record frames as the partition logs write them. A torn or corrupt entry ends the
//! journal: it was never answered.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Message;
use super::log::record::{Fields, begin_frame, decode_record, end_frame, split_frame};
use super::log::{Corrupt, Record};

/// Journal bytes past which the store thread checkpoints.
pub const CHECKPOINT_BYTES: u64 = 64 << 20;
const NAME: &str = "always.journal";
const TAG: u8 = b'J';
/// Header payload besides the topic name: tag, partition, count.
const HEAD_FIXED: usize = 1 + 4 + 4;

pub struct Journal {
    file: File,
    len: u64,
    buf: Vec<u8>,
}

/// One entry read back: topic, partition, its messages in offset order.
pub type Entry = (String, u32, Vec<Message>);

pub fn path(dir: &Path) -> PathBuf {
    dir.join(NAME)
}

impl Journal {
    /// Opens (creating) `dir/always.journal`, positioned at its end.
    pub fn open(dir: &Path) -> io::Result<Journal> {
        let file = File::options().create(true).append(true).open(path(dir))?;
        let len = file.metadata()?.len();
        Ok(Journal { file, len, buf: Vec::new() })
    }

    /// Adds one partition's appended messages to the group being built.
    pub fn add(&mut self, topic: &str, partition: u32, msgs: &[Arc<Message>]) {
        encode_entry(&mut self.buf, topic, partition, msgs);
    }

    /// Whether `add` was called since the last `commit`.
    pub fn pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Writes the group and fdatasyncs the journal. On an error the file is cut back to where
    /// the group began and the group kept, to be tried again or `discard`ed.
    pub fn commit(&mut self) -> io::Result<()> {
        let r = (&self.file).write_all(&self.buf).and_then(|()| self.file.sync_data());
        match r {
            Ok(()) => {
                self.len += self.buf.len() as u64;
                self.buf.clear();
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
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

    /// Empties the journal once every partition it covers is synced.
    pub fn reset(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_data()?;
        self.len = 0;
        Ok(())
    }
}

/// Appends one entry (header frame and record frames) to `out`.
pub fn encode_entry(out: &mut Vec<u8>, topic: &str, partition: u32, msgs: &[Arc<Message>]) {
    let start = begin_frame(out);
    out.push(TAG);
    out.extend_from_slice(&partition.to_le_bytes());
    out.extend_from_slice(&(msgs.len() as u32).to_le_bytes());
    out.extend_from_slice(topic.as_bytes());
    end_frame(out, start);
    for m in msgs {
        Record::of(m).encode(out);
    }
}

/// Reads `dir/always.journal` when there is one: every whole entry, in order, and the byte
/// count of the torn or corrupt tail that ended it (0 when it ended cleanly).
pub fn read(dir: &Path) -> io::Result<(Vec<Entry>, u64)> {
    let mut bytes = Vec::new();
    match File::open(path(dir)) {
        Ok(mut f) => f.read_to_end(&mut bytes)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    Ok(parse(&bytes))
}

/// The whole entries at the front of `bytes`, and the length of what follows them.
pub fn parse(bytes: &[u8]) -> (Vec<Entry>, u64) {
    let mut entries = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match entry(&bytes[at..]) {
            Ok(Some((e, used))) => {
                entries.push(e);
                at += used;
            }
            Ok(None) | Err(_) => break,
        }
    }
    (entries, (bytes.len() - at) as u64)
}

/// The entry at the front of `input` and its length; `Ok(None)` when it is incomplete.
fn entry(input: &[u8]) -> Result<Option<(Entry, usize)>, Corrupt> {
    let Some((head, mut used)) = split_frame(input, HEAD_FIXED)? else { return Ok(None) };
    let mut f = Fields(head);
    if f.u8()? != TAG {
        return Err(Corrupt::Layout);
    }
    let partition = f.u32()?;
    let count = f.u32()? as usize;
    let topic = String::from_utf8(f.0.to_vec()).map_err(|_| Corrupt::Layout)?;
    let mut msgs = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let Some((r, n)) = decode_record(&input[used..])? else { return Ok(None) };
        msgs.push(r.to_message());
        used += n;
    }
    Ok(Some(((topic, partition, msgs), used)))
}

#[cfg(test)]
mod tests;
