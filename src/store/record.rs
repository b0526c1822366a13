//! The record codec: `[len u32][crc32 u32][payload]`, little-endian, where the CRC covers the
//! payload and the payload is `kind u8, id u64, time_ms u64, key_len u16, key, token_len u16,
//! token, body`. Decoding never trusts a length it has not checked against the input.

/// Bytes before the payload: length and CRC.
pub const FRAME_HEAD: usize = 8;
/// Payload bytes besides key, token and body.
const FIXED: usize = 1 + 8 + 8 + 2 + 2;
/// A record longer than this is corrupt whatever its CRC says: keys are at most 256 bytes,
/// tokens are bounded by the head limit, and bodies by `ESUB_MAX_BODY_BYTES` (at most 1 GiB).
pub const MAX_PAYLOAD: usize = (1 << 30) + (1 << 25);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A stored rep.
    Rep = 1,
    /// The rep with this `id` was replayed: it is gone.
    Tombstone = 2,
}

/// A decoded record borrowing its input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: Kind,
    pub id: u64,
    pub time_ms: u64,
    pub key: &'a [u8],
    pub token: &'a [u8],
    pub body: &'a [u8],
}

/// Why bytes are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corrupt {
    Length,
    Checksum,
    Layout,
}

impl Record<'_> {
    /// Bytes the record takes on disk.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEAD + FIXED + self.key.len() + self.token.len() + self.body.len()
    }

    /// Appends the framed record to `out`. Key and token must fit in u16 (callers bound them).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let payload = FIXED + self.key.len() + self.token.len() + self.body.len();
        let start = out.len();
        out.extend_from_slice(&(payload as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.time_ms.to_le_bytes());
        out.extend_from_slice(&(self.key.len() as u16).to_le_bytes());
        out.extend_from_slice(self.key);
        out.extend_from_slice(&(self.token.len() as u16).to_le_bytes());
        out.extend_from_slice(self.token);
        out.extend_from_slice(self.body);
        let crc = crc32fast::hash(&out[start + FRAME_HEAD..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize)
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The payload length a frame announces, once its head is there (`Ok(None)`: need 8 bytes).
pub fn frame_len(input: &[u8]) -> Result<Option<usize>, Corrupt> {
    let Some(head) = input.get(..FRAME_HEAD) else { return Ok(None) };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if !(FIXED..=MAX_PAYLOAD).contains(&len) {
        return Err(Corrupt::Length);
    }
    Ok(Some(FRAME_HEAD + len))
}

/// Decodes the record at the front of `input`: `Ok(None)` when it is incomplete.
pub fn decode(input: &[u8]) -> Result<Option<(Record<'_>, usize)>, Corrupt> {
    let Some(total) = frame_len(input)? else { return Ok(None) };
    let Some(frame) = input.get(..total) else { return Ok(None) };
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let p = &frame[FRAME_HEAD..];
    if crc32fast::hash(p) != crc {
        return Err(Corrupt::Checksum);
    }
    let kind = match p[0] {
        1 => Kind::Rep,
        2 => Kind::Tombstone,
        _ => return Err(Corrupt::Layout),
    };
    let id = u64_at(p, 1).ok_or(Corrupt::Layout)?;
    let time_ms = u64_at(p, 9).ok_or(Corrupt::Layout)?;
    let key_len = u16_at(p, 17).ok_or(Corrupt::Layout)?;
    let key = p.get(19..19 + key_len).ok_or(Corrupt::Layout)?;
    let token_len = u16_at(p, 19 + key_len).ok_or(Corrupt::Layout)?;
    let token_at = 21 + key_len;
    let token = p.get(token_at..token_at + token_len).ok_or(Corrupt::Layout)?;
    let body = &p[token_at + token_len..];
    Ok(Some((Record { kind, id, time_ms, key, token, body }, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut v = Vec::new();
        let r = Record {
            kind: Kind::Rep,
            id: 7,
            time_ms: 1234,
            key: b"key",
            token: b"tok",
            body: b"hello body",
        };
        r.encode(&mut v);
        assert_eq!(v.len(), r.encoded_len());
        v
    }

    #[test]
    fn round_trip_and_concatenation() {
        let mut v = sample();
        let t =
            Record { kind: Kind::Tombstone, id: 7, time_ms: 5, key: b"", token: b"", body: b"" };
        t.encode(&mut v);
        let (r, used) = decode(&v).unwrap().unwrap();
        assert_eq!(
            (r.kind, r.id, r.time_ms, r.key, r.token, r.body),
            (Kind::Rep, 7, 1234, &b"key"[..], &b"tok"[..], &b"hello body"[..])
        );
        let (r2, used2) = decode(&v[used..]).unwrap().unwrap();
        assert_eq!((r2.kind, r2.id), (Kind::Tombstone, 7));
        assert_eq!(used + used2, v.len());
    }

    #[test]
    fn every_truncation_is_incomplete_never_wrong() {
        let v = sample();
        for cut in 0..v.len() {
            assert_eq!(decode(&v[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let v = sample();
        for byte in 0..v.len() {
            for bit in 0..8 {
                let mut w = v.clone();
                w[byte] ^= 1 << bit;
                match decode(&w) {
                    // A flipped length bit may make the frame look longer: incomplete, not wrong.
                    Ok(None) => assert!(byte < 4, "byte {byte} bit {bit}"),
                    Ok(Some(_)) => panic!("byte {byte} bit {bit} decoded"),
                    Err(_) => {}
                }
            }
        }
    }

    #[test]
    fn lengths_are_checked() {
        let mut v = sample();
        v[..4].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(decode(&v), Err(Corrupt::Length));
        v[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&v), Err(Corrupt::Length));
        // A key length past the payload, with a matching CRC, is a layout error, not a panic.
        let mut bad = Vec::new();
        let payload = [&[1u8][..], &[0; 16], &[200, 0], &[0, 0]].concat();
        bad.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bad.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bad.extend_from_slice(&payload);
        assert_eq!(decode(&bad), Err(Corrupt::Layout));
    }
}
