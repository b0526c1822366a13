//! Our NATS client against a real nats-server (Debian `nats-server`, which `tests/nats/install.sh`
//! installs and `make test` runs first): pub/sub with binary payloads and headers, queue groups,
//! request/reply and no responders, reconnecting after a server restart, the send bound.
//! Each test starts its own server on a free loopback port and stops it by PID.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use esub::cluster::{
    Client, Event, Headers, Message, Options, PubError, RequestError, RequestToken, ServerUrl, Sid,
};
use mio::{Events, Poll, Token};

/// Upper bound for any "eventually" below; a bug fails the test instead of hanging it.
const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// nats-server
// ---------------------------------------------------------------------------------------------

/// `NATS_SERVER_BIN`, else `nats-server` on PATH or where Debian puts it (/usr/sbin is not on
/// every user's PATH). Absent: the test fails and names the script that installs it.
fn nats_server_bin() -> PathBuf {
    let found = match std::env::var_os("NATS_SERVER_BIN") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .chain(["/usr/sbin".into(), "/usr/bin".into(), "/usr/local/bin".into()])
                .map(|d| d.join("nats-server"))
                .find(|p| p.is_file())
        }
    };
    found.unwrap_or_else(|| {
        panic!("nats-server not found: run `bash tests/nats/install.sh` (make test does)")
    })
}

/// A free loopback port: bound, read, released (nats-server cannot take port 0).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct NatsServer {
    child: Option<Child>,
    port: u16,
}

impl NatsServer {
    fn start() -> NatsServer {
        NatsServer::start_on(free_port())
    }

    /// Starts `nats-server -a 127.0.0.1 -p <port>` and waits until it accepts connections.
    fn start_on(port: u16) -> NatsServer {
        let child = Command::new(nats_server_bin())
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        let mut server = NatsServer { child: Some(child), port };
        let end = Instant::now() + DEADLINE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("nats-server on port {port} exited: {status}");
            }
            assert!(Instant::now() < end, "nats-server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }

    fn url(&self) -> ServerUrl {
        ServerUrl::parse(&format!("nats://127.0.0.1:{}", self.port)).unwrap()
    }

    /// SIGKILL by PID, then reaps it.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Clients, each in a poll of its own, driven by the test thread
// ---------------------------------------------------------------------------------------------

struct Node {
    poll: Poll,
    events: Events,
    client: Client,
    /// Everything the client reported, in order.
    seen: Vec<Event>,
}

impl Node {
    fn new(urls: Vec<ServerUrl>, opts: Options) -> Node {
        let poll = Poll::new().unwrap();
        let registry = poll.registry().try_clone().unwrap();
        let client = Client::new(urls, opts, registry, Token(0));
        Node { poll, events: Events::with_capacity(64), client, seen: Vec::new() }
    }

    /// A client connected to `server` (it has seen `Connected`).
    fn connected(server: &NatsServer, opts: Options) -> Node {
        let mut n = Node::new(vec![server.url()], opts);
        wait(&mut [&mut n], "Connected", |n| {
            n[0].count(|e| matches!(e, Event::Connected { .. })) == 1
        });
        n
    }

    /// One poll turn of at most 2 ms.
    fn turn(&mut self) {
        let now = Instant::now();
        let wait = self.client.next_deadline().map_or(Duration::from_millis(2), |d| {
            d.saturating_duration_since(now).min(Duration::from_millis(2))
        });
        self.poll.poll(&mut self.events, Some(wait)).unwrap();
        let now = Instant::now();
        for ev in self.events.iter() {
            if ev.is_readable() {
                self.seen.extend(self.client.on_readable(now));
            }
            if ev.is_writable() {
                self.seen.extend(self.client.on_writable(now));
            }
        }
        self.seen.extend(self.client.on_timer(now));
    }

    fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.seen.iter().filter(|e| f(e)).count()
    }

    fn msgs(&self, sid: Sid) -> Vec<&Message> {
        self.seen
            .iter()
            .filter_map(|e| {
                if let Event::Msg(m) = e
                    && m.sid == sid
                {
                    Some(m)
                } else {
                    None
                }
            })
            .collect()
    }

    fn reply(&self, token: RequestToken) -> Option<&Result<Message, RequestError>> {
        self.seen.iter().find_map(|e| match e {
            Event::Reply { token: t, result } if *t == token => Some(result),
            _ => None,
        })
    }
}

/// Turns every node until `done` holds, or fails after `DEADLINE`.
fn wait(nodes: &mut [&mut Node], what: &str, mut done: impl FnMut(&mut [&mut Node]) -> bool) {
    let end = Instant::now() + DEADLINE;
    while !done(nodes) {
        if Instant::now() >= end {
            let seen: Vec<_> = nodes.iter().map(|n| &n.seen).collect();
            panic!("no {what} within {DEADLINE:?}; events: {seen:?}");
        }
        for n in nodes.iter_mut() {
            n.turn();
        }
    }
}

/// Every byte value, repeated to `len` bytes.
fn binary(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 256) as u8).collect()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn pub_sub_carries_binary_payloads_and_headers() {
    let server = NatsServer::start();
    let mut a = Node::connected(&server, Options { name: "a".into(), ..Options::default() });
    let mut b = Node::connected(&server, Options::default());
    let info = a.client.server_info().unwrap();
    assert_eq!(info.max_payload, 1 << 20);
    assert!(info.headers);

    // Subscribed while connected: the SUB goes out at once. The server handles one
    // connection's operations in order, so once our own publish comes back the subscription
    // is in place for every other connection too.
    let sid = a.client.subscribe("esub.t.*", None).unwrap();
    a.client.publish("esub.t.own", None, None, b"barrier").unwrap();
    wait(&mut [&mut a], "our own message", |n| n[0].msgs(sid).len() == 1);
    a.seen.clear();

    let big = binary(300 * 1024);
    let mut h = Headers::new();
    h.append("Esub-Op", "rep").append("Esub-Token", "t%20k").append("Esub-Op", "where");
    b.client.publish("esub.t.big", Some("back.here"), None, &big).unwrap();
    b.client.publish("esub.t.hdr", None, Some(&h), b"\r\n\x00body").unwrap();
    b.client.publish("esub.t.empty", None, None, b"").unwrap();
    b.client.publish("esub.other", None, None, b"not for a").unwrap();
    wait(&mut [&mut a, &mut b], "three messages", |n| n[0].msgs(sid).len() == 3);

    let got = a.msgs(sid);
    assert_eq!(
        (got[0].subject.as_str(), got[0].reply.as_deref()),
        ("esub.t.big", Some("back.here"))
    );
    assert!(got[0].payload == big, "300 KB binary payload differs");
    assert!(got[0].headers.is_none());
    assert_eq!(got[1].subject, "esub.t.hdr");
    assert_eq!(got[1].payload, b"\r\n\x00body");
    let hdrs = got[1].headers.as_ref().unwrap();
    assert_eq!(hdrs.get_all("Esub-Op").collect::<Vec<_>>(), ["rep", "where"]);
    assert_eq!(hdrs.get("Esub-Token"), Some("t%20k"));
    assert_eq!(hdrs.status, None);
    assert_eq!((got[2].subject.as_str(), got[2].payload.len()), ("esub.t.empty", 0));
    assert_eq!(a.client.dropped(), 0);
}

#[test]
fn a_queue_group_delivers_each_message_to_one_member() {
    let server = NatsServer::start();
    let mut a = Node::new(vec![server.url()], Options::default());
    let mut b = Node::new(vec![server.url()], Options::default());
    // Subscribed before connecting: the handshake sends them, and `Connected` means they took.
    let sa = a.client.subscribe("work", Some("pool")).unwrap();
    let sb = b.client.subscribe("work", Some("pool")).unwrap();
    let mut c = Node::connected(&server, Options::default());
    let connected = |n: &Node| n.count(|e| matches!(e, Event::Connected { .. })) == 1;
    wait(&mut [&mut a, &mut b], "both members", |n| connected(n[0]) && connected(n[1]));

    for i in 0..200u32 {
        c.client.publish("work", None, None, &i.to_be_bytes()).unwrap();
    }
    wait(&mut [&mut a, &mut b, &mut c], "200 deliveries", |n| {
        n[0].msgs(sa).len() + n[1].msgs(sb).len() >= 200
    });
    let number = |m: &&Message| u32::from_be_bytes(m.payload[..].try_into().unwrap());
    let (ga, gb): (Vec<u32>, Vec<u32>) =
        (a.msgs(sa).iter().map(number).collect(), b.msgs(sb).iter().map(number).collect());
    let mut all: Vec<u32> = ga.iter().chain(&gb).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..200).collect::<Vec<_>>(), "each message exactly once");
    assert!(
        !ga.is_empty() && !gb.is_empty(),
        "one member got everything: {} / {}",
        ga.len(),
        gb.len()
    );
}

#[test]
fn requests_get_replies_no_responders_and_timeouts() {
    let server = NatsServer::start();
    let mut svc = Node::new(vec![server.url()], Options::default());
    let echo = svc.client.subscribe("svc.echo", Some("sub")).unwrap();
    svc.client.subscribe("svc.silent", None).unwrap();
    let mut asker = Node::connected(&server, Options::default());
    wait(&mut [&mut svc], "Connected", |n| n[0].client.is_connected());

    let mut h = Headers::new();
    h.append("Esub-Op", "rep");
    let body = binary(100_000);
    let ok = asker.client.request("svc.echo", Some(&h), &body, DEADLINE).unwrap();
    let none = asker.client.request("svc.nobody", None, b"x", DEADLINE).unwrap();
    let slow = asker.client.request("svc.silent", None, b"x", Duration::from_millis(300)).unwrap();
    let t0 = Instant::now();

    // The service answers each echo request on its reply subject, with a status header.
    let mut answered = 0;
    wait(&mut [&mut svc, &mut asker], "three replies", |n| {
        let msgs: Vec<Message> = n[0].msgs(echo).into_iter().skip(answered).cloned().collect();
        for m in msgs {
            let mut status = Headers::new();
            status.append("Esub-Status", "200");
            assert_eq!(m.headers.as_ref().and_then(|h| h.get("Esub-Op")), Some("rep"));
            let mut back = m.payload.clone();
            back.reverse();
            n[0].client.publish(m.reply.as_deref().unwrap(), None, Some(&status), &back).unwrap();
            answered += 1;
        }
        [ok, none, slow].iter().all(|t| n[1].reply(*t).is_some())
    });
    let reply = asker.reply(ok).unwrap().as_ref().unwrap();
    let mut want = body.clone();
    want.reverse();
    assert!(reply.payload == want, "the echoed body differs");
    assert_eq!(reply.headers.as_ref().and_then(|h| h.get("Esub-Status")), Some("200"));
    assert!(reply.subject.starts_with(asker.client.inbox_prefix()));
    assert_eq!(asker.reply(none).unwrap().as_ref().unwrap_err(), &RequestError::NoResponders);
    assert_eq!(asker.reply(slow).unwrap().as_ref().unwrap_err(), &RequestError::Timeout);
    assert!(t0.elapsed() >= Duration::from_millis(300));
}

#[test]
fn the_client_reconnects_after_a_restart_and_subscribes_again() {
    let mut server = NatsServer::start();
    let port = server.port;
    let opts = || Options { reconnect_max: Duration::from_millis(500), ..Options::default() };
    let mut a = Node::new(vec![server.url()], opts());
    let sid = a.client.subscribe("r.x", None).unwrap();
    let mut b = Node::connected(&server, opts());
    wait(&mut [&mut a], "Connected", |n| n[0].client.is_connected());

    server.kill();
    let lost = |n: &Node| n.count(|e| matches!(e, Event::Disconnected(_))) == 1;
    wait(&mut [&mut a, &mut b], "both disconnected", |n| lost(n[0]) && lost(n[1]));
    assert_eq!(b.client.publish("r.x", None, None, b"lost"), Err(PubError::NotConnected));
    assert_eq!(b.client.request("r.x", None, b"lost", DEADLINE), Err(PubError::NotConnected));
    // Refused attempts while it is down, then the same port again.
    wait(&mut [&mut a, &mut b], "failed attempts", |n| {
        n.iter().all(|n| n.count(|e| matches!(e, Event::ConnectFailed { .. })) >= 2)
    });
    let _server = NatsServer::start_on(port);
    let t0 = Instant::now();
    let back = |n: &Node| n.count(|e| matches!(e, Event::Connected { .. })) == 2;
    wait(&mut [&mut a, &mut b], "both reconnected", |n| back(n[0]) && back(n[1]));
    assert!(t0.elapsed() < Duration::from_secs(2), "reconnected after {:?}", t0.elapsed());

    // The subscription made before the restart is live again, under the same sid.
    b.client.publish("r.x", None, None, b"after").unwrap();
    wait(&mut [&mut a, &mut b], "the message", |n| n[0].msgs(sid).len() == 1);
    assert_eq!(a.msgs(sid)[0].payload, b"after");
}

#[test]
fn the_send_queue_is_bounded() {
    let server = NatsServer::start();
    let mut sub = Node::new(vec![server.url()], Options::default());
    let sid = sub.client.subscribe("bound", None).unwrap();
    let opts = Options { max_outgoing: 64 * 1024, ..Options::default() };
    let mut p = Node::connected(&server, opts);
    wait(&mut [&mut sub], "Connected", |n| n[0].client.is_connected());

    // Without a turn nothing is written: publishes queue until the bound, then fail at once.
    let body = binary(4096);
    let mut queued = 0;
    let refused = loop {
        match p.client.publish("bound", None, None, &body) {
            Ok(()) => queued += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(refused, PubError::Full);
    assert_eq!(queued, 15, "4 KiB bodies in 64 KiB");
    assert!(p.client.outgoing() <= 64 * 1024);
    assert_eq!(
        p.client.publish("bound", None, None, &binary((1 << 20) + 1)),
        Err(PubError::TooLarge)
    );
    // Written out, the queue has room again; everything arrives, in order.
    wait(&mut [&mut p], "the queue to drain", |n| n[0].client.outgoing() == 0);
    p.client.publish("bound", None, None, b"last").unwrap();
    wait(&mut [&mut p, &mut sub], "all messages", |n| n[1].msgs(sid).len() == queued + 1);
    let got = sub.msgs(sid);
    assert!(got[..queued].iter().all(|m| m.payload == body));
    assert_eq!(got[queued].payload, b"last");
}
