//! `Syncer`: the interval-mode fsyncs of the topics store, on a thread of their own so appends
//! never wait behind a periodic fsync.

use std::fs::File;
use std::sync::Arc;

/// The interval-mode fsyncs, off the store thread: one round of files at a time.
pub struct Syncer {
    tx: Option<std::sync::mpsc::SyncSender<Vec<Arc<File>>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    pub fn start() -> Syncer {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Arc<File>>>(1);
        let thread = std::thread::Builder::new()
            .name("esub-topics-sync".into())
            .spawn(move || {
                for files in rx {
                    for f in files {
                        if let Err(e) = f.sync_data() {
                            crate::warn!("topics fsync failed error={e}");
                        }
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
    pub fn offer(&self, files: Vec<Arc<File>>) -> bool {
        match &self.tx {
            Some(tx) => tx.try_send(files).is_ok(),
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

impl Drop for Syncer {
    fn drop(&mut self) {
        self.finish();
    }
}
