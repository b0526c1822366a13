//! Blocking exchanges around a run, never inside its window: creating the topic or the consumer
//! group, asking esub how many consumer instances it holds, the server's version, and deleting
//! a run's Redis streams afterwards. Every socket read has a timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::esub;
use super::redis;
use super::resp::{self, Value};
use crate::http;

/// One connection, one request or pipeline, read until `done` says the bytes are complete.
fn exchange<T>(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
    mut done: impl FnMut(&[u8]) -> Result<Option<T>, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.write_all(request).map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(t) = done(&buf)? {
            return Ok(t);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no complete answer within {timeout:?}"));
        }
        s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        match s.read(&mut chunk) {
            Ok(0) => return Err("connection closed before the answer was complete".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// One HTTP request: the status and the body.
pub fn http_call(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> Result<(u16, String), String> {
    exchange(addr, request, timeout, |buf| match http::parse_response(buf) {
        Ok(Some(r)) => Ok(Some((r.status, String::from_utf8_lossy(r.body(buf)).into_owned()))),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("response: {e:?}")),
    })
}

/// Creates esub's topic with `partitions` partitions (201, or 200 when it exists alike).
pub fn esub_topic(
    addr: SocketAddr,
    topic: &str,
    ver: &str,
    partitions: usize,
    timeout: Duration,
) -> Result<(), String> {
    let mut req = Vec::new();
    esub::create_topic_request(&mut req, topic, ver, partitions as u32);
    match http_call(addr, &req, timeout)? {
        (200 | 201, _) => Ok(()),
        (status, body) => Err(format!("POST /v1/topics: {status} {body}")),
    }
}

/// `instances` of esub's `GET /v1/status`; `None` when the route or the field is missing.
pub fn esub_instances(addr: SocketAddr, timeout: Duration) -> Result<Option<u64>, String> {
    let req = b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let (status, body) = http_call(addr, req, timeout)?;
    if status != 200 {
        return Ok(None);
    }
    let Some(at) = body.find("\"instances\":") else { return Ok(None) };
    let digits: String = body[at + 12..].chars().take_while(char::is_ascii_digit).collect();
    Ok(digits.parse().ok())
}

/// esub's `version` from `GET /v1/status`, if it says.
pub fn esub_version(addr: SocketAddr, timeout: Duration) -> String {
    let req = b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let Ok((200, body)) = http_call(addr, req, timeout) else { return String::new() };
    let Some(at) = body.find("\"version\":\"") else { return String::new() };
    body[at + 11..].chars().take_while(|&c| c != '"').collect()
}

/// Sends `commands` (already encoded, `replies` of them) and returns the replies as text; a
/// Redis error reply is an error.
pub fn redis_call(
    addr: SocketAddr,
    commands: &[u8],
    replies: usize,
    timeout: Duration,
) -> Result<Vec<String>, String> {
    exchange(addr, commands, timeout, |buf| {
        let mut out = Vec::new();
        let mut pos = 0;
        while out.len() < replies {
            let Some((v, used)) = resp::parse(&buf[pos..]).map_err(|e| format!("{e:?}"))? else {
                return Ok(None);
            };
            pos += used;
            out.push(match v {
                Value::Error(e) => return Err(String::from_utf8_lossy(e).into_owned()),
                Value::Bulk(Some(b)) | Value::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                other => format!("{other:?}"),
            });
        }
        Ok(Some(out))
    })
}

/// Creates group `group` on every stream of the topic, reading from the start.
pub fn redis_group(
    addr: SocketAddr,
    topic: &str,
    partitions: usize,
    group: &str,
    timeout: Duration,
) -> Result<(), String> {
    let mut cmds = Vec::new();
    for p in 0..partitions {
        redis::xgroup_create(&mut cmds, &redis::stream(topic, p), group);
    }
    redis_call(addr, &cmds, partitions, timeout)
        .map(|_| ())
        .map_err(|e| format!("XGROUP CREATE: {e}"))
}

/// Deletes the topic's streams, so back-to-back runs do not pile up in Redis's memory.
pub fn redis_drop(
    addr: SocketAddr,
    topic: &str,
    partitions: usize,
    timeout: Duration,
) -> Result<(), String> {
    let names: Vec<String> = (0..partitions).map(|p| redis::stream(topic, p)).collect();
    let mut args: Vec<&[u8]> = vec![b"DEL"];
    args.extend(names.iter().map(|s| s.as_bytes()));
    let mut cmd = Vec::new();
    resp::command(&mut cmd, &args);
    redis_call(addr, &cmd, 1, timeout).map(|_| ()).map_err(|e| format!("DEL: {e}"))
}

/// `redis_version` of `INFO server`.
pub fn redis_version(addr: SocketAddr, timeout: Duration) -> String {
    let mut cmd = Vec::new();
    resp::command(&mut cmd, &[b"INFO", b"server"]);
    let Ok(replies) = redis_call(addr, &cmd, 1, timeout) else { return String::new() };
    replies
        .first()
        .and_then(|info| info.lines().find_map(|l| l.strip_prefix("redis_version:")))
        .unwrap_or_default()
        .trim()
        .to_string()
}
