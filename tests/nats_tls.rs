//! Our NATS client over TLS against a real nats-server started with `--tls` and a certificate
//! made at test time (`common::tls`): `tls://` and upgraded `nats://` URLs carry pub/sub and
//! requests, a wrong CA or a server without TLS fails every attempt with its reason and the
//! client keeps trying, and the send queue keeps its bound under TLS.

mod common;

use std::time::Duration;

use common::driver::{Driver, binary, drain_send_queue, fill_send_queue, wait};
use common::nats::Nats;
use common::tls::Pki;
use esub::cluster::tls::{client_config, load_roots};
use esub::cluster::{Event, Options, PubError, Reason};

/// The requests' timeout below, as long as the `wait` deadline (`common::POLL_DEADLINE`).
const DEADLINE: Duration = Duration::from_secs(10);

/// Options trusting `pki`'s CA alone, as `ESUB_CLUSTER_CA` gives them.
fn trusting(pki: &Pki) -> Options {
    let roots = load_roots(pki.ca_path()).unwrap();
    Options { tls: Some(client_config(Some(roots)).unwrap()), ..Options::default() }
}

fn connected(n: &Driver) -> bool {
    n.count(|e| matches!(e, Event::Connected { .. })) == 1
}

#[test]
fn tls_and_upgraded_nats_urls_carry_pub_sub_and_requests() {
    let pki = Pki::new();
    let nats = Nats::start_tls(&pki);
    let mut a = Driver::new(&nats.tls_url(), trusting(&pki));
    let topic = a.client.subscribe("t.*", None).unwrap();
    let svc = a.client.subscribe("svc.echo", Some("q")).unwrap();
    // A nats:// URL follows the server's tls_required up to TLS.
    let mut b = Driver::new(&nats.url(), trusting(&pki));
    wait(&mut [&mut a, &mut b], "both connected", |n| connected(n[0]) && connected(n[1]));
    for n in [&a, &b] {
        assert!(n.client.is_tls());
        assert!(n.client.server_info().unwrap().tls_required);
        assert!(n.failures().is_empty(), "{:?}", n.failures());
    }

    // `a`'s subscriptions took before its Connected. Many records each way: 300 KiB is about
    // 19 full TLS records.
    let big = binary(300 * 1024);
    b.client.publish("t.big", Some("back"), None, &big).unwrap();
    b.client.publish("t.small", None, None, b"\r\n\x00").unwrap();
    let token = b.client.request("svc.echo", None, &big[..100_000], DEADLINE).unwrap();
    let mut answered = false;
    wait(&mut [&mut a, &mut b], "messages and the reply", |n| {
        if let Some(m) = n[0].msgs(svc).first().cloned().cloned().filter(|_| !answered) {
            let mut back = m.payload.clone();
            back.reverse();
            n[0].client.publish(m.reply.as_deref().unwrap(), None, None, &back).unwrap();
            answered = true;
        }
        n[0].msgs(topic).len() == 2
            && n[1].seen.iter().any(|e| matches!(e, Event::Reply { token: t, .. } if *t == token))
    });
    let got = a.msgs(topic);
    assert_eq!((got[0].subject.as_str(), got[0].reply.as_deref()), ("t.big", Some("back")));
    assert!(got[0].payload == big, "300 KiB over TLS differs");
    assert_eq!((got[1].subject.as_str(), &got[1].payload[..]), ("t.small", &b"\r\n\x00"[..]));
    let reply = b.seen.iter().find_map(|e| match e {
        Event::Reply { token: t, result } if *t == token => Some(result.as_ref().unwrap()),
        _ => None,
    });
    let mut want = big[..100_000].to_vec();
    want.reverse();
    assert!(reply.unwrap().payload == want, "the echoed body differs");
    assert_eq!((a.client.dropped(), b.client.dropped()), (0, 0));
}

#[test]
fn an_unknown_ca_fails_every_attempt_with_a_tls_reason() {
    let (pki, other) = (Pki::new(), Pki::new());
    let nats = Nats::start_tls(&pki);
    let fast = Duration::from_millis(100);
    let mut wrong =
        Driver::new(&nats.tls_url(), Options { reconnect_max: fast, ..trusting(&other) });
    // The bundled Mozilla roots do not know the test CA either.
    let bundled = Options { tls: Some(client_config(None).unwrap()), ..Options::default() };
    let mut public = Driver::new(&nats.url(), Options { reconnect_max: fast, ..bundled });
    wait(&mut [&mut wrong, &mut public], "three failed attempts each", |n| {
        n.iter().all(|n| n.failures().len() >= 3)
    });
    for n in [&mut wrong, &mut public] {
        for reason in n.failures() {
            assert!(reason.starts_with("TLS: ") && reason.contains("UnknownIssuer"), "{reason}");
        }
        assert!(!n.client.is_connected());
        assert_eq!(n.count(|e| matches!(e, Event::Connected { .. })), 0);
        assert_eq!(n.client.publish("x", None, None, b"x"), Err(PubError::NotConnected));
    }
    let tls = |e: &Event| matches!(e, Event::ConnectFailed { reason: Reason::Tls(_), .. });
    assert_eq!(wrong.count(tls), wrong.failures().len());
}

#[test]
fn a_tls_url_to_a_server_without_tls_fails_every_attempt() {
    let pki = Pki::new();
    let nats = Nats::start();
    let fast = Options { reconnect_max: Duration::from_millis(100), ..trusting(&pki) };
    let mut n = Driver::new(&nats.tls_url(), fast);
    wait(&mut [&mut n], "three failed attempts", |n| n[0].failures().len() >= 3);
    let unavailable =
        |e: &Event| matches!(e, Event::ConnectFailed { reason: Reason::TlsUnavailable, .. });
    assert_eq!(n.count(unavailable), n.failures().len(), "{:?}", n.failures());
    assert!(n.failures()[0].contains("server does not offer TLS"));
    assert_eq!(n.count(|e| matches!(e, Event::Connected { .. })), 0);
}

#[test]
fn the_send_queue_keeps_its_bound_under_tls() {
    let pki = Pki::new();
    let nats = Nats::start_tls(&pki);
    let mut sub = Driver::new(&nats.tls_url(), trusting(&pki));
    let sid = sub.client.subscribe("bound", None).unwrap();
    let mut p = Driver::new(&nats.tls_url(), Options { max_outgoing: 64 * 1024, ..trusting(&pki) });
    wait(&mut [&mut sub, &mut p], "both connected", |n| connected(n[0]) && connected(n[1]));

    // Without a turn nothing moves to TLS: publishes queue until the bound, then fail at once.
    let (body, queued) = fill_send_queue(&mut p, "bound");
    // Encrypted and written, the queue has room again; everything arrives, in order.
    drain_send_queue(&mut p, &mut sub, sid, "bound", &body, queued);
}
