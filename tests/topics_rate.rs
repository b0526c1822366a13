//! Topics rate limits and punishment (API-topics.md 1, 1.3): the IP bucket (first, `/alive`
//! exempt, refills), the appid bucket (after auth only, batch pubs by record count, ws frames),
//! 429 with `Retry-After`, and `ESUB_PUNISH_MS` delaying errors without blocking other clients.

mod common;

use common::POLL_DEADLINE;
use common::topics::{
    DataDir, Headers, Resp, Topics, partitions_json, pubh, rec, ws_err, ws_frame, ws_ok, ws_text,
};
use std::thread;
use std::time::{Duration, Instant};

const PUB: &str = "/v1/msgs/t/v1";

/// A 429 as 1.3 has it: `quota exceeded` with `Retry-After: secs`.
#[track_caller]
fn assert_quota(r: &Resp, secs: &str) {
    r.assert_err(429, "quota exceeded");
    assert_eq!(r.header("retry-after"), Some(secs), "Retry-After of {r:?}");
}

/// `(oldest, latest)` of a one-partition topic, asked as the open-mode appid `ops` (whose bucket
/// the test does not spend); the body must be exactly that.
#[track_caller]
fn assert_latest(t: &Topics, owner_topic_ver: &str, latest: i64) {
    let path = format!("/v1/partitions/{owner_topic_ver}");
    let r = t.once("GET", &path, &[("Appid", "ops"), ("Pubkey", "k")], b"");
    r.assert_json(200, &partitions_json(&[(0, latest)]));
}

#[test]
fn the_ip_bucket_refuses_past_its_burst_spares_alive_and_refills() {
    let t = Topics::start("rate_ip", &[("ESUB_RATE_IP", "2")]);
    let mut c = t.conn();
    // The first pub creates the topic and runs again after it: still one request, one unit.
    let before_first = Instant::now();
    c.publish("app1", PUB, &[], b"m0").assert_ok(201);
    c.publish("app1", PUB, &[], b"m1").assert_ok(201);
    // Over: refused from its head, so the unread body closes the connection.
    let r = c.publish("app1", PUB, &[], b"m2");
    assert_quota(&r, "1");
    assert!(r.connection_close(), "{r:?}");
    // `/alive` is never limited.
    let mut a = t.conn();
    for _ in 0..5 {
        a.req("GET", "/alive", &[], b"").assert_ok(200);
    }
    // Every `/v1/` request is charged, before its route: a 404 path is refused too. Without a
    // body the connection is kept.
    let r = a.req("GET", "/v1/nope", &[], b"");
    assert_quota(&r, "1");
    assert!(!r.connection_close(), "{r:?}");
    a.req("GET", "/alive", &[], b"").assert_ok(200);
    // Refusals pour nothing: the first unit has leaked out 500 ms after it was poured, then a
    // request fits; m2 was not stored, so this one takes offset 2.
    let deadline = Instant::now() + POLL_DEADLINE;
    let r = loop {
        let r = t.conn().publish("app1", PUB, &[], b"m3");
        if r.status != 429 {
            break r;
        }
        assert_quota(&r, "1");
        assert!(Instant::now() < deadline, "the IP bucket never refilled");
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(r.pubd(), (0, 2));
    let waited = r.done_at - before_first;
    assert!(waited >= Duration::from_millis(500), "refilled after {waited:?}, before 500 ms");
}

#[test]
fn the_ip_bucket_keys_on_x_forwarded_for_only_when_trusted() {
    let env = [("ESUB_RATE_IP", "1"), ("ESUB_RATE_IP_BURST", "2"), ("ESUB_TRUST_XFF", "1")];
    let t = Topics::start("rate_xff", &env);
    let mut c = t.conn();
    let from = |ip: &'static str| [("X-Forwarded-For", ip)];
    for _ in 0..2 {
        c.req("GET", "/v1/nope", &from("10.0.0.1, 127.0.0.1"), b"").assert_err(404, "Not Found");
    }
    // Burst 2 spent at one unit a second: the next fits in a second.
    assert_quota(&c.req("GET", "/v1/nope", &from("10.0.0.1"), b""), "1");
    c.req("GET", "/v1/nope", &from("10.0.0.2"), b"").assert_err(404, "Not Found");

    let t = Topics::start("rate_noxff", &[("ESUB_RATE_IP", "1")]);
    let mut c = t.conn();
    c.req("GET", "/v1/nope", &from("10.0.0.3"), b"").assert_err(404, "Not Found");
    // Untrusted, the header is ignored: the socket peer's bucket is spent.
    assert_quota(&c.req("GET", "/v1/nope", &from("10.0.0.4"), b""), "1");
}

const APPS: &str = r#"{"admin": {"appid": "ops", "secret": "s0"},
 "apps": [{"appid": "app1", "secret": "s1", "topics": ["orders"],
           "subscriptions": [], "groups": []}]}"#;

#[test]
fn a_strangers_failed_auth_does_not_spend_an_apps_budget() {
    let dir = DataDir::new("rate_appid_auth");
    let apps = format!("{}.apps.json", dir.as_str());
    std::fs::write(&apps, APPS).unwrap();
    let env = [("ESUB_APPS_FILE", apps.as_str()), ("ESUB_RATE_APPID", "1")];
    let t = Topics { server: common::topics::start_in(&dir, &env), dir };
    let admin = [("Appid", "ops"), ("Pubkey", "s0")];
    t.once("POST", "/v1/topics/app1/orders/v1?partitions=1", &admin, b"").assert_ok(201);
    let path = "/v1/msgs/orders/v1";
    // Refused from their heads, so each closes its connection.
    for _ in 0..20 {
        let r = t.once("POST", path, &[("Appid", "app1"), ("Pubkey", "wrong")], b"x");
        r.assert_err(401, "authentication fails");
    }
    let owner = [("Appid", "app1"), ("Pubkey", "s1")];
    // A wrong topic fails authorization: not charged either.
    let r = t.once("POST", "/v1/msgs/other/v1", &owner, b"x");
    r.assert_err(401, "authorization fails");
    // The app's one unit is still there; the admin's request spent the admin's own.
    assert_eq!(t.once("POST", path, &owner, b"m0").pubd(), (0, 0));
    assert_quota(&t.once("POST", path, &owner, b"m1"), "1");
    let _ = std::fs::remove_file(&apps);
}

#[test]
fn a_batch_pub_costs_its_record_count_capped_at_the_burst() {
    let env = [("ESUB_RATE_APPID", "1"), ("ESUB_RATE_APPID_BURST", "5")];
    let t = Topics::start("rate_batch", &env);
    let batch = |n: usize| -> Vec<u8> {
        (0..n).flat_map(|i| rec(b"", b"", format!("b{i}").as_bytes())).collect()
    };
    let mut c = t.conn();
    let path = format!("{PUB}?batch=1");
    // 1 (creating the topic), then 3 records: 4 of 5.
    assert_eq!(c.publish("app1", PUB, &[], b"m0").pubd(), (0, 0));
    c.publish("app1", &path, &[], &batch(3)).assert_json(
        201,
        r#"{"ok":1,"msgs":[{"partition":0,"offset":1},{"partition":0,"offset":2},{"partition":0,"offset":3}]}"#,
    );
    // 2 more would overflow: refused after its body is read (the connection is kept), and
    // nothing is stored.
    let r = c.publish("app1", &path, &[], &batch(2));
    assert_quota(&r, "1");
    assert!(!r.connection_close(), "{r:?}");
    assert_eq!(c.publish("app1", PUB, &[], b"m4").pubd(), (0, 4));
    // A single pub is refused from its head (closing the connection).
    assert_quota(&c.publish("app1", PUB, &[], b"m5"), "1");
    // Another app: a batch above the burst costs the burst, so it fits an empty bucket, once.
    let mut c = t.conn();
    let p2 = "/v1/msgs/t2/v1?batch=1";
    let r = c.publish("app2", p2, &[], &batch(10));
    assert_eq!(r.status, 201, "{r:?}");
    assert_quota(&c.publish("app2", p2, &[], &batch(1)), "1");
    assert_latest(&t, "app1/t/v1", 5);
    assert_latest(&t, "app2/t2/v1", 10);
}

#[test]
fn ws_pub_frames_are_charged_one_each_after_the_upgrade() {
    let env = [("ESUB_RATE_APPID", "1"), ("ESUB_RATE_APPID_BURST", "3")];
    let t = Topics::start("rate_ws", &env);
    // The upgrade (creating the topic, then running again) is one request: 1 of 3. Two frames
    // fit and the third is refused.
    let mut ws = t.ws_raw("/v1/ws/msgs/t/v1", &pubh("app1"));
    for _ in 0..3 {
        ws.send(&ws_frame(false, b"m"));
    }
    assert_eq!(ws_text(&mut ws), ws_ok(0, 0));
    assert_eq!(ws_text(&mut ws), ws_ok(0, 1));
    assert_eq!(ws_text(&mut ws), ws_err("quota exceeded"));
    // The socket stays; once the bucket leaks, frames are stored again (the refused one was
    // not: offsets go on from 2).
    let deadline = Instant::now() + POLL_DEADLINE;
    loop {
        ws.send(&ws_frame(false, b"m"));
        let got = ws_text(&mut ws);
        if got == ws_ok(0, 2) {
            break;
        }
        assert_eq!(got, ws_err("quota exceeded"));
        assert!(Instant::now() < deadline, "the appid bucket never refilled");
        thread::sleep(Duration::from_millis(20));
    }
    assert_latest(&t, "app1/t/v1", 3);
}

/// `ESUB_PUNISH_MS` in ms; the errors below are sent that late.
const PUNISH: u64 = 300;

/// method, path, headers, body, status, error text.
type Row<'a> = (&'a str, &'a str, Headers<'a>, &'a [u8], u16, &'a str);

#[test]
fn punished_errors_come_late_and_close_while_others_are_served() {
    let punish = PUNISH.to_string();
    let env = [("ESUB_PUNISH_MS", punish.as_str()), ("ESUB_WORKERS", "1")];
    let t = Topics::start("rate_punish", &env);
    let later = Duration::from_millis(PUNISH);
    let rows: &[Row] = &[
        ("GET", "/v1/nope", &[], b"", 404, "Not Found"),
        ("POST", "/v1/msgs/bad!/v1", &[("Appid", "app1")], b"x", 400, "illegal topic"),
        ("POST", PUB, &[("Pubkey", "k")], b"x", 401, "auth with empty identity or key"),
        ("PUT", PUB, &[], b"x", 405, "Method Not Allowed"),
    ];
    for &(method, path, headers, body, status, text) in rows {
        let mut c = t.conn();
        let sent = Instant::now();
        c.send_req(method, path, headers, body);
        let r = c.read_resp();
        r.assert_err(status, text);
        let took = r.head_at - sent;
        assert!(took >= later, "{method} {path}: {status} after {took:?}, before {later:?}");
        assert!(r.connection_close(), "{method} {path}: {r:?}");
        if status == 405 {
            assert_eq!(r.allow(), vec!["POST"]);
        }
        c.expect_closed();
    }
    // One worker: while a punished 404 waits on its timer, the loop answers others.
    let mut waiting = t.conn();
    waiting.send_req("GET", "/v1/nope", &[], b"");
    let mut other = t.conn();
    other.req("GET", "/alive", &[], b"").assert_ok(200);
    let served = other.publish("app1", PUB, &[], b"m0");
    assert_eq!(served.pubd(), (0, 0));
    assert!(!served.connection_close(), "a success is not punished: {served:?}");
    let r = waiting.read_resp();
    r.assert_err(404, "Not Found");
    assert!(served.done_at < r.head_at, "the other client waited for the punished one");
}

#[test]
fn a_punished_429_comes_twice_as_late() {
    let punish = PUNISH.to_string();
    let env = [("ESUB_PUNISH_MS", punish.as_str()), ("ESUB_RATE_IP", "1")];
    let t = Topics::start("rate_punish_429", &env);
    t.once("GET", "/alive", &[], b"").assert_ok(200);
    let mut c = t.conn();
    c.req("GET", "/v1/partitions/a/t/v1", &pubh("a"), b"").assert_err(400, "invalid topic");
    let mut c = t.conn();
    let sent = Instant::now();
    c.send_req("GET", "/v1/nope", &[], b"");
    let r = c.read_resp();
    assert_quota(&r, "1");
    let took = r.head_at - sent;
    let later = Duration::from_millis(2 * PUNISH);
    assert!(took >= later, "429 after {took:?}, before {later:?}");
    assert!(r.connection_close(), "{r:?}");
    c.expect_closed();
}
