//! Logging (API.md section 6): one `LEVEL message key=value` line per event on stderr; the
//! start-up line; nothing per request by default; `ESUB_DEBUG` adds per-request lines,
//! `ESUB_VERBOSE_DEBUG` statsd payloads and socket events; tokens never appear at any level.

mod common;

use common::{Client, IO_TIMEOUT, Server};
use std::net::{TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};
use tungstenite::Message;

/// The token every request of the secrecy test carries; also what must never be logged.
const TOKEN: &str = "s3cr3t-tok";
/// The part of it that survives any encoding a log might use (`s3cr3t%2Dtok`, `s3cr3t+tok`).
const NEEDLE: &str = "s3cr3t";
const LEVELS: [&str; 4] = ["INFO", "WARN", "ERROR", "DEBUG"];

/// Polls the server's stderr until `done` holds; fails with `what` after the I/O timeout.
#[track_caller]
fn wait_stderr(s: &Server, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let err = s.stderr();
        if done(&err) {
            return err;
        }
        assert!(Instant::now() < deadline, "stderr never showed {what}; stderr:\n{err}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// The start-up line: the one that names the bound address.
fn startup_line(s: &Server) -> String {
    let addr = s.addr.to_string();
    // The whole line: the collector may have read only part of it so far.
    let err = wait_stderr(s, &format!("a whole line naming {addr}"), |e| {
        e.split_inclusive('\n').any(|l| l.contains(&addr) && l.ends_with('\n'))
    });
    err.lines().find(|l| l.contains(&addr)).unwrap().to_string()
}

/// Every line has the shape `LEVEL message key=value ...`.
#[track_caller]
fn check_format(stderr: &str) {
    for line in stderr.lines() {
        let mut words = line.split(' ');
        let level = words.next().unwrap_or_default();
        assert!(LEVELS.contains(&level), "line without a level: {line:?}");
        let rest: Vec<&str> = words.collect();
        assert!(!rest.is_empty() && !rest[0].is_empty(), "line without a message: {line:?}");
        assert!(!rest[0].contains('='), "line starts with key=value, no message: {line:?}");
    }
}

/// Checks that stderr stays exactly `before` for `quiet` (the server logs synchronously
/// before it answers, so a request's line would already be in the pipe).
#[track_caller]
fn expect_stderr_unchanged(s: &Server, before: &str, quiet: Duration) {
    let until = Instant::now() + quiet;
    loop {
        let now = s.stderr();
        assert_eq!(now, before, "stderr changed without debug logging");
        if Instant::now() >= until {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// One sub/rep round trip on `key` with `token` (either may be absent).
fn round_trip(s: &Server, key: &str, query: &str, body: &[u8]) {
    let mut sub = s.sub(&format!("/sub/{key}{query}"));
    s.wait_for_key(key);
    s.post(&format!("/rep/{key}{query}"), body).assert(200, b"OK");
    sub.read_response().assert_delivered(body);
}

#[test]
fn startup_line_names_address_workers_and_store_mode() {
    let s = Server::start(&[("ESUB_WORKERS", "3")]);
    let line = startup_line(&s);
    assert!(line.starts_with("INFO "), "start-up line is not INFO: {line:?}");
    let words: Vec<&str> = line.split(' ').collect();
    assert!(
        words.iter().any(|w| w.ends_with(&format!("=127.0.0.1:{}", s.port()))),
        "start-up line does not give the address as key=value: {line:?}"
    );
    assert!(words.contains(&"workers=3"), "start-up line does not say workers=3: {line:?}");
    assert!(words.contains(&"store=off"), "start-up line does not say store=off: {line:?}");
    check_format(&s.stderr());
}

/// The store mode on the start-up line follows ESUB_STORE.
#[test]
fn startup_line_names_the_store_mode_in_force() {
    let dir = std::env::temp_dir().join(format!("esub-logs-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_s = dir.to_string_lossy().into_owned();
    let s = Server::start(&[("ESUB_STORE", "undelivered"), ("ESUB_DATA_DIR", &dir_s)]);
    let line = startup_line(&s);
    assert!(
        line.split(' ').any(|w| w == "store=undelivered"),
        "start-up line does not say store=undelivered: {line:?}"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// 100 requests of every kind (good, 404, 405, 400) log nothing without ESUB_DEBUG: stderr
/// holds only the start-up lines.
#[test]
fn nothing_logged_per_request_by_default() {
    let mut s = Server::start(&[]);
    startup_line(&s);
    let before = s.stderr();
    let mut n = 0;
    for i in 0..10 {
        round_trip(&s, &format!("quiet{i}"), "", b"x"); // sub, /keys (polled, >= 1), rep
        n += 3;
    }
    for _ in 0..10 {
        s.get("/ping").assert(200, b"OK");
        assert_eq!(s.get("/info").status, 200);
        s.post("/rep/nobody", b"x").assert_text(404, "Unknown key");
        s.get("/nope").assert_text(404, "Not Found");
        assert_eq!(s.post("/ping", b"").status, 405);
        assert_eq!(s.get("/metrics").status, 200);
        assert_eq!(s.get("/sub/%zz").status, 400);
        n += 7;
    }
    assert!(n >= 100, "{n} requests");
    expect_stderr_unchanged(&s, &before, Duration::from_millis(300));
    check_format(&before);
    assert!(!before.contains("DEBUG"), "DEBUG line without ESUB_DEBUG:\n{before}");
    s.sigterm();
    assert!(s.wait_exit(IO_TIMEOUT).success());
}

/// ESUB_DEBUG adds per-request debug lines: at least one DEBUG line per request.
#[test]
fn debug_adds_per_request_lines() {
    let s = Server::start(&[("ESUB_DEBUG", "1")]);
    startup_line(&s);
    let debug_lines = |e: &str| e.lines().filter(|l| l.starts_with("DEBUG ")).count();
    let before = debug_lines(&s.stderr());
    let mut c = s.client();
    for i in 0..10 {
        assert_eq!(c.get("/info").status, 200);
        c.post(&format!("/rep/dbg{i}"), b"x").assert_text(404, "Unknown key");
    }
    let want = before + 20;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let err = s.stderr();
        let n = debug_lines(&err);
        if n >= want {
            check_format(&err);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ESUB_DEBUG=1: {} DEBUG lines after 20 requests (10 GET /info, 10 POST /rep to an \
             unknown key), want at least 20; stderr:\n{err}",
            n - before
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// With every log level on, requests carrying the token in every place a request can carry it
/// (sub, rep, 403s, 404s, a 405, a 400, a 431, psub, a /prep frame, percent-encoded) never put
/// it on stderr; the debug output itself is there (socket events, statsd payloads).
#[test]
fn tokens_never_logged_even_with_verbose_debug() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port().to_string();
    let mut s = Server::start(&[
        ("ESUB_DEBUG", "1"),
        ("ESUB_VERBOSE_DEBUG", "1"),
        ("ESUB_TAG_KEYS", "1"),
        ("DATADOG_SERVICE_HOST", "127.0.0.1"),
        ("DATADOG_SERVICE_PORT", &port),
        ("ESUB_METRIC_INTERVAL_MS", "200"),
    ]);
    startup_line(&s);
    let t = format!("?token={TOKEN}");

    round_trip(&s, "tk1", &t, b"one");

    let mut sub = s.sub(&format!("/sub/tk2{t}"));
    s.wait_for_key("tk2");
    s.post("/rep/tk2?token=wrong", b"x").assert_text(403, "Invalid token");
    s.post(&format!("/rep/tk2{t}"), b"two").assert(200, b"OK");
    sub.read_response().assert_delivered(b"two");

    let mut other = s.sub("/sub/tk3?token=other");
    s.wait_for_key("tk3");
    s.get(&format!("/sub/tk3{t}")).assert_text(403, "Key is used and token does not match.");
    s.post("/rep/tk3?token=other", b"3").assert(200, b"OK");
    other.read_response().assert_delivered(b"3");

    s.get(&format!("/nope{t}")).assert_text(404, "Not Found");
    s.post(&format!("/rep/nobody{t}"), b"x").assert_text(404, "Unknown key");
    assert_eq!(s.post(&format!("/sub/tk9{t}"), b"").status, 405);
    assert_eq!(s.get(&format!("/sub/%zz{t}")).status, 400);
    let mut c = s.client();
    let pad = "a".repeat(9000);
    c.send(format!("GET /sub/big{t} HTTP/1.1\r\nHost: esub\r\nX-Pad: {pad}\r\n\r\n").as_bytes());
    assert_eq!(c.read_response().status, 431);

    // The same token percent-encoded in the sub.
    let mut sub = s.sub("/sub/tk4?token=s3cr3t%2Dtok");
    s.wait_for_key("tk4");
    s.post("/rep/tk4?token=s3cr3t-tok", b"four").assert(200, b"OK");
    sub.read_response().assert_delivered(b"four");

    // Websockets: a psub member with the token, a refused join, a /prep frame carrying it.
    let tcp = || {
        let t = TcpStream::connect_timeout(&s.addr, IO_TIMEOUT).unwrap();
        t.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        t
    };
    let url = |path: &str| format!("ws://{}{path}", s.addr);
    let (mut member, _) = tungstenite::client(url(&format!("/psub/tk5{t}")), tcp()).unwrap();
    match tungstenite::client(url(&format!("/psub/tk5?token={TOKEN}x")), tcp()) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            assert_eq!(r.status().as_u16(), 403)
        }
        other => panic!("join with another token should get 403: {other:?}"),
    }
    let (mut prep, _) = tungstenite::client(url("/prep?confirm=1"), tcp()).unwrap();
    let frame = format!(r#"{{"key": "tk5", "token": "{TOKEN}", "data": "five"}}"#);
    prep.send(Message::text(frame)).unwrap();
    assert_eq!(next_data(&mut member), "five");
    assert_eq!(next_data(&mut prep), "ok");
    let frame = format!(r#"{{"key": "tk5", "token": "{TOKEN}-bad", "data": "x"}}"#);
    prep.send(Message::text(frame)).unwrap();
    assert_eq!(next_data(&mut prep), "Invalid token");
    member.close(None).unwrap();
    prep.close(None).unwrap();
    drop(Client::connect(s.addr)); // a connection that just opens and closes

    // The statsd payload of these requests is logged after them (verbose), so once it shows,
    // every line the requests caused is on stderr already.
    let err = wait_stderr(&s, "a statsd payload with the psub and prep buckets", |e| {
        e.lines().any(|l| l.contains("route:psub")) && e.lines().any(|l| l.contains("route:prep"))
    });
    check_format(&err);
    assert!(err.lines().any(|l| l.starts_with("DEBUG ")), "no DEBUG lines at all:\n{err}");
    assert!(
        err.lines().any(|l| l.contains("esub.requests:")),
        "ESUB_VERBOSE_DEBUG: no statsd payload logged:\n{err}"
    );
    assert!(!err.contains(NEEDLE), "the token appears in the logs:\n{}", lines_with(&err));

    s.sigterm();
    assert!(s.wait_exit(IO_TIMEOUT).success());
    let err = s.stderr();
    assert!(!err.contains(NEEDLE), "the token appears in the logs:\n{}", lines_with(&err));
    drop(udp);
}

fn lines_with(err: &str) -> String {
    err.lines().filter(|l| l.contains(NEEDLE)).collect::<Vec<_>>().join("\n")
}

fn next_data(ws: &mut tungstenite::WebSocket<TcpStream>) -> String {
    loop {
        match ws.read() {
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Text(t)) => return t.as_str().to_string(),
            Ok(Message::Binary(b)) => return String::from_utf8_lossy(&b).into_owned(),
            other => panic!("expected a data message, got {other:?}"),
        }
    }
}
