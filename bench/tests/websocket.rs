//! The websocket scenario against a fake esub: the generator's handshake must be accepted by
//! the server's crates, every client frame must be masked, pings must be answered with the same
//! payload, and a duplicated or BINARY delivery must show in the counts.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;

use base64::Engine;
use sha1::{Digest, Sha1};

#[derive(Default)]
struct State {
    members: HashMap<String, TcpStream>,
    reps: u64,
    /// (opcode, masked, unmasked payload) of every frame a client sent.
    client_frames: Vec<(u8, bool, Vec<u8>)>,
}

fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80 | opcode];
    if payload.len() < 126 {
        v.push(payload.len() as u8);
    } else {
        v.push(126);
        v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

fn response(status: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}

/// Reads client frames off a member's socket until it closes, recording each.
fn read_client_frames(mut r: BufReader<TcpStream>, state: Arc<Mutex<State>>) {
    loop {
        let mut h = [0u8; 2];
        if r.read_exact(&mut h).is_err() {
            return;
        }
        let masked = h[1] & 0x80 != 0;
        let mut len = u64::from(h[1] & 0x7F);
        if len == 126 {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).unwrap();
            len = u64::from(u16::from_be_bytes(b));
        }
        let mut mask = [0u8; 4];
        if masked {
            r.read_exact(&mut mask).unwrap();
        }
        let mut payload = vec![0u8; len as usize];
        r.read_exact(&mut payload).unwrap();
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        state.lock().unwrap().client_frames.push((h[0] & 0x0F, masked, payload));
    }
}

fn serve(stream: TcpStream, state: Arc<Mutex<State>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let (mut len, mut ws_key) = (0, None);
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            if lower.starts_with("sec-websocket-key:") {
                ws_key = Some(h.split_once(':').unwrap().1.trim().to_string());
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Some(key) = path.strip_prefix("/psub/") {
            let client_key = ws_key.expect("a Sec-WebSocket-Key");
            let raw = base64::engine::general_purpose::STANDARD.decode(&client_key).unwrap();
            assert_eq!(raw.len(), 16, "the key is 16 bytes in base64");
            let mut sha = Sha1::new();
            sha.update(client_key.as_bytes());
            sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
            let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
            let _ = out.write_all(format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").as_bytes());
            // A ping right away: the client must answer it with a masked pong.
            let _ = out.write_all(&frame(0x9, b"hi"));
            state.lock().unwrap().members.insert(key.to_string(), out.try_clone().unwrap());
            return read_client_frames(reader, state);
        }
        let mut st = state.lock().unwrap();
        let reply = if path == "/keys" {
            let list: Vec<String> = st.members.keys().map(|k| format!("\"{k}\"")).collect();
            response("200 OK", format!("[{}]", list.join(",")).as_bytes())
        } else if let Some(key) = path.strip_prefix("/rep/") {
            match st.members.get(key).map(|m| m.try_clone().unwrap()) {
                Some(mut m) => {
                    st.reps += 1;
                    // Rep 5 goes out as BINARY, rep 7 twice.
                    let opcode = if st.reps == 5 { 0x2 } else { 0x1 };
                    let _ = m.write_all(&frame(opcode, &body));
                    if st.reps == 7 {
                        let _ = m.write_all(&frame(0x1, &body));
                    }
                    response("200 OK", b"OK")
                }
                None => response("404 Not Found", b"Unknown key"),
            }
        } else {
            response("404 Not Found", b"Not Found")
        };
        drop(st);
        let _ = out.write_all(&reply);
    }
}

#[test]
fn handshake_masking_pongs_and_faults() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = Arc::new(Mutex::new(State::default()));
    let st = state.clone();
    thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let st = st.clone();
            thread::spawn(move || serve(s, st));
        }
    });
    let out = Command::new(env!("CARGO_BIN_EXE_esub-bench"))
        .args(["--target", "esub", "--url", &format!("127.0.0.1:{port}")])
        .args(["--scenario", "websocket", "--subs", "10", "--reps", "2"])
        .args(["--warmup", "0", "--duration", "0.4", "--grace", "0.3", "--ready-timeout", "5"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "esub-bench failed: {}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find(|l| l.starts_with('{')).expect("a JSON line");
    let field = |k: &str| -> f64 {
        let start = line.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("{k} in {line}"));
        let rest = &line[start + k.len() + 3..];
        rest[..rest.find([',', '}']).unwrap()].parse().unwrap()
    };
    assert!(line.contains(r#""scenario":"round-trip-websocket""#), "{line}");
    let got: Vec<(&str, f64)> =
        ["lost", "duplicated", "misdelivered", "content_type_errors", "unanswered"]
            .iter()
            .map(|k| (*k, field(k)))
            .collect();
    assert_eq!(
        got,
        [
            ("lost", 0.0),
            ("duplicated", 1.0),
            ("misdelivered", 0.0),
            ("content_type_errors", 1.0),
            ("unanswered", 0.0)
        ]
    );
    assert!(field("delivered") > 100.0, "{line}");
    let st = state.lock().unwrap();
    // One pong per member, masked, echoing the ping; nothing else from the clients.
    assert_eq!(st.client_frames.len(), 10, "{:?}", st.client_frames);
    for (opcode, masked, payload) in &st.client_frames {
        assert_eq!((*opcode, *masked, payload.as_slice()), (0xA, true, &b"hi"[..]));
    }
}
