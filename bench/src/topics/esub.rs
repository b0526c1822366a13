//! esub's topics wire (`API-topics.md`) for the generator: single and batch pubs (§4.1, §4.2),
//! topic creation (§8), the consumer's batch GET with piggy-back acks (§5.2, §5.3), and a decoder
//! that hands out the records of a streamed batch response as their bytes arrive.

use crate::http::{self, push_decimal};

/// The appid every request carries; open mode takes any.
pub const APPID: &str = "bench";
/// Longest response head accepted; esub's are a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;
/// Bytes before a batch record's payload on the sub side: partition i32, offset i64, len i32.
pub const SUB_RECORD_HEAD: usize = 16;
/// Bytes before a record's payload in a batch pub body: key_len u16, tag_len u16, len u32.
pub const PUB_RECORD_HEAD: usize = 8;

fn head_start(out: &mut Vec<u8>, method: &str, path: &[&str]) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    for p in path {
        out.extend_from_slice(p.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAppid: ");
    out.extend_from_slice(APPID.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn content_length(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, n as u64);
    out.extend_from_slice(b"\r\n\r\n");
}

/// `POST /v1/msgs/<topic>/<ver>` with `payload` as the body (§4.1): 201 once stored.
pub fn pub_request(out: &mut Vec<u8>, topic: &str, ver: &str, payload: &[u8]) {
    head_start(out, "POST", &["/v1/msgs/", topic, "/", ver]);
    content_length(out, payload.len());
    out.extend_from_slice(payload);
}

/// `pub_request` with `X-Msg-Id: m<seq>` (§4.4): unique per message of a run's topic.
pub fn pub_request_id(out: &mut Vec<u8>, topic: &str, ver: &str, payload: &[u8], seq: u64) {
    head_start(out, "POST", &["/v1/msgs/", topic, "/", ver]);
    out.extend_from_slice(b"X-Msg-Id: m");
    push_decimal(out, seq);
    out.extend_from_slice(b"\r\n");
    content_length(out, payload.len());
    out.extend_from_slice(payload);
}

/// The head of `POST /v1/msgs/<topic>/<ver>?batch=1` for `records` records of `size` bytes;
/// the caller appends each with `batch_record` (§4.2).
pub fn batch_head(out: &mut Vec<u8>, topic: &str, ver: &str, records: usize, size: usize) {
    head_start(out, "POST", &["/v1/msgs/", topic, "/", ver, "?batch=1"]);
    content_length(out, records * (PUB_RECORD_HEAD + size));
}

/// Appends one batch pub record without key or tag, whose payload `write` appends.
pub fn batch_record(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; PUB_RECORD_HEAD]);
    write(out);
    let len = (out.len() - at - PUB_RECORD_HEAD) as u32;
    out[at + 4..at + 8].copy_from_slice(&len.to_be_bytes());
}

/// How many records a batch pub's 201 body lists (`{"ok":1,"msgs":[{"partition":p,...},...]}`).
pub fn batch_answer_count(body: &[u8]) -> usize {
    const NEEDLE: &[u8] = b"\"offset\":";
    body.windows(NEEDLE.len()).filter(|w| *w == NEEDLE).count()
}

/// `POST /v1/topics/<appid>/<topic>/<ver>?partitions=P` (§8; open mode lets anyone).
pub fn create_topic_request(out: &mut Vec<u8>, topic: &str, ver: &str, partitions: u32) {
    let p = partitions.to_string();
    head_start(out, "POST", &["/v1/topics/", APPID, "/", topic, "/", ver, "?partitions=", &p]);
    content_length(out, 0);
}

/// `GET /v1/msgs/<appid>/<topic>/<ver>?group=G&ack=1&batch=N`, acking `acks` (partition, last
/// offset processed) as comma-separated `X-Partition` / `X-Offset` lists (§5.3).
pub fn sub_request(
    out: &mut Vec<u8>,
    topic: &str,
    ver: &str,
    group: &str,
    batch: usize,
    acks: &[(i32, i64)],
) {
    let n = batch.to_string();
    let path = ["/v1/msgs/", APPID, "/", topic, "/", ver, "?group=", group, "&ack=1&batch=", &n];
    head_start(out, "GET", &path);
    if !acks.is_empty() {
        out.extend_from_slice(b"X-Partition: ");
        push_list(out, acks.iter().map(|a| i64::from(a.0)));
        out.extend_from_slice(b"\r\nX-Offset: ");
        push_list(out, acks.iter().map(|a| a.1));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Signed decimals, comma-separated.
fn push_list(out: &mut Vec<u8>, values: impl Iterator<Item = i64>) {
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if v < 0 {
            out.push(b'-');
        }
        push_decimal(out, v.unsigned_abs());
    }
}

/// How a consumer's response ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// A 200 whose body is complete; `close`: the server closes the connection after it.
    Batch { close: bool },
    /// 204: nothing arrived within the long-poll limit.
    Empty { close: bool },
    /// Any other status, with its body.
    Refused { status: u16, body: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamError {
    Head,
    HeadTooLong,
    /// A 200 without chunked encoding or a length.
    NoLength,
    Chunk,
    /// A record with a negative length, or a body that ends inside a record.
    Record,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Inside a chunk, this many data bytes left.
    ChunkData(usize),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailer,
    /// A body of `Content-Length`: this many bytes left.
    Length(usize),
}

/// A consumer connection's responses, decoded as they arrive: records go to a callback as soon
/// as their last byte is read, whatever the chunk boundaries.
#[derive(Debug)]
pub struct SubStream {
    state: State,
    close: bool,
    /// Body bytes that do not make a whole record yet.
    body: Vec<u8>,
}

impl Default for SubStream {
    fn default() -> Self {
        SubStream { state: State::Head, close: false, body: Vec::new() }
    }
}

impl SubStream {
    /// Decodes what it can of `buf`, calling `each(partition, offset, payload)` per record.
    /// Returns the bytes used (the caller drops them) and, when a response ended, how.
    pub fn advance(
        &mut self,
        buf: &[u8],
        each: &mut dyn FnMut(i32, i64, &[u8]),
    ) -> Result<(usize, Option<Ended>), StreamError> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.state {
                State::Head => {
                    let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
                        if rest.len() > MAX_HEAD {
                            return Err(StreamError::HeadTooLong);
                        }
                        return Ok((pos, None));
                    };
                    let head = &rest[..end];
                    let status = status_of(head).ok_or(StreamError::Head)?;
                    let close = http::header(head, b"connection")
                        .is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
                    if status == 204 {
                        return Ok((pos + end + 4, Some(Ended::Empty { close })));
                    }
                    if status != 200 {
                        // Error answers are small JSON with a length: take them whole.
                        return match http::parse_response(rest) {
                            Ok(Some(r)) => {
                                let body = String::from_utf8_lossy(r.body(rest)).into_owned();
                                Ok((pos + r.len, Some(Ended::Refused { status, body })))
                            }
                            Ok(None) => Ok((pos, None)),
                            Err(_) => Err(StreamError::Head),
                        };
                    }
                    let chunked = http::header(head, b"transfer-encoding")
                        .is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"));
                    let length = http::header(head, b"content-length")
                        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
                    self.state = match (chunked, length) {
                        (true, _) => State::ChunkSize,
                        (false, Some(n)) => State::Length(n),
                        (false, None) => return Err(StreamError::NoLength),
                    };
                    self.close = close;
                    self.body.clear();
                    pos += end + 4;
                }
                State::ChunkSize => {
                    let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                        if rest.len() > 1024 {
                            return Err(StreamError::Chunk);
                        }
                        return Ok((pos, None));
                    };
                    let field = rest[..eol].split(|&b| b == b';').next().unwrap_or_default();
                    let size = std::str::from_utf8(field)
                        .ok()
                        .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                        .ok_or(StreamError::Chunk)?;
                    pos += eol + 2;
                    self.state = if size == 0 { State::Trailer } else { State::ChunkData(size) };
                }
                State::ChunkData(left) | State::Length(left) => {
                    let take = left.min(rest.len());
                    self.body.extend_from_slice(&rest[..take]);
                    pos += take;
                    self.records(each)?;
                    let left = left - take;
                    self.state = match self.state {
                        State::ChunkData(_) if left == 0 => State::ChunkEnd,
                        State::ChunkData(_) => State::ChunkData(left),
                        _ if left == 0 => return self.end(pos),
                        _ => State::Length(left),
                    };
                    if take == 0 {
                        return Ok((pos, None));
                    }
                }
                State::ChunkEnd => {
                    match rest {
                        [b'\r', b'\n', ..] => {}
                        [] | [b'\r'] => return Ok((pos, None)),
                        _ => return Err(StreamError::Chunk),
                    }
                    pos += 2;
                    self.state = State::ChunkSize;
                }
                State::Trailer => {
                    let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                        return Ok((pos, None));
                    };
                    pos += eol + 2;
                    if eol == 0 {
                        return self.end(pos);
                    }
                }
            }
        }
    }

    /// The body is complete: nothing may be left of a record.
    fn end(&mut self, pos: usize) -> Result<(usize, Option<Ended>), StreamError> {
        self.state = State::Head;
        if !self.body.is_empty() {
            return Err(StreamError::Record);
        }
        Ok((pos, Some(Ended::Batch { close: self.close })))
    }

    /// Hands out every whole record at the front of the body.
    fn records(&mut self, each: &mut dyn FnMut(i32, i64, &[u8])) -> Result<(), StreamError> {
        let mut at = 0;
        while let Some(h) = self.body.get(at..at + SUB_RECORD_HEAD) {
            let partition = i32::from_be_bytes([h[0], h[1], h[2], h[3]]);
            let offset = i64::from_be_bytes([h[4], h[5], h[6], h[7], h[8], h[9], h[10], h[11]]);
            let len = i32::from_be_bytes([h[12], h[13], h[14], h[15]]);
            let len = usize::try_from(len).map_err(|_| StreamError::Record)?;
            let start = at + SUB_RECORD_HEAD;
            let Some(payload) = self.body.get(start..start + len) else { break };
            each(partition, offset, payload);
            at = start + len;
        }
        self.body.drain(..at);
        Ok(())
    }
}

fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let code = line.strip_prefix(b"HTTP/1.")?.get(2..5)?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_pub_with_a_msg_id() {
        let mut out = Vec::new();
        pub_request_id(&mut out, "t1", "v1", b"hi", 42);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("POST /v1/msgs/t1/v1 HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("\r\nX-Msg-Id: m42\r\nContent-Length: 2\r\n\r\nhi"), "{text}");
    }
    use super::*;

    fn record(p: i32, o: i64, payload: &[u8]) -> Vec<u8> {
        let mut v = p.to_be_bytes().to_vec();
        v.extend_from_slice(&o.to_be_bytes());
        v.extend_from_slice(&(payload.len() as i32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    /// A 200 chunked response carrying `body` in chunks of `chunk` bytes.
    fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
        let mut v = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for c in body.chunks(chunk) {
            v.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            v.extend_from_slice(c);
            v.extend_from_slice(b"\r\n");
        }
        v.extend_from_slice(b"0\r\n\r\n");
        v
    }

    type Rec = (i32, i64, Vec<u8>);

    /// Feeds `wire` in pieces of `step` bytes, as a socket would: records and endings in order.
    fn feed(wire: &[u8], step: usize) -> Result<(Vec<Rec>, Vec<Ended>), StreamError> {
        let mut s = SubStream::default();
        let mut buf = Vec::new();
        let (mut recs, mut ends) = (Vec::new(), Vec::new());
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                let (used, end) = s.advance(&buf, &mut |p, o, d| recs.push((p, o, d.to_vec())))?;
                buf.drain(..used);
                match end {
                    Some(e) => ends.push(e),
                    None => break,
                }
            }
        }
        assert!(buf.is_empty(), "{} bytes left", buf.len());
        Ok((recs, ends))
    }

    #[test]
    fn records_arrive_whatever_the_chunks_and_reads() {
        let want: Vec<(i32, i64, Vec<u8>)> = (0..5)
            .map(|i| (i % 4, 10 + i64::from(i), vec![b'a' + i as u8; 3 + i as usize]))
            .collect();
        let body: Vec<u8> = want.iter().flat_map(|(p, o, d)| record(*p, *o, d)).collect();
        let mut wire = chunked(&body, 7);
        wire.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
        wire.extend_from_slice(&chunked(&record(3, 99, b"z"), 100));
        wire.extend_from_slice(
            b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\nConnection: close\r\n\r\n",
        );
        wire.extend_from_slice(&record(1, 5, b"q"));
        let mut all = want.clone();
        all.push((3, 99, b"z".to_vec()));
        all.push((1, 5, b"q".to_vec()));
        let ends = vec![
            Ended::Batch { close: false },
            Ended::Empty { close: false },
            Ended::Batch { close: false },
            Ended::Batch { close: true },
        ];
        for step in [1, 2, 5, 16, 1000] {
            assert_eq!(feed(&wire, step), Ok((all.clone(), ends.clone())), "step {step}");
        }
    }

    #[test]
    fn a_record_is_handed_out_before_the_response_ends() {
        let mut s = SubStream::default();
        let mut wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let r = record(2, 7, b"hi");
        wire.extend_from_slice(format!("{:x}\r\n", r.len()).as_bytes());
        wire.extend_from_slice(&r);
        let mut got = Vec::new();
        let (used, end) = s.advance(&wire, &mut |p, o, d| got.push((p, o, d.to_vec()))).unwrap();
        assert_eq!((used, end, got), (wire.len(), None, vec![(2, 7, b"hi".to_vec())]));
    }

    #[test]
    fn refusals_and_broken_streams() {
        let refused = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{\"errmsg\":\"illegal\"}";
        let body = String::from("{\"errmsg\":\"illegal\"}");
        assert_eq!(feed(refused, 3), Ok((vec![], vec![Ended::Refused { status: 400, body }])));
        let rows: Vec<(Vec<u8>, StreamError)> = vec![
            (b"HTTP/1.1 200 OK\r\n\r\n".to_vec(), StreamError::NoLength),
            (b"HTTX 200\r\n\r\n".to_vec(), StreamError::Head),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
                StreamError::Chunk,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab".to_vec(),
                StreamError::Chunk,
            ),
            (chunked(&record(0, 0, b"x")[..10], 100), StreamError::Record),
            (
                chunked(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff], 100),
                StreamError::Record,
            ),
        ];
        for (wire, want) in rows {
            assert_eq!(
                feed(&wire, 1000).map(|_| ()),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(&wire)
            );
        }
    }

    #[test]
    fn requests() {
        let mut out = Vec::new();
        pub_request(&mut out, "t1", "v1", b"hello");
        assert_eq!(
            out,
            b"POST /v1/msgs/t1/v1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAppid: bench\r\nContent-Length: 5\r\n\r\nhello"
        );
        out.clear();
        create_topic_request(&mut out, "t1", "v1", 4);
        assert_eq!(
            out,
            b"POST /v1/topics/bench/t1/v1?partitions=4 HTTP/1.1\r\nHost: 127.0.0.1\r\nAppid: bench\r\nContent-Length: 0\r\n\r\n"
        );
        out.clear();
        sub_request(&mut out, "t1", "v1", "g", 100, &[]);
        assert_eq!(
            out,
            b"GET /v1/msgs/bench/t1/v1?group=g&ack=1&batch=100 HTTP/1.1\r\nHost: 127.0.0.1\r\nAppid: bench\r\n\r\n"
        );
        out.clear();
        sub_request(&mut out, "t1", "v1", "g", 100, &[(0, 41), (3, 7)]);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.ends_with("Appid: bench\r\nX-Partition: 0,3\r\nX-Offset: 41,7\r\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn batch_bodies() {
        let mut out = Vec::new();
        batch_head(&mut out, "t1", "v1", 2, 3);
        let head = out.len();
        for p in [b"abc", b"xyz"] {
            batch_record(&mut out, |o| o.extend_from_slice(p));
        }
        let text = String::from_utf8_lossy(&out[..head]).into_owned();
        assert!(text.starts_with("POST /v1/msgs/t1/v1?batch=1 HTTP/1.1\r\n"), "{text}");
        assert!(text.ends_with("Content-Length: 22\r\n\r\n"), "{text}");
        assert_eq!(&out[head..], b"\0\0\0\0\0\0\0\x03abc\0\0\0\0\0\0\0\x03xyz");
        let answer = br#"{"ok":1,"msgs":[{"partition":0,"offset":0},{"partition":0,"offset":1}]}"#;
        assert_eq!(batch_answer_count(answer), 2);
    }

    /// The generator's encoders and decoder against the server's own codec.
    #[test]
    fn against_the_servers_codec() {
        use esub::topics::codec;
        let mut out = Vec::new();
        batch_head(&mut out, "t", "v1", 3, 5);
        let head = out.len();
        for p in [b"aaaaa", b"bbbbb", b"ccccc"] {
            batch_record(&mut out, |o| o.extend_from_slice(p));
        }
        let limits =
            codec::Limits { max_payload: 512, max_key: 256, max_tag: 1024, max_records: 1000 };
        let records = codec::decode_batch(&out[head..], &limits).unwrap();
        let payloads: Vec<&[u8]> = records.iter().map(|r| r.payload).collect();
        assert_eq!(payloads, [b"aaaaa", b"bbbbb", b"ccccc"]);
        assert!(records.iter().all(|r| r.key.is_empty() && r.tag.is_empty()));

        out.clear();
        sub_request(&mut out, "t", "v1", "g", 100, &[(0, 41), (3, -1), (2, 7)]);
        let value = |name: &str| {
            let text = std::str::from_utf8(&out).unwrap();
            let line = text.lines().find(|l| l.starts_with(name)).unwrap();
            line[name.len()..].trim().as_bytes().to_vec()
        };
        let (ps, os) = (value("X-Partition:"), value("X-Offset:"));
        assert_eq!(codec::parse_ack_lists(&[&ps], &[&os]), Ok(vec![(0, 41), (2, 7)]));

        let mut body = Vec::new();
        for (p, o, d) in [(1, 5, b"x".as_slice()), (3, 9, b"yz")] {
            body.extend_from_slice(&codec::sub_record_head(p, o, d.len() as i32));
            body.extend_from_slice(d);
        }
        let (recs, ends) = feed(&chunked(&body, 3), 4).unwrap();
        assert_eq!(recs, vec![(1, 5, b"x".to_vec()), (3, 9, b"yz".to_vec())]);
        assert_eq!(ends, vec![Ended::Batch { close: false }]);
    }
}
