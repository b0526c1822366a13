//! STUB (in memory) until the partition log lands: the reader interface only.

use std::io;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use super::Message;

#[derive(Clone, Default)]
pub struct PartitionReader {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    oldest: AtomicI64,
    end: AtomicI64,
    msgs: Mutex<Vec<Message>>,
}

impl PartitionReader {
    pub fn oldest(&self) -> i64 {
        self.inner.oldest.load(Ordering::Acquire)
    }
    pub fn end(&self) -> i64 {
        self.inner.end.load(Ordering::Acquire)
    }
    pub fn read(&self, from: i64, max_msgs: usize, _max_bytes: usize) -> io::Result<Vec<Message>> {
        let m = self.inner.msgs.lock().unwrap();
        Ok(m.iter().filter(|x| x.offset >= from).take(max_msgs).cloned().collect())
    }
    pub fn stub_append(&self, msgs: &[Arc<Message>]) -> Result<(), ()> {
        let mut m = self.inner.msgs.lock().unwrap();
        for x in msgs {
            if x.offset != self.end() {
                return Err(());
            }
            m.push((**x).clone());
            self.inner.end.store(x.offset + 1, Ordering::Release);
        }
        Ok(())
    }
}
