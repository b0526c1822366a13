//! Delayed jobs (API-topics.md section 7): firing within a tick of the due time in (due, id)
//! order, every 400 in its order (the time checks before auth), cancel with 200 or 409, jobs
//! that survive `kill -9` and fire at start-up when overdue, none fired during the drain, and
//! 100 cancels racing their firings.

mod common;

use common::topics::{Conn, DataDir, FAST, Resp, SLACK, Topics, drain, pubh, start_in};
use std::collections::{HashMap, HashSet};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TICK_MS: u64 = 100;
const TICK: (&str, &str) = ("ESUB_JOB_TICK_MS", "100");
/// The tick and a short long-poll (to read until 204).
const ENV: [(&str, &str); 2] = [TICK, FAST];
const JOBS: &str = "/v1/jobs/t/v1";
const SUB: &str = "/v1/msgs/app1/t/v1";

fn unix_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Schedules a job as `app1`; asserts 201 and returns its id.
#[track_caller]
fn add(c: &mut Conn, query: &str, extra: &[(&str, &str)], body: &[u8]) -> i64 {
    let r = c.publish("app1", &format!("{JOBS}?{query}"), extra, body);
    r.assert_ok(201);
    let id = r.header("x-job-id").unwrap_or_else(|| panic!("no X-Job-Id: {r:?}"));
    assert!(id.len() >= 18 && id.bytes().all(|b| b.is_ascii_digit()), "job id {id:?}");
    id.parse().unwrap()
}

fn cancel(c: &mut Conn, path: &str, id: i64) -> Resp {
    c.req("DELETE", &format!("{path}?id={id}"), &pubh("app1"), b"")
}

#[track_caller]
fn assert_not_found(r: &Resp) {
    r.assert_err(409, "job not found");
    assert_eq!(r.body_str(), r#"{"errmsg":"job not found"}"#);
}

/// Waits until the topic holds `n` messages in all.
#[track_caller]
fn wait_latest(t: &Topics, n: i64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got: i64 = t.offsets("app1", "t", "v1").iter().map(|(_, l)| l).sum();
        if got == n {
            return;
        }
        assert!(got < n, "{got} messages, want {n}");
        assert!(Instant::now() < deadline, "{got} messages after {within:?}, want {n}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// `jobs` of `GET /v1/status`: the pending ones.
fn status_jobs(t: &Topics) -> i64 {
    let body = t.once("GET", "/v1/status", &[], b"").body_str();
    let at = body.find("\"jobs\":").unwrap_or_else(|| panic!("no jobs in {body}")) + 7;
    let digits: String = body[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap()
}

#[test]
fn delay_one_fires_within_a_tick_with_key_and_tag() {
    let t = Topics::start("jobs-fire", &[TICK]);
    t.create("app1", "t", "v1", 1);
    let mut c = t.conn();
    let sent = Instant::now();
    let a = add(&mut c, "delay=1&key=k1", &[("X-Tag", "a=b")], b"job one");
    let b = add(&mut c, "delay=1", &[], b"job two");
    assert!(b > a, "ids increase: {a} then {b}");
    let mut sc = t.conn();
    let r = sc.sub("app1", &format!("{SUB}?group=g"), &[]);
    let took = sent.elapsed();
    let m = r.msg();
    assert_eq!((m.offset, m.payload.as_slice()), (0, &b"job one"[..]));
    assert_eq!((r.header("x-key"), r.header("x-tag")), (Some("k1"), Some("a=b")));
    assert!(took >= Duration::from_secs(1), "fired early: {took:?}");
    assert!(
        took <= Duration::from_millis(1000 + TICK_MS) + SLACK,
        "fired late: {took:?} (tick {TICK_MS} ms)"
    );
    let r = sc.sub("app1", &format!("{SUB}?group=g"), &[]);
    assert_eq!(r.msg().payload, b"job two");
}

#[test]
fn jobs_fire_in_due_then_id_order() {
    let t = Topics::start("jobs-order", &ENV);
    t.create("app1", "t", "v1", 1);
    let mut c = t.conn();
    // `due` is in whole seconds: B's `due - 1` must stay in the future even when a second
    // boundary passes between reading the clock and the server's check (a loaded machine).
    let due = unix_s() + 3;
    add(&mut c, &format!("due={due}"), &[], b"A");
    add(&mut c, &format!("due={}&delay=100", due - 1), &[], b"B");
    add(&mut c, &format!("due={due}"), &[], b"C");
    wait_latest(&t, 3, Duration::from_secs(4) + SLACK);
    let got = drain(&mut t.conn(), "app1", &format!("{SUB}?group=g"), &[]);
    let payloads: Vec<&[u8]> = got.iter().map(|r| r.payload.as_slice()).collect();
    assert_eq!(payloads, [b"B", b"A", b"C"]);
}

/// Method, path, headers, body, status, error text.
type Case<'a> = (&'a str, String, &'a [(&'a str, &'a str)], &'a [u8], u16, &'a str);

#[test]
fn every_refusal_in_its_order() {
    let t = Topics::start("jobs-400", &[("ESUB_JOB_MAX_BYTES", "100")]);
    t.create("app1", "t", "v1", 1);
    let past = format!("due={}", unix_s() - 1);
    let big = "k".repeat(257);
    let tag = "x".repeat(1025);
    let none: &[(&str, &str)] = &[];
    let app = pubh("app1");
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("POST", "/v1/jobs/t.x/v1?delay=x".into(), none, b"p", 400, "illegal topic"),
        ("POST", "/v1/jobs/t/v.1?delay=x".into(), none, b"p", 400, "illegal version"),
        ("POST", JOBS.to_string(), none, b"p", 400, "invalid delay param"),
        ("POST", format!("{JOBS}?delay=1.5"), none, b"p", 400, "invalid delay param"),
        ("POST", format!("{JOBS}?due=soon&delay=1"), none, b"p", 400, "invalid due param"),
        ("POST", format!("{JOBS}?{past}&delay=5"), none, b"p", 400, "invalid param"),
        ("POST", format!("{JOBS}?delay=0"), none, b"p", 400, "invalid param"),
        ("POST", format!("{JOBS}?delay=1"), none, b"p", 401, "auth with empty identity or key"),
        ("POST", format!("{JOBS}?delay=1&key={big}"), &app, &[b'p'; 101], 413, "too big message"),
        ("POST", format!("{JOBS}?delay=1&key={big}"), &app, b"", 400, "too small message"),
        ("POST", format!("{JOBS}?delay=1&key={big}"), &app, b"p", 400, "too big key"),
        ("POST", "/v1/jobs/nope/v1?delay=1".into(), &app, b"p", 201, ""),
        ("DELETE", "/v1/jobs/t.x/v1?id=1".into(), none, b"", 400, "illegal topic"),
        ("DELETE", format!("{JOBS}?id=1"), none, b"", 401, "auth with empty identity or key"),
        ("DELETE", format!("{JOBS}?id=12345678901234567"), &app, b"", 400, "invalid job id"),
        ("DELETE", format!("{JOBS}?id=12345678901234567x"), &app, b"", 400, "invalid job id"),
        ("DELETE", JOBS.to_string(), &app, b"", 400, "invalid job id"),
        ("DELETE", format!("{JOBS}?id=123456789012345678"), &app, b"", 409, "job not found"),
        ("POST", "/v1/jobs/a.b/t/v1".into(), &app, b"", 400, "invalid appid"),
        ("POST", "/v1/jobs/app1/t/v1".into(), none, b"", 401, "auth with empty identity or key"),
        ("POST", "/v1/jobs/app1/t/v1".into(), &app, b"", 201, ""),
    ];
    for (method, path, h, body, status, text) in cases {
        let r = t.once(method, &path, h, body);
        if status == 201 {
            r.assert_ok(201);
        } else {
            r.assert_err(status, text);
        }
    }
    // The tag limit, with a key that fits; a payload at the limit is fine.
    let r = t.once(
        "POST",
        &format!("{JOBS}?delay=9"),
        &[&app[..], &[("X-Tag", tag.as_str())]].concat(),
        b"p",
    );
    r.assert_err(400, "too big tag");
    add(&mut t.conn(), "delay=9", &[], &[b'p'; 100]);
    // A declared body over the limit is refused from the head, before `100 Continue`.
    t.refused("POST", &format!("{JOBS}?delay=9"), &app, 101).assert_err(413, "too big message");
    // The job queue of a topic that does not exist.
    t.once("POST", "/v1/jobs/app1/none/v1", &app, b"").assert_err(400, "invalid topic");
}

#[test]
fn missing_topic_is_400_with_an_apps_file() {
    let dir = DataDir::new("jobs-file");
    let apps = format!("{}.apps.json", dir.as_str());
    std::fs::write(
        &apps,
        r#"{"admin":{"appid":"ops","secret":"s0"},
            "apps":[{"appid":"app1","secret":"s1","topics":["t"],"subscriptions":[],"groups":[]}]}"#,
    )
    .unwrap();
    let s = start_in(&dir, &[("ESUB_APPS_FILE", &apps)]);
    let t = Topics { server: s, dir };
    let h = [("Appid", "app1"), ("Pubkey", "s1")];
    t.once("POST", "/v1/jobs/u/v1?delay=1", &h, b"p").assert_err(401, "authorization fails");
    t.once("POST", "/v1/jobs/t/v1?delay=1", &h, b"p").assert_err(400, "invalid topic");
    t.once("POST", "/v1/jobs/app1/t/v1", &h, b"").assert_err(401, "authentication fails");
    let _ = std::fs::remove_file(&apps);
}

#[test]
fn cancelled_jobs_never_fire_and_fired_ones_are_409() {
    let t = Topics::start("jobs-cancel", &ENV);
    t.create("app1", "t", "v1", 1);
    t.create("app1", "u", "v1", 1);
    let mut c = t.conn();
    let a = add(&mut c, "delay=1", &[], b"A");
    let b = add(&mut c, "delay=1", &[], b"B");
    assert_eq!(status_jobs(&t), 2);
    cancel(&mut c, JOBS, a).assert_ok(200);
    assert_eq!(status_jobs(&t), 1);
    assert_not_found(&cancel(&mut c, JOBS, a));
    assert_not_found(&cancel(&mut c, "/v1/jobs/u/v1", b));
    wait_latest(&t, 1, Duration::from_secs(1) + SLACK);
    assert_not_found(&cancel(&mut c, JOBS, b));
    assert_eq!(status_jobs(&t), 0);
    // Well past A's due time: only B ever fired.
    thread::sleep(Duration::from_millis(3 * TICK_MS));
    let got = drain(&mut t.conn(), "app1", &format!("{SUB}?group=g"), &[]);
    assert_eq!(got.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(), [b"B".to_vec()]);
}

#[test]
fn pending_jobs_survive_kill_9_and_overdue_ones_fire_at_start_up() {
    let env = [TICK, FAST, ("ESUB_FSYNC", "always")];
    let t = Topics::start("jobs-kill", &env);
    t.create("app1", "t", "v1", 1);
    let mut c = t.conn();
    let early = add(&mut c, "delay=1", &[], b"early");
    add(&mut c, "delay=4", &[], b"late");
    let gone = add(&mut c, "delay=1", &[], b"cancelled");
    cancel(&mut c, JOBS, gone).assert_ok(200);
    let added = Instant::now();
    let Topics { server, dir } = t;
    drop(server); // SIGKILL
    // Past the first job's due time while the server is down.
    thread::sleep(Duration::from_millis(1200).saturating_sub(added.elapsed()));
    let t = Topics { server: start_in(&dir, &env), dir };
    t.wait_stderr("the start-up line with 2 jobs", |l| {
        l.contains("topics store opened") && l.contains(" jobs=2 ")
    });
    let started = Instant::now();
    wait_latest(&t, 1, Duration::from_millis(TICK_MS) + SLACK);
    assert!(started.elapsed() < Duration::from_secs(2), "the overdue job fired at start-up");
    assert_not_found(&cancel(&mut t.conn(), JOBS, early));
    wait_latest(&t, 2, Duration::from_secs(4) + SLACK);
    let got = drain(&mut t.conn(), "app1", &format!("{SUB}?group=g"), &[]);
    let payloads: Vec<&[u8]> = got.iter().map(|r| r.payload.as_slice()).collect();
    assert_eq!(payloads, [&b"early"[..], b"late"]);
}

#[test]
fn no_job_fires_during_the_drain() {
    let env = [TICK, ("ESUB_DRAIN_MS", "2500")];
    let mut t = Topics::start("jobs-drain", &env);
    t.create("app1", "t", "v1", 1);
    let added = Instant::now();
    add(&mut t.conn(), "delay=1", &[], b"after");
    // A request with half its body sent keeps the drain going until ESUB_DRAIN_MS.
    let mut held = t.conn();
    held.send(b"POST /v1/msgs/t/v1 HTTP/1.1\r\nHost: x\r\nAppid: app1\r\nPubkey: pk\r\nContent-Length: 10\r\n\r\nhalf");
    thread::sleep(Duration::from_millis(50));
    t.server.sigterm();
    let st = t.server.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(0));
    assert!(
        added.elapsed() > Duration::from_millis(1000 + 2 * TICK_MS),
        "the drain outlived the due time"
    );
    drop(held);
    let Topics { server, dir } = t;
    drop(server);
    let t = Topics { server: start_in(&dir, &env), dir };
    t.wait_stderr("the job still pending at start-up", |l| {
        l.contains("topics store opened") && l.contains(" jobs=1 ")
    });
    wait_latest(&t, 1, Duration::from_millis(TICK_MS) + SLACK);
}

#[test]
fn cancels_racing_firings_get_exactly_one_outcome() {
    const N: usize = 100;
    let t = Topics::start("jobs-race", &ENV);
    t.create("app1", "t", "v1", 1);
    let mut c = t.conn();
    let start = Instant::now();
    let ids: Vec<i64> =
        (0..N).map(|i| add(&mut c, "delay=1", &[], i.to_string().as_bytes())).collect();
    // From 60 ms before the first job is due: some cancels win, some firings do.
    let cancels_from = start + Duration::from_millis(940);
    // Four clients cancel 25 jobs each, spread around the firing time.
    let answers: Vec<(usize, u16)> = thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|k| {
                let (t, ids) = (&t, &ids);
                s.spawn(move || {
                    let mut c = t.conn();
                    thread::sleep(cancels_from.saturating_duration_since(Instant::now()));
                    let mut out = Vec::new();
                    for i in (k..N).step_by(4) {
                        let r = cancel(&mut c, JOBS, ids[i]);
                        assert!(r.status == 200 || r.status == 409, "cancel: {r:?}");
                        out.push((i, r.status));
                        thread::sleep(Duration::from_millis(4));
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let cancelled: HashSet<usize> =
        answers.iter().filter(|(_, s)| *s == 200).map(|(i, _)| *i).collect();
    let fired_want = N - cancelled.len();
    eprintln!("race: {} cancelled, {fired_want} fired", cancelled.len());
    wait_latest(&t, fired_want as i64, Duration::from_secs(2) + SLACK);
    thread::sleep(Duration::from_millis(3 * TICK_MS));
    let got = drain(&mut t.conn(), "app1", &format!("{SUB}?group=g&batch=1"), &[]);
    let mut fired: HashMap<usize, usize> = HashMap::new();
    for r in &got {
        *fired.entry(String::from_utf8_lossy(&r.payload).parse().unwrap()).or_default() += 1;
    }
    for i in 0..N {
        let f = fired.get(&i).copied().unwrap_or(0);
        let c = usize::from(cancelled.contains(&i));
        assert_eq!(f + c, 1, "job {i}: fired {f} times, cancelled with 200: {}", c == 1);
    }
}
