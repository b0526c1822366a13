//! Cluster mode under faults (`API-cluster.md` section 4): a NATS server killed under a node (it
//! fails over to another, listed or announced, with its subscriptions), NATS only up after a
//! node started, and a node killed with `kill -9` (its keys become unknown everywhere).

mod common;

use common::Server;
use common::cluster::{body, wait_members, wait_routed};
use common::nats::{Nats, esub_node, wait_joined};
use common::ws::ws_join;
use std::thread;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);
/// `ESUB_CLUSTER_HEARTBEAT_MS` of every node here (`esub_node` sets it).
const HEARTBEAT: Duration = Duration::from_millis(200);
/// A lost NATS connection is back within the client's longest back-off (2 s) plus one connect
/// attempt per server (each refused at once on loopback), with a second of slack.
const REJOIN_WITHIN: Duration = Duration::from_secs(3);

/// Polls `s`'s stderr until `needle` occurs `count` times in its complete lines (a line being
/// written is not read half); returns those lines.
fn wait_logged(s: &Server, needle: &str, count: usize, within: Duration) -> String {
    let end = Instant::now() + within;
    loop {
        let mut err = s.stderr();
        err.truncate(err.rfind('\n').map_or(0, |i| i + 1));
        if err.matches(needle).count() >= count {
            return err;
        }
        assert!(Instant::now() < end, "{needle:?} not logged {count} times within {within:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// The NATS port of the `n`th `cluster connected nats=127.0.0.1:<port>` line (from 1).
fn connected_port(stderr: &str, n: usize) -> u16 {
    let line = stderr
        .lines()
        .filter(|l| l.contains("cluster connected nats="))
        .nth(n - 1)
        .unwrap_or_else(|| panic!("no connection {n} logged: {stderr}"));
    let addr = line.split("nats=").nth(1).and_then(|r| r.split_whitespace().next());
    let port = addr.and_then(|a| a.rsplit_once(':')).and_then(|(_, p)| p.parse().ok());
    port.unwrap_or_else(|| panic!("no port in {line:?}"))
}

/// A sub on `to`, a rep of `sent` posted to `from`: 200 `OK`, delivered byte for byte.
fn cross(from: &Server, to: &Server, key: &str, sent: &[u8]) {
    let mut sub = to.sub(&format!("/sub/{key}"));
    to.wait_for_key(key);
    wait_routed(from, key);
    from.post(&format!("/rep/{key}"), sent).assert(200, b"OK");
    sub.read_response().assert_delivered(sent);
}

/// Node `a` on NATS server 0 of three (given `urls`), node `b` on server 1. Server 0 is killed:
/// `a` connects to another server by itself, its sub parked before the kill takes a rep posted
/// to `b`, and new reps cross both ways.
fn fail_over(urls: &str) {
    let mut nats = Nats::cluster(3);
    let urls = urls.replace("{0}", &nats[0].url()).replace("{1}", &nats[1].url());
    let urls = urls.replace("{2}", &nats[2].url());
    let a = esub_node(&urls, "a", &[]);
    let b = esub_node(&nats[1].url(), "b", &[]);
    wait_members(&a, &["a", "b"], DEADLINE);
    assert_eq!(connected_port(&a.stderr(), 1), nats[0].port, "{}", a.stderr());
    let mut parked = a.sub("/sub/parked");
    a.wait_for_key("parked");
    // Server 1 has routed to server 0 (so server 0 announced it to a) once a rep crosses.
    wait_routed(&b, "parked");

    nats[0].kill();
    let killed = Instant::now();
    wait_logged(&a, "cluster disconnected", 1, DEADLINE);
    let err = wait_logged(&a, "cluster connected nats=", 2, REJOIN_WITHIN);
    let port = connected_port(&err, 2);
    assert!(port == nats[1].port || port == nats[2].port, "reconnected to {port}: {err}");
    wait_joined(&a);
    assert!(killed.elapsed() < REJOIN_WITHIN, "rejoined after {:?}", killed.elapsed());
    let info = a.get("/info").body_str();
    assert!(info.contains("\"node\":\"a\",\"cluster\":\"connected\""), "{info}");

    // The sub parked before the kill is subscribed again on the new server.
    wait_routed(&b, "parked");
    let sent = body(100 * 1024, 3);
    b.post("/rep/parked", &sent).assert(200, b"OK");
    parked.read_response().assert_delivered(&sent);
    a.wait_for_key_gone("parked");

    wait_members(&b, &["a", "b"], DEADLINE);
    cross(&a, &b, "a-to-b", &body(70_001, 1));
    cross(&b, &a, "b-to-a", &body(4096, 2));
}

#[test]
fn a_killed_nats_server_fails_over_to_a_listed_one() {
    fail_over("{0},{1},{2}");
}

#[test]
fn a_killed_nats_server_fails_over_to_an_announced_one() {
    fail_over("{0}");
}

#[test]
fn nats_only_up_after_start_is_joined_without_restart() {
    // A port that nothing listens on yet: `restart` starts the server there later.
    let mut nats = Nats::start();
    nats.kill();
    let url = nats.url();
    let a = Server::start(&[
        ("ESUB_CLUSTER", url.as_str()),
        ("ESUB_NODE_NAME", "late-a"),
        ("ESUB_CLUSTER_HEARTBEAT_MS", "200"),
        ("ESUB_TOPICS", "off"),
        ("ESUB_WORKERS", "2"),
    ]);
    // One WARN for the outage, not one per attempt (several a second).
    let err = wait_logged(&a, "WARN cluster unreachable", 1, DEADLINE);
    assert!(err.contains("reason=Connection refused"), "{err}");
    let info = a.get("/info").body_str();
    assert!(info.contains("\"node\":\"late-a\",\"cluster\":\"connecting\""), "{info}");

    // Local routes work meanwhile; a key held nowhere here needs NATS.
    let mut sub = a.sub("/sub/local");
    a.wait_for_key("local");
    a.post("/rep/local", b"here").assert(200, b"OK");
    sub.read_response().assert_delivered(b"here");
    a.post("/rep/nobody", b"x").assert_text(503, "Cluster unavailable");
    let r = a.head("/rep/nobody");
    assert_eq!((r.status, r.header("Content-Length")), (503, Some("0")), "{r:?}");

    nats.restart();
    let started = Instant::now();
    wait_joined(&a);
    assert!(started.elapsed() < REJOIN_WITHIN, "joined after {:?}", started.elapsed());
    let err = a.stderr();
    assert_eq!(err.matches("WARN").count(), 1, "{err}");
    let b = esub_node(&nats.url(), "late-b", &[]);
    wait_members(&a, &["late-a", "late-b"], DEADLINE);
    wait_members(&b, &["late-a", "late-b"], DEADLINE);
    cross(&a, &b, "a-to-b", &body(65_537, 4));
    cross(&b, &a, "b-to-a", &body(300 * 1024, 5));
    a.post("/rep/nobody", b"x").assert_text(404, "Unknown key");
}

#[test]
fn a_killed_node_s_keys_are_unknown_within_three_heartbeats() {
    let nats = Nats::start();
    // A request NATS hands to b's socket just as b dies gets no answer: a short timeout keeps
    // that one 504 inside the window.
    let a = esub_node(&nats.url(), "a", &[("ESUB_CLUSTER_TIMEOUT_MS", "250")]);
    let b = esub_node(&nats.url(), "b", &[]);
    let _subs = [b.sub("/sub/plain"), b.sub("/sub/secret?token=t")];
    let _pool = ws_join(&b, "/psub/pool?token=t&shared=1");
    b.wait_for_keys(&["plain", "secret", "pool"]);
    for key in ["plain", "secret", "pool"] {
        wait_routed(&a, key);
    }
    wait_members(&a, &["a", "b"], DEADLINE);

    drop(b); // SIGKILL, reaped: its sockets are closed by the kernel.
    let killed = Instant::now();
    // Three of b's heartbeats, and slack for the polls.
    let within = 3 * HEARTBEAT + Duration::from_millis(400);
    let end = killed + within;
    for (path, method) in [
        ("/rep/plain", "POST"),
        ("/rep/secret?token=t", "POST"),
        ("/rep/pool?token=t&psub=1", "POST"),
        ("/rep/pool?token=t", "POST"),
        ("/sub/plain", "HEAD"),
        ("/psub/pool", "HEAD"),
    ] {
        loop {
            let r = if method == "HEAD" { a.head(path) } else { a.post(path, b"late") };
            if r.status == 404 {
                if method == "POST" {
                    r.assert_text(404, "Unknown key");
                }
                break;
            }
            // Only a request that reached b before it died may time out.
            assert_eq!(r.status, 504, "{method} {path}: {r:?}");
            assert!(Instant::now() < end, "{method} {path} still {r:?} after {within:?}");
        }
    }
    let took = killed.elapsed();
    assert!(took < within, "keys unknown after {took:?}");
    let took = wait_members(&a, &["a"], within.saturating_sub(killed.elapsed()));
    assert!(killed.elapsed() < within, "b listed {took:?} after the keys went");
    let r = a.get("/keys");
    r.assert(200, br#"{"a":[]}"#);

    // The key is free: a sub on a parks without a claim answer, and takes a rep.
    let mut sub = a.sub("/sub/plain");
    a.wait_for_key("plain");
    a.post("/rep/plain", b"mine").assert(200, b"OK");
    sub.read_response().assert_delivered(b"mine");
}
