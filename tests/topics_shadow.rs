//! Shadow queues and bury (API-topics.md 6, with 5.2 and 5.3): `q=` checks in 5.2's order,
//! creating shadows (twice), bury to `retry` and `dead` (empty body: a copy with key and tag; a
//! body: published as given), the source commit, every refusal of the bury order, the shadows'
//! own offsets (`PUT /v1/offsets?q=`, seek `?q=`), shadows per subscriber app and group, and
//! shadows across a restart.

mod common;

use common::topics::{Conn, FAST, Resp, Topics, key_for, subh};
use std::thread;
use std::time::{Duration, Instant};

const PUB: &str = "/v1/msgs/orders/v1";
const SUB: &str = "/v1/msgs/app1/orders/v1";

fn shadow_path(group: &str) -> String {
    format!("/v1/shadow/app1/orders/v1/{group}")
}

/// `POST /v1/shadow/...` by `app` for `group`.
fn create_shadows(t: &Topics, app: &str, group: &str) -> Resp {
    t.once("POST", &shadow_path(group), &subh(app), b"")
}

/// Publish by `app1` with an optional key and tag; returns the position.
fn publish(t: &Topics, key: Option<&str>, tag: Option<&str>, body: &[u8]) -> (i32, i64) {
    let path = match key {
        Some(k) => format!("{PUB}?key={k}"),
        None => PUB.to_string(),
    };
    let mut h = vec![];
    if let Some(tag) = tag {
        h.push(("X-Tag", tag));
    }
    t.conn().publish("app1", &path, &h, body).pubd()
}

/// `PUT /v1/msgs/app1/orders/v1?<query>` by `app` with `X-Bury: to`, (p, o), `extra`, `body`.
fn bury(
    t: &Topics,
    app: &str,
    query: &str,
    to: &str,
    (p, o): (i64, i64),
    extra: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let (ps, os) = (p.to_string(), o.to_string());
    let mut h = subh(app);
    h.extend_from_slice(&[("X-Bury", to), ("X-Partition", &ps), ("X-Offset", &os)]);
    h.extend_from_slice(extra);
    t.once("PUT", &format!("{SUB}?{query}"), &h, body)
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

fn got(p: i32, o: i64, payload: &[u8], key: Option<&str>, tag: Option<&str>) -> Got {
    Got {
        partition: p,
        offset: o,
        payload: payload.to_vec(),
        key: key.map(str::to_string),
        tag: tag.map(str::to_string),
    }
}

/// One GET on `c` by `app` for `query`: the message, or `None` for 204.
#[track_caller]
fn next(c: &mut Conn, app: &str, query: &str) -> Option<Got> {
    let r = c.sub(app, &format!("{SUB}?{query}"), &[]);
    if r.status == 204 {
        r.assert_204();
        return None;
    }
    let m = r.msg();
    Some(Got {
        partition: m.partition,
        offset: m.offset,
        payload: m.payload,
        key: r.header("x-key").map(str::to_string),
        tag: r.header("x-tag").map(str::to_string),
    })
}

/// Every message a new connection of `app` gets for `query` until a 204.
#[track_caller]
fn read_all(t: &Topics, app: &str, query: &str) -> Vec<Got> {
    let (mut c, first) = common::topics::join(t, app, &format!("{SUB}?{query}"), &[]);
    let mut out = Vec::new();
    if first.status == 204 {
        first.assert_204();
        return out;
    }
    let m = first.msg();
    out.push(Got {
        partition: m.partition,
        offset: m.offset,
        payload: m.payload,
        key: first.header("x-key").map(str::to_string),
        tag: first.header("x-tag").map(str::to_string),
    });
    while let Some(g) = next(&mut c, app, query) {
        out.push(g);
        assert!(out.len() < 1000, "read_all does not end");
    }
    out
}

/// A request that must succeed once the group's instances (closed by the test) are gone.
#[track_caller]
fn once_offline(t: &Topics, method: &str, path: &str, body: &[u8]) -> Resp {
    let deadline = Instant::now() + common::POLL_DEADLINE;
    loop {
        let r = t.once(method, path, &subh("app1"), body);
        if r.status != 400 || r.body_str() != r#"{"errmsg":"reset a online group not allowed"}"# {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "the group is still online after {:?}",
            common::POLL_DEADLINE
        );
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------
// q= and creation
// ---------------------------------------------------------------------------------------------

#[test]
fn q_needs_created_shadows_and_a_known_name_in_5_2s_order() {
    let t = Topics::start("shadow-q", &[FAST]);
    t.create("app1", "orders", "v1", 4);
    let mut c = t.conn();
    let check = |c: &mut Conn, query: &str, extra: &[(&str, &str)], status: u16, text: &str| {
        let mut h = subh("app1");
        h.extend_from_slice(extra);
        c.req("GET", &format!("{SUB}?{query}"), &h, b"").assert_err(status, text);
    };
    // Before creation (one connection: each 400 keeps it).
    check(&mut c, "group=g&q=retry", &[], 400, "register shadow first");
    check(&mut c, "group=g&q=dead", &[], 400, "register shadow first");
    check(&mut c, "group=g&q=other", &[], 400, "invalid shadow name");
    check(&mut c, "group=g&q=Retry", &[], 400, "invalid shadow name");
    // Earlier checks first: reset, ack headers; and q before the topic.
    check(&mut c, "group=g&q=other&reset=x", &[], 400, "illegal reset");
    check(&mut c, "group=g&q=retry&ack=1", &[("X-Partition", "0")], 400, "partial ack not allowed");
    t.once("GET", &format!("{SUB}?group=g&q=other"), &[], b"")
        .assert_err(401, "auth with empty identity or key");
    check(&mut c, "group=g&q=other", &[], 400, "invalid shadow name");
    let missing = "/v1/msgs/app1/nosuch/v1";
    c.req("GET", &format!("{missing}?group=g&q=retry"), &subh("app1"), b"")
        .assert_err(400, "register shadow first");
    c.req("GET", &format!("{missing}?group=g&q=bad"), &subh("app1"), b"")
        .assert_err(400, "invalid shadow name");
    // Created: reads work, an unknown name is still refused; other groups have none.
    create_shadows(&t, "app1", "g").assert_ok(201);
    check(&mut c, "group=g&q=other", &[], 400, "invalid shadow name");
    check(&mut c, "group=h&q=retry", &[], 400, "register shadow first");
    // Ack values are checked against the shadow queue (one partition, latest 1 after a
    // burial), before the join: a full queue answers them first.
    publish(&t, None, None, b"m0");
    bury(&t, "app1", "group=g", "retry", (0, 0), &[], b"").assert_ok(200);
    let mut d = t.conn();
    assert_eq!(next(&mut d, "app1", "group=g&q=dead"), None);
    assert_eq!(next(&mut d, "app1", "group=g&q=retry&ack=1"), Some(got(0, 0, b"m0", None, None)));
    for (p, o, text) in [("1", "0", "ack with bad partition"), ("0", "1", "ack with bad offset")] {
        let h = [("X-Partition", p), ("X-Offset", o)];
        check(&mut c, "group=g&q=retry&ack=1", &h, 400, text);
    }
    check(&mut c, "group=g&q=retry", &[], 400, "consumers more than available partitions");
}

#[test]
fn creating_shadows_twice_is_201_both_times() {
    let t = Topics::start("shadow-create", &[FAST]);
    t.create("app1", "orders", "v1", 2);
    create_shadows(&t, "app1", "g").assert_ok(201);
    create_shadows(&t, "app1", "g").assert_ok(201);
    t.once("POST", &format!("{}?replicas=3", shadow_path("g")), &subh("app1"), b"").assert_ok(201);
    // Refusals: names, auth, topic.
    t.once("POST", &shadow_path("a.b"), &subh("app1"), b"").assert_err(400, "illegal group");
    t.once("POST", &shadow_path("g"), &[], b"").assert_err(401, "auth with empty identity or key");
    t.once("POST", "/v1/shadow/app1/nosuch/v1/g", &subh("app1"), b"")
        .assert_err(400, "invalid topic");
    // Repeating it changed nothing: a buried message is still there after another create.
    publish(&t, None, None, b"m0");
    bury(&t, "app1", "group=g", "retry", (0, 0), &[], b"").assert_ok(200);
    create_shadows(&t, "app1", "g").assert_ok(201);
    assert_eq!(read_all(&t, "app1", "group=g&q=retry"), vec![got(0, 0, b"m0", None, None)]);
}

// ---------------------------------------------------------------------------------------------
// Bury
// ---------------------------------------------------------------------------------------------

#[test]
fn bury_to_retry_copies_or_publishes_and_commits_the_source() {
    let t = Topics::start("shadow-bury", &[FAST]);
    t.create("app1", "orders", "v1", 2);
    create_shadows(&t, "app1", "g").assert_ok(201);
    let k = key_for(1, 2);
    for i in 0..4 {
        let tag = format!("t{i};x");
        assert_eq!(publish(&t, Some(&k), Some(&tag), format!("m{i}").as_bytes()), (1, i));
    }
    // Empty body: the stored message with its key and tag. No instance is needed.
    bury(&t, "app1", "group=g", "retry", (1, 0), &[], b"").assert_ok(200);
    // The source is committed at 0: a new instance starts at 1.
    let mut c = t.conn();
    assert_eq!(
        next(&mut c, "app1", "group=g&ack=1"),
        Some(got(1, 1, b"m1", Some(&k), Some("t1;x")))
    );
    // A body is published as given, with the request's X-Tag and no key; `X-Tag` absent → none.
    bury(&t, "app1", "group=g", "retry", (1, 1), &[("X-Tag", "new;tag")], b"replaced")
        .assert_ok(200);
    bury(&t, "app1", "group=g", "retry", (1, 2), &[], b"\x01raw\x00").assert_ok(200);
    assert_eq!(
        read_all(&t, "app1", "group=g&q=retry"),
        vec![
            got(0, 0, b"m0", Some(&k), Some("t0;x")),
            got(0, 1, b"replaced", None, Some("new;tag")),
            got(0, 2, b"\x01raw\x00", None, None),
        ]
    );
    // Committed at 2 now: after the ack=1 instance ends, the topic continues at 3.
    c.close();
    assert_eq!(read_all(&t, "app1", "group=g"), vec![got(1, 3, b"m3", Some(&k), Some("t3;x"))]);
    // The dead queue got nothing; another group's commit did not move.
    assert_eq!(read_all(&t, "app1", "group=g&q=dead"), vec![]);
    assert_eq!(read_all(&t, "app1", "group=other").len(), 4);
}

#[test]
fn bury_commits_only_forward_and_copies_keyless_untagged_messages_bare() {
    let t = Topics::start("shadow-forward", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    create_shadows(&t, "app1", "g").assert_ok(201);
    for i in 0..4 {
        publish(&t, None, None, format!("m{i}").as_bytes());
    }
    let r = t.once(
        "PUT",
        "/v1/offsets/app1/orders/v1/g",
        &subh("app1"),
        br#"[{"partition":0,"offset":2}]"#,
    );
    r.assert_ok(200);
    // Burying an earlier message does not move the commit back.
    bury(&t, "app1", "group=g", "dead", (0, 0), &[], b"").assert_ok(200);
    assert_eq!(read_all(&t, "app1", "group=g"), vec![got(0, 3, b"m3", None, None)]);
    assert_eq!(read_all(&t, "app1", "group=g&q=dead"), vec![got(0, 0, b"m0", None, None)]);
}

#[test]
fn bury_from_retry_to_dead_and_back_to_retry() {
    let t = Topics::start("shadow-chain", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    create_shadows(&t, "app1", "g").assert_ok(201);
    publish(&t, Some("kk"), Some("a=b"), b"m0");
    publish(&t, None, None, b"m1");
    bury(&t, "app1", "group=g", "retry", (0, 0), &[], b"").assert_ok(200);
    bury(&t, "app1", "group=g", "retry", (0, 1), &[], b"").assert_ok(200);
    // A retry consumer gives up on its first message: dead, and retry committed at 0.
    bury(&t, "app1", "group=g&q=retry", "dead", (0, 0), &[], b"").assert_ok(200);
    assert_eq!(
        read_all(&t, "app1", "group=g&q=dead"),
        vec![got(0, 0, b"m0", Some("kk"), Some("a=b"))]
    );
    // ... and re-queues its second one (retry to retry).
    bury(&t, "app1", "group=g&q=retry", "retry", (0, 1), &[], b"").assert_ok(200);
    assert_eq!(read_all(&t, "app1", "group=g&q=retry"), vec![got(0, 2, b"m1", None, None)]);
    // From dead back to retry.
    bury(&t, "app1", "group=g&q=dead", "retry", (0, 0), &[], b"").assert_ok(200);
    assert_eq!(
        read_all(&t, "app1", "group=g&q=retry"),
        vec![got(0, 3, b"m0", Some("kk"), Some("a=b"))]
    );
    assert_eq!(read_all(&t, "app1", "group=g&q=dead"), vec![]);
    // The topic itself: committed at 1 by the first two burials.
    assert_eq!(read_all(&t, "app1", "group=g"), vec![]);
}

#[test]
fn every_refusal_of_the_bury_order() {
    let t = Topics::start("shadow-refuse", &[FAST, ("ESUB_PUB_MAX_BYTES", "100")]);
    t.create("app1", "orders", "v1", 2);
    create_shadows(&t, "app1", "g").assert_ok(201);
    let k0 = key_for(0, 2);
    publish(&t, Some(&k0), None, b"m0");
    publish(&t, Some(&k0), None, b"m1");
    let s = subh("app1");
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut h = s.clone();
        h.extend_from_slice(extra);
        h
    };
    let full = |to: &'static str, p: &'static str, o: &'static str| {
        with(&[("X-Bury", to), ("X-Partition", p), ("X-Offset", o)])
    };
    let big = vec![b'b'; 101];
    let q = |query: &str| format!("{SUB}?{query}");
    // (path, headers, body, status, text)
    type Row<'a> = (String, Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);
    let rows: Vec<Row> = vec![
        // Names first (even without X-Bury).
        ("/v1/msgs/a.b/orders/v1?group=g".into(), with(&[]), vec![], 400, "invalid appid"),
        (
            "/v1/msgs/app1/or.ders/v1?group=g".into(),
            full("retry", "0", "0"),
            vec![],
            400,
            "illegal topic",
        ),
        (
            "/v1/msgs/app1/orders/v.1?group=g".into(),
            full("retry", "0", "0"),
            vec![],
            400,
            "illegal version",
        ),
        (SUB.into(), full("retry", "0", "0"), vec![], 400, "illegal group"),
        (q("group=a.b"), with(&[]), vec![], 400, "illegal group"),
        // X-Bury, before auth.
        (
            q("group=g"),
            with(&[("X-Partition", "0"), ("X-Offset", "0")]),
            vec![],
            400,
            "illegal bury",
        ),
        (q("group=g"), full("Retry", "0", "0"), vec![], 400, "illegal bury"),
        (q("group=g"), full("", "0", "0"), vec![], 400, "illegal bury"),
        (q("group=g"), full("other", "0", "0"), vec![], 400, "illegal bury"),
        (q("group=g"), vec![("X-Bury", "x")], vec![], 400, "illegal bury"),
        // Auth, before the position headers.
        (q("group=g"), vec![("X-Bury", "retry")], vec![], 401, "auth with empty identity or key"),
        // Position headers: present, then integers ≥ 0.
        (
            q("group=g"),
            with(&[("X-Bury", "retry"), ("X-Offset", "0")]),
            vec![],
            400,
            "empty offset or partition",
        ),
        (
            q("group=g"),
            with(&[("X-Bury", "retry"), ("X-Partition", "0")]),
            vec![],
            400,
            "empty offset or partition",
        ),
        (q("group=g"), with(&[("X-Bury", "retry")]), big.clone(), 400, "empty offset or partition"),
        (q("group=g"), full("retry", "0", "x"), vec![], 400, "bad offset"),
        (q("group=g"), full("retry", "0", "-1"), vec![], 400, "bad offset"),
        (q("group=g"), full("retry", "0", "1.0"), vec![], 400, "bad offset"),
        (q("group=g"), full("retry", "x", "0"), vec![], 400, "bad partition"),
        (q("group=g"), full("retry", "-1", "0"), vec![], 400, "bad partition"),
        (q("group=g"), full("retry", "0", "-1"), big.clone(), 400, "bad offset"),
        // Size, before the shadow names.
        (q("group=g"), full("retry", "0", "0"), big.clone(), 413, "too big message"),
        (q("group=g&q=other"), full("retry", "0", "0"), big.clone(), 413, "too big message"),
        // Shadow names, for q and the target.
        (q("group=g&q=other"), full("retry", "0", "0"), vec![], 400, "invalid shadow name"),
        (q("group=h"), full("retry", "0", "0"), vec![], 400, "register shadow first"),
        (q("group=h"), full("dead", "0", "0"), vec![], 400, "register shadow first"),
        (q("group=h&q=retry"), full("dead", "0", "0"), vec![], 400, "register shadow first"),
        // A missing topic has no shadows.
        (
            "/v1/msgs/app1/nosuch/v1?group=g".into(),
            full("retry", "0", "0"),
            vec![],
            400,
            "register shadow first",
        ),
        // Against the source's partitions and offsets: the topic (P=2, latest 2 and 0).
        (q("group=g"), full("retry", "2", "0"), vec![], 400, "bad partition"),
        (q("group=g"), full("retry", "2", "9"), vec![], 400, "bad partition"),
        (q("group=g"), full("retry", "0", "2"), vec![], 400, "bad offset"),
        (q("group=g"), full("retry", "1", "0"), vec![], 400, "bad offset"),
        // The retry queue as the source: one partition, empty.
        (q("group=g&q=retry"), full("dead", "1", "0"), vec![], 400, "bad partition"),
        (q("group=g&q=retry"), full("dead", "0", "0"), vec![], 400, "bad offset"),
    ];
    for (path, headers, body, status, text) in &rows {
        let r = t.once("PUT", path, headers, body);
        assert_eq!(
            (r.status, r.body_str()),
            (*status, format!(r#"{{"errmsg":"{text}"}}"#)),
            "PUT {path} {headers:?} body {} bytes",
            body.len()
        );
        r.assert_err(*status, text);
    }
    // Nothing moved or committed.
    assert_eq!(read_all(&t, "app1", "group=g&q=retry"), vec![]);
    assert_eq!(read_all(&t, "app1", "group=g&q=dead"), vec![]);
    assert_eq!(read_all(&t, "app1", "group=g").len(), 2);
    // 400s with the body read keep the connection.
    let mut c = t.conn();
    c.req("PUT", &q("group=g"), &full("retry", "0", "2"), b"").assert_err(400, "bad offset");
    c.req("GET", "/alive", &[], b"").assert_ok(200);
}

// ---------------------------------------------------------------------------------------------
// The shadows' own offsets
// ---------------------------------------------------------------------------------------------

#[test]
fn shadow_queues_have_their_own_offsets_put_and_seek() {
    let t = Topics::start("shadow-offsets", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    create_shadows(&t, "app1", "g").assert_ok(201);
    for i in 0..3 {
        publish(&t, None, None, format!("m{i}").as_bytes());
    }
    for i in 0..3 {
        bury(&t, "app1", "group=g", "retry", (0, i), &[], b"").assert_ok(200);
    }
    let offsets = "/v1/offsets/app1/orders/v1/g";
    let put =
        |query: &str, body: &[u8]| t.once("PUT", &format!("{offsets}{query}"), &subh("app1"), body);
    // Validated against the retry queue (P=1, latest 3), not the topic.
    put("?q=retry", br#"[{"partition":1,"offset":0}]"#).assert_err(400, "ack with bad partition");
    put("?q=retry", br#"[{"partition":0,"offset":3}]"#).assert_err(400, "ack with bad offset");
    put("?q=retry", br#"[{"partition":0,"offset":1}]"#).assert_ok(200);
    assert_eq!(read_all(&t, "app1", "group=g&q=retry"), vec![got(0, 2, b"m2", None, None)]);
    // Seek back on the retry queue (once the reading instance is gone).
    let seek = "/v1/offset/app1/orders/v1/g/0";
    once_offline(&t, "PUT", &format!("{seek}?q=retry&offset=-1"), b"").assert_ok(200);
    t.once("PUT", "/v1/offset/app1/orders/v1/g/1?q=retry&offset=0", &subh("app1"), b"")
        .assert_err(400, "partition out of range");
    t.once("PUT", &format!("{seek}?q=retry&offset=3"), &subh("app1"), b"")
        .assert_err(400, "offset out of range");
    let all: Vec<i64> = read_all(&t, "app1", "group=g&q=retry").iter().map(|g| g.offset).collect();
    assert_eq!(all, vec![0, 1, 2]);
    // The dead queue's and the topic's offsets did not move: the topic was committed at 2 by
    // the burials, seeking it back to 0 replays from 1.
    assert_eq!(read_all(&t, "app1", "group=g"), vec![]);
    once_offline(&t, "PUT", &format!("{seek}?offset=0"), b"").assert_ok(200);
    let topic: Vec<i64> = read_all(&t, "app1", "group=g").iter().map(|g| g.offset).collect();
    assert_eq!(topic, vec![1, 2]);
    let retry_again = read_all(&t, "app1", "group=g&q=retry");
    assert_eq!(retry_again, vec![], "the topic seek moved the retry queue");
    put("?q=dead", br#"[{"partition":0,"offset":0}]"#).assert_err(400, "ack with bad offset");
}

// ---------------------------------------------------------------------------------------------
// Per subscriber app and group; restart
// ---------------------------------------------------------------------------------------------

#[test]
fn shadows_are_per_subscriber_app_and_group() {
    let t = Topics::start("shadow-per-app", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    publish(&t, None, None, b"m0");
    create_shadows(&t, "app2", "g").assert_ok(201);
    let refused = |app: &str, query: &str| {
        t.once("GET", &format!("{SUB}?{query}"), &subh(app), b"")
            .assert_err(400, "register shadow first");
    };
    refused("app3", "group=g&q=retry");
    refused("app2", "group=h&q=retry");
    refused("app1", "group=g&q=dead");
    bury(&t, "app3", "group=g", "retry", (0, 0), &[], b"").assert_err(400, "register shadow first");
    bury(&t, "app2", "group=g", "retry", (0, 0), &[], b"").assert_ok(200);
    create_shadows(&t, "app3", "g").assert_ok(201);
    assert_eq!(read_all(&t, "app3", "group=g&q=retry"), vec![], "app3's retry got app2's burial");
    assert_eq!(read_all(&t, "app2", "group=g&q=retry"), vec![got(0, 0, b"m0", None, None)]);
    // app2's burial committed app2's group only.
    assert_eq!(read_all(&t, "app2", "group=g"), vec![]);
    assert_eq!(read_all(&t, "app3", "group=g"), vec![got(0, 0, b"m0", None, None)]);
}

#[test]
fn shadows_survive_a_restart() {
    let t = Topics::start("shadow-restart", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    create_shadows(&t, "app1", "g").assert_ok(201);
    for i in 0..4 {
        publish(&t, Some("k"), Some("t"), format!("m{i}").as_bytes());
    }
    bury(&t, "app1", "group=g", "retry", (0, 0), &[], b"").assert_ok(200);
    bury(&t, "app1", "group=g", "retry", (0, 1), &[], b"body").assert_ok(200);
    bury(&t, "app1", "group=g", "dead", (0, 2), &[], b"").assert_ok(200);
    // Read (auto commit) the first retry message.
    let (c, r) = common::topics::join(&t, "app1", &format!("{SUB}?group=g&q=retry"), &[]);
    assert_eq!(r.msg().offset, 0);
    drop(c);
    let t = t.restart(&[FAST]);
    assert_eq!(read_all(&t, "app1", "group=g&q=retry"), vec![got(0, 1, b"body", None, None)]);
    assert_eq!(
        read_all(&t, "app1", "group=g&q=dead"),
        vec![got(0, 0, b"m2", Some("k"), Some("t"))]
    );
    assert_eq!(read_all(&t, "app1", "group=g"), vec![got(0, 3, b"m3", Some("k"), Some("t"))]);
    // Still created, and new burials go on at the next offsets.
    create_shadows(&t, "app1", "g").assert_ok(201);
    bury(&t, "app1", "group=g", "retry", (0, 3), &[], b"").assert_ok(200);
    assert_eq!(
        read_all(&t, "app1", "group=g&q=retry"),
        vec![got(0, 2, b"m3", Some("k"), Some("t"))]
    );
}
