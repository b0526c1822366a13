//! What every message of a topics run carries, and the books kept on it: a sequence number and
//! the time its pub was written, so a delivery can be timed, and counted as lost or doubled.

/// Sequence number and send time, both u64 big-endian; the rest is padding.
pub const HEAD: usize = 16;
const PAD: u8 = b'.';

/// Appends message `seq`'s payload of `size` bytes (at least `HEAD`), sent at `sent_ns`.
pub fn write(out: &mut Vec<u8>, seq: u64, sent_ns: u64, size: usize) {
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&sent_ns.to_be_bytes());
    out.resize(out.len() + size.saturating_sub(HEAD), PAD);
}

/// The sequence number and send time of a delivered payload; `None` when it is not one the run
/// wrote (wrong length or padding).
pub fn read(p: &[u8], size: usize) -> Option<(u64, u64)> {
    if p.len() != size.max(HEAD) || !p[HEAD..].iter().all(|&b| b == PAD) {
        return None;
    }
    let seq = u64::from_be_bytes(p[..8].try_into().ok()?);
    let sent = u64::from_be_bytes(p[8..HEAD].try_into().ok()?);
    Some((seq, sent))
}

/// The fate of each message of a run, by sequence number.
#[derive(Debug, Default)]
pub struct Books {
    /// Whether the server answered the message's pub "stored".
    stored: Vec<bool>,
    /// How often it was delivered (saturating).
    seen: Vec<u8>,
    /// Answered "stored" and not delivered yet: at the end of a run, the lost.
    outstanding: u64,
    pub delivered: u64,
    pub duplicated: u64,
    /// Deliveries that are no payload of this run, or of a sequence number never sent.
    pub corrupt: u64,
}

impl Books {
    /// Message `seq` was written: its slot exists from now on.
    pub fn sent(&mut self, seq: u64) {
        let need = seq as usize + 1;
        if self.stored.len() < need {
            self.stored.resize(need, false);
            self.seen.resize(need, 0);
        }
    }

    pub fn stored(&mut self, seq: u64) {
        let i = seq as usize;
        if let Some(s) = self.stored.get_mut(i)
            && !*s
        {
            *s = true;
            if self.seen[i] == 0 {
                self.outstanding += 1;
            }
        }
    }

    /// A delivery of `seq`: `true` the first time.
    pub fn delivered(&mut self, seq: u64) -> bool {
        let Some(n) = self.seen.get_mut(seq as usize) else {
            self.corrupt += 1;
            return false;
        };
        *n = n.saturating_add(1);
        if *n == 1 {
            self.delivered += 1;
            if self.stored[seq as usize] {
                self.outstanding -= 1;
            }
            true
        } else {
            self.duplicated += 1;
            false
        }
    }

    /// Messages answered "stored" and not delivered (yet): the lost, once the run is over.
    pub fn outstanding(&self) -> u64 {
        self.outstanding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_reject_strangers() {
        let mut p = Vec::new();
        write(&mut p, 7, 123_456_789, 100);
        assert_eq!(p.len(), 100);
        assert_eq!(read(&p, 100), Some((7, 123_456_789)));
        assert_eq!(read(&p[..99], 100), None);
        p[50] = b'x';
        assert_eq!(read(&p, 100), None);
        let mut small = Vec::new();
        write(&mut small, 1, 2, 4);
        assert_eq!((small.len(), read(&small, 4)), (HEAD, Some((1, 2))));
    }

    #[test]
    fn books_count_lost_doubled_and_strangers() {
        let mut b = Books::default();
        for seq in 0..4 {
            b.sent(seq);
        }
        for seq in [0, 1, 2] {
            b.stored(seq);
        }
        assert!(b.delivered(0));
        assert!(b.delivered(1));
        assert!(!b.delivered(1));
        assert!(b.delivered(3)); // delivered before its answer came: not lost, not stored
        assert!(!b.delivered(9));
        assert_eq!((b.delivered, b.duplicated, b.corrupt), (3, 1, 1));
        assert_eq!(b.outstanding(), 1);
        b.stored(2);
        b.stored(3);
        assert_eq!(b.outstanding(), 1, "stored twice, or stored after its delivery");
        assert!(b.delivered(2));
        assert_eq!(b.outstanding(), 0);
    }
}
