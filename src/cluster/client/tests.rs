//! The client against a scripted server on loopback: the test plays the server's side of the
//! protocol by hand (text as nats-server 2.9.10 sends it) and drives the client's poll.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};

use mio::{Events, Poll};

use super::*;
use crate::conn::buffer::Body;

/// Longest any step may take before the test fails instead of hanging.
const STEP: Duration = Duration::from_secs(5);

const INFO: &[u8] = b"INFO {\"server_id\":\"S1\",\"version\":\"2.9.10\",\"proto\":1,\"headers\":true,\"max_payload\":2000} \r\n";

struct Harness {
    poll: Poll,
    events: Events,
    client: Client,
}

impl Harness {
    fn new(urls: Vec<ServerUrl>, opts: Options) -> Harness {
        let poll = Poll::new().unwrap();
        let registry = poll.registry().try_clone().unwrap();
        let client = Client::new(urls, opts, registry, Token(7));
        Harness { poll, events: Events::with_capacity(64), client }
    }

    /// One poll turn (at most 10 ms) and the client's events from it.
    fn turn(&mut self) -> Vec<Event> {
        let now = Instant::now();
        let wait = self.client.next_deadline().map_or(Duration::from_millis(10), |d| {
            d.saturating_duration_since(now).min(Duration::from_millis(10))
        });
        self.poll.poll(&mut self.events, Some(wait)).unwrap();
        let now = Instant::now();
        let mut out = Vec::new();
        for ev in self.events.iter() {
            assert_eq!(ev.token(), Token(7));
            if ev.is_readable() {
                out.extend(self.client.on_readable(now));
            }
            if ev.is_writable() {
                out.extend(self.client.on_writable(now));
            }
        }
        out.extend(self.client.on_timer(now));
        out
    }

    /// Turns until an event satisfies `stop`; returns it and every event before it.
    fn until(&mut self, what: &str, mut stop: impl FnMut(&Event) -> bool) -> Vec<Event> {
        let end = Instant::now() + STEP;
        let mut seen = Vec::new();
        while Instant::now() < end {
            for e in self.turn() {
                let hit = stop(&e);
                seen.push(e);
                if hit {
                    return seen;
                }
            }
        }
        panic!("no {what} within {STEP:?}; events: {seen:?}");
    }

    /// Turns while reading `server` until what it received ends with `tail`; returns it all.
    fn read_until(&mut self, server: &mut TcpStream, tail: &[u8]) -> Vec<u8> {
        server.set_nonblocking(true).unwrap();
        let end = Instant::now() + STEP;
        let mut got = Vec::new();
        while !got.ends_with(tail) {
            assert!(Instant::now() < end, "server got {:?}", String::from_utf8_lossy(&got));
            let events = self.turn();
            assert!(!events.iter().any(|e| matches!(e, Event::Disconnected(_))), "{events:?}");
            let mut buf = [0u8; 65536];
            match server.read(&mut buf) {
                Ok(0) => panic!("client closed; got {:?}", String::from_utf8_lossy(&got)),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    /// Accepts the client's connection (turning until it arrives).
    fn accept(&mut self, listener: &TcpListener) -> TcpStream {
        listener.set_nonblocking(true).unwrap();
        let end = Instant::now() + STEP;
        loop {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_write_timeout(Some(STEP)).unwrap();
                    return s;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    assert!(Instant::now() < end, "the client did not connect");
                    self.turn();
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Plays a server's handshake: INFO, reads through the client's PING, answers PONG, turns
    /// until `Connected`. Returns the server's socket and what the client sent.
    fn connect(&mut self, listener: &TcpListener) -> (TcpStream, String) {
        let mut s = self.accept(listener);
        s.write_all(INFO).unwrap();
        let sent = self.read_until(&mut s, b"PING\r\n");
        s.write_all(b"PONG\r\n").unwrap();
        self.until("Connected", |e| matches!(e, Event::Connected { .. }));
        assert!(self.client.is_connected());
        (s, String::from_utf8(sent).unwrap())
    }
}

fn listener() -> (TcpListener, Vec<ServerUrl>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, vec![ServerUrl { host: "127.0.0.1".into(), port, tls: false }])
}

/// A loopback port nothing listens on (bound, read, released).
fn refused() -> ServerUrl {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    ServerUrl { host: "127.0.0.1".into(), port, tls: false }
}

#[test]
fn handshake_sends_connect_inbox_and_subscriptions_then_ping() {
    let (l, urls) = listener();
    let opts = Options {
        name: "node-a".into(),
        user: Some("u".into()),
        pass: Some("p".into()),
        ..Options::default()
    };
    let mut h = Harness::new(urls, opts);
    assert_eq!(h.client.publish("a", None, None, b"x"), Err(PubError::NotConnected));
    let sid = h.client.subscribe("C.rr.k", Some("sub")).unwrap();
    let (_s, sent) = h.connect(&l);

    let (connect, rest) = sent.split_once("\r\n").unwrap();
    let json: serde_json::Value =
        serde_json::from_str(connect.strip_prefix("CONNECT ").unwrap()).unwrap();
    assert_eq!(json["name"], "node-a");
    assert_eq!((json["user"].as_str(), json["pass"].as_str()), (Some("u"), Some("p")));
    assert_eq!((json["verbose"].as_bool(), json["headers"].as_bool()), (Some(false), Some(true)));
    assert_eq!(json["no_responders"], true);
    let inbox = h.client.inbox_prefix().to_string();
    assert!(inbox.starts_with("_INBOX.") && inbox.len() == "_INBOX.".len() + 23, "{inbox}");
    assert_eq!(rest, format!("SUB {inbox}* 1\r\nSUB C.rr.k sub {}\r\nPING\r\n", sid.0));
    assert_eq!(h.client.max_payload(), 2000);
    assert_eq!(h.client.server_info().map(|i| i.server_id.as_str()), Some("S1"));
}

#[test]
fn messages_requests_pings_and_unsubscribe() {
    let (l, urls) = listener();
    let mut h = Harness::new(urls, Options::default());
    let (mut s, _) = h.connect(&l);
    let inbox = h.client.inbox_prefix().to_string();

    // A server PING is answered; a subscription sent while connected goes out at once.
    let sid = h.client.subscribe("k.*", None).unwrap();
    s.write_all(b"PING\r\n").unwrap();
    assert_eq!(
        h.read_until(&mut s, b"PONG\r\n"),
        format!("SUB k.* {}\r\nPONG\r\n", sid.0).as_bytes()
    );

    let msg = format!("HMSG k.1 {} _INBOX.z.9 18 21\r\nNATS/1.0\r\nA: b\r\n\r\n", sid.0);
    s.write_all(&[msg.as_bytes(), b"\x00\xffz\r\n"].concat()).unwrap();
    let got = h.until("a message", |e| matches!(e, Event::Msg(_)));
    let Some(Event::Msg(m)) = got.last() else { unreachable!() };
    assert_eq!((m.subject.as_str(), m.sid, m.reply.as_deref()), ("k.1", sid, Some("_INBOX.z.9")));
    assert_eq!(m.headers.as_ref().and_then(|h| h.get("A")), Some("b"));
    assert_eq!(m.payload, b"\x00\xffz");

    // Publish, then three requests: answered, no responders, timed out.
    h.client.publish("out.x", None, None, b"hi").unwrap();
    let mut hdrs = Headers::new();
    hdrs.append("Esub-Op", "rep");
    let answered = h.client.request("svc", Some(&hdrs), b"q1", STEP).unwrap();
    let nobody = h.client.request("nobody", None, b"q2", STEP).unwrap();
    let late = h.client.request("slow", None, b"q3", Duration::from_millis(50)).unwrap();
    let want = format!(
        "PUB out.x 2\r\nhi\r\nHPUB svc {inbox}{} 26 28\r\nNATS/1.0\r\nEsub-Op: rep\r\n\r\nq1\r\n\
         PUB nobody {inbox}{} 2\r\nq2\r\nPUB slow {inbox}{} 2\r\nq3\r\n",
        answered.0, nobody.0, late.0
    );
    assert_eq!(String::from_utf8(h.read_until(&mut s, b"q3\r\n")).unwrap(), want);
    let reply = format!(
        "HMSG {inbox}{} 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\nMSG {inbox}{} 1 2\r\nok\r\n",
        nobody.0, answered.0
    );
    s.write_all(reply.as_bytes()).unwrap();
    let mut replies = Vec::new();
    h.until("three replies", |e| {
        if let Event::Reply { token, result } = e {
            replies.push((*token, result.as_ref().map(|m| m.payload.clone()).map_err(|e| *e)));
        }
        replies.len() == 3
    });
    replies.sort_by_key(|r| r.0);
    assert_eq!(
        replies,
        [
            (answered, Ok(b"ok".to_vec())),
            (nobody, Err(RequestError::NoResponders)),
            (late, Err(RequestError::Timeout)),
        ]
    );

    // A reply after its timeout, and a message for a sid given up, are dropped.
    assert!(h.client.unsubscribe(sid));
    assert!(!h.client.unsubscribe(sid));
    assert_eq!(h.read_until(&mut s, b"\r\n"), format!("UNSUB {}\r\n", sid.0).as_bytes());
    let stale = format!("MSG {inbox}{} 1 0\r\n\r\nMSG k.2 {} 0\r\n\r\nPING\r\n", late.0, sid.0);
    s.write_all(stale.as_bytes()).unwrap();
    h.read_until(&mut s, b"PONG\r\n");
    assert_eq!(h.client.dropped(), 2);
}

#[test]
fn unanswered_pings_end_the_connection_and_subscriptions_come_back() {
    let (l, urls) = listener();
    let opts = Options { ping_interval: Duration::from_millis(30), ..Options::default() };
    let mut h = Harness::new(urls, opts);
    let sid = h.client.subscribe("keep.me", Some("q")).unwrap();
    let (mut s, _) = h.connect(&l);
    s.set_nonblocking(true).unwrap();
    let t0 = Instant::now();
    let got = h.until("Disconnected", |e| matches!(e, Event::Disconnected(_)));
    assert!(matches!(got.last(), Some(Event::Disconnected(Reason::StalePings))), "{got:?}");
    // Two PINGs went unanswered; the third interval ends it.
    assert!(t0.elapsed() >= Duration::from_millis(60), "{:?}", t0.elapsed());
    let mut sent = Vec::new();
    let _ = s.read_to_end(&mut sent);
    assert_eq!(sent, b"PING\r\nPING\r\n");
    assert!(!h.client.is_connected());

    // The client reconnects at once and subscribes again, with the same sid.
    let (_s2, sent) = h.connect(&l);
    assert!(sent.contains(&format!("SUB keep.me q {}\r\n", sid.0)), "{sent}");
}

#[test]
fn failed_attempts_move_on_then_back_off() {
    // The first URL refuses; the second is tried at once, within the same round.
    let (l, good) = listener();
    let bad = refused();
    let mut h = Harness::new(vec![bad.clone(), good[0].clone()], Options::default());
    let got = h.until("a failed attempt", |e| matches!(e, Event::ConnectFailed { .. }));
    assert!(
        matches!(got.last(), Some(Event::ConnectFailed { addr: Some(a), reason: Reason::Io(_) }) if a.port() == bad.port)
    );
    h.connect(&l);

    // Alone, a refusing server is retried after 100 ms, 200 ms, 400 ms.
    let opts = Options { reconnect_min: Duration::from_millis(100), ..Options::default() };
    let mut h = Harness::new(vec![refused()], opts);
    let mut at = Vec::new();
    h.until("four failures", |e| {
        if matches!(e, Event::ConnectFailed { .. }) {
            at.push(Instant::now());
        }
        at.len() == 4
    });
    let gaps: Vec<u128> = at.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    // Never early; late by at most 300 ms (a loaded CI machine stalls threads for 150 ms and
    // more): enough to tell a doubling from no back-off or a faster growth.
    for (gap, want) in gaps.iter().zip([100, 200, 400]) {
        assert!(*gap >= want && *gap < want + 300, "gaps {gaps:?}");
    }
}

#[test]
fn bad_handshakes_fail_the_attempt() {
    let (l, urls) = listener();
    let opts = Options { connect_timeout: Duration::from_millis(100), ..Options::default() };
    let mut h = Harness::new(urls, opts);
    let failure = |h: &mut Harness| {
        let got = h.until("ConnectFailed", |e| matches!(e, Event::ConnectFailed { .. }));
        match got.into_iter().last() {
            Some(Event::ConnectFailed { reason, .. }) => reason,
            other => panic!("{other:?}"),
        }
    };
    // Silence: the handshake deadline.
    let _quiet = h.accept(&l);
    assert!(matches!(failure(&mut h), Reason::Timeout));
    // Something other than INFO first; then junk; then a TLS-only server.
    for (script, want) in [
        (&b"PING\r\n"[..], "no INFO"),
        (b"BOGUS\r\n", "UnknownOp"),
        (b"INFO {\"tls_required\":true}\r\n", "TLS is required but not configured"),
    ] {
        let mut s = h.accept(&l);
        s.write_all(script).unwrap();
        let reason = failure(&mut h).to_string();
        assert!(reason.contains(want), "{reason}");
    }
    // The server refuses the credentials after CONNECT.
    let mut s = h.accept(&l);
    s.write_all(INFO).unwrap();
    h.read_until(&mut s, b"PING\r\n");
    s.write_all(b"-ERR 'Authorization Violation'\r\n").unwrap();
    assert!(matches!(failure(&mut h), Reason::Server(t) if t == "Authorization Violation"));
    assert!(!h.client.is_connected());
}

#[test]
fn tls_follows_the_url_or_the_server_and_never_goes_back_to_plaintext() {
    let failure = |h: &mut Harness| {
        let got = h.until("ConnectFailed", |e| matches!(e, Event::ConnectFailed { .. }));
        match got.into_iter().last() {
            Some(Event::ConnectFailed { reason, .. }) => reason.to_string(),
            other => panic!("{other:?}"),
        }
    };
    let config = super::super::tls::client_config(None).unwrap();
    // tls:// and a server without TLS: refused, with or without TLS settings.
    for tls in [None, Some(config.clone())] {
        let (l, mut urls) = listener();
        urls[0].tls = true;
        let mut h = Harness::new(urls, Options { tls, ..Options::default() });
        let mut s = h.accept(&l);
        s.write_all(INFO).unwrap();
        assert!(failure(&mut h).contains("server does not offer TLS"));
        assert!(!h.client.is_tls());
    }
    // nats:// and a server that requires TLS: a ClientHello follows the INFO.
    let (l, urls) = listener();
    let mut h = Harness::new(urls, Options { tls: Some(config.clone()), ..Options::default() });
    let mut s = h.accept(&l);
    s.write_all(b"INFO {\"tls_required\":true}\r\n").unwrap();
    s.set_nonblocking(true).unwrap();
    let end = Instant::now() + STEP;
    let mut hello = [0u8; 3];
    loop {
        assert!(Instant::now() < end, "no ClientHello");
        h.turn();
        match s.read(&mut hello) {
            Ok(3) => break,
            Ok(n) => panic!("{n} bytes"),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    // A handshake record, TLS 1.x.
    assert_eq!(hello[..2], [0x16, 0x03]);
    assert!(h.client.is_tls());
    // CONNECT waits behind the handshake, and the client waits for the server, not in a loop:
    // its next deadline is the handshake's.
    h.turn();
    assert!(h.client.outgoing() > 0);
    assert!(h.client.next_deadline().unwrap() > Instant::now() + Duration::from_millis(500));
    // The server goes away (a reset, as the rest of the hello is unread): the attempt fails.
    drop(s);
    let reason = failure(&mut h);
    assert!(reason.contains("closed by the server") || reason.contains("reset"), "{reason}");
    // Bytes behind the INFO are refused rather than taken as if they had come over TLS (or,
    // split by the socket, they are not a TLS record).
    let (l, urls) = listener();
    let mut h = Harness::new(urls, Options { tls: Some(config), ..Options::default() });
    let mut s = h.accept(&l);
    s.write_all(b"INFO {\"tls_required\":true}\r\nPING\r\n").unwrap();
    assert!(failure(&mut h).starts_with("TLS: "));
}

#[test]
fn the_send_queue_is_bounded() {
    let (l, urls) = listener();
    let opts = Options { max_outgoing: 10_000, ..Options::default() };
    let mut h = Harness::new(urls, opts);
    let (mut s, _) = h.connect(&l);
    // Publishes queue until `on_timer`; past the bound they fail and queue nothing.
    let body = vec![7u8; 1000];
    let mut queued = 0;
    while h.client.publish("p", None, None, &body).is_ok() {
        queued += 1;
    }
    assert_eq!(queued, 9, "1000-byte bodies in 10 000 bytes");
    let before = h.client.outgoing();
    assert!(before <= 10_000);
    assert_eq!(h.client.publish("p", None, None, &body), Err(PubError::Full));
    assert_eq!(h.client.request("p", None, &body, STEP), Err(PubError::Full));
    assert_eq!(h.client.outgoing(), before);
    // Larger than the server's max_payload (2000 in INFO), and bad names, whatever the queue.
    let big = vec![0u8; 2001];
    assert_eq!(h.client.publish("p", None, None, &big), Err(PubError::TooLarge));
    assert_eq!(h.client.publish("a b", None, None, b""), Err(PubError::BadSubject));
    assert_eq!(h.client.subscribe("a..b", None), Err(PubError::BadSubject));
    let mut bad = Headers::new();
    bad.append("A:B", "v");
    assert_eq!(h.client.publish("p", None, Some(&bad), b""), Err(PubError::BadHeader));
    // Once written, there is room again; a shared body goes out as it is.
    let tail = b"p 1000\r\n".iter().chain(&body).chain(b"\r\n").copied().collect::<Vec<u8>>();
    let mut got = Vec::new();
    while got.len() < 9 * (tail.len() + "PUB ".len()) {
        got.extend(h.read_until(&mut s, &tail));
    }
    assert_eq!(got.len(), 9 * (tail.len() + "PUB ".len()));
    assert_eq!(h.client.outgoing(), 0);
    h.client.publish("p", None, None, Body::new(b"shared".to_vec())).unwrap();
    assert_eq!(h.read_until(&mut s, b"PUB p 6\r\nshared\r\n"), b"PUB p 6\r\nshared\r\n");
}
