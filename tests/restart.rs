//! Zero-downtime restart (API.md section 7): with `SO_REUSEPORT` a second esub binds the port
//! of a running one, the first drains on SIGTERM (parked subs get 503 `Shutting down`, exit 0),
//! and clients that keep opening connections meanwhile see no error.
//!
//! The client loop cannot choose which process a new connection reaches, and each process has
//! its own registry, so a rep may land on the other process than its sub and get 404. Each
//! iteration therefore parks one sub on a fresh connection and sends reps, each on a fresh
//! connection, until one is answered 200 (the sub must then have the body) or the sub is
//! answered 503 `Shutting down` by the draining process (the client then subscribes again with
//! the next iteration). A rep may get 404 `Unknown key` (other process, or sub not parked yet)
//! and is retried. A reset before any byte of a response is allowed only after SIGTERM, for at
//! most one connection per loop thread: the kernel resets a connection whose handshake
//! completed between the draining process's last `accept` and the close of its listener
//! (README, restarts; `net.ipv4.tcp_migrate_req=1` hands it to the other process instead, and
//! with it 50 runs here saw none). Such a connection was never read, so a rep is retried and a
//! sub starts the next iteration. Anything else fails the test: a refused connection, a reset
//! before SIGTERM or after bytes of a response, a connection closed without a response (what
//! esub itself would do), a timeout, another status or body.

mod common;

use common::{IO_TIMEOUT, Server};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const LOOP_THREADS: usize = 3;
/// How long one iteration may take to get its sub delivered or answered.
const ITERATION_DEADLINE: Duration = Duration::from_secs(5);
/// How long the test waits for each phase's deliveries.
const PHASE_DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// A tiny HTTP client that reports errors instead of panicking (it runs in loop threads)
// ---------------------------------------------------------------------------------------------

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    Ok(s)
}

fn send(s: &mut TcpStream, bytes: &[u8]) -> Result<(), String> {
    s.write_all(bytes).map_err(|e| format!("write: {e}"))
}

/// Reads one response with a `Content-Length` body: (status, body).
fn read_response(s: &mut TcpStream) -> Result<(u16, Vec<u8>), String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "connection closed before a response ({:?} received)",
                    String::from_utf8_lossy(&buf)
                ));
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("reading response: {e} ({} bytes received)", buf.len())),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
        })
        .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        match s.read(&mut chunk) {
            Ok(0) => return Err(format!("closed after {} of {len} body bytes", body.len())),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("reading body: {e}")),
        }
    }
    Ok((status, body))
}

/// Whether the sub's connection has something to read (a response, EOF or an error) now.
fn has_input(s: &TcpStream) -> Result<bool, String> {
    s.set_nonblocking(true).unwrap();
    let r = s.peek(&mut [0u8; 1]);
    s.set_nonblocking(false).unwrap();
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(format!("sub connection: {e}")),
    }
}

// ---------------------------------------------------------------------------------------------
// The client loop
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    /// A rep got 200 and the sub got its body.
    Delivered,
    /// The sub got 503 `Shutting down` from the draining process.
    ShuttingDown,
    /// The sub's connection was reset before any response (see the module's note).
    Reset,
}

/// A connection reset before a single byte of response: one the kernel reset in a closing
/// listener's accept queue (never read by esub).
fn unread_reset(e: &str) -> bool {
    e.contains("Connection reset by peer")
        && (e.ends_with("(0 bytes received)") || e.starts_with("sub connection: "))
}

#[derive(Default)]
struct Stats {
    /// (when it ended, how) per iteration that did not fail.
    done: Vec<(Instant, Outcome)>,
    /// Reps answered 404 `Unknown key` and retried.
    rep_misses: u64,
    /// When a connection was seen reset before any response (reps retried, subs ended).
    resets: Vec<Instant>,
    failures: Vec<String>,
}

impl Stats {
    fn count(&self, what: Outcome, from: Instant, to: Option<Instant>) -> usize {
        self.done
            .iter()
            .filter(|(at, o)| *o == what && *at >= from && to.is_none_or(|t| *at < t))
            .count()
    }
}

/// One sub and as many reps as it takes.
fn iteration(
    addr: SocketAddr,
    key: &str,
    body: &[u8],
    misses: &mut u64,
    resets: &mut Vec<Instant>,
) -> Result<Outcome, String> {
    let mut sub = connect(addr).map_err(|e| format!("sub {key}: {e}"))?;
    send(&mut sub, format!("GET /sub/{key} HTTP/1.1\r\nHost: esub\r\n\r\n").as_bytes())
        .map_err(|e| format!("sub {key}: {e}"))?;
    let deadline = Instant::now() + ITERATION_DEADLINE;
    let mut tries = 0;
    loop {
        let input = match has_input(&sub) {
            Err(e) if unread_reset(&e) => {
                resets.push(Instant::now());
                return Ok(Outcome::Reset);
            }
            other => other?,
        };
        if input {
            let (status, got) = match read_response(&mut sub) {
                Err(e) if unread_reset(&e) => {
                    resets.push(Instant::now());
                    return Ok(Outcome::Reset);
                }
                other => other.map_err(|e| format!("sub {key}: {e}"))?,
            };
            if (status, got.as_slice()) == (503, b"Shutting down".as_slice()) {
                return Ok(Outcome::ShuttingDown);
            }
            return Err(format!(
                "sub {key} answered {status} {:?} before any rep succeeded",
                String::from_utf8_lossy(&got)
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "sub {key}: neither delivered nor answered within {ITERATION_DEADLINE:?} \
                 ({tries} reps got 404)"
            ));
        }
        let mut rep = connect(addr).map_err(|e| format!("rep {key}: {e}"))?;
        let req = format!(
            "POST /rep/{key} HTTP/1.1\r\nHost: esub\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        send(&mut rep, &[req.as_bytes(), body].concat()).map_err(|e| format!("rep {key}: {e}"))?;
        let (status, answer) = match read_response(&mut rep) {
            Err(e) if unread_reset(&e) => {
                resets.push(Instant::now());
                continue;
            }
            other => other.map_err(|e| format!("rep {key}: {e}"))?,
        };
        match (status, answer.as_slice()) {
            (200, b"OK") => {
                let (status, got) =
                    read_response(&mut sub).map_err(|e| format!("sub {key} after rep 200: {e}"))?;
                if status == 200 && got == body {
                    return Ok(Outcome::Delivered);
                }
                return Err(format!(
                    "rep {key} got 200 but the sub got {status} {:?}",
                    String::from_utf8_lossy(&got)
                ));
            }
            (404, b"Unknown key") => {
                tries += 1;
                *misses += 1;
                // Poll again soon: the sub may still be on its way to the registry.
                thread::sleep(Duration::from_millis(2));
            }
            _ => {
                return Err(format!(
                    "rep {key} answered {status} {:?}",
                    String::from_utf8_lossy(&answer)
                ));
            }
        }
    }
}

fn client_loop(addr: SocketAddr, t: usize, stop: Arc<AtomicBool>, stats: Arc<Mutex<Stats>>) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let key = format!("restart-{t}-{i}");
        let body = format!("body of {key}").into_bytes();
        let (mut misses, mut resets) = (0, Vec::new());
        let r = iteration(addr, &key, &body, &mut misses, &mut resets);
        let mut s = stats.lock().unwrap();
        s.rep_misses += misses;
        s.resets.extend(resets);
        match r {
            Ok(o) => s.done.push((Instant::now(), o)),
            Err(e) => {
                s.failures.push(e);
                if s.failures.len() > 50 {
                    return;
                }
            }
        }
    }
}

#[track_caller]
fn wait_until(stats: &Mutex<Stats>, what: &str, done: impl Fn(&Stats) -> bool) {
    let deadline = Instant::now() + PHASE_DEADLINE;
    loop {
        {
            let s = stats.lock().unwrap();
            if done(&s) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what} not reached within {PHASE_DEADLINE:?}: {} iterations done, failures: {:#?}",
                s.done.len(),
                s.failures
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn restart_on_the_same_port_drops_nothing() {
    let mut a = Server::start(&[("ESUB_WORKERS", "2"), ("ESUB_DRAIN_MS", "3000")]);
    let port = a.port().to_string();
    let addr = a.addr;

    // Subs that are certainly parked on A (B does not exist yet): A's drain answers them 503.
    let mut parked: Vec<_> = (0..3).map(|i| a.sub(&format!("/sub/parked-{i}"))).collect();
    a.wait_for_keys(&["parked-0", "parked-1", "parked-2"]);

    let stats = Arc::new(Mutex::new(Stats::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let loops: Vec<_> = (0..LOOP_THREADS)
        .map(|t| {
            let (stop, stats) = (Arc::clone(&stop), Arc::clone(&stats));
            thread::spawn(move || client_loop(addr, t, stop, stats))
        })
        .collect();

    // Phase 1: A alone.
    wait_until(&stats, "10 deliveries with A alone", |s| {
        s.count(Outcome::Delivered, t0, None) >= 10
    });
    // Phase 2: B binds the same port while A runs.
    let t_b = Instant::now();
    let b = Server::start(&[("ESUB_WORKERS", "2"), ("ESUB_PORT", &port)]);
    assert_eq!(b.port(), a.port(), "B must bind A's port: {}", b.first_line);
    wait_until(&stats, "20 deliveries with A and B", |s| {
        s.count(Outcome::Delivered, t_b, None) >= 20
    });
    // Phase 3: A drains and exits while the loop goes on.
    let t_term = Instant::now();
    a.sigterm();
    for (i, p) in parked.iter_mut().enumerate() {
        let r = p.read_response();
        assert_eq!(
            (r.status, r.body_str().as_str()),
            (503, "Shutting down"),
            "sub parked-{i} on A after SIGTERM: {r:?}"
        );
        p.expect_closed();
    }
    let st = a.wait_exit(IO_TIMEOUT);
    assert_eq!(st.code(), Some(0), "A's exit status after SIGTERM: {st:?}");
    let t_exit = Instant::now();
    // Phase 4: B alone.
    wait_until(&stats, "10 deliveries after A exited", |s| {
        s.count(Outcome::Delivered, t_exit, None) >= 10
    });
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.join().expect("client loop thread");
    }
    b.get("/ping").assert(200, b"OK");

    let s = stats.lock().unwrap();
    let delivered = |from, to| s.count(Outcome::Delivered, from, to);
    println!(
        "restart: delivered {} (A alone {}, A and B {}, A draining {}, B alone {}); \
         503 Shutting down to loop subs {} (+3 parked on A); reps retried after 404 {}; \
         reset before any answer {}; failures {}",
        delivered(t0, None),
        delivered(t0, Some(t_b)),
        delivered(t_b, Some(t_term)),
        delivered(t_term, Some(t_exit)),
        delivered(t_exit, None),
        s.count(Outcome::ShuttingDown, t0, None),
        s.rep_misses,
        s.resets.len(),
        s.failures.len()
    );
    assert!(s.failures.is_empty(), "client loop failures during the restart: {:#?}", s.failures);
    // The kernel's reset of a connection caught in A's closing accept queue: after SIGTERM
    // only, and at most one connection in flight per loop thread.
    assert!(s.resets.iter().all(|at| *at >= t_term), "a reset before SIGTERM");
    assert!(s.resets.len() <= LOOP_THREADS, "{} connections reset", s.resets.len());
    assert_eq!(
        s.count(Outcome::ShuttingDown, t0, Some(t_term)),
        0,
        "503 Shutting down before any SIGTERM"
    );
    assert!(delivered(t0, Some(t_term)) > 0 && delivered(t_exit, None) > 0);
}

/// A sub whose request completes while the process drains (its connection was already open:
/// the client had sent part of the head, as a sub from the accept queue may still be on its
/// way) must get 503 `Shutting down` like the subs that were parked, not hang until
/// ESUB_DRAIN_MS and lose its connection without a response.
#[test]
fn sub_arriving_during_the_drain_gets_503() {
    let mut s = Server::start(&[("ESUB_WORKERS", "1"), ("ESUB_DRAIN_MS", "3000")]);
    let mut parked = s.sub("/sub/early");
    s.wait_for_key("early");
    // A ping and, in the same write, the first line of the sub: once the ping is answered the
    // server holds the partial head, so the connection is mid-request, not idle, at the drain.
    let mut late = s.client();
    late.send(b"GET /ping HTTP/1.1\r\nHost: esub\r\n\r\nGET /sub/late HTTP/1.1\r\n");
    late.read_response().assert(200, b"OK");
    s.sigterm();
    // The parked sub's 503 shows the (single) worker is draining now.
    parked.read_response().assert_text(503, "Shutting down");
    let t = Instant::now();
    late.send(b"Host: esub\r\n\r\n");
    match late.try_read_response() {
        Ok(r) => r.assert_text(503, "Shutting down"),
        Err(e) => {
            panic!("sub completed during the drain: no response ({e}) after {:?}", t.elapsed())
        }
    }
    assert_eq!(s.wait_exit(IO_TIMEOUT).code(), Some(0));
}
