//! Request heads and chunked bodies as they arrive from a socket: in arbitrary pieces. The result
//! must not depend on how the bytes were split, and what is accepted must respect the limits.
//!
//! Input: `[head_limit, body_limit, max_step, seed, bytes...]`. The first four bytes choose the
//! limits and the split points (an xorshift stream of piece sizes in `1..=max_step`; 0 = one
//! piece); the rest is the byte stream: one or more pipelined requests.
#![no_main]

use esub::http::request::{ChunkedDecoder, Framing, HttpError, parse_head};
use esub::ws::handshake::UpgradeHeaders;
use libfuzzer_sys::fuzz_target;

/// Prefixes re-parsed per head: each is a full `parse_head`, so unbounded would be quadratic.
const MAX_PREFIXES: usize = 64;
/// Requests followed down one pipelined stream.
const MAX_REQUESTS: usize = 8;
/// A chunk-size line longer than this is refused while still incomplete (see `ChunkedDecoder`).
const MAX_SIZE_LINE: usize = 1024;

/// The fields of a `Head`, comparable.
type Shape<'a> = (&'a str, &'a [u8], u8, usize, Framing, bool, bool, UpgradeHeaders);
type Parsed<'a> = Result<Option<Shape<'a>>, HttpError>;

fn parse(buf: &[u8], max_head: usize, max_body: usize) -> Parsed<'_> {
    parse_head(buf, max_head, max_body).map(|h| {
        h.map(|h| {
            (
                h.method,
                h.target,
                h.minor,
                h.len,
                h.framing,
                h.keep_alive,
                h.expect_continue,
                h.upgrade,
            )
        })
    })
}

/// Piece sizes for one stream, from the control bytes.
struct Splits {
    state: u32,
    max_step: usize,
}

impl Splits {
    fn new(max_step: u8, seed: u8) -> Splits {
        Splits { state: 0x9e37_79b9 ^ u32::from(seed), max_step: usize::from(max_step) }
    }

    /// The next piece size; `usize::MAX` (everything) when splitting is off.
    fn next(&mut self) -> usize {
        if self.max_step == 0 {
            return usize::MAX;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        1 + self.state as usize % self.max_step
    }

    /// Increasing prefix ends within `0..len`, then `len` itself.
    fn ends(&mut self, len: usize) -> Vec<usize> {
        let mut ends = Vec::new();
        let mut at = 0usize;
        while ends.len() < MAX_PREFIXES {
            at = at.saturating_add(self.next());
            if at >= len {
                break;
            }
            ends.push(at);
        }
        ends.push(len);
        ends
    }
}

/// Checks one head at the front of `buf` against growing prefixes of it; returns the verdict
/// on the whole of `buf`.
fn check_head<'a>(
    buf: &'a [u8],
    max_head: usize,
    max_body: usize,
    splits: &mut Splits,
) -> Parsed<'a> {
    let full = parse(buf, max_head, max_body);
    // A verdict, once reached on a prefix, stands for every longer one: a complete head is the
    // same head; an error stays an error, except that the head may also turn out too large.
    let mut prev: Parsed = Ok(None);
    for end in splits.ends(buf.len()) {
        let now = parse(&buf[..end], max_head, max_body);
        match (&prev, &now) {
            (Ok(None), _) => {}
            (Ok(Some(a)), Ok(Some(b))) => {
                assert_eq!(a, b, "a complete head changed with more bytes")
            }
            (Err(a), Err(b)) => assert!(
                a == b || *b == HttpError::HeadTooLarge,
                "error {a:?} became {b:?} with more bytes"
            ),
            (a, b) => panic!("verdict {a:?} became {b:?} with more bytes"),
        }
        if now == Ok(None) {
            assert!(end <= max_head, "waiting on {end} bytes, past the head limit {max_head}");
        }
        prev = now;
    }
    assert_eq!(prev, full, "the last prefix is the whole buffer");

    if let Ok(Some((method, target, minor, len, framing, _keep_alive, expect, _))) = &full {
        let (method, target, minor, len, framing, expect) =
            (*method, *target, *minor, *len, *framing, *expect);
        assert!(len <= buf.len() && len <= max_head, "head length {len}");
        let head = &buf[..len];
        assert!(inside(method.as_bytes(), head), "method outside the head");
        assert!(inside(target, head), "target outside the head");
        assert!(minor <= 1, "HTTP/1.{minor}");
        match framing {
            // `/v1/` and `/alive` judge a declared length per route (their limits differ, their
            // errors are JSON): the head parser leaves it to them.
            Framing::Length(n) => assert!(
                n > 0 && (n <= max_body || esub::http::request::is_topic_target(target)),
                "Length({n}), limit {max_body}"
            ),
            Framing::None => assert!(!expect, "100-continue without a body"),
            Framing::Chunked => {}
        }
        // Exactly the head, and one byte less is incomplete: a head never completes early.
        assert_eq!(parse(head, max_head, max_body), full, "the head alone parses the same");
        assert_eq!(parse(&buf[..len - 1], max_head, max_body), Ok(None), "one byte short");
        check_framing_headers(head, framing);
    }
    full
}

fn inside(part: &[u8], whole: &[u8]) -> bool {
    let (p, w) = (part.as_ptr() as usize, whole.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

/// Strips RFC 9110's optional whitespace (SP and HTAB only) from both ends.
fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The framing agrees with the headers as httparse itself reports them: the guard against
/// request smuggling is that exactly one of them decides where the body ends.
fn check_framing_headers(head: &[u8], framing: Framing) {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    assert!(matches!(req.parse(head), Ok(httparse::Status::Complete(_))));
    let mut chunked = false;
    let mut lengths = Vec::new();
    for h in req.headers.iter() {
        let value = trim_ows(h.value);
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            assert!(
                value.eq_ignore_ascii_case(b"chunked") || value.eq_ignore_ascii_case(b"identity"),
                "accepted Transfer-Encoding {value:?}"
            );
            chunked |= value.eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("content-length") {
            // RFC 9110: `Content-Length = 1*DIGIT`, around it only optional SP / HTAB.
            let digits = !value.is_empty() && value.iter().all(u8::is_ascii_digit);
            assert!(digits, "accepted Content-Length {:?}", String::from_utf8_lossy(h.value));
            let n: usize =
                std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).unwrap_or(usize::MAX);
            lengths.push(n);
        }
    }
    assert!(!chunked || lengths.is_empty(), "both Content-Length and chunked accepted");
    assert!(lengths.windows(2).all(|w| w[0] == w[1]), "conflicting lengths accepted");
    let want = match (chunked, lengths.first()) {
        (true, _) => Framing::Chunked,
        (false, Some(&n)) if n > 0 => Framing::Length(n),
        (false, _) => Framing::None,
    };
    assert_eq!(framing, want);
}

/// The outcome of decoding a chunked body: (bytes consumed, done) or the error, and the data.
type Decoded = (Result<(usize, bool), HttpError>, Vec<u8>);

/// Decodes `input` fed in pieces the way a connection feeds its receive buffer: bytes not
/// consumed stay at the front and the next piece is appended to them.
fn decode_split(input: &[u8], max_body: usize, max_trailer: usize, splits: &mut Splits) -> Decoded {
    let mut d = ChunkedDecoder::new(max_body, max_trailer);
    let mut out = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let (mut at, mut total) = (0usize, 0usize);
    loop {
        let step = splits.next().min(input.len() - at);
        pending.extend_from_slice(&input[at..at + step]);
        at += step;
        let r = d.decode(&pending, &mut out);
        assert!(out.len() <= max_body, "decoded {} bytes, limit {max_body}", out.len());
        match r {
            Err(e) => return (Err(e), out),
            Ok((used, done)) => {
                check_step(&pending, used, done, max_trailer);
                total += used;
                pending.drain(..used);
                if done {
                    let again = d.decode(b"0\r\n\r\n", &mut out);
                    assert_eq!(again, Ok((0, true)), "a finished decoder takes nothing more");
                    return (Ok((total, true)), out);
                }
                if at == input.len() {
                    return (Ok((total, false)), out);
                }
            }
        }
    }
}

/// One `decode` call's contract: it consumes at most its input, and what it leaves is part of
/// one incomplete line, short enough that a bounded receive buffer can wait for its end.
fn check_step(input: &[u8], used: usize, done: bool, max_trailer: usize) {
    assert!(used <= input.len(), "consumed {used} of {}", input.len());
    if !done {
        let left = &input[used..];
        assert!(!left.windows(2).any(|w| w == b"\r\n"), "left a complete line waiting: {left:?}");
        assert!(left.len() <= MAX_SIZE_LINE.max(max_trailer), "left {} bytes waiting", left.len());
    }
}

fn check_chunked(
    input: &[u8],
    max_body: usize,
    max_trailer: usize,
    splits: &mut Splits,
) -> Option<usize> {
    let mut d = ChunkedDecoder::new(max_body, max_trailer);
    let mut whole_out = Vec::new();
    let whole = d.decode(input, &mut whole_out);
    assert!(whole_out.len() <= max_body, "decoded {} bytes, limit {max_body}", whole_out.len());
    if let Ok((used, done)) = whole {
        check_step(input, used, done, max_trailer);
    }
    let (split, split_out) = decode_split(input, max_body, max_trailer, splits);
    assert_eq!(split, whole, "split decoding differs from decoding in one piece");
    if whole.is_ok() {
        assert_eq!(split_out, whole_out, "split decoding gave other data");
    }
    match whole {
        Ok((used, true)) => Some(used),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let [head_limit, body_limit, max_step, seed, ref stream @ ..] = *data else {
        return;
    };
    // Head limits from far below the configurable minimum (256) up to the default (8192).
    let max_head = 16 + usize::from(head_limit) * 32;
    let max_body = match body_limit {
        255 => 1 << 20,
        n => usize::from(n) * 8,
    };
    let mut splits = Splits::new(max_step, seed);
    let mut rest = stream;
    for _ in 0..MAX_REQUESTS {
        let Ok(Some((_, _, _, len, framing, _, _, _))) =
            check_head(rest, max_head, max_body, &mut splits)
        else {
            return;
        };
        let body = &rest[len..];
        let used = match framing {
            Framing::None => 0,
            Framing::Length(n) if n <= body.len() => n,
            Framing::Length(_) => return,
            Framing::Chunked => match check_chunked(body, max_body, max_head, &mut splits) {
                Some(used) => used,
                None => return,
            },
        };
        rest = &body[used..];
    }
});
