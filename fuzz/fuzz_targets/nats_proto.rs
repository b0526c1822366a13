//! The NATS protocol parser over bytes as a socket delivers them: in arbitrary pieces. The
//! operations and the verdict must not depend on the split, a wait must stay within the bound a
//! receive buffer is sized by, and nothing may allocate by a length read off the input.
//!
//! Input: `[limit, max_step, seed, bytes...]`. `limit` sets `max_payload` (16 bytes a step, 255
//! = the 1 MiB default); `max_step` and `seed` the pieces (an xorshift stream of sizes in
//! `1..=max_step`; 0 = one piece). The bytes are a server's side of a connection.
#![no_main]

use esub::cluster::Headers;
use esub::cluster::proto::{self, DEFAULT_MAX_PAYLOAD, MAX_LINE, Msg, Op, ProtoError, parse};
use libfuzzer_sys::fuzz_target;

/// Inputs are at most a few KiB; anything near this came from an announced length.
#[path = "shared/bounded.rs"]
mod bounded;

/// An operation with its bytes copied out, to compare across buffers.
#[derive(Debug, PartialEq)]
enum Owned {
    Info(String),
    Msg {
        subject: Vec<u8>,
        sid: u64,
        reply: Option<Vec<u8>>,
        headers: Option<Vec<u8>>,
        payload: Vec<u8>,
    },
    Ping,
    Pong,
    Ok,
    Err(Vec<u8>),
}

fn own(op: &Op<'_>) -> Owned {
    match op {
        Op::Info(i) => Owned::Info(format!("{i:?}")),
        Op::Msg(m) => Owned::Msg {
            subject: m.subject.to_vec(),
            sid: m.sid,
            reply: m.reply.map(<[u8]>::to_vec),
            headers: m.headers.map(<[u8]>::to_vec),
            payload: m.payload.to_vec(),
        },
        Op::Ping => Owned::Ping,
        Op::Pong => Owned::Pong,
        Op::Ok => Owned::Ok,
        Op::Err(t) => Owned::Err(t.to_vec()),
    }
}

/// How a stream ends: bytes left waiting for more, or the error that stopped it.
type Verdict = Result<usize, ProtoError>;

/// The most a parser may wait on: a control line and a payload with its CR LF.
fn bound(max_payload: usize) -> usize {
    MAX_LINE + max_payload.min(proto::HARD_MAX_PAYLOAD) + 2
}

struct Splits {
    state: u32,
    max_step: usize,
}

impl Splits {
    fn next(&mut self) -> usize {
        if self.max_step == 0 {
            return usize::MAX;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        1 + self.state as usize % self.max_step
    }
}

/// The stream in one buffer, with every operation's own checks.
fn whole(stream: &[u8], max_payload: usize) -> (Vec<Owned>, Verdict) {
    let mut ops = Vec::new();
    let mut at = 0;
    loop {
        let rest = &stream[at..];
        match parse(rest, max_payload) {
            Ok(Some((op, n))) => {
                assert!(n > 0 && n <= rest.len(), "consumed {n} of {}", rest.len());
                // Exactly its bytes: alone it parses the same, and one byte short it waits.
                assert_eq!(parse(&rest[..n], max_payload), Ok(Some((op.clone(), n))));
                assert_eq!(parse(&rest[..n - 1], max_payload), Ok(None), "complete early");
                check_op(&op, max_payload);
                ops.push(own(&op));
                at += n;
            }
            Ok(None) => {
                assert!(rest.len() < bound(max_payload), "waits on {} bytes", rest.len());
                return (ops, Ok(rest.len()));
            }
            Err(e) => return (ops, Err(e)),
        }
    }
}

fn check_op(op: &Op<'_>, max_payload: usize) {
    let Op::Msg(Msg { headers, payload, subject, reply, .. }) = op else { return };
    let hdr = headers.map_or(0, <[u8]>::len);
    assert!(hdr + payload.len() <= max_payload, "{} + {} bytes", hdr, payload.len());
    assert!(!subject.is_empty() && reply.is_none_or(|r| !r.is_empty()));
    let blank = |b: &u8| *b == b' ' || *b == b'\t' || *b == b'\r' || *b == b'\n';
    assert!(!subject.iter().any(blank) && !reply.unwrap_or_default().iter().any(blank));
    // A header block that parses writes back to a block that parses the same.
    if let Some(block) = headers
        && let Ok(h) = Headers::parse(block)
    {
        let mut out = Vec::new();
        h.encode(&mut out).expect("a parsed header block encodes");
        assert_eq!(Headers::parse(&out), Ok(h), "header round trip");
    }
}

/// The stream fed in pieces, as the client's receive buffer gets it: unparsed bytes stay in
/// front and the next piece goes after them.
fn split(stream: &[u8], max_payload: usize, splits: &mut Splits) -> (Vec<Owned>, Verdict) {
    let mut ops = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut at = 0;
    loop {
        loop {
            match parse(&pending, max_payload) {
                Ok(Some((op, n))) => {
                    ops.push(own(&op));
                    pending.drain(..n);
                }
                Ok(None) => break,
                Err(e) => return (ops, Err(e)),
            }
        }
        assert!(pending.len() < bound(max_payload), "waits on {} bytes", pending.len());
        if at == stream.len() {
            return (ops, Ok(pending.len()));
        }
        let step = splits.next().min(stream.len() - at);
        pending.extend_from_slice(&stream[at..at + step]);
        at += step;
    }
}

/// A PUB or HPUB the encoder writes, turned into the MSG or HMSG a server would deliver for it,
/// parses back to the same subject, reply, headers and payload.
fn check_encoder(stream: &[u8]) {
    let text = String::from_utf8_lossy(&stream[..stream.len().min(40)]);
    let mut words = text.split([' ', '\t', '\r', '\n']);
    let subject = words.next().unwrap_or_default();
    let reply = words.next().filter(|r| proto::valid_subject(r, false));
    let payload = &stream[stream.len().min(40)..];
    let mut h = Headers::new();
    h.append("Esub-Op", "rep").append("K", &subject.replace(['\r', '\n'], ""));
    let mut block = Vec::new();
    let headers = (stream.len() % 2 == 0 && h.encode(&mut block).is_ok()).then_some(&block[..]);
    let mut out = Vec::new();
    if proto::publish(&mut out, subject, reply, headers, payload).is_err() {
        assert!(out.is_empty(), "a refused publish wrote bytes");
        assert!(!proto::valid_subject(subject, false));
        return;
    }
    let (op, rest) = if headers.is_some() { ("HMSG", &out[5..]) } else { ("MSG", &out[4..]) };
    let rest = &rest[subject.len()..];
    let wire = [format!("{op} {subject} 9").as_bytes(), rest].concat();
    let want = Op::Msg(Msg {
        subject: subject.as_bytes(),
        sid: 9,
        reply: reply.map(str::as_bytes),
        headers,
        payload,
    });
    assert_eq!(parse(&wire, DEFAULT_MAX_PAYLOAD), Ok(Some((want, wire.len()))));
}

fuzz_target!(|data: &[u8]| {
    let [limit, max_step, seed, ref stream @ ..] = *data else {
        return;
    };
    let max_payload = match limit {
        255 => DEFAULT_MAX_PAYLOAD,
        n => usize::from(n) * 16,
    };
    let one = whole(stream, max_payload);
    let mut splits =
        Splits { state: 0x9e37_79b9 ^ u32::from(seed), max_step: usize::from(max_step) };
    let pieces = split(stream, max_payload, &mut splits);
    assert_eq!(one, pieces, "split parsing differs from parsing in one piece");
    check_encoder(stream);
});
