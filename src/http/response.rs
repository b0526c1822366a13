//! Response heads, written straight into the connection's outgoing bytes. No allocation beyond
//! the buffer's own growth; bodies that are shared (`Arc`) are queued beside the head, not copied.

/// How the `Connection` header reads for one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persist {
    /// HTTP/1.1 keep-alive: nothing to say.
    KeepAlive,
    /// HTTP/1.0 client that asked for keep-alive: say yes.
    KeepAlive10,
    /// The connection closes after this response.
    Close,
}

pub const TEXT: &str = "text/plain; charset=utf-8";
pub const OCTETS: &str = "application/octet-stream";
pub const JSON: &str = "application/json";

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

/// Writes a status line and headers up to the blank line, announcing `body_len` body bytes
/// (omitted for 1xx and 204, which carry no body). `extra` lines end in `\r\n`.
pub fn head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body_len: usize,
    persist: Persist,
    extra: &str,
) {
    // Every response's head: plain appends, not `write!`'s formatting machinery.
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(decimal(&mut [0; 20], status as u64));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if status != 204 && status >= 200 {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(content_type.as_bytes());
        out.extend_from_slice(b"\r\nContent-Length: ");
        out.extend_from_slice(decimal(&mut [0; 20], body_len as u64));
        out.extend_from_slice(b"\r\n");
    }
    match persist {
        Persist::KeepAlive => {}
        Persist::KeepAlive10 => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        Persist::Close => out.extend_from_slice(b"Connection: close\r\n"),
    }
    out.extend_from_slice(extra.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, written at the end of `buf` (20 digits hold any u64).
pub fn decimal(buf: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// `v` in decimal, a `-` before a negative one (20 bytes hold any i64).
pub fn signed(buf: &mut [u8; 20], v: i64) -> &[u8] {
    let mut at = buf.len() - decimal(buf, v.unsigned_abs()).len();
    if v < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    &buf[at..]
}

/// A whole response with a small body.
pub fn full(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    persist: Persist,
    extra: &str,
) {
    head(out, status, content_type, body.len(), persist, extra);
    out.extend_from_slice(body);
}

/// A whole plain-text response, the form every error takes.
pub fn text(out: &mut Vec<u8>, status: u16, body: &str, persist: Persist) {
    full(out, status, TEXT, body.as_bytes(), persist, "");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let mut v = Vec::new();
        text(&mut v, 404, "Unknown key", Persist::KeepAlive);
        assert_eq!(
            v,
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 11\r\n\r\nUnknown key"
        );
        v.clear();
        full(&mut v, 204, JSON, b"", Persist::Close, "");
        assert_eq!(v, b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        v.clear();
        head(&mut v, 200, OCTETS, 3, Persist::KeepAlive10, "Allow: GET\r\n");
        assert_eq!(
            v,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 3\r\nConnection: keep-alive\r\nAllow: GET\r\n\r\n"
        );
    }

    #[test]
    fn decimals() {
        for n in [0, 7, 10, 99, 100, 4096, 1_000_000_007, u64::MAX] {
            assert_eq!(decimal(&mut [0; 20], n), n.to_string().as_bytes(), "{n}");
        }
        for v in [0, 1, -1, 42, -4096, i64::MAX, i64::MIN] {
            assert_eq!(signed(&mut [0; 20], v), v.to_string().as_bytes(), "{v}");
        }
    }
}
