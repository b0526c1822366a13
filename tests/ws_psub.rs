//! Phase 1.5 websocket psub pools (API.md section 3), end to end against the real binary:
//! upgrade and 403s, round-robin, takeover, text/binary frames, receipts, keepalive sweeps,
//! members dying or not reading, pipelined frames, close handshakes, protocol errors, SIGTERM.
//!
//! Every socket has read and write timeouts: a server bug fails a test instead of hanging it.

mod common;

use common::ws::*;
use common::{Client, IO_TIMEOUT, Server};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};
use tungstenite::Message;

/// Most tests run two event loops so deliveries cross workers.
const W2: (&str, &str) = ("ESUB_WORKERS", "2");
const FORBIDDEN: &str = "Key is used and token does not match.";

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// A rep's body that names its index, so a receiver can tell reps apart.
fn numbered(i: usize) -> Vec<u8> {
    format!("rep-{i:05}").into_bytes()
}

fn index_of(body: &[u8]) -> usize {
    let s = std::str::from_utf8(body).unwrap_or_else(|_| panic!("not a numbered rep: {body:?}"));
    s.strip_prefix("rep-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a numbered rep: {s:?}"))
}

/// A binary body (not UTF-8) of `len` bytes whose first 8 bytes are `i`.
fn big_numbered(i: usize, len: usize) -> Vec<u8> {
    let mut v = vec![0xffu8; len];
    v[..8].copy_from_slice(&(i as u64).to_be_bytes());
    v
}

fn big_index(body: &[u8]) -> usize {
    u64::from_be_bytes(body[..8].try_into().unwrap()) as usize
}

/// Sends a rep on a fresh connection without reading the answer.
fn post_async(s: &Server, path: &str, body: &[u8]) -> Client {
    let mut c = s.client();
    c.send_post(path, body);
    c
}

/// Waits up to `wait` for the answer to a rep sent with `post_async`; `None` if none came.
fn answer_within(c: &mut Client, wait: Duration) -> Option<common::Response> {
    c.stream.set_read_timeout(Some(wait)).unwrap();
    let mut probe = [0u8; 1];
    let ready = match c.stream.peek(&mut probe) {
        Ok(_) => true,
        Err(e) if is_timeout(&e) => false,
        Err(e) => panic!("rep connection failed: {e}"),
    };
    c.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    ready.then(|| c.read_response())
}

// ---------------------------------------------------------------------------------------------
// Upgrade, pools, 403s
// ---------------------------------------------------------------------------------------------

#[test]
fn plain_get_on_psub_is_400_and_joins_nothing() {
    let s = Server::start(&[W2]);
    s.get("/psub/plain").assert_status_text(400);
    s.get("/psub/plain?shared=1&token=t").assert_status_text(400);
    // Upgrade without Connection: upgrade is not a websocket handshake either.
    let mut c = s.client();
    c.send(
        format!(
            "GET /psub/plain HTTP/1.1\r\nHost: esub\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {WS_KEY}\r\n\r\n"
        )
        .as_bytes(),
    );
    c.read_response().assert_status_text(400);
    assert_eq!(s.keys(), Vec::<String>::new());
    s.post("/rep/plain", b"x").assert_text(404, "Unknown key");
}

#[test]
fn upgrade_answers_101_and_member_gets_reps_as_unmasked_frames() {
    let s = Server::start(&[W2]);
    let mut m = raw_upgrade(&s, "/psub/hello", b"");
    assert_eq!(s.keys(), vec!["hello".to_string()]);
    s.post("/rep/hello", b"hi there").assert(200, b"OK");
    assert_eq!(m.frame(), RawFrame::Frame(0x81, b"hi there".to_vec()));
    // A pool member stays: the next rep reaches it too.
    s.post("/rep/hello?psub=1", b"again").assert(200, b"OK");
    assert_eq!(m.frame(), RawFrame::Frame(0x81, b"again".to_vec()));
    assert_eq!(s.keys(), vec!["hello".to_string()]);
}

#[test]
fn shared_pool_of_three_gets_300_reps_round_robin_in_order() {
    let s = Server::start(&[W2]);
    let mut members: Vec<Ws> = (0..3).map(|_| ws_join(&s, "/psub/rr?shared=1")).collect();
    let mut rep = s.client();
    for i in 0..300 {
        rep.post("/rep/rr", &numbered(i)).assert(200, b"OK");
    }
    let mut residues = HashSet::new();
    for (m, ws) in members.iter_mut().enumerate() {
        let got: Vec<usize> = (0..100)
            .map(|_| {
                let (text, body) = recv_data(ws);
                assert!(text, "ASCII body must come as TEXT");
                index_of(&body)
            })
            .collect();
        expect_quiet(ws, Duration::from_millis(100));
        // Round-robin: one member gets every third rep, in the order they were sent.
        let first = got[0];
        assert!(first < 3, "member {m} first got rep {first}");
        let want: Vec<usize> = (0..100).map(|k| first + 3 * k).collect();
        assert_eq!(got, want, "member {m} did not get every third rep in order");
        residues.insert(first);
    }
    assert_eq!(residues.len(), 3, "two members got the same share");
}

#[test]
fn exclusive_newcomer_with_the_token_takes_over_with_1001() {
    let s = Server::start(&[W2]);
    let mut old = ws_join(&s, "/psub/ex?token=t");
    s.post("/rep/ex?token=t", b"one").assert(200, b"OK");
    assert_eq!(recv_bytes(&mut old), b"one");

    let mut new = ws_join(&s, "/psub/ex?token=t");
    expect_close(&mut old, 1001, Some("taken over"));
    assert_eq!(s.keys(), vec!["ex".to_string()]);
    s.post("/rep/ex?token=t", b"two").assert(200, b"OK");
    assert_eq!(recv_bytes(&mut new), b"two");

    // Without a token the same holds.
    let mut a = ws_join(&s, "/psub/ex2");
    let mut b = ws_join(&s, "/psub/ex2");
    expect_close(&mut a, 1001, Some("taken over"));
    s.post("/rep/ex2", b"three").assert(200, b"OK");
    assert_eq!(recv_bytes(&mut b), b"three");
    expect_quiet(&mut new, Duration::from_millis(50));
}

#[test]
fn join_with_other_token_or_flag_is_403_and_the_pool_is_untouched() {
    let s = Server::start(&[W2]);
    let mut shared = ws_join(&s, "/psub/sh?token=a&shared=1");
    let mut excl = ws_join(&s, "/psub/ex?token=a");
    let mut open = ws_join(&s, "/psub/open?shared=1");
    let refused = [
        "/psub/sh?token=b&shared=1",   // other token
        "/psub/sh?shared=1",           // no token
        "/psub/sh?token=A&shared=1",   // tokens compare exactly
        "/psub/sh?token=a",            // flag differs: exclusive into shared
        "/psub/ex?token=a&shared=1",   // flag differs: shared into exclusive
        "/psub/ex?token=b",            // exclusive with another token: no takeover
        "/psub/ex",                    // ... nor without one
        "/psub/open?token=x&shared=1", // a token into a tokenless pool
        "/psub/open",                  // flag differs
    ];
    for path in refused {
        let mut c = s.client();
        c.send(upgrade_request(path).as_bytes());
        c.read_response().assert_text(403, FORBIDDEN);
    }
    // Members are unchanged and still receive.
    s.post("/rep/sh?token=a", b"s").assert(200, b"OK");
    s.post("/rep/ex?token=a", b"e").assert(200, b"OK");
    s.post("/rep/open", b"o").assert(200, b"OK");
    assert_eq!(recv_bytes(&mut shared), b"s");
    assert_eq!(recv_bytes(&mut excl), b"e");
    assert_eq!(recv_bytes(&mut open), b"o");
    assert_eq!(s.keys(), vec!["ex".to_string(), "open".to_string(), "sh".to_string()]);
    // The right token and flag still joins.
    let mut second = ws_join(&s, "/psub/sh?token=a&shared=1");
    s.post("/rep/sh?token=a", b"1").assert(200, b"OK");
    s.post("/rep/sh?token=a", b"2").assert(200, b"OK");
    let mut got = vec![recv_bytes(&mut shared), recv_bytes(&mut second)];
    got.sort();
    assert_eq!(got, vec![b"1".to_vec(), b"2".to_vec()]);
}

#[test]
fn rep_takes_the_waiting_sub_first_and_psub_flag_goes_to_the_pool() {
    let s = Server::start(&[W2]);
    // The sub parks first (so /keys shows it), then the pool forms on the same key.
    let mut sub = s.sub("/sub/both?token=t");
    s.wait_for_key("both");
    let mut m = ws_join(&s, "/psub/both?token=t&shared=1");
    // psub=1 never takes the sub.
    s.post("/rep/both?token=t&psub=1", b"pool").assert(200, b"OK");
    assert_eq!(recv_bytes(&mut m), b"pool");
    sub.expect_silence(Duration::from_millis(50));
    // Without psub=1 the waiting sub wins over the pool.
    s.post("/rep/both?token=t", b"to the sub").assert(200, b"OK");
    sub.read_response().assert_delivered(b"to the sub");
    expect_quiet(&mut m, Duration::from_millis(50));
    // The sub is used up: the pool gets the next one.
    s.post("/rep/both?token=t", b"to the pool").assert(200, b"OK");
    assert_eq!(recv_bytes(&mut m), b"to the pool");

    // psub=1 with only a sub waiting: Unknown key, and the sub keeps waiting.
    let mut lone = s.sub("/sub/lone");
    s.wait_for_key("lone");
    s.post("/rep/lone?psub=1", b"x").assert_text(404, "Unknown key");
    s.post("/rep/lone", b"y").assert(200, b"OK");
    lone.read_response().assert_delivered(b"y");
}

#[test]
fn rep_to_a_pool_checks_the_token_exactly() {
    let s = Server::start(&[W2]);
    let mut t = ws_join(&s, "/psub/tok?token=secret&shared=1");
    let mut n = ws_join(&s, "/psub/notok?shared=1");
    for path in ["/rep/tok", "/rep/tok?token=", "/rep/tok?token=Secret", "/rep/tok?token=secret2"] {
        s.post(path, b"no").assert_text(403, "Invalid token");
        s.post(&format!("{path}{}psub=1", if path.contains('?') { "&" } else { "?" }), b"no")
            .assert_text(403, "Invalid token");
    }
    s.post("/rep/notok?token=x", b"no").assert_text(403, "Invalid token");
    s.post("/rep/nokey?psub=1", b"no").assert_text(404, "Unknown key");
    s.post("/rep/tok?token=secret", b"yes").assert(200, b"OK");
    s.post("/rep/notok?token=", b"yes too").assert(200, b"OK");
    assert_eq!(recv_bytes(&mut t), b"yes");
    assert_eq!(recv_bytes(&mut n), b"yes too");
    expect_quiet(&mut t, Duration::from_millis(50));
}

// ---------------------------------------------------------------------------------------------
// Frames: text, binary, size
// ---------------------------------------------------------------------------------------------

#[test]
fn utf8_bodies_are_text_frames_and_other_bytes_binary_byte_for_byte() {
    let s = Server::start(&[W2]);
    let mut m = ws_join(&s, "/psub/bytes");
    let all: Vec<u8> = (0..=255u8).collect();
    let cases: Vec<(Vec<u8>, bool)> = vec![
        (b"plain ascii".to_vec(), true),
        (Vec::new(), true),
        ("h\u{e9}llo w\u{f6}rld \u{2713} \u{1f600}".as_bytes().to_vec(), true),
        (b"nul \0 inside".to_vec(), true),
        (all.clone(), false),
        (vec![0xc3], false),             // truncated 2-byte sequence
        (vec![0xed, 0xa0, 0x80], false), // UTF-16 surrogate
        (vec![0xc0, 0xaf], false),       // overlong
        (b"ok then \xff".to_vec(), false),
        (vec![0u8; 3000], true), // 3000 NULs are valid UTF-8
        (all.iter().cycle().take(70_000).copied().collect(), false), // 64-bit length form
    ];
    let mut rep = s.client();
    for (body, _) in &cases {
        rep.post("/rep/bytes", body).assert(200, b"OK");
    }
    for (body, text) in &cases {
        let (got_text, got) = recv_data(&mut m);
        assert_eq!(
            got_text,
            *text,
            "frame type for a {}-byte body {:?}",
            body.len(),
            &body[..body.len().min(16)]
        );
        assert!(got == *body, "bytes differ for a {}-byte body", body.len());
    }
}

#[test]
fn one_mebibyte_body_arrives_as_one_message() {
    let s = Server::start(&[W2]);
    let mut m = ws_join(&s, "/psub/big?shared=1");
    const MIB: usize = 1 << 20;
    let binary = big_numbered(7, MIB);
    let text: Vec<u8> = b"0123456789abcdef".iter().cycle().take(MIB).copied().collect();
    s.post("/rep/big", &binary).assert(200, b"OK");
    s.post("/rep/big", &text).assert(200, b"OK");
    let (is_text, got) = recv_data(&mut m);
    assert!(!is_text, "a non-UTF-8 body must be BINARY");
    assert_eq!(got.len(), MIB);
    assert!(got == binary, "binary 1 MiB body differs");
    let (is_text, got) = recv_data(&mut m);
    assert!(is_text, "an ASCII body must be TEXT");
    assert_eq!(got.len(), MIB);
    assert!(got == text, "text 1 MiB body differs");
}

// ---------------------------------------------------------------------------------------------
// Receipt mode
// ---------------------------------------------------------------------------------------------

#[test]
fn receipt_mode_rep_answers_only_after_the_members_data_frame() {
    let s =
        Server::start(&[W2, ("ESUB_CONFIRM_RECEIPT", "1"), ("ESUB_CONFIRM_TIMEOUT_MS", "3000")]);
    let mut m = ws_join(&s, "/psub/rc?shared=1");

    let mut rep1 = post_async(&s, "/rep/rc", b"first");
    assert_eq!(recv_bytes(&mut m), b"first");
    rep1.expect_silence(Duration::from_millis(300));
    // A ping is not a receipt.
    m.send(Message::Ping(b"p".to_vec().into())).unwrap();
    match m.read().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"p"),
        other => panic!("expected a pong, got {other:?}"),
    }
    rep1.expect_silence(Duration::from_millis(200));

    // A second rep waits behind the first: its frame is not sent before the first receipt.
    let mut rep2 = post_async(&s, "/rep/rc", b"second");
    expect_quiet(&mut m, Duration::from_millis(300));
    m.send(Message::text("ok")).unwrap();
    rep1.read_response().assert(200, b"OK");
    assert_eq!(recv_bytes(&mut m), b"second");
    rep2.expect_silence(Duration::from_millis(200));
    // Any data frame counts, binary too.
    m.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    rep2.read_response().assert(200, b"OK");
    assert_eq!(s.keys(), vec!["rc".to_string()]);
}

#[test]
fn receipt_timeout_closes_the_silent_member_and_redirects_the_rep() {
    let s = Server::start(&[W2, ("ESUB_CONFIRM_RECEIPT", "1"), ("ESUB_CONFIRM_TIMEOUT_MS", "200")]);
    // Whichever member gets the rep first stays silent; the other confirms.
    let silent_taken = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<(&'static str, Vec<u8>, String)>();
    let mut threads = Vec::new();
    for _ in 0..2 {
        let mut ws = ws_join(&s, "/psub/redir?shared=1");
        let silent_taken = Arc::clone(&silent_taken);
        let tx = tx.clone();
        threads.push(thread::spawn(move || {
            let body = recv_bytes(&mut ws);
            if silent_taken.swap(true, Ordering::SeqCst) {
                ws.send(Message::text("ok")).unwrap();
                tx.send(("confirmer", body, String::new())).unwrap();
                // Stay a member until the test ends.
                let _ = ws.get_mut().set_read_timeout(Some(Duration::from_secs(3)));
                let _ = ws.read();
            } else {
                // No receipt: the server must close us (a close frame or just the socket)
                // and send nothing else.
                let after = match ws.read() {
                    Ok(Message::Close(f)) => format!("close {f:?}"),
                    Ok(m) => format!("unexpected message {m:?}"),
                    Err(tungstenite::Error::Io(e)) if is_timeout(&e) => "still open".into(),
                    Err(_) => "closed".into(),
                };
                tx.send(("silent", body, after)).unwrap();
            }
        }));
    }
    let start = Instant::now();
    s.post("/rep/redir", b"payload").assert(200, b"OK");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(190),
        "rep answered before the receipt timeout: {took:?}"
    );
    let mut seen = HashMap::new();
    for _ in 0..2 {
        let (who, body, after) = rx.recv_timeout(Duration::from_secs(10)).expect("member report");
        assert_eq!(body, b"payload", "{who} got the wrong body");
        seen.insert(who, after);
    }
    let after = &seen["silent"];
    assert!(after == "closed" || after.starts_with("close "), "silent member: {after}");
    assert!(seen.contains_key("confirmer"));
    // The silent member left the pool; the confirmer stays.
    assert_eq!(s.keys(), vec!["redir".to_string()]);
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn receipt_timeout_with_no_other_member_is_404_no_listeners_remain() {
    let s = Server::start(&[W2, ("ESUB_CONFIRM_RECEIPT", "1"), ("ESUB_CONFIRM_TIMEOUT_MS", "200")]);
    let mut m = raw_upgrade(&s, "/psub/alone", b"");
    let start = Instant::now();
    s.post("/rep/alone", b"nobody confirms").assert_text(404, "No listeners remain");
    assert!(start.elapsed() >= Duration::from_millis(190), "404 before the receipt timeout");
    assert_eq!(m.data(), (0x81, b"nobody confirms".to_vec()));
    // Closed: with a close frame or without, but nothing else.
    match m.frame_skip_control() {
        RawFrame::Eof => {}
        RawFrame::Frame(0x88, _) => assert_eq!(m.frame(), RawFrame::Eof),
        other => panic!("expected the silent member to be closed, got {other:?}"),
    }
    assert_eq!(s.keys(), Vec::<String>::new());
    s.post("/rep/alone", b"x").assert_text(404, "Unknown key");
}

// ---------------------------------------------------------------------------------------------
// Keepalive mode
// ---------------------------------------------------------------------------------------------

#[test]
fn keepalive_sweep_closes_only_the_silent_member() {
    let s = Server::start(&[W2, ("ESUB_PING_FREQUENCY", "1")]);
    let joined = Instant::now();
    // Silent: never reads (until the check below) and never writes.
    let mut silent = raw_upgrade(&s, "/psub/ka?shared=1", b"");
    // Live reader: tungstenite answers the server's pings while it reads.
    let mut live = ws_join(&s, "/psub/ka?shared=1");
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            live.get_mut().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut pings = 0;
            while !stop.load(Ordering::SeqCst) {
                match live.read() {
                    Ok(Message::Ping(_)) => pings += 1,
                    Ok(Message::Text(t)) => tx.send(t.as_bytes().to_vec()).unwrap(),
                    Ok(m) => panic!("live member got {m:?}"),
                    Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
                    Err(e) => panic!("live member failed: {e}"),
                }
            }
            pings
        })
    };
    // Pinger: sends its own pings and never reads.
    let mut pinger = raw_upgrade(&s, "/psub/ka?shared=1", b"");
    let ping_thread = {
        let stop = Arc::clone(&stop);
        let mut w = pinger.s.try_clone().unwrap();
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                w.write_all(&masked(0x89, b"beat")).unwrap();
                thread::sleep(Duration::from_millis(200));
            }
        })
    };

    // The silent member is pinged after half the period, then closed after the whole.
    match silent.frame() {
        RawFrame::Frame(0x89, _) => {}
        other => panic!("expected a ping before the sweep, got {other:?}"),
    }
    let pinged_at = joined.elapsed();
    assert!(pinged_at >= Duration::from_millis(400), "pinged too early: {pinged_at:?}");
    silent.expect_close(1001, Some("keepalive timeout"));
    let closed_at = joined.elapsed();
    assert!(
        closed_at >= Duration::from_millis(900) && closed_at < Duration::from_millis(3000),
        "silent member closed after {closed_at:?}, want about 1 s"
    );
    // Wait well past two periods: the others stay.
    thread::sleep(Duration::from_millis(3200).saturating_sub(joined.elapsed()));
    assert_eq!(s.keys(), vec!["ka".to_string()]);
    let mut rep = s.client();
    rep.post("/rep/ka", b"one").assert(200, b"OK");
    rep.post("/rep/ka", b"two").assert(200, b"OK");
    let live_got = rx.recv_timeout(IO_TIMEOUT).expect("live member got nothing");
    let (op, pinger_got) = pinger.data();
    assert_eq!(op, 0x81);
    let mut got = vec![live_got, pinger_got];
    got.sort();
    assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
    stop.store(true, Ordering::SeqCst);
    let pings = reader.join().unwrap();
    ping_thread.join().unwrap();
    assert!(pings >= 1, "the live member was never pinged in 3 s with ESUB_PING_FREQUENCY=1");
}

#[test]
fn member_killed_mid_stream_reps_go_on_to_the_other_at_least_once() {
    let s = Server::start(&[W2]);
    let (tx, rx) = mpsc::channel::<(char, Vec<u8>)>();
    enum Ctl {
        Pause,
        Die,
    }
    let (ctl_tx, ctl_rx) = mpsc::channel::<Ctl>();
    let (ack_tx, ack_rx) = mpsc::channel::<()>();

    let mut a = ws_join(&s, "/psub/kill?shared=1");
    let mut b = ws_join(&s, "/psub/kill?shared=1");
    let a_thread = {
        let tx = tx.clone();
        thread::spawn(move || {
            a.get_mut().set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            loop {
                match ctl_rx.try_recv() {
                    Ok(Ctl::Pause) => {
                        ack_tx.send(()).unwrap();
                        // Stop reading; wait for the kill.
                        let _ = ctl_rx.recv();
                        // Drop with unread data and no close frame: the kernel resets.
                        drop(a);
                        return;
                    }
                    Ok(Ctl::Die) => return,
                    Err(_) => {}
                }
                match a.read() {
                    Ok(Message::Text(t)) => tx.send(('A', t.as_bytes().to_vec())).unwrap(),
                    Ok(Message::Ping(_) | Message::Pong(_)) => {}
                    Ok(m) => panic!("A got {m:?}"),
                    Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
                    Err(e) => panic!("A failed: {e}"),
                }
            }
        })
    };
    let stop_b = Arc::new(AtomicBool::new(false));
    let b_thread = {
        let tx = tx.clone();
        let stop = Arc::clone(&stop_b);
        thread::spawn(move || {
            b.get_mut().set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            while !stop.load(Ordering::SeqCst) {
                match b.read() {
                    Ok(Message::Text(t)) => tx.send(('B', t.as_bytes().to_vec())).unwrap(),
                    Ok(Message::Ping(_) | Message::Pong(_)) => {}
                    Ok(m) => panic!("B got {m:?}"),
                    Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
                    Err(e) => panic!("B failed: {e}"),
                }
            }
        })
    };

    let mut got: Vec<(char, usize)> = Vec::new();
    let mut rep = s.client();
    // Phase 1: both members read; each rep is seen before the next is sent.
    for i in 0..20 {
        rep.post("/rep/kill", &numbered(i)).assert(200, b"OK");
        let (who, body) = rx.recv_timeout(IO_TIMEOUT).expect("rep not received");
        assert_eq!(index_of(&body), i);
        got.push((who, i));
    }
    assert!(got.iter().any(|g| g.0 == 'A') && got.iter().any(|g| g.0 == 'B'), "{got:?}");

    // Phase 2: A stops reading; send until a rep lands in A's socket unread.
    ctl_tx.send(Ctl::Pause).unwrap();
    ack_rx.recv_timeout(IO_TIMEOUT).unwrap();
    let mut unread = None;
    for i in 20..30 {
        rep.post("/rep/kill", &numbered(i)).assert(200, b"OK");
        match rx.recv_timeout(Duration::from_millis(300)) {
            Ok((who, body)) => {
                assert_eq!((who, index_of(&body)), ('B', i));
                got.push((who, i));
            }
            Err(_) => {
                unread = Some(i);
                break;
            }
        }
    }
    let unread = unread.expect("no rep went to member A in 10 reps: round-robin broken?");

    // Phase 3: kill A (no close frame, unread data: a reset) and keep sending.
    ctl_tx.send(Ctl::Die).unwrap();
    a_thread.join().unwrap();
    let last = unread + 30;
    for i in unread + 1..=last {
        let r = rep.post("/rep/kill", &numbered(i));
        r.assert(200, b"OK");
    }
    // Everything from the kill on reaches B, including A's unread rep (at-least-once).
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut after: Vec<usize> = Vec::new();
    let want: HashSet<usize> = (unread..=last).collect();
    while !want.iter().all(|i| after.contains(i)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((who, body)) => {
                assert_eq!(who, 'B', "the killed member cannot receive");
                after.push(index_of(&body));
            }
            Err(_) => {
                let missing: Vec<_> = want.iter().filter(|i| !after.contains(i)).collect();
                panic!(
                    "reps lost after killing member A: missing {missing:?} (A's unread rep was \
                     {unread}); B got {after:?}"
                );
            }
        }
    }
    // Only A's unread (last delivered) rep may be re-sent; nothing else may arrive twice.
    let mut counts = HashMap::new();
    for i in &after {
        *counts.entry(*i).or_insert(0) += 1;
    }
    for (i, n) in &counts {
        assert!(*n == 1 || *i == unread, "rep {i} delivered {n} times to B: {after:?}");
    }
    // Nothing sent before the kill was lost either.
    for i in 0..unread {
        assert!(got.iter().any(|g| g.1 == i), "rep {i} never received");
    }
    assert_eq!(s.keys(), vec!["kill".to_string()]);
    stop_b.store(true, Ordering::SeqCst);
    b_thread.join().unwrap();
}

/// Unanswered reps sent with `post_async`: re-checks them and drops those answered 200.
fn refresh_pending(pending: &mut Vec<(usize, Client)>, answered: &mut Vec<usize>) {
    let mut still = Vec::new();
    for (j, mut c) in pending.drain(..) {
        match answer_within(&mut c, Duration::from_millis(50)) {
            Some(r) => {
                r.assert(200, b"OK");
                answered.push(j);
            }
            None => still.push((j, c)),
        }
    }
    *pending = still;
}

#[test]
fn member_that_never_reads_is_skipped_while_another_keeps_receiving() {
    // Frames of 128 KiB against a 64 KiB backlog: a member that does not read holds at most
    // two unwritten frames (one queued while under the limit, one partly written); every
    // further rep picked for it goes to the other member.
    let s = Server::start(&[W2, ("ESUB_MAX_PSUB_BACKLOG", "65536")]);
    const SIZE: usize = 128 * 1024;
    let mut stuck = ws_join(&s, "/psub/bp?shared=1");
    let mut reader = ws_join(&s, "/psub/bp?shared=1");
    let (tx, rx) = mpsc::channel::<usize>();
    let stop = Arc::new(AtomicBool::new(false));
    let reader_thread = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            reader.get_mut().set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            while !stop.load(Ordering::SeqCst) {
                match reader.read() {
                    Ok(Message::Binary(b)) => {
                        assert_eq!(b.len(), SIZE);
                        tx.send(big_index(&b)).unwrap();
                    }
                    Ok(Message::Ping(_) | Message::Pong(_)) => {}
                    Ok(m) => panic!("reader got {m:?}"),
                    Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
                    Err(e) => panic!("reader failed: {e}"),
                }
            }
            // Handed back and kept open: a member that drops its socket has its last rep sent
            // again to another member (at-least-once), which would spoil the count below.
            reader
        })
    };

    let mut pending: Vec<(usize, Client)> = Vec::new();
    let mut answered: Vec<usize> = Vec::new();
    let mut by_reader: HashSet<usize> = HashSet::new();
    let mut max_pending = 0;
    // Phase 1: fill the stuck member's socket buffers until a rep to it cannot be written.
    let mut i = 0;
    while pending.is_empty() {
        assert!(
            i < 1000,
            "{i} reps of {SIZE} bytes and the member that never reads never backed up"
        );
        let mut c = post_async(&s, "/rep/bp", &big_numbered(i, SIZE));
        match answer_within(&mut c, Duration::from_millis(1000)) {
            Some(r) => {
                r.assert(200, b"OK");
                answered.push(i);
            }
            None => pending.push((i, c)),
        }
        i += 1;
    }
    // Phase 2: keep sending; each rep is answered at once and, apart from the odd one the
    // kernel still takes for the stuck member, seen by the reader. Go on until ten reps in a
    // row reached the reader (round-robin alone would give the stuck member five of them).
    let mut streak = 0;
    let phase2 = i;
    while streak < 10 {
        assert!(
            i < phase2 + 300,
            "no ten reps in a row went to the reading member in 300 reps: the member past \
             ESUB_MAX_PSUB_BACKLOG is not skipped"
        );
        let mut c = post_async(&s, "/rep/bp", &big_numbered(i, SIZE));
        let to_reader = match answer_within(&mut c, Duration::from_millis(1000)) {
            Some(r) => {
                r.assert(200, b"OK");
                answered.push(i);
                // Answered: the reader has it, or the stuck member's kernel took it.
                let deadline = Instant::now() + Duration::from_millis(300);
                loop {
                    if by_reader.contains(&i) {
                        break true;
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(j) => {
                            by_reader.insert(j);
                        }
                        Err(_) => break false,
                    }
                }
            }
            None => {
                pending.push((i, c));
                false
            }
        };
        streak = if to_reader { streak + 1 } else { 0 };
        refresh_pending(&mut pending, &mut answered);
        max_pending = max_pending.max(pending.len());
        assert!(
            pending.len() <= 2,
            "reps {:?} wait on a member past ESUB_MAX_PSUB_BACKLOG=65536 with {SIZE}-byte frames",
            pending.iter().map(|p| p.0).collect::<Vec<_>>()
        );
        i += 1;
    }
    let end = i;
    assert_eq!(s.keys(), vec!["bp".to_string()]);

    // Phase 3: the stuck member reads at last: what was queued for it arrives, its reps answer.
    stop.store(true, Ordering::SeqCst);
    let _reader = reader_thread.join().unwrap();
    while let Ok(j) = rx.try_recv() {
        by_reader.insert(j);
    }
    let drain = thread::spawn(move || {
        let mut got = Vec::new();
        stuck.get_mut().set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        loop {
            match stuck.read() {
                Ok(Message::Binary(b)) => got.push(big_index(&b)),
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(m) => panic!("stuck member got {m:?}"),
                Err(tungstenite::Error::Io(e)) if is_timeout(&e) => return got,
                Err(e) => panic!("stuck member failed: {e}"),
            }
        }
    });
    let pending_ids: Vec<usize> = pending.iter().map(|p| p.0).collect();
    for (j, mut c) in pending {
        let r = c.try_read_response().unwrap_or_else(|e| panic!("rep {j} never answered: {e}"));
        r.assert(200, b"OK");
    }
    let by_stuck = drain.join().unwrap();
    let mut sorted = by_stuck.clone();
    sorted.sort();
    assert_eq!(by_stuck, sorted, "the stuck member's reps came out of order");
    for p in &pending_ids {
        assert!(by_stuck.contains(p), "rep {p} answered 200 but not delivered to the stuck member");
    }
    // Each rep reached exactly one member.
    let mut all: Vec<usize> = by_stuck.iter().chain(by_reader.iter()).copied().collect();
    all.sort();
    assert_eq!(all, (0..end).collect::<Vec<_>>(), "every rep exactly once");
    assert!(max_pending <= 2);
}

#[test]
fn sole_member_that_never_reads_makes_reps_404_no_listeners_remain() {
    let s = Server::start(&[W2, ("ESUB_MAX_PSUB_BACKLOG", "65536")]);
    const SIZE: usize = 128 * 1024;
    let mut m = ws_join(&s, "/psub/solo");
    let mut ok: Vec<usize> = Vec::new();
    let mut pending: Vec<(usize, Client)> = Vec::new();
    let mut refused: Vec<usize> = Vec::new();
    let mut i = 0;
    // Until three reps in a row are refused (the kernel may still take the odd frame).
    while refused.len() < 3 || refused[refused.len() - 3..] != [i - 3, i - 2, i - 1] {
        assert!(
            i < 1000,
            "no three reps in a row refused after {i} reps to a member that never reads"
        );
        let mut c = post_async(&s, "/rep/solo", &big_numbered(i, SIZE));
        match answer_within(&mut c, Duration::from_millis(1000)) {
            Some(r) if r.status == 200 => {
                r.assert(200, b"OK");
                ok.push(i);
            }
            Some(r) => {
                r.assert_text(404, "No listeners remain");
                refused.push(i);
            }
            None => pending.push((i, c)),
        }
        refresh_pending(&mut pending, &mut ok);
        assert!(pending.len() <= 2, "{} reps wait past the backlog", pending.len());
        i += 1;
    }
    // Skipping is not failing: the member is still there.
    assert_eq!(s.keys(), vec!["solo".to_string()]);
    // Once it reads, the queued reps go out and are answered; refused ones never arrive.
    let mut want: Vec<usize> = ok.iter().copied().chain(pending.iter().map(|p| p.0)).collect();
    want.sort();
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        m.get_mut().set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        loop {
            match m.read() {
                Ok(Message::Binary(b)) => got.push(big_index(&b)),
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(other) => panic!("member got {other:?}"),
                Err(tungstenite::Error::Io(e)) if is_timeout(&e) => return got,
                Err(e) => panic!("member failed: {e}"),
            }
        }
    });
    for (j, mut c) in pending {
        let r = c.try_read_response().unwrap_or_else(|e| panic!("rep {j} never answered: {e}"));
        r.assert(200, b"OK");
    }
    assert_eq!(
        reader.join().unwrap(),
        want,
        "the member must get exactly its accepted reps, in order"
    );
}

// ---------------------------------------------------------------------------------------------
// Wire details: pipelining, close handshake, protocol errors, shutdown
// ---------------------------------------------------------------------------------------------

#[test]
fn frames_pipelined_behind_the_upgrade_request_are_read() {
    let s = Server::start(&[W2]);
    // Upgrade + ping in one write: 101, then the pong.
    let mut m = raw_upgrade(&s, "/psub/pipe?shared=1", &masked(0x89, b"hello"));
    assert_eq!(m.frame(), RawFrame::Frame(0x8A, b"hello".to_vec()));
    assert_eq!(s.keys(), vec!["pipe".to_string()]);
    s.post("/rep/pipe", b"after").assert(200, b"OK");
    assert_eq!(m.frame(), RawFrame::Frame(0x81, b"after".to_vec()));

    // Upgrade + ping + close in one write: pong, close echo, then the socket closes.
    let mut extra = masked(0x89, b"p2");
    extra.extend(masked(0x88, &close_payload(1000, "done")));
    let mut m2 = raw_upgrade(&s, "/psub/pipe2", &extra);
    assert_eq!(m2.frame(), RawFrame::Frame(0x8A, b"p2".to_vec()));
    m2.expect_close(1000, None);
    assert!(!s.keys().contains(&"pipe2".to_string()));
}

#[test]
fn client_close_is_echoed_and_the_member_removed_at_once() {
    let s = Server::start(&[W2]);
    let mut a = raw_upgrade(&s, "/psub/bye?shared=1", b"");
    let mut b = raw_upgrade(&s, "/psub/bye?shared=1", b"");
    // One rep each first (round-robin), read by both.
    s.post("/rep/bye", b"x").assert(200, b"OK");
    s.post("/rep/bye", b"y").assert(200, b"OK");
    let mut first = vec![a.data().1, b.data().1];
    first.sort();
    assert_eq!(first, vec![b"x".to_vec(), b"y".to_vec()]);
    a.send(&masked(0x88, &close_payload(4321, "leaving")));
    match a.frame() {
        RawFrame::Frame(0x88, p) => assert_eq!(&p[..2], &4321u16.to_be_bytes(), "code not echoed"),
        other => panic!("expected the close echo, got {other:?}"),
    }
    assert_eq!(a.frame(), RawFrame::Eof);
    // The other member now gets every rep, and only those: a clean close is not a failure, so
    // nothing the closed member had is sent again.
    s.post("/rep/bye", b"1").assert(200, b"OK");
    s.post("/rep/bye", b"2").assert(200, b"OK");
    let after: Vec<String> =
        (0..2).map(|_| String::from_utf8_lossy(&b.data().1).into_owned()).collect();
    assert_eq!(
        after,
        ["1", "2"],
        "after member A closed cleanly (close frame 4321), member B must get exactly the reps \
         sent after it; A had received one of \"x\"/\"y\" and B got {{x, y}} minus that"
    );

    // The last member's close takes the key away before the echo is even sent.
    b.send(&masked(0x88, &close_payload(1000, "")));
    match b.frame() {
        RawFrame::Frame(0x88, p) => assert_eq!(&p[..2], &1000u16.to_be_bytes()),
        other => panic!("expected the close echo, got {other:?}"),
    }
    assert_eq!(s.keys(), Vec::<String>::new(), "key still listed after the last member closed");
    s.post("/rep/bye", b"3").assert_text(404, "Unknown key");
    assert_eq!(b.frame(), RawFrame::Eof);

    // tungstenite's close handshake works the same way.
    let mut c = ws_join(&s, "/psub/bye2");
    c.send(close_frame(1000, "")).unwrap();
    match c.read() {
        Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1000),
        other => panic!("expected the close echo, got {other:?}"),
    }
    assert_eq!(s.keys(), Vec::<String>::new());
}

#[test]
fn unmasked_client_frame_closes_with_1002() {
    let s = Server::start(&[W2]);
    let mut m = raw_upgrade(&s, "/psub/unmasked?shared=1", b"");
    m.send(&unmasked(0x81, b"ok"));
    m.expect_close(1002, None);
    assert_eq!(s.keys(), Vec::<String>::new());
    s.post("/rep/unmasked", b"x").assert_text(404, "Unknown key");
}

#[test]
fn oversize_member_frame_closes_with_1009() {
    let s = Server::start(&[W2, ("ESUB_MAX_BODY_BYTES", "1024")]);
    let mut m = raw_upgrade(&s, "/psub/huge", b"");
    // At the limit is fine (a data frame from a keepalive member is just a sign of life).
    m.send(&masked(0x82, &[7u8; 1024]));
    m.send(&masked(0x89, b"still"));
    assert_eq!(m.frame(), RawFrame::Frame(0x8A, b"still".to_vec()));
    m.send(&masked(0x82, &[7u8; 1025]));
    m.expect_close(1009, None);
    assert_eq!(s.keys(), Vec::<String>::new());
    // Fragments count together.
    let mut f = raw_upgrade(&s, "/psub/huge", b"");
    f.send(&masked(0x02, &[1u8; 600]));
    f.send(&masked(0x80, &[1u8; 600]));
    f.expect_close(1009, None);
    s.get("/ping").assert(200, b"OK");
}

#[test]
fn sigterm_closes_every_websocket_with_1001() {
    let mut s = Server::start(&[W2]);
    let mut members: Vec<Ws> = (0..3).map(|_| ws_join(&s, "/psub/term?shared=1")).collect();
    members.push(ws_join(&s, "/psub/term-excl?token=t"));
    members.push(ws_join(&s, "/prep"));
    s.sigterm();
    for ws in members.iter_mut() {
        expect_close(ws, 1001, None);
    }
    let st = s.wait_exit(Duration::from_secs(6));
    assert!(st.success(), "exit status after SIGTERM: {st:?}");
}
