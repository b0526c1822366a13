//! What was sent to each key, what the rep was told and what the sub got: the bookkeeping that
//! turns traffic into delivered, lost, duplicated, misdelivered and ghost counts.
//!
//! A payload is `<key>:<seq>:` padded with `.` to the run's size; `seq` is unique in the run.
//! At most one message per key is unresolved at a time (the generator sends to a key only when
//! it is not `busy`), so per key the last sent, last acknowledged, last missed and last received
//! sequence numbers tell every outcome.

use std::time::Instant;

use crate::http::{push_decimal, push_key};

const PAD: u8 = b'.';

/// How a rep was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 (esub) or 201 (nchan): a waiting sub has the message.
    Delivered,
    /// 404 (esub) or 202 (nchan): nobody waited; the key is tried again later.
    Miss,
    /// Any other status; also a rep whose connection broke before its answer.
    Failed,
}

/// What a sub's 200 body turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// The message last sent to this key, first time seen; with its send time.
    Delivered(Instant),
    /// A message this key had already received.
    Duplicate,
    /// A message for another key of this run.
    Misdelivered,
    /// A message of this key whose rep was answered Miss or Failed: delivered although the
    /// server said it was not. Counted once per message, at whichever of receipt and answer
    /// comes second; when the receipt came first it is also in `delivered`.
    Ghost,
    /// Not a payload of this run, wrong length or padding, or a sequence never sent.
    Corrupt,
}

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    sent: u64,
    sent_at: Option<Instant>,
    acked: u64,
    missed: u64,
    received: u64,
    /// The last message sent is unresolved: not received, and not answered Miss or Failed.
    busy: bool,
}

/// Totals over the whole run, warm-up and drain included.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub sent: u64,
    pub acked: u64,
    pub misses: u64,
    pub failed: u64,
    pub delivered: u64,
    pub duplicated: u64,
    pub misdelivered: u64,
    pub ghost: u64,
    pub corrupt: u64,
}

pub struct Ledger {
    prefix: Vec<u8>,
    size: usize,
    slots: Vec<Slot>,
    next_seq: u64,
    busy: usize,
    pub counts: Counts,
}

impl Ledger {
    pub fn new(prefix: &str, keys: usize, size: usize) -> Ledger {
        Ledger {
            prefix: prefix.as_bytes().to_vec(),
            size,
            slots: vec![Slot::default(); keys],
            next_seq: 1,
            busy: 0,
            counts: Counts::default(),
        }
    }

    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    pub fn busy(&self, key: usize) -> bool {
        self.slots[key].busy
    }

    /// Sequence of the last message sent to `key` (0: none yet).
    pub fn last_sent(&self, key: usize) -> u64 {
        self.slots[key].sent
    }

    /// Keys whose last message is unresolved.
    pub fn busy_keys(&self) -> usize {
        self.busy
    }

    /// Records a send to `key` at `now`, appends its payload to `out`, returns its sequence.
    pub fn send(&mut self, key: usize, now: Instant, out: &mut Vec<u8>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = &mut self.slots[key];
        debug_assert!(!slot.busy, "send to a busy key");
        slot.sent = seq;
        slot.sent_at = Some(now);
        slot.busy = true;
        self.busy += 1;
        self.counts.sent += 1;
        let start = out.len();
        push_key(out, &self.prefix, key);
        out.push(b':');
        push_decimal(out, seq);
        out.push(b':');
        let used = out.len() - start;
        out.resize(start + used.max(self.size), PAD);
        seq
    }

    /// Records the rep's answer for (`key`, `seq`). `true` if the key is free for another send
    /// (the message will not arrive, as far as the server says). A Miss or Failed for a message
    /// the sub already has is a ghost.
    pub fn answer(&mut self, key: usize, seq: u64, answer: Answer) -> bool {
        let slot = &mut self.slots[key];
        match answer {
            Answer::Delivered => {
                self.counts.acked += 1;
                slot.acked = slot.acked.max(seq);
                return false;
            }
            Answer::Miss => self.counts.misses += 1,
            Answer::Failed => self.counts.failed += 1,
        }
        slot.missed = slot.missed.max(seq);
        // A key is freed only by the receipt of its message or by this one answer, so a
        // receipt at or past `seq` means this very message was delivered.
        if slot.received >= seq {
            self.counts.ghost += 1;
        }
        if slot.sent == seq && slot.busy {
            slot.busy = false;
            self.busy -= 1;
            return true;
        }
        false
    }

    /// Checks a 200 body that the sub of `key` read.
    pub fn receive(&mut self, key: usize, body: &[u8]) -> Receipt {
        let receipt = self.classify(key, body);
        match receipt {
            Receipt::Delivered(_) => self.counts.delivered += 1,
            Receipt::Duplicate => self.counts.duplicated += 1,
            Receipt::Misdelivered => self.counts.misdelivered += 1,
            Receipt::Ghost => self.counts.ghost += 1,
            Receipt::Corrupt => self.counts.corrupt += 1,
        }
        receipt
    }

    fn classify(&mut self, key: usize, body: &[u8]) -> Receipt {
        let Some((owner, seq)) = self.parse(body) else {
            return Receipt::Corrupt;
        };
        if owner != key {
            return if owner < self.slots.len() && seq < self.next_seq {
                Receipt::Misdelivered
            } else {
                Receipt::Corrupt
            };
        }
        let slot = &mut self.slots[key];
        if seq > slot.sent {
            return Receipt::Corrupt;
        }
        if seq <= slot.received {
            return Receipt::Duplicate;
        }
        slot.received = seq;
        if seq == slot.sent && slot.busy {
            slot.busy = false;
            self.busy -= 1;
            if let Some(at) = slot.sent_at {
                return Receipt::Delivered(at);
            }
        }
        // Older than the last send, or the last send was already answered Miss or Failed.
        Receipt::Ghost
    }

    /// `(key, seq)` of a well-formed payload of this run: header, then padding up to the size.
    fn parse(&self, body: &[u8]) -> Option<(usize, u64)> {
        let rest = body.strip_prefix(self.prefix.as_slice())?;
        let (key, rest) = split_number(rest)?;
        let rest = rest.strip_prefix(b":")?;
        let (seq, rest) = split_number(rest)?;
        let pad = rest.strip_prefix(b":")?;
        let header = body.len() - pad.len();
        if body.len() != header.max(self.size) || !pad.iter().all(|&b| b == PAD) {
            return None;
        }
        Some((usize::try_from(key).ok()?, seq))
    }

    /// Keys whose last acknowledged message never reached the sub: lost, once the grace period
    /// after the run has passed.
    pub fn lost(&self) -> u64 {
        self.slots.iter().filter(|s| s.acked > s.received).count() as u64
    }
}

fn split_number(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let n = s[..digits].iter().fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
    Some((n, &s[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(l: &mut Ledger, key: usize) -> (u64, Vec<u8>) {
        let mut out = Vec::new();
        let seq = l.send(key, Instant::now(), &mut out);
        (seq, out)
    }

    #[test]
    fn payload_shape() {
        let mut l = Ledger::new("bx", 3, 40);
        let (seq, p) = payload(&mut l, 2);
        assert_eq!(seq, 1);
        assert_eq!(p.len(), 40);
        assert!(p.starts_with(b"bx2:1:...."));
        // Too small a size still carries the whole header.
        let mut l = Ledger::new("bx", 30, 1);
        let (_, p) = payload(&mut l, 25);
        assert_eq!(p, b"bx25:1:");
        assert!(matches!(l.receive(25, &p), Receipt::Delivered(_)));
    }

    #[test]
    fn normal_round_trip_in_both_orders() {
        let mut l = Ledger::new("b", 2, 64);
        let (s, p) = payload(&mut l, 0);
        assert!(!l.answer(0, s, Answer::Delivered));
        assert!(matches!(l.receive(0, &p), Receipt::Delivered(_)));
        let (s, p) = payload(&mut l, 1);
        assert!(matches!(l.receive(1, &p), Receipt::Delivered(_)));
        assert!(!l.answer(1, s, Answer::Delivered));
        assert_eq!((l.lost(), l.busy_keys(), l.counts.delivered, l.counts.acked), (0, 0, 2, 2));
    }

    #[test]
    fn anomalies() {
        let mut l = Ledger::new("b", 3, 64);
        // Duplicate.
        let (_, p) = payload(&mut l, 0);
        assert!(matches!(l.receive(0, &p), Receipt::Delivered(_)));
        assert_eq!(l.receive(0, &p), Receipt::Duplicate);
        // Misdelivered: key 1's message read by key 2's sub.
        let (_, p) = payload(&mut l, 1);
        assert_eq!(l.receive(2, &p), Receipt::Misdelivered);
        // Lost: key 1 acked, never received.
        let (s1, _) = (l.slots[1].sent, ());
        l.answer(1, s1, Answer::Delivered);
        assert_eq!(l.lost(), 1);
        // Ghost after a miss: the rep said 404, the sub got it anyway.
        let (s, p) = payload(&mut l, 2);
        assert!(l.answer(2, s, Answer::Miss));
        assert!(!l.busy(2));
        assert_eq!(l.receive(2, &p), Receipt::Ghost);
        // Ghost the other way round: received, then answered 404.
        let (s, p) = payload(&mut l, 2);
        assert!(matches!(l.receive(2, &p), Receipt::Delivered(_)));
        assert!(!l.answer(2, s, Answer::Miss));
        assert_eq!(l.counts.ghost, 2);
        // Corrupt: wrong padding, wrong length, foreign prefix, unsent sequence.
        let (_, mut p) = payload(&mut l, 0);
        let last = p.len() - 1;
        p[last] = b'x';
        assert_eq!(l.receive(0, &p), Receipt::Corrupt);
        assert_eq!(l.receive(0, &p[..last]), Receipt::Corrupt);
        assert_eq!(l.receive(0, b"other:1:"), Receipt::Corrupt);
        let mut q = Vec::new();
        push_key(&mut q, b"b", 0);
        q.extend_from_slice(b":999:");
        q.resize(64, PAD);
        assert_eq!(l.receive(0, &q), Receipt::Corrupt);
        assert_eq!(
            (l.counts.duplicated, l.counts.misdelivered, l.counts.corrupt, l.counts.misses),
            (1, 1, 4, 2)
        );
    }

    #[test]
    fn miss_of_an_old_send_does_not_free_a_newer_one() {
        let mut l = Ledger::new("b", 1, 64);
        let (s1, p1) = payload(&mut l, 0);
        assert!(matches!(l.receive(0, &p1), Receipt::Delivered(_)));
        let (_s2, _) = payload(&mut l, 0);
        // The late 404 for s1 is a ghost and must leave s2 busy.
        assert!(!l.answer(0, s1, Answer::Miss));
        assert!(l.busy(0));
        assert_eq!(l.counts.ghost, 1);
    }
}
