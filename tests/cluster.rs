//! Cluster mode (`API-cluster.md`) with real processes on loopback: nats-server(s) on free ports
//! and esub nodes with `ESUB_CLUSTER`. Reps cross nodes (every pair, binary bodies byte for
//! byte), token rules, racing reps, cross-node takeover, membership, duplicate names, NATS down,
//! NATS over TLS.

mod common;

use common::cluster::{body, member_names, wait_members, wait_routed, wait_stopped};
use common::nats::{Nats, esub_node, wait_joined};
use common::tls::Pki;
use common::{Json, Server, parse_json, run_to_exit};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);

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
fn a_key_fulfilled_here_and_claimed_elsewhere_is_claimed_back_over_nats() {
    // Within the 500 ms a fulfilled key's subjects linger, a sub on the same node parks without
    // asking NATS; once another node claimed the key meanwhile, it must ask (and take over).
    let nats = Nats::start();
    let a = esub_node(&nats.url(), "a", &[]);
    let b = esub_node(&nats.url(), "b", &[]);
    for round in 0..20 {
        let mut sub = a.sub("/sub/hop");
        a.wait_for_key("hop");
        wait_routed(&b, "hop");
        b.post("/rep/hop", b"x").assert(200, b"OK");
        sub.read_response().assert_delivered(b"x");
        // At once, b claims the free key (a's lingering subject answers), then a claims it
        // back: b's sub must get 409, not stay parked beside a's.
        let mut on_b = b.sub("/sub/hop");
        b.wait_for_key("hop");
        let mut back = a.sub("/sub/hop");
        on_b.read_response().assert_text(409, "Sub taken over");
        a.wait_for_key("hop");
        b.wait_for_key_gone("hop");
        wait_routed(&b, "hop");
        let body = format!("r{round}");
        b.post("/rep/hop", body.as_bytes()).assert(200, b"OK");
        back.read_response().assert_delivered(body.as_bytes());
        a.wait_for_key_gone("hop");
    }
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
fn a_psub_pool_on_another_node_takes_reps_round_robin() {
    use common::ws::{expect_quiet, recv_bytes, ws_join};
    let nats = Nats::start();
    let a = esub_node(&nats.url(), "a", &[]);
    let b = esub_node(&nats.url(), "b", &[]);
    let mut members =
        [ws_join(&b, "/psub/pl?token=t&shared=1"), ws_join(&b, "/psub/pl?token=t&shared=1")];
    b.wait_for_key("pl");
    wait_routed(&a, "pl");
    a.post("/rep/pl", b"no").assert_text(403, "Invalid token");
    for i in 0..4u8 {
        let psub = if i % 2 == 0 { "" } else { "&psub=1" };
        a.post(&format!("/rep/pl?token=t{psub}"), &[b'0' + i]).assert(200, b"OK");
    }
    assert_eq!(recv_bytes(&mut members[0]), b"0");
    assert_eq!(recv_bytes(&mut members[1]), b"1");
    assert_eq!(recv_bytes(&mut members[0]), b"2");
    assert_eq!(recv_bytes(&mut members[1]), b"3");

    // A sub on the asking node takes a plain rep there; psub=1 still goes to the pool.
    let mut sub = a.sub("/sub/pl?token=t");
    a.wait_for_key("pl");
    a.post("/rep/pl?token=t&psub=1", b"pool").assert(200, b"OK");
    assert_eq!(recv_bytes(&mut members[0]), b"pool");
    a.post("/rep/pl?token=t", b"sub").assert(200, b"OK");
    sub.read_response().assert_delivered(b"sub");
    expect_quiet(&mut members[1], Duration::from_millis(200));

    // The pool leaves with its last member: then nobody holds the key anywhere.
    drop(members);
    b.wait_for_key_gone("pl");
    let end = Instant::now() + DEADLINE;
    loop {
        let r = a.post("/rep/pl?token=t&psub=1", b"late");
        if r.status == 404 {
            r.assert_text(404, "Unknown key");
            break;
        }
        assert!(Instant::now() < end, "pool still answers: {r:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `HEAD path` on `via` until it answers 200; returns its `Location`.
fn wait_location(via: &Server, path: &str) -> String {
    let end = Instant::now() + DEADLINE;
    loop {
        let r = via.head(path);
        if r.status == 200 {
            assert_eq!(r.header("content-length"), Some("0"), "{r:?}");
            return r.header("location").expect("a 200 to HEAD has a Location").to_string();
        }
        assert_eq!(r.status, 404, "HEAD {path} via {}: {r:?}", via.addr);
        assert!(Instant::now() < end, "HEAD {path} via {}: {r:?}", via.addr);
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn head_names_the_node_that_holds_a_key() {
    use common::ws::ws_join;
    let mut nats = Nats::start();
    let node = |name: &str, addr: &str| esub_node(&nats.url(), name, &[("ESUB_ADVERTISE", addr)]);
    let (a, b, c) = (node("a", "a.test:1"), node("b", "b.test:2"), node("c", "c.test:3"));
    for path in ["/sub/hk", "/psub/hk", "/rep/hk", "/rsub/hk"] {
        a.head(path).assert(404, b"");
    }
    let mut sub = b.sub("/sub/hk?token=t");
    b.wait_for_key("hk");
    assert_eq!(wait_location(&a, "/sub/hk?token=other"), "http://b.test:2/sub/hk");
    assert_eq!(wait_location(&c, "/rep/hk"), "http://b.test:2/rep/hk");
    assert_eq!(wait_location(&b, "/sub/hk"), "http://b.test:2/sub/hk");
    a.head("/psub/hk").assert(404, b"");
    a.head("/rsub/hk").assert(404, b"");

    // A pool on c: /psub and /rep find it; once a sub waits on a, /rep finds the sub first.
    let member = ws_join(&c, "/psub/pk");
    assert_eq!(wait_location(&a, "/psub/pk"), "http://c.test:3/psub/pk");
    assert_eq!(wait_location(&b, "/rep/pk"), "http://c.test:3/rep/pk");
    b.head("/sub/pk").assert(404, b"");
    let _sub_a = a.sub("/sub/pk");
    a.wait_for_key("pk");
    assert_eq!(wait_location(&b, "/sub/pk"), "http://a.test:1/sub/pk");
    assert_eq!(wait_location(&b, "/rep/pk"), "http://a.test:1/rep/pk");
    drop(member);

    // HEAD took nothing: the sub still gets its rep.
    b.post("/rep/hk?token=t", b"still here").assert(200, b"OK");
    sub.read_response().assert_delivered(b"still here");

    // NATS down: a key held elsewhere cannot be located (503); one held here still is.
    let _local = a.sub("/sub/mine");
    a.wait_for_key("mine");
    nats.kill();
    let end = Instant::now() + DEADLINE;
    while a.head("/sub/elsewhere").status != 503 {
        assert!(Instant::now() < end, "no 503 to HEAD with NATS down");
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(a.head("/sub/mine").header("location"), Some("http://a.test:1/sub/mine"));
}

#[test]
fn keys_is_a_node_map_with_null_for_a_silent_node() {
    let nats = Nats::start();
    // Heartbeats of 1 s keep a frozen node a member (3 s) well past the 300 ms scatter.
    let env = [
        ("ESUB_CLUSTER_TIMEOUT_MS", "300"),
        ("ESUB_CLUSTER_HEARTBEAT_MS", "1000"),
        ("ESUB_CLUSTER_TOKEN", "ct"),
    ];
    let nodes: Vec<Server> =
        ["a", "b", "c"].iter().map(|n| esub_node(&nats.url(), n, &env)).collect();
    let _subs = [nodes[0].sub("/sub/k2"), nodes[0].sub("/sub/k1"), nodes[2].sub("/sub/z")];
    nodes[0].wait_for_keys(&["k1", "k2"]);
    nodes[2].wait_for_key("z");
    let map = |s: &Server| {
        let mut c = s.client();
        c.send(b"GET /keys HTTP/1.1\r\nHost: esub\r\nX-Esub-Cluster-Token: ct\r\n\r\n");
        let r = c.read_response();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        r.body_str()
    };
    let want = r#"{"a":["k1","k2"],"b":[],"c":["z"]}"#;
    // Each node lists the others once it has heard their heartbeats.
    for n in &nodes {
        let end = Instant::now() + DEADLINE;
        while map(n) != want {
            assert!(Instant::now() < end, "{}: {}", n.addr, map(n));
            thread::sleep(Duration::from_millis(20));
        }
    }
    // The local form needs no token; the map does.
    assert_eq!(nodes[0].get("/keys?local=1").body_str(), r#"["k1","k2"]"#);
    nodes[0].get("/keys").assert_text(401, "Invalid cluster token");

    let signal = |sig: &str| {
        let st =
            std::process::Command::new("kill").args([sig, &nodes[2].pid().to_string()]).status();
        assert!(st.unwrap().success());
    };
    signal("-STOP");
    wait_stopped(nodes[2].pid());
    let start = Instant::now();
    assert_eq!(map(&nodes[1]), r#"{"a":["k1","k2"],"b":[],"c":null}"#);
    let took = start.elapsed();
    signal("-CONT");
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(2), "{took:?}");
}

/// The `stored` count `via`'s `/members` shows for `node`.
fn stored_of(via: &Server, node: &str) -> Option<i64> {
    match parse_json(&via.get("/members").body_str()) {
        Ok(Json::Arr(rows)) => rows.iter().find_map(|r| match (r.get("node"), r.get("stored")) {
            (Some(Json::Str(n)), Some(Json::Num(s))) if n == node => Some(*s as i64),
            _ => None,
        }),
        other => panic!("/members: {other:?}"),
    }
}

#[test]
fn an_undelivered_forwarded_rep_is_stored_and_replayed_from_another_node() {
    let nats = Nats::start();
    let dir = common::topics::DataDir::new("cluster-phase2");
    let store = [
        ("ESUB_STORE", "undelivered"),
        ("ESUB_DATA_DIR", dir.as_str()),
        ("ESUB_ADVERTISE", "a.test:1"),
    ];
    let a = esub_node(&nats.url(), "a", &store);
    let b = esub_node(&nats.url(), "b", &[]);
    wait_members(&b, &["a", "b"], DEADLINE);
    // Nobody holds the key anywhere: 404, stored on the node that took the rep.
    for body in [&b"first"[..], b"second"] {
        let r = a.post("/rep/later?token=t", body);
        r.assert_text(404, "Unknown key");
        assert_eq!(r.header("x-esub-stored"), Some("true"), "{r:?}");
    }
    // The next heartbeat counts them.
    let end = Instant::now() + DEADLINE;
    while stored_of(&b, "a") != Some(2) {
        assert!(Instant::now() < end, "a's stored count: {:?}", stored_of(&b, "a"));
        thread::sleep(Duration::from_millis(20));
    }
    // Another node finds them (HEAD) and replays them (its /rsub is forwarded), oldest first.
    assert_eq!(wait_location(&b, "/rsub/later"), "http://a.test:1/rsub/later");
    b.get("/rsub/later?token=x").assert_text(403, "Invalid token");
    b.get("/rsub/later").assert_text(403, "Invalid token");
    let r = b.get("/rsub/later?token=t");
    r.assert(200, b"first");
    assert_eq!(r.header("x-esub-remaining"), Some("1"));
    let r = b.get("/rsub/later?token=t");
    r.assert(200, b"second");
    assert_eq!(r.header("x-esub-remaining"), Some("0"));
    // Each was removed on a as it was answered: nothing is left anywhere.
    a.get("/rsub/later?token=t").assert_text(404, "Nothing stored");
    let end = Instant::now() + DEADLINE;
    loop {
        let r = b.get("/rsub/later?token=t");
        if r.status == 404 {
            r.assert_text(404, "Nothing stored");
            break;
        }
        assert!(Instant::now() < end, "{r:?}");
        thread::sleep(Duration::from_millis(20));
    }
    b.head("/rsub/later").assert(404, b"");

    // A holder's 403 is never stored, even with a store.
    let mut sub = b.sub("/sub/held?token=right");
    b.wait_for_key("held");
    wait_routed(&a, "held");
    let r = a.post("/rep/held?token=wrong", b"no");
    r.assert_text(403, "Invalid token");
    assert_eq!(r.header("x-esub-stored"), None);
    a.post("/rep/held?token=right", b"yes").assert(200, b"OK");
    sub.read_response().assert_delivered(b"yes");
    a.get("/rsub/held?token=wrong").assert_text(404, "Nothing stored");
}

#[test]
fn join_at_run_time() {
    let nats = Nats::start();
    let a = esub_node(&nats.url(), "a", &[]);
    let single = |name: &str| {
        Server::start(&[
            ("ESUB_NODE_NAME", name),
            ("ESUB_CLUSTER_HEARTBEAT_MS", "200"),
            ("ESUB_CLUSTER_TIMEOUT_MS", "500"),
            ("ESUB_TOPICS", "off"),
        ])
    };
    let b = single("b");
    assert!(!b.get("/info").body_str().contains("cluster"));
    let mut early = b.sub("/sub/early");
    b.wait_for_key("early");

    for bad in ["/join", "/join?nats=", "/join?nats=http://127.0.0.1:1", "/join?nats=127.0.0.1:1"] {
        b.post(bad, b"").assert_text(400, "Bad nats URL");
    }
    let r = b.get("/join?nats=nats://127.0.0.1:1");
    assert_eq!((r.status, r.allow()), (405, vec!["POST".to_string()]));
    // Nothing there: 502 within the timeout, and the node is still a single node.
    let dead = common::nats::free_port();
    let start = Instant::now();
    b.post(&format!("/join?nats=nats://127.0.0.1:{dead}"), b"")
        .assert_text(502, "Cluster unreachable");
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    assert!(!b.get("/info").body_str().contains("cluster"));
    b.post("/rep/nobody", b"x").assert_text(404, "Unknown key");

    // The real one: 200 with the members, b among them; the sub parked before is reachable.
    let r = b.post(&format!("/join?nats={}", nats.url()), b"");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body_str().contains("\"node\":\"b\""), "{}", r.body_str());
    assert!(b.get("/info").body_str().contains("\"node\":\"b\",\"cluster\":\"connected\""));
    wait_members(&a, &["a", "b"], DEADLINE);
    wait_members(&b, &["a", "b"], DEADLINE);
    wait_routed(&a, "early");
    a.post("/rep/early", b"joined").assert(200, b"OK");
    early.read_response().assert_delivered(b"joined");
    // Joining the same NATS again is fine; another is not, on a configured node either.
    for n in [&a, &b] {
        let r = n.post(&format!("/join?nats={}", nats.url()), b"");
        assert_eq!((r.status, r.header("content-type")), (200, Some("application/json")));
    }
    let other = format!("/join?nats=nats://127.0.0.1:{dead}");
    b.post(&other, b"").assert_text(409, "Already in a cluster");
    a.post(&other, b"").assert_text(409, "Already in a cluster");

    // A node with a live node's name is refused and stays a single node.
    let c = single("a");
    c.post(&format!("/join?nats={}", nats.url()), b"").assert_text(409, "Node name in use");
    assert!(!c.get("/info").body_str().contains("cluster"));
    c.post("/rep/early", b"x").assert_text(404, "Unknown key");
    wait_members(&a, &["a", "b"], DEADLINE);
}

#[test]
fn join_needs_the_cluster_token() {
    let nats = Nats::start();
    let b = Server::start(&[
        ("ESUB_NODE_NAME", "b"),
        ("ESUB_CLUSTER_TOKEN", "ct"),
        ("ESUB_TOPICS", "off"),
    ]);
    let path = format!("/join?nats={}", nats.url());
    b.post(&path, b"").assert_text(401, "Invalid cluster token");
    let mut c = b.client();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: esub\r\nX-Esub-Cluster-Token: ct\r\nContent-Length: 0\r\n\r\n"
    );
    c.send(req.as_bytes());
    assert_eq!(c.read_response().status, 200);
}

#[test]
fn two_subs_claiming_a_free_key_at_once_leave_one_holder() {
    // Each claim may find the key free (the other's subjects are not in place yet): both park,
    // then each asks the other (`verify`) and exactly one keeps the key; or the later claim
    // reaches the earlier sub and takes it over. Either way one sub gets 409, one holds.
    for routed in [false, true] {
        // Both on one NATS server, then each on its own (interest crosses a route).
        let nats = Nats::cluster(2);
        let second = if routed { 1 } else { 0 };
        let a = esub_node(&nats[0].url(), "a", &[]);
        let b = esub_node(&nats[second].url(), "b", &[]);
        wait_members(&a, &["a", "b"], DEADLINE);
        race_for_a_free_key(Arc::new([a, b]));
    }
}

fn race_for_a_free_key(nodes: Arc<[Server; 2]>) {
    for round in 0..30 {
        let key = format!("both{round}");
        let barrier = Arc::new(Barrier::new(2));
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..2 {
            let (nodes, barrier, key, tx) =
                (nodes.clone(), barrier.clone(), key.clone(), tx.clone());
            thread::spawn(move || {
                let mut c = nodes[i].client();
                barrier.wait();
                c.send_get(&format!("/sub/{key}"));
                let _ = tx.send((i, c.try_read_response()));
            });
        }
        let (loser, r) = rx.recv_timeout(DEADLINE).expect("no sub got 409: both hold the key");
        r.unwrap_or_else(|e| panic!("round {round}: {e}")).assert_text(409, "Sub taken over");
        let winner = 1 - loser;
        let end = Instant::now() + DEADLINE;
        let alone = || nodes[winner].keys().contains(&key) && !nodes[loser].keys().contains(&key);
        while !alone() {
            assert!(Instant::now() < end, "round {round}: {winner} does not hold the key alone");
            thread::sleep(Duration::from_millis(5));
        }
        wait_routed(&nodes[loser], &key);
        nodes[loser].post(&format!("/rep/{key}"), b"one").assert(200, b"OK");
        let (i, r) = rx.recv_timeout(DEADLINE).expect("the winner heard nothing");
        assert_eq!(i, winner);
        r.unwrap_or_else(|e| panic!("round {round}: {e}")).assert_delivered(b"one");
    }
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
    wait_stopped(a.pid());
    let start = Instant::now();
    b.post("/rep/frozen", b"x").assert_text(504, "Cluster timeout");
    b.get("/sub/frozen").assert_text(504, "Cluster timeout");
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    signal("-CONT");
}
