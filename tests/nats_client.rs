//! Our NATS client against a real nats-server (Debian `nats-server`, which `tests/nats/install.sh`
//! installs and `make test` runs first): pub/sub with binary payloads and headers, queue groups,
//! request/reply and no responders, reconnecting after a server restart, the send bound.
//! Each test starts its own server on a free loopback port and stops it by PID.

mod common;

use std::time::{Duration, Instant};

use common::driver::{Driver, binary, drain_send_queue, fill_send_queue, wait};
use common::nats::Nats;
use esub::cluster::{Event, Headers, Message, Options, PubError, RequestError, Sid};

/// The requests' timeout below, as long as the `wait` deadline (`common::POLL_DEADLINE`).
const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn pub_sub_carries_binary_payloads_and_headers() {
    let server = Nats::start();
    let mut a =
        Driver::connected(&server.url(), Options { name: "a".into(), ..Options::default() });
    let mut b = Driver::connected(&server.url(), Options::default());
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
    let server = Nats::start();
    let mut a = Driver::new(&server.url(), Options::default());
    let mut b = Driver::new(&server.url(), Options::default());
    // Subscribed before connecting: the handshake sends them, and `Connected` means they took.
    let sa = a.client.subscribe("work", Some("pool")).unwrap();
    let sb = b.client.subscribe("work", Some("pool")).unwrap();
    let mut c = Driver::connected(&server.url(), Options::default());
    let connected = |n: &Driver| n.count(|e| matches!(e, Event::Connected { .. })) == 1;
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
fn without_echo_a_client_does_not_hear_itself() {
    // The cluster's claims rely on it: a node's own claim subject must not answer its request,
    // and with nobody else the request gets "no responders" at once, not a timeout.
    let server = Nats::start();
    let opts = Options { echo: false, ..Options::default() };
    let mut me = Driver::connected(&server.url(), opts);
    let own = me.client.subscribe("k.claim", None).unwrap();
    let mut other = Driver::connected(&server.url(), Options::default());
    let theirs = other.client.subscribe("k.claim", None).unwrap();
    // The other's subscription is in place once a message of its own comes back to it.
    other.client.publish("k.claim", None, None, &b"ping"[..]).unwrap();
    wait(&mut [&mut other], "the other's echo", |n| n[0].msgs(theirs).len() == 1);
    let heard = me.client.request("k.claim", None, &b"x"[..], DEADLINE).unwrap();
    wait(&mut [&mut me, &mut other], "the other's copy", |n| n[1].msgs(theirs).len() == 2);
    let reply = last_reply_subject(&other, theirs);
    other.client.publish(&reply, None, None, &b"mine"[..]).unwrap();
    wait(&mut [&mut me, &mut other], "the reply", |n| n[0].reply(heard).is_some());
    assert_eq!(me.reply(heard).unwrap().as_ref().unwrap().payload, b"mine");
    // A subject only `me` listens to: nobody else, so "no responders" at once.
    let mine = me.client.subscribe("mine.claim", None).unwrap();
    me.client.publish("k.claim", None, None, &b"flush"[..]).unwrap();
    wait(&mut [&mut me, &mut other], "the flush", |n| n[1].msgs(theirs).len() == 3);
    let alone = me.client.request("mine.claim", None, &b"x"[..], DEADLINE).unwrap();
    let t0 = Instant::now();
    wait(&mut [&mut me], "no responders", |n| n[0].reply(alone).is_some());
    assert_eq!(me.reply(alone).unwrap().as_ref().unwrap_err(), &RequestError::NoResponders);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(me.msgs(own).is_empty(), "heard itself: {:?}", me.msgs(own));
    assert!(me.msgs(mine).is_empty(), "heard itself: {:?}", me.msgs(mine));
}

/// The reply subject of the last request `d` got on `sid`.
fn last_reply_subject(d: &Driver, sid: Sid) -> String {
    d.msgs(sid).last().and_then(|m| m.reply.clone()).expect("a request with a reply subject")
}

#[test]
fn requests_get_replies_no_responders_and_timeouts() {
    let server = Nats::start();
    let mut svc = Driver::new(&server.url(), Options::default());
    let echo = svc.client.subscribe("svc.echo", Some("sub")).unwrap();
    svc.client.subscribe("svc.silent", None).unwrap();
    let mut asker = Driver::connected(&server.url(), Options::default());
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
    let mut server = Nats::start();
    let opts = || Options { reconnect_max: Duration::from_millis(500), ..Options::default() };
    let mut a = Driver::new(&server.url(), opts());
    let sid = a.client.subscribe("r.x", None).unwrap();
    let mut b = Driver::connected(&server.url(), opts());
    wait(&mut [&mut a], "Connected", |n| n[0].client.is_connected());

    server.kill();
    let lost = |n: &Driver| n.count(|e| matches!(e, Event::Disconnected(_))) == 1;
    wait(&mut [&mut a, &mut b], "both disconnected", |n| lost(n[0]) && lost(n[1]));
    assert_eq!(b.client.publish("r.x", None, None, b"lost"), Err(PubError::NotConnected));
    assert_eq!(b.client.request("r.x", None, b"lost", DEADLINE), Err(PubError::NotConnected));
    // Refused attempts while it is down, then the same port again.
    wait(&mut [&mut a, &mut b], "failed attempts", |n| {
        n.iter().all(|n| n.count(|e| matches!(e, Event::ConnectFailed { .. })) >= 2)
    });
    server.restart();
    let t0 = Instant::now();
    let back = |n: &Driver| n.count(|e| matches!(e, Event::Connected { .. })) == 2;
    wait(&mut [&mut a, &mut b], "both reconnected", |n| back(n[0]) && back(n[1]));
    assert!(t0.elapsed() < Duration::from_secs(2), "reconnected after {:?}", t0.elapsed());

    // The subscription made before the restart is live again, under the same sid.
    b.client.publish("r.x", None, None, b"after").unwrap();
    wait(&mut [&mut a, &mut b], "the message", |n| n[0].msgs(sid).len() == 1);
    assert_eq!(a.msgs(sid)[0].payload, b"after");
}

#[test]
fn the_send_queue_is_bounded() {
    let server = Nats::start();
    let mut sub = Driver::new(&server.url(), Options::default());
    let sid = sub.client.subscribe("bound", None).unwrap();
    let opts = Options { max_outgoing: 64 * 1024, ..Options::default() };
    let mut p = Driver::connected(&server.url(), opts);
    wait(&mut [&mut sub], "Connected", |n| n[0].client.is_connected());

    // Without a turn nothing is written: publishes queue until the bound, then fail at once.
    let (body, queued) = fill_send_queue(&mut p, "bound");
    assert_eq!(
        p.client.publish("bound", None, None, &binary((1 << 20) + 1)),
        Err(PubError::TooLarge)
    );
    // Written out, the queue has room again; everything arrives, in order.
    drain_send_queue(&mut p, &mut sub, sid, "bound", &body, queued);
}
