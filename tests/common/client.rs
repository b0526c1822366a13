//! Raw HTTP/1.x client: writes arbitrary bytes, reads exactly one response at a time, and checks
//! the framing rules every response must follow.

use super::{IO_TIMEOUT, TEXT_PLAIN};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// In wire order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The value of the single header `name` (case-insensitive); fails if it is repeated.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut found = self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
        let first = found.next().map(|(_, v)| v.as_str());
        assert!(found.next().is_none(), "header {name} repeated in {self:?}");
        first
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether a `Connection` header lists `token` (case-insensitive).
    pub fn connection_has(&self, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Comma-separated tokens of `Allow`.
    pub fn allow(&self) -> Vec<String> {
        let v = self.header("allow").unwrap_or_else(|| panic!("no Allow header in {self:?}"));
        v.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect()
    }

    /// Assert status and exact body.
    #[track_caller]
    pub fn assert(&self, status: u16, body: &[u8]) {
        assert_eq!(
            (self.status, self.body.as_slice()),
            (status, body),
            "status/body mismatch: got {} {:?} (headers {:?})",
            self.status,
            self.body_str(),
            self.headers
        );
    }

    /// Assert an error response: status, exact plain-text body and its content type.
    #[track_caller]
    pub fn assert_text(&self, status: u16, text: &str) {
        self.assert(status, text.as_bytes());
        assert_eq!(self.header("content-type"), Some(TEXT_PLAIN), "content type of {self:?}");
    }

    /// Assert status and a plain-text content type; the body text is not fixed by the contract.
    #[track_caller]
    pub fn assert_status_text(&self, status: u16) {
        assert_eq!(self.status, status, "unexpected status: {self:?}");
        assert_eq!(self.header("content-type"), Some(TEXT_PLAIN), "content type of {self:?}");
        assert!(!self.body.is_empty(), "error body should not be empty: {self:?}");
    }

    /// Assert a delivered sub: 200, octet-stream, exact bytes.
    #[track_caller]
    pub fn assert_delivered(&self, body: &[u8]) {
        assert_eq!(self.status, 200, "sub not delivered: {} {:?}", self.status, self.headers);
        assert_eq!(
            self.header("content-type"),
            Some("application/octet-stream"),
            "content type of delivered sub: {:?}",
            self.headers
        );
        assert!(
            self.body == body,
            "delivered body differs: got {} bytes, want {}: {:?} vs {:?}",
            self.body.len(),
            body.len(),
            preview(&self.body),
            preview(body)
        );
    }
}

fn preview(b: &[u8]) -> String {
    let shown = &b[..b.len().min(64)];
    format!("{:?}{}", String::from_utf8_lossy(shown), if b.len() > 64 { "..." } else { "" })
}

/// How a read that expected the peer to close ended.
fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// A raw TCP connection that writes arbitrary bytes and reads one response at a time.
pub struct Client {
    pub stream: TcpStream,
    /// Bytes read past the end of the last response (pipelining).
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream, buf: Vec::new() }
    }

    /// Write all of `bytes`; fails the test on error.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap_or_else(|e| panic!("write failed: {e}"));
    }

    /// Write all of `bytes`, reporting the error instead of failing (for peers that may close).
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Write `bytes` one byte per `write` call.
    pub fn send_bytewise(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.send(std::slice::from_ref(b));
        }
    }

    pub fn send_get(&mut self, path: &str) {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: esub\r\n\r\n").as_bytes());
    }

    pub fn send_post(&mut self, path: &str, body: &[u8]) {
        let mut req =
            format!("POST {path} HTTP/1.1\r\nHost: esub\r\nContent-Length: {}\r\n\r\n", body.len())
                .into_bytes();
        req.extend_from_slice(body);
        self.send(&req);
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.send_get(path);
        self.read_response()
    }

    pub fn post(&mut self, path: &str, body: &[u8]) -> Response {
        self.send_post(path, body);
        self.read_response()
    }

    /// Read more bytes into the buffer; `Ok(0)` on end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Read exactly one response. Enforces the framing contract on every response: a
    /// `Content-Length` on everything but 1xx and 204, none on those, no chunked responses.
    #[track_caller]
    pub fn read_response(&mut self) -> Response {
        match self.try_read_response() {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like `read_response`, but a failure is returned as text.
    pub fn try_read_response(&mut self) -> Result<Response, String> {
        self.read_inner(false)
    }

    /// Sends `HEAD path` and reads its answer: a head and no body (whatever its
    /// `Content-Length` says).
    #[track_caller]
    pub fn head(&mut self, path: &str) -> Response {
        self.send(format!("HEAD {path} HTTP/1.1\r\nHost: esub\r\n\r\n").as_bytes());
        match self.read_inner(true) {
            Ok(r) => r,
            Err(e) => panic!("HEAD {path}: {e}"),
        }
    }

    fn read_inner(&mut self, head_request: bool) -> Result<Response, String> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            match self.fill() {
                Ok(0) => {
                    return Err(format!(
                        "connection closed before a complete response head; got {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ));
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "reading response head: {e}; got so far {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ));
                }
            }
        };
        let head = String::from_utf8(self.buf[..head_end - 4].to_vec())
            .map_err(|_| "response head is not UTF-8".to_string())?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_string();
        if version != "HTTP/1.1" && version != "HTTP/1.0" {
            return Err(format!("bad status line {status_line:?}"));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| if s.len() == 3 { s.parse().ok() } else { None })
            .ok_or_else(|| format!("bad status code in {status_line:?}"))?;
        let reason = parts.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
        for line in lines {
            let (k, v) = line.split_once(':').ok_or_else(|| format!("bad header line {line:?}"))?;
            if k.is_empty() || k.contains(' ') {
                return Err(format!("bad header name in {line:?}"));
            }
            headers.push((k.to_string(), v.trim().to_string()));
        }
        self.buf.drain(..head_end);

        let lengths: Vec<&str> = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.as_str())
            .collect();
        if headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding")) {
            return Err(format!("unexpected Transfer-Encoding in response: {headers:?}"));
        }
        let bodyless = (100..200).contains(&status) || status == 204;
        let len = if bodyless {
            if !lengths.is_empty() {
                return Err(format!("{status} response carries Content-Length: {headers:?}"));
            }
            0
        } else {
            if lengths.len() != 1 {
                return Err(format!(
                    "{status} response must carry exactly one Content-Length: {headers:?}"
                ));
            }
            lengths[0]
                .parse::<usize>()
                .map_err(|_| format!("bad Content-Length {:?}", lengths[0]))?
        };
        let len = if head_request { 0 } else { len };
        while self.buf.len() < len {
            match self.fill() {
                Ok(0) => {
                    return Err(format!(
                        "connection closed after {} of {len} body bytes (status {status})",
                        self.buf.len()
                    ));
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "reading body ({} of {len} bytes, status {status}): {e}",
                        self.buf.len()
                    ));
                }
            }
        }
        let body: Vec<u8> = self.buf.drain(..len).collect();
        Ok(Response { version, status, reason, headers, body })
    }

    /// Whether the server closes the connection (read returns 0 or a reset) within `within`.
    /// Fails the test if any byte arrives instead.
    #[track_caller]
    pub fn closed_within(&mut self, within: Duration) -> bool {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes before close: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let r = self.fill();
            self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            match r {
                Ok(0) => return true,
                Ok(_) => panic!(
                    "expected the connection to close, got bytes {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Err(e) if is_reset(&e) => return true,
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("unexpected read error while waiting for close: {e}"),
            }
        }
    }

    /// Assert the server closes the connection (read returns 0 or a reset) within `within`,
    /// without sending any byte first. Returns how long it took.
    #[track_caller]
    pub fn expect_closed_within(&mut self, within: Duration) -> Duration {
        let start = Instant::now();
        assert!(self.closed_within(within), "connection still open after {within:?}");
        start.elapsed()
    }

    /// Assert the server closes the connection within the default I/O timeout.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        self.expect_closed_within(IO_TIMEOUT);
    }

    /// Assert nothing arrives (and the connection stays open) for `quiet`.
    #[track_caller]
    pub fn expect_silence(&mut self, quiet: Duration) {
        assert!(self.buf.is_empty(), "unexpected buffered bytes {:?}", self.buf);
        let deadline = Instant::now() + quiet;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let r = self.fill();
            self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            match r {
                Ok(0) => panic!("connection closed while it should stay quiet"),
                Ok(_) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&self.buf)),
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read error while it should stay quiet: {e}"),
            }
        }
    }

    /// Either the server closed the connection, or it still speaks HTTP correctly on it:
    /// `GET /ping` answers 200 `OK`. Used after errors where closing is allowed but not required.
    #[track_caller]
    pub fn expect_closed_or_ping_ok(&mut self) {
        if !self.buf.is_empty() {
            panic!(
                "unexpected extra bytes after response: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
        if self.try_send(b"GET /ping HTTP/1.1\r\nHost: esub\r\n\r\n").is_err() {
            return;
        }
        match self.fill() {
            Ok(0) => {}
            Err(e) if is_reset(&e) => {}
            Err(e) => panic!("neither closed nor answered: {e}"),
            Ok(_) => self.read_response().assert(200, b"OK"),
        }
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Close both directions now (FIN), then drop.
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
