//! Crash safety of the phase-2 store (API.md section 4): reps stream in from several clients,
//! the server is killed with SIGKILL at a random moment, restarted on the same data dir, and
//! everything stored is replayed. With `ESUB_FSYNC=always` every rep acknowledged with
//! `X-Esub-Stored: true` must replay exactly once; nothing replays twice; nothing replays that
//! was never sent. With `ESUB_FSYNC=interval` losses inside the window are allowed, nothing else.
//!
//! The random kill points come from a seed printed at the start; set `ESUB_CRASH_SEED` to it to
//! run the same sequence again.

mod common;

use common::{Client, Response, Server};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CLIENTS: usize = 4;
const KEYS_PER_CLIENT: usize = 3;
const EXIT_DEADLINE: Duration = Duration::from_secs(10);

/// xorshift64*: enough randomness for kill points and body lengths, reproducible from a seed.
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

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> DataDir {
        let p = std::env::temp_dir().join(format!("esub-crash-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        DataDir(p)
    }

    fn as_str(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one client thread saw before the server died.
#[derive(Default)]
struct Log {
    /// (key, body) acknowledged with 404 + `X-Esub-Stored: true`, in send order.
    acked: Vec<(String, Vec<u8>)>,
    /// The rep on the wire when the connection broke (sent at least in part, no answer read).
    in_flight: Option<(String, Vec<u8>)>,
    /// Answers that are wrong whatever the timing.
    wrong: Vec<String>,
}

fn body_for(run: &str, client: usize, n: usize, pad: usize) -> Vec<u8> {
    let mut b = format!("{run}/c{client}/n{n:06}/").into_bytes();
    // Unique prefix, then padding whose bytes also depend on n (a torn or mixed record shows).
    b.extend((0..pad).map(|i| (i as u8).wrapping_mul(31).wrapping_add(n as u8)));
    b
}

/// `n` of a body made by `body_for`.
fn seq_of(body: &[u8]) -> usize {
    let s = String::from_utf8_lossy(&body[..body.len().min(64)]).into_owned();
    let part = s.split('/').nth(2).unwrap_or_else(|| panic!("not a test body: {s:?}"));
    part.trim_start_matches('n').parse().unwrap_or_else(|_| panic!("not a test body: {s:?}"))
}

/// Stream reps over one keep-alive connection until the server goes away.
fn stream_reps(s_addr: std::net::SocketAddr, run: String, client: usize, seed: u64) -> Log {
    let mut rng = Rng(seed.max(1));
    let mut log = Log::default();
    let mut c = Client::connect(s_addr);
    for n in 0.. {
        let key = format!("c{client}k{}", n % KEYS_PER_CLIENT);
        let pad = rng.range(0, 400) as usize;
        let body = body_for(&run, client, n, pad);
        let mut req = format!(
            "POST /rep/{key} HTTP/1.1\r\nHost: esub\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        if c.try_send(&req).is_err() {
            log.in_flight = Some((key, body));
            break;
        }
        let r: Response = match c.try_read_response() {
            Ok(r) => r,
            Err(_) => {
                log.in_flight = Some((key, body));
                break;
            }
        };
        if r.status == 404 && r.body == b"Unknown key" && r.header("x-esub-stored") == Some("true")
        {
            log.acked.push((key, body));
        } else {
            log.wrong.push(format!(
                "rep {n} to {key}: {} {:?} {:?}",
                r.status,
                r.body_str(),
                r.headers
            ));
            break;
        }
    }
    log
}

/// Replay every stored body of `key` until 404; checks the `X-Esub-Remaining` countdown.
fn drain_key(c: &mut Client, key: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut last: Option<usize> = None;
    loop {
        let r = c.get(&format!("/rsub/{key}"));
        if r.status == 404 {
            r.assert_text(404, "Nothing stored");
            assert!(last.is_none_or(|n| n == 0), "404 after X-Esub-Remaining {last:?} on {key}");
            return out;
        }
        assert_eq!(r.status, 200, "rsub {key}: {} {:?}", r.status, r.body_str());
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        let n: usize = r.header("x-esub-remaining").expect("X-Esub-Remaining").parse().unwrap();
        if let Some(prev) = last {
            assert_eq!(n + 1, prev, "X-Esub-Remaining did not count down on {key}");
        }
        last = Some(n);
        out.push(r.body);
    }
}

fn kill9(s: &mut Server) {
    let st = Command::new("kill").args(["-KILL", &s.pid().to_string()]).status().expect("run kill");
    assert!(st.success(), "kill -KILL failed: {st:?}");
    let st = s.wait_exit(EXIT_DEADLINE);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9), "{st:?}");
}

/// Totals over the iterations, printed at the end.
#[derive(Default, Debug)]
struct Totals {
    acked: usize,
    replayed: usize,
    in_flight_replayed: usize,
    lost: usize,
    torn_tails: usize,
}

/// One crash: stream, kill -9 after `delay`, restart, replay everything, check.
fn crash_once(name: &str, fsync: &str, iter: usize, rng: &mut Rng, strict: bool, t: &mut Totals) {
    let dir = DataDir::new(&format!("{name}-{iter}"));
    let env =
        [("ESUB_STORE", "undelivered"), ("ESUB_DATA_DIR", dir.as_str()), ("ESUB_FSYNC", fsync)];
    let mut s = Server::start(&env);
    let run = format!("{name}{iter}");
    let delay = Duration::from_millis(rng.range(50, 500));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (addr, run, seed) = (s.addr, run.clone(), rng.next());
            thread::spawn(move || stream_reps(addr, run, c, seed))
        })
        .collect();
    // The random kill point: the test's own clock, not a wait for the server.
    thread::sleep(delay);
    kill9(&mut s);
    let logs: Vec<Log> = threads.into_iter().map(|h| h.join().expect("client thread")).collect();
    drop(s);

    let ctx = format!("{name} iteration {iter} (kill after {delay:?})");
    for (c, log) in logs.iter().enumerate() {
        assert!(log.wrong.is_empty(), "{ctx}: client {c} got a wrong answer: {:?}", log.wrong);
    }

    // Replay with interval syncs: the crash is over, and an fsync per tombstone only slows it.
    let replay_env = [("ESUB_STORE", "undelivered"), ("ESUB_DATA_DIR", dir.as_str())];
    let s = Server::start(&replay_env);
    let mut client = s.client();
    let mut replayed: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for c in 0..CLIENTS {
        for k in 0..KEYS_PER_CLIENT {
            let key = format!("c{c}k{k}");
            let got = drain_key(&mut client, &key);
            replayed.insert(key, got);
        }
    }
    // The startup log is complete once the bound address is on stderr.
    let port = format!(":{}", s.port());
    let deadline = Instant::now() + common::POLL_DEADLINE;
    while !s.stderr().contains(&port) {
        assert!(Instant::now() < deadline, "{ctx}: no start-up line:\n{}", s.stderr());
        thread::sleep(Duration::from_millis(5));
    }
    let log = s.stderr();
    assert!(!log.contains("ERROR"), "{ctx}: error at start-up:\n{log}");
    if log.contains("WARN") {
        t.torn_tails += 1;
        eprintln!("{ctx}: start-up warning:\n{log}");
    }

    // Every replayed body once, every one sent, in send order per key.
    let mut seen: HashSet<&[u8]> = HashSet::new();
    for (key, bodies) in &replayed {
        for b in bodies {
            assert!(
                seen.insert(b.as_slice()),
                "{ctx}: body replayed twice on {key}: {:?}",
                String::from_utf8_lossy(&b[..b.len().min(40)])
            );
        }
        let seqs: Vec<usize> = bodies.iter().map(|b| seq_of(b)).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{ctx}: {key} replays out of order: {seqs:?}"
        );
    }
    let mut acked: HashSet<&[u8]> = HashSet::new();
    let mut in_flight: HashSet<&[u8]> = HashSet::new();
    let mut key_of: BTreeMap<&[u8], &str> = BTreeMap::new();
    for log in &logs {
        for (k, b) in &log.acked {
            acked.insert(b);
            key_of.insert(b, k);
        }
        if let Some((k, b)) = &log.in_flight {
            in_flight.insert(b);
            key_of.insert(b, k);
        }
    }
    for (key, bodies) in &replayed {
        for b in bodies {
            let b = b.as_slice();
            assert!(
                acked.contains(b) || in_flight.contains(b),
                "{ctx}: {key} replays a body that was never sent (or is corrupt): {:?} ({} bytes)",
                String::from_utf8_lossy(&b[..b.len().min(40)]),
                b.len()
            );
            assert_eq!(key_of[b], key.as_str(), "{ctx}: body replayed on the wrong key");
        }
    }
    let lost: Vec<&str> =
        acked.iter().filter(|b| !seen.contains(**b)).map(|b| key_of[*b]).collect();
    if strict {
        assert!(
            lost.is_empty(),
            "{ctx}: {} of {} acknowledged reps lost with ESUB_FSYNC=always (keys {:?})",
            lost.len(),
            acked.len(),
            lost.iter().take(10).collect::<Vec<_>>()
        );
    }
    let n_replayed: usize = replayed.values().map(Vec::len).sum();
    let n_in_flight = in_flight.iter().filter(|b| seen.contains(**b)).count();
    eprintln!(
        "{ctx}: acked {}, replayed {n_replayed} ({n_in_flight} in flight at the kill), lost {}",
        acked.len(),
        lost.len()
    );
    t.acked += acked.len();
    t.replayed += n_replayed;
    t.in_flight_replayed += n_in_flight;
    t.lost += lost.len();
}

#[test]
fn kill_9_loses_no_acknowledged_rep_with_fsync_always() {
    let (mut rng, seed) = Rng::seeded();
    eprintln!("crash test seed {seed} (rerun with ESUB_CRASH_SEED={seed})");
    let started = Instant::now();
    let mut t = Totals::default();
    for iter in 0..20 {
        crash_once("always", "always", iter, &mut rng, true, &mut t);
    }
    eprintln!("seed {seed}: {t:?} in {:?}", started.elapsed());
    assert!(t.acked > 0, "no rep was acknowledged in 20 runs");
}

#[test]
fn kill_9_with_fsync_interval_replays_no_duplicate_and_nothing_corrupt() {
    let (mut rng, seed) = Rng::seeded();
    eprintln!("crash test seed {seed} (rerun with ESUB_CRASH_SEED={seed})");
    let started = Instant::now();
    let mut t = Totals::default();
    for iter in 0..6 {
        crash_once("interval", "interval", iter, &mut rng, false, &mut t);
    }
    eprintln!("seed {seed}: {t:?} in {:?}", started.elapsed());
    assert!(t.acked > 0, "no rep was acknowledged in 6 runs");
}
