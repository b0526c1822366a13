//! Helpers for the topics half (API-topics.md): a server on its own fresh data directory, a raw
//! HTTP connection that also reads chunked responses, batch pub/sub record codecs, and JSON
//! assertions for `{"ok":1}` / `{"errmsg":...}`.

use super::ws::{Raw, Ws};
use super::{IO_TIMEOUT, POLL_DEADLINE, Server};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// `Content-Type` of every topics JSON body (section 1).
pub const JSON_CT: &str = "application/json";
/// `Content-Type` of delivered messages (section 5.2).
pub const OCTETS: &str = "application/octet-stream";
/// A short long-poll for tests that expect 204: long enough for a local fetch, short enough to
/// keep the suite fast.
pub const SUB_TIMEOUT_MS: u64 = 300;
/// Slack allowed on top of a server-side timer before a timing bound fails (loaded CI boxes).
pub const SLACK: Duration = Duration::from_millis(1500);
/// Pause between polls of server state.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------------------------------------
// Data directory and server
// ---------------------------------------------------------------------------------------------

static DIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh, unique `ESUB_DATA_DIR` for one test, removed on drop.
pub struct DataDir {
    pub path: PathBuf,
}

impl DataDir {
    pub fn new(name: &str) -> DataDir {
        let n = DIR_COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("esub-topics-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        DataDir { path }
    }

    pub fn as_str(&self) -> &str {
        self.path.to_str().expect("temp dir path is UTF-8")
    }

    /// Every file below the directory (recursively); empty when it does not exist.
    pub fn files(&self) -> Vec<PathBuf> {
        fn walk(p: &Path, out: &mut Vec<PathBuf>) {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    let path = e.path();
                    if path.is_dir() {
                        walk(&path, out);
                    }
                    out.push(path);
                }
            }
        }
        let mut v = Vec::new();
        walk(&self.path, &mut v);
        v
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A topics server with its own data directory. Fields drop in order: the server is killed
/// before its directory is removed.
pub struct Topics {
    pub server: Server,
    pub dir: DataDir,
}

impl Deref for Topics {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl Topics {
    /// Start `esub` on port 0 with a fresh `ESUB_DATA_DIR` named after `name`, plus `env`.
    pub fn start(name: &str, env: &[(&str, &str)]) -> Topics {
        let dir = DataDir::new(name);
        let server = start_in(&dir, env);
        Topics { server, dir }
    }

    /// SIGTERM, expect exit 0 within 10 s, then start again on the same data directory.
    #[track_caller]
    pub fn restart(self, env: &[(&str, &str)]) -> Topics {
        let Topics { mut server, dir } = self;
        server.sigterm();
        let st = server.wait_exit(Duration::from_secs(10));
        assert_eq!(st.code(), Some(0), "exit status after SIGTERM");
        drop(server);
        let server = start_in(&dir, env);
        Topics { server, dir }
    }

    /// SIGKILL (no drain, no final sync), then start again on the same data directory.
    #[track_caller]
    pub fn kill9_restart(self, env: &[(&str, &str)]) -> Topics {
        let Topics { mut server, dir } = self;
        let st = std::process::Command::new("kill")
            .args(["-KILL", &server.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -KILL failed: {st:?}");
        server.wait_exit(Duration::from_secs(10));
        drop(server);
        let server = start_in(&dir, env);
        Topics { server, dir }
    }

    pub fn conn(&self) -> Conn {
        Conn::connect(self.server.addr)
    }

    /// One request on a new connection (for refusals that may close it).
    pub fn once(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        self.conn().req(method, path, headers, body)
    }

    /// A request refused from its head alone: sent with `Expect: 100-continue` and a declared
    /// body of `len` bytes that is never sent. Asserts the answer is not `100 Continue`, that it
    /// says `Connection: close` and that the connection then closes.
    #[track_caller]
    pub fn refused(&self, method: &str, path: &str, headers: &[(&str, &str)], len: usize) -> Resp {
        let mut c = self.conn();
        let len = len.to_string();
        let mut h = headers.to_vec();
        h.push(("Content-Length", &len));
        h.push(("Expect", "100-continue"));
        c.send_req(method, path, &h, b"");
        let r = c.read_resp();
        assert_ne!(r.status, 100, "{method} {path} {headers:?}: refused request got 100 Continue");
        assert!(
            r.connection_close(),
            "{method} {path}: refusal with the body unread must close: {r:?}"
        );
        c.expect_closed();
        r
    }

    /// Open mode: create `owner/topic/ver` with `p` partitions (201).
    pub fn create(&self, owner: &str, topic: &str, ver: &str, p: u32) {
        let r = self.conn().req(
            "POST",
            &format!("/v1/topics/{owner}/{topic}/{ver}?partitions={p}"),
            &[("Appid", owner), ("Pubkey", "pk")],
            b"",
        );
        r.assert_ok(201);
    }

    /// Open mode: `GET /v1/partitions/...` as `owner`, asserted 200 JSON; returns the body text.
    pub fn partitions(&self, owner: &str, topic: &str, ver: &str) -> String {
        let r = self.conn().req(
            "GET",
            &format!("/v1/partitions/{owner}/{topic}/{ver}"),
            &[("Appid", owner), ("Pubkey", "pk")],
            b"",
        );
        assert_eq!(r.status, 200, "partitions: {r:?}");
        assert_eq!(r.header("content-type"), Some(JSON_CT), "{r:?}");
        r.body_str()
    }

    /// `GET /v1/partitions/...` decoded as `(oldest, latest)` per partition; the body must be
    /// exactly [`partitions_json`] of the result.
    #[track_caller]
    pub fn offsets(&self, owner: &str, topic: &str, ver: &str) -> Vec<(i64, i64)> {
        use super::json::{Json, parse_json};
        let body = self.partitions(owner, topic, ver);
        let j = parse_json(&body).unwrap_or_else(|e| panic!("partitions body {body:?}: {e}"));
        let num = match j.get("num") {
            Some(Json::Num(n)) => *n as usize,
            other => panic!("no num in {body:?}: {other:?}"),
        };
        let offs = j.get("offsets").unwrap_or_else(|| panic!("no offsets in {body:?}"));
        let int = |p: usize, k: &str| match offs.get(&p.to_string()).and_then(|o| o.get(k)) {
            Some(Json::Num(n)) => *n as i64,
            other => panic!("partition {p} {k} in {body:?}: {other:?}"),
        };
        let v: Vec<(i64, i64)> = (0..num).map(|p| (int(p, "oldest"), int(p, "latest"))).collect();
        assert_eq!(body, partitions_json(&v), "partitions body is not in its exact form");
        v
    }

    /// Poll stderr until a line satisfies `pred`; fails after the poll deadline.
    #[track_caller]
    pub fn wait_stderr(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_stderr(&self.server, what, pred)
    }
}

/// Start `esub` on port 0 with `ESUB_DATA_DIR` = `dir`, plus `env`.
pub fn start_in(dir: &DataDir, env: &[(&str, &str)]) -> Server {
    let mut all: Vec<(&str, &str)> = vec![("ESUB_DATA_DIR", dir.as_str())];
    all.extend_from_slice(env);
    Server::start(&all)
}

/// Poll the server's stderr until a line satisfies `pred`; returns that line.
#[track_caller]
pub fn wait_stderr(s: &Server, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + POLL_DEADLINE;
    loop {
        if let Some(l) = s.stderr().lines().find(|l| pred(l)) {
            return l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no stderr line {what} within {POLL_DEADLINE:?}; stderr:\n{}",
            s.stderr()
        );
        thread::sleep(POLL_INTERVAL);
    }
}

/// The env pair for [`SUB_TIMEOUT_MS`].
pub const FAST: (&str, &str) = ("ESUB_SUB_TIMEOUT_MS", "300");

// ---------------------------------------------------------------------------------------------
// Paths and identity (open mode: keys are not checked, but always sent)
// ---------------------------------------------------------------------------------------------

/// A request's extra headers, for tables of cases.
pub type Headers<'a> = &'a [(&'a str, &'a str)];

/// One row of a refusal table: path, headers, status, error text.
pub type Case<'a> = (String, Vec<(&'a str, &'a str)>, u16, &'a str);

/// Headers of a publisher `app`.
pub fn pubh(app: &str) -> Vec<(&str, &str)> {
    vec![("Appid", app), ("Pubkey", "pk")]
}

/// Headers of a subscriber `app`.
pub fn subh(app: &str) -> Vec<(&str, &str)> {
    vec![("Appid", app), ("Subkey", "sk")]
}

/// `abs(i32(fnv1a32(key)) % p)` with `%` truncating toward zero (section 2).
pub fn partition_of(key: &[u8], p: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    ((h as i32) % (p as i32)).unsigned_abs()
}

/// The first key of the form `k<n>` that lands on partition `want` of `p`.
pub fn key_for(want: u32, p: u32) -> String {
    (0..10_000)
        .map(|n| format!("k{n}"))
        .find(|k| partition_of(k.as_bytes(), p) == want)
        .expect("some key hashes to every partition")
}

// ---------------------------------------------------------------------------------------------
// Batch codecs
// ---------------------------------------------------------------------------------------------

/// One batch-pub record: `[key_len u16][key][tag_len u16][tag][len u32][payload]`, big-endian.
pub fn rec(key: &[u8], tag: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(key.len() as u16).to_be_bytes());
    v.extend_from_slice(key);
    v.extend_from_slice(&(tag.len() as u16).to_be_bytes());
    v.extend_from_slice(tag);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// A delivered batch record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
}

impl Rec {
    pub fn new(partition: i32, offset: i64, payload: &[u8]) -> Rec {
        Rec { partition, offset, payload: payload.to_vec() }
    }
}

/// Decode a batch sub body: `[partition i32][offset i64][len i32][payload]`, nothing after.
#[track_caller]
pub fn decode_records(mut b: &[u8]) -> Vec<Rec> {
    let mut out = Vec::new();
    while !b.is_empty() {
        assert!(b.len() >= 16, "truncated record head: {b:?}");
        let partition = i32::from_be_bytes(b[0..4].try_into().unwrap());
        let offset = i64::from_be_bytes(b[4..12].try_into().unwrap());
        let len = i32::from_be_bytes(b[12..16].try_into().unwrap());
        assert!(len >= 0, "negative record length {len}");
        let len = len as usize;
        assert!(b.len() >= 16 + len, "truncated record payload: want {len}, have {}", b.len() - 16);
        out.push(Rec { partition, offset, payload: b[16..16 + len].to_vec() });
        b = &b[16 + len..];
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
pub struct Resp {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// When the head was complete.
    pub head_at: Instant,
    /// When the last body byte (or the terminating chunk) arrived.
    pub done_at: Instant,
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = &self.body[..self.body.len().min(200)];
        write!(
            f,
            "{} {} {:?} body({} bytes{}) {:?}",
            self.status,
            self.reason,
            self.headers,
            self.body.len(),
            if self.chunked { ", chunked" } else { "" },
            String::from_utf8_lossy(shown)
        )
    }
}

impl Resp {
    /// The single header `name` (case-insensitive); fails if repeated.
    #[track_caller]
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut it = self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
        let first = it.next().map(|(_, v)| v.as_str());
        assert!(it.next().is_none(), "header {name} repeated in {self:?}");
        first
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn connection_close(&self) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("close"))
    }

    /// Comma-separated tokens of `Allow`, sorted.
    #[track_caller]
    pub fn allow(&self) -> Vec<String> {
        let v = self.header("allow").unwrap_or_else(|| panic!("no Allow header in {self:?}"));
        let mut t: Vec<String> =
            v.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
        t.sort();
        t
    }

    /// Status, `Content-Type: application/json` and the exact body text.
    #[track_caller]
    pub fn assert_json(&self, status: u16, text: &str) {
        assert_eq!(
            (self.status, self.body_str().as_str()),
            (status, text),
            "status/body mismatch; full response {self:?}"
        );
        assert_eq!(self.header("content-type"), Some(JSON_CT), "content type of {self:?}");
    }

    /// `status` with body `{"ok":1}`.
    #[track_caller]
    pub fn assert_ok(&self, status: u16) {
        self.assert_json(status, r#"{"ok":1}"#);
    }

    /// `status` with body `{"errmsg":"<text>"}`.
    #[track_caller]
    pub fn assert_err(&self, status: u16, text: &str) {
        self.assert_json(status, &format!(r#"{{"errmsg":"{text}"}}"#));
    }

    /// A single pub's 201: `{"ok":1}` plus `X-Partition` / `X-Offset`; returns them.
    #[track_caller]
    pub fn pubd(&self) -> (i32, i64) {
        self.assert_ok(201);
        self.position()
    }

    /// `X-Partition` and `X-Offset` as integers.
    #[track_caller]
    pub fn position(&self) -> (i32, i64) {
        let p = self.header("x-partition").unwrap_or_else(|| panic!("no X-Partition: {self:?}"));
        let o = self.header("x-offset").unwrap_or_else(|| panic!("no X-Offset: {self:?}"));
        (
            p.parse().unwrap_or_else(|_| panic!("bad X-Partition {p:?}")),
            o.parse().unwrap_or_else(|_| panic!("bad X-Offset {o:?}")),
        )
    }

    /// A single-message delivery: 200, octet-stream, Content-Length, payload; returns the record.
    #[track_caller]
    pub fn msg(&self) -> Rec {
        assert_eq!(self.status, 200, "expected a message, got {self:?}");
        assert_eq!(self.header("content-type"), Some(OCTETS), "content type of {self:?}");
        assert!(!self.chunked, "single message must not be chunked: {self:?}");
        let (partition, offset) = self.position();
        Rec { partition, offset, payload: self.body.clone() }
    }

    /// A batch delivery: 200, octet-stream, chunked; returns the decoded records.
    #[track_caller]
    pub fn batch(&self) -> Vec<Rec> {
        assert_eq!(self.status, 200, "expected a batch, got {self:?}");
        assert_eq!(self.header("content-type"), Some(OCTETS), "content type of {self:?}");
        assert!(self.chunked, "batch must be chunked: {self:?}");
        decode_records(&self.body)
    }

    /// 204 with no body and no headers of a delivery.
    #[track_caller]
    pub fn assert_204(&self) {
        assert_eq!(self.status, 204, "expected 204, got {self:?}");
        assert!(self.body.is_empty());
        for h in ["content-length", "x-partition", "x-offset", "x-key", "x-tag"] {
            assert!(!self.has_header(h), "204 carries {h}: {self:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------------------------

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// A raw HTTP/1.1 connection that reads one response at a time, `Content-Length` or chunked.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn { stream, buf: Vec::new() }
    }

    #[track_caller]
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap_or_else(|e| panic!("write failed: {e}"));
    }

    /// Send a request. A body is framed by `Content-Length` unless the method is GET, HEAD
    /// or DELETE with an empty body, or a `Transfer-Encoding` header is given (then `body` is
    /// sent as is).
    #[track_caller]
    pub fn send_req(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: esub\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        let te = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"));
        let cl = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
        let bodyless = body.is_empty() && matches!(method, "GET" | "HEAD" | "DELETE");
        if !(te || cl || bodyless) {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.send(&bytes);
    }

    /// Send a request and read its response.
    #[track_caller]
    pub fn req(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        self.send_req(method, path, headers, body);
        self.read_resp()
    }

    /// Open-mode single pub by `app` (`POST path`, extra headers); the response.
    #[track_caller]
    pub fn publish(&mut self, app: &str, path: &str, extra: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut h = pubh(app);
        h.extend_from_slice(extra);
        self.req("POST", path, &h, body)
    }

    /// Open-mode sub GET by `app`; the response.
    #[track_caller]
    pub fn sub(&mut self, app: &str, path: &str, extra: &[(&str, &str)]) -> Resp {
        self.send_sub(app, path, extra);
        self.read_resp()
    }

    /// Send an open-mode sub GET by `app` without reading the response.
    #[track_caller]
    pub fn send_sub(&mut self, app: &str, path: &str, extra: &[(&str, &str)]) {
        let mut h = subh(app);
        h.extend_from_slice(extra);
        self.send_req("GET", path, &h, b"");
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    #[track_caller]
    fn fill_or_panic(&mut self, what: &str) {
        match self.fill() {
            Ok(0) => panic!(
                "connection closed while reading {what}; got {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Ok(_) => {}
            Err(e) => {
                panic!("reading {what}: {e}; got so far {:?}", String::from_utf8_lossy(&self.buf))
            }
        }
    }

    #[track_caller]
    fn read_line(&mut self, what: &str) -> String {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return String::from_utf8_lossy(&line[..i]).into_owned();
            }
            self.fill_or_panic(what);
        }
    }

    /// Read one response head; the body is left for `read_body`.
    #[track_caller]
    pub fn read_head(&mut self) -> Resp {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill_or_panic("a response head");
        };
        let head_at = Instant::now();
        let head = String::from_utf8(self.buf[..end - 4].to_vec()).expect("UTF-8 response head");
        self.buf.drain(..end);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        assert!(version == "HTTP/1.1" || version == "HTTP/1.0", "bad status line {status_line:?}");
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let reason = parts.next().unwrap_or_default().to_string();
        let headers = lines
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap_or_else(|| panic!("bad header {l:?}"));
                (k.to_string(), v.trim().to_string())
            })
            .collect::<Vec<_>>();
        let chunked = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
        });
        Resp { status, reason, headers, body: Vec::new(), chunked, head_at, done_at: head_at }
    }

    /// Read the next chunk of a chunked body: `None` after the last (zero) chunk and trailers.
    #[track_caller]
    pub fn read_chunk(&mut self) -> Option<Vec<u8>> {
        let line = self.read_line("a chunk size");
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        if size == 0 {
            loop {
                if self.read_line("chunk trailers").is_empty() {
                    return None;
                }
            }
        }
        while self.buf.len() < size + 2 {
            self.fill_or_panic("a chunk");
        }
        let data: Vec<u8> = self.buf.drain(..size).collect();
        let crlf: Vec<u8> = self.buf.drain(..2).collect();
        assert_eq!(crlf, b"\r\n", "chunk not followed by CRLF");
        Some(data)
    }

    /// Read the body belonging to `head` (framing checked) into it.
    #[track_caller]
    pub fn read_body(&mut self, head: &mut Resp) {
        let bodyless = (100..200).contains(&head.status) || head.status == 204;
        let lengths: Vec<String> = head
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.clone())
            .collect();
        if bodyless {
            assert!(
                lengths.is_empty() && !head.chunked,
                "{} with a body framing: {head:?}",
                head.status
            );
        } else if head.chunked {
            assert!(lengths.is_empty(), "chunked and Content-Length: {head:?}");
            while let Some(c) = self.read_chunk() {
                head.body.extend_from_slice(&c);
            }
        } else {
            assert_eq!(lengths.len(), 1, "exactly one Content-Length expected: {head:?}");
            let len: usize = lengths[0].parse().expect("numeric Content-Length");
            while self.buf.len() < len {
                self.fill_or_panic("a body");
            }
            head.body = self.buf.drain(..len).collect();
        }
        head.done_at = Instant::now();
    }

    /// Read one whole response.
    #[track_caller]
    pub fn read_resp(&mut self) -> Resp {
        let mut r = self.read_head();
        self.read_body(&mut r);
        r
    }

    /// Whether the peer closes (EOF or reset) within `within`; fails if bytes arrive.
    #[track_caller]
    pub fn closed_within(&mut self, within: Duration) -> bool {
        assert!(self.buf.is_empty(), "unexpected bytes: {:?}", String::from_utf8_lossy(&self.buf));
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
                Ok(_) => {
                    panic!("expected a close, got bytes {:?}", String::from_utf8_lossy(&self.buf))
                }
                Err(e) if is_reset(&e) => return true,
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read error while waiting for a close: {e}"),
            }
        }
    }

    #[track_caller]
    pub fn expect_closed(&mut self) {
        assert!(self.closed_within(IO_TIMEOUT), "connection still open after {IO_TIMEOUT:?}");
    }

    /// Assert nothing arrives and the connection stays open for `quiet`.
    #[track_caller]
    pub fn expect_silence(&mut self, quiet: Duration) {
        assert!(self.buf.is_empty(), "unexpected bytes: {:?}", String::from_utf8_lossy(&self.buf));
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

    /// Close both directions now.
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

// ---------------------------------------------------------------------------------------------
// Consuming helpers
// ---------------------------------------------------------------------------------------------

/// GET single messages on `c` until a 204; returns them in delivery order. Each GET must be a
/// message or the final 204.
#[track_caller]
pub fn drain(c: &mut Conn, app: &str, path: &str, extra: &[(&str, &str)]) -> Vec<Rec> {
    let mut out = Vec::new();
    loop {
        let r = c.sub(app, path, extra);
        if r.status == 204 {
            r.assert_204();
            return out;
        }
        out.push(r.msg());
        assert!(out.len() <= 10_000, "drain does not end");
    }
}

/// Join a group on a new connection, retrying while the server still counts an instance that
/// was just closed (400 `consumers more than available partitions`). Returns the connection
/// and the first non-400 response.
#[track_caller]
pub fn join(t: &Topics, app: &str, path: &str, extra: &[(&str, &str)]) -> (Conn, Resp) {
    let deadline = Instant::now() + POLL_DEADLINE;
    let mut c = t.conn();
    loop {
        let r = c.sub(app, path, extra);
        if r.status != 400
            || r.body_str() != r#"{"errmsg":"consumers more than available partitions"}"#
        {
            return (c, r);
        }
        assert!(Instant::now() < deadline, "still no room in the group after {POLL_DEADLINE:?}");
        thread::sleep(POLL_INTERVAL);
    }
}

/// `(partition, offset)` pairs of records, for compact comparisons.
pub fn pos(recs: &[Rec]) -> Vec<(i32, i64)> {
    recs.iter().map(|r| (r.partition, r.offset)).collect()
}

/// The body of `GET /v1/partitions` for `offsets[i] = (oldest, latest)`.
pub fn partitions_json(offsets: &[(i64, i64)]) -> String {
    let parts: Vec<String> = offsets
        .iter()
        .enumerate()
        .map(|(i, (o, l))| format!(r#""{i}":{{"oldest":{o},"latest":{l}}}"#))
        .collect();
    format!(r#"{{"num":{},"offsets":{{{}}}}}"#, offsets.len(), parts.join(","))
}

// ---------------------------------------------------------------------------------------------
// Websockets (sections 4.3 and 5.5)
// ---------------------------------------------------------------------------------------------

/// The answer frame of a stored (or, with `async=1`, placed) ws pub frame.
pub fn ws_ok(partition: u32, offset: i64) -> String {
    format!(r#"{{"ok":1,"partition":{partition},"offset":{offset}}}"#)
}

/// The error frame of a refused ws pub frame.
pub fn ws_err(text: &str) -> String {
    format!(r#"{{"errmsg":"{text}"}}"#)
}

/// A websocket upgrade request for `path` with extra `headers` (RFC 6455's sample key).
pub fn ws_upgrade_request(path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: esub\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {}\r\n",
        super::ws::WS_KEY
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// A masked client data frame: TEXT (`0x81`) or BINARY (`0x82`).
pub fn ws_frame(text: bool, payload: &[u8]) -> Vec<u8> {
    super::ws::masked(if text { 0x81 } else { 0x82 }, payload)
}

/// The next server data frame must be TEXT; its text.
#[track_caller]
pub fn ws_text(raw: &mut Raw) -> String {
    match raw.data() {
        (0x81, p) => String::from_utf8(p).expect("server TEXT frame is UTF-8"),
        (op, p) => panic!("expected a TEXT frame, got opcode {op:#x} with {p:?}"),
    }
}

/// The next server data frame must be BINARY; its payload.
#[track_caller]
pub fn ws_binary(raw: &mut Raw) -> Vec<u8> {
    match raw.data() {
        (0x82, p) => p,
        (op, p) => {
            panic!(
                "expected a BINARY frame, got opcode {op:#x} with {:?}",
                String::from_utf8_lossy(&p)
            )
        }
    }
}

/// The next server data frame must be one `meta=1` record (5.2's batch record); decoded.
#[track_caller]
pub fn ws_meta(raw: &mut Raw) -> Rec {
    let recs = decode_records(&ws_binary(raw));
    assert_eq!(recs.len(), 1, "a meta frame holds exactly one record: {recs:?}");
    recs.into_iter().next().unwrap()
}

/// Whether `r` is the refusal of a join to a (group, queue) that has P live instances.
fn no_room(r: &Resp) -> bool {
    r.status == 400 && r.body_str() == r#"{"errmsg":"consumers more than available partitions"}"#
}

impl Topics {
    /// A websocket upgrade that must be answered with an HTTP error: no `101`, no upgrade
    /// headers. Returns the whole response.
    #[track_caller]
    pub fn ws_refused(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut c = self.conn();
        c.send(&ws_upgrade_request(path, headers));
        let r = c.read_resp();
        assert_ne!(r.status, 101, "{path} {headers:?}: upgraded, expected an HTTP error");
        for h in ["upgrade", "sec-websocket-accept"] {
            assert!(!r.has_header(h), "{path}: refusal carries {h}: {r:?}");
        }
        r
    }

    /// A websocket on `path` with `headers`, spoken by hand: the `101` and its accept value are
    /// checked; bytes after the head stay buffered as the first frames.
    #[track_caller]
    pub fn ws_raw(&self, path: &str, headers: &[(&str, &str)]) -> Raw {
        let mut c = self.conn();
        c.send(&ws_upgrade_request(path, headers));
        let r = c.read_head();
        assert_eq!(r.status, 101, "{path} {headers:?}: not upgraded: {r:?}");
        assert_eq!(
            r.header("sec-websocket-accept"),
            Some(super::ws::WS_ACCEPT),
            "accept value of {r:?}"
        );
        Raw { s: c.stream, buf: c.buf }
    }

    /// [`Topics::ws_raw`] for a consumer: retries while the group still counts an instance that
    /// was just closed (400 `consumers more than available partitions`).
    #[track_caller]
    pub fn ws_join(&self, path: &str, headers: &[(&str, &str)]) -> Raw {
        let deadline = Instant::now() + POLL_DEADLINE;
        loop {
            let mut c = self.conn();
            c.send(&ws_upgrade_request(path, headers));
            let r = c.read_head();
            if r.status == 101 {
                return Raw { s: c.stream, buf: c.buf };
            }
            let mut r = r;
            c.read_body(&mut r);
            assert!(no_room(&r), "{path} {headers:?}: not upgraded: {r:?}");
            assert!(
                Instant::now() < deadline,
                "still no room in the group after {POLL_DEADLINE:?}"
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// A websocket on `path` with `headers`, through tungstenite (answers pings by itself).
    #[track_caller]
    pub fn ws(&self, path: &str, headers: &[(&str, &str)]) -> Ws {
        use tungstenite::client::IntoClientRequest;
        use tungstenite::http::{HeaderName, HeaderValue};
        let mut req = format!("ws://{}{path}", self.addr).into_client_request().expect("ws url");
        for (k, v) in headers {
            req.headers_mut().append(
                HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                HeaderValue::from_str(v).expect("header value"),
            );
        }
        match tungstenite::client(req, super::ws::tcp(&self.server)) {
            Ok((ws, resp)) => {
                assert_eq!(resp.status().as_u16(), 101, "{path}: {resp:?}");
                ws
            }
            Err(e) => panic!("websocket handshake for {path} failed: {e}"),
        }
    }
}

/// Nothing but pings arrives on `raw` for `quiet`, and the socket stays open.
#[track_caller]
pub fn ws_quiet(raw: &mut Raw, quiet: Duration) {
    let deadline = Instant::now() + quiet;
    loop {
        while let Some((first, payload, used)) = super::ws::parse_server_frame(&raw.buf) {
            raw.buf.drain(..used);
            assert_eq!(
                first, 0x89,
                "expected nothing for {quiet:?}, got frame {first:#x} {payload:?}"
            );
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        raw.s.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 65536];
        let r = raw.s.read(&mut chunk);
        raw.s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        match r {
            Ok(0) => panic!("socket closed while it should stay quiet"),
            Ok(n) => raw.buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read error while it should stay quiet: {e}"),
        }
    }
}

/// Data frames (already sent before the server saw what closes the socket) are skipped; then
/// the close must have `code` and `reason` (when given), then the TCP close. Returns the number
/// of data frames skipped.
#[track_caller]
pub fn ws_close_after_data(raw: &mut Raw, code: u16, reason: Option<&str>) -> usize {
    let mut skipped = 0;
    loop {
        match raw.frame_skip_control() {
            super::ws::RawFrame::Frame(0x81 | 0x82, _) => skipped += 1,
            super::ws::RawFrame::Frame(0x88, p) => {
                raw.buf.splice(0..0, close_bytes(&p));
                raw.expect_close(code, reason);
                return skipped;
            }
            other => panic!("expected data frames then close {code}, got {other:?}"),
        }
    }
}

/// A server close frame with payload `p`, as it came on the wire (put back for re-parsing).
fn close_bytes(p: &[u8]) -> Vec<u8> {
    let mut v = vec![0x88];
    super::ws::push_len(&mut v, 0, p.len());
    v.extend_from_slice(p);
    v
}
