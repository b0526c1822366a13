//! Topics websockets (API-topics.md 4.3, 5.5, 9): ws pub frames (BINARY and TEXT) answered in
//! order, pipelined, with limits, malformed frames (1007) and oversize frames (1009), checks
//! before the `101`; ws sub frames (plain and `meta=1`), auto and `ack=1` commits, bad acks
//! (1007, 1008), the tag filter, one instance per socket, keepalive and shutdown.

mod common;

use common::topics::{
    Case, Conn, DataDir, FAST, Rec, SLACK, Topics, key_for, partitions_json, pubh, start_in, subh,
    ws_binary, ws_close_after_data, ws_err, ws_frame, ws_meta, ws_ok, ws_quiet, ws_text,
};
use common::ws::{Raw, RawFrame, close_payload, expect_quiet, masked, recv_bytes};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tungstenite::Message;

const PUB: &str = "/v1/ws/msgs/orders/v1";
const SUB: &str = "/v1/ws/msgs/app1/orders/v1";
const HTTP_PUB: &str = "/v1/msgs/orders/v1";
const HTTP_SUB: &str = "/v1/msgs/app1/orders/v1";

/// Publish over HTTP; returns the position.
fn publish(t: &Topics, query: &str, extra: &[(&str, &str)], body: &[u8]) -> (i32, i64) {
    t.conn().publish("app1", &format!("{HTTP_PUB}{query}"), extra, body).pubd()
}

/// A delivered message with the headers a single GET adds.
#[derive(Debug, PartialEq, Eq)]
struct Got {
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
    key: Option<String>,
    tag: Option<String>,
}

/// Every message of `app1/orders/v1` for a fresh `group`, sorted by (partition, offset).
fn read_all(t: &Topics, group: &str) -> Vec<Got> {
    let mut c = t.conn();
    let mut out = Vec::new();
    loop {
        let r = c.sub("app1", &format!("{HTTP_SUB}?group={group}"), &[]);
        if r.status == 204 {
            r.assert_204();
            break;
        }
        let m = r.msg();
        out.push(Got {
            partition: m.partition,
            offset: m.offset,
            payload: m.payload,
            key: r.header("x-key").map(str::to_string),
            tag: r.header("x-tag").map(str::to_string),
        });
        assert!(out.len() < 1000, "read_all does not end");
    }
    out.sort_by_key(|g| (g.partition, g.offset));
    out
}

fn got(p: i32, o: i64, payload: &[u8], key: Option<&str>, tag: Option<&str>) -> Got {
    Got {
        partition: p,
        offset: o,
        payload: payload.to_vec(),
        key: key.map(str::to_string),
        tag: tag.map(str::to_string),
    }
}

/// Several client frames in one write, so the server sees them pipelined.
fn send_all(raw: &mut Raw, frames: &[(bool, Vec<u8>)]) {
    let bytes: Vec<u8> = frames.iter().flat_map(|(text, p)| ws_frame(*text, p)).collect();
    raw.send(&bytes);
}

fn text(s: &str) -> (bool, Vec<u8>) {
    (true, s.as_bytes().to_vec())
}

fn binary(b: &[u8]) -> (bool, Vec<u8>) {
    (false, b.to_vec())
}

// ---------------------------------------------------------------------------------------------
// Ws pub (4.3)
// ---------------------------------------------------------------------------------------------

#[test]
fn binary_and_text_frames_are_answered_in_order_and_stored() {
    let t = Topics::start("ws-pub-kinds", &[FAST]);
    t.create("app1", "orders", "v1", 4);
    let mut ws = t.ws_raw(&format!("{PUB}?key=b"), &[("Appid", "app1"), ("X-Tag", "t=1")]);
    // Key `b` → partition 3, `k3` → 1 (section 2); keyless frames round robin from 0; an empty
    // key is no key.
    let cases: Vec<((bool, Vec<u8>), String)> = vec![
        (binary(b"\x01bin\x00\xff"), ws_ok(3, 0)),
        (text(r#"{"data":"h\u00e9llo","key":"k3","tag":"x;y"}"#), ws_ok(1, 0)),
        (text(r#"{"data":"plain"}"#), ws_ok(0, 0)),
        (text(r#"{"data":"nulls","key":null,"tag":null}"#), ws_ok(1, 1)),
        (text(r#"{"tag":"z","data":"empty key","key":""}"#), ws_ok(2, 0)),
        (binary(b"bin again"), ws_ok(3, 1)),
    ];
    for (frame, want) in &cases {
        send_all(&mut ws, std::slice::from_ref(frame));
        assert_eq!(ws_text(&mut ws), *want, "answer to {frame:?}");
    }
    let want = vec![
        got(0, 0, b"plain", None, None),
        got(1, 0, "héllo".as_bytes(), Some("k3"), Some("x;y")),
        got(1, 1, b"nulls", None, None),
        got(2, 0, b"empty key", None, Some("z")),
        got(3, 0, b"\x01bin\x00\xff", Some("b"), Some("t=1")),
        got(3, 1, b"bin again", Some("b"), Some("t=1")),
    ];
    assert_eq!(read_all(&t, "g"), want);
}

#[test]
fn pipelined_frames_are_answered_in_order_with_consecutive_offsets() {
    let t = Topics::start("ws-pub-pipe", &[FAST]);
    t.create("app1", "orders", "v1", 2);
    let mut ws = t.ws_raw(PUB, &pubh("app1"));
    let frames: Vec<(bool, Vec<u8>)> = (0..50)
        .map(|i| {
            if i % 3 == 0 {
                text(&format!(r#"{{"data":"m{i}"}}"#))
            } else {
                binary(format!("m{i}").as_bytes())
            }
        })
        .collect();
    send_all(&mut ws, &frames);
    // Keyless: one round-robin step per frame, so frame i lands on i % 2 at offset i / 2.
    for i in 0..50u32 {
        assert_eq!(ws_text(&mut ws), ws_ok(i % 2, i64::from(i / 2)), "answer {i}");
    }
    ws_quiet(&mut ws, Duration::from_millis(200));
    assert_eq!(t.partitions("app1", "orders", "v1"), partitions_json(&[(0, 25), (0, 25)]));
    let all = read_all(&t, "g");
    let want: Vec<Got> = {
        let mut v: Vec<Got> = (0..50)
            .map(|i| got(i % 2, i64::from(i / 2), format!("m{i}").as_bytes(), None, None))
            .collect();
        v.sort_by_key(|g| (g.partition, g.offset));
        v
    };
    assert_eq!(all, want);
}

#[test]
fn async_frames_are_answered_once_placed_and_then_readable() {
    let t = Topics::start("ws-pub-async", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    let mut ws = t.ws_raw(&format!("{PUB}?async=1&key=k"), &pubh("app1"));
    let frames: Vec<(bool, Vec<u8>)> = (0..5).map(|i| binary(format!("a{i}").as_bytes())).collect();
    send_all(&mut ws, &frames);
    for i in 0..5 {
        assert_eq!(ws_text(&mut ws), ws_ok(0, i));
    }
    let want: Vec<Got> =
        (0..5).map(|i| got(0, i, format!("a{i}").as_bytes(), Some("k"), None)).collect();
    assert_eq!(read_all(&t, "g"), want);
}

#[test]
fn frames_over_the_limits_get_error_answers_in_order_and_no_offset() {
    let t = Topics::start("ws-pub-limits", &[FAST, ("ESUB_PUB_MAX_BYTES", "1000")]);
    t.create("app1", "orders", "v1", 1);
    let mut ws = t.ws_raw(PUB, &pubh("app1"));
    let x = |n: usize| "x".repeat(n);
    let cases: Vec<((bool, Vec<u8>), String)> = vec![
        (binary(&[b'b'; 1000]), ws_ok(0, 0)),
        (binary(&[b'b'; 1001]), ws_err("too big message")),
        (binary(b""), ws_err("too small message")),
        (text(r#"{"data":""}"#), ws_err("too small message")),
        (text(&format!(r#"{{"data":"{}"}}"#, x(1001))), ws_err("too big message")),
        // The limit counts UTF-8 bytes: 500 two-byte characters fit, 501 do not.
        (text(&format!(r#"{{"data":"{}"}}"#, "é".repeat(500))), ws_ok(0, 1)),
        (text(&format!(r#"{{"data":"{}"}}"#, "é".repeat(501))), ws_err("too big message")),
        (text(&format!(r#"{{"data":"d","key":"{}"}}"#, x(256))), ws_ok(0, 2)),
        (text(&format!(r#"{{"data":"d","key":"{}"}}"#, x(257))), ws_err("too big key")),
        (text(&format!(r#"{{"data":"d","tag":"{}"}}"#, x(1024))), ws_ok(0, 3)),
        (text(&format!(r#"{{"data":"d","tag":"{}"}}"#, x(1025))), ws_err("too big tag")),
        // 4.1's order: size, then key, then tag.
        (
            text(&format!(r#"{{"data":"{}","key":"{}"}}"#, x(1001), x(257))),
            ws_err("too big message"),
        ),
        (text(&format!(r#"{{"data":"","tag":"{}"}}"#, x(1025))), ws_err("too small message")),
        (
            text(&format!(r#"{{"data":"d","key":"{}","tag":"{}"}}"#, x(257), x(1025))),
            ws_err("too big key"),
        ),
        // Up to ESUB_PUB_MAX_BYTES + 4096 a frame is answered, not closed.
        (binary(&[b'b'; 5096]), ws_err("too big message")),
        (binary(b"last"), ws_ok(0, 4)),
    ];
    let frames: Vec<(bool, Vec<u8>)> = cases.iter().map(|(f, _)| f.clone()).collect();
    send_all(&mut ws, &frames);
    for (i, (_, want)) in cases.iter().enumerate() {
        assert_eq!(ws_text(&mut ws), *want, "answer {i}");
    }
    ws_quiet(&mut ws, Duration::from_millis(200));
    assert_eq!(t.partitions("app1", "orders", "v1"), partitions_json(&[(0, 5)]));
}

/// Text frames that are not a 4.3 pub object (or not UTF-8).
const MALFORMED: &[&[u8]] = &[
    b"not json",
    br#"{"data":"x"} trailing"#,
    br#"{"data":"x"}{"data":"y"}"#,
    b"[1]",
    br#"["x"]"#,
    br#""just a string""#,
    b"null",
    b"{}",
    br#"{"key":"k"}"#,
    br#"{"data":1}"#,
    br#"{"data":null}"#,
    br#"{"data":["x"]}"#,
    br#"{"data":{"a":"b"}}"#,
    br#"{"data":"x","key":1}"#,
    br#"{"data":"x","key":["k"]}"#,
    br#"{"data":"x","tag":{}}"#,
    br#"{"data":"x","tag":true}"#,
    br#"{"data":"x","id":5}"#,
    // Not UTF-8.
    b"\xff\xfe",
    b"{\"data\":\"\xc3\"}",
];

/// The next frame (pings skipped) is a close with `code`, then EOF. The reason is not part of
/// the contract for 1007 and 1009.
#[track_caller]
fn expect_close_code(ws: &mut Raw, code: u16, what: &str) {
    match ws.frame_skip_control() {
        RawFrame::Frame(0x88, p) => {
            assert!(p.len() >= 2, "{what}: close without a code");
            assert_eq!(u16::from_be_bytes([p[0], p[1]]), code, "{what}: close payload {p:?}");
        }
        other => panic!("{what}: expected close {code}, got {other:?}"),
    }
    assert_eq!(ws.frame(), RawFrame::Eof, "{what}: socket open after the close");
}

#[test]
fn malformed_text_frames_close_1007() {
    let t = Topics::start("ws-pub-1007", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    for (n, bad) in MALFORMED.iter().enumerate() {
        let what = format!("{:?}", String::from_utf8_lossy(bad));
        let mut ws = t.ws_raw(PUB, &pubh("app1"));
        send_all(&mut ws, &[text(&format!(r#"{{"data":"before {n}"}}"#))]);
        assert_eq!(ws_text(&mut ws), ws_ok(0, n as i64), "{what}");
        send_all(&mut ws, &[(true, bad.to_vec()), text(r#"{"data":"after"}"#)]);
        expect_close_code(&mut ws, 1007, &what);
    }
    // Frames after the bad one were never stored.
    assert_eq!(
        t.partitions("app1", "orders", "v1"),
        partitions_json(&[(0, MALFORMED.len() as i64)])
    );
}

/// 4.3: every frame is answered, in order; a frame that closes the socket comes after the ones
/// before it, which were stored and must get their answers first.
#[test]
fn frames_before_a_closing_frame_are_answered_before_the_close() {
    let t = Topics::start("ws-pub-before-close", &[FAST, ("ESUB_PUB_MAX_BYTES", "1000")]);
    // Wire bytes of the frame that ends the socket, and the close code that must follow.
    let closers: [(&str, Vec<u8>, u16); 4] = [
        ("bad JSON", ws_frame(true, b"not json"), 1007),
        ("non-UTF-8 TEXT", ws_frame(true, b"\xff"), 1007),
        ("oversize frame", ws_frame(false, &[b'x'; 5097]), 1009),
        // The client's close: it still reads until the server's close comes back.
        ("client close", masked(0x88, &close_payload(1000, "bye")), 1000),
    ];
    let mut failures = Vec::new();
    for (n, (what, closer, code)) in closers.iter().enumerate() {
        // One topic per case, so each starts at offset 0.
        let topic = format!("t{n}");
        t.create("app1", &topic, "v1", 1);
        let mut ws = t.ws_raw(&format!("/v1/ws/msgs/{topic}/v1"), &pubh("app1"));
        let mut bytes = [ws_frame(false, b"a"), ws_frame(false, b"b")].concat();
        bytes.extend_from_slice(closer);
        ws.send(&bytes);
        let mut answers = Vec::new();
        let close = loop {
            match ws.frame_skip_control() {
                RawFrame::Frame(0x81, p) => answers.push(String::from_utf8(p).unwrap()),
                RawFrame::Frame(0x88, p) => break u16::from_be_bytes([p[0], p[1]]),
                other => panic!("{what}: unexpected {other:?}"),
            }
        };
        assert_eq!(ws.frame(), RawFrame::Eof, "{what}: socket open after the close");
        let want = vec![ws_ok(0, 0), ws_ok(0, 1)];
        if answers != want || close != *code {
            failures.push(format!(
                "{what}: answers {answers:?} then close {close} (want {want:?} then {code}); \
                 partitions after the close: {}",
                t.partitions("app1", &topic, "v1")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_frame_over_the_limit_plus_4096_closes_1009() {
    let t = Topics::start("ws-pub-1009", &[FAST, ("ESUB_PUB_MAX_BYTES", "1000")]);
    t.create("app1", "orders", "v1", 1);
    for (i, is_text) in [false, true].into_iter().enumerate() {
        let mut ws = t.ws_raw(PUB, &pubh("app1"));
        send_all(&mut ws, &[binary(b"ok")]);
        assert_eq!(ws_text(&mut ws), ws_ok(0, i as i64));
        send_all(&mut ws, &[(is_text, vec![b'x'; 5097])]);
        expect_close_code(&mut ws, 1009, if is_text { "TEXT" } else { "BINARY" });
    }
    assert_eq!(t.partitions("app1", "orders", "v1"), partitions_json(&[(0, 2)]));
}

#[test]
fn pub_checks_before_the_upgrade_are_http_errors() {
    let t = Topics::start("ws-pub-refused", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    let key257 = format!("{PUB}?key={}", "k".repeat(257));
    let tag1025 = "t".repeat(1025);
    let app = ("Appid", "app1");
    let cases: Vec<Case> = vec![
        (PUB.into(), vec![], 401, "auth with empty identity or key"),
        (format!("{PUB}?appid="), vec![], 401, "auth with empty identity or key"),
        (PUB.into(), vec![("Appid", "")], 401, "auth with empty identity or key"),
        (PUB.into(), vec![("Appid", "a.b")], 401, "authentication fails"),
        ("/v1/ws/msgs/bad.topic/v1".into(), vec![app], 400, "illegal topic"),
        (format!("/v1/ws/msgs/{}/v1", "t".repeat(65)), vec![app], 400, "illegal topic"),
        ("/v1/ws/msgs/orders/v1234567890123456".into(), vec![app], 400, "illegal version"),
        ("/v1/ws/msgs/orders/v.1".into(), vec![app], 400, "illegal version"),
        // Names before auth, auth before key and tag, key before tag.
        ("/v1/ws/msgs/bad.topic/v1".into(), vec![], 400, "illegal topic"),
        (key257.clone(), vec![], 401, "auth with empty identity or key"),
        (key257.clone(), vec![app], 400, "too big key"),
        (key257, vec![app, ("X-Tag", &tag1025)], 400, "too big key"),
        (PUB.into(), vec![app, ("X-Tag", &tag1025)], 400, "too big tag"),
    ];
    for (path, headers, status, text) in &cases {
        let r = t.ws_refused(path, headers);
        assert_eq!(
            (r.status, r.body_str()),
            (*status, format!(r#"{{"errmsg":"{text}"}}"#)),
            "{path} {headers:?}"
        );
        r.assert_err(*status, text);
    }
    // The limits at their edges upgrade.
    let mut ws =
        t.ws_raw(&format!("{PUB}?key={}", "k".repeat(256)), &[app, ("X-Tag", &"t".repeat(1024))]);
    send_all(&mut ws, &[binary(b"edge")]);
    assert_eq!(ws_text(&mut ws), ws_ok(0, 0));
    assert_eq!(t.partitions("app1", "orders", "v1"), partitions_json(&[(0, 1)]));
}

#[test]
fn open_mode_ws_pub_creates_a_missing_topic() {
    let t = Topics::start("ws-pub-create", &[FAST, ("ESUB_DEFAULT_PARTITIONS", "3")]);
    let mut ws = t.ws_raw("/v1/ws/msgs/fresh/v1?appid=app1", &[]);
    send_all(&mut ws, &[binary(b"m0"), binary(b"m1")]);
    assert_eq!(ws_text(&mut ws), ws_ok(0, 0));
    assert_eq!(ws_text(&mut ws), ws_ok(1, 0));
    assert_eq!(t.partitions("app1", "fresh", "v1"), partitions_json(&[(0, 1), (0, 1), (0, 0)]));
}

// ---------------------------------------------------------------------------------------------
// Identity in file mode (1.1)
// ---------------------------------------------------------------------------------------------

const APPS: &str = r#"{"admin": {"appid": "ops", "secret": "s0"},
 "apps": [
  {"appid": "app1", "secret": "s1", "topics": ["orders"], "subscriptions": [], "groups": ["billing"]},
  {"appid": "app2", "secret": "s2", "topics": ["events"], "subscriptions": [], "groups": ["g2"]}
 ]}"#;

/// The apps file beside the data dir, removed on drop.
struct AppsFile(PathBuf);

impl Drop for AppsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn file_mode_identity_from_headers_or_query() {
    let dir = DataDir::new("ws-auth");
    let apps = AppsFile(PathBuf::from(format!("{}.apps.json", dir.as_str())));
    std::fs::write(&apps.0, APPS).unwrap();
    let server = start_in(&dir, &[FAST, ("ESUB_APPS_FILE", apps.0.to_str().unwrap())]);
    let t = Topics { server, dir };
    // Missing topic (no auto-creation in file mode): 400 before the upgrade.
    t.ws_refused(&format!("{PUB}?appid=app1&pubkey=s1"), &[]).assert_err(400, "invalid topic");
    t.ws_refused(&format!("{SUB}?group=billing&appid=app1&subkey=s1"), &[])
        .assert_err(400, "invalid topic");
    t.once(
        "POST",
        "/v1/topics/app1/orders/v1?partitions=1",
        &[("Appid", "ops"), ("Pubkey", "s0")],
        b"",
    )
    .assert_ok(201);
    let refusals: Vec<Case> = vec![
        (format!("{PUB}?appid=app1"), vec![], 401, "auth with empty identity or key"),
        (format!("{PUB}?appid=app1&pubkey=bad"), vec![], 401, "authentication fails"),
        (format!("{PUB}?appid=app1&subkey=s1"), vec![], 401, "auth with empty identity or key"),
        (format!("{PUB}?appid=app2&pubkey=s2"), vec![], 401, "authorization fails"),
        (PUB.into(), vec![("Appid", "app1"), ("Pubkey", "s2")], 401, "authentication fails"),
        (format!("{SUB}?group=billing&appid=app1&subkey=bad"), vec![], 401, "authentication fails"),
        (
            format!("{SUB}?group=other&appid=app1&subkey=s1"),
            vec![],
            401,
            "group must be registered before usage",
        ),
        (format!("{SUB}?group=g2&appid=app2&subkey=s2"), vec![], 401, "authorization fails"),
    ];
    for (path, headers, status, text) in &refusals {
        t.ws_refused(path, headers).assert_err(*status, text);
    }
    // Query identity.
    let mut ws = t.ws_raw(&format!("{PUB}?appid=app1&pubkey=s1"), &[]);
    send_all(&mut ws, &[binary(b"by query")]);
    assert_eq!(ws_text(&mut ws), ws_ok(0, 0));
    // Header identity wins over a wrong query pair.
    let mut ws =
        t.ws_raw(&format!("{PUB}?appid=app2&pubkey=bad"), &[("Appid", "app1"), ("Pubkey", "s1")]);
    send_all(&mut ws, &[binary(b"by header")]);
    assert_eq!(ws_text(&mut ws), ws_ok(0, 1));
    let mut sub = t.ws_raw(&format!("{SUB}?group=billing&appid=app1&subkey=s1"), &[]);
    assert_eq!(ws_binary(&mut sub), b"by query");
    assert_eq!(ws_binary(&mut sub), b"by header");
}

// ---------------------------------------------------------------------------------------------
// Ws sub (5.5)
// ---------------------------------------------------------------------------------------------

fn sub_path(query: &str) -> String {
    format!("{SUB}?{query}")
}

#[test]
fn each_message_is_one_binary_frame_and_meta_adds_the_record_head() {
    let t = Topics::start("ws-sub-frames", &[FAST]);
    t.create("app1", "orders", "v1", 2);
    // Keyless pubs alternate partitions 0, 1, 0, 1; payloads are opaque (valid UTF-8 or not,
    // whatever the first byte) and always come as BINARY frames.
    let payloads: [&[u8]; 4] = [b"\x01first", b"{\"json\":1}", b"\x00\xff\x00", b"text"];
    let mut want = Vec::new();
    for (i, body) in payloads.iter().enumerate() {
        let pos = publish(&t, "", &[("X-Tag", "tg")], body);
        assert_eq!(pos, ((i % 2) as i32, (i / 2) as i64));
        want.push(Rec::new(pos.0, pos.1, body));
    }
    let mut plain = t.ws_raw(&sub_path("group=g"), &subh("app1"));
    let mut seen: Vec<Vec<u8>> = (0..4).map(|_| ws_binary(&mut plain)).collect();
    ws_quiet(&mut plain, Duration::from_millis(300));
    let mut all: Vec<Vec<u8>> = want.iter().map(|r| r.payload.clone()).collect();
    seen.sort();
    all.sort();
    assert_eq!(seen, all, "plain frames are exactly the payloads, no tag or key bytes");

    let mut meta = t.ws_raw(&sub_path("group=m&meta=1"), &subh("app1"));
    let mut recs: Vec<Rec> = (0..4).map(|_| ws_meta(&mut meta)).collect();
    ws_quiet(&mut meta, Duration::from_millis(300));
    // Each partition in offset order.
    for p in 0..2 {
        let offs: Vec<i64> = recs.iter().filter(|r| r.partition == p).map(|r| r.offset).collect();
        assert_eq!(offs, vec![0, 1], "partition {p} order in {recs:?}");
    }
    recs.sort_by_key(|r| (r.partition, r.offset));
    want.sort_by_key(|r| (r.partition, r.offset));
    assert_eq!(recs, want);
    // Live messages are pushed too.
    publish(&t, "?key=live", &[], b"live");
    let live = ws_meta(&mut meta);
    assert_eq!(live.payload, b"live");
    assert_eq!(ws_binary(&mut plain), b"live");
}

#[test]
fn auto_mode_commits_on_write_and_a_reconnect_resumes_after() {
    let t = Topics::start("ws-sub-auto", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    for i in 0..3 {
        publish(&t, "", &[], format!("m{i}").as_bytes());
    }
    let mut ws = t.ws_join(&sub_path("group=g&meta=1"), &subh("app1"));
    for i in 0..3 {
        assert_eq!(ws_meta(&mut ws), Rec::new(0, i, format!("m{i}").as_bytes()));
    }
    // Client data frames mean nothing in auto mode.
    ws.send(&ws_frame(true, b"not an ack"));
    ws.send(&ws_frame(false, b"\x00"));
    ws_quiet(&mut ws, Duration::from_millis(200));
    drop(ws);
    for i in 3..5 {
        publish(&t, "", &[], format!("m{i}").as_bytes());
    }
    let mut ws = t.ws_join(&sub_path("group=g&meta=1"), &subh("app1"));
    assert_eq!(ws_meta(&mut ws), Rec::new(0, 3, b"m3"));
    assert_eq!(ws_meta(&mut ws), Rec::new(0, 4, b"m4"));
    ws_quiet(&mut ws, Duration::from_millis(200));
    // A client close frame is answered and ends the instance; an HTTP consumer continues.
    ws.send(&masked(0x88, &close_payload(1000, "")));
    match ws.frame_skip_control() {
        RawFrame::Frame(0x88, p) => assert_eq!(&p[..2], &1000u16.to_be_bytes(), "{p:?}"),
        other => panic!("expected the close echoed, got {other:?}"),
    }
    publish(&t, "", &[], b"m5");
    let (mut c, r) = common::topics::join(&t, "app1", &format!("{HTTP_SUB}?group=g"), &[]);
    assert_eq!(r.msg(), Rec::new(0, 5, b"m5"));
    c.sub("app1", &format!("{HTTP_SUB}?group=g"), &[]).assert_204();
}

/// One ack frame.
fn ack(p: i32, o: i64) -> Vec<u8> {
    format!(r#"[{{"partition":{p},"offset":{o}}}]"#).into_bytes()
}

#[test]
fn ack_mode_commits_only_what_is_acked() {
    let t = Topics::start("ws-sub-ack", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    for i in 0..4 {
        publish(&t, "", &[], format!("m{i}").as_bytes());
    }
    let path = sub_path("group=g&meta=1&ack=1");
    let mut ws = t.ws_join(&path, &subh("app1"));
    for i in 0..4 {
        assert_eq!(ws_meta(&mut ws), Rec::new(0, i, format!("m{i}").as_bytes()));
    }
    drop(ws);
    // Nothing acked: the same messages again.
    let mut ws = t.ws_join(&path, &subh("app1"));
    for i in 0..4 {
        assert_eq!(ws_meta(&mut ws), Rec::new(0, i, format!("m{i}").as_bytes()));
    }
    // BINARY frames are ignored; a lower ack after a higher one is ignored.
    ws.send(&ws_frame(false, b"junk"));
    ws.send(&ws_frame(true, &ack(0, 1)));
    ws.send(&ws_frame(true, &ack(0, 0)));
    ws.send(&ws_frame(true, b"[]"));
    ws_quiet(&mut ws, Duration::from_millis(200));
    drop(ws);
    let mut ws = t.ws_join(&path, &subh("app1"));
    assert_eq!(ws_meta(&mut ws), Rec::new(0, 2, b"m2"));
    assert_eq!(ws_meta(&mut ws), Rec::new(0, 3, b"m3"));
    // Acks as a list, -1 included.
    ws.send(&ws_frame(true, br#"[{"partition":0,"offset":-1},{"partition":0,"offset":3}]"#));
    ws_quiet(&mut ws, Duration::from_millis(200));
    drop(ws);
    publish(&t, "", &[], b"m4");
    // The HTTP side sees the same commits (auto mode here).
    let (mut c, r) = common::topics::join(&t, "app1", &format!("{HTTP_SUB}?group=g"), &[]);
    assert_eq!(r.msg(), Rec::new(0, 4, b"m4"));
    c.sub("app1", &format!("{HTTP_SUB}?group=g"), &[]).assert_204();
}

#[test]
fn bad_ack_frames_close_1007_or_1008_and_apply_nothing() {
    let t = Topics::start("ws-sub-badack", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    for i in 0..4 {
        publish(&t, "", &[], format!("m{i}").as_bytes());
    }
    let path = sub_path("group=g&ack=1");
    let malformed: &[&[u8]] = &[
        b"not json",
        b"{}",
        br#"{"partition":0,"offset":1}"#,
        b"[1]",
        b"[[0,1]]",
        br#"[{"partition":0}]"#,
        br#"[{"offset":1}]"#,
        br#"[{"partition":"0","offset":1}]"#,
        br#"[{"partition":0,"offset":"1"}]"#,
        br#"[{"partition":0,"offset":1.5}]"#,
        br#"[{"partition":0,"offset":null}]"#,
        b"\xff\xfe",
    ];
    for bad in malformed {
        let mut ws = t.ws_join(&path, &subh("app1"));
        ws.send(&ws_frame(true, bad));
        let data = ws_close_after_data(&mut ws, 1007, None);
        assert!(data <= 4, "{data} data frames");
    }
    let refused: &[(&[u8], &str)] = &[
        (br#"[{"partition":0,"offset":4}]"#, "ack with bad offset"),
        (br#"[{"partition":0,"offset":99}]"#, "ack with bad offset"),
        (br#"[{"partition":0,"offset":-2}]"#, "ack with bad offset"),
        (br#"[{"partition":1,"offset":0}]"#, "ack with bad partition"),
        (br#"[{"partition":-1,"offset":0}]"#, "ack with bad partition"),
        // All pairs are checked before any applies.
        (br#"[{"partition":0,"offset":2},{"partition":0,"offset":4}]"#, "ack with bad offset"),
    ];
    for (bad, reason) in refused {
        let mut ws = t.ws_join(&path, &subh("app1"));
        ws.send(&ws_frame(true, bad));
        ws_close_after_data(&mut ws, 1008, Some(reason));
    }
    // Nothing was committed: an auto-mode reader starts at 0.
    let (_c, r) = common::topics::join(&t, "app1", &format!("{HTTP_SUB}?group=g"), &[]);
    assert_eq!(r.msg(), Rec::new(0, 0, b"m0"));
}

#[test]
fn tag_filter_on_the_upgrade() {
    let t = Topics::start("ws-sub-tag", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    let tags = ["a", "", "b;c", "x", "c", "cc"];
    for (i, tag) in tags.iter().enumerate() {
        let h: Vec<(&str, &str)> = if tag.is_empty() { vec![] } else { vec![("X-Tag", tag)] };
        publish(&t, "", &h, format!("m{i}").as_bytes());
    }
    let mut ws = t.ws_join(&sub_path("group=g&meta=1"), &[("Appid", "app1"), ("X-Tag", "c;;zz")]);
    assert_eq!(ws_meta(&mut ws), Rec::new(0, 2, b"m2"));
    assert_eq!(ws_meta(&mut ws), Rec::new(0, 4, b"m4"));
    ws_quiet(&mut ws, Duration::from_millis(300));
    drop(ws);
    // Skipped messages were committed with the delivered ones (auto mode).
    publish(&t, "", &[], b"m6");
    let (_c, r) = common::topics::join(&t, "app1", &format!("{HTTP_SUB}?group=g"), &[]);
    assert_eq!(r.msg(), Rec::new(0, 6, b"m6"));
}

#[test]
fn a_ws_sub_is_one_instance_of_its_group() {
    let t = Topics::start("ws-sub-instance", &[FAST]);
    t.create("app1", "orders", "v1", 2);
    let mut ws = t.ws_raw(&sub_path("group=g&meta=1"), &subh("app1"));
    let mut http = t.conn();
    http.sub("app1", &format!("{HTTP_SUB}?group=g"), &[]).assert_204();
    // Two live instances on P=2: a third is refused before the upgrade.
    t.ws_refused(&sub_path("group=g"), &subh("app1"))
        .assert_err(400, "consumers more than available partitions");
    let (k0, k1) = (key_for(0, 2), key_for(1, 2));
    for i in 0..3 {
        publish(&t, &format!("?key={k0}"), &[], format!("p0m{i}").as_bytes());
        publish(&t, &format!("?key={k1}"), &[], format!("p1m{i}").as_bytes());
    }
    // Join order: the socket is instance 0 (partition 0), the HTTP connection instance 1.
    for i in 0..3 {
        assert_eq!(ws_meta(&mut ws), Rec::new(0, i, format!("p0m{i}").as_bytes()));
    }
    ws_quiet(&mut ws, Duration::from_millis(300));
    let got = common::topics::drain(&mut http, "app1", &format!("{HTTP_SUB}?group=g"), &[]);
    let want: Vec<Rec> = (0..3).map(|i| Rec::new(1, i, format!("p1m{i}").as_bytes())).collect();
    assert_eq!(got, want);
    // The socket closes: its partition moves to the HTTP instance.
    drop(ws);
    publish(&t, &format!("?key={k0}"), &[], b"p0m3");
    let deadline = Instant::now() + common::POLL_DEADLINE;
    loop {
        let r = http.sub("app1", &format!("{HTTP_SUB}?group=g"), &[]);
        if r.status == 200 {
            assert_eq!(r.msg(), Rec::new(0, 3, b"p0m3"));
            break;
        }
        r.assert_204();
        assert!(Instant::now() < deadline, "partition 0 never moved to the HTTP instance");
    }
}

#[test]
fn sub_checks_before_the_upgrade_are_http_errors() {
    let t = Topics::start("ws-sub-refused", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    let app = ("Appid", "app1");
    let cases: Vec<Case> = vec![
        (SUB.into(), vec![app], 400, "illegal group"),
        (sub_path("group="), vec![app], 400, "illegal group"),
        (sub_path("group=a.b"), vec![app], 400, "illegal group"),
        ("/v1/ws/msgs/a.b/orders/v1?group=g".into(), vec![app], 400, "invalid appid"),
        ("/v1/ws/msgs/app1/or.ders/v1?group=g".into(), vec![app], 400, "illegal topic"),
        ("/v1/ws/msgs/app1/orders/v.1?group=g".into(), vec![app], 400, "illegal version"),
        (sub_path("group=g&reset=latest"), vec![app], 400, "illegal reset"),
        (sub_path("group=g"), vec![], 401, "auth with empty identity or key"),
        (sub_path("group=g&appid="), vec![], 401, "auth with empty identity or key"),
        (sub_path("group=g"), vec![("Appid", "a b")], 401, "authentication fails"),
        (sub_path("group=g&q=foo"), vec![app], 400, "invalid shadow name"),
        (sub_path("group=g&q=retry"), vec![app], 400, "register shadow first"),
        // Names, then reset, then auth.
        (sub_path("group=a.b&reset=x"), vec![], 400, "illegal group"),
        (sub_path("group=g&reset=x"), vec![], 400, "illegal reset"),
    ];
    for (path, headers, status, text) in &cases {
        let r = t.ws_refused(path, headers);
        assert_eq!(
            (r.status, r.body_str()),
            (*status, format!(r#"{{"errmsg":"{text}"}}"#)),
            "{path} {headers:?}"
        );
        r.assert_err(*status, text);
    }
    // Query identity works for the sub side too.
    publish(&t, "", &[], b"m0");
    let mut ws = t.ws_join(&sub_path("group=g&appid=app1&reset=newest&meta=1"), &[]);
    ws_quiet(&mut ws, Duration::from_millis(200));
    publish(&t, "", &[], b"m1");
    assert_eq!(ws_meta(&mut ws), Rec::new(0, 1, b"m1"));
}

// ---------------------------------------------------------------------------------------------
// Keepalive and shutdown (5.5, 9)
// ---------------------------------------------------------------------------------------------

/// With `ESUB_PING_FREQUENCY=2`: a ping after about 1 s, then close 1001 after 2 s of silence.
#[track_caller]
fn silent_socket_is_pinged_then_closed(mut ws: Raw, opened: Instant) {
    match ws.frame() {
        RawFrame::Frame(0x89, _) => {}
        other => panic!("expected a ping first, got {other:?}"),
    }
    let pinged = opened.elapsed();
    assert!(
        pinged >= Duration::from_millis(900) && pinged <= Duration::from_secs(1) + SLACK,
        "ping after {pinged:?}"
    );
    ws.expect_close(1001, Some("keepalive timeout"));
    let closed = opened.elapsed();
    assert!(
        closed >= Duration::from_millis(1900) && closed <= Duration::from_secs(3) + SLACK,
        "closed after {closed:?}"
    );
}

#[test]
fn keepalive_pings_and_closes_silent_sockets() {
    let t = Topics::start("ws-keepalive", &[FAST, ("ESUB_PING_FREQUENCY", "2")]);
    t.create("app1", "orders", "v1", 1);
    t.create("app1", "events", "v1", 1);
    let opened = Instant::now();
    let sub = t.ws_raw(&sub_path("group=g"), &subh("app1"));
    let publ = t.ws_raw(PUB, &pubh("app1"));
    // A client that answers pings (tungstenite does, while it reads) stays past 2.5 periods.
    let mut live = t.ws("/v1/ws/msgs/app1/events/v1?group=g", &subh("app1"));
    let liver = std::thread::spawn(move || {
        expect_quiet(&mut live, Duration::from_secs(5));
        live
    });
    let subber = std::thread::spawn(move || silent_socket_is_pinged_then_closed(sub, opened));
    silent_socket_is_pinged_then_closed(publ, opened);
    subber.join().expect("sub socket checks");
    let mut live = liver.join().expect("live socket checks");
    t.conn().publish("app1", "/v1/msgs/events/v1", &[], b"still here").pubd();
    assert_eq!(recv_bytes(&mut live), b"still here");
    live.send(Message::Close(None)).unwrap();
}

#[test]
fn sigterm_answers_received_pub_frames_then_closes_1001() {
    let t = Topics::start("ws-sigterm", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    t.create("app1", "events", "v1", 1);
    let mut sub = t.ws_raw("/v1/ws/msgs/app1/events/v1?group=g", &subh("app1"));
    let mut publ = t.ws_raw(PUB, &pubh("app1"));
    let frames: Vec<(bool, Vec<u8>)> =
        (0..20).map(|i| binary(format!("m{i}").as_bytes())).collect();
    send_all(&mut publ, &frames);
    // The first answer proves the server has read the frames (one small write, one read).
    assert_eq!(ws_text(&mut publ), ws_ok(0, 0));
    t.sigterm();
    for i in 1..20 {
        assert_eq!(ws_text(&mut publ), ws_ok(0, i), "answer {i} after SIGTERM");
    }
    publ.expect_close(1001, Some("going away"));
    sub.expect_close(1001, Some("going away"));
    let Topics { mut server, dir } = t;
    let st = server.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(0));
    drop(server);
    let t = Topics { server: start_in(&dir, &[FAST]), dir };
    assert_eq!(t.partitions("app1", "orders", "v1"), partitions_json(&[(0, 20)]));
    let mut c: Conn = t.conn();
    let got = common::topics::drain(&mut c, "app1", &format!("{HTTP_SUB}?group=g"), &[]);
    let want: Vec<Rec> = (0..20).map(|i| Rec::new(0, i, format!("m{i}").as_bytes())).collect();
    assert_eq!(got, want);
}
