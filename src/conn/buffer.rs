//! The two byte queues of a connection: `Buffer` (bytes read, not yet parsed; growable up to a
//! hard cap) and `OutQueue` (bytes to write: small heads plus shared bodies, written vectored).

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use crate::topics::Message;

/// A body moved between connections and threads without copying; cloned by reference count
/// when several receivers need it.
pub type Body = Arc<Vec<u8>>;

/// What one socket call came to, classified once so callers never read `io::ErrorKind`.
#[derive(Debug)]
pub enum Io {
    Progress(usize),
    WouldBlock,
    Eof,
    Fatal(io::Error),
}

/// Turns a read or write result into an `Io`; `Interrupted` is `Progress(0)` (call again).
pub fn classify(r: io::Result<usize>) -> Io {
    match r {
        Ok(0) => Io::Eof,
        Ok(n) => Io::Progress(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Io::WouldBlock,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Io::Progress(0),
        Err(e) => Io::Fatal(e),
    }
}

/// One read's worth: a page would cost a syscall per small request burst; 16 KiB holds a
/// default-limit head twice over and a typical pipelined burst.
pub const READ_CHUNK: usize = 16 * 1024;

/// Received bytes between `start` and `end` of a zero-filled `Vec` (so reads need no `unsafe`).
#[derive(Debug, Default)]
pub struct Buffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
    /// Room the last `read_from` offered the socket: a read shorter than this drained it.
    offered: usize,
}

impl Buffer {
    pub fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn filled_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Moves `n` bytes from the front into `out`.
    pub fn take_into(&mut self, n: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.data[self.start..self.start + n]);
        self.consume(n);
    }

    /// The last read filled less than the room it was offered: the socket is empty for now
    /// (with edge-triggered readiness, new bytes will raise a new event).
    pub fn drained(&self, n: usize) -> bool {
        n < self.offered
    }

    /// Whether the buffer holds memory; a parked connection gives it back (see `release`).
    pub fn has_storage(&self) -> bool {
        !self.data.is_empty()
    }

    /// Hands the storage back (to a pool) when nothing is buffered; `None` otherwise.
    pub fn release(&mut self) -> Option<Vec<u8>> {
        if self.is_empty() && self.has_storage() {
            self.start = 0;
            self.end = 0;
            Some(std::mem::take(&mut self.data))
        } else {
            None
        }
    }

    /// Installs storage from a pool (a zero-filled `Vec` whose length is its capacity).
    pub fn adopt(&mut self, storage: Vec<u8>) {
        debug_assert!(!self.has_storage());
        self.data = storage;
        self.start = 0;
        self.end = 0;
    }

    /// Reads once from `src`, making room first (compacting, then growing up to `cap` bytes
    /// held). `Io::WouldBlock` also when the buffer is full at `cap`: the caller must consume.
    pub fn read_from(&mut self, src: &mut impl Read, cap: usize) -> Io {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.data.len() {
                if self.data.len() >= cap {
                    return Io::WouldBlock;
                }
                let grown = (self.data.len() * 2).clamp(READ_CHUNK, cap.max(READ_CHUNK));
                self.data.resize(grown, 0);
            }
        }
        self.offered = self.data.len() - self.end;
        let r = classify(src.read(&mut self.data[self.end..]));
        if let Io::Progress(n) = r {
            self.end += n;
        }
        r
    }
}

enum Seg {
    Bytes(Vec<u8>),
    Shared(Body),
    /// A topic message's payload, written from the message the tail shares.
    Message(Arc<Message>),
}

impl Seg {
    fn bytes(&self) -> &[u8] {
        match self {
            Seg::Bytes(v) => v,
            Seg::Shared(b) => b,
            Seg::Message(m) => &m.payload,
        }
    }
}

/// Most slices one `writev` takes from us: a head and its body are two, and a few pipelined
/// responses more; the kernel's limit (1024) is far above.
const MAX_IOV: usize = 16;

/// Bytes waiting to be written: owned small pieces (heads, short bodies) and shared bodies.
#[derive(Default)]
pub struct OutQueue {
    segs: VecDeque<Seg>,
    /// Bytes of the front segment already written.
    off: usize,
    pending: usize,
    /// Bytes ever queued and ever written: a frame queued when `total_queued` was `n` is out
    /// once `total_written >= n`.
    queued: u64,
    written: u64,
    /// Emptied `Bytes` vectors kept for the next head, so steady state allocates nothing.
    spare: Vec<Vec<u8>>,
}

impl OutQueue {
    pub fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Bytes not yet written.
    pub fn pending(&self) -> usize {
        self.pending
    }

    pub fn total_queued(&self) -> u64 {
        self.queued
    }

    pub fn total_written(&self) -> u64 {
        self.written
    }

    /// Appends small bytes through `f`, which writes into an owned vector.
    pub fn with_bytes(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        if !matches!(self.segs.back(), Some(Seg::Bytes(_))) {
            let v = self.spare.pop().unwrap_or_default();
            self.segs.push_back(Seg::Bytes(v));
        }
        let Some(Seg::Bytes(v)) = self.segs.back_mut() else {
            unreachable!("a Bytes segment was just ensured")
        };
        let before = v.len();
        f(v);
        self.pending += v.len() - before;
        self.queued += (v.len() - before) as u64;
        if v.is_empty() {
            // Nothing was written: keep no empty segment (writev would see a zero-length slice).
            if let Some(Seg::Bytes(v)) = self.segs.pop_back() {
                self.spare.push(v);
            }
        }
    }

    /// Appends a shared body.
    pub fn push_shared(&mut self, body: Body) {
        self.push_seg(Seg::Shared(body));
    }

    /// Appends a topic message's payload (shared with the tail, not copied).
    pub fn push_message(&mut self, m: &Arc<Message>) {
        self.push_seg(Seg::Message(m.clone()));
    }

    /// Queues a shared segment; an empty one is dropped (writev would see a zero-length slice).
    fn push_seg(&mut self, seg: Seg) {
        let len = seg.bytes().len();
        if len == 0 {
            return;
        }
        self.pending += len;
        self.queued += len as u64;
        self.segs.push_back(seg);
    }

    /// Drops everything unsent (the connection is closing) and the spare vectors.
    pub fn clear(&mut self) {
        self.segs.clear();
        self.off = 0;
        self.queued -= self.pending as u64;
        self.pending = 0;
        self.spare.clear();
    }

    /// Frees the spare vectors, for connections that will wait long (parked subs).
    pub fn shrink(&mut self) {
        self.spare = Vec::new();
        if self.segs.is_empty() {
            self.segs = VecDeque::new();
        }
    }

    /// One write of the front segments (vectored when there are several).
    pub fn write_to(&mut self, dst: &mut impl Write) -> Io {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let mut n = 0;
        for (i, seg) in self.segs.iter().take(MAX_IOV).enumerate() {
            slices[i] = IoSlice::new(if i == 0 { &seg.bytes()[self.off..] } else { seg.bytes() });
            n += 1;
        }
        let r = match n {
            0 => return Io::Progress(0),
            // One slice (every small response, a pub's answer among them): a plain write, which
            // for a socket is `send`, skips the iovec import and the VFS layer of `writev`.
            1 => classify(dst.write(&slices[0])),
            _ => classify(dst.write_vectored(&slices[..n])),
        };
        if let Io::Progress(written) = r {
            self.advance(written);
        }
        r
    }

    fn advance(&mut self, mut n: usize) {
        self.pending -= n;
        self.written += n as u64;
        while n > 0 {
            let Some(front) = self.segs.front() else {
                break;
            };
            let left = front.bytes().len() - self.off;
            if n < left {
                self.off += n;
                return;
            }
            n -= left;
            self.off = 0;
            if let Some(Seg::Bytes(mut v)) = self.segs.pop_front() {
                // A vector that grew past a few KiB (a large text response) is not worth keeping.
                if self.spare.len() < 2 && v.capacity() <= 4096 {
                    v.clear();
                    self.spare.push(v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `step` bytes per call.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn message(payload: &[u8]) -> Arc<Message> {
        let (key, tag, msg_id) = (Vec::new(), Vec::new(), Vec::new());
        Arc::new(Message { offset: 7, time_ms: 0, key, tag, msg_id, payload: payload.to_vec() })
    }

    #[test]
    fn out_queue_in_every_step_size() {
        for step in 1..40 {
            let mut q = OutQueue::default();
            q.with_bytes(|v| v.extend_from_slice(b"head:"));
            q.push_shared(Arc::new(b"shared-body".to_vec()));
            q.push_shared(Arc::new(Vec::new()));
            q.push_message(&message(b"|msg"));
            q.push_message(&message(b""));
            q.with_bytes(|v| v.extend_from_slice(b"|tail"));
            q.with_bytes(|_| {});
            assert_eq!(q.pending(), 25);
            assert_eq!(q.total_queued(), 25);
            let mut w = Trickle { out: Vec::new(), step };
            while !q.is_empty() {
                assert!(matches!(q.write_to(&mut w), Io::Progress(_)));
            }
            assert_eq!(w.out, b"head:shared-body|msg|tail", "step {step}");
            assert_eq!(q.total_written(), 25);
            // Appending after a partial write of the front segment never corrupts it.
            q.with_bytes(|v| v.extend_from_slice(b"ab"));
            let mut w = Trickle { out: Vec::new(), step: 1 };
            q.write_to(&mut w);
            q.with_bytes(|v| v.extend_from_slice(b"cd"));
            while !q.is_empty() {
                q.write_to(&mut w);
            }
            assert_eq!(w.out, b"abcd");
        }
    }

    /// Counts plain and vectored writes; takes everything.
    #[derive(Default)]
    struct Counting {
        out: Vec<u8>,
        plain: usize,
        vectored: usize,
    }

    impl Write for Counting {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.plain += 1;
            self.out.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.vectored += 1;
            bufs.iter().for_each(|b| self.out.extend_from_slice(b));
            Ok(bufs.iter().map(|b| b.len()).sum())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_segment_is_a_plain_write_several_one_vectored() {
        let mut q = OutQueue::default();
        let mut w = Counting::default();
        q.with_bytes(|v| v.extend_from_slice(b"HTTP/1.1 201 Created\r\n\r\n"));
        assert!(matches!(q.write_to(&mut w), Io::Progress(24)));
        assert_eq!((w.plain, w.vectored), (1, 0));
        q.with_bytes(|v| v.extend_from_slice(b"head|"));
        q.push_message(&message(b"payload"));
        assert!(matches!(q.write_to(&mut w), Io::Progress(12)));
        assert_eq!((w.plain, w.vectored), (1, 1));
        assert_eq!(w.out, b"HTTP/1.1 201 Created\r\n\r\nhead|payload");
        assert!(q.is_empty());
        assert!(matches!(q.write_to(&mut w), Io::Progress(0)));
        assert_eq!((w.plain, w.vectored), (1, 1));
    }

    #[test]
    fn buffer_grows_to_cap_then_refuses() {
        let mut b = Buffer::default();
        b.adopt(vec![0; READ_CHUNK]);
        let mut src: &[u8] = &[7u8; 3 * READ_CHUNK];
        let cap = 2 * READ_CHUNK;
        while let Io::Progress(_) = b.read_from(&mut src, cap) {}
        assert_eq!(b.len(), cap);
        assert!(matches!(b.read_from(&mut src, cap), Io::WouldBlock));
        b.consume(10);
        assert!(matches!(b.read_from(&mut src, cap), Io::Progress(10)));
        let mut out = Vec::new();
        b.take_into(5, &mut out);
        assert_eq!(out, [7u8; 5]);
        assert!(b.release().is_none());
        b.consume(b.len());
        assert!(b.release().is_some());
        assert!(!b.has_storage());
    }
}
