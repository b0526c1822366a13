//! Crash safety of the topics store (API-topics.md sections 2, 5.3, 9): producers publish to a
//! 3-partition topic and a consumer commits with `PUT /v1/offsets` while the server is killed
//! with SIGKILL at a random moment, 20 times, with `ESUB_FSYNC=always`. After each restart:
//! every message that got 201 is readable at its partition and offset with its bytes; offsets
//! are dense from 0; an offset once seen never holds another message (never reused); and the
//! group resumes at or after every commit that got 200 (commits never move back).
//!
//! Kill points come from a seed printed at the start; `ESUB_CRASH_SEED` repeats a run.

mod common;

use common::{Client, Server};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ITERATIONS: usize = 20;
const PRODUCERS: usize = 3;
const PARTITIONS: i32 = 3;
const EXIT_DEADLINE: Duration = Duration::from_secs(10);
const IO: Duration = Duration::from_secs(10);

struct Rng(u64);

impl Rng {
    fn seeded() -> (Rng, u64) {
        let seed = match std::env::var("ESUB_CRASH_SEED") {
            Ok(s) => s.trim().parse().expect("ESUB_CRASH_SEED is a u64"),
            Err(_) => {
                let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
                (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
            }
        };
        (Rng(seed.max(1)), seed)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        lo + x.wrapping_mul(0x2545_F491_4F6C_DD1D) % (hi - lo)
    }
}

struct DataDir(PathBuf);

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(dir: &DataDir) -> Server {
    let d = dir.0.to_string_lossy().into_owned();
    Server::start(&[
        ("ESUB_DATA_DIR", &d),
        ("ESUB_FSYNC", "always"),
        ("ESUB_SUB_TIMEOUT_MS", "200"),
        ("ESUB_SUB_BATCH_IDLE_MS", "100"),
        // Small segments: the kills also land on rolls.
        ("ESUB_TOPIC_SEGMENT_BYTES", "8192"),
    ])
}

fn kill9(s: &mut Server) {
    let st = Command::new("kill").args(["-KILL", &s.pid().to_string()]).status().expect("kill");
    assert!(st.success(), "kill -KILL failed: {st:?}");
    s.wait_exit(EXIT_DEADLINE);
}

fn request(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: esub\r\nAppid: crash\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Reads until a fetch gets 204, on one keep-alive connection (so the `ack=1` instance keeps
/// its cursors and nothing is committed): every `(partition, offset, payload)` in order.
fn fetch_all(addr: std::net::SocketAddr, group: &str) -> Vec<(i32, i64, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, IO).unwrap();
    s.set_read_timeout(Some(IO)).unwrap();
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let fill = |s: &mut TcpStream, buf: &mut Vec<u8>| {
        let mut chunk = [0u8; 65536];
        let n = s.read(&mut chunk).expect("read");
        assert!(n > 0, "server closed mid-response");
        buf.extend_from_slice(&chunk[..n]);
    };
    loop {
        let req = format!(
            "GET /v1/msgs/crash/t/v1?group={group}&batch=4000&ack=1 HTTP/1.1\r\nHost: e\r\nAppid: crash\r\n\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            fill(&mut s, &mut buf);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        if head.starts_with("HTTP/1.1 204") {
            return out;
        }
        assert!(head.starts_with("HTTP/1.1 200") && head.contains("chunked"), "fetch: {head}");
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                fill(&mut s, &mut buf);
            };
            let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16)
                .expect("chunk size");
            while buf.len() < line_end + 2 + size + 2 {
                fill(&mut s, &mut buf);
            }
            body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break;
            }
        }
        let mut b = body.as_slice();
        while !b.is_empty() {
            assert!(b.len() >= 16, "torn batch record");
            let p = i32::from_be_bytes(b[..4].try_into().unwrap());
            let o = i64::from_be_bytes(b[4..12].try_into().unwrap());
            let n = i32::from_be_bytes(b[12..16].try_into().unwrap()) as usize;
            out.push((p, o, b[16..16 + n].to_vec()));
            b = &b[16 + n..];
        }
    }
}

#[derive(Default)]
struct Seen {
    /// Every message answered 201: (partition, offset) -> payload.
    acked: BTreeMap<(i32, i64), Vec<u8>>,
    /// Every message ever read back, across restarts.
    read: HashMap<(i32, i64), Vec<u8>>,
    /// Highest commit answered 200 per partition.
    committed: HashMap<i32, i64>,
}

fn produce(
    addr: std::net::SocketAddr,
    iter: usize,
    c: usize,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) {
    let mut client = Client::connect(addr);
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let body = format!("i{iter}-c{c}-n{n}-{}", "x".repeat(n % 97));
        let key = if n % 3 == 0 { String::new() } else { format!("&key=k{}", n % 11) };
        if client
            .try_send(&request("POST", &format!("/v1/msgs/t/v1?x=1{key}"), body.as_bytes()))
            .is_err()
        {
            return;
        }
        let Ok(r) = client.try_read_response() else { return };
        assert_eq!(r.status, 201, "pub: {}", r.body_str());
        let p: i32 = r.header("X-Partition").unwrap().parse().unwrap();
        let o: i64 = r.header("X-Offset").unwrap().parse().unwrap();
        let prev = seen.lock().unwrap().acked.insert((p, o), body.clone().into_bytes());
        assert!(prev.is_none(), "offset {p}/{o} answered twice");
    }
}

/// Reads with `ack=1` and commits what it read with `PUT /v1/offsets` (200 = stored).
fn commit(addr: std::net::SocketAddr, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let mut client = Client::connect(addr);
    while !stop.load(Ordering::Relaxed) {
        if client.try_send(&request("GET", "/v1/msgs/crash/t/v1?group=c&ack=1", b"")).is_err() {
            return;
        }
        let Ok(r) = client.try_read_response() else { return };
        if r.status == 204 {
            continue;
        }
        assert_eq!(r.status, 200, "sub: {}", r.body_str());
        let p: i32 = r.header("X-Partition").unwrap().parse().unwrap();
        let o: i64 = r.header("X-Offset").unwrap().parse().unwrap();
        let ack = format!("[{{\"partition\":{p},\"offset\":{o}}}]");
        let path = "/v1/offsets/crash/t/v1/c";
        if client.try_send(&request("PUT", path, ack.as_bytes())).is_err() {
            return;
        }
        let Ok(r) = client.try_read_response() else { return };
        assert_eq!(r.status, 200, "PUT offsets: {}", r.body_str());
        let mut s = seen.lock().unwrap();
        let c = s.committed.entry(p).or_insert(-1);
        *c = (*c).max(o);
    }
}

#[test]
fn kill_9_loses_no_stored_message_reuses_no_offset_and_moves_no_commit_back() {
    let (mut rng, seed) = Rng::seeded();
    eprintln!("ESUB_CRASH_SEED={seed}");
    let dir =
        DataDir(std::env::temp_dir().join(format!("esub-topics-crash-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut s = start(&dir);
    let mut c = s.client();
    c.send(&request("POST", &format!("/v1/topics/crash/t/v1?partitions={PARTITIONS}"), b""));
    assert_eq!(c.read_response().status, 201);
    drop(c);
    for iter in 0..ITERATIONS {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for p in 0..PRODUCERS {
            let (stop, seen, addr) = (stop.clone(), seen.clone(), s.addr);
            threads.push(thread::spawn(move || produce(addr, iter, p, stop, seen)));
        }
        let (stop2, seen2, addr) = (stop.clone(), seen.clone(), s.addr);
        threads.push(thread::spawn(move || commit(addr, stop2, seen2)));
        // The kill point: a random moment of the stream (not a synchronisation).
        let until = Instant::now() + Duration::from_millis(rng.range(50, 500));
        while Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
        kill9(&mut s);
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().expect("a client thread failed");
        }
        s = start(&dir);
        let mut all = fetch_all(s.addr, &format!("verify{iter}"));
        all.sort();
        let mut seen = seen.lock().unwrap();
        // Dense offsets from 0 in every partition.
        let mut next: HashMap<i32, i64> = HashMap::new();
        for (p, o, _) in &all {
            let n = next.entry(*p).or_insert(0);
            assert_eq!(*o, *n, "iteration {iter}: partition {p} skips from {n} to {o}");
            *n += 1;
        }
        let got: HashMap<(i32, i64), Vec<u8>> =
            all.into_iter().map(|(p, o, b)| ((p, o), b)).collect();
        for (k, body) in &seen.acked {
            let found = got.get(k);
            assert_eq!(found, Some(body), "iteration {iter}: message {k:?} answered 201 is gone");
        }
        for (k, body) in &got {
            if let Some(before) = seen.read.insert(*k, body.clone()) {
                assert_eq!(&before, body, "iteration {iter}: offset {k:?} was reused");
            }
        }
        // The group resumes after every commit that got 200.
        let mut first: HashMap<i32, i64> = HashMap::new();
        for (p, o, _) in fetch_all(s.addr, "c") {
            first.entry(p).or_insert(o);
        }
        for (p, c) in &seen.committed {
            if let Some(o) = first.get(p) {
                assert!(*o > *c, "iteration {iter}: partition {p} resumed at {o}, committed {c}");
            }
        }
        eprintln!(
            "iteration {iter}: acked {} read {} commits {:?}",
            seen.acked.len(),
            got.len(),
            seen.committed
        );
    }
    let acked = seen.lock().unwrap().acked.len();
    assert!(acked > ITERATIONS * 10, "too few messages were published to mean anything: {acked}");
    s.sigterm();
    s.wait_exit(EXIT_DEADLINE);
}
