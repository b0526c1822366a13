//! The client side of RFC 6455 that the websocket subscribers need: the upgrade request and the
//! check of its `101`, server frames parsed in place (fragments joined), and masked client
//! frames (a pong, a close). Written here rather than shared with the server, so it checks it.

use crate::digest::{base64, sha1};
use crate::http::{self, Response};

/// Appended to the client's key before hashing (RFC 6455 section 1.3).
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest message accepted from a server: esub's default body limit, so any rep fits; more
/// means a broken stream.
pub const MAX_MESSAGE: usize = 1 << 20;

/// Control frames carry at most 125 bytes (section 5.5).
const MAX_CONTROL: usize = 125;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(b: u8) -> Option<Opcode> {
        Some(match b {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// What makes a server's stream unusable; the sub reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Reserved bits set (no extension was negotiated) or a reserved opcode.
    Reserved,
    /// A server frame with the mask bit: servers must not mask (section 5.1).
    Masked,
    /// A control frame fragmented or over 125 bytes.
    BadControl,
    /// A continuation with no message open, or a new message inside an open one.
    Fragmentation,
    /// A message over `MAX_MESSAGE`.
    TooBig,
}

/// One frame header, payload at `start..end` of the parsed buffer; `end` bytes were used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: Opcode,
    pub start: usize,
    pub end: usize,
}

/// Parses the server frame at the start of `buf`; `Ok(None)` while it is incomplete.
pub fn parse_frame(buf: &[u8]) -> Result<Option<Frame>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::Reserved);
    }
    if b1 & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(FrameError::Reserved)?;
    let (len, start) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().map_err(|_| FrameError::TooBig)?), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode.is_control() && (!fin || len > MAX_CONTROL as u64) {
        return Err(FrameError::BadControl);
    }
    if len > MAX_MESSAGE as u64 {
        return Err(FrameError::TooBig);
    }
    let end = start + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some(Frame { fin, opcode, start, end }))
}

/// Appends one masked client frame (section 5.3: every client frame is masked).
pub fn write_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode.bits());
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// What the server sent, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A whole TEXT or BINARY message.
    Message {
        text: bool,
        body: &'a [u8],
    },
    Ping(&'a [u8]),
    Pong,
    /// The close code and reason, if given.
    Close(Option<u16>, &'a [u8]),
    /// A fragment of a message still open: nothing to act on yet.
    Fragment,
}

/// Joins fragmented messages; an unfragmented one is handed out straight from the buffer.
#[derive(Debug, Default)]
pub struct Reader {
    /// The open fragmented message: is it text, and its bytes so far.
    partial: Option<(bool, Vec<u8>)>,
    /// `partial` was handed out whole by the last call; drop it on the next.
    done: bool,
}

impl Reader {
    /// The next thing in `buf` and the bytes it used; `Ok(None)` when a frame is incomplete.
    pub fn next<'a>(
        &'a mut self,
        buf: &'a [u8],
    ) -> Result<Option<(Incoming<'a>, usize)>, FrameError> {
        if std::mem::take(&mut self.done) {
            self.partial = None;
        }
        let Some(f) = parse_frame(buf)? else {
            return Ok(None);
        };
        let payload = &buf[f.start..f.end];
        let incoming = match f.opcode {
            Opcode::Text | Opcode::Binary => {
                if self.partial.is_some() {
                    return Err(FrameError::Fragmentation);
                }
                let text = f.opcode == Opcode::Text;
                if f.fin {
                    Incoming::Message { text, body: payload }
                } else {
                    self.partial = Some((text, payload.to_vec()));
                    Incoming::Fragment
                }
            }
            Opcode::Continuation => {
                let (text, body) = self.partial.as_mut().ok_or(FrameError::Fragmentation)?;
                if body.len() + payload.len() > MAX_MESSAGE {
                    return Err(FrameError::TooBig);
                }
                body.extend_from_slice(payload);
                if f.fin {
                    self.done = true;
                    Incoming::Message { text: *text, body }
                } else {
                    Incoming::Fragment
                }
            }
            Opcode::Ping => Incoming::Ping(payload),
            Opcode::Pong => Incoming::Pong,
            Opcode::Close => match payload {
                [a, b, reason @ ..] => Incoming::Close(Some(u16::from_be_bytes([*a, *b])), reason),
                _ => Incoming::Close(None, b""),
            },
        };
        Ok(Some((incoming, f.end)))
    }
}

/// Mask keys and handshake keys: xorshift64*. Masking only has to keep a client's bytes from
/// being predictable to an intermediary (section 10.3); nothing here is secret.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn mask(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }

    /// A `Sec-WebSocket-Key`: 16 random bytes in base64 (section 4.1).
    pub fn handshake_key(&mut self) -> String {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&self.next_u64().to_ne_bytes());
        raw[8..].copy_from_slice(&self.next_u64().to_ne_bytes());
        base64(&raw)
    }
}

/// The `Sec-WebSocket-Accept` a server must answer to `key`.
pub fn accept_value(key: &str) -> String {
    base64(&sha1(&[key.as_bytes(), GUID]))
}

/// `GET <path_prefix><key>` asking for a websocket, in `out`.
pub fn upgrade_request(out: &mut Vec<u8>, path_prefix: &str, prefix: &[u8], idx: usize, key: &str) {
    out.clear();
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path_prefix.as_bytes());
    http::push_key(out, prefix, idx);
    out.extend_from_slice(
        b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ",
    );
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// Checks the answer to an upgrade request (section 4.1, the client's checks); the error says
/// what was wrong.
pub fn check_upgrade(buf: &[u8], resp: &Response, key: &str) -> Result<(), String> {
    if resp.status != 101 {
        let body = String::from_utf8_lossy(resp.body(buf));
        return Err(format!("upgrade answered {}: {body:?}", resp.status));
    }
    let head = &buf[..resp.len];
    let has = |name: &[u8], token: &[u8]| {
        http::header(head, name).is_some_and(|v| {
            v.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
        })
    };
    if !has(b"upgrade", b"websocket") || !has(b"connection", b"upgrade") {
        return Err("101 without Upgrade: websocket and Connection: upgrade".into());
    }
    let accept = http::header(head, b"sec-websocket-accept").unwrap_or(b"");
    if accept != accept_value(key).as_bytes() {
        return Err(format!(
            "Sec-WebSocket-Accept {:?}, expected {:?}",
            String::from_utf8_lossy(accept),
            accept_value(key)
        ));
    }
    if http::header(head, b"sec-websocket-extensions").is_some() {
        return Err("101 with an extension the client did not offer".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame (unmasked) with a given first byte.
    fn server_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![b0];
        match payload.len() {
            n if n < 126 => v.push(n as u8),
            n if n <= 0xFFFF => {
                v.push(126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                v.push(127);
                v.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn rfc_accept_example() {
        // RFC 6455 section 1.3.
        assert_eq!(accept_value("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let mut rng = Rng::new(7);
        let key = rng.handshake_key();
        assert_eq!(key.len(), 24);
        assert_ne!(key, rng.handshake_key());
    }

    #[test]
    fn masked_frames_match_the_rfc() {
        // RFC 6455 section 5.7: a masked "Hello".
        let mut out = Vec::new();
        write_frame(&mut out, Opcode::Text, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(out, [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
        // Lengths at the encoding boundaries: 7 bits, 16 bits, 64 bits.
        for (n, header) in [(125usize, 6usize), (126, 8), (65535, 8), (65536, 14)] {
            let mut out = Vec::new();
            write_frame(&mut out, Opcode::Binary, &vec![9u8; n], [1, 2, 3, 4]);
            assert_eq!(out.len(), header + n, "{n}");
            assert_eq!(out[1] & 0x80, 0x80, "mask bit");
            let mask = [out[header - 4], out[header - 3], out[header - 2], out[header - 1]];
            assert_eq!(mask, [1, 2, 3, 4]);
            assert!(out[header..].iter().enumerate().all(|(i, b)| b ^ mask[i & 3] == 9));
        }
    }

    #[test]
    fn server_frames() {
        let rows: &[(Vec<u8>, Frame)] = &[
            (
                server_frame(0x81, b"Hello"),
                Frame { fin: true, opcode: Opcode::Text, start: 2, end: 7 },
            ),
            (
                server_frame(0x02, &[0; 200]),
                Frame { fin: false, opcode: Opcode::Binary, start: 4, end: 204 },
            ),
            (
                server_frame(0x80, &[1; 70000]),
                Frame { fin: true, opcode: Opcode::Continuation, start: 10, end: 70010 },
            ),
            (server_frame(0x89, b""), Frame { fin: true, opcode: Opcode::Ping, start: 2, end: 2 }),
        ];
        for (raw, want) in rows {
            assert_eq!(parse_frame(raw), Ok(Some(*want)));
            for cut in 0..raw.len() {
                assert_eq!(parse_frame(&raw[..cut]), Ok(None), "cut {cut}");
            }
        }
    }

    #[test]
    fn bad_server_frames() {
        let mut masked = server_frame(0x81, b"x");
        masked[1] |= 0x80;
        let rows: &[(Vec<u8>, FrameError)] = &[
            (server_frame(0xC1, b"x"), FrameError::Reserved),
            (server_frame(0x83, b"x"), FrameError::Reserved),
            (masked, FrameError::Masked),
            (server_frame(0x09, b""), FrameError::BadControl),
            (server_frame(0x89, &[0; 126]), FrameError::BadControl),
            (vec![0x82, 127, 0, 0, 0, 0, 0, 0x20, 0, 0], FrameError::TooBig),
        ];
        for (raw, err) in rows {
            assert_eq!(parse_frame(raw), Err(*err), "{:?}", &raw[..2]);
        }
    }

    /// Feeds `stream` through a reader, returning what came out (messages as owned bytes).
    fn read_all(stream: &[u8]) -> Result<Vec<String>, FrameError> {
        let mut r = Reader::default();
        let mut out = Vec::new();
        let mut pos = 0;
        while let Some((inc, used)) = r.next(&stream[pos..])? {
            out.push(match inc {
                Incoming::Message { text, body } => {
                    format!(
                        "{}:{}",
                        if text { "text" } else { "bin" },
                        String::from_utf8_lossy(body)
                    )
                }
                Incoming::Ping(p) => format!("ping:{}", String::from_utf8_lossy(p)),
                Incoming::Pong => "pong".into(),
                Incoming::Close(code, why) => {
                    format!("close:{code:?}:{}", String::from_utf8_lossy(why))
                }
                Incoming::Fragment => "frag".into(),
            });
            pos += used;
        }
        assert_eq!(pos, stream.len(), "all consumed");
        Ok(out)
    }

    #[test]
    fn reader_joins_fragments_around_control_frames() {
        let mut s = server_frame(0x81, b"one");
        s.extend(server_frame(0x01, b"tw"));
        s.extend(server_frame(0x89, b"p"));
        s.extend(server_frame(0x80, b"o"));
        s.extend(server_frame(0x82, b"three"));
        s.extend(server_frame(0x8A, b""));
        s.extend(server_frame(0x88, b"\x03\xe9taken over"));
        s.extend(server_frame(0x88, b""));
        assert_eq!(
            read_all(&s).unwrap(),
            [
                "text:one",
                "frag",
                "ping:p",
                "text:two",
                "bin:three",
                "pong",
                "close:Some(1001):taken over",
                "close:None:"
            ]
        );
        let mut bad = server_frame(0x01, b"a");
        bad.extend(server_frame(0x81, b"b"));
        assert_eq!(read_all(&bad), Err(FrameError::Fragmentation));
        assert_eq!(read_all(&server_frame(0x80, b"a")), Err(FrameError::Fragmentation));
    }

    #[test]
    fn upgrade_checks() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let mut req = Vec::new();
        upgrade_request(&mut req, "/psub/", b"bk", 3, key);
        let req = String::from_utf8(req).unwrap();
        assert!(req.starts_with("GET /psub/bk3 HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        assert!(req.ends_with("\r\n\r\n"));
        let check = |raw: &str| {
            let r = http::parse_response(raw.as_bytes()).unwrap().unwrap();
            check_upgrade(raw.as_bytes(), &r, key)
        };
        let good = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(check(good), Ok(()));
        // nginx spells it in lower case and may list more than one connection token.
        let nginx = "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nconnection: keep-alive, upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(check(nginx), Ok(()));
        for bad in [
            good.replace("s3pP", "xxxx"),
            good.replace("Upgrade: websocket\r\n", ""),
            good.replace("\r\n\r\n", "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"),
            "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno".to_string(),
        ] {
            assert!(check(&bad).is_err(), "{bad}");
        }
    }
}
