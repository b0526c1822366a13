//! The park-time scenario: subs parked one after the other, each on a new key, each timed from
//! its `GET /sub` written until its node lists the key in `GET /keys` (asked back to back on a
//! keep-alive connection), then released by one rep. In cluster mode that time holds the sub's
//! claim of its key across the cluster; on a single node it is the local parking alone.
//! Blocking sockets: one request at a time on each of three connections.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::cpu::{Mark, ServerProbe};
use crate::hist::Histogram;
use crate::http;
use crate::outcome::{Errors, Measured, Outcome, Slowest};

/// One request and its answer on a quiet loopback server; a wait past this is a fault.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A keep-alive connection that sends one request and reads its response.
struct Client {
    stream: TcpStream,
    rbuf: Vec<u8>,
    chunk: Box<[u8]>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Result<Client, String> {
        let stream = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT)
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(|e| e.to_string())?;
        stream.set_write_timeout(Some(REQUEST_TIMEOUT)).map_err(|e| e.to_string())?;
        Ok(Client { stream, rbuf: Vec::new(), chunk: vec![0; 64 * 1024].into_boxed_slice() })
    }

    fn send(&mut self, request: &[u8]) -> Result<(), String> {
        self.stream.write_all(request).map_err(|e| format!("write: {e}"))
    }

    /// The next final response: status and body.
    fn response(&mut self) -> Result<(u16, Vec<u8>), String> {
        loop {
            if let Some(r) = http::parse_response(&self.rbuf).map_err(|e| format!("{e:?}"))? {
                let out = (r.status, r.body(&self.rbuf).to_vec());
                self.rbuf.drain(..r.len);
                if r.close {
                    return Err("Connection: close".into());
                }
                if (100..200).contains(&r.status) {
                    continue;
                }
                return Ok(out);
            }
            match self.stream.read(&mut self.chunk) {
                Ok(0) => return Err("connection closed mid-response".into()),
                Ok(n) => self.rbuf.extend_from_slice(&self.chunk[..n]),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}

/// `"<key>"` appears in a JSON array of keys (the run's keys need no escapes).
fn listed(body: &[u8], quoted: &[u8]) -> bool {
    body.windows(quoted.len()).any(|w| w == quoted)
}

/// Parks subs on `cfg.sub_addr(0)` one at a time: for `cfg.warmup` unmeasured, then `cfg.subs`
/// measured (or as many as `cfg.duration` allows). Each sub's rep goes to `cfg.rep_addr(0)`.
pub fn run(cfg: &Config, prefix: &str, probe: Option<&ServerProbe>) -> Result<Outcome, String> {
    let (node, rep_node) = (cfg.sub_addr(0), cfg.rep_addr(0));
    let mut sub = Client::connect(node)?;
    let mut keys = Client::connect(node)?;
    let mut rep = Client::connect(rep_node)?;
    let prefix = prefix.as_bytes();
    let body = vec![b'.'; cfg.size];
    let (mut req, mut keys_req, mut quoted) = (Vec::new(), Vec::new(), Vec::new());
    http::get_request(&mut keys_req, "/keys?local=1");
    let mut hist = Histogram::new();
    let mut slowest = Slowest::default();
    let mut errors = Errors::default();
    let mut aborted = None;
    let (mut measured, mut parks, mut polls) = (0u64, 0u64, 0u64);
    let warm_end = Instant::now() + cfg.warmup;
    let mut window: Option<(Instant, Mark)> = None;
    for idx in 0.. {
        let now = Instant::now();
        if window.is_none() && now >= warm_end {
            window = Some((now, Mark::now(probe)));
        }
        if let Some((began, _)) = window
            && (measured >= cfg.subs as u64 || now - began >= cfg.duration)
        {
            break;
        }
        if errors.total() > 100 {
            aborted = Some("more than 100 errors".to_string());
            break;
        }
        http::sub_request(&mut req, prefix, idx);
        sub.send(&req)?;
        let t0 = Instant::now();
        quoted.clear();
        quoted.push(b'"');
        http::push_key(&mut quoted, prefix, idx);
        quoted.push(b'"');
        let deadline = t0 + REQUEST_TIMEOUT;
        let parked_at = loop {
            keys.send(&keys_req)?;
            let (status, list) = keys.response().map_err(|e| format!("GET /keys: {e}"))?;
            let at = Instant::now();
            polls += 1;
            if status == 200 && listed(&list, &quoted) {
                break Some(at);
            }
            if !matches!(status, 200 | 204) {
                *errors.rep_status.entry(status).or_default() += 1;
                errors.note(format!("GET /keys answered {status}"));
            }
            if at >= deadline {
                break None;
            }
        };
        parks += 1;
        let Some(parked_at) = parked_at else {
            // The sub may answer later (an error status): this connection is no longer usable.
            return Err(format!("sub {idx} not listed by GET /keys after {REQUEST_TIMEOUT:?}"));
        };
        if let Some((began, _)) = window {
            let took = parked_at - t0;
            hist.record(took.as_nanos() as u64);
            measured += 1;
            if took > slowest.latency {
                slowest = Slowest { latency: took, key: idx, seq: 0, at: parked_at - began };
            }
        }
        // Release it, so the connection takes the next sub.
        http::rep_request_head(&mut req, cfg.target.rep_path(), prefix, idx, body.len());
        req.extend_from_slice(&body);
        rep.send(&req)?;
        let (status, answer) = rep.response().map_err(|e| format!("rep: {e}"))?;
        if status != cfg.target.delivered_status() {
            *errors.rep_status.entry(status).or_default() += 1;
            errors.note(format!("rep answered {status}: {:?}", String::from_utf8_lossy(&answer)));
        }
        let (status, got) = sub.response().map_err(|e| format!("sub: {e}"))?;
        if status != 200 || got != body {
            *errors.sub_status.entry(status).or_default() += 1;
            errors.note(format!("sub answered {status} with {} bytes", got.len()));
        }
    }
    let (began, mark) = window.unwrap_or_else(|| (Instant::now(), Mark::now(probe)));
    let measured_window = Measured::since(began.elapsed(), &mark, probe);
    if parks > 0 {
        eprintln!("  GET /keys asked {:.1} times per sub", polls as f64 / parks as f64);
    }
    Ok(Outcome {
        prefix: String::from_utf8_lossy(prefix).into_owned(),
        delivered: measured,
        hist,
        slowest,
        ..Outcome::of_window(measured_window, probe, errors, aborted)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing() {
        let rows: [(&[u8], bool); 5] = [
            (br#"["bk1","bk12"]"#, true),
            (br#"["bk12"]"#, false),
            (br#"["xbk1"]"#, false),
            (b"", false),
            (br#"["a","bk1"]"#, true),
        ];
        for (body, want) in rows {
            assert_eq!(listed(body, br#""bk1""#), want, "{}", String::from_utf8_lossy(body));
        }
    }
}
