//! Phase 2 store (API.md section 4): which reps are stored and how `X-Esub-Stored` says so,
//! `/rsub` order, counts and tokens, binary and large bodies, persistence across restarts, torn
//! tails, unusable data dirs, retention by bytes and by age, compaction, and a full disk (507).

mod common;

use common::{Client, Response, Server, run_to_exit};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// How long the store's maintenance (about once a second) may take to show on disk.
const MAINTENANCE_DEADLINE: Duration = Duration::from_secs(10);
const EXIT_DEADLINE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A fresh data dir under the system temp dir, named after the test and this process, removed
/// when dropped (also when the test fails).
struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> DataDir {
        let p = std::env::temp_dir().join(format!("esub-store-{name}-{}", std::process::id()));
        remove_path(&p);
        DataDir(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn as_str(&self) -> &str {
        self.0.to_str().expect("temp path is UTF-8")
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        remove_path(&self.0);
    }
}

fn remove_path(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = fs::remove_file(p);
        }
        Err(_) => {}
    }
}

/// Start with the store on in `mode` over `dir`, plus `extra` settings.
fn start_store(dir: &DataDir, mode: &str, extra: &[(&str, &str)]) -> Server {
    // The relay's store alone: the topics half (and its open-mode WARN) stays off.
    let mut env: Vec<(&str, &str)> =
        vec![("ESUB_STORE", mode), ("ESUB_DATA_DIR", dir.as_str()), ("ESUB_TOPICS", "off")];
    env.extend_from_slice(extra);
    Server::start(&env)
}

/// SIGTERM and a clean exit (code 0) within the deadline.
fn stop_clean(mut s: Server) {
    s.sigterm();
    let st = s.wait_exit(EXIT_DEADLINE);
    assert_eq!(st.code(), Some(0), "esub did not exit 0 after SIGTERM: {st:?}\n{}", s.stderr());
}

/// Whether the response says the rep was stored.
fn stored(r: &Response) -> bool {
    r.header("x-esub-stored") == Some("true")
}

/// 404 `Unknown key` with `X-Esub-Stored: true`.
#[track_caller]
fn assert_stored_404(r: &Response) {
    r.assert_text(404, "Unknown key");
    assert_eq!(r.header("x-esub-stored"), Some("true"), "undelivered rep not stored: {r:?}");
}

/// No `X-Esub-Stored` header at all.
#[track_caller]
fn assert_not_stored(r: &Response) {
    assert!(!r.has_header("x-esub-stored"), "unexpected X-Esub-Stored: {r:?}");
}

/// A replayed body: 200, octet-stream, the exact bytes, `X-Esub-Remaining: remaining`.
#[track_caller]
fn assert_replay(r: &Response, body: &[u8], remaining: usize) {
    r.assert_delivered(body);
    assert_eq!(
        r.header("x-esub-remaining"),
        Some(remaining.to_string().as_str()),
        "X-Esub-Remaining of {:?}: {:?}",
        String::from_utf8_lossy(&body[..body.len().min(64)]),
        r.headers
    );
}

#[track_caller]
fn assert_nothing_stored(r: &Response) {
    r.assert_text(404, "Nothing stored");
    assert!(!r.has_header("x-esub-remaining"), "404 with X-Esub-Remaining: {r:?}");
}

/// Replay every stored body of `key` (no token) until 404, checking that `X-Esub-Remaining`
/// counts down to 0 and ends with `Nothing stored`.
fn drain_key(c: &mut Client, key: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut last_remaining: Option<usize> = None;
    loop {
        let r = c.get(&format!("/rsub/{key}"));
        if r.status == 404 {
            assert_nothing_stored(&r);
            if let Some(n) = last_remaining {
                assert_eq!(n, 0, "404 after X-Esub-Remaining: {n} on {key}");
            }
            return out;
        }
        assert_eq!(r.status, 200, "rsub {key}: {r:?}");
        assert_eq!(r.header("content-type"), Some("application/octet-stream"), "{r:?}");
        let n: usize = r
            .header("x-esub-remaining")
            .unwrap_or_else(|| panic!("no X-Esub-Remaining: {r:?}"))
            .parse()
            .expect("X-Esub-Remaining is a number");
        if let Some(prev) = last_remaining {
            assert_eq!(n + 1, prev, "X-Esub-Remaining did not count down on {key}");
        }
        last_remaining = Some(n);
        out.push(r.body);
    }
}

/// Segment files (`*.log`) of the data dir with their sizes, by name.
fn segments(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut v: Vec<(PathBuf, u64)> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| {
            let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            (p, len)
        })
        .collect();
    v.sort();
    v
}

/// Total bytes of the regular files in the data dir.
fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Poll `cond` until it holds; fail with `what` (and the server's stderr) at the deadline.
#[track_caller]
fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        thread::sleep(POLL);
    }
}

/// Poll the server's stderr until it has a line matching `pred`; returns that line.
#[track_caller]
fn wait_stderr_line(s: &Server, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + common::POLL_DEADLINE;
    loop {
        if let Some(l) = s.stderr().lines().find(|l| pred(l)) {
            return l.to_string();
        }
        assert!(Instant::now() < deadline, "no stderr line {what}:\n{}", s.stderr());
        thread::sleep(POLL);
    }
}

/// Wait until the start-up lines (the bound address is printed at start-up) are on stderr,
/// so everything logged before them can be checked for absence.
fn startup_logged(s: &Server) -> String {
    let port = format!(":{}", s.port());
    wait_stderr_line(s, "with the bound address", |l| l.contains(&port));
    s.stderr()
}

/// A deterministic, incompressible-looking body of `len` bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Which reps are stored
// ---------------------------------------------------------------------------------------------

#[test]
fn store_off_has_no_stored_header_and_rsub_finds_nothing() {
    let dir = DataDir::new("off");
    let s = start_store(&dir, "off", &[]);
    let r = s.post("/rep/nobody", b"lost");
    r.assert_text(404, "Unknown key");
    assert_not_stored(&r);

    let mut sub = s.sub("/sub/k");
    s.wait_for_key("k");
    let r = s.post("/rep/k", b"hello");
    r.assert(200, b"OK");
    assert_not_stored(&r);
    sub.read_response().assert_delivered(b"hello");

    assert_nothing_stored(&s.get("/rsub/nobody"));
    assert_nothing_stored(&s.get("/rsub/k"));
}

#[test]
fn store_off_is_the_default() {
    let dir = DataDir::new("default");
    let s = Server::start(&[("ESUB_DATA_DIR", dir.as_str())]);
    let r = s.post("/rep/nobody", b"lost");
    r.assert_text(404, "Unknown key");
    assert_not_stored(&r);
    assert_nothing_stored(&s.get("/rsub/nobody"));
}

#[test]
fn undelivered_stores_only_404_reps() {
    let dir = DataDir::new("undelivered");
    let s = start_store(&dir, "undelivered", &[]);

    // No sub: 404 Unknown key, stored.
    assert_stored_404(&s.post("/rep/k", b"first undelivered"));
    assert_stored_404(&s.post("/rep/k?token=t", b"second undelivered"));

    // Delivered: 200 OK, not stored.
    let mut sub = s.sub("/sub/k");
    s.wait_for_key("k");
    let r = s.post("/rep/k", b"delivered");
    r.assert(200, b"OK");
    assert_not_stored(&r);
    sub.read_response().assert_delivered(b"delivered");

    // Refused by the sub's token: 403, not stored.
    let mut sub = s.sub("/sub/k?token=right");
    s.wait_for_key("k");
    let r = s.post("/rep/k?token=wrong", b"refused");
    r.assert_text(403, "Invalid token");
    assert_not_stored(&r);
    let r = s.post("/rep/k?token=right", b"delivered 2");
    r.assert(200, b"OK");
    assert_not_stored(&r);
    sub.read_response().assert_delivered(b"delivered 2");

    // Only the two 404 reps replay, oldest first, each with its own token.
    let mut c = s.client();
    assert_replay(&c.get("/rsub/k"), b"first undelivered", 1);
    assert_replay(&c.get("/rsub/k?token=t"), b"second undelivered", 0);
    assert_nothing_stored(&c.get("/rsub/k"));
    assert_nothing_stored(&c.get("/rsub/k?token=t"));
}

#[test]
fn all_stores_every_rep_delivered_or_not() {
    let dir = DataDir::new("all");
    let s = start_store(&dir, "all", &[]);

    let mut sub = s.sub("/sub/k");
    s.wait_for_key("k");
    let r = s.post("/rep/k", b"delivered and stored");
    r.assert_text(200, "OK");
    assert_eq!(r.header("x-esub-stored"), Some("true"), "delivered rep not stored: {r:?}");
    sub.read_response().assert_delivered(b"delivered and stored");

    assert_stored_404(&s.post("/rep/k", b"undelivered and stored"));

    let mut sub = s.sub("/sub/k?token=tok");
    s.wait_for_key("k");
    let r = s.post("/rep/k", b"refused");
    r.assert_text(403, "Invalid token");
    assert_not_stored(&r);
    let r = s.post("/rep/k?token=tok", b"with token");
    r.assert_text(200, "OK");
    assert!(stored(&r), "delivered rep with token not stored: {r:?}");
    sub.read_response().assert_delivered(b"with token");

    let mut c = s.client();
    assert_replay(&c.get("/rsub/k"), b"delivered and stored", 2);
    assert_replay(&c.get("/rsub/k"), b"undelivered and stored", 1);
    assert_replay(&c.get("/rsub/k?token=tok"), b"with token", 0);
    assert_nothing_stored(&c.get("/rsub/k"));
}

#[test]
fn rep_to_a_sub_that_vanished_is_stored() {
    let dir = DataDir::new("vanished");
    let s = start_store(&dir, "undelivered", &[("ESUB_WORKERS", "2")]);
    let mut want = Vec::new();
    for i in 0..20 {
        let key = format!("gone{i}");
        let body = format!("for a sub that left, #{i}");
        let sub = s.sub(&format!("/sub/{key}"));
        s.wait_for_key(&key);
        // The rep is on the wire but for its last byte; it completes right behind the FIN.
        let mut rep = s.client();
        let b = body.as_bytes();
        rep.send(
            format!(
                "POST /rep/{key} HTTP/1.1\r\nHost: esub\r\nContent-Length: {}\r\n\r\n",
                b.len()
            )
            .as_bytes(),
        );
        rep.send(&b[..b.len() - 1]);
        sub.close();
        rep.send(&b[b.len() - 1..]);
        assert_stored_404(&rep.read_response());
        want.push((key, body));
    }
    // And after the server has surely seen the disconnect.
    let sub = s.sub("/sub/gone-late");
    s.wait_for_key("gone-late");
    sub.close();
    s.wait_for_key_gone("gone-late");
    assert_stored_404(&s.post("/rep/gone-late", b"late"));
    want.push(("gone-late".into(), "late".into()));

    let mut c = s.client();
    for (key, body) in want {
        assert_replay(&c.get(&format!("/rsub/{key}")), body.as_bytes(), 0);
        assert_nothing_stored(&c.get(&format!("/rsub/{key}")));
    }
}

// ---------------------------------------------------------------------------------------------
// /rsub
// ---------------------------------------------------------------------------------------------

#[test]
fn rsub_replays_oldest_first_with_remaining_counting_down() {
    let dir = DataDir::new("order");
    let s = start_store(&dir, "undelivered", &[]);
    let mut rep = s.client();
    for i in 0..6 {
        assert_stored_404(&rep.post("/rep/q", format!("body {i}").as_bytes()));
        // Another key in between must not show up in q's replay.
        assert_stored_404(&rep.post("/rep/other", format!("other {i}").as_bytes()));
    }
    // Keep-alive: one connection replays them all.
    let mut c = s.client();
    for i in 0..3 {
        assert_replay(&c.get("/rsub/q"), format!("body {i}").as_bytes(), 5 - i);
    }
    // New connections see the same queue, minus what was replayed.
    for i in 3..6 {
        assert_replay(&s.get("/rsub/q"), format!("body {i}").as_bytes(), 5 - i);
    }
    assert_nothing_stored(&c.get("/rsub/q"));
    assert_nothing_stored(&s.get("/rsub/q"));
    // The other key is intact.
    let others = drain_key(&mut c, "other");
    let want: Vec<Vec<u8>> = (0..6).map(|i| format!("other {i}").into_bytes()).collect();
    assert_eq!(others, want);
    // Unknown keys and a percent-encoded key.
    assert_nothing_stored(&c.get("/rsub/never-used"));
    assert_stored_404(&rep.post("/rep/a%20b", b"spaced"));
    assert_replay(&c.get("/rsub/a%20b"), b"spaced", 0);
    // The connection is still good.
    c.get("/ping").assert(200, b"OK");
}

#[test]
fn rsub_token_must_match_exactly_both_ways() {
    let dir = DataDir::new("token");
    let s = start_store(&dir, "undelivered", &[]);
    let mut c = s.client();

    // Stored with a token.
    assert_stored_404(&c.post("/rep/t1?token=s3cret", b"secret body"));
    for path in ["/rsub/t1", "/rsub/t1?token=", "/rsub/t1?token=other", "/rsub/t1?token=S3cret"] {
        let r = c.get(path);
        r.assert_text(403, "Invalid token");
        assert!(!r.has_header("x-esub-remaining"), "{path}: {r:?}");
    }
    // A 403 leaves the record where it was.
    assert_replay(&c.get("/rsub/t1?token=s3cret"), b"secret body", 0);
    assert_nothing_stored(&c.get("/rsub/t1?token=s3cret"));

    // Stored without a token: a token on /rsub is refused; none, or `token=`, is fine.
    assert_stored_404(&c.post("/rep/t2", b"open 1"));
    assert_stored_404(&c.post("/rep/t2?token=", b"open 2"));
    c.get("/rsub/t2?token=x").assert_text(403, "Invalid token");
    assert_replay(&c.get("/rsub/t2"), b"open 1", 1);
    assert_replay(&c.get("/rsub/t2?token="), b"open 2", 0);

    // The oldest record decides: tokenless first, then one with a token.
    assert_stored_404(&c.post("/rep/t3", b"no token"));
    assert_stored_404(&c.post("/rep/t3?token=a+b%21", b"token 'a b!'"));
    c.get("/rsub/t3?token=a+b%21").assert_text(403, "Invalid token");
    assert_replay(&c.get("/rsub/t3"), b"no token", 1);
    c.get("/rsub/t3").assert_text(403, "Invalid token");
    c.get("/rsub/t3?token=a+b").assert_text(403, "Invalid token");
    assert_replay(&c.get("/rsub/t3?token=a%20b!"), b"token 'a b!'", 0);
    assert_nothing_stored(&c.get("/rsub/t3"));
    assert_nothing_stored(&c.get("/rsub/t3?token=whatever"));
}

#[test]
fn binary_and_large_bodies_round_trip() {
    let dir = DataDir::new("binary");
    let s = start_store(&dir, "undelivered", &[]);
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let reversed: Vec<u8> = (0..=255u8).rev().cycle().take(256 * 5 + 7).collect();
    let crlfs: Vec<u8> = b"\r\n\r\nHTTP/1.1 200 OK\r\n\r\n\0\0".to_vec();
    let one_mib = pattern(1 << 20, 42);
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("bin", every_byte.clone()),
        ("bin", reversed.clone()),
        ("bin", Vec::new()),
        ("bin", crlfs.clone()),
        ("big", one_mib.clone()),
        ("big", every_byte.clone()),
    ];
    let mut c = s.client();
    for (key, body) in &bodies {
        assert_stored_404(&c.post(&format!("/rep/{key}"), body));
    }
    // Replay half now, the rest after a restart.
    let mut r = c.get("/rsub/bin");
    assert_replay(&r, &every_byte, 3);
    r = c.get("/rsub/big");
    assert_replay(&r, &one_mib, 1);
    assert_eq!(r.header("content-length"), Some("1048576"));
    drop(c);
    stop_clean(s);

    let s = start_store(&dir, "undelivered", &[]);
    let mut c = s.client();
    assert_replay(&c.get("/rsub/bin"), &reversed, 2);
    let r = c.get("/rsub/bin");
    assert_replay(&r, b"", 1);
    assert_eq!(r.header("content-length"), Some("0"));
    assert_replay(&c.get("/rsub/bin"), &crlfs, 0);
    assert_replay(&c.get("/rsub/big"), &every_byte, 0);
    assert_nothing_stored(&c.get("/rsub/bin"));
    assert_nothing_stored(&c.get("/rsub/big"));

    // A 1 MiB body stored by this process, replayed after another restart.
    assert_stored_404(&c.post("/rep/big", &one_mib));
    drop(c);
    stop_clean(s);
    let s = start_store(&dir, "undelivered", &[]);
    assert_replay(&s.get("/rsub/big"), &one_mib, 0);
    assert_nothing_stored(&s.get("/rsub/big"));
}

// ---------------------------------------------------------------------------------------------
// Persistence
// ---------------------------------------------------------------------------------------------

#[test]
fn stored_reps_survive_a_clean_restart_and_replayed_ones_stay_gone() {
    let dir = DataDir::new("restart");
    let s = start_store(&dir, "undelivered", &[]);
    let mut c = s.client();
    for i in 0..5 {
        assert_stored_404(&c.post("/rep/a", format!("a{i}").as_bytes()));
    }
    for i in 0..3 {
        assert_stored_404(&c.post("/rep/b?token=tb", format!("b{i}").as_bytes()));
    }
    assert_stored_404(&c.post("/rep/c", b"c0"));
    // Replay some before the restart: these must not come back.
    assert_replay(&c.get("/rsub/a"), b"a0", 4);
    assert_replay(&c.get("/rsub/a"), b"a1", 3);
    assert_replay(&c.get("/rsub/c"), b"c0", 0);
    drop(c);
    stop_clean(s);

    let s = start_store(&dir, "undelivered", &[]);
    let mut c = s.client();
    assert_replay(&c.get("/rsub/a"), b"a2", 2);
    c.get("/rsub/b").assert_text(403, "Invalid token");
    assert_replay(&c.get("/rsub/b?token=tb"), b"b0", 2);
    assert_nothing_stored(&c.get("/rsub/c"));
    // Stored after the restart: goes behind the older ones.
    assert_stored_404(&c.post("/rep/a", b"a5"));
    drop(c);
    stop_clean(s);

    let s = start_store(&dir, "undelivered", &[]);
    let mut c = s.client();
    assert_replay(&c.get("/rsub/a"), b"a3", 2);
    assert_replay(&c.get("/rsub/a"), b"a4", 1);
    assert_replay(&c.get("/rsub/a"), b"a5", 0);
    assert_replay(&c.get("/rsub/b?token=tb"), b"b1", 1);
    assert_replay(&c.get("/rsub/b?token=tb"), b"b2", 0);
    for k in ["a", "b", "c"] {
        assert_nothing_stored(&c.get(&format!("/rsub/{k}")));
    }
    let log = s.stderr();
    assert!(!log.contains("WARN"), "warning after a clean restart:\n{log}");
}

/// Where the torn-tail tests start: three records on `t`, a clean stop, and the newest segment.
fn store_three_and_stop(dir: &DataDir) -> PathBuf {
    let s = start_store(dir, "undelivered", &[]);
    let mut c = s.client();
    for i in 0..3 {
        assert_stored_404(&c.post("/rep/t", format!("before the tear {i}").as_bytes()));
    }
    drop(c);
    stop_clean(s);
    let segs = segments(dir.path());
    assert!(!segs.is_empty(), "no *.log segment in {}", dir.as_str());
    segs.last().unwrap().0.clone()
}

fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

/// Restart after a tear: a WARN naming the segment, the three records replay, and records
/// stored afterwards survive a further restart without another warning.
fn check_torn_tail_recovery(dir: &DataDir, seg: &Path, good_len: u64) {
    let s = start_store(dir, "undelivered", &[]);
    let name = seg.file_name().unwrap().to_str().unwrap().to_string();
    let line = wait_stderr_line(&s, "WARN naming the torn segment", |l| {
        l.starts_with("WARN") && l.contains(&name)
    });
    eprintln!("torn tail warning: {line}");
    assert_eq!(fs::metadata(seg).unwrap().len(), good_len, "torn tail not cut at the last record");
    let mut c = s.client();
    assert_replay(&c.get("/rsub/t"), b"before the tear 0", 2);
    assert_stored_404(&c.post("/rep/t", b"after the tear"));
    drop(c);
    stop_clean(s);

    let s = start_store(dir, "undelivered", &[]);
    let log = startup_logged(&s);
    assert!(!log.contains("WARN"), "warning on the restart after the cut:\n{log}");
    let mut c = s.client();
    let bodies = drain_key(&mut c, "t");
    let want: Vec<&[u8]> = vec![b"before the tear 1", b"before the tear 2", b"after the tear"];
    assert_eq!(bodies, want);
}

#[test]
fn torn_tail_of_garbage_is_cut_and_earlier_records_replay() {
    let dir = DataDir::new("torn-garbage");
    let seg = store_three_and_stop(&dir);
    let good_len = fs::metadata(&seg).unwrap().len();
    append(&seg, b"\x30\x00\x00\x00\xde\xad\xbe\xefthis is not a record, it is garbage");
    check_torn_tail_recovery(&dir, &seg, good_len);
}

#[test]
fn torn_tail_of_a_half_written_record_is_cut() {
    let dir = DataDir::new("torn-half");
    let seg = store_three_and_stop(&dir);
    let bytes = fs::read(&seg).unwrap();
    let good_len = bytes.len() as u64;
    // The start of the last record, written again without its end: what a crash mid-write
    // leaves. Frames are `[len u32 LE][crc u32][len bytes]` after a 16-byte segment header.
    let (mut pos, mut last) = (16usize, None);
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        last = Some((pos, 8 + len));
        pos += 8 + len;
    }
    assert_eq!(pos, bytes.len(), "segment does not end at a frame boundary");
    let (at, frame) = last.expect("a record in the segment");
    let torn = bytes[at..at + frame - 5].to_vec();
    append(&seg, &torn);
    check_torn_tail_recovery(&dir, &seg, good_len);
}

#[test]
fn unusable_data_dir_exits_2_with_one_error_line() {
    let base = DataDir::new("unusable");
    fs::write(base.path(), b"a regular file, not a directory").unwrap();
    let under_file = base.path().join("data");
    let cases = [base.as_str().to_string(), under_file.to_str().unwrap().to_string()];
    for mode in ["undelivered", "all"] {
        for dir in &cases {
            let out = run_to_exit(
                &[],
                &[("ESUB_STORE", mode), ("ESUB_DATA_DIR", dir.as_str())],
                EXIT_DEADLINE,
            );
            assert_eq!(
                out.status.map(|s| s.code()),
                Some(Some(2)),
                "ESUB_DATA_DIR={dir} (mode {mode}): exit (None: still running); stderr: {}",
                out.stderr
            );
            assert!(!out.stdout.contains("listening on"), "started anyway: {}", out.stdout);
            let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("ERROR")).collect();
            assert_eq!(errors.len(), 1, "want one ERROR line, stderr:\n{}", out.stderr);
            assert!(
                errors[0].contains("ESUB_DATA_DIR"),
                "ERROR line does not name ESUB_DATA_DIR: {}",
                errors[0]
            );
        }
    }
    // The file was left alone.
    assert_eq!(fs::read(base.path()).unwrap(), b"a regular file, not a directory");
}

// ---------------------------------------------------------------------------------------------
// Retention and compaction
// ---------------------------------------------------------------------------------------------

#[test]
fn retention_by_bytes_drops_the_oldest_and_keeps_the_newest() {
    const RETENTION: u64 = 16384;
    const N: usize = 100;
    let dir = DataDir::new("ret-bytes");
    let s = start_store(
        &dir,
        "undelivered",
        &[("ESUB_STORE_SEGMENT_BYTES", "4096"), ("ESUB_RETENTION_BYTES", "16384")],
    );
    let body = |i: usize| {
        let mut b = format!("retained-by-bytes {i:03} ").into_bytes();
        b.resize(500, b'.');
        b
    };
    let mut c = s.client();
    for i in 0..N {
        assert_stored_404(&c.post(&format!("/rep/r{i:03}"), &body(i)));
    }
    let written = N as u64 * 500;
    assert!(written > 3 * RETENTION, "test stores too little");
    wait_until(MAINTENANCE_DEADLINE, "data dir within ESUB_RETENTION_BYTES", || {
        dir_bytes(dir.path()) <= RETENTION
    });
    // The newest remain...
    for i in N - 10..N {
        assert_replay(&c.get(&format!("/rsub/r{i:03}")), &body(i), 0);
    }
    // ...the oldest are gone (16 KiB holds at most ~32 of these records)...
    for i in 0..N / 2 {
        assert_nothing_stored(&c.get(&format!("/rsub/r{i:03}")));
    }
    // ...and whatever is in between is either gone or intact.
    let mut kept = 0;
    for i in N / 2..N - 10 {
        let r = c.get(&format!("/rsub/r{i:03}"));
        if r.status == 200 {
            assert_replay(&r, &body(i), 0);
            kept += 1;
        } else {
            assert_nothing_stored(&r);
        }
    }
    eprintln!("kept {} of {N} records", kept + 10);
}

#[test]
fn retention_by_time_drops_old_segments() {
    let dir = DataDir::new("ret-time");
    let s = start_store(
        &dir,
        "undelivered",
        &[("ESUB_STORE_SEGMENT_BYTES", "4096"), ("ESUB_RETENTION_SECS", "1")],
    );
    let body = |i: usize| {
        let mut b = format!("retained-by-time {i:02} ").into_bytes();
        b.resize(500, b'~');
        b
    };
    let mut c = s.client();
    for i in 0..30 {
        assert_stored_404(&c.post(&format!("/rep/old{i:02}"), &body(i)));
    }
    let stored_at = Instant::now();
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "expected several segments, got {segs:?}");
    let sealed: Vec<PathBuf> = segs[..segs.len() - 1].iter().map(|(p, _)| p.clone()).collect();
    wait_until(MAINTENANCE_DEADLINE, "sealed segments dropped by ESUB_RETENTION_SECS=1", || {
        sealed.iter().all(|p| !p.exists())
    });
    let bytes_after = dir_bytes(dir.path());
    assert!(bytes_after < 30 * 500 / 2, "data dir still holds {bytes_after} bytes");
    // Every old record is older than the retention now.
    let age = Duration::from_millis(1200);
    if stored_at.elapsed() < age {
        thread::sleep(age - stored_at.elapsed());
    }
    for i in 0..30 {
        assert_nothing_stored(&c.get(&format!("/rsub/old{i:02}")));
    }
    // New ones are kept.
    assert_stored_404(&c.post("/rep/fresh", b"fresh"));
    assert_replay(&c.get("/rsub/fresh"), b"fresh", 0);
}

#[test]
fn compaction_shrinks_the_data_dir_and_keeps_live_records_in_order() {
    let dir = DataDir::new("compact");
    let s = start_store(&dir, "undelivered", &[("ESUB_STORE_SEGMENT_BYTES", "4096")]);
    let body = |key: &str, i: usize| {
        let mut b = format!("{key}-{i:03}|").into_bytes();
        b.resize(200, b'#');
        b
    };
    // Three reps on A for every one on K: once most of A is replayed, every segment is
    // mostly dead but still holds live K records, so only compaction can shrink the dir.
    let (mut na, mut nk) = (0, 0);
    let mut c = s.client();
    for i in 0..240 {
        if i % 4 == 3 {
            assert_stored_404(&c.post("/rep/K", &body("K", nk)));
            nk += 1;
        } else {
            assert_stored_404(&c.post("/rep/A", &body("A", na)));
            na += 1;
        }
    }
    let before = dir_bytes(dir.path());
    let nsegs = segments(dir.path()).len();
    assert!(nsegs >= 8, "expected many segments, got {nsegs}");
    const REPLAYED: usize = 170;
    for i in 0..REPLAYED {
        assert_replay(&c.get("/rsub/A"), &body("A", i), na - i - 1);
    }
    wait_until(MAINTENANCE_DEADLINE, "data dir shrinks to under half", || {
        dir_bytes(dir.path()) < before / 2
    });
    eprintln!(
        "data dir {before} bytes in {nsegs} segments -> {} bytes in {} segments",
        dir_bytes(dir.path()),
        segments(dir.path()).len()
    );
    for i in REPLAYED..na {
        assert_replay(&c.get("/rsub/A"), &body("A", i), na - i - 1);
    }
    assert_nothing_stored(&c.get("/rsub/A"));
    let ks = drain_key(&mut c, "K");
    let want: Vec<Vec<u8>> = (0..nk).map(|i| body("K", i)).collect();
    assert_eq!(ks.len(), want.len(), "K records lost or duplicated by compaction");
    assert!(ks == want, "K records out of order or altered by compaction");
}

#[test]
fn compacted_store_restarts_with_exactly_the_live_records() {
    let dir = DataDir::new("compact-restart");
    let extra = [("ESUB_STORE_SEGMENT_BYTES", "4096")];
    let s = start_store(&dir, "undelivered", &extra);
    let body = |key: &str, i: usize| {
        let mut b = format!("{key}-{i:03}|").into_bytes();
        b.resize(200, b'#');
        b
    };
    let (mut na, mut nk) = (0, 0);
    let mut c = s.client();
    for i in 0..240 {
        if i % 4 == 3 {
            assert_stored_404(&c.post("/rep/K", &body("K", nk)));
            nk += 1;
        } else {
            assert_stored_404(&c.post("/rep/A", &body("A", na)));
            na += 1;
        }
    }
    let before = dir_bytes(dir.path());
    const REPLAYED: usize = 170;
    for i in 0..REPLAYED {
        assert_replay(&c.get("/rsub/A"), &body("A", i), na - i - 1);
    }
    wait_until(MAINTENANCE_DEADLINE, "data dir shrinks to under half", || {
        dir_bytes(dir.path()) < before / 2
    });
    drop(c);
    stop_clean(s);

    // What was replayed stays replayed; what was live is all there, in order, once.
    let s = start_store(&dir, "undelivered", &extra);
    let mut c = s.client();
    let a = drain_key(&mut c, "A");
    let want: Vec<Vec<u8>> = (REPLAYED..na).map(|i| body("A", i)).collect();
    assert!(
        a == want,
        "after compaction and a restart, A replays {} bodies, want {} (A-{REPLAYED:03}..A-{:03}); \
         first ones: {:?}",
        a.len(),
        want.len(),
        na - 1,
        a.iter().take(5).map(|b| String::from_utf8_lossy(&b[..6]).into_owned()).collect::<Vec<_>>()
    );
    let ks = drain_key(&mut c, "K");
    let want: Vec<Vec<u8>> = (0..nk).map(|i| body("K", i)).collect();
    assert!(ks == want, "K after compaction and restart: {} bodies, want {}", ks.len(), nk);
}

/// A replayed record's tombstone may sit in a later segment than the record. If that later
/// segment is dropped (all its reps dead) while the record's own segment stays (mostly live),
/// the record comes back at the next start-up: replayed twice.
#[test]
fn replayed_rep_stays_gone_after_its_tombstone_segment_is_dropped() {
    let dir = DataDir::new("tombstone");
    let extra = [("ESUB_STORE_SEGMENT_BYTES", "4096")];
    let s = start_store(&dir, "undelivered", &extra);
    let mut c = s.client();
    let small = b"small, replayed before the restart".to_vec();
    let keeper = pattern(3000, 1);
    let filler = pattern(2000, 2);
    let later = pattern(3000, 3);
    // Segment 1: the small rep and a big one that keeps the segment mostly live.
    assert_stored_404(&c.post("/rep/a", &small));
    assert_stored_404(&c.post("/rep/k", &keeper));
    assert_eq!(segments(dir.path()).len(), 1, "setup: one segment");
    // Segment 2: a filler that does not fit in segment 1.
    assert_stored_404(&c.post("/rep/f", &filler));
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 2, "setup: the filler starts segment 2: {segs:?}");
    let (seg2, len2) = segs[1].clone();
    // Replay the small rep and the filler: both tombstones land in segment 2.
    assert_replay(&c.get("/rsub/a"), &small, 0);
    wait_until(common::POLL_DEADLINE, "tombstone of a written", || {
        fs::metadata(&seg2).map_or(0, |m| m.len()) > len2
    });
    let len2 = fs::metadata(&seg2).unwrap().len();
    assert_replay(&c.get("/rsub/f"), &filler, 0);
    wait_until(common::POLL_DEADLINE, "tombstone of f written", || {
        fs::metadata(&seg2).map_or(0, |m| m.len()) > len2
    });
    // Segment 3: seals segment 2, which now has no live rep.
    assert_stored_404(&c.post("/rep/later", &later));
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 3, "setup: a third segment: {segs:?}");
    // Maintenance runs about once a second: give it two passes, in which a store that drops
    // segments out of order would drop segment 2 (no live rep). Its tombstones must stay
    // while segment 1 still holds the records they remove.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(seg2.exists(), "segment 2 holds the tombstones of records in segment 1: it must stay");
    drop(c);
    stop_clean(s);

    let s = start_store(&dir, "undelivered", &extra);
    let mut c = s.client();
    let r = c.get("/rsub/a");
    assert!(
        r.status == 404,
        "rep /rep/a was replayed before the restart and comes back after it: {} {:?} \
         (X-Esub-Remaining {:?})",
        r.status,
        r.body_str(),
        r.header("x-esub-remaining")
    );
    assert_nothing_stored(&r);
    assert_nothing_stored(&c.get("/rsub/f"));
    assert_replay(&c.get("/rsub/k"), &keeper, 0);
    assert_replay(&c.get("/rsub/later"), &later, 0);
}

// ---------------------------------------------------------------------------------------------
// Full disk
// ---------------------------------------------------------------------------------------------

/// Lower the running server's file size limit (RLIMIT_FSIZE) so writes past it fail (EFBIG).
fn limit_file_size(s: &Server, bytes: u64) {
    let st = Command::new("prlimit")
        .args(["--pid", &s.pid().to_string(), &format!("--fsize={bytes}")])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(st.success(), "prlimit failed: {st:?}");
}

#[test]
fn full_disk_answers_507_and_stores_nothing_partial() {
    let dir = DataDir::new("full");
    let s = start_store(&dir, "undelivered", &[("ESUB_FSYNC", "always")]);
    // Segments start with a small header; leave room for a dozen 3000-byte reps.
    limit_file_size(&s, 40_000);
    let mut c = s.client();
    let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
    let mut refused: Vec<(String, Vec<u8>)> = Vec::new();
    let mut i = 0;
    while refused.len() < 3 {
        assert!(i < 100, "no 507 after {i} reps of 3000 bytes under a 40000-byte file limit");
        let key = format!("full{i:03}");
        let body = pattern(3000, 100 + i as u64);
        let r = c.post(&format!("/rep/{key}"), &body);
        if r.status == 507 {
            r.assert_text(507, "Insufficient Storage");
            assert_not_stored(&r);
            refused.push((key, body));
        } else {
            assert_stored_404(&r);
            assert!(refused.is_empty(), "{key} stored after a 507 of a rep of the same size");
            acked.push((key, body));
        }
        i += 1;
    }
    assert!(!acked.is_empty(), "nothing fitted under the limit");
    // Smaller reps may still fit; whatever is acknowledged must replay.
    for j in 0..20 {
        let key = format!("small{j:02}");
        let body = pattern(100 + j, 500 + j as u64);
        let r = c.post(&format!("/rep/{key}"), &body);
        if r.status == 507 {
            r.assert_text(507, "Insufficient Storage");
            assert_not_stored(&r);
            refused.push((key, body));
        } else {
            assert_stored_404(&r);
            acked.push((key, body));
        }
    }
    // The server is fine otherwise.
    c.get("/ping").assert(200, b"OK");
    eprintln!("acknowledged {}, refused {}", acked.len(), refused.len());
    drop(c);
    stop_clean(s);

    // Without the limit: exactly the acknowledged reps replay, and no torn record is found.
    let s = start_store(&dir, "undelivered", &[]);
    let log = startup_logged(&s);
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "start-up after 507s:\n{log}");
    let mut c = s.client();
    for (key, body) in &acked {
        assert_replay(&c.get(&format!("/rsub/{key}")), body, 0);
        assert_nothing_stored(&c.get(&format!("/rsub/{key}")));
    }
    for (key, _) in &refused {
        assert_nothing_stored(&c.get(&format!("/rsub/{key}")));
    }
}
