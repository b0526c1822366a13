//! Cluster mode (`API-cluster.md`) with real processes on loopback: nats-server(s) on free ports
//! and esub nodes with `ESUB_CLUSTER`. Reps cross nodes (every pair, binary bodies byte for
//! byte), token rules, racing reps, cross-node takeover, membership, duplicate names, NATS down,
//! NATS over TLS.

mod common;

use common::nats::{Nats, esub_node, wait_joined};
use common::tls::Pki;
use common::{Json, Server, parse_json, run_to_exit};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);

/// Polls until a rep posted to `via` reaches `key`'s holder: a probe with a token the holder's
/// sub does not have gets the holder's 403 (a 404 means the interest has not crossed yet).
fn wait_routed(via: &Server, key: &str) {
    let end = Instant::now() + DEADLINE;
    loop {
        let r = via.post(&format!("/rep/{key}?token=__probe__"), b"probe");
        if r.status == 403 {
            return;
        }
        assert!(Instant::now() < end, "{key} not routed via {}: {r:?}", via.addr);
        thread::sleep(Duration::from_millis(10));
    }
}

/// A binary body of `len` bytes, every value present.
fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// The node names in `/members`, in order.
fn member_names(s: &Server) -> Vec<String> {
    let r = s.get("/members");
    assert_eq!(r.status, 200, "{r:?}");
    match parse_json(&r.body_str()) {
        Ok(Json::Arr(rows)) => rows
            .into_iter()
            .map(|row| match row.get("node") {
                Some(Json::Str(n)) => n.clone(),
                other => panic!("row without node: {other:?}"),
            })
            .collect(),
        other => panic!("/members: {other:?}"),
    }
}

/// Polls `/members` on `s` until it lists exactly `want`; returns how long that took.
fn wait_members(s: &Server, want: &[&str], within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let names = member_names(s);
        if names == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "members {names:?}, want {want:?} within {within:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_rep_on_each_node_reaches_a_sub_on_each_node() {
    let nats = Nats::cluster(3);
    let nodes: Vec<Server> =
        (0..3).map(|i| esub_node(&nats[i].url(), &format!("n{i}"), &[])).collect();
    let sizes = [0, 1, 4096, 65_537, 300 * 1024, 7, 1 << 20 >> 2, 299_999, 12];
    for (pair, (a, b)) in (0..3).flat_map(|a| (0..3).map(move |b| (a, b))).enumerate() {
        let key = format!("pair-{a}-{b}");
        let mut sub = nodes[b].sub(&format!("/sub/{key}"));
        nodes[b].wait_for_key(&key);
        wait_routed(&nodes[a], &key);
        let sent = body(sizes[pair], pair as u8);
        nodes[a].post(&format!("/rep/{key}"), &sent).assert(200, b"OK");
        sub.read_response().assert_delivered(&sent);
        nodes[b].wait_for_key_gone(&key);
    }
}

#[test]
fn tokens_and_unknown_keys_across_nodes() {
    let nats = Nats::start();
    let a = esub_node(&nats.url(), "a", &[]);
    let b = esub_node(&nats.url(), "b", &[]);
    let info = b.get("/info").body_str();
    assert!(info.contains("\"node\":\"b\",\"cluster\":\"connected\""), "{info}");

    b.post("/rep/nobody", b"x").assert_text(404, "Unknown key");
    let mut sub = a.sub("/sub/tk?token=secret");
    a.wait_for_key("tk");
    wait_routed(&b, "tk");
    b.post("/rep/tk", b"no").assert_text(403, "Invalid token");
    b.post("/rep/tk?token=Secret", b"no").assert_text(403, "Invalid token");
    b.post("/rep/tk?token=secret", b"yes").assert(200, b"OK");
    sub.read_response().assert_delivered(b"yes");
    // The key is gone everywhere: a later rep is 404 (a lingering subject answers a miss).
    b.post("/rep/tk?token=secret", b"again").assert_text(404, "Unknown key");

    // A tokenless sub refuses a rep with a token, and takes one without.
    let mut sub = a.sub("/sub/free");
    a.wait_for_key("free");
    wait_routed(&b, "free");
    b.post("/rep/free?token=x", b"no").assert_text(403, "Invalid token");
    b.post("/rep/free", b"ok").assert(200, b"OK");
    sub.read_response().assert_delivered(b"ok");
}

#[test]
fn racing_reps_from_every_node_deliver_exactly_once() {
    let nats = Nats::start();
    let nodes: Arc<Vec<Server>> =
        Arc::new((0..3).map(|i| esub_node(&nats.url(), &format!("r{i}"), &[])).collect());
    for round in 0..3 {
        let key = format!("race{round}");
        let holder = round % 3;
        let mut sub = nodes[holder].sub(&format!("/sub/{key}"));
        nodes[holder].wait_for_key(&key);
        for n in nodes.iter() {
            wait_routed(n, &key);
        }
        let barrier = Arc::new(Barrier::new(9));
        let racers: Vec<_> = (0..9)
            .map(|i| {
                let (nodes, barrier, key) = (nodes.clone(), barrier.clone(), key.clone());
                thread::spawn(move || {
                    let mut c = nodes[i % 3].client();
                    barrier.wait();
                    let r = c.post(&format!("/rep/{key}"), format!("from {i}").as_bytes());
                    (r.status, r.body_str())
                })
            })
            .collect();
        let results: Vec<(u16, String)> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        let wins = results.iter().filter(|(s, _)| *s == 200).count();
        assert_eq!(wins, 1, "{results:?}");
        assert!(results.iter().all(|(s, b)| *s == 200 || (*s == 404 && b == "Unknown key")));
        let r = sub.read_response();
        assert_eq!(r.status, 200);
        assert!(r.body_str().starts_with("from "));
    }
}

#[test]
fn a_sub_on_another_node_takes_over_or_is_refused() {
    let nats = Nats::start();
    let a = esub_node(&nats.url(), "a", &[]);
    let b = esub_node(&nats.url(), "b", &[]);
    let c = esub_node(&nats.url(), "c", &[]);
    let mut first = a.sub("/sub/tk?token=t");
    a.wait_for_key("tk");
    wait_routed(&b, "tk");
    // Another token: 403, the first sub keeps the key.
    b.get("/sub/tk?token=u").assert_text(403, "Key is used and token does not match.");
    // The same token: the first sub gets 409 and the key moves to b.
    let mut second = b.sub("/sub/tk?token=t");
    first.read_response().assert_text(409, "Sub taken over");
    b.wait_for_key("tk");
    a.wait_for_key_gone("tk");
    wait_routed(&c, "tk");
    c.post("/rep/tk?token=t", b"moved").assert(200, b"OK");
    second.read_response().assert_delivered(b"moved");
}

#[test]
fn members_join_leave_and_loss() {
    let nats = Nats::start();
    let token = [("ESUB_CLUSTER_TOKEN", "ct")];
    let a = esub_node(&nats.url(), "m-a", &token);
    let mut b = esub_node(&nats.url(), "m-b", &token);
    // The cluster token guards /members.
    a.get("/members").assert_text(401, "Invalid cluster token");
    let mut c = a.client();
    c.send(b"GET /members HTTP/1.1\r\nHost: e\r\nX-Esub-Cluster-Token: nope\r\n\r\n");
    c.read_response().assert_text(401, "Invalid cluster token");
    let members = |s: &Server| {
        let mut c = s.client();
        c.send(b"GET /members HTTP/1.1\r\nHost: e\r\nX-Esub-Cluster-Token: ct\r\n\r\n");
        c.read_response()
    };
    assert_eq!(members(&a).status, 200);

    // Without the token the other tests' helper cannot read it: use nodes without one below.
    b.sigterm();
    b.wait_exit(DEADLINE);
    let a2 = esub_node(&nats.url(), "m-c", &[]);
    let d = esub_node(&nats.url(), "m-d", &[]);
    wait_members(&a2, &["m-a", "m-c", "m-d"], DEADLINE);
    let r = a2.get("/members").body_str();
    for field in ["\"addr\"", "\"since_ms\"", "\"subs\"", "\"pools\"", "\"stored\""] {
        assert!(r.contains(field), "{field} in {r}");
    }
    let e = esub_node(&nats.url(), "m-e", &[]);
    // A newcomer appears within one heartbeat (200 ms) of joining, with slack for the poll.
    wait_members(&d, &["m-a", "m-c", "m-d", "m-e"], Duration::from_millis(600));
    // SIGTERM: gone at once (well before 3 heartbeats would expire it).
    e.sigterm();
    let took = wait_members(&d, &["m-a", "m-c", "m-d"], DEADLINE);
    assert!(took < Duration::from_millis(500), "leave took {took:?}");
    // kill -9: gone within 3 heartbeats (600 ms) plus a check's slack.
    drop(a2);
    let took = wait_members(&d, &["m-a", "m-d"], DEADLINE);
    assert!(took < Duration::from_millis(1000), "loss took {took:?}");
    drop(a);
}

#[test]
fn a_duplicate_name_exits_2() {
    let nats = Nats::start();
    let _a = esub_node(&nats.url(), "twin", &[]);
    let env = [
        ("ESUB_CLUSTER", nats.url()),
        ("ESUB_NODE_NAME", "twin".to_string()),
        ("ESUB_TOPICS", "off".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = run_to_exit(&[], &env, DEADLINE);
    assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("twin"), "{}", out.stderr);
}

#[test]
fn invalid_cluster_settings_exit_2() {
    for (var, value) in [
        ("ESUB_CLUSTER", "http://x"),
        ("ESUB_CLUSTER_NAME", "a b"),
        ("ESUB_ADVERTISE", "nohost"),
        ("ESUB_CLUSTER_HEARTBEAT_MS", "0"),
        ("ESUB_CLUSTER_TIMEOUT_MS", "x"),
        ("ESUB_CLUSTER_CA", "/nonexistent/ca.pem"),
    ] {
        let out = run_to_exit(&[], &[(var, value)], DEADLINE);
        assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{var}={value}");
        assert!(out.stderr.contains(var), "{}", out.stderr);
    }
}

#[test]
fn reps_cross_nodes_over_tls_and_an_unknown_ca_never_joins() {
    let (pki, other) = (Pki::new(), Pki::new());
    let nats = Nats::start_tls(&pki);
    let ca = [("ESUB_CLUSTER_CA", pki.ca_path())];
    let a = esub_node(&nats.tls_url(), "a", &ca);
    let b = esub_node(&nats.tls_url(), "b", &ca);
    let mut sub = b.sub("/sub/secure");
    b.wait_for_key("secure");
    wait_routed(&a, "secure");
    let sent = body(300 * 1024, 9);
    a.post("/rep/secure", &sent).assert(200, b"OK");
    sub.read_response().assert_delivered(&sent);
    assert!(a.stderr().contains("tls=true"), "{}", a.stderr());

    // Another CA: every attempt fails the handshake, logged as a WARN; the node serves local
    // routes and stays "connecting".
    let env = [
        ("ESUB_CLUSTER", nats.tls_url()),
        ("ESUB_CLUSTER_CA", other.ca_path().to_string()),
        ("ESUB_NODE_NAME", "c".to_string()),
        ("ESUB_TOPICS", "off".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let c = Server::start(&env);
    let end = Instant::now() + DEADLINE;
    while !c.stderr().contains("UnknownIssuer") {
        assert!(Instant::now() < end, "no TLS failure logged: {}", c.stderr());
        thread::sleep(Duration::from_millis(10));
    }
    assert!(c.stderr().contains("WARN"), "{}", c.stderr());
    let info = c.get("/info").body_str();
    assert!(info.contains("\"cluster\":\"connecting\""), "{info}");
    assert_eq!(member_names(&a), ["a", "b"]);
}

#[test]
fn nats_down_answers_503_then_recovers_without_restart() {
    let mut nats = Nats::start();
    let a = esub_node(&nats.url(), "a", &[]);
    let b = esub_node(&nats.url(), "b", &[]);
    nats.kill();
    let end = Instant::now() + DEADLINE;
    loop {
        let r = a.post("/rep/elsewhere", b"x");
        if r.status == 503 {
            r.assert_text(503, "Cluster unavailable");
            break;
        }
        assert!(Instant::now() < end, "no 503 with NATS down: {r:?}");
        thread::sleep(Duration::from_millis(10));
    }
    assert!(a.get("/info").body_str().contains("\"cluster\":\"connecting\""));
    // Local delivery goes on, and a sub parks locally.
    let mut sub = a.sub("/sub/local");
    a.wait_for_key("local");
    a.post("/rep/local", b"here").assert(200, b"OK");
    sub.read_response().assert_delivered(b"here");

    nats.restart();
    wait_joined(&a);
    wait_joined(&b);
    let mut sub = b.sub("/sub/back");
    b.wait_for_key("back");
    wait_routed(&a, "back");
    a.post("/rep/back", b"again").assert(200, b"OK");
    sub.read_response().assert_delivered(b"again");
}

#[test]
fn prep_frames_are_routed_across_nodes() {
    use common::ws::{recv, ws_join};
    use tungstenite::Message;
    let nats = Nats::start();
    let a = esub_node(&nats.url(), "a", &[]);
    let b = esub_node(&nats.url(), "b", &[]);
    let mut sub = a.sub("/sub/pk?token=t");
    a.wait_for_key("pk");
    wait_routed(&b, "pk");
    let mut p = ws_join(&b, "/prep?confirm=1");
    let frames = [
        r#"{"key":"pk","token":"x","data":"no"}"#,
        r#"{"key":"nobody","token":null,"data":"no"}"#,
        r#"{"key":"pk","token":"t","data":"via prep"}"#,
    ];
    for f in frames {
        p.send(Message::text(f)).unwrap();
    }
    let got: Vec<String> = (0..3)
        .map(|_| match recv(&mut p) {
            Message::Text(t) => t.as_str().to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got, ["Invalid token", "Unknown key", "ok"]);
    sub.read_response().assert_delivered(b"via prep");
}

#[test]
fn a_body_over_max_payload_is_413() {
    let nats = Nats::start();
    let big = [("ESUB_MAX_BODY_BYTES", "4194304")];
    let a = esub_node(&nats.url(), "a", &big);
    let b = esub_node(&nats.url(), "b", &big);
    let mut sub = a.sub("/sub/big");
    a.wait_for_key("big");
    wait_routed(&b, "big");
    // nats-server's default max_payload is 1 MB.
    b.post("/rep/big", &body(1_100_000, 3)).assert_text(413, "Payload Too Large");
    let sent = body(900_000, 4);
    b.post("/rep/big", &sent).assert(200, b"OK");
    sub.read_response().assert_delivered(&sent);
}

#[test]
fn a_frozen_holder_answers_504() {
    let nats = Nats::start();
    let fast = [("ESUB_CLUSTER_TIMEOUT_MS", "300")];
    let a = esub_node(&nats.url(), "a", &fast);
    let b = esub_node(&nats.url(), "b", &fast);
    let _sub = a.sub("/sub/frozen");
    a.wait_for_key("frozen");
    wait_routed(&b, "frozen");
    let signal = |sig: &str| {
        let st = std::process::Command::new("kill").args([sig, &a.pid().to_string()]).status();
        assert!(st.unwrap().success());
    };
    signal("-STOP");
    let start = Instant::now();
    b.post("/rep/frozen", b"x").assert_text(504, "Cluster timeout");
    b.get("/sub/frozen").assert_text(504, "Cluster timeout");
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    signal("-CONT");
}
