//! Consumer groups and offsets (API-topics.md 5.1, 5.3, 5.4): partition assignment, `mux=1`,
//! reassignment on close, group isolation, auto commit, piggy-back and PUT acks, seek, reset.

mod common;

use common::topics::{Conn, FAST, Rec, Topics, drain, join, key_for, pos, subh};
use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

const PUB: &str = "/v1/msgs/orders/v1";
const SUB: &str = "/v1/msgs/app1/orders/v1";

fn publish(t: &Topics, query: &str, body: &[u8]) -> (i32, i64) {
    t.conn().publish("app1", &format!("{PUB}{query}"), &[], body).pubd()
}

/// Publish `n` messages to partition `p` of a `parts`-partition topic (keyed).
fn fill(t: &Topics, p: u32, parts: u32, n: usize) {
    let key = key_for(p, parts);
    for i in 0..n {
        let (pp, _) = publish(t, &format!("?key={key}"), format!("p{p}m{i}").as_bytes());
        assert_eq!(pp, p as i32);
    }
}

fn g(group: &str) -> String {
    format!("{SUB}?group={group}")
}

fn partitions_of(recs: &[Rec]) -> BTreeSet<i32> {
    recs.iter().map(|r| r.partition).collect()
}

// ---------------------------------------------------------------------------------------------
// Groups (5.1)
// ---------------------------------------------------------------------------------------------

#[test]
fn two_connections_split_four_partitions() {
    let t = Topics::start("grp-split", &[FAST]);
    t.create("app1", "orders", "v1", 4);
    let mut a = t.conn();
    a.sub("app1", &g("g"), &[]).assert_204();
    let mut b = t.conn();
    b.sub("app1", &g("g"), &[]).assert_204();
    for p in 0..4 {
        fill(&t, p, 4, 2);
    }
    let got_a = drain(&mut a, "app1", &g("g"), &[]);
    let got_b = drain(&mut b, "app1", &g("g"), &[]);
    assert_eq!(partitions_of(&got_a), BTreeSet::from([0, 1]), "{:?}", pos(&got_a));
    assert_eq!(partitions_of(&got_b), BTreeSet::from([2, 3]), "{:?}", pos(&got_b));
    assert_eq!(got_a.len(), 4);
    assert_eq!(got_b.len(), 4);
    // Each partition in offset order.
    for recs in [&got_a, &got_b] {
        for p in partitions_of(recs) {
            let offs: Vec<i64> =
                recs.iter().filter(|r| r.partition == p).map(|r| r.offset).collect();
            assert_eq!(offs, vec![0, 1]);
        }
    }
}

#[test]
fn an_instance_serves_its_partitions_in_turn() {
    let t = Topics::start("grp-rr", &[FAST]);
    t.create("app1", "orders", "v1", 2);
    fill(&t, 0, 2, 3);
    fill(&t, 1, 2, 3);
    let got = drain(&mut t.conn(), "app1", &g("g"), &[]);
    // Round robin between the partitions, each in offset order.
    let parts: Vec<i32> = got.iter().map(|r| r.partition).collect();
    assert!(
        parts == vec![0, 1, 0, 1, 0, 1] || parts == vec![1, 0, 1, 0, 1, 0],
        "not alternating: {:?}",
        pos(&got)
    );
}

#[test]
fn more_consumers_than_partitions_is_400_and_keeps_the_connection() {
    let t = Topics::start("grp-full", &[FAST]);
    t.create("app1", "orders", "v1", 2);
    let mut a = t.conn();
    a.sub("app1", &g("g"), &[]).assert_204();
    let mut b = t.conn();
    b.sub("app1", &g("g"), &[]).assert_204();
    let mut c = t.conn();
    c.sub("app1", &g("g"), &[]).assert_err(400, "consumers more than available partitions");
    c.req("GET", "/alive", &[], b"").assert_ok(200);
    // Another group is unaffected.
    c.sub("app1", &g("other"), &[]).assert_204();
}

#[test]
fn mux_connections_share_one_instance() {
    let t = Topics::start("grp-mux", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    let path = format!("{SUB}?group=g&mux=1");
    let mut a = t.conn();
    a.sub("app1", &path, &[]).assert_204();
    let mut b = t.conn();
    b.sub("app1", &path, &[]).assert_204();
    // Without mux the group is full.
    t.conn().sub("app1", &g("g"), &[]).assert_err(400, "consumers more than available partitions");
    publish(&t, "", b"m0");
    publish(&t, "", b"m1");
    publish(&t, "", b"m2");
    // Same cursors: each message to one of them.
    assert_eq!(a.sub("app1", &path, &[]).msg(), Rec::new(0, 0, b"m0"));
    assert_eq!(b.sub("app1", &path, &[]).msg(), Rec::new(0, 1, b"m1"));
    assert_eq!(a.sub("app1", &path, &[]).msg(), Rec::new(0, 2, b"m2"));
    b.sub("app1", &path, &[]).assert_204();
    // The instance lives while one sharer does.
    a.close();
    publish(&t, "", b"m3");
    assert_eq!(b.sub("app1", &path, &[]).msg(), Rec::new(0, 3, b"m3"));
}

#[test]
fn a_closed_connections_partitions_move() {
    let t = Topics::start("grp-move", &[FAST]);
    t.create("app1", "orders", "v1", 2);
    let mut a = t.conn();
    a.sub("app1", &g("g"), &[]).assert_204();
    let mut b = t.conn();
    b.sub("app1", &g("g"), &[]).assert_204();
    fill(&t, 0, 2, 1);
    fill(&t, 1, 2, 1);
    assert_eq!(pos(&drain(&mut b, "app1", &g("g"), &[])), vec![(1, 0)]);
    b.close();
    fill(&t, 0, 2, 1);
    fill(&t, 1, 2, 1);
    // A gets partition 1 from committed + 1 once the server sees the close.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while !pos(&got).contains(&(1, 1)) {
        assert!(Instant::now() < deadline, "partition 1 never moved: {:?}", pos(&got));
        got.extend(drain(&mut a, "app1", &g("g"), &[]));
    }
    let mut got = pos(&got);
    got.sort();
    assert_eq!(got, vec![(0, 0), (0, 1), (1, 1)]);
}

#[test]
fn two_groups_each_get_everything() {
    let t = Topics::start("grp-two", &[FAST]);
    t.create("app1", "orders", "v1", 2);
    for i in 0..4 {
        publish(&t, "", format!("m{i}").as_bytes());
    }
    for group in ["g1", "g2"] {
        let mut got = pos(&drain(&mut t.conn(), "app1", &g(group), &[]));
        got.sort();
        assert_eq!(got, vec![(0, 0), (0, 1), (1, 0), (1, 1)], "group {group}");
    }
}

#[test]
fn groups_of_different_apps_are_different_groups() {
    let t = Topics::start("grp-apps", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    publish(&t, "", b"m");
    let mut a = t.conn();
    assert_eq!(a.sub("app1", &g("billing"), &[]).msg(), Rec::new(0, 0, b"m"));
    // app2's `billing` is another group: not full, and gets the message too.
    let mut b = t.conn();
    assert_eq!(b.sub("app2", &g("billing"), &[]).msg(), Rec::new(0, 0, b"m"));
}

#[test]
fn switching_group_ends_the_old_instance() {
    let t = Topics::start("grp-switch", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    let mut a = t.conn();
    a.sub("app1", &g("g"), &[]).assert_204();
    let mut b = t.conn();
    b.sub("app1", &g("g"), &[]).assert_err(400, "consumers more than available partitions");
    // A asks for another group: its `g` instance ends first.
    a.sub("app1", &g("h"), &[]).assert_204();
    b.sub("app1", &g("g"), &[]).assert_204();
    // And now `h` is A's.
    t.conn().sub("app1", &g("h"), &[]).assert_err(400, "consumers more than available partitions");
}

// ---------------------------------------------------------------------------------------------
// Commits and acks (5.3)
// ---------------------------------------------------------------------------------------------

#[test]
fn auto_mode_resumes_after_the_last_written_message() {
    let t = Topics::start("ack-auto", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    for i in 0..3 {
        publish(&t, "", format!("m{i}").as_bytes());
    }
    let mut a = t.conn();
    assert_eq!(a.sub("app1", &g("g"), &[]).msg(), Rec::new(0, 0, b"m0"));
    assert_eq!(a.sub("app1", &g("g"), &[]).msg(), Rec::new(0, 1, b"m1"));
    a.close();
    let (mut b, r) = join(&t, "app1", &g("g"), &[]);
    assert_eq!(r.msg(), Rec::new(0, 2, b"m2"));
    b.sub("app1", &g("g"), &[]).assert_204();
}

#[test]
fn auto_mode_batch_commits_every_written_record() {
    let t = Topics::start("ack-auto-batch", &[FAST, ("ESUB_SUB_BATCH_IDLE_MS", "100")]);
    t.create("app1", "orders", "v1", 1);
    for i in 0..4 {
        publish(&t, "", format!("m{i}").as_bytes());
    }
    let mut a = t.conn();
    let r = a.sub("app1", &format!("{SUB}?group=g&batch=3"), &[]);
    assert_eq!(pos(&r.batch()), vec![(0, 0), (0, 1), (0, 2)]);
    a.close();
    let (_b, r) = join(&t, "app1", &g("g"), &[]);
    assert_eq!(r.msg(), Rec::new(0, 3, b"m3"));
}

#[test]
fn ack_mode_without_ack_redelivers_to_the_next_instance() {
    let t = Topics::start("ack-none", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    publish(&t, "", b"m0");
    publish(&t, "", b"m1");
    let path = format!("{SUB}?group=g&ack=1");
    let mut a = t.conn();
    assert_eq!(a.sub("app1", &path, &[]).msg(), Rec::new(0, 0, b"m0"));
    a.close();
    let (mut b, r) = join(&t, "app1", &path, &[]);
    assert_eq!(r.msg(), Rec::new(0, 0, b"m0"));
    // Still nothing committed: the next GET (no ack) moves on in this instance.
    assert_eq!(b.sub("app1", &path, &[]).msg(), Rec::new(0, 1, b"m1"));
    b.close();
    let (_c, r) = join(&t, "app1", &path, &[]);
    assert_eq!(r.msg(), Rec::new(0, 0, b"m0"));
}

#[test]
fn piggy_back_ack_commits_and_next_instance_starts_after_it() {
    let t = Topics::start("ack-piggy", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    for i in 0..6 {
        publish(&t, "", format!("m{i}").as_bytes());
    }
    let path = format!("{SUB}?group=g&ack=1");
    let mut a = t.conn();
    assert_eq!(a.sub("app1", &path, &[]).msg(), Rec::new(0, 0, b"m0"));
    let r = a.sub("app1", &path, &[("X-Partition", "0"), ("X-Offset", "0")]);
    assert_eq!(r.msg(), Rec::new(0, 1, b"m1"));
    // An ack past the live cursor moves it to o + 1.
    let r = a.sub("app1", &path, &[("X-Partition", "0"), ("X-Offset", "2")]);
    assert_eq!(r.msg(), Rec::new(0, 3, b"m3"));
    a.close();
    let (_b, r) = join(&t, "app1", &path, &[]);
    assert_eq!(r.msg(), Rec::new(0, 3, b"m3"));
}

#[test]
fn piggy_back_minus_one_and_empty_headers_are_ignored() {
    let t = Topics::start("ack-ignore", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    publish(&t, "", b"m0");
    let path = format!("{SUB}?group=g&ack=1");
    let mut a = t.conn();
    let r = a.sub("app1", &path, &[("X-Partition", "-1"), ("X-Offset", "-1")]);
    assert_eq!(r.msg(), Rec::new(0, 0, b"m0"));
    a.sub("app1", &path, &[("X-Partition", ""), ("X-Offset", "")]).assert_204();
    a.close();
    let (_b, r) = join(&t, "app1", &path, &[]);
    assert_eq!(r.msg(), Rec::new(0, 0, b"m0"));
}

#[test]
fn list_acks_commit_several_partitions() {
    let t = Topics::start("ack-list", &[FAST]);
    t.create("app1", "orders", "v1", 2);
    fill(&t, 0, 2, 8);
    fill(&t, 1, 2, 8);
    let path = format!("{SUB}?group=g&ack=1");
    let mut a = t.conn();
    a.sub("app1", &path, &[]).msg();
    let r = a.sub("app1", &path, &[("X-Partition", "0,1"), ("X-Offset", "5,7")]);
    assert_eq!(r.status, 200, "{r:?}");
    a.close();
    let (mut b, r) = join(&t, "app1", &path, &[]);
    let mut got = vec![r.msg()];
    got.extend(drain(&mut b, "app1", &path, &[]));
    let mut got = pos(&got);
    got.sort();
    assert_eq!(got, vec![(0, 6), (0, 7)]);
}

#[test]
fn repeated_ack_headers_are_one_list() {
    let t = Topics::start("ack-repeated", &[FAST]);
    t.create("app1", "orders", "v1", 2);
    fill(&t, 0, 2, 3);
    fill(&t, 1, 2, 3);
    let path = format!("{SUB}?group=g&ack=1");
    let mut a = t.conn();
    a.sub("app1", &path, &[]).msg();
    let r = a.sub(
        "app1",
        &path,
        &[("X-Partition", "1"), ("X-Offset", "0"), ("X-Partition", "0"), ("X-Offset", "1")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    a.close();
    let (mut b, r) = join(&t, "app1", &path, &[]);
    let mut got = vec![r.msg()];
    got.extend(drain(&mut b, "app1", &path, &[]));
    let mut got = pos(&got);
    got.sort();
    assert_eq!(got, vec![(0, 2), (1, 1), (1, 2)]);
}

fn put_offsets(c: &mut Conn, group: &str, body: &str) -> common::topics::Resp {
    c.req("PUT", &format!("/v1/offsets/app1/orders/v1/{group}"), &subh("app1"), body.as_bytes())
}

#[test]
fn put_offsets_same_convention_and_lower_acks_ignored() {
    let t = Topics::start("ack-put", &[FAST]);
    t.create("app1", "orders", "v1", 2);
    fill(&t, 0, 2, 5);
    fill(&t, 1, 2, 5);
    let mut c = t.conn();
    put_offsets(&mut c, "g", r#"[{"partition":0,"offset":2},{"partition":1,"offset":-1}]"#)
        .assert_ok(200);
    // Lower: ignored, still 200.
    put_offsets(&mut c, "g", r#"[{"partition":0,"offset":1}]"#).assert_ok(200);
    put_offsets(&mut c, "g", r#"[{"partition":1,"offset":3}]"#).assert_ok(200);
    put_offsets(&mut c, "g", r#"[ {"offset":0, "partition":1} ]"#).assert_ok(200);
    let mut got = pos(&drain(&mut t.conn(), "app1", &g("g"), &[]));
    got.sort();
    assert_eq!(got, vec![(0, 3), (0, 4), (1, 4)]);
}

#[test]
fn put_offsets_errors() {
    let t = Topics::start("ack-put-400", &[FAST]);
    t.create("app1", "orders", "v1", 2);
    fill(&t, 0, 2, 3);
    let mut c = t.conn();
    let cases: &[(&str, &str)] = &[
        ("", "too small message"),
        ("{}", "invalid ack json body"),
        ("[", "invalid ack json body"),
        ("nope", "invalid ack json body"),
        (r#"[{"partition":"0","offset":1}]"#, "invalid ack json body"),
        (r#"[{"partition":0,"offset":1.5}]"#, "invalid ack json body"),
        (r#"[{"partition":0}]"#, "invalid ack json body"),
        (r#"[1,2]"#, "invalid ack json body"),
        (r#"[{"partition":2,"offset":0}]"#, "ack with bad partition"),
        (r#"[{"partition":-1,"offset":0}]"#, "ack with bad partition"),
        (r#"[{"partition":0,"offset":3}]"#, "ack with bad offset"),
        (r#"[{"partition":0,"offset":-2}]"#, "ack with bad offset"),
        // Partition 1 is empty: latest 0, so offset 0 is already too far.
        (r#"[{"partition":1,"offset":0}]"#, "ack with bad offset"),
        // All pairs are checked before any applies.
        (r#"[{"partition":0,"offset":1},{"partition":0,"offset":99}]"#, "ack with bad offset"),
    ];
    for (body, text) in cases {
        let r = put_offsets(&mut c, "g", body);
        assert_eq!(
            (r.status, r.body_str()),
            (400, format!(r#"{{"errmsg":"{text}"}}"#)),
            "body {body:?}"
        );
    }
    // Nothing applied: the group starts at 0.
    assert_eq!(pos(&drain(&mut t.conn(), "app1", &g("g"), &[])), vec![(0, 0), (0, 1), (0, 2)]);
}

#[test]
fn forward_put_moves_a_live_cursor() {
    let t = Topics::start("ack-put-live", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    for i in 0..5 {
        publish(&t, "", format!("m{i}").as_bytes());
    }
    let mut a = t.conn();
    assert_eq!(a.sub("app1", &g("g"), &[]).msg(), Rec::new(0, 0, b"m0"));
    put_offsets(&mut t.conn(), "g", r#"[{"partition":0,"offset":2}]"#).assert_ok(200);
    assert_eq!(a.sub("app1", &g("g"), &[]).msg(), Rec::new(0, 3, b"m3"));
}

// ---------------------------------------------------------------------------------------------
// Seek and reset (5.3, 5.4)
// ---------------------------------------------------------------------------------------------

fn seek(c: &mut Conn, group: &str, partition: &str, query: &str) -> common::topics::Resp {
    c.req(
        "PUT",
        &format!("/v1/offset/app1/orders/v1/{group}/{partition}{query}"),
        &subh("app1"),
        b"",
    )
}

#[test]
fn seek_back_replays_and_is_refused_online() {
    let t = Topics::start("seek", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    for i in 0..3 {
        publish(&t, "", format!("m{i}").as_bytes());
    }
    let mut a = t.conn();
    assert_eq!(drain(&mut a, "app1", &g("g"), &[]).len(), 3);
    let mut c = t.conn();
    seek(&mut c, "g", "0", "?offset=0").assert_err(400, "reset a online group not allowed");
    a.close();
    // Once the instance is gone: 200 and the next instance replays from O + 1.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = seek(&mut c, "g", "0", "?offset=0");
        if r.status == 200 {
            r.assert_ok(200);
            break;
        }
        r.assert_err(400, "reset a online group not allowed");
        assert!(Instant::now() < deadline, "instance never ended");
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(pos(&drain(&mut t.conn(), "app1", &g("g"), &[])), vec![(0, 1), (0, 2)]);
}

#[test]
fn seek_to_minus_one_replays_everything() {
    let t = Topics::start("seek-all", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    for i in 0..2 {
        publish(&t, "", format!("m{i}").as_bytes());
    }
    assert_eq!(drain(&mut t.conn(), "app1", &g("g"), &[]).len(), 2);
    let mut c = t.conn();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = seek(&mut c, "g", "0", "?offset=-1");
        if r.status == 200 {
            r.assert_ok(200);
            break;
        }
        assert!(Instant::now() < deadline, "seek refused: {r:?}");
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(pos(&drain(&mut t.conn(), "app1", &g("g"), &[])), vec![(0, 0), (0, 1)]);
}

#[test]
fn seek_errors_in_order() {
    let t = Topics::start("seek-400", &[FAST]);
    t.create("app1", "orders", "v1", 2);
    fill(&t, 0, 2, 3);
    let mut c = t.conn();
    let cases: &[(&str, &str, &str)] = &[
        ("0", "", "invalid offset"),
        ("0", "?offset=x", "invalid offset"),
        ("9", "?offset=x", "invalid offset"),
        ("2", "?offset=0", "partition out of range"),
        ("-1", "?offset=0", "partition out of range"),
        ("x", "?offset=0", "partition out of range"),
        ("0", "?offset=3", "offset out of range"),
        ("0", "?offset=-2", "offset out of range"),
        ("1", "?offset=0", "offset out of range"),
    ];
    for (p, q, text) in cases {
        let r = seek(&mut c, "g", p, q);
        assert_eq!(
            (r.status, r.body_str()),
            (400, format!(r#"{{"errmsg":"{text}"}}"#)),
            "partition {p} {q}"
        );
    }
    // Offset range beats the online check.
    let mut a = t.conn();
    a.sub("app1", &g("g"), &[]).msg();
    seek(&mut c, "g", "0", "?offset=3").assert_err(400, "offset out of range");
    seek(&mut c, "g", "1", "?offset=-1").assert_err(400, "reset a online group not allowed");
}

#[test]
fn reset_newest_on_a_fresh_group_skips_the_backlog_and_is_committed() {
    let t = Topics::start("reset-newest", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    for i in 0..3 {
        publish(&t, "", format!("m{i}").as_bytes());
    }
    let mut a = t.conn();
    a.sub("app1", &format!("{SUB}?group=g&reset=newest"), &[]).assert_204();
    a.close();
    // The start was committed: a later instance (default reset=oldest) does not replay.
    let (mut b, r) = join(&t, "app1", &g("g"), &[]);
    r.assert_204();
    publish(&t, "", b"new");
    assert_eq!(b.sub("app1", &g("g"), &[]).msg(), Rec::new(0, 3, b"new"));
    // reset=oldest (the default) on another fresh group reads the backlog.
    let got = drain(&mut t.conn(), "app1", &format!("{SUB}?group=h&reset=oldest"), &[]);
    assert_eq!(pos(&got), vec![(0, 0), (0, 1), (0, 2), (0, 3)]);
}

#[test]
fn an_in_range_commit_survives_reset() {
    let t = Topics::start("reset-keep", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    for i in 0..3 {
        publish(&t, "", format!("m{i}").as_bytes());
    }
    let mut a = t.conn();
    assert_eq!(a.sub("app1", &g("g"), &[]).msg(), Rec::new(0, 0, b"m0"));
    a.close();
    let (_b, r) = join(&t, "app1", &format!("{SUB}?group=g&reset=newest"), &[]);
    assert_eq!(r.msg(), Rec::new(0, 1, b"m1"));
}

#[test]
fn groups_past_esub_max_groups_are_507() {
    let t = Topics::start("max-groups", &[FAST, ("ESUB_MAX_GROUPS", "2")]);
    t.create("app1", "orders", "v1", 1);
    publish(&t, "", b"m0");
    let mut c = t.conn();
    // Two groups by consuming and by a PUT of offsets.
    assert_eq!(drain(&mut c, "app1", &g("g1"), &[]).len(), 1);
    let put = |c: &mut Conn, group: &str| {
        let body = br#"[{"partition":0,"offset":0}]"#;
        c.req("PUT", &format!("/v1/offsets/app1/orders/v1/{group}"), &subh("app1"), body)
    };
    put(&mut c, "g2").assert_ok(200);
    // A third is refused every way one is made; the two go on.
    let mut d = t.conn();
    d.sub("app1", &g("g3"), &[]).assert_err(507, "too many groups");
    put(&mut d, "g3").assert_err(507, "too many groups");
    seek(&mut d, "g3", "0", "?offset=0").assert_err(507, "too many groups");
    put(&mut d, "g2").assert_ok(200);
    seek(&mut d, "g2", "0", "?offset=-1").assert_ok(200);
    let mut e = t.conn();
    assert_eq!(drain(&mut e, "app1", &g("g2"), &[]).len(), 1);
}
