//! Websocket helpers for the end-to-end tests: a tungstenite client with timeouts, and a raw
//! client that writes hand-built (masked or not) frames and reads the server's frames itself.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use super::{IO_TIMEOUT, Server};

// ---------------------------------------------------------------------------------------------
// tungstenite client helpers
// ---------------------------------------------------------------------------------------------

pub type Ws = WebSocket<TcpStream>;

pub fn tcp(s: &Server) -> TcpStream {
    let t = TcpStream::connect_timeout(&s.addr, IO_TIMEOUT).expect("connect");
    t.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    t.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    t.set_nodelay(true).unwrap();
    t
}

/// Upgrade `path` with tungstenite; the member is in its pool once this returns (the server
/// joins before it answers 101).
#[track_caller]
pub fn ws_join(s: &Server, path: &str) -> Ws {
    let url = format!("ws://{}{}", s.addr, path);
    match tungstenite::client(url.as_str(), tcp(s)) {
        Ok((ws, resp)) => {
            assert_eq!(resp.status().as_u16(), 101, "{path}: {resp:?}");
            ws
        }
        Err(e) => panic!("websocket handshake for {path} failed: {e}"),
    }
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// The next message that is not a ping or pong.
#[track_caller]
pub fn recv(ws: &mut Ws) -> Message {
    loop {
        match ws.read() {
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(m) => return m,
            Err(e) => panic!("websocket read failed: {e}"),
        }
    }
}

/// The next data message: (is it TEXT, its bytes).
#[track_caller]
pub fn recv_data(ws: &mut Ws) -> (bool, Vec<u8>) {
    match recv(ws) {
        Message::Text(t) => (true, t.as_bytes().to_vec()),
        Message::Binary(b) => (false, b.to_vec()),
        other => panic!("expected a data message, got {other:?}"),
    }
}

#[track_caller]
pub fn recv_bytes(ws: &mut Ws) -> Vec<u8> {
    recv_data(ws).1
}

/// The next non-ping message must be a close frame with `code` (and `reason` when given); the
/// server must then close the TCP connection.
#[track_caller]
pub fn expect_close(ws: &mut Ws, code: u16, reason: Option<&str>) {
    match recv(ws) {
        Message::Close(Some(CloseFrame { code: c, reason: r })) => {
            assert_eq!(u16::from(c), code, "close code (reason {:?})", r.as_str());
            if let Some(want) = reason {
                assert_eq!(r.as_str(), want, "close reason");
            }
        }
        other => panic!("expected close {code}, got {other:?}"),
    }
    expect_eof(ws.get_mut());
}

/// The peer closes the TCP connection (EOF or reset) within the I/O timeout; no byte arrives.
#[track_caller]
pub fn expect_eof(t: &mut TcpStream) {
    let mut b = [0u8; 256];
    match t.read(&mut b) {
        Ok(0) => {}
        Ok(n) => panic!("expected EOF, got {n} more bytes: {:?}", &b[..n]),
        Err(e) if is_timeout(&e) => panic!("socket still open after {IO_TIMEOUT:?}"),
        Err(_) => {} // reset: closed too
    }
}

/// No data or close arrives for `quiet` (pings are allowed).
#[track_caller]
pub fn expect_quiet(ws: &mut Ws, quiet: Duration) {
    let deadline = Instant::now() + quiet;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        ws.get_mut().set_read_timeout(Some(left)).unwrap();
        match ws.read() {
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(m) => panic!("expected nothing for {quiet:?}, got {m:?}"),
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => break,
            Err(e) => panic!("expected nothing for {quiet:?}, got error {e}"),
        }
    }
    ws.get_mut().set_read_timeout(Some(IO_TIMEOUT)).unwrap();
}

pub fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() }))
}

// ---------------------------------------------------------------------------------------------
// Raw websocket helpers (hand-built frames)
// ---------------------------------------------------------------------------------------------

/// RFC 6455 section 1.3's example key and its accept value.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: esub\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {WS_KEY}\r\n\r\n"
    )
}

/// A client frame (masked). `first` is FIN/RSV/opcode, e.g. 0x81 for a final TEXT frame.
pub fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut v = vec![first];
    push_len(&mut v, 0x80, payload.len());
    v.extend_from_slice(&mask);
    v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    v
}

/// A frame without a mask (forbidden from a client).
pub fn unmasked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    push_len(&mut v, 0, payload.len());
    v.extend_from_slice(payload);
    v
}

pub fn push_len(v: &mut Vec<u8>, mask_bit: u8, n: usize) {
    if n < 126 {
        v.push(mask_bit | n as u8);
    } else if n < 65536 {
        v.push(mask_bit | 126);
        v.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        v.push(mask_bit | 127);
        v.extend_from_slice(&(n as u64).to_be_bytes());
    }
}

pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// A websocket spoken by hand over a plain socket.
pub struct Raw {
    pub s: TcpStream,
    pub buf: Vec<u8>,
}

/// What a raw read saw.
#[derive(Debug, PartialEq, Eq)]
pub enum RawFrame {
    /// First byte (FIN + opcode) and payload.
    Frame(u8, Vec<u8>),
    /// The server closed the TCP connection.
    Eof,
}

/// Writes the upgrade request for `path` and `extra` in ONE write, reads the 101 head and
/// checks it. Bytes after the head stay buffered as the first frames.
#[track_caller]
pub fn raw_upgrade(s: &Server, path: &str, extra: &[u8]) -> Raw {
    let mut t = tcp(s);
    let mut req = upgrade_request(path).into_bytes();
    req.extend_from_slice(extra);
    t.write_all(&req).expect("write upgrade");
    let mut raw = Raw { s: t, buf: Vec::new() };
    let end = loop {
        if let Some(i) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        assert!(
            raw.fill(),
            "closed before the 101 head; got {:?}",
            String::from_utf8_lossy(&raw.buf)
        );
    };
    let head = String::from_utf8(raw.buf[..end].to_vec()).expect("utf-8 head");
    raw.buf.drain(..end);
    assert!(head.starts_with("HTTP/1.1 101 "), "not a 101: {head:?}");
    let has = |name: &str, value: &str| {
        head.split("\r\n").any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.eq_ignore_ascii_case(name) && v.trim().eq_ignore_ascii_case(value)
            })
        })
    };
    assert!(has("upgrade", "websocket"), "no Upgrade: websocket in {head:?}");
    assert!(has("connection", "upgrade"), "no Connection: Upgrade in {head:?}");
    assert!(
        head.split("\r\n").any(|l| l.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == WS_ACCEPT
        })),
        "bad or missing Sec-WebSocket-Accept in {head:?}"
    );
    raw
}

impl Raw {
    /// Reads more bytes; `false` on EOF or reset. A timeout fails the test.
    #[track_caller]
    pub fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.s.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if is_timeout(&e) => panic!("raw read timed out after {IO_TIMEOUT:?}"),
            Err(_) => false,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("raw write");
    }

    /// The next server frame, which must be final and unmasked; `Eof` when the server closed.
    #[track_caller]
    pub fn frame(&mut self) -> RawFrame {
        loop {
            if let Some((first, payload, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return RawFrame::Frame(first, payload);
            }
            if !self.fill() {
                assert!(self.buf.is_empty(), "connection closed inside a frame: {:?}", self.buf);
                return RawFrame::Eof;
            }
        }
    }

    /// The next frame that is not a ping (0x89) or pong (0x8A).
    #[track_caller]
    pub fn frame_skip_control(&mut self) -> RawFrame {
        loop {
            match self.frame() {
                RawFrame::Frame(0x89 | 0x8A, _) => continue,
                f => return f,
            }
        }
    }

    /// The next data frame's payload (pings/pongs skipped).
    #[track_caller]
    pub fn data(&mut self) -> (u8, Vec<u8>) {
        match self.frame_skip_control() {
            RawFrame::Frame(op @ (0x81 | 0x82), p) => (op, p),
            other => panic!("expected a data frame, got {other:?}"),
        }
    }

    /// The next frame (pings skipped) is a close with `code` (and `reason` when given), then
    /// the server closes the connection.
    #[track_caller]
    pub fn expect_close(&mut self, code: u16, reason: Option<&str>) {
        match self.frame_skip_control() {
            RawFrame::Frame(0x88, p) => {
                assert!(p.len() >= 2, "close frame without a code: {p:?}");
                let got = u16::from_be_bytes([p[0], p[1]]);
                let text = String::from_utf8_lossy(&p[2..]).into_owned();
                assert_eq!(got, code, "close code (reason {text:?})");
                if let Some(want) = reason {
                    assert_eq!(text, want, "close reason");
                }
            }
            other => panic!("expected close {code}, got {other:?}"),
        }
        assert_eq!(self.frame(), RawFrame::Eof, "server must close the socket after its close");
    }
}

/// (first byte, payload, bytes used) of a complete server frame at the start of `b`.
pub fn parse_server_frame(b: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if b.len() < 2 {
        return None;
    }
    assert!(b[0] & 0x80 != 0, "server frame not final: {:#x}", b[0]);
    assert!(b[0] & 0x70 == 0, "server frame with RSV bits: {:#x}", b[0]);
    assert!(b[1] & 0x80 == 0, "server frame is masked");
    let (len, head) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if b.len() < head + len {
        return None;
    }
    Some((b[0], b[head..head + len].to_vec(), head + len))
}
