//! Websocket frames on our own buffers: headers parsed and formatted by `tungstenite`, payloads
//! unmasked in place, fragments joined, and the protocol errors RFC 6455 names turned into the
//! close codes they require.

use std::io::Cursor;

use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use crate::conn::buffer::Buffer;

/// Why a websocket must close; each variant is its close code (RFC 6455 section 7.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsError {
    /// 1002: unmasked client frame, reserved bits or opcodes, bad fragmentation, bad control.
    Protocol(&'static str),
    /// 1007: a payload that is not what it must be (non-UTF-8 text, a bad `/prep` message).
    InvalidData(&'static str),
    /// 1009: a message over `ESUB_MAX_BODY_BYTES`.
    TooBig,
}

impl WsError {
    pub fn code(self) -> u16 {
        match self {
            WsError::Protocol(_) => 1002,
            WsError::InvalidData(_) => 1007,
            WsError::TooBig => 1009,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            WsError::Protocol(why) | WsError::InvalidData(why) => why,
            WsError::TooBig => "message too big",
        }
    }
}

/// A complete message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    /// The close code (if any) to echo.
    Close(Option<u16>),
}

/// Joins fragments and enforces the size limit across them.
#[derive(Debug)]
pub struct Reader {
    max: usize,
    /// A fragmented message in progress: is it text, and its bytes so far.
    partial: Option<(bool, Vec<u8>)>,
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

impl Reader {
    pub fn new(max: usize) -> Reader {
        Reader { max, partial: None }
    }

    /// Takes the next whole frame from `rx`; `Ok(None)` when more bytes are needed (nothing is
    /// consumed then). Data frames that only continue a message return `Ok(None)` too once
    /// consumed; call again while the buffer holds bytes.
    pub fn next(&mut self, rx: &mut Buffer) -> Result<Option<Incoming>, WsError> {
        loop {
            let mut cursor = Cursor::new(rx.filled());
            let (header, len) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(None),
                Err(_) => return Err(WsError::Protocol("bad frame header")),
            };
            let head_len = cursor.position() as usize;
            let Some(mask) = header.mask else {
                return Err(WsError::Protocol("unmasked client frame"));
            };
            if header.rsv1 || header.rsv2 || header.rsv3 {
                return Err(WsError::Protocol("reserved bits set"));
            }
            if matches!(header.opcode, OpCode::Control(_)) && (!header.is_final || len > 125) {
                return Err(WsError::Protocol("bad control frame"));
            }
            // Only a continuation adds to the message in progress: control frames between
            // fragments are no part of it (RFC 6455 section 5.4), so they meet the limit alone.
            let so_far = match (&self.partial, header.opcode) {
                (Some((_, p)), OpCode::Data(Data::Continue)) => p.len(),
                _ => 0,
            };
            if len > (self.max.saturating_sub(so_far)) as u64 {
                return Err(WsError::TooBig);
            }
            let len = len as usize;
            if rx.len() < head_len + len {
                return Ok(None);
            }
            rx.consume(head_len);
            let payload = &mut rx.filled_mut()[..len];
            unmask(payload, mask);
            let out = match header.opcode {
                OpCode::Control(c) => match c {
                    Control::Ping => Some(Incoming::Ping(payload.to_vec())),
                    Control::Pong => Some(Incoming::Pong),
                    Control::Close => Some(Incoming::Close(close_code(payload)?)),
                    Control::Reserved(_) => return Err(WsError::Protocol("reserved opcode")),
                },
                OpCode::Data(Data::Continue) => {
                    let Some((_, buf)) = &mut self.partial else {
                        return Err(WsError::Protocol("continuation without a message"));
                    };
                    buf.extend_from_slice(payload);
                    if header.is_final {
                        let (text, buf) = self.partial.take().unwrap_or_default();
                        Some(if text { Incoming::Text(buf) } else { Incoming::Binary(buf) })
                    } else {
                        None
                    }
                }
                OpCode::Data(d @ (Data::Text | Data::Binary)) => {
                    if self.partial.is_some() {
                        return Err(WsError::Protocol("new message inside a fragmented one"));
                    }
                    let text = d == Data::Text;
                    if header.is_final {
                        let buf = payload.to_vec();
                        Some(if text { Incoming::Text(buf) } else { Incoming::Binary(buf) })
                    } else {
                        self.partial = Some((text, payload.to_vec()));
                        None
                    }
                }
                OpCode::Data(Data::Reserved(_)) => {
                    return Err(WsError::Protocol("reserved opcode"));
                }
            };
            rx.consume(len);
            if let Some(Incoming::Text(t)) = &out
                && std::str::from_utf8(t).is_err()
            {
                return Err(WsError::InvalidData("text frame is not UTF-8"));
            }
            if out.is_some() || rx.is_empty() {
                return Ok(out);
            }
        }
    }
}

/// The code of a close frame's payload (RFC 6455 section 5.5.1), validated.
fn close_code(payload: &[u8]) -> Result<Option<u16>, WsError> {
    match payload {
        [] => Ok(None),
        [_] => Err(WsError::Protocol("bad close frame")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !allowed || std::str::from_utf8(reason).is_err() {
                return Err(WsError::Protocol("bad close frame"));
            }
            Ok(Some(code))
        }
    }
}

/// Writes a server frame header (final, unmasked) for a payload of `len` bytes.
pub fn header(out: &mut Vec<u8>, opcode: OpCode, len: usize) {
    let h = FrameHeader { opcode, ..FrameHeader::default() };
    // Formatting into a Vec cannot fail.
    let _ = h.format(len as u64, out);
}

/// The frame for a rep's body: TEXT when it is valid UTF-8, BINARY otherwise.
pub fn data_header(out: &mut Vec<u8>, body: &[u8]) {
    let op = if std::str::from_utf8(body).is_ok() { Data::Text } else { Data::Binary };
    header(out, OpCode::Data(op), body.len());
}

/// The header of a BINARY frame of `len` payload bytes.
pub fn binary_header(out: &mut Vec<u8>, len: usize) {
    header(out, OpCode::Data(Data::Binary), len);
}

/// The header of a TEXT frame of `len` payload bytes (valid UTF-8 is the caller's promise).
pub fn text_header(out: &mut Vec<u8>, len: usize) {
    header(out, OpCode::Data(Data::Text), len);
}

/// A whole small TEXT frame.
pub fn text(out: &mut Vec<u8>, s: &str) {
    header(out, OpCode::Data(Data::Text), s.len());
    out.extend_from_slice(s.as_bytes());
}

/// A whole close frame with `code` and a short reason.
pub fn close(out: &mut Vec<u8>, code: u16, reason: &str) {
    header(out, OpCode::Control(Control::Close), 2 + reason.len());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
}

/// A pong echoing a ping's payload, or a ping of our own.
pub fn control(out: &mut Vec<u8>, c: Control, payload: &[u8]) {
    header(out, OpCode::Control(c), payload.len());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with a fixed key.
    fn client(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut v = vec![first];
        match payload.len() {
            n if n < 126 => v.push(0x80 | n as u8),
            n if n < 65536 => {
                v.push(0x80 | 126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                v.push(0x80 | 127);
                v.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        v.extend_from_slice(&mask);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        v
    }

    fn read_all(bytes: &[u8], max: usize) -> Vec<Result<Incoming, WsError>> {
        let mut rx = Buffer::default();
        rx.adopt(vec![0; bytes.len().max(16)]);
        let mut src = bytes;
        while !src.is_empty() {
            let _ = rx.read_from(&mut src, usize::MAX);
        }
        let mut r = Reader::new(max);
        let mut out = Vec::new();
        loop {
            match r.next(&mut rx) {
                Ok(Some(m)) => out.push(Ok(m)),
                Ok(None) if rx.is_empty() => return out,
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }

    #[test]
    fn messages_fragments_and_controls() {
        let mut bytes = client(0x81, b"hello");
        bytes.extend(client(0x02, b"ab"));
        bytes.extend(client(0x89, b"p"));
        bytes.extend(client(0x80, b"cd"));
        bytes.extend(client(0x8A, b""));
        bytes.extend(client(0x88, &[0x03, 0xE8, b'b', b'y', b'e']));
        let got = read_all(&bytes, 100);
        assert_eq!(
            got,
            vec![
                Ok(Incoming::Text(b"hello".to_vec())),
                Ok(Incoming::Ping(b"p".to_vec())),
                Ok(Incoming::Binary(b"abcd".to_vec())),
                Ok(Incoming::Pong),
                Ok(Incoming::Close(Some(1000))),
            ]
        );
        let big = vec![7u8; 70_000];
        assert_eq!(read_all(&client(0x82, &big), 100_000), vec![Ok(Incoming::Binary(big))]);
    }

    #[test]
    fn protocol_errors_name_their_codes() {
        let unmasked = vec![0x81, 0x01, b'a'];
        let rows: Vec<(Vec<u8>, u16)> = vec![
            (unmasked, 1002),
            (client(0xC1, b"x"), 1002),          // rsv1
            (client(0x83, b"x"), 1002),          // reserved data opcode
            (client(0x8B, b"x"), 1002),          // reserved control opcode
            (client(0x80, b"x"), 1002),          // continuation out of nowhere
            (client(0x09, b"x"), 1002),          // fragmented ping
            (client(0x89, &[0; 126]), 1002),     // control over 125 bytes
            (client(0x88, &[0x03]), 1002),       // one-byte close payload
            (client(0x88, &[0x03, 0xED]), 1002), // 1005 may not be sent
            (client(0x81, &[0xff, 0xfe]), 1007), // text not UTF-8
            (client(0x82, &[0; 101]), 1009),     // over the limit
            ([client(0x01, &[0; 60]), client(0x80, &[0; 60])].concat(), 1009),
            ([client(0x01, b"a"), client(0x81, b"b")].concat(), 1002),
        ];
        for (bytes, code) in rows {
            let got = read_all(&bytes, 100);
            match got.last() {
                Some(Err(e)) => assert_eq!(e.code(), code, "{bytes:?}"),
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn controls_between_fragments_do_not_count_against_the_message() {
        // Limit 104: 60 bytes of text, a 50-byte ping and a close, then the last byte.
        let mut bytes = client(0x01, &[b'a'; 60]);
        bytes.extend(client(0x89, &[b'p'; 50]));
        bytes.extend(client(0x8A, &[b'q'; 50]));
        bytes.extend(client(0x00, &[b'b'; 44]));
        bytes.extend(client(0x88, &[0x03, 0xE8, b'b', b'y', b'e']));
        bytes.extend(client(0x80, b""));
        let mut text = vec![b'a'; 60];
        text.extend_from_slice(&[b'b'; 44]);
        assert_eq!(
            read_all(&bytes, 104),
            vec![
                Ok(Incoming::Ping(vec![b'p'; 50])),
                Ok(Incoming::Pong),
                Ok(Incoming::Close(Some(1000))),
                Ok(Incoming::Text(text)),
            ]
        );
        // The continuations still count: one byte more is too big.
        let mut bytes = client(0x01, &[b'a'; 60]);
        bytes.extend(client(0x89, &[b'p'; 50]));
        bytes.extend(client(0x80, &[b'b'; 45]));
        assert_eq!(
            read_all(&bytes, 104),
            vec![Ok(Incoming::Ping(vec![b'p'; 50])), Err(WsError::TooBig)]
        );
        // A control frame alone still meets the limit.
        assert_eq!(read_all(&client(0x89, &[b'p'; 11]), 10), vec![Err(WsError::TooBig)]);
    }

    #[test]
    fn incomplete_frames_wait() {
        let bytes = client(0x81, b"hello world");
        for cut in 0..bytes.len() {
            assert_eq!(read_all(&bytes[..cut], 100), vec![], "cut {cut}");
        }
    }

    #[test]
    fn server_frames() {
        let mut v = Vec::new();
        data_header(&mut v, b"hi");
        assert_eq!(v, [0x81, 2]);
        v.clear();
        data_header(&mut v, &[0xff; 200]);
        assert_eq!(v, [0x82, 126, 0, 200]);
        v.clear();
        close(&mut v, 1001, "taken over");
        assert_eq!(v[..4], [0x88, 12, 0x03, 0xE9]);
        assert_eq!(&v[4..], b"taken over");
    }
}
