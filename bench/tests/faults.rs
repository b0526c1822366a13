//! The generator's counters against a fake esub that misbehaves on purpose at known reps: each
//! fault must show up as exactly the count it causes, and a clean server must show none. The
//! parked-capacity and HTTP-floor scenarios against the same fake.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;

/// What the fake server does to the rep with a given 1-based number (counting only reps that
/// find their sub parked).
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// Answer 200, deliver nothing, leave the sub hanging: one loss.
    Lose,
    /// Deliver, and deliver the same body again when that sub parks next: one duplicate.
    Duplicate,
    /// Deliver to another parked sub, answer 200: one misdelivery and one loss.
    Misdeliver,
    /// Deliver, answer 404: one ghost.
    Ghost,
    /// Deliver nothing, answer 404, keep the sub parked: a miss, no fault.
    Miss,
}

struct State {
    parked: HashMap<String, TcpStream>,
    pending_dup: HashMap<String, Vec<u8>>,
    reps: u64,
    faults: Vec<(u64, Fault)>,
    /// Source addresses of the connections that sent `GET /sub`.
    sources: HashSet<IpAddr>,
    /// `GET /sub` requests received.
    subs: u64,
}

fn response(status: &str, ctype: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn deliver(mut sub: &TcpStream, body: &[u8]) {
    let _ = sub.write_all(&response("200 OK", "application/octet-stream", body));
}

/// Serves one connection: requests one after another, subs parked in `state`.
fn serve(stream: TcpStream, state: Arc<Mutex<State>>) {
    let peer = stream.peer_addr().unwrap().ip();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) =
            (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let mut len = 0;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut st = state.lock().unwrap();
        if method == "GET" && path == "/keys" {
            let list: Vec<String> = st.parked.keys().map(|k| format!("\"{k}\"")).collect();
            let _ = out.write_all(&response(
                "200 OK",
                "application/json",
                format!("[{}]", list.join(",")).as_bytes(),
            ));
        } else if method == "GET" && path == "/ping" {
            let _ = out.write_all(&response("200 OK", "text/plain; charset=utf-8", b"OK"));
        } else if let Some(key) = path.strip_prefix("/sub/") {
            st.sources.insert(peer);
            st.subs += 1;
            if let Some(old) = st.pending_dup.remove(key) {
                deliver(&out, &old);
            } else {
                st.parked.insert(key.to_string(), out.try_clone().unwrap());
            }
        } else if let Some(key) = path.strip_prefix("/rep/") {
            // Faults count reps that find their sub, so none is spent on a natural miss.
            let found = st.parked.contains_key(key);
            st.reps += u64::from(found);
            let n = st.reps;
            let fault = st.faults.iter().find(|f| f.0 == n && found).map_or(Fault::None, |f| f.1);
            let answer = match (fault, found) {
                (_, false) => "404 Not Found",
                (Fault::Miss, true) => "404 Not Found",
                (Fault::Lose, true) => {
                    st.parked.remove(key);
                    "200 OK"
                }
                (Fault::Misdeliver, true) => {
                    let other = st.parked.keys().find(|k| *k != key).cloned();
                    match other.and_then(|o| st.parked.remove(&o)) {
                        Some(s) => deliver(&s, &body),
                        None => panic!("no other sub parked to misdeliver to"),
                    }
                    "200 OK"
                }
                (f, true) => {
                    let sub = st.parked.remove(key).unwrap();
                    deliver(&sub, &body);
                    if f == Fault::Duplicate {
                        st.pending_dup.insert(key.to_string(), body.clone());
                    }
                    if f == Fault::Ghost { "404 Not Found" } else { "200 OK" }
                }
            };
            let text: &[u8] = if answer.starts_with("200") { b"OK" } else { b"Unknown key" };
            let _ = out.write_all(&response(answer, "text/plain; charset=utf-8", text));
        } else {
            let _ = out.write_all(&response("404 Not Found", "text/plain", b"Not Found"));
        }
    }
}

/// Starts the fake server on a free loopback port.
fn fake_server(faults: Vec<(u64, Fault)>) -> u16 {
    fake_server_state(faults).0
}

fn fake_server_state(faults: Vec<(u64, Fault)>) -> (u16, Arc<Mutex<State>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = Arc::new(Mutex::new(State {
        parked: HashMap::new(),
        pending_dup: HashMap::new(),
        reps: 0,
        faults,
        sources: HashSet::new(),
        subs: 0,
    }));
    let shared = state.clone();
    thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let st = state.clone();
            thread::spawn(move || serve(s, st));
        }
    });
    (port, shared)
}

/// Runs the generator briefly and returns its JSON line's numeric fields.
fn bench(port: u16) -> HashMap<String, f64> {
    bench_with(port, &["--subs", "10", "--reps", "2"])
}

fn bench_with(port: u16, args: &[&str]) -> HashMap<String, f64> {
    let out = Command::new(env!("CARGO_BIN_EXE_esub-bench"))
        .args(["--target", "esub", "--url", &format!("127.0.0.1:{port}")])
        .args(["--warmup", "0", "--duration", "0.4", "--grace", "0.3"])
        .args(["--ready-timeout", "5"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "esub-bench failed: {stderr}");
    let line = stdout.lines().find(|l| l.starts_with('{')).expect("a JSON line");
    // Flat object of simple values: split on commas outside strings is enough here.
    let mut fields = HashMap::new();
    for part in line.trim_matches(|c| c == '{' || c == '}').split(",\"") {
        let (k, v) = part.split_once("\":").unwrap();
        if let Ok(n) = v.parse::<f64>() {
            fields.insert(k.trim_matches('"').to_string(), n);
        }
    }
    fields
}

#[test]
fn each_fault_is_counted_once() {
    let port = fake_server(vec![
        (5, Fault::Lose),
        (7, Fault::Duplicate),
        (9, Fault::Misdeliver),
        (11, Fault::Ghost),
        (13, Fault::Miss),
    ]);
    let f = bench(port);
    let got: Vec<(&str, f64)> =
        ["lost", "duplicated", "misdelivered", "ghost", "corrupt", "errors", "unanswered"]
            .iter()
            .map(|k| (*k, f[*k]))
            .collect();
    assert_eq!(
        got,
        vec![
            ("lost", 2.0),
            ("duplicated", 1.0),
            ("misdelivered", 1.0),
            ("ghost", 1.0),
            ("corrupt", 0.0),
            ("errors", 0.0),
            ("unanswered", 0.0)
        ]
    );
    // The forced 404, plus any rep that overtook its sub's re-park in this slow server.
    assert!(f["misses"] >= 1.0, "{f:?}");
    assert!(f["delivered"] > 100.0, "{f:?}");
}

#[test]
fn a_clean_server_shows_no_fault() {
    let port = fake_server(Vec::new());
    let f = bench(port);
    // Misses are not faults: a rep may overtake its sub's re-park.
    for k in ["lost", "duplicated", "misdelivered", "ghost", "corrupt", "errors", "unanswered"] {
        assert_eq!(f[k], 0.0, "{k} in {f:?}");
    }
    assert!(f["delivered"] > 100.0, "{f:?}");
    assert!(f["msgs_per_s"] > 0.0 && f["p50_us"] > 0.0 && f["max_us"] >= f["p99_us"], "{f:?}");
}

#[test]
fn capacity_sends_one_rep_per_key_from_every_source_address() {
    let (port, state) = fake_server_state(Vec::new());
    // The fake server is this test process: its memory is what gets measured.
    let pid = std::process::id().to_string();
    let f = bench_with(
        port,
        &["--scenario", "capacity", "--subs", "30", "--reps", "2", "--sources", "3", "--pid", &pid],
    );
    for k in ["lost", "duplicated", "misdelivered", "ghost", "corrupt", "errors", "unanswered"] {
        assert_eq!(f[k], 0.0, "{k} in {f:?}");
    }
    // Each key got its one message (plus a retry for any rep that overtook its sub's GET), and
    // no sub parked again.
    assert_eq!((f["delivered"], f["delivered_total"], f["subs"]), (30.0, 30.0, 30.0), "{f:?}");
    assert_eq!(f["sent"], 30.0 + f["misses"], "{f:?}");
    assert_eq!(f["sources"], 3.0);
    assert!(f["rss_before_kib"] > 0.0 && f["rss_after_kib"] > 0.0, "{f:?}");
    assert!(f.contains_key("rss_per_sub_b") && f["deliver_s"] > 0.0, "{f:?}");
    let st = state.lock().unwrap();
    assert_eq!(st.subs, 30);
    let want: HashSet<IpAddr> = (1..=3).map(|i| IpAddr::from([127, 0, 0, i])).collect();
    assert_eq!(st.sources, want);
}

#[test]
fn floor_counts_answered_requests() {
    let port = fake_server(Vec::new());
    let f = bench_with(port, &["--scenario", "floor", "--reps", "3"]);
    assert_eq!((f["errors"], f["unanswered"], f["subs"]), (0.0, 0.0, 0.0), "{f:?}");
    assert!(f["delivered"] > 100.0 && f["msgs_per_s"] > 0.0, "{f:?}");
    assert!(f["sent"] >= f["acked"] && f["acked"] >= f["delivered"], "{f:?}");
}
