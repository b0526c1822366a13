//! `/prep` (API.md section 3): reps sent as JSON messages over a websocket, handled like
//! `POST /rep`; answers in order with `?confirm=1` or in receipt mode, none otherwise; bad
//! messages close 1007, unmasked frames 1002, oversize frames 1009.
//!
//! Every socket has read and write timeouts: a server bug fails a test instead of hanging it.

mod common;

use common::ws::*;
use common::{IO_TIMEOUT, Server};
use serde_json::json;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use tungstenite::Message;

/// Most tests run two event loops so deliveries cross workers.
const W2: (&str, &str) = ("ESUB_WORKERS", "2");

// ---------------------------------------------------------------------------------------------
// /prep helpers
// ---------------------------------------------------------------------------------------------

/// One prep message as JSON text.
fn msg(key: &str, token: Option<&str>, psub: Option<bool>, data: &str) -> String {
    let mut v = json!({ "key": key, "token": token, "data": data });
    if let Some(p) = psub {
        v["psub"] = json!(p);
    }
    v.to_string()
}

/// Reads `n` answers (TEXT frames) from a prep socket.
#[track_caller]
fn answers(ws: &mut Ws, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| match recv(ws) {
            Message::Text(t) => t.as_str().to_string(),
            other => panic!("expected a TEXT answer, got {other:?}"),
        })
        .collect()
}

fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).expect("send prep message");
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn plain_get_on_prep_is_400() {
    let s = Server::start(&[W2]);
    s.get("/prep").assert_status_text(400);
    s.get("/prep?confirm=1").assert_status_text(400);
}

#[test]
fn prep_with_confirm_answers_every_frame_in_order() {
    let s = Server::start(&[W2]);
    let mut sub = s.sub("/sub/sk");
    s.wait_for_key("sk");
    let mut members: Vec<Ws> = (0..2).map(|_| ws_join(&s, "/psub/pk?token=t&shared=1")).collect();
    let mut p = ws_join(&s, "/prep?confirm=1");

    // Sent back to back without waiting: the answers must still come in message order, though
    // an `ok` travels to another worker and back while `Unknown key` is known at once.
    let mut want = Vec::new();
    let mut to_pool = Vec::new();
    send_text(&mut p, &msg("sk", None, None, "to the sub"));
    want.push("ok");
    send_text(&mut p, &msg("sk", None, None, "sub is used up"));
    want.push("Unknown key");
    for i in 0..40 {
        let (m, a) = match i % 5 {
            0 | 4 => {
                to_pool.push(format!("p{i}"));
                (msg("pk", Some("t"), Some(true), &format!("p{i}")), "ok")
            }
            1 => (msg("nokey", None, Some(false), "x"), "Unknown key"),
            2 => (msg("pk", Some("bad"), Some(true), "x"), "Invalid token"),
            _ => (msg("pk", None, None, "x"), "Invalid token"),
        };
        send_text(&mut p, &m);
        want.push(a);
    }
    assert_eq!(answers(&mut p, want.len()), want);
    expect_quiet(&mut p, Duration::from_millis(100));

    sub.read_response().assert_delivered(b"to the sub");
    // Round-robin over two members: each gets every other pool rep, in order.
    let mut got0: Vec<String> = Vec::new();
    let mut got1: Vec<String> = Vec::new();
    for (k, ws) in members.iter_mut().enumerate() {
        for _ in 0..to_pool.len() / 2 {
            let (text, b) = recv_data(ws);
            assert!(text, "prep data is a string: TEXT frame");
            if k == 0 { &mut got0 } else { &mut got1 }.push(String::from_utf8(b).unwrap());
        }
        expect_quiet(ws, Duration::from_millis(50));
    }
    let mut merged: Vec<String> = got0.iter().chain(got1.iter()).cloned().collect();
    let idx = |s: &String| s[1..].parse::<usize>().unwrap();
    for g in [&got0, &got1] {
        assert!(g.windows(2).all(|w| idx(&w[0]) < idx(&w[1])), "out of order: {g:?}");
    }
    merged.sort_by_key(idx);
    assert_eq!(merged, to_pool);
}

#[test]
fn prep_without_confirm_delivers_and_answers_nothing() {
    let s = Server::start(&[W2]);
    let mut m = ws_join(&s, "/psub/q?shared=1");
    let mut p = ws_join(&s, "/prep");
    for i in 0..10 {
        send_text(&mut p, &msg("q", None, Some(true), &format!("m{i}")));
        send_text(&mut p, &msg("nokey", None, None, "lost"));
        send_text(&mut p, &msg("q", Some("wrong"), None, "refused"));
    }
    for i in 0..10 {
        assert_eq!(recv_data(&mut m), (true, format!("m{i}").into_bytes()));
    }
    expect_quiet(&mut m, Duration::from_millis(100));
    // No answers at all, and the socket is alive: a ping gets its pong.
    expect_quiet(&mut p, Duration::from_millis(300));
    p.send(Message::Ping(b"alive".to_vec().into())).unwrap();
    match p.read().unwrap() {
        Message::Pong(b) => assert_eq!(&b[..], b"alive"),
        other => panic!("expected a pong, got {other:?}"),
    }
    // The close handshake works on a prep socket too.
    p.send(Message::Close(None)).unwrap();
    match p.read() {
        Ok(Message::Close(_)) => {}
        other => panic!("expected the close echo, got {other:?}"),
    }
}

#[test]
fn prep_token_null_and_empty_are_no_token() {
    let s = Server::start(&[W2]);
    let mut open = ws_join(&s, "/psub/open?shared=1");
    let mut locked = ws_join(&s, "/psub/locked?token=k&shared=1");
    let mut p = ws_join(&s, "/prep?confirm=1");
    let frames = [
        (r#"{"key":"open","token":null,"psub":true,"data":"a"}"#, "ok"),
        (r#"{"key":"open","token":"","psub":true,"data":"b"}"#, "ok"),
        (r#"{"key":"open","token":"x","psub":true,"data":"c"}"#, "Invalid token"),
        (r#"{"key":"locked","token":null,"psub":true,"data":"d"}"#, "Invalid token"),
        (r#"{"key":"locked","token":"","psub":true,"data":"e"}"#, "Invalid token"),
        (r#"{"key":"locked","token":"K","psub":true,"data":"f"}"#, "Invalid token"),
        (r#"{"key":"locked","token":"k","psub":true,"data":"g"}"#, "ok"),
        (r#"{"key":"locked","token":"k","data":"h"}"#, "ok"), // psub may be absent
    ];
    for (f, _) in frames {
        send_text(&mut p, f);
    }
    let want: Vec<&str> = frames.iter().map(|f| f.1).collect();
    assert_eq!(answers(&mut p, want.len()), want);
    assert_eq!(recv_bytes(&mut open), b"a");
    assert_eq!(recv_bytes(&mut open), b"b");
    assert_eq!(recv_bytes(&mut locked), b"g");
    assert_eq!(recv_bytes(&mut locked), b"h");
    expect_quiet(&mut open, Duration::from_millis(50));
    expect_quiet(&mut locked, Duration::from_millis(50));
}

#[test]
fn prep_psub_flag_skips_the_waiting_sub() {
    let s = Server::start(&[W2]);
    let mut sub = s.sub("/sub/both");
    s.wait_for_key("both");
    let mut m = ws_join(&s, "/psub/both?shared=1");
    let mut p = ws_join(&s, "/prep?confirm=1");
    send_text(&mut p, &msg("both", None, Some(true), "for the pool"));
    send_text(&mut p, &msg("both", None, Some(false), "for the sub"));
    send_text(&mut p, &msg("both", None, Some(false), "pool again"));
    assert_eq!(answers(&mut p, 3), ["ok", "ok", "ok"]);
    sub.read_response().assert_delivered(b"for the sub");
    assert_eq!(recv_bytes(&mut m), b"for the pool");
    assert_eq!(recv_bytes(&mut m), b"pool again");
}

#[test]
fn prep_data_arrives_as_its_utf8_bytes() {
    let s = Server::start(&[W2]);
    let mut m = ws_join(&s, "/psub/u8");
    let mut sub = s.sub("/sub/u8sub");
    s.wait_for_key("u8sub");
    let data = "caf\u{e9} \u{2713} \u{1f600}\n\t\"quoted\" \\ \u{0}end";
    let mut p = ws_join(&s, "/prep?confirm=1");
    send_text(&mut p, &msg("u8", None, None, data));
    send_text(&mut p, &msg("u8sub", None, None, data));
    send_text(&mut p, &msg("u8", None, None, ""));
    assert_eq!(answers(&mut p, 3), ["ok", "ok", "ok"]);
    assert_eq!(recv_data(&mut m), (true, data.as_bytes().to_vec()));
    assert_eq!(recv_data(&mut m), (true, Vec::new()));
    sub.read_response().assert_delivered(data.as_bytes());
}

#[test]
fn prep_in_receipt_mode_answers_without_confirm_flag() {
    let s = Server::start(&[W2, ("ESUB_CONFIRM_RECEIPT", "1"), ("ESUB_CONFIRM_TIMEOUT_MS", "200")]);
    // `deaf` never confirms; `ack` confirms every frame.
    let mut deaf = raw_upgrade(&s, "/psub/deaf", b"");
    let mut ack = ws_join(&s, "/psub/ack?shared=1");
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let acker = thread::spawn(move || {
        for _ in 0..2 {
            let body = recv_bytes(&mut ack);
            ack.send(Message::text("ok")).unwrap();
            tx.send(body).unwrap();
        }
        ack
    });
    let mut p = ws_join(&s, "/prep");
    let start = Instant::now();
    send_text(&mut p, &msg("deaf", None, None, "unheard"));
    send_text(&mut p, &msg("nokey", None, None, "x"));
    send_text(&mut p, &msg("ack", None, Some(true), "heard"));
    send_text(&mut p, &msg("ack", Some("t"), Some(true), "x"));
    send_text(&mut p, &msg("ack", None, Some(true), "heard again"));
    // The first answer takes the receipt timeout; the ones behind it wait for it.
    assert_eq!(
        answers(&mut p, 5),
        ["No listeners remain", "Unknown key", "ok", "Invalid token", "ok"]
    );
    assert!(start.elapsed() >= Duration::from_millis(190), "answered before the receipt timeout");
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), b"heard");
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), b"heard again");
    // The deaf member got its frame and was closed.
    assert_eq!(deaf.data(), (0x81, b"unheard".to_vec()));
    match deaf.frame_skip_control() {
        RawFrame::Eof => {}
        RawFrame::Frame(0x88, _) => assert_eq!(deaf.frame(), RawFrame::Eof),
        other => panic!("expected the deaf member to be closed, got {other:?}"),
    }
    assert_eq!(s.keys(), vec!["ack".to_string()]);
    drop(acker.join().unwrap());
}

#[test]
fn bad_prep_messages_close_with_1007() {
    let s = Server::start(&[W2]);
    let mut live = ws_join(&s, "/psub/live?shared=1");
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("invalid JSON", masked(0x81, b"not json")),
        ("truncated JSON", masked(0x81, br#"{"key":"live","data":"x""#)),
        ("a JSON array", masked(0x81, br#"[{"key":"live","data":"x"}]"#)),
        ("a JSON string", masked(0x81, br#""live""#)),
        ("missing key", masked(0x81, br#"{"token":null,"psub":true,"data":"x"}"#)),
        ("non-string key", masked(0x81, br#"{"key":5,"data":"x"}"#)),
        ("missing data", masked(0x81, br#"{"key":"live","psub":true}"#)),
        ("numeric data", masked(0x81, br#"{"key":"live","psub":true,"data":5}"#)),
        ("null data", masked(0x81, br#"{"key":"live","psub":true,"data":null}"#)),
        ("object data", masked(0x81, br#"{"key":"live","psub":true,"data":{"a":1}}"#)),
        ("numeric token", masked(0x81, br#"{"key":"live","token":1,"data":"x"}"#)),
        ("string psub", masked(0x81, br#"{"key":"live","psub":"yes","data":"x"}"#)),
        ("BINARY frame", masked(0x82, br#"{"key":"live","psub":true,"data":"x"}"#)),
        ("TEXT not UTF-8", masked(0x81, b"{\"key\":\"live\",\"data\":\"\xff\"}")),
    ];
    for (what, frame) in bad {
        // A good message first: it is answered before the bad one closes the socket.
        let mut good = masked(0x81, msg("nokey", None, None, "x").as_bytes());
        good.extend_from_slice(&frame);
        let mut p = raw_upgrade(&s, "/prep?confirm=1", &good);
        assert_eq!(
            p.frame(),
            RawFrame::Frame(0x81, b"Unknown key".to_vec()),
            "{what}: the good message before it"
        );
        match p.frame() {
            RawFrame::Frame(0x88, c) => {
                assert!(c.len() >= 2, "{what}: close without a code");
                assert_eq!(u16::from_be_bytes([c[0], c[1]]), 1007, "{what}: close code");
            }
            other => panic!("{what}: expected close 1007, got {other:?}"),
        }
        assert_eq!(p.frame(), RawFrame::Eof, "{what}: socket left open after the close");
    }
    // None of the bad messages delivered anything.
    expect_quiet(&mut live, Duration::from_millis(100));
    assert_eq!(s.keys(), vec!["live".to_string()]);
}

#[test]
fn unmasked_prep_frame_closes_with_1002() {
    let s = Server::start(&[W2]);
    let mut m = ws_join(&s, "/psub/um");
    let mut p = raw_upgrade(&s, "/prep?confirm=1", b"");
    p.send(&unmasked(0x81, msg("um", None, None, "x").as_bytes()));
    p.expect_close(1002, None);
    expect_quiet(&mut m, Duration::from_millis(100));
}

#[test]
fn oversize_prep_frame_closes_with_1009() {
    let s = Server::start(&[W2, ("ESUB_MAX_BODY_BYTES", "256")]);
    let mut m = ws_join(&s, "/psub/big");
    // A message of exactly the limit is handled.
    let head = r#"{"key":"big","token":null,"data":""#;
    let fill = 256 - head.len() - 2;
    let exact = format!("{head}{}\"}}", "a".repeat(fill));
    assert_eq!(exact.len(), 256);
    let mut p = raw_upgrade(&s, "/prep?confirm=1", b"");
    p.send(&masked(0x81, exact.as_bytes()));
    assert_eq!(p.frame(), RawFrame::Frame(0x81, b"ok".to_vec()));
    assert_eq!(recv_bytes(&mut m), "a".repeat(fill).as_bytes());
    // One byte more closes 1009, and nothing is delivered.
    let over = format!("{head}{}\"}}", "a".repeat(fill + 1));
    p.send(&masked(0x81, over.as_bytes()));
    p.expect_close(1009, None);
    // Fragments count together.
    let mut q = raw_upgrade(&s, "/prep?confirm=1", b"");
    q.send(&masked(0x01, &over.as_bytes()[..200]));
    q.send(&masked(0x80, &over.as_bytes()[200..]));
    q.expect_close(1009, None);
    // A header announcing a huge frame is refused before its payload is sent.
    let mut r = raw_upgrade(&s, "/prep", b"");
    let mut h = vec![0x81, 0x80 | 127];
    h.extend_from_slice(&(1u64 << 40).to_be_bytes());
    h.extend_from_slice(&[1, 2, 3, 4]);
    r.send(&h);
    r.expect_close(1009, None);
    expect_quiet(&mut m, Duration::from_millis(100));
}

#[test]
fn prep_frames_pipelined_behind_the_upgrade_are_handled() {
    let s = Server::start(&[W2]);
    let mut m = ws_join(&s, "/psub/pl?shared=1");
    let mut extra = masked(0x81, msg("nokey", None, None, "x").as_bytes());
    extra.extend(masked(0x81, msg("pl", None, Some(true), "piped").as_bytes()));
    extra.extend(masked(0x89, b"ping"));
    let mut p = raw_upgrade(&s, "/prep?confirm=1", &extra);
    let mut got = vec![p.frame(), p.frame(), p.frame()];
    // The pong may overtake the answers (it is not an answer); the answers keep their order.
    let pong = got.iter().position(|f| *f == RawFrame::Frame(0x8A, b"ping".to_vec()));
    got.remove(pong.expect("no pong for the pipelined ping"));
    assert_eq!(
        got,
        vec![RawFrame::Frame(0x81, b"Unknown key".to_vec()), RawFrame::Frame(0x81, b"ok".to_vec())]
    );
    assert_eq!(recv_bytes(&mut m), b"piped");
}
