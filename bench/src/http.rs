//! Minimal HTTP/1.1 for the generator: the two requests it sends, written into a reused buffer,
//! and a response parser that says "need more bytes" with `Ok(None)`.

/// Longest response head accepted. Both servers send well under 1 KiB; more means a broken
/// stream, not a slow one.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Largest body accepted: esub's default request body limit, so any rep it takes fits.
pub const MAX_BODY_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    StatusLine,
    Header,
    ContentLength,
    Chunk,
    HeadTooLong,
    BodyTooLong,
    /// Neither `Content-Length` nor chunked on a response that has a body: the body would run
    /// to the end of the connection, which a keep-alive client cannot use.
    NoLength,
}

/// Where the body sits: a range of the parsed buffer, or decoded chunks.
#[derive(Debug, PartialEq, Eq)]
pub enum Body {
    Range(usize, usize),
    Chunked(Vec<u8>),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Bytes of the buffer this response used, head and body.
    pub len: usize,
    pub body: Body,
    /// `Connection: close` was sent: no further response will follow on this connection.
    pub close: bool,
    /// Range of the `Content-Type` value, if any.
    pub content_type: Option<(usize, usize)>,
}

impl Response {
    pub fn body<'a>(&'a self, buf: &'a [u8]) -> &'a [u8] {
        match &self.body {
            Body::Range(a, b) => &buf[*a..*b],
            Body::Chunked(v) => v,
        }
    }

    pub fn content_type<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        self.content_type.map(|(a, b)| &buf[a..b])
    }
}

/// Key number `idx` of a run: `<prefix><idx>`.
pub fn push_key(out: &mut Vec<u8>, prefix: &[u8], idx: usize) {
    out.extend_from_slice(prefix);
    push_decimal(out, idx as u64);
}

/// `GET /sub/<key>` for a parked subscriber; both peers take the same request.
pub fn sub_request(out: &mut Vec<u8>, prefix: &[u8], idx: usize) {
    out.clear();
    out.extend_from_slice(b"GET /sub/");
    push_key(out, prefix, idx);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
}

/// The head of `POST <path_prefix><key>`; the caller appends the body.
pub fn rep_request_head(
    out: &mut Vec<u8>,
    path_prefix: &str,
    prefix: &[u8],
    idx: usize,
    body_len: usize,
) {
    out.clear();
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(path_prefix.as_bytes());
    push_key(out, prefix, idx);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ");
    push_decimal(out, body_len as u64);
    out.extend_from_slice(b"\r\n\r\n");
}

/// Appends `n` in decimal without allocating.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Parses the first complete response in `buf`, `Ok(None)` while it is incomplete.
/// A 1xx response is returned like any other (with an empty body); the caller skips it.
pub fn parse_response(buf: &[u8]) -> Result<Option<Response>, ParseError> {
    let Some(head_end) = find_head_end(buf) else {
        return if buf.len() > MAX_HEAD_BYTES { Err(ParseError::HeadTooLong) } else { Ok(None) };
    };
    if head_end > MAX_HEAD_BYTES {
        return Err(ParseError::HeadTooLong);
    }
    let head = &buf[..head_end];
    let status_line = head.split(|&b| b == b'\n').next().unwrap_or(b"");
    let status = parse_status_line(trim_cr(status_line))?;

    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut close = false;
    let mut content_type = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = trim_cr(line);
        if line.is_empty() {
            continue;
        }
        let colon = line.iter().position(|&b| b == b':').ok_or(ParseError::Header)?;
        let name = &line[..colon];
        let value = trim_spaces(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_decimal(value).ok_or(ParseError::ContentLength)?;
            if content_length.is_some_and(|c| c != n) {
                return Err(ParseError::ContentLength);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = value.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            close = value.eq_ignore_ascii_case(b"close");
        } else if name.eq_ignore_ascii_case(b"content-type") {
            // `value` is a subslice of `buf`: its offset is the pointer difference.
            let start = value.as_ptr() as usize - buf.as_ptr() as usize;
            content_type = Some((start, start + value.len()));
        }
    }

    let body_start = head_end + 4;
    let bodiless = (100..200).contains(&status) || status == 204 || status == 304;
    if bodiless {
        return Ok(Some(Response {
            status,
            len: body_start,
            body: Body::Range(body_start, body_start),
            close,
            content_type,
        }));
    }
    if chunked {
        return Ok(parse_chunked(buf, body_start)?.map(|(body, end)| Response {
            status,
            len: end,
            body: Body::Chunked(body),
            close,
            content_type,
        }));
    }
    let n = content_length.ok_or(ParseError::NoLength)?;
    if n > MAX_BODY_BYTES {
        return Err(ParseError::BodyTooLong);
    }
    if buf.len() < body_start + n {
        return Ok(None);
    }
    Ok(Some(Response {
        status,
        len: body_start + n,
        body: Body::Range(body_start, body_start + n),
        close,
        content_type,
    }))
}

/// The value of header `name` (matched without regard to case) in a response head, spaces
/// trimmed; the first one if repeated. Off the hot path: for the websocket upgrade only.
pub fn header<'a>(head: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = trim_cr(line);
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon].eq_ignore_ascii_case(name).then(|| trim_spaces(&line[colon + 1..]))
    })
}

/// `GET <path>` on a keep-alive connection: the HTTP floor's request.
pub fn get_request(out: &mut Vec<u8>, path: &str) {
    out.clear();
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
}

/// Index of the `\r\n\r\n` that ends the head.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

fn parse_status_line(line: &[u8]) -> Result<u16, ParseError> {
    // "HTTP/1.x NNN reason"
    if line.len() < 12 || !line.starts_with(b"HTTP/1.") || line[8] != b' ' {
        return Err(ParseError::StatusLine);
    }
    let code = &line[9..12];
    if !code.iter().all(u8::is_ascii_digit) || line.get(12).is_some_and(|&b| b != b' ') {
        return Err(ParseError::StatusLine);
    }
    Ok(code.iter().fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0')))
}

/// Decodes a chunked body starting at `start`: the body and the index just past the trailer.
fn parse_chunked(buf: &[u8], start: usize) -> Result<Option<(Vec<u8>, usize)>, ParseError> {
    let mut body = Vec::new();
    let mut pos = start;
    loop {
        let Some(eol) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_field = &buf[pos..pos + eol];
        let size_field = match size_field.iter().position(|&b| b == b';') {
            Some(semi) => &size_field[..semi],
            None => size_field,
        };
        let size = parse_hex(trim_spaces(size_field)).ok_or(ParseError::Chunk)?;
        pos += eol + 2;
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let Some(eol) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if body.len() + size > MAX_BODY_BYTES {
            return Err(ParseError::BodyTooLong);
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(ParseError::Chunk);
        }
        pos += size + 2;
    }
}

fn parse_decimal(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 15 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0usize, |acc, &d| acc * 10 + usize::from(d - b'0')))
}

fn parse_hex(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 8 {
        return None;
    }
    s.iter().try_fold(0usize, |acc, &d| {
        let v = (d as char).to_digit(16)?;
        Some(acc * 16 + v as usize)
    })
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_spaces(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &[u8]) -> (u16, Vec<u8>, usize, bool) {
        let r = parse_response(raw).unwrap().unwrap();
        (r.status, r.body(raw).to_vec(), r.len, r.close)
    }

    #[test]
    fn complete_responses() {
        let rows: &[(&[u8], u16, &[u8], bool)] = &[
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK", 200, b"OK", false),
            (b"HTTP/1.1 404 Not Found\r\ncontent-length:  11 \r\n\r\nUnknown key", 404, b"Unknown key", false),
            (b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 201, b"", true),
            (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b"", false),
            (b"HTTP/1.1 100 Continue\r\n\r\n", 100, b"", false),
            (b"HTTP/1.0 202 Accepted\r\nContent-Length: 1\r\n\r\nx", 202, b"x", false),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n", 200, b"abcde", false),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n", 200, b"", false),
        ];
        for (raw, status, body, close) in rows {
            let (s, b, len, c) = ok(raw);
            assert_eq!((s, b.as_slice(), len, c), (*status, *body, raw.len(), *close), "{raw:?}");
        }
    }

    #[test]
    fn incomplete_is_none_at_every_prefix() {
        let raws: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ];
        for raw in raws {
            for cut in 0..raw.len() {
                assert_eq!(parse_response(&raw[..cut]), Ok(None), "cut {cut} of {raw:?}");
            }
            assert!(parse_response(raw).unwrap().is_some());
        }
    }

    #[test]
    fn pipelined_responses_parse_one_at_a_time() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 404 N\r\nContent-Length: 1\r\n\r\nb";
        let first = parse_response(raw).unwrap().unwrap();
        assert_eq!(first.body(raw), b"a");
        let rest = &raw[first.len..];
        let second = parse_response(rest).unwrap().unwrap();
        assert_eq!((second.status, second.body(rest)), (404, &b"b"[..]));
    }

    #[test]
    fn content_type_range() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type:  application/octet-stream\r\nContent-Length: 0\r\n\r\n";
        let r = parse_response(raw).unwrap().unwrap();
        assert_eq!(r.content_type(raw), Some(&b"application/octet-stream"[..]));
    }

    #[test]
    fn errors() {
        let rows: &[(&[u8], ParseError)] = &[
            (b"HTTP/2 200 OK\r\n\r\n", ParseError::StatusLine),
            (b"HTTP/1.1 2x0 OK\r\n\r\n", ParseError::StatusLine),
            (b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", ParseError::Header),
            (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", ParseError::ContentLength),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                ParseError::ContentLength,
            ),
            (b"HTTP/1.1 200 OK\r\n\r\n", ParseError::NoLength),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n", ParseError::BodyTooLong),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", ParseError::Chunk),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n",
                ParseError::Chunk,
            ),
        ];
        for (raw, err) in rows {
            assert_eq!(parse_response(raw), Err(*err), "{raw:?}");
        }
        let long = [b'a'; MAX_HEAD_BYTES + 1];
        assert_eq!(parse_response(&long), Err(ParseError::HeadTooLong));
    }

    #[test]
    fn header_lookup() {
        let raw = b"HTTP/1.1 101 S\r\nUpgrade: websocket\r\nSEC-WEBSOCKET-ACCEPT:  abc= \r\n\r\n";
        assert_eq!(header(raw, b"sec-websocket-accept"), Some(&b"abc="[..]));
        assert_eq!(header(raw, b"upgrade"), Some(&b"websocket"[..]));
        assert_eq!(header(raw, b"connection"), None);
        // The status line is not a header, even with a colon in it.
        assert_eq!(header(b"HTTP/1.1 200 a:b\r\n\r\n", b"HTTP/1.1 200 a"), None);
    }

    #[test]
    fn requests() {
        let mut out = Vec::new();
        get_request(&mut out, "/ping");
        assert_eq!(out, b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        sub_request(&mut out, b"bk", 1);
        assert_eq!(out, b"GET /sub/bk1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        rep_request_head(&mut out, "/pub/", b"bk", 20, 100);
        assert_eq!(
            out,
            b"POST /pub/bk20 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n"
        );
        for n in [0u64, 7, 10, 123456789, u64::MAX] {
            let mut v = Vec::new();
            push_decimal(&mut v, n);
            assert_eq!(v, n.to_string().as_bytes());
        }
    }
}
