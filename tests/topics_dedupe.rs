//! Idempotent publishing (API-topics.md 4.4): `X-Msg-Id` validation and its place in 4.1's order,
//! duplicates answered with the first one's position and `X-Duplicate: 1` storing nothing, one id
//! space per topic, the window's length (`ESUB_DEDUPE_MS`) and size (`ESUB_DEDUPE_MAX_IDS`),
//! concurrent duplicates, the window across a clean restart and `kill -9`, and ws pub frames' `"id"`.

mod common;

use common::topics::{
    DataDir, FAST, Resp, Topics, partitions_json, pubh, rec, start_in, ws_close_after_data, ws_err,
    ws_frame, ws_ok, ws_quiet, ws_text,
};
use common::{Json, parse_json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const PUB: &str = "/v1/msgs/orders/v1";
const SUB: &str = "/v1/msgs/app1/orders/v1";
const WS_PUB: &str = "/v1/ws/msgs/orders/v1";

/// A single pub of `body` by `app1` to `path` with id `id` on a new connection.
fn pub_id(t: &Topics, path: &str, id: &str, body: &[u8]) -> Resp {
    t.once("POST", path, &[("Appid", "app1"), ("Pubkey", "pk"), ("X-Msg-Id", id)], body)
}

/// A stored (not duplicate) pub: 201, no `X-Duplicate`; its position.
#[track_caller]
fn stored(r: &Resp) -> (i32, i64) {
    assert!(!r.has_header("x-duplicate"), "a first pub carries X-Duplicate: {r:?}");
    r.pubd()
}

/// A duplicate: 201 `{"ok":1}`, `X-Duplicate: 1`; its position.
#[track_caller]
fn duplicate(r: &Resp) -> (i32, i64) {
    assert_eq!(r.header("x-duplicate"), Some("1"), "not answered as a duplicate: {r:?}");
    r.pubd()
}

/// Every message of `app1/orders/v1` for a fresh `group`: (partition, offset) → payload.
fn read_all(t: &Topics, group: &str) -> BTreeMap<(i32, i64), Vec<u8>> {
    let recs = common::topics::drain(&mut t.conn(), "app1", &format!("{SUB}?group={group}"), &[]);
    let mut out = BTreeMap::new();
    for r in recs {
        assert!(out.insert((r.partition, r.offset), r.payload).is_none(), "delivered twice");
    }
    out
}

/// A ws pub answer frame's members, sorted (the contract names members, not their order).
#[track_caller]
fn members(frame: &str) -> Vec<(String, Json)> {
    match parse_json(frame) {
        Ok(Json::Obj(mut m)) => {
            m.sort_by(|a, b| a.0.cmp(&b.0));
            m
        }
        other => panic!("answer frame {frame:?} is not a JSON object: {other:?}"),
    }
}

/// The members of a ws duplicate answer for (p, o).
fn ws_dup(p: u32, o: i64) -> Vec<(String, Json)> {
    members(&format!(r#"{{"ok":1,"partition":{p},"offset":{o},"duplicate":1}}"#))
}

/// One row of a pub refusal table: path, headers, body, status, error text.
type PubCase<'a> = (String, Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);

/// One answer of the concurrent test: position, `X-Duplicate: 1` or not, the thread.
type Answer = ((i32, i64), bool, usize);

// ---------------------------------------------------------------------------------------------
// Validation and order (4.4, 4.1)
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_ids_async_and_batch_are_illegal_msg_id_after_the_tag_and_store_nothing() {
    let t = Topics::start("dedupe-valid", &[FAST, ("ESUB_PUB_MAX_BYTES", "100")]);
    t.create("app1", "orders", "v1", 1);
    let app = [("Appid", "app1"), ("Pubkey", "pk")];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        let mut h = app.to_vec();
        h.extend_from_slice(extra);
        h
    };
    let id129: &'static str = "i".repeat(129).leak();
    let key257: &'static str = "k".repeat(257).leak();
    let tag1025: &'static str = "t".repeat(1025).leak();
    let batch_body = rec(b"", b"", b"r0");
    // (path, headers, body, status, text)
    let cases: Vec<PubCase> = vec![
        (PUB.into(), with(&[("X-Msg-Id", "")]), b"m".to_vec(), 400, "illegal msg id"),
        (PUB.into(), with(&[("X-Msg-Id", id129)]), b"m".to_vec(), 400, "illegal msg id"),
        (PUB.into(), with(&[("X-Msg-Id", "a b")]), b"m".to_vec(), 400, "illegal msg id"),
        (PUB.into(), with(&[("X-Msg-Id", "a\tb")]), b"m".to_vec(), 400, "illegal msg id"),
        (PUB.into(), with(&[("X-Msg-Id", "caf\u{e9}")]), b"m".to_vec(), 400, "illegal msg id"),
        // A valid id with async=1 or on a batch pub.
        (
            format!("{PUB}?async=1"),
            with(&[("X-Msg-Id", "ok")]),
            b"m".to_vec(),
            400,
            "illegal msg id",
        ),
        (format!("{PUB}?async=1"), with(&[("X-Msg-Id", "")]), b"m".to_vec(), 400, "illegal msg id"),
        (format!("{PUB}?batch=1"), with(&[("X-Msg-Id", "ok")]), batch_body, 400, "illegal msg id"),
        // Order: names, auth, size, key, tag come first.
        (
            "/v1/msgs/or.ders/v1".into(),
            with(&[("X-Msg-Id", "")]),
            b"m".to_vec(),
            400,
            "illegal topic",
        ),
        (PUB.into(), vec![("X-Msg-Id", "")], b"m".to_vec(), 401, "auth with empty identity or key"),
        (PUB.into(), with(&[("X-Msg-Id", "")]), vec![b'x'; 101], 413, "too big message"),
        (PUB.into(), with(&[("X-Msg-Id", "")]), Vec::new(), 400, "too small message"),
        (
            format!("{PUB}?key={key257}"),
            with(&[("X-Msg-Id", "")]),
            b"m".to_vec(),
            400,
            "too big key",
        ),
        (
            PUB.into(),
            with(&[("X-Msg-Id", ""), ("X-Tag", tag1025)]),
            b"m".to_vec(),
            400,
            "too big tag",
        ),
        (
            format!("{PUB}?async=1"),
            with(&[("X-Msg-Id", "ok"), ("X-Tag", tag1025)]),
            b"m".to_vec(),
            400,
            "too big tag",
        ),
    ];
    for (path, headers, body, status, text) in &cases {
        let r = t.once("POST", path, headers, body);
        assert_eq!(
            (r.status, r.body_str()),
            (*status, format!(r#"{{"errmsg":"{text}"}}"#)),
            "POST {path} {:?}",
            headers.iter().map(|(k, v)| (k, &v[..v.len().min(20)])).collect::<Vec<_>>()
        );
        r.assert_err(*status, text);
    }
    assert_eq!(t.offsets("app1", "orders", "v1"), vec![(0, 0)], "a refused pub stored something");
    // The edges of the rule: 128 bytes, and every byte of 0x21..=0x7E.
    let all: String = (0x21u8..=0x7E).map(char::from).collect();
    let id128 = "i".repeat(128);
    let mut c = t.conn();
    for (i, id) in ["!", "~", id128.as_str(), all.as_str()].iter().enumerate() {
        let r = c.publish("app1", PUB, &[("X-Msg-Id", id)], b"m");
        assert_eq!(stored(&r), (0, i as i64), "id {id:?}");
    }
}

/// In file mode a missing topic is 400 `invalid topic`: the id is checked before it.
#[test]
fn the_id_is_checked_before_the_topic() {
    let dir = DataDir::new("dedupe-order-topic");
    let apps = PathBuf::from(format!("{}.apps.json", dir.as_str()));
    std::fs::write(
        &apps,
        r#"{"admin": {"appid": "ops", "secret": "s0"},
            "apps": [{"appid": "app1", "secret": "s1", "topics": ["orders"],
                      "subscriptions": [], "groups": []}]}"#,
    )
    .unwrap();
    let server = start_in(&dir, &[("ESUB_APPS_FILE", apps.to_str().unwrap())]);
    let t = Topics { server, dir };
    let h = |id: &'static str| vec![("Appid", "app1"), ("Pubkey", "s1"), ("X-Msg-Id", id)];
    t.once("POST", PUB, &h(""), b"m").assert_err(400, "illegal msg id");
    t.once("POST", &format!("{PUB}?async=1"), &h("x"), b"m").assert_err(400, "illegal msg id");
    t.once("POST", PUB, &h("x"), b"m").assert_err(400, "invalid topic");
    drop(t);
    let _ = std::fs::remove_file(&apps);
}

// ---------------------------------------------------------------------------------------------
// Duplicates within the window
// ---------------------------------------------------------------------------------------------

#[test]
fn a_duplicate_answers_the_first_position_and_stores_nothing() {
    let t = Topics::start("dedupe-dup", &[FAST]);
    t.create("app1", "orders", "v1", 4);
    let k3 = common::topics::key_for(3, 4);
    let a = stored(&pub_id(&t, &format!("{PUB}?key={k3}"), "A", b"first A"));
    assert_eq!(a, (3, 0));
    let b = stored(&pub_id(&t, PUB, "B", b"first B"));
    // Ids are bytes: case matters.
    let lower = stored(&pub_id(&t, &format!("{PUB}?key={k3}"), "a", b"first a"));
    assert_eq!(lower, (3, 1));
    // Another body, another key, a tag: still the first one's answer.
    let mut c = t.conn();
    for (query, body) in [("", "again"), ("?key=zz", "other key"), (&*format!("?key={k3}"), "x")] {
        let r = c.publish(
            "app1",
            &format!("{PUB}{query}"),
            &[("X-Msg-Id", "A"), ("X-Tag", "t")],
            body.as_bytes(),
        );
        assert_eq!(duplicate(&r), a, "{query} {body}");
    }
    assert_eq!(duplicate(&c.publish("app1", PUB, &[("X-Msg-Id", "B")], b"again")), b);
    // A refused pub registers no id: after a 400 with `C`, `C` stores.
    let tag = "t".repeat(1025);
    // (Refused from the head with the body unread: that connection closes.)
    let h = [("Appid", "app1"), ("Pubkey", "pk"), ("X-Msg-Id", "C"), ("X-Tag", &tag)];
    t.once("POST", PUB, &h, b"c").assert_err(400, "too big tag");
    let mut c = t.conn();
    let cpos = stored(&c.publish("app1", PUB, &[("X-Msg-Id", "C")], b"first C"));
    assert_eq!(duplicate(&c.publish("app1", PUB, &[("X-Msg-Id", "C")], b"c")), cpos);
    // Pubs without an id are never duplicates.
    for _ in 0..2 {
        let r = c.publish("app1", &format!("{PUB}?key={k3}"), &[], b"no id");
        stored(&r);
    }
    let total: i64 = t.offsets("app1", "orders", "v1").iter().map(|(o, l)| l - o).sum();
    assert_eq!(total, 6, "A, B, a, C and two without an id");
    let all = read_all(&t, "g");
    assert_eq!(all[&(a.0, a.1)], b"first A");
    assert_eq!(all[&(b.0, b.1)], b"first B");
    assert_eq!(all[&(3, 1)], b"first a");
    assert_eq!(all[&(cpos.0, cpos.1)], b"first C");
    assert_eq!(all.len(), 6, "{all:?}");
}

#[test]
fn another_topic_or_version_is_another_id_space() {
    let t = Topics::start("dedupe-spaces", &[FAST]);
    for (topic, ver) in [("orders", "v1"), ("other", "v1"), ("orders", "v2")] {
        t.create("app1", topic, ver, 1);
        let path = format!("/v1/msgs/{topic}/{ver}");
        assert_eq!(stored(&pub_id(&t, &path, "same", b"m")), (0, 0), "{topic}/{ver}");
    }
    // Another publisher's topic of the same name (open mode: `app2.orders.v1`).
    t.create("app2", "orders", "v1", 1);
    let r = t.once("POST", PUB, &[("Appid", "app2"), ("Pubkey", "pk"), ("X-Msg-Id", "same")], b"m");
    assert_eq!(stored(&r), (0, 0));
    for (owner, topic, ver) in [
        ("app1", "orders", "v1"),
        ("app1", "other", "v1"),
        ("app1", "orders", "v2"),
        ("app2", "orders", "v1"),
    ] {
        let r = t.once(
            "POST",
            &format!("/v1/msgs/{topic}/{ver}"),
            &[("Appid", owner), ("Pubkey", "pk"), ("X-Msg-Id", "same")],
            b"again",
        );
        assert_eq!(duplicate(&r), (0, 0), "{owner}.{topic}.{ver}");
        assert_eq!(t.offsets(owner, topic, ver), vec![(0, 1)], "{owner}.{topic}.{ver}");
    }
}

// ---------------------------------------------------------------------------------------------
// The window: length and size
// ---------------------------------------------------------------------------------------------

#[test]
fn after_the_window_the_same_id_stores_again() {
    const WINDOW: Duration = Duration::from_millis(300);
    let t = Topics::start("dedupe-window", &[FAST, ("ESUB_DEDUPE_MS", "300")]);
    t.create("app1", "orders", "v1", 1);
    let mut c = t.conn();
    let sent = Instant::now();
    assert_eq!(stored(&c.publish("app1", PUB, &[("X-Msg-Id", "w")], b"w0")), (0, 0));
    let r = c.publish("app1", PUB, &[("X-Msg-Id", "w")], b"w1");
    if sent.elapsed() < WINDOW {
        assert_eq!(duplicate(&r), (0, 0));
    }
    // Poll until the id stores again; every answer before is the duplicate of offset 0.
    let deadline = Instant::now() + common::POLL_DEADLINE;
    let again = loop {
        let r = c.publish("app1", PUB, &[("X-Msg-Id", "w")], b"w2");
        if !r.has_header("x-duplicate") {
            break r;
        }
        assert_eq!(duplicate(&r), (0, 0));
        assert!(Instant::now() < deadline, "the id never left the window");
        thread::sleep(Duration::from_millis(20));
    };
    // The first pub was stored after `sent`, so the window cannot have ended sooner.
    assert!(sent.elapsed() >= WINDOW, "the id left the window after {:?}", sent.elapsed());
    let n = t.offsets("app1", "orders", "v1")[0].1;
    assert_eq!(stored(&again), (0, n - 1));
    assert!(n == 2 || n == 3, "w0, maybe w1 (if the first repeat came late), w2: {n}");
    // The new message opens a new window.
    assert_eq!(duplicate(&c.publish("app1", PUB, &[("X-Msg-Id", "w")], b"w3")), (0, n - 1));
}

#[test]
fn a_zero_window_turns_deduplication_off() {
    let t = Topics::start("dedupe-off", &[FAST, ("ESUB_DEDUPE_MS", "0")]);
    t.create("app1", "orders", "v1", 1);
    let mut c = t.conn();
    for i in 0..3 {
        let r = c.publish("app1", PUB, &[("X-Msg-Id", "same")], format!("m{i}").as_bytes());
        assert_eq!(stored(&r), (0, i));
    }
    assert_eq!(t.partitions("app1", "orders", "v1"), partitions_json(&[(0, 3)]));
}

#[test]
fn a_zero_window_holds_no_concurrent_pub_back() {
    let t = Topics::start("dedupe-off-conc", &[FAST, ("ESUB_DEDUPE_MS", "0")]);
    t.create("app1", "orders", "v1", 1);
    let barrier = Arc::new(Barrier::new(10));
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let mut c = t.conn();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                c.publish("app1", PUB, &[("X-Msg-Id", "same")], b"burst")
            })
        })
        .collect();
    // Join every thread first: a pub that is never answered fails its thread (read timeout).
    let answers: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
    let unanswered = answers.iter().filter(|a| a.is_err()).count();
    assert_eq!(unanswered, 0, "pubs without an answer within {:?}", common::IO_TIMEOUT);
    let mut offsets: Vec<i64> = answers.into_iter().map(|a| stored(&a.unwrap()).1).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (0..10).collect::<Vec<_>>());
    assert_eq!(t.partitions("app1", "orders", "v1"), partitions_json(&[(0, 10)]));
}

#[test]
fn past_max_ids_the_oldest_ids_are_forgotten_first() {
    let t = Topics::start("dedupe-max", &[FAST, ("ESUB_DEDUPE_MAX_IDS", "3")]);
    t.create("app1", "orders", "v1", 1);
    t.create("app1", "other", "v1", 1);
    let mut c = t.conn();
    let mut p = |id: &str| c.publish("app1", PUB, &[("X-Msg-Id", id)], id.as_bytes());
    for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
        assert_eq!(stored(&p(id)), (0, i as i64), "{id}");
    }
    // `a` went when `d` came; its new message then pushes `b` out. `d` is still there.
    assert_eq!(stored(&p("a")), (0, 4));
    assert_eq!(stored(&p("b")), (0, 5));
    assert_eq!(duplicate(&p("d")), (0, 3));
    assert_eq!(stored(&p("c")), (0, 6));
    // The bound is per node: ids of another topic push these out too.
    let mut o = t.conn();
    for id in ["x", "y", "z"] {
        stored(&o.publish("app1", "/v1/msgs/other/v1", &[("X-Msg-Id", id)], b"o"));
    }
    assert_eq!(stored(&p("c")), (0, 7), "c should have been pushed out by x, y, z");
    assert_eq!(t.offsets("app1", "orders", "v1"), vec![(0, 8)]);
}

// ---------------------------------------------------------------------------------------------
// Concurrent duplicates
// ---------------------------------------------------------------------------------------------

#[test]
fn two_hundred_concurrent_pubs_sharing_twenty_ids_store_twenty() {
    const PUBS: usize = 200;
    const IDS: usize = 20;
    let t = Topics::start("dedupe-conc", &[FAST]);
    t.create("app1", "orders", "v1", 4);
    let barrier = Arc::new(Barrier::new(PUBS));
    let handles: Vec<_> = (0..PUBS)
        .map(|n| {
            let mut c = t.conn();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let id = format!("id-{}", n % IDS);
                barrier.wait();
                let r =
                    c.publish("app1", PUB, &[("X-Msg-Id", &id)], format!("{id}/{n}").as_bytes());
                let dup = r.has_header("x-duplicate");
                (n, id, r.pubd(), dup, r)
            })
        })
        .collect();
    let answers: Vec<_> = handles.into_iter().map(|h| h.join().expect("pub thread")).collect();
    // id → (position, duplicate?, thread) of each answer.
    let mut by_id: BTreeMap<String, Vec<Answer>> = BTreeMap::new();
    for (n, id, pos, dup, r) in &answers {
        if *dup {
            assert_eq!(r.header("x-duplicate"), Some("1"), "{r:?}");
        }
        by_id.entry(id.clone()).or_default().push((*pos, *dup, *n));
    }
    assert_eq!(by_id.len(), IDS);
    let dups = answers.iter().filter(|a| a.3).count();
    assert_eq!(dups, PUBS - IDS, "answers with X-Duplicate: 1");
    let stored_msgs = read_all(&t, "g");
    assert_eq!(stored_msgs.len(), IDS, "stored: {:?}", stored_msgs.keys().collect::<Vec<_>>());
    let total: i64 = t.offsets("app1", "orders", "v1").iter().map(|(o, l)| l - o).sum();
    assert_eq!(total, IDS as i64);
    let mut positions = BTreeSet::new();
    for (id, got) in &by_id {
        let first: Vec<_> = got.iter().filter(|g| !g.1).collect();
        assert_eq!(first.len(), 1, "{id}: exactly one answer without X-Duplicate: {got:?}");
        let (pos, _, n) = *first[0];
        assert!(got.iter().all(|g| g.0 == pos), "{id}: answers name different offsets: {got:?}");
        assert_eq!(
            stored_msgs.get(&pos).map(|b| String::from_utf8_lossy(b).into_owned()),
            Some(format!("{id}/{n}")),
            "{id}: the stored message is the first one's"
        );
        assert!(positions.insert(pos), "two ids at {pos:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The window survives restarts
// ---------------------------------------------------------------------------------------------

#[test]
fn the_window_survives_a_clean_restart() {
    let t = Topics::start("dedupe-restart", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    for (i, id) in ["r0", "r1", "r2"].iter().enumerate() {
        assert_eq!(stored(&pub_id(&t, PUB, id, id.as_bytes())), (0, i as i64));
    }
    let t = t.restart(&[FAST]);
    for (i, id) in ["r0", "r1", "r2"].iter().enumerate() {
        assert_eq!(duplicate(&pub_id(&t, PUB, id, b"again")), (0, i as i64), "{id}");
    }
    assert_eq!(stored(&pub_id(&t, PUB, "r3", b"r3")), (0, 3));
    let t = t.restart(&[FAST]);
    assert_eq!(duplicate(&pub_id(&t, PUB, "r3", b"again")), (0, 3));
    assert_eq!(duplicate(&pub_id(&t, PUB, "r0", b"again")), (0, 0));
    assert_eq!(t.offsets("app1", "orders", "v1"), vec![(0, 4)]);
}

/// One pub over a raw socket that never panics: `Some((status, headers, body))`, or `None` when
/// the connection failed (the server was killed).
fn try_pub(s: &mut TcpStream, id: &str) -> Option<(u16, String, Vec<u8>)> {
    let req = format!(
        "POST {PUB} HTTP/1.1\r\nHost: e\r\nAppid: app1\r\nPubkey: pk\r\nX-Msg-Id: {id}\r\n\
         Content-Length: {}\r\n\r\n{id}",
        id.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = head.get(9..12)?.parse().ok()?;
                return Some((status, head, buf[end + 4..end + 4 + len].to_vec()));
            }
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

#[test]
fn ids_answered_before_kill_9_are_duplicates_after_it() {
    const WRITERS: usize = 4;
    let env = [FAST, ("ESUB_FSYNC", "always")];
    let t = Topics::start("dedupe-kill", &env);
    t.create("app1", "orders", "v1", 2);
    let addr: SocketAddr = t.addr;
    let answered = Arc::new(Mutex::new(BTreeMap::<String, (i32, i64)>::new()));
    let attempted = Arc::new(Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (answered, attempted, count, stop) =
                (answered.clone(), attempted.clone(), count.clone(), stop.clone());
            thread::spawn(move || {
                let mut s = TcpStream::connect_timeout(&addr, common::IO_TIMEOUT).unwrap();
                s.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let id = format!("w{w}-{i}");
                    attempted.lock().unwrap().push(id.clone());
                    let Some((status, head, body)) = try_pub(&mut s, &id) else { return };
                    assert_eq!((status, body.as_slice()), (201, &b"{\"ok\":1}"[..]), "{head}");
                    assert_eq!(header_of(&head, "x-duplicate"), None, "{head}");
                    let p = header_of(&head, "x-partition").unwrap().parse().unwrap();
                    let o = header_of(&head, "x-offset").unwrap().parse().unwrap();
                    answered.lock().unwrap().insert(id, (p, o));
                    count.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let deadline = Instant::now() + common::POLL_DEADLINE;
    while count.load(Ordering::SeqCst) < 200 {
        assert!(Instant::now() < deadline, "writers too slow");
        thread::sleep(Duration::from_millis(5));
    }
    let t = t.kill9_restart(&env);
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().expect("writer");
    }
    let answered = answered.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();
    assert!(answered.len() >= 200);
    // Retry every id: an answered one is a duplicate at its position; one in flight at the kill
    // is either a duplicate or stored now, never both.
    let mut c = t.conn();
    let mut positions = BTreeMap::new();
    for id in &attempted {
        let r = c.publish("app1", PUB, &[("X-Msg-Id", id)], b"retry");
        let pos = r.pubd();
        match answered.get(id) {
            Some(before) => assert_eq!((duplicate(&r), pos), (*before, *before), "{id}"),
            None => assert!(r.status == 201, "{id}: {r:?}"),
        }
        assert!(positions.insert(pos, id.clone()).is_none(), "{id} at a taken position {pos:?}");
    }
    let all = read_all(&t, "g");
    assert_eq!(all.len(), attempted.len(), "one message per id");
    for (pos, id) in &positions {
        let body = String::from_utf8_lossy(&all[pos]).into_owned();
        match answered.get(id) {
            Some(_) => assert_eq!(&body, id, "{pos:?}"),
            None => assert!(body == *id || body == "retry", "{id} at {pos:?}: {body:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Websocket pub frames' "id" (4.3, 4.4)
// ---------------------------------------------------------------------------------------------

#[test]
fn ws_text_frames_with_an_id_share_the_window() {
    let t = Topics::start("dedupe-ws", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    assert_eq!(stored(&pub_id(&t, PUB, "h", b"http")), (0, 0));
    let mut ws = t.ws_raw(WS_PUB, &pubh("app1"));
    let x = |n: usize| "x".repeat(n);
    let frames: Vec<(bool, String)> = vec![
        (true, r#"{"data":"a","id":"x"}"#.into()),
        (true, r#"{"data":"b","id":"y","key":"k","tag":"t"}"#.into()),
        (true, r#"{"data":"c","id":"x"}"#.into()),
        (true, r#"{"id":"h","data":"d"}"#.into()),
        (false, "e".into()),
        (true, r#"{"data":"f","id":""}"#.into()),
        (true, format!(r#"{{"data":"f","id":"{}"}}"#, x(129))),
        (true, r#"{"data":"f","id":"a b"}"#.into()),
        (true, r#"{"data":"f","id":"caf\u00e9"}"#.into()),
        (true, r#"{"data":"f","id":"\u007f"}"#.into()),
        // Size, key and tag come before the id.
        (true, r#"{"data":"","id":""}"#.into()),
        (true, format!(r#"{{"data":"f","key":"{}","id":""}}"#, x(257))),
        (true, format!(r#"{{"data":"f","tag":"{}","id":""}}"#, x(1025))),
        (true, format!(r#"{{"data":"g","id":"{}"}}"#, x(128))),
        (true, r#"{"data":"g","id":"x"}"#.into()),
    ];
    let bytes: Vec<u8> =
        frames.iter().flat_map(|(text, p)| ws_frame(*text, p.as_bytes())).collect();
    ws.send(&bytes);
    let want: Vec<Vec<(String, Json)>> = vec![
        members(&ws_ok(0, 1)),
        members(&ws_ok(0, 2)),
        ws_dup(0, 1),
        ws_dup(0, 0),
        members(&ws_ok(0, 3)),
        members(&ws_err("illegal msg id")),
        members(&ws_err("illegal msg id")),
        members(&ws_err("illegal msg id")),
        members(&ws_err("illegal msg id")),
        members(&ws_err("illegal msg id")),
        members(&ws_err("too small message")),
        members(&ws_err("too big key")),
        members(&ws_err("too big tag")),
        members(&ws_ok(0, 4)),
        ws_dup(0, 1),
    ];
    for (i, w) in want.iter().enumerate() {
        let got = ws_text(&mut ws);
        assert_eq!(&members(&got), w, "answer {i} ({:?}): {got}", frames[i].1);
    }
    ws_quiet(&mut ws, Duration::from_millis(100));
    // An HTTP pub sees the ws ids.
    assert_eq!(duplicate(&pub_id(&t, PUB, "y", b"again")), (0, 2));
    let all = read_all(&t, "g");
    let bodies: Vec<&[u8]> = all.values().map(Vec::as_slice).collect();
    assert_eq!(bodies, vec![&b"http"[..], b"a", b"b", b"e", b"g"]);
}

#[test]
fn a_non_string_id_closes_1007() {
    let t = Topics::start("dedupe-ws-1007", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    let bad = [
        r#"{"data":"a","id":5}"#,
        r#"{"data":"a","id":["x"]}"#,
        r#"{"data":"a","id":{}}"#,
        r#"{"data":"a","id":true}"#,
    ];
    for (i, frame) in bad.iter().enumerate() {
        let mut ws = t.ws_raw(WS_PUB, &pubh("app1"));
        let mut bytes = ws_frame(true, format!(r#"{{"data":"ok{i}","id":"good{i}"}}"#).as_bytes());
        bytes.extend(ws_frame(true, frame.as_bytes()));
        ws.send(&bytes);
        assert_eq!(ws_text(&mut ws), ws_ok(0, i as i64), "{frame}");
        assert_eq!(ws_close_after_data(&mut ws, 1007, None), 0, "{frame}");
    }
    assert_eq!(t.offsets("app1", "orders", "v1"), vec![(0, bad.len() as i64)]);
}

#[test]
fn an_id_on_an_async_ws_pub_is_refused_per_frame() {
    let t = Topics::start("dedupe-ws-async", &[FAST]);
    t.create("app1", "orders", "v1", 1);
    let mut ws = t.ws_raw(&format!("{WS_PUB}?async=1"), &pubh("app1"));
    let frames = [
        ws_frame(true, br#"{"data":"a","id":"x"}"#),
        ws_frame(true, br#"{"data":"b"}"#),
        ws_frame(true, br#"{"data":"c","id":""}"#),
        ws_frame(false, b"d"),
        ws_frame(true, br#"{"data":"e","id":"x"}"#),
    ]
    .concat();
    ws.send(&frames);
    assert_eq!(ws_text(&mut ws), ws_err("illegal msg id"));
    assert_eq!(ws_text(&mut ws), ws_ok(0, 0));
    assert_eq!(ws_text(&mut ws), ws_err("illegal msg id"));
    assert_eq!(ws_text(&mut ws), ws_ok(0, 1));
    assert_eq!(ws_text(&mut ws), ws_err("illegal msg id"));
    ws_quiet(&mut ws, Duration::from_millis(100));
    let all = read_all(&t, "g");
    let bodies: Vec<&[u8]> = all.values().map(Vec::as_slice).collect();
    assert_eq!(bodies, vec![&b"b"[..], b"d"]);
}
