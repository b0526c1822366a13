//! `GET /announce` (`API-cluster.md` section 2): key events on a single node (sub, rep,
//! disconnect, psub pools, stored reps), `since` filtering, the long poll and its timeout, the
//! websocket feed, the cluster token, the 1,000-event ring, and events crossing nodes over NATS.

mod common;

use common::nats::{Nats, esub_node};
use common::ws::{recv, ws_join};
use common::{Client, Json, Response, Server, parse_json};
use std::time::{Duration, Instant};
use tungstenite::Message;

const DEADLINE: Duration = Duration::from_secs(10);

/// One event as `(seq, node, key, event)`.
type Ev = (u64, String, String, String);

fn ev(seq: u64, node: &str, key: &str, event: &str) -> Ev {
    (seq, node.to_string(), key.to_string(), event.to_string())
}

fn event_of(v: &Json) -> Ev {
    let s = |k: &str| v.get(k).and_then(Json::as_str).unwrap_or_else(|| panic!("{k}: {v:?}"));
    let seq = match v.get("seq") {
        Some(Json::Num(n)) => *n as u64,
        other => panic!("seq: {other:?}"),
    };
    assert_eq!(v.object_keys(), ["seq", "node", "key", "event"], "{v:?}");
    (seq, s("node").to_string(), s("key").to_string(), s("event").to_string())
}

/// A 200 JSON array of events.
#[track_caller]
fn events_of(r: &Response) -> Vec<Ev> {
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    match parse_json(&r.body_str()) {
        Ok(Json::Arr(rows)) => rows.iter().map(event_of).collect(),
        other => panic!("not an array: {other:?}"),
    }
}

/// The feed now (`wait_ms=0`), after `since`.
fn feed(s: &Server, since: u64) -> Vec<Ev> {
    events_of(&s.get(&format!("/announce?since={since}&wait_ms=0")))
}

/// Long-polls until the feed after `since` holds `n` events (the poll answers at the first
/// event; no sleeping).
fn wait_feed(s: &Server, since: u64, n: usize) -> Vec<Ev> {
    let end = Instant::now() + DEADLINE;
    loop {
        let got = events_of(&s.get(&format!("/announce?since={since}&wait_ms=2000")));
        if got.len() >= n {
            return got;
        }
        assert!(Instant::now() < end, "feed after {since}: {got:?}, want {n} events");
    }
}

fn solo(env: &[(&str, &str)]) -> Server {
    let mut all = vec![("ESUB_NODE_NAME", "solo"), ("ESUB_TOPICS", "off"), ("ESUB_WORKERS", "2")];
    all.extend_from_slice(env);
    Server::start(&all)
}

/// The next TEXT frame of a websocket feed, as an event.
fn next_event(ws: &mut common::ws::Ws) -> Ev {
    match recv(ws) {
        Message::Text(t) => event_of(&parse_json(t.as_str()).expect("JSON frame")),
        other => panic!("expected a TEXT frame, got {other:?}"),
    }
}

#[test]
fn sub_rep_disconnect_and_pools_are_announced_in_order() {
    let s = solo(&[]);
    assert_eq!(feed(&s, 0), []);

    let mut sub = s.sub("/sub/a");
    assert_eq!(wait_feed(&s, 0, 1), [ev(1, "solo", "a", "new")]);
    s.post("/rep/a", b"x").assert(200, b"OK");
    sub.read_response().assert_delivered(b"x");
    assert_eq!(wait_feed(&s, 1, 1), [ev(2, "solo", "a", "fulfilled")]);

    // A local takeover is no event; the disconnect of the sub that holds the key is `gone`.
    let mut first = s.sub("/sub/b");
    assert_eq!(wait_feed(&s, 2, 1), [ev(3, "solo", "b", "new")]);
    let second = s.sub("/sub/b");
    first.read_response().assert_text(409, "Sub taken over");
    assert_eq!(feed(&s, 3), []);
    drop(second);
    assert_eq!(wait_feed(&s, 3, 1), [ev(4, "solo", "b", "gone")]);

    // A pool is `new` with its first member and `gone` with its last.
    let m1 = ws_join(&s, "/psub/p?shared=1");
    let m2 = ws_join(&s, "/psub/p?shared=1");
    assert_eq!(wait_feed(&s, 4, 1), [ev(5, "solo", "p", "new")]);
    drop(m1);
    drop(m2);
    assert_eq!(wait_feed(&s, 5, 1), [ev(6, "solo", "p", "gone")]);

    let all = feed(&s, 0);
    let kinds: Vec<(u64, &str, &str)> =
        all.iter().map(|(n, _, k, e)| (*n, k.as_str(), e.as_str())).collect();
    assert_eq!(
        kinds,
        [
            (1, "a", "new"),
            (2, "a", "fulfilled"),
            (3, "b", "new"),
            (4, "b", "gone"),
            (5, "p", "new"),
            (6, "p", "gone")
        ]
    );
    // `since` filters by seq; a negative one is "everything".
    assert_eq!(feed(&s, 4), all[4..]);
    assert_eq!(feed(&s, 6), []);
    assert_eq!(events_of(&s.get("/announce?since=-1&wait_ms=0")), all);
    assert_eq!(events_of(&s.get("/announce?wait_ms=0")), all);
}

#[test]
fn a_stored_rep_is_announced() {
    let dir = std::env::temp_dir().join(format!("esub-announce-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let s = solo(&[("ESUB_STORE", "undelivered"), ("ESUB_DATA_DIR", dir.to_str().unwrap())]);
    let r = s.post("/rep/later", b"body");
    r.assert_text(404, "Unknown key");
    assert_eq!(r.header("x-esub-stored"), Some("true"));
    assert_eq!(wait_feed(&s, 0, 1), [ev(1, "solo", "later", "stored")]);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_long_poll_waits_for_an_event_or_answers_empty() {
    let s = solo(&[]);
    // Nothing comes: [] once wait_ms has passed, not before.
    let start = Instant::now();
    assert_eq!(events_of(&s.get("/announce?wait_ms=150")), []);
    assert!(start.elapsed() >= Duration::from_millis(150), "{:?}", start.elapsed());

    // A waiting poll is answered by the first event, and its connection serves on.
    let mut poll = s.client();
    poll.send_get("/announce?since=0&wait_ms=20000");
    let waker = s.sub("/sub/wake");
    let start = Instant::now();
    assert_eq!(events_of(&poll.read_response()), [ev(1, "solo", "wake", "new")]);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(events_of(&poll.get("/announce?since=1&wait_ms=0")), []);

    // A poller that disconnects leaves nothing behind: the next poll and event work as ever.
    let mut gone = s.client();
    gone.send_get("/announce?since=1&wait_ms=20000");
    gone.close();
    let mut poll = s.client();
    poll.send_get("/announce?since=1");
    drop(waker);
    assert_eq!(events_of(&poll.read_response()), [ev(2, "solo", "wake", "gone")]);
}

#[test]
fn bad_parameters_methods_and_upgrades() {
    let s = solo(&[]);
    s.get("/announce?since=x").assert_text(400, "Bad since");
    s.get("/announce?since=1.5").assert_text(400, "Bad since");
    s.get("/announce?since=").assert_text(400, "Bad since");
    s.get("/announce?wait_ms=soon").assert_text(400, "Bad wait_ms");
    s.get("/announce?wait_ms=-1").assert_text(400, "Bad wait_ms");
    let r = s.post("/announce", b"");
    r.assert_text(405, "Method Not Allowed");
    assert_eq!(r.allow(), ["GET"]);
    s.get("/announce/x").assert_text(404, "Not Found");
    // `Upgrade: websocket` without the rest of the handshake is a bad upgrade.
    let mut c = s.client();
    c.send(b"GET /announce HTTP/1.1\r\nHost: esub\r\nUpgrade: websocket\r\n\r\n");
    c.read_response().assert_text(400, "Expected a websocket upgrade");
}

#[test]
fn the_cluster_token_guards_the_feed() {
    let s = solo(&[("ESUB_CLUSTER_TOKEN", "s3cret")]);
    s.get("/announce?wait_ms=0").assert_text(401, "Invalid cluster token");
    let mut c = s.client();
    let head =
        "GET /announce?wait_ms=0 HTTP/1.1\r\nHost: esub\r\nX-Esub-Cluster-Token: wrong\r\n\r\n";
    c.send(head.as_bytes());
    c.read_response().assert_text(401, "Invalid cluster token");
    let head =
        "GET /announce?wait_ms=0 HTTP/1.1\r\nHost: esub\r\nX-Esub-Cluster-Token: s3cret\r\n\r\n";
    c.send(head.as_bytes());
    assert_eq!(events_of(&c.read_response()), []);
    // A websocket without the token is refused before the upgrade.
    let mut c = s.client();
    c.send(common::ws::upgrade_request("/announce").as_bytes());
    c.read_response().assert_text(401, "Invalid cluster token");
}

#[test]
fn the_websocket_feed_sends_from_since_then_live() {
    let s = solo(&[]);
    let sub = s.sub("/sub/w");
    wait_feed(&s, 0, 1);
    drop(sub);
    wait_feed(&s, 1, 1);

    // From since: the ring's events after it, then every new one.
    let mut from = ws_join(&s, "/announce?since=1");
    assert_eq!(next_event(&mut from), ev(2, "solo", "w", "gone"));
    // Without since: only new events.
    let mut live = ws_join(&s, "/announce");
    let mut all = ws_join(&s, "/announce?since=0");
    assert_eq!(next_event(&mut all), ev(1, "solo", "w", "new"));
    assert_eq!(next_event(&mut all), ev(2, "solo", "w", "gone"));

    let mut sub = s.sub("/sub/x");
    for ws in [&mut from, &mut live, &mut all] {
        assert_eq!(next_event(ws), ev(3, "solo", "x", "new"));
    }
    s.post("/rep/x", b"y").assert(200, b"OK");
    sub.read_response().assert_delivered(b"y");
    for ws in [&mut from, &mut live, &mut all] {
        assert_eq!(next_event(ws), ev(4, "solo", "x", "fulfilled"));
    }
    // Pings are answered like any websocket's; a client close is echoed.
    live.send(Message::Ping(b"hi".to_vec().into())).unwrap();
    match live.read().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"hi"),
        other => panic!("expected pong, got {other:?}"),
    }
    live.close(None).unwrap();
    loop {
        match live.read() {
            Ok(Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed) => break,
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn the_ring_keeps_the_last_thousand_events() {
    let s = solo(&[]);
    let mut sub = s.client();
    let mut rep = s.client();
    // 503 rounds of sub + rep: 1,006 events, on two keep-alive connections.
    for _ in 0..503 {
        sub.send_get("/sub/r");
        // The rep may race the sub's parking: 404 means "not yet", so try again.
        loop {
            let r = rep.post("/rep/r", b".");
            if r.status == 200 {
                break;
            }
            assert_eq!(r.status, 404, "{r:?}");
        }
        sub.read_response().assert_delivered(b".");
    }
    let all = wait_feed(&s, 1005, 1);
    assert_eq!(all, [ev(1006, "solo", "r", "fulfilled")]);
    let all = feed(&s, 0);
    assert_eq!(all.len(), 1000);
    assert_eq!(all[0], ev(7, "solo", "r", "new"));
    assert_eq!(all[999], ev(1006, "solo", "r", "fulfilled"));
}

#[test]
fn an_event_on_one_node_reaches_the_feed_of_another() {
    let nats = Nats::cluster(2);
    let a = esub_node(&nats[0].url(), "a", &[]);
    let b = esub_node(&nats[1].url(), "b", &[]);
    // Interest in C.ev crosses the NATS route in its own time: make events on b until a's
    // feed holds b's latest (NATS keeps one publisher's order, so nothing older is in flight).
    let end = Instant::now() + DEADLINE;
    'warm: loop {
        let c: Client = b.sub("/sub/warm");
        b.wait_for_key("warm");
        c.shutdown_write();
        b.wait_for_key_gone("warm");
        let last = feed(&b, 0).pop().expect("b's own events");
        let round = Instant::now() + Duration::from_secs(1);
        while Instant::now() < round {
            if events_of(&a.get("/announce?since=0&wait_ms=200")).contains(&last) {
                break 'warm;
            }
        }
        assert!(Instant::now() < end, "no event of b reached a");
    }

    let mut ws = ws_join(&a, "/announce");
    let mut sub = b.sub("/sub/far");
    let (_, node, key, event) = next_event(&mut ws);
    assert_eq!((node.as_str(), key.as_str(), event.as_str()), ("b", "far", "new"));
    // Fulfilled from a (forwarded to b): b announces it, a hears it.
    let end = Instant::now() + DEADLINE;
    loop {
        let r = a.post("/rep/far", b"hello");
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < end, "rep never routed: {r:?}");
    }
    sub.read_response().assert_delivered(b"hello");
    let (_, node, key, event) = next_event(&mut ws);
    assert_eq!((node.as_str(), key.as_str(), event.as_str()), ("b", "far", "fulfilled"));

    // a's own event is in its feed once (its echo over NATS is ignored), and reaches b.
    let mine = a.sub("/sub/near");
    let (seq, node, key, event) = next_event(&mut ws);
    assert_eq!((node.as_str(), key.as_str(), event.as_str()), ("a", "near", "new"));
    let end = Instant::now() + DEADLINE;
    while !feed(&b, 0).contains(&ev(seq, "a", "near", "new")) {
        assert!(Instant::now() < end, "a's event never reached b");
        let _ = events_of(&b.get("/announce?since=0&wait_ms=100"));
    }
    // An event b makes now reaches a after a's own echo would have (NATS keeps that order):
    // the next frame on a is b's, not a second copy of a's.
    let probe = b.sub("/sub/after");
    let (_, node, key, event) = next_event(&mut ws);
    assert_eq!((node.as_str(), key.as_str(), event.as_str()), ("b", "after", "new"));
    let on_a = feed(&a, 0).into_iter().filter(|e| e.1 == "a" && e.2 == "near").count();
    assert_eq!(on_a, 1);
    drop(mine);
    let (_, node, key, event) = next_event(&mut ws);
    assert_eq!((node.as_str(), key.as_str(), event.as_str()), ("a", "near", "gone"));
    drop(probe);
}
