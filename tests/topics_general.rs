//! Topics, general rules and management (API-topics.md 1, 3, 8): `/alive`, JSON 404/405,
//! connections kept after 4xx, oversize declared bodies, `ESUB_TOPICS=off`, topic creation and
//! `GET /v1/partitions`.

mod common;

use common::topics::{DataDir, Topics, partitions_json, pubh, start_in, subh};
use std::time::Duration;

#[test]
fn alive_is_ok_json() {
    let t = Topics::start("gen-alive", &[]);
    let mut c = t.conn();
    c.req("GET", "/alive", &[], b"").assert_ok(200);
    // Twice on one connection: kept alive.
    c.req("GET", "/alive", &[], b"").assert_ok(200);
}

#[test]
fn unknown_v1_paths_are_json_404() {
    let t = Topics::start("gen-404", &[]);
    let mut c = t.conn();
    for path in [
        "/v1/",
        "/v1/nothing",
        "/v1/clusters",
        "/v1/msgs",
        "/v1/msgs/a/b/c/d",
        "/v1/topics/a/b",
        "/v1/partitions/a/b/c/d",
    ] {
        let r = c.req("GET", path, &[], b"");
        r.assert_err(404, "Not Found");
    }
}

#[test]
fn wrong_methods_are_json_405_with_allow() {
    let t = Topics::start("gen-405", &[]);
    let mut c = t.conn();
    let cases: &[(&str, &str, &[&str])] = &[
        ("GET", "/v1/msgs/orders/v1", &["POST"]),
        ("POST", "/v1/msgs/app1/orders/v1", &["GET", "PUT"]),
        ("GET", "/v1/topics/app1/orders/v1", &["POST"]),
        ("DELETE", "/v1/partitions/app1/orders/v1", &["GET"]),
        ("GET", "/v1/offsets/app1/orders/v1/g", &["PUT"]),
        ("GET", "/v1/offset/app1/orders/v1/g/0", &["PUT"]),
    ];
    for (m, path, allow) in cases {
        let r = c.req(m, path, &[], b"");
        r.assert_err(405, "Method Not Allowed");
        assert_eq!(
            r.allow(),
            allow.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "{m} {path}"
        );
    }
}

#[test]
fn client_errors_keep_the_connection() {
    let t = Topics::start("gen-keep", &[]);
    let mut c = t.conn();
    c.req("GET", "/v1/nothing", &[], b"").assert_err(404, "Not Found");
    c.req("GET", "/v1/msgs/orders/v1", &[], b"").assert_err(405, "Method Not Allowed");
    c.req("GET", "/v1/msgs/app1/orders/v1", &[("Appid", "app1")], b"")
        .assert_err(400, "illegal group");
    c.req("GET", "/v1/msgs/app1/orders/v1?group=g", &[], b"")
        .assert_err(401, "auth with empty identity or key");
    let r = c.req("GET", "/alive", &[], b"");
    r.assert_ok(200);
    assert!(!r.connection_close(), "{r:?}");
}

#[test]
fn declared_body_over_the_limit_is_413_without_continue_and_closed() {
    let t = Topics::start("gen-413", &[]);
    t.create("app1", "orders", "v1", 1);
    t.refused("POST", "/v1/msgs/orders/v1", &pubh("app1"), 524_289)
        .assert_err(413, "too big message");
    // The same for the HTTP layer's body limit on a batch and on an ack body.
    t.refused("POST", "/v1/msgs/orders/v1?batch=1", &pubh("app1"), 1_048_577)
        .assert_err(413, "too big message");
    t.refused("PUT", "/v1/offsets/app1/orders/v1/g", &subh("app1"), 1_048_577)
        .assert_err(413, "too big message");
    assert_eq!(t.partitions("app1", "orders", "v1"), partitions_json(&[(0, 0)]));
}

#[test]
fn topics_off_makes_v1_and_alive_plain_404_and_writes_nothing() {
    let dir = DataDir::new("gen-off");
    let s = start_in(&dir, &[("ESUB_TOPICS", "off")]);
    let mut c = s.client();
    for path in ["/alive", "/v1/partitions/app1/orders/v1", "/v1/msgs/app1/orders/v1?group=g"] {
        c.get(path).assert_text(404, "Not Found");
    }
    c.post("/v1/msgs/orders/v1", b"m").assert_text(404, "Not Found");
    c.post("/v1/topics/app1/orders/v1?partitions=2", b"").assert_text(404, "Not Found");
    // The relay half still works.
    c.get("/ping").assert(200, b"OK");
    assert_eq!(dir.files(), Vec::<std::path::PathBuf>::new(), "files written with topics off");
    drop(s);
}

#[test]
fn nothing_is_written_before_the_first_topic() {
    let t = Topics::start("gen-lazy", &[]);
    let mut c = t.conn();
    c.req("GET", "/alive", &[], b"").assert_ok(200);
    c.req("GET", "/v1/nothing", &[], b"").assert_err(404, "Not Found");
    assert_eq!(t.dir.files(), Vec::<std::path::PathBuf>::new());
}

// ---------------------------------------------------------------------------------------------
// Topic creation and partitions (8)
// ---------------------------------------------------------------------------------------------

fn create(t: &Topics, query: &str) -> common::topics::Resp {
    t.once("POST", &format!("/v1/topics/app1/orders/v1{query}"), &pubh("app1"), b"")
}

#[test]
fn create_is_201_then_200_and_other_partitions_is_409() {
    let t = Topics::start("gen-create", &[]);
    let r = create(&t, "?partitions=3");
    r.assert_ok(201);
    assert_eq!(r.reason, "Created");
    create(&t, "?partitions=3").assert_ok(200);
    create(&t, "?partitions=3&retention.hours=2&retention.bytes=-1&replicas=3").assert_ok(200);
    create(&t, "?partitions=2").assert_err(409, "partitions cannot change");
    create(&t, "?partitions=4").assert_err(409, "partitions cannot change");
    assert_eq!(t.partitions("app1", "orders", "v1"), partitions_json(&[(0, 0), (0, 0), (0, 0)]));
}

#[test]
fn create_parameter_errors_in_order() {
    let t = Topics::start("gen-create-400", &[]);
    let cases: &[(&str, u16, &str)] = &[
        ("", 400, "invalid partitions"),
        ("?partitions=", 400, "invalid partitions"),
        ("?partitions=0", 400, "invalid partitions"),
        ("?partitions=-1", 400, "invalid partitions"),
        ("?partitions=x", 400, "invalid partitions"),
        ("?partitions=1.5", 400, "invalid partitions"),
        ("?partitions=21", 400, "too big partitions"),
        ("?partitions=2&retention.hours=0", 400, "invalid retention.hours"),
        ("?partitions=2&retention.hours=-1", 400, "invalid retention.hours"),
        ("?partitions=2&retention.hours=x", 400, "invalid retention.hours"),
        ("?partitions=2&retention.bytes=-2", 400, "invalid retention.bytes"),
        ("?partitions=2&retention.bytes=x", 400, "invalid retention.bytes"),
        ("?partitions=2&retention.bytes=1.5", 400, "invalid retention.bytes"),
        // Order: partitions, then hours, then bytes.
        ("?partitions=0&retention.hours=0&retention.bytes=x", 400, "invalid partitions"),
        ("?partitions=21&retention.hours=0", 400, "too big partitions"),
        ("?partitions=2&retention.hours=0&retention.bytes=x", 400, "invalid retention.hours"),
    ];
    let mut c = t.conn();
    for (q, status, text) in cases {
        let r = c.req("POST", &format!("/v1/topics/app1/orders/v1{q}"), &pubh("app1"), b"");
        assert_eq!((r.status, r.body_str()), (*status, format!(r#"{{"errmsg":"{text}"}}"#)), "{q}");
    }
    // Nothing was created.
    t.once("GET", "/v1/partitions/app1/orders/v1", &pubh("app1"), b"")
        .assert_err(400, "invalid topic");
    // The limits themselves are fine.
    create(&t, "?partitions=20&retention.hours=0.5&retention.bytes=1000").assert_ok(201);
    let t2 = Topics::start("gen-create-max", &[("ESUB_MAX_PARTITIONS", "2")]);
    create(&t2, "?partitions=3").assert_err(400, "too big partitions");
    create(&t2, "?partitions=2").assert_ok(201);
}

#[test]
fn create_names_are_checked_before_admin_auth() {
    let t = Topics::start("gen-create-names", &[]);
    t.once("POST", "/v1/topics/app1/bad.t/v1?partitions=1", &[], b"")
        .assert_err(400, "illegal topic");
    t.once("POST", "/v1/topics/app1/orders/v1?partitions=0", &[], b"")
        .assert_err(401, "auth with empty identity or key");
}

#[test]
fn partitions_reports_oldest_and_latest_per_partition() {
    let t = Topics::start("gen-partitions", &[]);
    t.create("app1", "orders", "v1", 2);
    let mut c = t.conn();
    for _ in 0..3 {
        c.publish("app1", "/v1/msgs/orders/v1", &[], b"m").pubd();
    }
    let r = t.once("GET", "/v1/partitions/app1/orders/v1", &pubh("app1"), b"");
    r.assert_json(200, &partitions_json(&[(0, 2), (0, 1)]));
    assert_eq!(
        r.body_str(),
        r#"{"num":2,"offsets":{"0":{"oldest":0,"latest":2},"1":{"oldest":0,"latest":1}}}"#
    );
    // A missing topic is not created by this admin route.
    t.once("GET", "/v1/partitions/app1/none/v1", &pubh("app1"), b"")
        .assert_err(400, "invalid topic");
    t.once("GET", "/v1/partitions/app1/none/v1", &pubh("app1"), b"")
        .assert_err(400, "invalid topic");
}

#[test]
fn refusal_with_body_then_close_is_readable() {
    // A refused request whose small body arrived with its head: the answer must be readable
    // before the close (not lost to a reset).
    let t = Topics::start("gen-refuse-read", &[]);
    for _ in 0..20 {
        let mut c = t.conn();
        let r = c.req("POST", "/v1/msgs/bad.topic/v1", &[], b"body");
        r.assert_err(400, "illegal topic");
        assert!(c.closed_within(Duration::from_secs(5)) || !r.connection_close());
    }
}

#[test]
fn topics_past_esub_max_topics_are_507() {
    let t = Topics::start("gen-max-topics", &[("ESUB_MAX_TOPICS", "2")]);
    let post = |topic: &str| {
        t.once("POST", &format!("/v1/topics/app1/{topic}/v1?partitions=1"), &pubh("app1"), b"")
    };
    post("orders").assert_ok(201);
    post("second").assert_ok(201);
    post("third").assert_err(507, "too many topics");
    // A topic already there is still updated, and takes pubs.
    post("orders").assert_ok(200);
    let r = t.once("POST", "/v1/msgs/orders/v1", &pubh("app1"), b"hello");
    assert_eq!(r.status, 201, "{r:?}");
    // Open mode's creation by a pub is refused the same way; nothing was created.
    t.once("POST", "/v1/msgs/fourth/v1", &pubh("app1"), b"hello")
        .assert_err(507, "too many topics");
    for topic in ["third", "fourth"] {
        t.once("GET", &format!("/v1/partitions/app1/{topic}/v1"), &pubh("app1"), b"")
            .assert_err(400, "invalid topic");
    }
}
