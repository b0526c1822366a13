//! Client websocket frames through `frame::Reader`, fed as a connection feeds them: arbitrary
//! bytes in arbitrary pieces through a `Buffer` (a small zero-filled `Vec`, grown by `read_from`
//! up to the cap a websocket connection uses). Server frames from `frame::header`, `data_header`,
//! `text`, `close` and `control` are read back with tungstenite's `FrameHeader::parse`.
//!
//! Input: `[max_sel, init, seed, max_step, stream...]`. The reader's limit is `8 * max_sel`
//! (0 to 2040). `init` sizes the buffer's first storage (0: the pool's 16 KiB). The stream is
//! read three ways: in one piece, one byte at a time, and in pieces of 1 to `max_step` bytes
//! drawn from an xorshift stream seeded by `seed`.
//!
//! Asserted:
//! - Every split gives the same messages and the same first error, and those are what an
//!   independent decoder (`reference`, written from RFC 6455 section 5) gives.
//! - An error's `code()` is 1002, 1007 or 1009, and the close frame esub would send for it is a
//!   valid control frame.
//! - No message exceeds the limit; Text is UTF-8; a Ping's payload is at most 125 bytes.
//! - A message is returned exactly when the frame completing it has been consumed. After
//!   `Ok(None)` the bytes consumed end on a frame boundary, and the next frame is incomplete.
//! - The buffer never fills up to the connection's cap while the reader waits (a whole frame of
//!   the largest message must fit, or the connection would stall).
#![no_main]

use std::io::Cursor;

use esub::conn::buffer::{Buffer, Io, READ_CHUNK};
use esub::ws::frame::{self, Incoming, Reader};
use libfuzzer_sys::fuzz_target;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// Longest frame header: 2 bytes, a 64-bit length, a mask.
const WS_HEADER_MAX: usize = 14;

/// What reading a stream comes to: messages, each with the stream offset just past the frame
/// that completed it, then maybe the close code of the error that ended the reading.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    messages: Vec<(Incoming, usize)>,
    error: Option<u16>,
}

/// Close codes a peer may send (RFC 6455 section 7.4: 1000-1003 and 1007-1011 are defined,
/// 1004-1006 and 1015 must not be sent, 3000-4999 are for libraries and applications).
fn close_code_ok(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// Frame geometry: (header length, payload length, end offset) of the frame at `at`, when its
/// header is all there.
fn geometry(s: &[u8], at: usize) -> Option<(usize, u64, Option<usize>)> {
    let h = s.get(at..)?;
    let &b1 = h.get(1)?;
    let ext = match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let head = 2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 };
    if h.len() < head {
        return None;
    }
    let len = match ext {
        0 => u64::from(b1 & 0x7F),
        n => h[2..2 + n].iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b)),
    };
    let end = usize::try_from(len).ok().and_then(|l| (at + head).checked_add(l));
    Some((head, len, end))
}

/// RFC 6455 section 5, read directly: what a server must make of a client's byte stream.
/// The checks run in the order esub runs them, so that when a frame breaks two rules the same
/// code comes out; every rule but the limit and UTF-8 gives 1002 anyway.
fn reference(s: &[u8], max: usize) -> (Outcome, Vec<usize>) {
    let mut messages = Vec::new();
    let mut boundaries = vec![0];
    let mut partial: Option<(bool, Vec<u8>)> = None;
    let mut at = 0;
    let error = loop {
        let Some((head, len, end)) = geometry(s, at) else { break None };
        let (b0, b1) = (s[at], s[at + 1]);
        let (fin, rsv, opcode, masked) =
            (b0 & 0x80 != 0, b0 & 0x70 != 0, b0 & 0x0F, b1 & 0x80 != 0);
        let control = opcode >= 8;
        // Opcodes 3-7 and 11-15 are reserved (section 5.2).
        if matches!(opcode, 3..=7 | 11..=15) {
            break Some(1002);
        }
        // Section 5.1: a server must close on an unmasked client frame.
        if !masked {
            break Some(1002);
        }
        // No extension was negotiated, so no reserved bit may be set.
        if rsv {
            break Some(1002);
        }
        // Section 5.5: control frames are not fragmented and carry at most 125 bytes.
        if control && (!fin || len > 125) {
            break Some(1002);
        }
        // Section 5.4: a control frame between fragments is no part of the message, and a new
        // data frame there is an error of its own; only a continuation adds to `so_far`.
        let so_far = match &partial {
            Some((_, p)) if opcode == 0 => p.len(),
            _ => 0,
        };
        if len > max.saturating_sub(so_far) as u64 {
            break Some(1009);
        }
        let Some(end) = end.filter(|&e| e <= s.len()) else { break None };
        let mask = &s[at + head - 4..at + head];
        let payload: Vec<u8> =
            s[at + head..end].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
        let message = match opcode {
            8 => match payload.as_slice() {
                [] => Some(Incoming::Close(None)),
                [_] => break Some(1002),
                [hi, lo, reason @ ..] => {
                    let code = u16::from_be_bytes([*hi, *lo]);
                    if !close_code_ok(code) || std::str::from_utf8(reason).is_err() {
                        break Some(1002);
                    }
                    Some(Incoming::Close(Some(code)))
                }
            },
            9 => Some(Incoming::Ping(payload)),
            10 => Some(Incoming::Pong),
            0 => {
                let Some((text, mut buf)) = partial.take() else { break Some(1002) };
                buf.extend_from_slice(&payload);
                if fin {
                    Some(if text { Incoming::Text(buf) } else { Incoming::Binary(buf) })
                } else {
                    partial = Some((text, buf));
                    None
                }
            }
            _ => {
                if partial.is_some() {
                    break Some(1002);
                }
                let text = opcode == 1;
                if fin {
                    Some(if text { Incoming::Text(payload) } else { Incoming::Binary(payload) })
                } else {
                    partial = Some((text, payload));
                    None
                }
            }
        };
        at = end;
        boundaries.push(at);
        if let Some(Incoming::Text(t)) = &message
            && std::str::from_utf8(t).is_err()
        {
            break Some(1007);
        }
        if let Some(m) = message {
            messages.push((m, at));
        }
    };
    (Outcome { messages, error }, boundaries)
}

/// Piece sizes: everything at once, one byte each, or xorshift sizes in `1..=max_step`.
enum Splits {
    Whole,
    Bytes,
    Random { state: u32, max_step: usize },
}

impl Splits {
    fn next(&mut self) -> usize {
        match self {
            Splits::Whole => usize::MAX,
            Splits::Bytes => 1,
            Splits::Random { state, max_step } => {
                *state ^= *state << 13;
                *state ^= *state >> 17;
                *state ^= *state << 5;
                1 + *state as usize % (*max_step).max(1)
            }
        }
    }
}

/// Reads `stream` through a `Buffer` in pieces, calling the reader after every read as a
/// connection does, and checks every step against the reference's frame boundaries.
fn read_split(
    stream: &[u8],
    max: usize,
    init: usize,
    mut splits: Splits,
    boundaries: &[usize],
) -> Outcome {
    let cap = max + WS_HEADER_MAX;
    let mut rx = Buffer::default();
    rx.adopt(vec![0; init]);
    let mut reader = Reader::new(max);
    let mut messages = Vec::new();
    let mut fed = 0;
    while fed < stream.len() {
        let step = splits.next().min(stream.len() - fed);
        let mut src = &stream[fed..fed + step];
        while !src.is_empty() {
            let before = src.len();
            match rx.read_from(&mut src, cap) {
                Io::Progress(n) => assert_eq!(n, before - src.len()),
                Io::WouldBlock => panic!(
                    "buffer full ({} bytes, cap {cap}) while the reader waits: the connection \
                     would stall",
                    rx.len()
                ),
                other => panic!("reading a slice: {other:?}"),
            }
            let read = fed + step - src.len();
            loop {
                let result = reader.next(&mut rx);
                let consumed = read - rx.len();
                match result {
                    Ok(Some(m)) => {
                        check_message(&m, max);
                        assert!(boundaries.contains(&consumed), "message ends at {consumed}");
                        messages.push((m, consumed));
                    }
                    Ok(None) => {
                        // Only whole frames are consumed, and what is left is not a whole frame.
                        assert!(boundaries.contains(&consumed), "consumed {consumed}: mid-frame");
                        let next_end = geometry(stream, consumed).and_then(|g| g.2);
                        assert!(
                            next_end.is_none_or(|end| end > read),
                            "Ok(None) with the frame at {consumed}..{next_end:?} all read ({read})"
                        );
                        break;
                    }
                    Err(e) => {
                        check_error(e);
                        return Outcome { messages, error: Some(e.code()) };
                    }
                }
            }
        }
        fed += step;
    }
    Outcome { messages, error: None }
}

fn check_message(m: &Incoming, max: usize) {
    match m {
        Incoming::Text(t) => {
            assert!(t.len() <= max, "text of {} bytes, limit {max}", t.len());
            assert!(std::str::from_utf8(t).is_ok(), "text message is not UTF-8");
        }
        Incoming::Binary(b) => assert!(b.len() <= max, "binary of {} bytes, limit {max}", b.len()),
        Incoming::Ping(p) => assert!(p.len() <= 125 && p.len() <= max, "ping of {}", p.len()),
        Incoming::Pong => {}
        Incoming::Close(code) => assert!(code.is_none_or(close_code_ok), "close code {code:?}"),
    }
}

/// The close frame esub sends for an error is one a client accepts.
fn check_error(e: frame::WsError) {
    assert!(matches!(e.code(), 1002 | 1007 | 1009), "close code {} for {e:?}", e.code());
    let mut out = Vec::new();
    frame::close(&mut out, e.code(), e.reason());
    let (h, len, head) = parse_server(&out);
    assert_eq!(h.opcode, OpCode::Control(Control::Close));
    assert!(len <= 125, "close frame of {len} bytes for {e:?}");
    assert_eq!(head + len as usize, out.len());
    let payload = &out[head..];
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), e.code());
    assert!(std::str::from_utf8(&payload[2..]).is_ok(), "reason is UTF-8");
}

/// A server frame's header, read back: final, no reserved bits, unmasked.
fn parse_server(bytes: &[u8]) -> (FrameHeader, u64, usize) {
    let mut cursor = Cursor::new(bytes);
    let (h, len) = match FrameHeader::parse(&mut cursor) {
        Ok(Some(h)) => h,
        other => panic!("server frame header {bytes:02x?} does not parse: {other:?}"),
    };
    assert!(h.is_final && !h.rsv1 && !h.rsv2 && !h.rsv3, "{h:?}");
    assert_eq!(h.mask, None, "server frames are unmasked");
    (h, len, cursor.position() as usize)
}

/// Every server frame builder, with lengths and payloads from the input.
fn check_server_frames(input: &[u8]) {
    let mut raw = [0u8; 8];
    let n = input.len().min(8);
    raw[..n].copy_from_slice(&input[..n]);
    let big = u64::from_le_bytes(raw) as usize;
    let opcodes = [
        OpCode::Data(Data::Text),
        OpCode::Data(Data::Binary),
        OpCode::Data(Data::Continue),
        OpCode::Control(Control::Close),
        OpCode::Control(Control::Ping),
        OpCode::Control(Control::Pong),
    ];
    for (i, op) in opcodes.into_iter().enumerate() {
        // Control frames are never longer than 125 bytes; data frames may be of any length.
        let lens: &[usize] = if i >= 3 {
            &[big % 126, 0, 125]
        } else {
            &[big, big & 0xFFFF, big & 0x7F, 125, 126, 65535, 65536]
        };
        for &len in lens {
            let mut out = Vec::new();
            frame::header(&mut out, op, len);
            let (h, got, head) = parse_server(&out);
            assert_eq!((h.opcode, got, head), (op, len as u64, out.len()), "header {op:?} {len}");
            // The shortest length encoding (section 5.2: the minimal number of bytes).
            let want_head = match len {
                0..=125 => 2,
                126..=65535 => 4,
                _ => 10,
            };
            assert_eq!(head, want_head, "length {len} in {head} bytes");
        }
    }

    let mut out = Vec::new();
    frame::data_header(&mut out, input);
    let (h, len, head) = parse_server(&out);
    let want = if std::str::from_utf8(input).is_ok() { Data::Text } else { Data::Binary };
    assert_eq!((h.opcode, len, head), (OpCode::Data(want), input.len() as u64, out.len()));

    let s = String::from_utf8_lossy(input);
    let mut out = Vec::new();
    frame::text(&mut out, &s);
    let (h, len, head) = parse_server(&out);
    assert_eq!((h.opcode, len), (OpCode::Data(Data::Text), s.len() as u64));
    assert_eq!(&out[head..], s.as_bytes());

    let code = u16::from_le_bytes([raw[0], raw[1]]);
    let reason: String = s.chars().take(40).collect();
    let mut out = Vec::new();
    frame::close(&mut out, code, &reason);
    let (h, len, head) = parse_server(&out);
    assert_eq!((h.opcode, len), (OpCode::Control(Control::Close), 2 + reason.len() as u64));
    assert_eq!(out[head..head + 2], code.to_be_bytes());
    assert_eq!(&out[head + 2..], reason.as_bytes());

    let payload = &input[..input.len().min(125)];
    for c in [Control::Ping, Control::Pong] {
        let mut out = Vec::new();
        frame::control(&mut out, c, payload);
        let (h, len, head) = parse_server(&out);
        assert_eq!((h.opcode, len), (OpCode::Control(c), payload.len() as u64));
        assert_eq!(&out[head..], payload);
    }
}

fuzz_target!(|data: &[u8]| {
    let [max_sel, init, seed, max_step, ref stream @ ..] = *data else {
        return;
    };
    let max = usize::from(max_sel) * 8;
    let init = if init == 0 { READ_CHUNK } else { usize::from(init) };
    let (want, boundaries) = reference(stream, max);
    for (m, _) in &want.messages {
        check_message(m, max);
    }
    let splits = [
        Splits::Whole,
        Splits::Bytes,
        Splits::Random { state: 0x9e37_79b9 ^ u32::from(seed), max_step: usize::from(max_step) },
    ];
    for s in splits {
        let got = read_split(stream, max, init, s, &boundaries);
        assert_eq!(got, want, "the reader differs from the reference");
    }
    check_server_frames(stream);
});
