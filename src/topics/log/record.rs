//! Topic records and their framing: `[len u32][crc32 u32][payload]`, little-endian, the CRC over
//! the payload. A message's payload is `offset i64, time_ms u64, key_len u16, key, tag_len u16,
//! tag, msg_id_len u8, msg_id, bytes`. Decoding never trusts a length it has not checked.

use crate::topics::Message;

/// Bytes before the payload: length and CRC.
pub const FRAME_HEAD: usize = 8;
/// Message payload bytes besides key, tag, msg_id and body.
pub const FIXED: usize = 8 + 8 + 2 + 2 + 1;
/// A frame longer than this is corrupt whatever its CRC says: payloads are bounded by
/// `ESUB_PUB_MAX_BYTES`, which cannot usefully exceed a GiB, keys and tags by u16.
pub const MAX_PAYLOAD: usize = (1 << 30) + (1 << 25);

/// Why bytes are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corrupt {
    /// The announced length is below the smallest or above the largest payload.
    Length,
    Checksum,
    /// The CRC holds but the fields do not fit the payload.
    Layout,
}

/// Starts a frame in `out`; returns where it starts, for `end_frame`.
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEAD]);
    start
}

/// Fills in the length and CRC of the frame begun at `start`, now that its payload follows it.
pub fn end_frame(out: &mut [u8], start: usize) {
    let len = (out.len() - start - FRAME_HEAD) as u32;
    let crc = crc32fast::hash(&out[start + FRAME_HEAD..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The whole frame's length once its head is there (`Ok(None)`: fewer than 8 bytes). Payloads
/// below `min` or above `MAX_PAYLOAD` are `Corrupt::Length`.
pub fn frame_len(input: &[u8], min: usize) -> Result<Option<usize>, Corrupt> {
    let Some(head) = input.get(..FRAME_HEAD) else { return Ok(None) };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if !(min..=MAX_PAYLOAD).contains(&len) {
        return Err(Corrupt::Length);
    }
    Ok(Some(FRAME_HEAD + len))
}

/// The checked payload of the frame at the front of `input` and the frame's length;
/// `Ok(None)` while it is incomplete.
pub fn split_frame(input: &[u8], min: usize) -> Result<Option<(&[u8], usize)>, Corrupt> {
    let Some(total) = frame_len(input, min)? else { return Ok(None) };
    let Some(frame) = input.get(..total) else { return Ok(None) };
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let payload = &frame[FRAME_HEAD..];
    if crc32fast::hash(payload) != crc {
        return Err(Corrupt::Checksum);
    }
    Ok(Some((payload, total)))
}

/// A cursor over a payload: every read is bounds-checked, a short payload is `Layout`.
pub struct Fields<'a>(pub &'a [u8]);

impl<'a> Fields<'a> {
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        if self.0.len() < n {
            return Err(Corrupt::Layout);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, Corrupt> {
        Ok(self.bytes(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, Corrupt> {
        Ok(u16::from_le_bytes(self.bytes(2)?.try_into().map_err(|_| Corrupt::Layout)?))
    }

    pub fn u32(&mut self) -> Result<u32, Corrupt> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().map_err(|_| Corrupt::Layout)?))
    }

    pub fn u64(&mut self) -> Result<u64, Corrupt> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().map_err(|_| Corrupt::Layout)?))
    }

    /// A u16-length-prefixed field.
    pub fn short(&mut self) -> Result<&'a [u8], Corrupt> {
        let n = self.u16()? as usize;
        self.bytes(n)
    }
}

/// A decoded message record borrowing its input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset: i64,
    pub time_ms: u64,
    pub key: &'a [u8],
    pub tag: &'a [u8],
    pub msg_id: &'a [u8],
    pub payload: &'a [u8],
}

impl<'a> Record<'a> {
    pub fn of(m: &'a Message) -> Record<'a> {
        Record {
            offset: m.offset,
            time_ms: m.time_ms,
            key: &m.key,
            tag: &m.tag,
            msg_id: &m.msg_id,
            payload: &m.payload,
        }
    }

    /// Whether the fields fit their length prefixes (and the frame its limit).
    pub fn fits(&self) -> bool {
        self.key.len() <= u16::MAX as usize
            && self.tag.len() <= u16::MAX as usize
            && self.msg_id.len() <= u8::MAX as usize
            && self.encoded_len() - FRAME_HEAD <= MAX_PAYLOAD
    }

    /// Bytes the record takes on disk.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEAD
            + FIXED
            + self.key.len()
            + self.tag.len()
            + self.msg_id.len()
            + self.payload.len()
    }

    /// Appends the framed record to `out`. The fields must fit (`fits`): callers bound them.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = begin_frame(out);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.time_ms.to_le_bytes());
        out.extend_from_slice(&(self.key.len() as u16).to_le_bytes());
        out.extend_from_slice(self.key);
        out.extend_from_slice(&(self.tag.len() as u16).to_le_bytes());
        out.extend_from_slice(self.tag);
        out.push(self.msg_id.len() as u8);
        out.extend_from_slice(self.msg_id);
        out.extend_from_slice(self.payload);
        end_frame(out, start);
    }

    /// An owned copy (the payload is copied once, out of the read buffer).
    pub fn to_message(&self) -> Message {
        Message {
            offset: self.offset,
            time_ms: self.time_ms,
            key: self.key.to_vec(),
            tag: self.tag.to_vec(),
            msg_id: self.msg_id.to_vec(),
            payload: self.payload.to_vec(),
        }
    }
}

/// The frame length of the record at the front of `input` (`Ok(None)`: need 8 bytes).
pub fn record_len(input: &[u8]) -> Result<Option<usize>, Corrupt> {
    frame_len(input, FIXED)
}

/// Decodes the record at the front of `input`: `Ok(None)` while it is incomplete.
pub fn decode_record(input: &[u8]) -> Result<Option<(Record<'_>, usize)>, Corrupt> {
    let Some((payload, total)) = split_frame(input, FIXED)? else { return Ok(None) };
    let mut f = Fields(payload);
    let offset = f.u64()? as i64;
    let time_ms = f.u64()?;
    let key = f.short()?;
    let tag = f.short()?;
    let n = f.u8()? as usize;
    let msg_id = f.bytes(n)?;
    Ok(Some((Record { offset, time_ms, key, tag, msg_id, payload: f.0 }, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut v = Vec::new();
        let r = Record {
            offset: 42,
            time_ms: 1234,
            key: b"key",
            tag: b"a=b",
            msg_id: b"id-1",
            payload: b"\x01payload",
        };
        r.encode(&mut v);
        assert_eq!(v.len(), r.encoded_len());
        v
    }

    #[test]
    fn round_trip_and_concatenation() {
        let mut v = sample();
        let empty =
            Record { offset: 43, time_ms: 0, key: b"", tag: b"", msg_id: b"", payload: b"" };
        empty.encode(&mut v);
        let (r, used) = decode_record(&v).unwrap().unwrap();
        assert_eq!(
            (r.offset, r.time_ms, r.key, r.tag, r.msg_id, r.payload),
            (42, 1234, &b"key"[..], &b"a=b"[..], &b"id-1"[..], &b"\x01payload"[..])
        );
        let (r2, used2) = decode_record(&v[used..]).unwrap().unwrap();
        assert_eq!(r2, empty);
        assert_eq!(used + used2, v.len());
        let m = r.to_message();
        assert_eq!(Record::of(&m), r);
    }

    #[test]
    fn every_truncation_is_incomplete() {
        let v = sample();
        for cut in 0..v.len() {
            assert_eq!(decode_record(&v[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let v = sample();
        for byte in 0..v.len() {
            for bit in 0..8 {
                let mut w = v.clone();
                w[byte] ^= 1 << bit;
                match decode_record(&w) {
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
        assert_eq!(decode_record(&v), Err(Corrupt::Length));
        v[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_record(&v), Err(Corrupt::Length));
        // A key length past the payload, with a matching CRC, is a layout error.
        let mut bad = Vec::new();
        let start = begin_frame(&mut bad);
        bad.extend_from_slice(&[0; 16]);
        bad.extend_from_slice(&[200, 0, 0, 0, 0]);
        end_frame(&mut bad, start);
        assert_eq!(decode_record(&bad), Err(Corrupt::Layout));
    }
}
