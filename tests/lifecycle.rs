//! Process lifecycle (API.md sections 7 and 8): the listening line, `--help`, configuration
//! errors, SIGTERM/SIGINT drain, SO_REUSEPORT restarts, several workers.

mod common;

use common::{Client, Server, run_to_exit};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const EXIT_DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn first_stdout_line_is_listening_address() {
    let s = Server::start(&[]);
    assert_ne!(s.port(), 0);
    assert_eq!(s.first_line, format!("listening on 127.0.0.1:{}", s.port()));
    s.get("/ping").assert(200, b"OK");
}

#[test]
fn default_bind_is_all_interfaces() {
    let s = Server::start_default_bind(&[]);
    assert_eq!(s.first_line, format!("listening on 0.0.0.0:{}", s.port()));
    s.get("/ping").assert(200, b"OK");
}

#[test]
fn explicit_port_is_used() {
    // Find a port the kernel considers free, release it, then ask esub for it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p = port.to_string();
    let s = Server::start(&[("ESUB_PORT", &p)]);
    assert_eq!(s.first_line, format!("listening on 127.0.0.1:{port}"));
    s.get("/ping").assert(200, b"OK");
}

fn help_text() -> String {
    let out = run_to_exit(&["--help"], &[], EXIT_DEADLINE);
    assert_eq!(
        out.status.map(|s| s.code()),
        Some(Some(0)),
        "--help exit (None: still running); stderr: {}",
        out.stderr
    );
    assert!(!out.stdout.contains("listening on"), "--help started the server: {}", out.stdout);
    out.stdout
}

/// Whether `line` names `var` as a whole word.
fn mentions(line: &str, var: &str) -> bool {
    line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).any(|w| w == var)
}

fn help_line<'a>(help: &'a str, var: &str) -> &'a str {
    help.lines()
        .find(|l| mentions(l, var))
        .unwrap_or_else(|| panic!("--help does not list {var}:\n{help}"))
}

fn lists(help: &str, var: &str) -> bool {
    help.lines().any(|l| mentions(l, var))
}

#[test]
fn help_lists_http_variables_with_defaults() {
    let help = help_text();
    for (var, default) in [
        ("ESUB_PORT", "8090"),
        ("ESUB_BIND", "0.0.0.0"),
        ("ESUB_MAX_HEADER_BYTES", "8192"),
        ("ESUB_HEADER_TIMEOUT_MS", "10000"),
        ("ESUB_IDLE_TIMEOUT_MS", "75000"),
        ("ESUB_DRAIN_MS", "5000"),
    ] {
        let line = help_line(&help, var);
        assert!(line.contains(default), "default {default} of {var} not on its line: {line:?}");
    }
    for var in [
        "ESUB_WORKERS",
        "ESUB_NODE_IP",
        "ESUB_CLOSE_CONNECTIONS",
        "ESUB_MAX_BODY_BYTES",
        "ESUB_WRITE_TIMEOUT_MS",
        "ESUB_MAX_CONNECTIONS",
    ] {
        help_line(&help, var);
    }
}

#[test]
fn help_lists_every_documented_variable() {
    let help = help_text();
    let missing: Vec<&str> = [
        "ESUB_PORT",
        "ESUB_BIND",
        "ESUB_WORKERS",
        "ESUB_NODE_IP",
        "ESUB_CLOSE_CONNECTIONS",
        "ESUB_CONFIRM_RECEIPT",
        "ESUB_CONFIRM_TIMEOUT_MS",
        "ESUB_PING_FREQUENCY",
        "ESUB_MAX_HEADER_BYTES",
        "ESUB_MAX_BODY_BYTES",
        "ESUB_HEADER_TIMEOUT_MS",
        "ESUB_IDLE_TIMEOUT_MS",
        "ESUB_WRITE_TIMEOUT_MS",
        "ESUB_MAX_CONNECTIONS",
        "ESUB_STORE",
        "ESUB_DATA_DIR",
        "ESUB_FSYNC",
        "ESUB_FSYNC_MS",
        "ESUB_RETENTION_SECS",
        "ESUB_RETENTION_BYTES",
        "DATADOG_SERVICE_HOST",
        "DATADOG_SERVICE_PORT",
        "ESUB_METRIC_PREFIX",
        "ESUB_ENVIRONMENT_NAME",
        "ESUB_TAG_KEYS",
        "ESUB_METRIC_INTERVAL_MS",
        "ESUB_DEBUG",
        "ESUB_VERBOSE_DEBUG",
        "ESUB_DRAIN_MS",
    ]
    .into_iter()
    .filter(|var| !lists(&help, var))
    .collect();
    assert!(missing.is_empty(), "--help does not list {missing:?}:\n{help}");
}

#[test]
fn invalid_values_exit_2_with_one_line_naming_the_variable() {
    let cases: &[(&str, &str)] = &[
        ("ESUB_PORT", "abc"),
        ("ESUB_PORT", "70000"),
        ("ESUB_PORT", "-1"),
        ("ESUB_WORKERS", "0"),
        ("ESUB_WORKERS", "x"),
        ("ESUB_MAX_BODY_BYTES", "-1"),
        ("ESUB_MAX_HEADER_BYTES", "lots"),
        ("ESUB_HEADER_TIMEOUT_MS", "1.5"),
        ("ESUB_IDLE_TIMEOUT_MS", "10s"),
        ("ESUB_DRAIN_MS", "soon"),
        ("ESUB_BIND", "not-an-address"),
    ];
    check_config_errors(cases);
}

#[test]
fn unknown_store_mode_exits_2() {
    check_config_errors(&[("ESUB_STORE", "bogus"), ("ESUB_FSYNC", "sometimes")]);
}

/// A configuration error is found at start-up: well before this.
const CONFIG_ERROR_DEADLINE: Duration = Duration::from_secs(3);

fn check_config_errors(cases: &[(&str, &str)]) {
    let mut failures = Vec::new();
    for (var, value) in cases {
        let out = run_to_exit(&[], &[(var, value)], CONFIG_ERROR_DEADLINE);
        let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let ok = out.status.and_then(|s| s.code()) == Some(2)
            && lines.len() == 1
            && lines[0].contains(var)
            && !out.stdout.contains("listening on");
        if !ok {
            failures.push(format!(
                "{var}={value:?}: exit {:?} (None: still running after {:?}), stdout {:?}, \
                 stderr {:?}",
                out.status.map(|s| s.code()),
                CONFIG_ERROR_DEADLINE,
                out.stdout,
                out.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "bad configuration handling:\n{}", failures.join("\n"));
}

#[test]
fn sigterm_answers_waiting_subs_503_and_exits_0() {
    let mut s = Server::start(&[("ESUB_DRAIN_MS", "3000")]);
    let mut subs: Vec<Client> =
        ["/sub/t1", "/sub/t2?token=x", "/sub/t3"].iter().map(|p| s.sub(p)).collect();
    s.wait_for_keys(&["t1", "t2", "t3"]);
    // An idle keep-alive connection too: it must not hold the exit back.
    let mut idle = s.client();
    idle.get("/ping").assert(200, b"OK");

    let t = Instant::now();
    s.sigterm();
    for sub in subs.iter_mut() {
        sub.read_response().assert_text(503, "Shutting down");
    }
    let status = s.wait_exit(Duration::from_secs(3) + Duration::from_secs(2));
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "exit took {:?}", t.elapsed());
    assert!(idle.closed_within(Duration::from_secs(1)), "idle connection survived the process");
}

#[test]
fn sigterm_answers_rep_in_flight() {
    let mut s = Server::start(&[("ESUB_DRAIN_MS", "3000")]);
    let mut sub = s.sub("/sub/waiting");
    s.wait_for_key("waiting");
    // The 100 Continue proves the server has read the rep's head before the signal.
    let mut rep = s.client();
    rep.send(
        b"POST /rep/in-flight HTTP/1.1\r\nHost: esub\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(rep.read_response().status, 100);
    s.sigterm();
    // The drain has begun once the sub is told.
    sub.read_response().assert_text(503, "Shutting down");
    // While the rep keeps the process draining, new connections are no longer accepted.
    refuses_connections_within(&s, Duration::from_secs(2));
    rep.send(b"0123456789");
    rep.read_response().assert_text(404, "Unknown key");
    let status = s.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

/// Poll until a new connection to `s` is refused (or accepted and closed unanswered).
fn refuses_connections_within(s: &Server, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        match TcpStream::connect_timeout(&s.addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
            Err(e) => panic!("connect during drain: {e}"),
            Ok(stream) => {
                // Queued in a listener nobody accepts from any more, or served: a served
                // ping means the server still accepts.
                stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                stream.set_nodelay(true).unwrap();
                let mut stream = stream;
                let _ = stream.write_all(b"GET /ping HTTP/1.1\r\nHost: esub\r\n\r\n");
                let mut buf = [0u8; 64];
                match stream.read(&mut buf) {
                    Ok(n) if n > 0 => {}
                    _ => return,
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "still accepting and serving new connections {within:?} into the drain"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigterm_exits_within_drain_even_if_a_request_never_completes() {
    let mut s = Server::start(&[("ESUB_DRAIN_MS", "1000")]);
    let mut rep = s.client();
    rep.send(
        b"POST /rep/never HTTP/1.1\r\nHost: esub\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(rep.read_response().status, 100);
    rep.send(b"01234");
    let mut sub = s.sub("/sub/stays");
    s.wait_for_key("stays");
    let t = Instant::now();
    s.sigterm();
    sub.read_response().assert_text(503, "Shutting down");
    let status = s.wait_exit(Duration::from_secs(3));
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(t.elapsed() < Duration::from_millis(2000), "exit took {:?}", t.elapsed());
    // The unfinished request's connection is closed with the process.
    rep.expect_closed_within(Duration::from_secs(1));
}

#[test]
fn sigterm_on_idle_server_exits_0() {
    let mut s = Server::start(&[("ESUB_DRAIN_MS", "2000")]);
    s.get("/ping").assert(200, b"OK");
    s.sigterm();
    let status = s.wait_exit(Duration::from_secs(4));
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

#[test]
fn sigint_drains_like_sigterm() {
    let mut s = Server::start(&[("ESUB_DRAIN_MS", "2000")]);
    let mut sub = s.sub("/sub/int");
    s.wait_for_key("int");
    s.sigint();
    sub.read_response().assert_text(503, "Shutting down");
    let status = s.wait_exit(Duration::from_secs(4));
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

#[test]
fn new_process_can_bind_the_port_before_the_old_one_leaves() {
    let mut old = Server::start(&[("ESUB_DRAIN_MS", "2000")]);
    let port = old.port().to_string();
    let new = Server::start(&[("ESUB_PORT", &port)]);
    assert_eq!(new.port(), old.port());
    old.sigterm();
    assert_eq!(old.wait_exit(Duration::from_secs(4)).code(), Some(0));
    // Everything now reaches the new process.
    for _ in 0..5 {
        new.get("/ping").assert(200, b"OK");
    }
}

#[test]
fn several_workers_all_serve() {
    let s = Server::start(&[("ESUB_WORKERS", "4")]);
    // Many connections, opened together so the kernel spreads them over every listener.
    let mut conns: Vec<Client> = (0..64).map(|_| s.client()).collect();
    for c in conns.iter_mut() {
        c.send_get("/ping");
    }
    for c in conns.iter_mut() {
        c.read_response().assert(200, b"OK");
    }
}

#[test]
fn single_worker_relays() {
    let s = Server::start(&[("ESUB_WORKERS", "1")]);
    let mut sub = s.sub("/sub/one");
    s.wait_for_key("one");
    s.post("/rep/one", b"solo").assert(200, b"OK");
    sub.read_response().assert_delivered(b"solo");
}
