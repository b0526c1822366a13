//! Topics publishing (API-topics.md 4.1, 4.2, 1.2, 2): offsets, async, size/key/tag edges,
//! chunked bodies, key hashing and round robin, batch pub framing and its refusals.

mod common;

use common::topics::{
    Case, FAST, Rec, Topics, decode_records, drain, key_for, partition_of, partitions_json, pos,
    pubh, rec,
};

const PUB: &str = "/v1/msgs/orders/v1";

#[test]
fn partition_helper_matches_the_contract_example() {
    // Section 2: P=4, keys b, k1, k3 -> 3, 3, 1.
    let got: Vec<u32> = ["b", "k1", "k3"].iter().map(|k| partition_of(k.as_bytes(), 4)).collect();
    assert_eq!(got, vec![3, 3, 1]);
}

#[test]
fn pub_offsets_count_from_zero_with_position_headers() {
    let t = Topics::start("pub-offsets", &[]);
    t.create("app1", "orders", "v1", 1);
    let mut c = t.conn();
    for want in 0..3 {
        let r = c.publish("app1", PUB, &[], format!("m{want}").as_bytes());
        assert_eq!(r.reason, "Created", "{r:?}");
        assert_eq!(r.pubd(), (0, want));
    }
    assert_eq!(t.partitions("app1", "orders", "v1"), partitions_json(&[(0, 3)]));
}

#[test]
fn async_pub_is_202_and_stored() {
    let t = Topics::start("pub-async", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    let mut c = t.conn();
    c.publish("app1", &format!("{PUB}?async=1"), &[], b"a0").assert_ok(202);
    // `async` is on only when exactly `1`.
    assert_eq!(c.publish("app1", &format!("{PUB}?async=true"), &[], b"a1").pubd(), (0, 1));
    c.publish("app1", &format!("{PUB}?async=1"), &[], b"a2").assert_ok(202);
    let got = drain(&mut t.conn(), "app1", "/v1/msgs/app1/orders/v1?group=g", &[]);
    assert_eq!(got, vec![Rec::new(0, 0, b"a0"), Rec::new(0, 1, b"a1"), Rec::new(0, 2, b"a2")]);
}

#[test]
fn payload_size_edges() {
    let t = Topics::start("pub-size", &[]);
    t.create("app1", "orders", "v1", 1);
    let mut c = t.conn();
    let max = vec![b'x'; 524_288];
    assert_eq!(c.publish("app1", PUB, &[], &max).pubd(), (0, 0));
    // Empty: 400, the connection stays.
    c.publish("app1", PUB, &[], b"").assert_err(400, "too small message");
    assert_eq!(c.publish("app1", PUB, &[], b"y").pubd(), (0, 1));
    // One byte over, declared: 413 before the body, no `100 Continue`, connection closed.
    let mut h = pubh("app1");
    h.push(("Content-Length", "524289"));
    h.push(("Expect", "100-continue"));
    c.send_req("POST", PUB, &h, b"");
    let r = c.read_resp();
    r.assert_err(413, "too big message");
    assert!(r.connection_close(), "{r:?}");
    c.expect_closed();
    assert_eq!(t.partitions("app1", "orders", "v1"), partitions_json(&[(0, 2)]));
}

#[test]
fn payload_limit_follows_the_variable() {
    let t = Topics::start("pub-size-var", &[("ESUB_PUB_MAX_BYTES", "10")]);
    t.create("app1", "orders", "v1", 1);
    let mut c = t.conn();
    assert_eq!(c.publish("app1", PUB, &[], b"0123456789").pubd(), (0, 0));
    t.refused("POST", PUB, &pubh("app1"), 11).assert_err(413, "too big message");
}

#[test]
fn key_and_tag_edges_and_their_order() {
    let t = Topics::start("pub-key-tag", &[]);
    t.create("app1", "orders", "v1", 1);
    let mut c = t.conn();
    let k256 = "k".repeat(256);
    let k257 = "k".repeat(257);
    let t1024 = "t".repeat(1024);
    let t1025 = "t".repeat(1025);
    assert_eq!(c.publish("app1", &format!("{PUB}?key={k256}"), &[], b"m").pubd(), (0, 0));
    assert_eq!(c.publish("app1", PUB, &[("X-Tag", &t1024)], b"m").pubd(), (0, 1));
    let mut h = pubh("app1");
    t.refused("POST", &format!("{PUB}?key={k257}"), &h, 1).assert_err(400, "too big key");
    h.push(("X-Tag", &t1025));
    t.refused("POST", PUB, &h, 1).assert_err(400, "too big tag");
    // Order: size, then key, then tag.
    t.once("POST", &format!("{PUB}?key={k257}"), &h, b"").assert_err(400, "too small message");
    t.refused("POST", &format!("{PUB}?key={k257}"), &h, 1).assert_err(400, "too big key");
    assert_eq!(t.partitions("app1", "orders", "v1"), partitions_json(&[(0, 2)]));
}

#[test]
fn key_and_tag_limits_follow_the_variables() {
    let t = Topics::start(
        "pub-key-tag-var",
        &[("ESUB_MAX_KEY_BYTES", "3"), ("ESUB_MAX_TAG_BYTES", "4")],
    );
    t.create("app1", "orders", "v1", 1);
    let mut c = t.conn();
    assert_eq!(
        c.publish("app1", &format!("{PUB}?key=abc"), &[("X-Tag", "abcd")], b"m").pubd(),
        (0, 0)
    );
    t.refused("POST", &format!("{PUB}?key=abcd"), &pubh("app1"), 1).assert_err(400, "too big key");
    let mut h = pubh("app1");
    h.push(("X-Tag", "abcde"));
    t.refused("POST", PUB, &h, 1).assert_err(400, "too big tag");
}

#[test]
fn chunked_body_is_one_message() {
    let t = Topics::start("pub-chunked", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    let mut c = t.conn();
    let body = b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n";
    let r = c.publish("app1", PUB, &[("Transfer-Encoding", "chunked")], body);
    assert_eq!(r.pubd(), (0, 0));
    // The connection still works after a chunked request.
    assert_eq!(c.publish("app1", PUB, &[], b"next").pubd(), (0, 1));
    let got = drain(&mut t.conn(), "app1", "/v1/msgs/app1/orders/v1?group=g", &[]);
    assert_eq!(got, vec![Rec::new(0, 0, b"hello world"), Rec::new(0, 1, b"next")]);
}

#[test]
fn chunked_body_over_the_limit_is_413() {
    let t = Topics::start("pub-chunked-413", &[("ESUB_PUB_MAX_BYTES", "8")]);
    t.create("app1", "orders", "v1", 1);
    let mut c = t.conn();
    let body = b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n";
    c.publish("app1", PUB, &[("Transfer-Encoding", "chunked")], body)
        .assert_err(413, "too big message");
    assert_eq!(t.partitions("app1", "orders", "v1"), partitions_json(&[(0, 0)]));
}

#[test]
fn keys_hash_to_partitions_and_keyless_round_robin() {
    let t = Topics::start("pub-partitioning", &[]);
    t.create("app1", "orders", "v1", 4);
    let mut c = t.conn();
    let mut got = Vec::new();
    for k in ["b", "k1", "k3"] {
        got.push(c.publish("app1", &format!("{PUB}?key={k}"), &[], b"m").pubd());
    }
    assert_eq!(got, vec![(3, 0), (3, 1), (1, 0)]);
    // Keyless: round robin from 0; keyed pubs in between do not move it; `key=` is no key.
    let mut rr = Vec::new();
    rr.push(c.publish("app1", PUB, &[], b"m").pubd().0);
    rr.push(c.publish("app1", &format!("{PUB}?key="), &[], b"m").pubd().0);
    assert_eq!(c.publish("app1", &format!("{PUB}?key=b"), &[], b"m").pubd(), (3, 2));
    rr.push(c.publish("app1", PUB, &[], b"m").pubd().0);
    rr.push(c.publish("app1", PUB, &[], b"m").pubd().0);
    rr.push(c.publish("app1", PUB, &[], b"m").pubd().0);
    assert_eq!(rr, vec![0, 1, 2, 3, 0]);
    assert_eq!(
        t.partitions("app1", "orders", "v1"),
        partitions_json(&[(0, 2), (0, 2), (0, 1), (0, 4)])
    );
}

#[test]
fn pub_batch_param_other_than_0_or_1_is_illegal() {
    let t = Topics::start("pub-batch-param", &[]);
    t.create("app1", "orders", "v1", 1);
    // Refused from the head: with the body unread the connection closes.
    t.refused("POST", &format!("{PUB}?batch=2"), &pubh("app1"), 1).assert_err(400, "illegal batch");
    t.refused("POST", &format!("{PUB}?batch=x"), &pubh("app1"), 1).assert_err(400, "illegal batch");
    let mut c = t.conn();
    assert_eq!(c.publish("app1", &format!("{PUB}?batch=0"), &[], b"m").pubd(), (0, 0));
    assert_eq!(c.publish("app1", &format!("{PUB}?batch="), &[], b"m").pubd(), (0, 1));
    // `ack` and `hh` are accepted and ignored.
    assert_eq!(c.publish("app1", &format!("{PUB}?ack=1&hh=1"), &[], b"m").pubd(), (0, 2));
}

#[test]
fn pub_names_are_checked_before_auth_and_auth_before_size() {
    let t = Topics::start("pub-names", &[]);
    t.create("app1", "orders", "v1", 1);
    let long_ver = "v".repeat(17);
    let t65 = "t".repeat(65);
    let t64 = "t".repeat(64);
    let v16 = "v".repeat(16);
    let k257 = "k".repeat(257);
    let cases: Vec<Case> = vec![
        ("/v1/msgs/bad.topic/v1".into(), vec![], 400, "illegal topic"),
        (format!("/v1/msgs/orders/{long_ver}"), vec![], 400, "illegal version"),
        (format!("/v1/msgs/{t65}/v1"), vec![], 400, "illegal topic"),
        // 64 and 16 are fine: the missing identity is the error.
        (format!("/v1/msgs/{t64}/{v16}"), vec![], 401, "auth with empty identity or key"),
        (PUB.into(), vec![("Pubkey", "pk")], 401, "auth with empty identity or key"),
        // An Appid header that breaks the name rule: 401 even in open mode.
        (PUB.into(), pubh("bad.app"), 401, "authentication fails"),
        // Names before batch, batch before auth, auth before key.
        ("/v1/msgs/bad.topic/v1?batch=2".into(), vec![], 400, "illegal topic"),
        (format!("{PUB}?batch=2"), vec![], 400, "illegal batch"),
        (format!("{PUB}?key={k257}"), vec![], 401, "auth with empty identity or key"),
    ];
    for (path, h, status, text) in &cases {
        t.refused("POST", path, h, 1).assert_err(*status, text);
    }
    // Declared too big beats a bad key (size before key).
    t.refused("POST", &format!("{PUB}?key={k257}"), &pubh("app1"), 524_289)
        .assert_err(413, "too big message");
    t.refused("POST", &format!("{PUB}?key={k257}"), &pubh("app1"), 1)
        .assert_err(400, "too big key");
    assert_eq!(t.partitions("app1", "orders", "v1"), partitions_json(&[(0, 0)]));
}

#[test]
fn refusals_without_a_body_keep_the_connection() {
    let t = Topics::start("pub-keep", &[]);
    t.create("app1", "orders", "v1", 1);
    let mut c = t.conn();
    // Content-Length: 0 leaves nothing unread.
    c.req("POST", "/v1/msgs/bad.topic/v1", &[], b"").assert_err(400, "illegal topic");
    c.req("POST", PUB, &[], b"").assert_err(401, "auth with empty identity or key");
    c.publish("app1", PUB, &[], b"").assert_err(400, "too small message");
    assert_eq!(c.publish("app1", PUB, &[], b"m").pubd(), (0, 0));
}

// ---------------------------------------------------------------------------------------------
// Batch pub (4.2)
// ---------------------------------------------------------------------------------------------

fn msgs_json(pairs: &[(u32, i64)]) -> String {
    let items: Vec<String> =
        pairs.iter().map(|(p, o)| format!(r#"{{"partition":{p},"offset":{o}}}"#)).collect();
    format!(r#"{{"ok":1,"msgs":[{}]}}"#, items.join(","))
}

#[test]
fn batch_answers_in_record_order_and_keyless_records_share_a_partition() {
    let t = Topics::start("pub-batch", &[FAST]);
    t.create("app1", "orders", "v1", 4);
    let mut c = t.conn();
    let mut body = rec(b"b", b"", b"r0");
    body.extend(rec(b"", b"", b"r1"));
    body.extend(rec(b"k3", b"", b"r2"));
    body.extend(rec(b"", b"tg", b"r3"));
    body.extend(rec(b"k1", b"", b"r4"));
    let r = c.publish("app1", &format!("{PUB}?batch=1"), &[], &body);
    assert_eq!(r.reason, "Created", "{r:?}");
    r.assert_json(201, &msgs_json(&[(3, 0), (0, 0), (1, 0), (0, 1), (3, 1)]));
    assert!(!r.has_header("x-partition") && !r.has_header("x-offset"), "{r:?}");
    // The batch took one round-robin step: the next keyless pub goes to 1.
    assert_eq!(c.publish("app1", PUB, &[], b"single").pubd(), (1, 1));
    // Every payload stored as given, partition by partition.
    let got = drain(&mut t.conn(), "app1", "/v1/msgs/app1/orders/v1?group=g", &[]);
    let mut got_sorted = got.clone();
    got_sorted.sort_by_key(|r| (r.partition, r.offset));
    assert_eq!(
        got_sorted,
        vec![
            Rec::new(0, 0, b"r1"),
            Rec::new(0, 1, b"r3"),
            Rec::new(1, 0, b"r2"),
            Rec::new(1, 1, b"single"),
            Rec::new(3, 0, b"r0"),
            Rec::new(3, 1, b"r4"),
        ]
    );
}

#[test]
fn batch_async_is_202_with_positions() {
    let t = Topics::start("pub-batch-async", &[]);
    t.create("app1", "orders", "v1", 1);
    let mut c = t.conn();
    let mut body = rec(b"", b"", b"a");
    body.extend(rec(b"", b"", b"b"));
    c.publish("app1", &format!("{PUB}?batch=1&async=1"), &[], &body)
        .assert_json(202, &msgs_json(&[(0, 0), (0, 1)]));
}

#[test]
fn batch_records_without_key_or_tag_take_the_query_key_and_header_tag() {
    let t = Topics::start("pub-batch-defaults", &[FAST]);
    t.create("app1", "orders", "v1", 4);
    let mut c = t.conn();
    let mut body = rec(b"", b"", b"q");
    body.extend(rec(b"k3", b"own", b"o"));
    c.publish("app1", &format!("{PUB}?batch=1&key=b"), &[("X-Tag", "hdr")], &body)
        .assert_json(201, &msgs_json(&[(3, 0), (1, 0)]));
    let mut s = t.conn();
    let mut got: Vec<_> =
        (0..2).map(|_| s.sub("app1", "/v1/msgs/app1/orders/v1?group=g", &[])).collect();
    got.sort_by_key(|r| r.msg().partition);
    let (o, q) = (&got[0], &got[1]);
    assert_eq!(
        (q.msg(), q.header("x-key"), q.header("x-tag")),
        (Rec::new(3, 0, b"q"), Some("b"), Some("hdr"))
    );
    assert_eq!(
        (o.msg(), o.header("x-key"), o.header("x-tag")),
        (Rec::new(1, 0, b"o"), Some("k3"), Some("own"))
    );
}

#[test]
fn batch_of_max_records_is_accepted() {
    let t = Topics::start("pub-batch-max", &[("ESUB_PUB_MAX_BATCH", "5")]);
    t.create("app1", "orders", "v1", 1);
    let mut c = t.conn();
    let body: Vec<u8> = (0..5).flat_map(|i| rec(b"", b"", format!("m{i}").as_bytes())).collect();
    c.publish("app1", &format!("{PUB}?batch=1"), &[], &body)
        .assert_json(201, &msgs_json(&[(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)]));
    let body: Vec<u8> = (0..6).flat_map(|i| rec(b"", b"", format!("m{i}").as_bytes())).collect();
    c.publish("app1", &format!("{PUB}?batch=1"), &[], &body).assert_err(400, "illegal batch");
    assert_eq!(t.partitions("app1", "orders", "v1"), partitions_json(&[(0, 5)]));
}

#[test]
fn batch_default_limits_1000_ok_1001_refused() {
    let t = Topics::start("pub-batch-1000", &[]);
    t.create("app1", "orders", "v1", 1);
    let mut c = t.conn();
    let body: Vec<u8> = (0..1001).flat_map(|_| rec(b"", b"", b"x")).collect();
    c.publish("app1", &format!("{PUB}?batch=1"), &[], &body).assert_err(400, "illegal batch");
    assert_eq!(t.partitions("app1", "orders", "v1"), partitions_json(&[(0, 0)]));
    let body: Vec<u8> = (0..1000).flat_map(|_| rec(b"", b"", b"x")).collect();
    let r = c.publish("app1", &format!("{PUB}?batch=1"), &[], &body);
    let want: Vec<(u32, i64)> = (0..1000).map(|o| (0, o)).collect();
    r.assert_json(201, &msgs_json(&want));
    assert_eq!(t.partitions("app1", "orders", "v1"), partitions_json(&[(0, 1000)]));
}

#[test]
fn bad_batches_are_refused_and_store_nothing() {
    let t = Topics::start("pub-batch-bad", &[]);
    t.create("app1", "orders", "v1", 2);
    let mut c = t.conn();
    let path = format!("{PUB}?batch=1");
    let good = rec(b"", b"", b"ok");
    // Trailing bytes after the last record.
    let mut trailing = good.clone();
    trailing.push(0);
    c.publish("app1", &path, &[], &trailing).assert_err(400, "illegal batch");
    // A record cut short.
    let mut cut = good.clone();
    cut.extend_from_slice(&rec(b"", b"", b"payload")[..8]);
    c.publish("app1", &path, &[], &cut).assert_err(400, "illegal batch");
    // A length that runs past the end.
    let mut long = good.clone();
    long.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 9, b'x']);
    c.publish("app1", &path, &[], &long).assert_err(400, "illegal batch");
    // Zero records.
    c.publish("app1", &path, &[], b"").assert_err(400, "illegal batch");
    // A record breaking a limit: that limit's status and text, nothing stored.
    let mut empty_payload = good.clone();
    empty_payload.extend(rec(b"", b"", b""));
    c.publish("app1", &path, &[], &empty_payload).assert_err(400, "too small message");
    let mut big_key = good.clone();
    big_key.extend(rec(&[b'k'; 257], b"", b"x"));
    c.publish("app1", &path, &[], &big_key).assert_err(400, "too big key");
    let mut big_tag = good.clone();
    big_tag.extend(rec(b"", &[b't'; 1025], b"x"));
    c.publish("app1", &path, &[], &big_tag).assert_err(400, "too big tag");
    assert_eq!(t.partitions("app1", "orders", "v1"), partitions_json(&[(0, 0), (0, 0)]));
    // The connection survived every 400 and the round robin did not move.
    c.publish("app1", &path, &[], &good).assert_json(201, &msgs_json(&[(0, 0)]));
}

#[test]
fn batch_record_over_payload_limit_is_413() {
    let t = Topics::start("pub-batch-413", &[("ESUB_PUB_MAX_BYTES", "4")]);
    t.create("app1", "orders", "v1", 1);
    let mut c = t.conn();
    let mut body = rec(b"", b"", b"1234");
    body.extend(rec(b"", b"", b"12345"));
    c.publish("app1", &format!("{PUB}?batch=1"), &[], &body).assert_err(413, "too big message");
    assert_eq!(t.partitions("app1", "orders", "v1"), partitions_json(&[(0, 0)]));
}

#[test]
fn batch_body_over_max_body_bytes_is_413_before_the_body() {
    let t = Topics::start("pub-batch-body", &[("ESUB_MAX_BODY_BYTES", "100")]);
    t.create("app1", "orders", "v1", 1);
    let mut c = t.conn();
    let mut h = pubh("app1");
    h.push(("Content-Length", "101"));
    h.push(("Expect", "100-continue"));
    c.send_req("POST", &format!("{PUB}?batch=1"), &h, b"");
    let r = c.read_resp();
    r.assert_err(413, "too big message");
    assert!(r.connection_close(), "{r:?}");
    c.expect_closed();
}

#[test]
fn batch_records_decode_helper_round_trips() {
    // The helper the sub tests rely on: one record, exact layout.
    let mut b = Vec::new();
    b.extend_from_slice(&2i32.to_be_bytes());
    b.extend_from_slice(&7i64.to_be_bytes());
    b.extend_from_slice(&3i32.to_be_bytes());
    b.extend_from_slice(b"abc");
    assert_eq!(decode_records(&b), vec![Rec::new(2, 7, b"abc")]);
    assert_eq!(pos(&decode_records(&b)), vec![(2, 7)]);
    assert_eq!(partition_of(key_for(1, 4).as_bytes(), 4), 1);
}

/// Workers write the logs themselves in interval mode (the default): pubs racing on 8
/// connections over 2 workers, through 4 KiB segments that keep rolling, get dense offsets per
/// partition, and every pub answered 201 is read back with its payload after a `kill -9`.
#[test]
fn racing_pubs_over_two_workers_get_dense_offsets_that_survive_kill_9() {
    let env = [FAST, ("ESUB_WORKERS", "2"), ("ESUB_TOPIC_SEGMENT_BYTES", "4096")];
    let t = Topics::start("pub-racing", &env);
    t.create("app1", "orders", "v1", 2);
    let addr = t.addr;
    let threads: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = common::topics::Conn::connect(addr);
                (0..100)
                    .map(|j| {
                        let body = format!("t{i}-m{j}-{}", "x".repeat(j * 7 % 200));
                        let path = format!("{PUB}?key=k{}", (i * 100 + j) % 13);
                        let r = c.publish("app1", &path, &[], body.as_bytes());
                        assert_eq!(r.status, 201, "{r:?}");
                        let (p, o) = r.pubd();
                        Rec::new(p, o, body.as_bytes())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut sent: Vec<Rec> = threads.into_iter().flat_map(|h| h.join().unwrap()).collect();
    sent.sort_by_key(|r| (r.partition, r.offset));
    for p in 0..2 {
        let offsets: Vec<i64> =
            sent.iter().filter(|r| r.partition == p).map(|r| r.offset).collect();
        assert_eq!(offsets, (0..offsets.len() as i64).collect::<Vec<_>>(), "partition {p}");
    }
    let t = t.kill9_restart(&env);
    let mut got = drain(&mut t.conn(), "app1", "/v1/msgs/app1/orders/v1?group=g", &[]);
    got.sort_by_key(|r| (r.partition, r.offset));
    assert_eq!(got.len(), 800);
    assert!(got == sent, "what was read back differs from what was answered 201");
}
