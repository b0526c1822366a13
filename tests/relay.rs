//! Phase 1 sub/rep relay (API.md section 2): delivery, tokens, takeover, disconnects,
//! keep-alive after delivery, large and binary bodies, concurrency, write timeout.

mod common;

use common::{Client, Server, tally};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn sub_receives_rep_body_and_rep_gets_ok() {
    let s = Server::start(&[]);
    let mut sub = s.sub("/sub/k1");
    s.wait_for_key("k1");
    let mut rep = s.client();
    rep.send(
        b"POST /rep/k1 HTTP/1.1\r\nHost: esub\r\nContent-Type: text/html\r\nX-Custom: 1\r\n\
          Content-Length: 11\r\n\r\nhello world",
    );
    let r = sub.read_response();
    r.assert_delivered(b"hello world");
    assert_eq!(r.header("content-length"), Some("11"));
    // No rep header is copied.
    assert!(!r.has_header("x-custom"), "rep header leaked to sub: {r:?}");
    let r = rep.read_response();
    r.assert(200, b"OK");
    // One sub receives one rep: the key is gone.
    assert_eq!(s.keys(), Vec::<String>::new());
    s.post("/rep/k1", b"again").assert_text(404, "Unknown key");
}

#[test]
fn rep_without_sub_is_404_unknown_key() {
    let s = Server::start(&[]);
    s.post("/rep/nobody", b"lost").assert_text(404, "Unknown key");
    s.post("/rep/nobody?token=t", b"").assert_text(404, "Unknown key");
}

#[test]
fn empty_rep_body_is_delivered_empty() {
    let s = Server::start(&[]);
    let mut sub = s.sub("/sub/empty");
    s.wait_for_key("empty");
    s.post("/rep/empty", b"").assert(200, b"OK");
    let r = sub.read_response();
    r.assert_delivered(b"");
    assert_eq!(r.header("content-length"), Some("0"));
}

#[test]
fn token_must_match_exactly_both_ways() {
    let s = Server::start(&[]);

    // Sub with a token; rep without, or with another, is refused and the sub keeps waiting.
    let mut sub = s.sub("/sub/tk?token=secret");
    s.wait_for_key("tk");
    s.post("/rep/tk", b"no").assert_text(403, "Invalid token");
    s.post("/rep/tk?token=", b"no").assert_text(403, "Invalid token");
    s.post("/rep/tk?token=Secret", b"no").assert_text(403, "Invalid token");
    s.post("/rep/tk?token=secret2", b"no").assert_text(403, "Invalid token");
    assert_eq!(s.keys(), vec!["tk"]);
    s.post("/rep/tk?token=secret", b"yes").assert(200, b"OK");
    sub.read_response().assert_delivered(b"yes");

    // Sub without a token; a rep that sends one is refused too.
    let mut sub = s.sub("/sub/tk");
    s.wait_for_key("tk");
    s.post("/rep/tk?token=secret", b"no").assert_text(403, "Invalid token");
    s.post("/rep/tk", b"yes").assert(200, b"OK");
    sub.read_response().assert_delivered(b"yes");
}

#[test]
fn token_query_is_form_decoded() {
    let s = Server::start(&[]);
    // `+` is a space in the query.
    let mut sub = s.sub("/sub/q?token=a+b");
    s.wait_for_key("q");
    s.post("/rep/q?token=a%2Bb", b"no").assert_text(403, "Invalid token");
    s.post("/rep/q?token=a%20b", b"space").assert(200, b"OK");
    sub.read_response().assert_delivered(b"space");

    // Escapes, and other parameters around the token.
    let mut sub = s.sub("/sub/q?x=1&token=%C3%A9%26%3D&y=2");
    s.wait_for_key("q");
    s.post("/rep/q?token=%c3%a9%26%3d", b"escaped").assert(200, b"OK");
    sub.read_response().assert_delivered(b"escaped");

    // `token=` is the same as no token, on either side.
    let mut sub = s.sub("/sub/q?token=");
    s.wait_for_key("q");
    s.post("/rep/q", b"none").assert(200, b"OK");
    sub.read_response().assert_delivered(b"none");

    let mut sub = s.sub("/sub/q");
    s.wait_for_key("q");
    s.post("/rep/q?token=", b"empty").assert(200, b"OK");
    sub.read_response().assert_delivered(b"empty");
}

#[test]
fn second_sub_with_other_token_is_403_and_first_still_receives() {
    let s = Server::start(&[]);
    let mut first = s.sub("/sub/used?token=A");
    s.wait_for_key("used");
    s.get("/sub/used?token=B").assert_text(403, "Key is used and token does not match.");
    // No token differs from a non-empty token too.
    s.get("/sub/used").assert_text(403, "Key is used and token does not match.");
    s.get("/sub/used?token=").assert_text(403, "Key is used and token does not match.");
    // The first is untouched.
    first.expect_silence(Duration::from_millis(100));
    assert_eq!(s.keys(), vec!["used"]);
    s.post("/rep/used?token=A", b"for first").assert(200, b"OK");
    first.read_response().assert_delivered(b"for first");
}

#[test]
fn refused_sub_connection_serves_further_requests() {
    let s = Server::start(&[]);
    let mut first = s.sub("/sub/used?token=A");
    s.wait_for_key("used");
    let mut second = s.client();
    second.get("/sub/used?token=B").assert_text(403, "Key is used and token does not match.");
    second.get("/ping").assert(200, b"OK");
    s.post("/rep/used?token=A", b"x").assert(200, b"OK");
    first.read_response().assert_delivered(b"x");
}

#[test]
fn takeover_with_same_token_displaces_first_sub_with_409() {
    let s = Server::start(&[]);
    let mut first = s.sub("/sub/to?token=T");
    s.wait_for_key("to");
    let mut second = s.sub("/sub/to?token=T");
    // At once, without any rep.
    first.read_response().assert_text(409, "Sub taken over");
    assert_eq!(s.keys(), vec!["to"]);
    s.post("/rep/to?token=T", b"for second").assert(200, b"OK");
    second.read_response().assert_delivered(b"for second");
    // The displaced sub's connection is still usable.
    first.get("/ping").assert(200, b"OK");
}

#[test]
fn takeover_of_tokenless_sub_by_any_token() {
    let s = Server::start(&[]);
    let mut first = s.sub("/sub/free");
    s.wait_for_key("free");
    let mut second = s.sub("/sub/free?token=mine");
    first.read_response().assert_text(409, "Sub taken over");
    // The new sub's token now rules the key.
    s.post("/rep/free", b"no").assert_text(403, "Invalid token");
    s.post("/rep/free?token=mine", b"yes").assert(200, b"OK");
    second.read_response().assert_delivered(b"yes");
}

#[test]
fn takeover_of_tokenless_sub_by_tokenless_sub() {
    let s = Server::start(&[]);
    let mut first = s.sub("/sub/free");
    s.wait_for_key("free");
    let mut second = s.sub("/sub/free");
    first.read_response().assert_text(409, "Sub taken over");
    let mut third = s.sub("/sub/free?token=");
    second.read_response().assert_text(409, "Sub taken over");
    s.post("/rep/free", b"third").assert(200, b"OK");
    third.read_response().assert_delivered(b"third");
}

#[test]
fn takeover_on_same_connection_after_409() {
    // A displaced sub may sub again on the same connection and take the key back.
    let s = Server::start(&[]);
    let mut a = s.sub("/sub/ping-pong?token=T");
    s.wait_for_key("ping-pong");
    let mut b = s.sub("/sub/ping-pong?token=T");
    a.read_response().assert_text(409, "Sub taken over");
    a.send_get("/sub/ping-pong?token=T");
    b.read_response().assert_text(409, "Sub taken over");
    s.post("/rep/ping-pong?token=T", b"back to a").assert(200, b"OK");
    a.read_response().assert_delivered(b"back to a");
}

#[test]
fn sub_disconnect_then_immediate_rep_is_404() {
    let s = Server::start(&[("ESUB_WORKERS", "2")]);
    for i in 0..50 {
        let key = format!("gone{i}");
        let sub = s.sub(&format!("/sub/{key}"));
        s.wait_for_key(&key);
        // The rep is on the wire but for its last byte, so it completes right behind the FIN.
        let mut rep = s.client();
        rep.send(
            format!("POST /rep/{key} HTTP/1.1\r\nHost: esub\r\nContent-Length: 4\r\n\r\nlos")
                .as_bytes(),
        );
        sub.close();
        // Right away, without waiting for /keys to change.
        rep.send(b"t");
        rep.read_response().assert_text(404, "Unknown key");
    }
}

#[test]
fn sub_disconnect_then_rep_on_new_connection_is_404() {
    let s = Server::start(&[]);
    for i in 0..10 {
        let key = format!("gone{i}");
        let sub = s.sub(&format!("/sub/{key}"));
        s.wait_for_key(&key);
        sub.close();
        s.post(&format!("/rep/{key}"), b"nobody home").assert_text(404, "Unknown key");
    }
}

#[test]
fn sub_disconnect_removes_key_from_keys() {
    let s = Server::start(&[]);
    let sub = s.sub("/sub/leaving");
    let stay = s.sub("/sub/staying");
    s.wait_for_keys(&["leaving", "staying"]);
    drop(sub);
    s.wait_for_key_gone("leaving");
    assert_eq!(s.keys(), vec!["staying"]);
    s.post("/rep/leaving", b"x").assert_text(404, "Unknown key");
    drop(stay);
    s.wait_for_key_gone("staying");
    assert_eq!(s.get("/keys").status, 204);
}

#[test]
fn half_closed_sub_gets_delivery_or_rep_gets_404() {
    // A client that shuts down only its write side looks disconnected to the server. Whatever
    // the server decides, the rep's answer must match what the sub saw: never 200 without the
    // bytes reaching the sub, never 404 with them.
    let s = Server::start(&[]);
    let mut sub = s.sub("/sub/half");
    s.wait_for_key("half");
    sub.shutdown_write();
    let r = s.post("/rep/half", b"maybe");
    match r.status {
        200 => sub.read_response().assert_delivered(b"maybe"),
        404 => {
            r.assert_text(404, "Unknown key");
            sub.stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            if let Ok(resp) = sub.try_read_response() {
                panic!("rep got 404 but the sub received {resp:?}");
            }
        }
        _ => panic!("unexpected rep answer {r:?}"),
    }
}

#[test]
fn delivered_sub_connection_serves_further_requests() {
    let s = Server::start(&[]);
    let mut sub = s.sub("/sub/ka");
    s.wait_for_key("ka");
    s.post("/rep/ka", b"first").assert(200, b"OK");
    sub.read_response().assert_delivered(b"first");
    sub.get("/ping").assert(200, b"OK");
    // And it can park again on the same connection.
    sub.send_get("/sub/ka");
    s.wait_for_key("ka");
    s.post("/rep/ka", b"second").assert(200, b"OK");
    sub.read_response().assert_delivered(b"second");
    sub.get("/ping").assert(200, b"OK");
}

#[test]
fn http10_sub_receives_rep_then_closes() {
    let s = Server::start(&[]);
    let mut sub = s.client();
    sub.send(b"GET /sub/old HTTP/1.0\r\n\r\n");
    s.wait_for_key("old");
    let mut rep = s.client();
    rep.send(b"POST /rep/old HTTP/1.0\r\nContent-Length: 4\r\n\r\n1.0!");
    sub.read_response().assert_delivered(b"1.0!");
    sub.expect_closed();
    rep.read_response().assert(200, b"OK");
    rep.expect_closed();
}

#[test]
fn rep_connection_is_reused_for_many_reps() {
    let s = Server::start(&[]);
    let mut rep = s.client();
    for i in 0..10 {
        let key = format!("r{i}");
        let mut sub = s.sub(&format!("/sub/{key}"));
        s.wait_for_key(&key);
        let body = format!("body {i}");
        rep.post(&format!("/rep/{key}"), body.as_bytes()).assert(200, b"OK");
        sub.read_response().assert_delivered(body.as_bytes());
    }
}

#[test]
fn binary_body_with_every_byte_value_is_delivered_exactly() {
    let s = Server::start(&[]);
    let mut sub = s.sub("/sub/bin");
    s.wait_for_key("bin");
    let mut body: Vec<u8> = (0..=255u8).collect();
    body.extend((0..=255u8).rev());
    body.extend_from_slice(b"\r\n\r\nHTTP/1.1 200 OK\r\n\r\n");
    let mut rep = s.client();
    rep.send_post("/rep/bin", &body);
    sub.read_response().assert_delivered(&body);
    rep.read_response().assert(200, b"OK");
}

#[test]
fn one_mib_body_at_default_limit_is_delivered() {
    let s = Server::start(&[]);
    let mut sub = s.sub("/sub/big");
    s.wait_for_key("big");
    let body: Vec<u8> =
        (0..1_048_576u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut rep = s.client();
    rep.send_post("/rep/big", &body);
    // Read the sub first: its response may not fit in socket buffers until it is read.
    sub.read_response().assert_delivered(&body);
    rep.read_response().assert(200, b"OK");

    // One byte more is refused by default.
    let mut rep = s.client();
    rep.send(b"POST /rep/big HTTP/1.1\r\nHost: esub\r\nContent-Length: 1048577\r\n\r\n");
    rep.read_response().assert_status_text(413);
}

#[test]
fn many_concurrent_subs_each_receive_their_own_rep() {
    const N: usize = 200;
    const REPPERS: usize = 8;
    let s = Arc::new(Server::start(&[("ESUB_WORKERS", "2")]));
    let keys: Vec<String> = (0..N).map(|i| format!("key-{i:03}")).collect();
    // Many connections: the kernel spreads them over both workers' listeners.
    let mut subs: Vec<Client> = keys.iter().map(|k| s.sub(&format!("/sub/{k}"))).collect();
    let want: Vec<&str> = keys.iter().map(String::as_str).collect();
    s.wait_for_keys(&want);
    assert_eq!(s.keys().len(), N);

    let start = Arc::new(Barrier::new(REPPERS));
    let handles: Vec<_> = (0..REPPERS)
        .map(|t| {
            let s = Arc::clone(&s);
            let start = Arc::clone(&start);
            let mine: Vec<String> = keys.iter().skip(t).step_by(REPPERS).cloned().collect();
            thread::spawn(move || {
                let mut rep = s.client();
                start.wait();
                for k in mine {
                    let body = format!("payload for {k}");
                    let r = rep.post(&format!("/rep/{k}"), body.as_bytes());
                    assert_eq!((r.status, r.body_str().as_str()), (200, "OK"), "rep {k}: {r:?}");
                }
            })
        })
        .collect();
    // Read while the reps run; each sub gets exactly its own body.
    for (k, sub) in keys.iter().zip(subs.iter_mut()) {
        sub.read_response().assert_delivered(format!("payload for {k}").as_bytes());
    }
    for h in handles {
        h.join().expect("rep thread");
    }
    assert_eq!(s.get("/keys").status, 204);
}

#[test]
fn concurrent_reps_to_one_key_exactly_one_wins() {
    const N: usize = 50;
    let s = Arc::new(Server::start(&[("ESUB_WORKERS", "2")]));
    let mut sub = s.sub("/sub/race");
    s.wait_for_key("race");
    // Connect everyone first, then release them together.
    let clients: Vec<Client> = (0..N).map(|_| s.client()).collect();
    let gate = Arc::new(Barrier::new(N));
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let gate = Arc::clone(&gate);
            thread::spawn(move || {
                gate.wait();
                let r = c.post("/rep/race", format!("rep #{i}").as_bytes());
                (i, r)
            })
        })
        .collect();
    let delivered = sub.read_response();
    assert_eq!(delivered.status, 200, "{delivered:?}");
    let results: Vec<_> = handles.into_iter().map(|h| h.join().expect("rep thread")).collect();
    let statuses: Vec<u16> = results.iter().map(|(_, r)| r.status).collect();
    let t = tally(&statuses);
    assert_eq!(t.get(&200), Some(&1), "statuses {t:?}");
    assert_eq!(t.get(&404), Some(&(N - 1)), "statuses {t:?}");
    for (_, r) in results.iter().filter(|(_, r)| r.status == 404) {
        r.assert_text(404, "Unknown key");
    }
    let (winner, _) = results.iter().find(|(_, r)| r.status == 200).unwrap();
    delivered.assert_delivered(format!("rep #{winner}").as_bytes());
}

#[test]
fn rep_to_sub_that_does_not_read_gets_404_after_write_timeout() {
    // 12 MiB cannot sit in the loopback socket buffers of a reader that never reads (its
    // receive window stays small), so the write cannot finish and the timeout decides.
    const BODY: usize = 12 << 20;
    let s = Server::start(&[
        ("ESUB_WRITE_TIMEOUT_MS", "300"),
        ("ESUB_MAX_BODY_BYTES", &(16u32 << 20).to_string()),
    ]);
    let sub = s.sub("/sub/stuck");
    s.wait_for_key("stuck");
    let mut rep = s.client();
    let body = vec![b'z'; BODY];
    let start = Instant::now();
    rep.send_post("/rep/stuck", &body);
    let r = rep.read_response();
    r.assert_text(404, "Unknown key");
    assert!(start.elapsed() < Duration::from_secs(5), "rep answered after {:?}", start.elapsed());
    // The stuck sub is dropped.
    assert!(!s.keys().iter().any(|k| k == "stuck"));
    drop(sub);
    s.get("/ping").assert(200, b"OK");
}

#[test]
fn raised_body_limit_delivers_8_mib_while_rep_is_still_sending() {
    // The rep is written from another thread while the sub reads, so neither side's socket
    // buffers have to hold the whole body; the rep's 200 follows the full delivery.
    let s = Server::start(&[("ESUB_MAX_BODY_BYTES", &(8u32 << 20).to_string())]);
    let mut sub = s.sub("/sub/slow");
    s.wait_for_key("slow");
    let body: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 253) as u8).collect();
    let expected = body.clone();
    let rep = thread::spawn({
        let addr = s.addr;
        move || {
            let mut rep = Client::connect(addr);
            rep.post("/rep/slow", &body)
        }
    });
    let r = sub.read_response();
    r.assert_delivered(&expected);
    rep.join().expect("rep thread").assert(200, b"OK");
}

/// Polls `HEAD path` until its status is `want`.
fn wait_head(s: &Server, path: &str, want: u16) -> common::Response {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.head(path);
        if r.status == want {
            return r;
        }
        assert!(Instant::now() < end, "HEAD {path}: {r:?}, want {want}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn head_locates_what_this_node_holds() {
    use common::ws::ws_join;
    let dir = common::topics::DataDir::new("head");
    let s = Server::start(&[
        ("ESUB_ADVERTISE", "esub.test:8090"),
        ("ESUB_STORE", "undelivered"),
        ("ESUB_DATA_DIR", dir.as_str()),
        ("ESUB_TOPICS", "off"),
    ]);
    let location = |r: &common::Response| r.header("location").map(str::to_string);
    for path in ["/sub/k", "/psub/k", "/rep/k", "/rsub/k"] {
        let r = s.head(path);
        assert_eq!((r.status, location(&r), r.body.len()), (404, None, 0), "{path}: {r:?}");
    }
    // A sub: HEAD /sub and /rep name this node; the path as received, the query dropped.
    let mut sub = s.sub("/sub/a%20b?token=t");
    s.wait_for_key("a b");
    for (path, want) in [("/sub/a%20b?token=x", "/sub/a%20b"), ("/rep/a%20b", "/rep/a%20b")] {
        let r = s.head(path);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(location(&r).as_deref(), Some(&*format!("http://esub.test:8090{want}")));
        assert_eq!(r.header("content-length"), Some("0"));
        assert!(r.body.is_empty());
    }
    assert_eq!(s.head("/psub/a%20b").status, 404);
    assert_eq!(s.head("/rsub/a%20b").status, 404);
    // HEAD changes nothing: the sub still gets its rep.
    s.post("/rep/a%20b?token=t", b"x").assert(200, b"OK");
    sub.read_response().assert_delivered(b"x");
    assert_eq!(s.head("/sub/a%20b").status, 404);

    // A pool: /psub and /rep, not /sub.
    let member = ws_join(&s, "/psub/p");
    assert_eq!(s.head("/psub/p").status, 200);
    assert_eq!(location(&s.head("/rep/p")).as_deref(), Some("http://esub.test:8090/rep/p"));
    assert_eq!(s.head("/sub/p").status, 404);
    drop(member);
    wait_head(&s, "/psub/p", 404);

    // Stored reps: /rsub while some are left.
    s.post("/rep/st", b"1").assert_text(404, "Unknown key");
    let r = wait_head(&s, "/rsub/st", 200);
    assert_eq!(location(&r).as_deref(), Some("http://esub.test:8090/rsub/st"));
    s.get("/rsub/st").assert(200, b"1");
    wait_head(&s, "/rsub/st", 404);

    // On one keep-alive connection the stream stays in step: no HEAD answer carries a body.
    let mut c = s.client();
    assert_eq!(c.head("/nope").status, 404);
    let r = c.head("/prep");
    assert_eq!((r.status, r.allow()), (405, vec!["GET".to_string()]));
    assert_eq!(c.head("/rsub/st").status, 404);
    c.get("/ping").assert(200, b"OK");
    let r = c.post("/sub/x", b"");
    assert_eq!((r.status, r.allow()), (405, vec!["GET".to_string(), "HEAD".to_string()]));
}
