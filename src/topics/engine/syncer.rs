//! `Syncer`: the topics store's background disk work, on a thread of its own so appends never
//! wait behind it: interval mode's fsyncs, and with `ESUB_FSYNC=always` the writeback that
//! keeps a checkpoint short.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;

/// What one round does to its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `fdatasync` each (interval mode: what was written reaches the disk).
    Sync,
    /// Starts writing each file's dirty pages out, without waiting and without a cache flush
    /// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): durable only at the next fsync, but that
    /// fsync then finds little left to write. With `ESUB_FSYNC=always` the partitions are
    /// fsynced only at a checkpoint, every 64 MiB of journal; with all of it still dirty, the
    /// checkpoint held every answer for 250-410 ms here (bench/RESULTS.md).
    WriteBack,
}

/// The background rounds, one at a time.
pub struct Syncer {
    tx: Option<std::sync::mpsc::SyncSender<(Vec<Arc<File>>, Op)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    pub fn start() -> Syncer {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<Arc<File>>, Op)>(1);
        let thread = std::thread::Builder::new()
            .name("esub-topics-sync".into())
            .spawn(move || {
                for (files, op) in rx {
                    for f in files {
                        run(&f, op);
                    }
                }
            })
            .ok();
        if thread.is_none() {
            crate::warn!("topics syncer thread did not start; syncing on the store thread");
        }
        Syncer { tx: thread.as_ref().map(|_| tx), thread }
    }

    /// `false` when the last round is still running (or there is no syncer thread).
    pub fn offer(&self, files: Vec<Arc<File>>, op: Op) -> bool {
        match &self.tx {
            Some(tx) => tx.try_send((files, op)).is_ok(),
            None => false,
        }
    }

    pub fn available(&self) -> bool {
        self.tx.is_some()
    }

    /// Waits for the rounds handed over so far; the syncer is gone after.
    pub fn finish(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(f: &File, op: Op) {
    match op {
        Op::Sync => {
            if let Err(e) = f.sync_data() {
                crate::warn!("topics fsync failed error={e}");
            }
        }
        Op::WriteBack => {
            // SAFETY: a plain syscall on a descriptor `f` keeps open; offset 0 and length 0
            // mean the whole file.
            let rc =
                unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
            if rc != 0 {
                // Only a head start: the checkpoint's fsync writes and reports what this did not.
                crate::debug!("topics writeback failed error={}", std::io::Error::last_os_error());
            }
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A write-back round starts the file's dirty pages on their way to the disk: the file's
    /// content is untouched and a later fsync still succeeds.
    #[test]
    fn writeback_round_leaves_the_file_whole() {
        let dir = std::env::temp_dir().join(format!("esub-syncer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("seg");
        let mut f = File::create(&path).unwrap();
        f.write_all(&[7u8; 1 << 16]).unwrap();
        let f = Arc::new(f);
        let mut s = Syncer::start();
        assert!(s.offer(vec![f.clone()], Op::WriteBack));
        s.finish();
        f.sync_data().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 1 << 16]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
