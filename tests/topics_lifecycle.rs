//! Topics lifecycle (API-topics.md 9, 5.3): SIGTERM answers parked GETs with 204 and closes,
//! and a restart on the same data directory keeps logs, offsets and group commits.

mod common;

use common::topics::{FAST, Rec, SLACK, Topics, drain, key_for, partitions_json, pos, subh};
use std::time::{Duration, Instant};

const PUB: &str = "/v1/msgs/orders/v1";
const SUB: &str = "/v1/msgs/app1/orders/v1";

#[test]
fn sigterm_answers_a_parked_get_with_204_and_close() {
    let mut t = Topics::start("life-term", &[("ESUB_SUB_TIMEOUT_MS", "30000")]);
    t.create("app1", "orders", "v1", 1);
    let mut c = t.conn();
    c.send_sub("app1", &format!("{SUB}?group=g"), &[]);
    c.expect_silence(Duration::from_millis(200));
    let start = Instant::now();
    t.server.sigterm();
    let r = c.read_resp();
    r.assert_204();
    assert!(r.connection_close(), "{r:?}");
    assert!(start.elapsed() < SLACK, "204 late: {:?}", start.elapsed());
    c.expect_closed();
    let st = t.server.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(0), "exit status");
}

#[test]
fn sigterm_ends_a_streaming_batch() {
    let mut t = Topics::start(
        "life-term-batch",
        &[("ESUB_SUB_TIMEOUT_MS", "30000"), ("ESUB_SUB_BATCH_IDLE_MS", "30000")],
    );
    t.create("app1", "orders", "v1", 1);
    t.conn().publish("app1", PUB, &[], b"m0").pubd();
    let mut c = t.conn();
    c.send_sub("app1", &format!("{SUB}?group=g&batch=10"), &[]);
    let mut head = c.read_head();
    assert_eq!(head.status, 200);
    let first = c.read_chunk().expect("a first chunk");
    t.server.sigterm();
    let mut body = first;
    while let Some(ch) = c.read_chunk() {
        body.extend(ch);
    }
    head.body = body;
    assert_eq!(common::topics::decode_records(&head.body), vec![Rec::new(0, 0, b"m0")]);
    assert_eq!(t.server.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn restart_keeps_messages_offsets_and_commits() {
    let t = Topics::start("life-restart", &[FAST]);
    t.create("app1", "orders", "v1", 2);
    let key0 = key_for(0, 2);
    let key1 = key_for(1, 2);
    let mut c = t.conn();
    for i in 0..3 {
        c.publish("app1", &format!("{PUB}?key={key0}"), &[], format!("a{i}").as_bytes()).pubd();
        c.publish("app1", &format!("{PUB}?key={key1}"), &[], format!("b{i}").as_bytes()).pubd();
    }
    // Group g (auto mode) reads offset 0 of both partitions.
    let mut a = t.conn();
    let mut first: Vec<(i32, i64)> = (0..2)
        .map(|_| a.sub("app1", &format!("{SUB}?group=g"), &[]).msg())
        .map(|r| (r.partition, r.offset))
        .collect();
    first.sort();
    assert_eq!(first, vec![(0, 0), (1, 0)]);
    // Group h commits partition 0 offset 1 through a PUT.
    c.req("PUT", "/v1/offsets/app1/orders/v1/h", &subh("app1"), br#"[{"partition":0,"offset":1}]"#)
        .assert_ok(200);
    drop(a);
    drop(c);

    let t = t.restart(&[FAST]);
    assert_eq!(t.partitions("app1", "orders", "v1"), partitions_json(&[(0, 3), (0, 3)]));
    // Offsets continue.
    assert_eq!(t.conn().publish("app1", &format!("{PUB}?key={key0}"), &[], b"a3").pubd(), (0, 3));
    // g resumes at committed + 1 on both partitions.
    let mut got: Vec<Rec> = drain(&mut t.conn(), "app1", &format!("{SUB}?group=g"), &[]);
    got.sort_by_key(|r| (r.partition, r.offset));
    assert_eq!(
        got,
        vec![
            Rec::new(0, 1, b"a1"),
            Rec::new(0, 2, b"a2"),
            Rec::new(0, 3, b"a3"),
            Rec::new(1, 1, b"b1"),
            Rec::new(1, 2, b"b2"),
        ]
    );
    // h resumes after its PUT commit on partition 0, from the start on partition 1.
    let mut got = pos(&drain(&mut t.conn(), "app1", &format!("{SUB}?group=h&ack=1"), &[]));
    got.sort();
    assert_eq!(got, vec![(0, 2), (0, 3), (1, 0), (1, 1), (1, 2)]);
}

#[test]
fn restart_keeps_piggy_back_commits_and_redelivers_unacked() {
    let t = Topics::start("life-restart-ack", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    for i in 0..4 {
        t.conn().publish("app1", PUB, &[], format!("m{i}").as_bytes()).pubd();
    }
    let path = format!("{SUB}?group=g&ack=1");
    let mut a = t.conn();
    assert_eq!(a.sub("app1", &path, &[]).msg(), Rec::new(0, 0, b"m0"));
    let r = a.sub("app1", &path, &[("X-Partition", "0"), ("X-Offset", "0")]);
    assert_eq!(r.msg(), Rec::new(0, 1, b"m1"));
    // m1 is delivered but not acked.
    drop(a);
    let t = t.restart(&[FAST]);
    let got = drain(&mut t.conn(), "app1", &path, &[]);
    assert_eq!(pos(&got), vec![(0, 1), (0, 2), (0, 3)]);
}

#[test]
fn restart_keeps_topics_and_their_partition_count() {
    let t = Topics::start("life-restart-p", &[]);
    t.create("app1", "orders", "v1", 3);
    let t = t.restart(&[]);
    let create = |p: u32| {
        t.once(
            "POST",
            &format!("/v1/topics/app1/orders/v1?partitions={p}"),
            &[("Appid", "app1"), ("Pubkey", "pk")],
            b"",
        )
    };
    create(3).assert_ok(200);
    create(2).assert_err(409, "partitions cannot change");
    assert_eq!(t.partitions("app1", "orders", "v1"), partitions_json(&[(0, 0), (0, 0), (0, 0)]));
}
