//! jobs-bench: delayed jobs (API-topics.md section 7, issue 9): memory per pending job and
//! start-up time with 100,000 pending, then firing lateness (due time to delivery at a
//! consumer) while 10,000 jobs a second fire beside them. Starts its own esub.
//!
//! Usage: jobs-bench ESUB_BIN [PENDING] [FIRE_SECONDS] [PER_SECOND]   (100000 5 10000)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Adding clients: enough to keep both of the server's workers busy.
const CONNS: usize = 16;
const PAYLOAD: usize = 100;
const TOPIC: &str = "jobs";

fn now_ms_f() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

struct Esub {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

fn start(bin: &str, dir: &str) -> (Esub, Duration) {
    let started = Instant::now();
    let mut child = Command::new(bin)
        .env("ESUB_PORT", "0")
        .env("ESUB_BIND", "127.0.0.1")
        .env("ESUB_DATA_DIR", dir)
        .env("ESUB_JOB_TICK_MS", "100")
        .env("ESUB_SUB_BATCH_IDLE_MS", "30000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn esub");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("stdout");
    let took = started.elapsed();
    let addr = line.trim().trim_start_matches("listening on ").parse().expect("listening line");
    let stderr = Arc::new(Mutex::new(String::new()));
    let (err, sink) = (child.stderr.take().expect("stderr"), stderr.clone());
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&(l + "\n"));
        }
    });
    (Esub { child, addr, stderr }, took)
}

impl Esub {
    fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let l = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        l.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// One keep-alive HTTP/1.1 connection, answers read by Content-Length.
struct Http {
    s: BufReader<TcpStream>,
}

impl Http {
    fn new(addr: SocketAddr) -> Http {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Http { s: BufReader::new(s) }
    }

    fn req(&mut self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: b\r\nAppid: bench\r\nPubkey: pk\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        let w = self.s.get_mut();
        w.write_all(head.as_bytes()).unwrap();
        w.write_all(body).unwrap();
        let (status, len, _) = self.head();
        let mut b = vec![0; len];
        self.s.read_exact(&mut b).unwrap();
        (status, String::from_utf8_lossy(&b).into_owned())
    }

    /// Status, Content-Length, chunked.
    fn head(&mut self) -> (u16, usize, bool) {
        let mut line = String::new();
        self.s.read_line(&mut line).unwrap();
        let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let (mut len, mut chunked) = (0, false);
        loop {
            line.clear();
            self.s.read_line(&mut line).unwrap();
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                return (status, len, chunked);
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            chunked |= l == "transfer-encoding: chunked";
        }
    }
}

/// Adds `n` jobs due at `due(i)` (unix s) over `CONNS` connections; returns the adds per second.
fn add_jobs(addr: SocketAddr, n: usize, due: impl Fn(usize) -> u64 + Sync) -> f64 {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..CONNS {
            s.spawn(|| {
                let mut c = Http::new(addr);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let d = due(i);
                    let mut body = format!("{d}:{i}:").into_bytes();
                    body.resize(PAYLOAD, b'.');
                    let (st, b) = c.req("POST", &format!("/v1/jobs/{TOPIC}/v1?due={d}"), &body);
                    assert_eq!(st, 201, "add: {b}");
                }
            });
        }
    });
    n as f64 / started.elapsed().as_secs_f64()
}

/// Reads batches as one consumer until `want` jobs arrived or `until`; each job's lateness in
/// ms (arrival − due), and how many arrived twice.
fn consume(addr: SocketAddr, want: usize, until: Instant) -> (Vec<f64>, usize) {
    let mut c = Http::new(addr);
    let mut late = Vec::with_capacity(want);
    let mut seen = std::collections::HashSet::new();
    let mut dup = 0;
    let path = format!("/v1/msgs/bench/{TOPIC}/v1?group=g&batch=4000");
    while late.len() + dup < want && Instant::now() < until {
        let head = format!("GET {path} HTTP/1.1\r\nHost: b\r\nAppid: bench\r\nSubkey: sk\r\n\r\n");
        c.s.get_mut().write_all(head.as_bytes()).unwrap();
        let (status, len, chunked) = c.head();
        if !chunked {
            let mut b = vec![0; len];
            c.s.read_exact(&mut b).unwrap();
            assert!(status == 204, "sub: {status} {}", String::from_utf8_lossy(&b));
            continue;
        }
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let mut size = String::new();
            c.s.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            c.s.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            let at = now_ms_f();
            pending.extend_from_slice(&chunk[..n]);
            // [partition i32][offset i64][len i32][payload]
            let mut at_rec = 0;
            while pending.len() - at_rec >= 16 {
                let r = &pending[at_rec..];
                let len = i32::from_be_bytes(r[12..16].try_into().unwrap()) as usize;
                if r.len() < 16 + len {
                    break;
                }
                let text = String::from_utf8_lossy(&r[16..16 + len]).into_owned();
                let mut f = text.split(':');
                let due: f64 = f.next().unwrap().parse().unwrap();
                let id: usize = f.next().unwrap().parse().unwrap();
                if seen.insert(id) {
                    late.push(at - due * 1000.0);
                } else {
                    dup += 1;
                }
                at_rec += 16 + len;
            }
            pending.drain(..at_rec);
            if late.len() + dup >= want {
                // The batch goes on until its idle time: a new connection is simpler.
                return (late, dup);
            }
        }
    }
    (late, dup)
}

fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bin = args.first().expect("usage: jobs-bench ESUB_BIN [PENDING] [SECONDS] [PER_SECOND]");
    let arg = |i: usize, d: usize| args.get(i).map_or(d, |a| a.parse().expect("a number"));
    let (pending, seconds, rate) = (arg(1, 100_000), arg(2, 5), arg(3, 10_000));
    let dir = std::env::temp_dir().join(format!("esub-jobs-bench-{}", std::process::id()));
    let dir_s = dir.to_str().unwrap().to_string();

    let (esub, _) = start(bin, &dir_s);
    let mut c = Http::new(esub.addr);
    let (st, b) = c.req("POST", &format!("/v1/topics/bench/{TOPIC}/v1?partitions=4"), b"");
    assert_eq!(st, 201, "create: {b}");
    let rss0 = esub.rss_kib();
    let far = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 86_400;
    let add_rate = add_jobs(esub.addr, pending, |_| far);
    let rss1 = esub.rss_kib();
    let log = std::fs::metadata(dir.join("topics/jobs.log")).map_or(0, |m| m.len());
    esub.stop();

    let (esub, took) = start(bin, &dir_s);
    let opened = loop {
        let s = esub.stderr.lock().unwrap().clone();
        if let Some(l) = s.lines().find(|l| l.contains("topics store opened")) {
            break l.to_string();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let rss2 = esub.rss_kib();

    // Firing: `rate` jobs due in each of `seconds` seconds, all added before the first is due.
    let n = rate * seconds;
    let first = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
        + 2
        + (n as f64 / add_rate.max(1.0)).ceil() as u64;
    let addr = esub.addr;
    let until = Instant::now()
        + Duration::from_secs(
            first - SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs(),
        )
        + Duration::from_secs(seconds as u64 + 30);
    let consumer = std::thread::spawn(move || consume(addr, n, until));
    let fire_add_rate = add_jobs(addr, n, |i| first + (i / rate) as u64);
    let ahead = first as f64 * 1000.0 - now_ms_f();
    let (mut late, dup) = consumer.join().unwrap();
    esub.stop();
    let _ = std::fs::remove_dir_all(&dir);
    late.sort_by(f64::total_cmp);

    println!("pending jobs                      {pending}");
    println!("adds/s (16 connections)           {add_rate:.0}");
    println!("jobs.log bytes per job            {:.0}", log as f64 / pending as f64);
    println!(
        "RSS per job while running (B)     {:.0}",
        (rss1 - rss0) as f64 * 1024.0 / pending as f64
    );
    println!(
        "RSS per job after restart (B)     {:.0}",
        (rss2 - rss0) as f64 * 1024.0 / pending as f64
    );
    println!("start-up to listening (ms)        {}", took.as_millis());
    println!("store open line                   {opened}");
    println!("fired {} of {n} ({rate}/s for {seconds} s), doubled {dup}", late.len());
    println!(
        "adds/s while pending              {fire_add_rate:.0} (done {ahead:.0} ms before the first due)"
    );
    if !late.is_empty() {
        println!(
            "lateness ms p50 {:.1}  p99 {:.1}  max {:.1}  min {:.1}",
            pct(&late, 0.5),
            pct(&late, 0.99),
            late[late.len() - 1],
            late[0]
        );
    }
}
