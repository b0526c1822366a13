//! Topics consuming (API-topics.md 5.2): single-message headers and bytes, `X-Key` escaping,
//! batch TLV bodies and when they end, 204 after the long poll, parked GETs woken by a pub,
//! the tag filter, and the 400s in the contract's order.

mod common;

use common::topics::{Case, Conn, FAST, Rec, SLACK, Topics, decode_records, drain, pos, subh};
use std::time::{Duration, Instant};

const PUB: &str = "/v1/msgs/orders/v1";
const SUB: &str = "/v1/msgs/app1/orders/v1";

fn publish(t: &Topics, query: &str, extra: &[(&str, &str)], body: &[u8]) -> (i32, i64) {
    t.conn().publish("app1", &format!("{PUB}{query}"), extra, body).pubd()
}

#[test]
fn single_message_headers_and_bytes() {
    let t = Topics::start("sub-single", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    // Payload bytes are opaque, whatever the first byte.
    let payload: Vec<u8> = vec![0x01, 0x00, b't', 0x02, 0xff, b'\n'];
    publish(&t, "?key=a%20b%25%2F%C3%A9%7E", &[("X-Tag", "x=1;y")], &payload);
    publish(&t, "", &[], b"plain");
    let mut c = t.conn();
    let r = c.sub("app1", &format!("{SUB}?group=g"), &[]);
    assert_eq!(r.msg(), Rec::new(0, 0, &payload));
    assert_eq!(r.reason, "OK");
    assert_eq!(r.header("content-length"), Some("6"));
    // Bytes outside 0x21-0x7E, and `%`, as %XX upper-case.
    assert_eq!(r.header("x-key"), Some("a%20b%25/%C3%A9~"));
    assert_eq!(r.header("x-tag"), Some("x=1;y"));
    let r = c.sub("app1", &format!("{SUB}?group=g"), &[]);
    assert_eq!(r.msg(), Rec::new(0, 1, b"plain"));
    assert!(!r.has_header("x-key") && !r.has_header("x-tag"), "{r:?}");
    c.sub("app1", &format!("{SUB}?group=g"), &[]).assert_204();
}

#[test]
fn x_key_escapes_control_and_high_bytes() {
    let t = Topics::start("sub-xkey", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    publish(&t, "?key=%00%09%21%7F%80%25%3D", &[], b"m");
    let r = t.conn().sub("app1", &format!("{SUB}?group=g"), &[]);
    assert_eq!(r.msg(), Rec::new(0, 0, b"m"));
    assert_eq!(r.header("x-key"), Some("%00%09!%7F%80%25="));
}

#[test]
fn empty_topic_answers_204_after_the_long_poll() {
    let t = Topics::start("sub-204", &[("ESUB_SUB_TIMEOUT_MS", "400")]);
    t.create("app1", "orders", "v1", 1);
    let mut c = t.conn();
    for _ in 0..2 {
        let start = Instant::now();
        let r = c.sub("app1", &format!("{SUB}?group=g"), &[]);
        let took = start.elapsed();
        r.assert_204();
        assert!(took >= Duration::from_millis(400), "204 too early: {took:?}");
        assert!(took < Duration::from_millis(400) + SLACK, "204 too late: {took:?}");
    }
    // Same for a batch GET.
    let start = Instant::now();
    c.sub("app1", &format!("{SUB}?group=g&batch=5"), &[]).assert_204();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(400) + SLACK,
        "{took:?}"
    );
}

#[test]
fn parked_get_is_answered_by_a_pub() {
    let t = Topics::start("sub-parked", &[("ESUB_SUB_TIMEOUT_MS", "20000")]);
    t.create("app1", "orders", "v1", 1);
    let mut c = t.conn();
    c.send_sub("app1", &format!("{SUB}?group=g"), &[]);
    c.expect_silence(Duration::from_millis(200));
    let start = Instant::now();
    publish(&t, "", &[], b"wake");
    let r = c.read_resp();
    assert_eq!(r.msg(), Rec::new(0, 0, b"wake"));
    assert!(start.elapsed() < SLACK, "woken late: {:?}", start.elapsed());
    // A parked batch GET too.
    c.send_sub("app1", &format!("{SUB}?group=g&batch=3"), &[]);
    c.expect_silence(Duration::from_millis(200));
    publish(&t, "", &[], b"w1");
    let mut head = c.read_head();
    assert_eq!(head.status, 200);
    assert!(head.chunked, "{head:?}");
    let mut body = Vec::new();
    while decode_partial(&body).is_empty() {
        body.extend(c.read_chunk().expect("a record chunk"));
    }
    publish(&t, "", &[], b"w2");
    publish(&t, "", &[], b"w3");
    while let Some(ch) = c.read_chunk() {
        body.extend(ch);
    }
    head.body = body;
    assert_eq!(
        decode_records(&head.body),
        vec![Rec::new(0, 1, b"w1"), Rec::new(0, 2, b"w2"), Rec::new(0, 3, b"w3")]
    );
}

/// Records complete so far in a partial batch body.
fn decode_partial(mut b: &[u8]) -> Vec<Rec> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let len = i32::from_be_bytes(b[12..16].try_into().unwrap()) as usize;
        if b.len() < 16 + len {
            break;
        }
        out.extend(decode_records(&b[..16 + len]));
        b = &b[16 + len..];
    }
    out
}

#[test]
fn batch_body_is_tlv_records_and_ends_at_n() {
    let t = Topics::start(
        "sub-batch-n",
        &[("ESUB_SUB_TIMEOUT_MS", "20000"), ("ESUB_SUB_BATCH_IDLE_MS", "5000")],
    );
    t.create("app1", "orders", "v1", 1);
    let big = vec![7u8; 70_000];
    publish(&t, "", &[], b"r0");
    publish(&t, "", &[], b"x");
    publish(&t, "", &[], &big);
    publish(&t, "", &[], b"r3");
    publish(&t, "", &[], b"r4");
    let mut c = t.conn();
    let start = Instant::now();
    let r = c.sub("app1", &format!("{SUB}?group=g&batch=3"), &[]);
    // Ends at N, long before the idle time.
    assert!(start.elapsed() < SLACK, "batch did not end at N: {:?}", start.elapsed());
    assert_eq!(r.batch(), vec![Rec::new(0, 0, b"r0"), Rec::new(0, 1, b"x"), Rec::new(0, 2, &big)]);
    assert!(!r.has_header("x-partition") && !r.has_header("content-length"), "{r:?}");
    let r = c.sub("app1", &format!("{SUB}?group=g&batch=2"), &[]);
    assert_eq!(r.batch(), vec![Rec::new(0, 3, b"r3"), Rec::new(0, 4, b"r4")]);
}

#[test]
fn batch_ends_after_the_idle_time() {
    let t = Topics::start(
        "sub-batch-idle",
        &[("ESUB_SUB_TIMEOUT_MS", "20000"), ("ESUB_SUB_BATCH_IDLE_MS", "500")],
    );
    t.create("app1", "orders", "v1", 1);
    publish(&t, "", &[], b"a");
    publish(&t, "", &[], b"b");
    let mut c = t.conn();
    c.send_sub("app1", &format!("{SUB}?group=g&batch=10"), &[]);
    let r = c.read_resp();
    assert_eq!(r.batch(), vec![Rec::new(0, 0, b"a"), Rec::new(0, 1, b"b")]);
    let idle = r.done_at - r.head_at;
    assert!(idle >= Duration::from_millis(490), "ended before the idle time: {idle:?}");
    assert!(idle < Duration::from_millis(500) + SLACK, "ended late: {idle:?}");

    // A message during the stream is added and restarts the idle time.
    c.send_sub("app1", &format!("{SUB}?group=g&batch=10"), &[]);
    c.expect_silence(Duration::from_millis(100));
    publish(&t, "", &[], b"c");
    let mut head = c.read_head();
    let mut body = Vec::new();
    while decode_partial(&body).is_empty() {
        body.extend(c.read_chunk().expect("first record"));
    }
    publish(&t, "", &[], b"d");
    let second = Instant::now();
    while let Some(ch) = c.read_chunk() {
        body.extend(ch);
    }
    let end = Instant::now();
    head.body = body;
    assert_eq!(decode_records(&head.body), vec![Rec::new(0, 2, b"c"), Rec::new(0, 3, b"d")]);
    assert!(end - second >= Duration::from_millis(490), "{:?}", end - second);
    assert!(end - second < Duration::from_millis(500) + SLACK, "{:?}", end - second);
}

#[test]
fn batch_ends_at_the_long_poll_timeout() {
    let t = Topics::start(
        "sub-batch-timeout",
        &[("ESUB_SUB_TIMEOUT_MS", "800"), ("ESUB_SUB_BATCH_IDLE_MS", "10000")],
    );
    t.create("app1", "orders", "v1", 1);
    publish(&t, "", &[], b"a");
    let mut c = t.conn();
    let start = Instant::now();
    let r = c.sub("app1", &format!("{SUB}?group=g&batch=10"), &[]);
    let took = start.elapsed();
    assert_eq!(r.batch(), vec![Rec::new(0, 0, b"a")]);
    assert!(took >= Duration::from_millis(790), "ended early: {took:?}");
    assert!(took < Duration::from_millis(800) + SLACK, "ended late: {took:?}");
}

#[test]
fn batch_size_is_clamped() {
    let t = Topics::start(
        "sub-batch-clamp",
        &[("ESUB_SUB_MAX_BATCH", "2"), ("ESUB_SUB_BATCH_IDLE_MS", "10000")],
    );
    t.create("app1", "orders", "v1", 1);
    for p in [b"a", b"b", b"c"] {
        publish(&t, "", &[], p);
    }
    let start = Instant::now();
    let r = t.conn().sub("app1", &format!("{SUB}?group=g&batch=5000"), &[]);
    assert_eq!(pos(&r.batch()), vec![(0, 0), (0, 1)]);
    assert!(start.elapsed() < SLACK, "clamped batch did not end at 2: {:?}", start.elapsed());
}

#[test]
fn batch_of_one_is_a_single_message() {
    let t = Topics::start("sub-batch-1", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    publish(&t, "", &[], b"one");
    let r = t.conn().sub("app1", &format!("{SUB}?group=g&batch=1"), &[]);
    assert_eq!(r.msg(), Rec::new(0, 0, b"one"));
}

#[test]
fn tag_filter_single_and_batch() {
    let t = Topics::start("sub-tags", &[FAST, ("ESUB_SUB_BATCH_IDLE_MS", "200")]);
    t.create("app1", "orders", "v1", 1);
    publish(&t, "", &[("X-Tag", "t0")], b"m0");
    publish(&t, "", &[("X-Tag", "t3;t2")], b"m1");
    publish(&t, "", &[], b"m2");
    publish(&t, "", &[("X-Tag", "t1")], b"m3");
    publish(&t, "", &[("X-Tag", "t10;;xt1")], b"m4");
    publish(&t, "", &[("X-Tag", ";t1;")], b"m5");
    let filter = [("X-Tag", ";t1;;t2")];
    // Single mode.
    let mut c = t.conn();
    let got = drain(&mut c, "app1", &format!("{SUB}?group=g"), &filter);
    assert_eq!(got, vec![Rec::new(0, 1, b"m1"), Rec::new(0, 3, b"m3"), Rec::new(0, 5, b"m5")]);
    // Batch mode, another group.
    let r = t.conn().sub("app1", &format!("{SUB}?group=h&batch=10"), &filter);
    assert_eq!(pos(&r.batch()), vec![(0, 1), (0, 3), (0, 5)]);
    // Skipped messages were committed too (auto mode): a new instance without the filter
    // has nothing left.
    drop(c);
    let (mut c2, r) = common::topics::join(&t, "app1", &format!("{SUB}?group=g"), &[]);
    r.assert_204();
    publish(&t, "", &[], b"after");
    assert_eq!(c2.sub("app1", &format!("{SUB}?group=g"), &[]).msg(), Rec::new(0, 6, b"after"));
}

#[test]
fn single_get_x_tag_header_is_verbatim() {
    let t = Topics::start("sub-xtag", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    publish(&t, "", &[("X-Tag", "a=b; c=d%20")], b"m");
    let r = t.conn().sub("app1", &format!("{SUB}?group=g"), &[]);
    assert_eq!(r.header("x-tag"), Some("a=b; c=d%20"));
}

#[test]
fn sub_400s_in_the_contracts_order() {
    let t = Topics::start("sub-400", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    publish(&t, "", &[], b"m");
    let long_ver = "v".repeat(17);
    let g65 = "g".repeat(65);
    let s = subh("app1");
    let partial_ack: Vec<(&str, &str)> =
        vec![("Appid", "app1"), ("Subkey", "sk"), ("X-Partition", "0")];
    let cases: Vec<Case> = vec![
        // Names.
        ("/v1/msgs/bad.app/orders/v1?group=g".into(), s.clone(), 400, "invalid appid"),
        ("/v1/msgs/app1/bad.t/v1?group=g".into(), s.clone(), 400, "illegal topic"),
        (format!("/v1/msgs/app1/orders/{long_ver}?group=g"), s.clone(), 400, "illegal version"),
        (SUB.into(), s.clone(), 400, "illegal group"),
        (format!("{SUB}?group="), s.clone(), 400, "illegal group"),
        (format!("{SUB}?group=a.b"), s.clone(), 400, "illegal group"),
        (format!("{SUB}?group={g65}"), s.clone(), 400, "illegal group"),
        (format!("{SUB}?group=__smoketest__"), s.clone(), 400, "illegal group"),
        // Names before batch; batch before reset; reset before auth.
        (format!("{SUB}?batch=0"), s.clone(), 400, "illegal group"),
        (format!("{SUB}?group=g&batch=0&reset=x"), s.clone(), 400, "illegal batch"),
        (format!("{SUB}?group=g&batch=x"), s.clone(), 400, "illegal batch"),
        (format!("{SUB}?group=g&batch=-1"), s.clone(), 400, "illegal batch"),
        (format!("{SUB}?group=g&batch="), s.clone(), 400, "illegal batch"),
        (format!("{SUB}?group=g&reset=x"), vec![], 400, "illegal reset"),
        (format!("{SUB}?group=g&reset="), vec![], 400, "illegal reset"),
        // Auth before ack headers.
        (
            format!("{SUB}?group=g&ack=1"),
            vec![("X-Partition", "0")],
            401,
            "auth with empty identity or key",
        ),
        // Ack headers before q.
        (
            format!("{SUB}?group=g&ack=1&q=bogus"),
            partial_ack.clone(),
            400,
            "partial ack not allowed",
        ),
        (
            format!("{SUB}?group=g&ack=1&q=bogus"),
            vec![("Appid", "app1"), ("Subkey", "sk"), ("X-Partition", "0,0"), ("X-Offset", "0")],
            400,
            "partial ack not allowed",
        ),
        (
            format!("{SUB}?group=g&ack=1&q=bogus"),
            vec![("Appid", "app1"), ("Subkey", "sk"), ("X-Partition", "x"), ("X-Offset", "0")],
            400,
            "ack with bad partition",
        ),
        (
            format!("{SUB}?group=g&ack=1&q=bogus"),
            vec![("Appid", "app1"), ("Subkey", "sk"), ("X-Partition", "0"), ("X-Offset", "1.5")],
            400,
            "ack with bad offset",
        ),
        // q before shadow registration.
        (format!("{SUB}?group=g&q=bogus"), s.clone(), 400, "invalid shadow name"),
        (format!("{SUB}?group=g&q=retry"), s.clone(), 400, "register shadow first"),
        (format!("{SUB}?group=g&q=dead"), s.clone(), 400, "register shadow first"),
        // Ack values out of range (P=1, latest=1).
        (
            format!("{SUB}?group=g&ack=1"),
            vec![("Appid", "app1"), ("Subkey", "sk"), ("X-Partition", "1"), ("X-Offset", "0")],
            400,
            "ack with bad partition",
        ),
        (
            format!("{SUB}?group=g&ack=1"),
            vec![("Appid", "app1"), ("Subkey", "sk"), ("X-Partition", "0"), ("X-Offset", "1")],
            400,
            "ack with bad offset",
        ),
        (
            format!("{SUB}?group=g&ack=1"),
            vec![("Appid", "app1"), ("Subkey", "sk"), ("X-Partition", "0"), ("X-Offset", "-2")],
            400,
            "ack with bad offset",
        ),
    ];
    // One connection throughout: every 400/401 keeps it, and none of them joined the group.
    let mut c = t.conn();
    for (path, h, status, text) in &cases {
        let r = c.req("GET", path, h, b"");
        assert_eq!(
            (r.status, r.body_str()),
            (*status, format!(r#"{{"errmsg":"{text}"}}"#)),
            "GET {path} {h:?}"
        );
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
    }
    // Join comes last: a second instance on P=1 is refused, even with bad ack values absent.
    let mut other = t.conn();
    assert_eq!(other.sub("app1", &format!("{SUB}?group=g"), &[]).msg(), Rec::new(0, 0, b"m"));
    c.req(
        "GET",
        &format!("{SUB}?group=g&ack=1"),
        &[("Appid", "app1"), ("Subkey", "sk"), ("X-Partition", "0"), ("X-Offset", "0")],
        b"",
    )
    .assert_err(400, "consumers more than available partitions");
    c.req(
        "GET",
        &format!("{SUB}?group=g&ack=1"),
        &[("Appid", "app1"), ("Subkey", "sk"), ("X-Partition", "0"), ("X-Offset", "5")],
        b"",
    )
    .assert_err(400, "ack with bad offset");
}

#[test]
fn smoketest_group_needs_the_origin_header() {
    let t = Topics::start("sub-smoke", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    publish(&t, "", &[], b"m");
    let mut c = t.conn();
    c.sub("app1", &format!("{SUB}?group=__smoketest__"), &[("X-Origin", "other")])
        .assert_err(400, "illegal group");
    let r = c.sub("app1", &format!("{SUB}?group=__smoketest__"), &[("X-Origin", "smoketest")]);
    assert_eq!(r.msg(), Rec::new(0, 0, b"m"));
}

#[test]
fn ack_headers_without_ack_flag_are_ignored() {
    let t = Topics::start("sub-ack-ignored", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    publish(&t, "", &[], b"m");
    let r = t.conn().sub(
        "app1",
        &format!("{SUB}?group=g&ack=true"),
        &[("X-Partition", "x"), ("X-Offset", "y")],
    );
    assert_eq!(r.msg(), Rec::new(0, 0, b"m"));
}

#[test]
fn sub_needs_an_appid_in_open_mode() {
    let t = Topics::start("sub-identity", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    let mut c = Conn::connect(t.addr);
    c.req("GET", &format!("{SUB}?group=g"), &[("Subkey", "sk")], b"")
        .assert_err(401, "auth with empty identity or key");
    c.req("GET", &format!("{SUB}?group=g"), &[("Appid", ""), ("Subkey", "sk")], b"")
        .assert_err(401, "auth with empty identity or key");
    c.req("GET", &format!("{SUB}?group=g"), &[("Appid", "a.b"), ("Subkey", "sk")], b"")
        .assert_err(401, "authentication fails");
}
