//! Out-of-band questions to the server before traffic starts: how many of this run's subs it
//! has parked. Blocking sockets with timeouts; never on the measured path.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::config::Target;
use crate::http;

/// Time for one status request; the server is idle apart from parked subs.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Between two polls: short next to a run, long next to a status request.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// When the server cannot tell, wait this long for the last sub requests to be processed.
const BLIND_WAIT: Duration = Duration::from_secs(1);

/// How the start of traffic was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parked {
    /// The server listed all of them.
    All,
    /// It listed only this many by the deadline; traffic starts anyway (misses will show).
    Partial(usize),
    /// It cannot be asked (no such endpoint); a fixed wait was used.
    Unknown(String),
}

/// Waits until the servers report `want` parked subs of keys starting with `prefix`, summed
/// over `addrs` (each counted once): esub's `GET /keys` lists a node's own; nchan's
/// `GET /nchan_status` counts all subscribers of an instance.
pub fn wait_parked(
    target: Target,
    addrs: &[SocketAddr],
    prefix: &str,
    want: usize,
    timeout: Duration,
) -> Parked {
    let deadline = Instant::now() + timeout;
    let mut distinct = addrs.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    loop {
        let seen = distinct.iter().map(|&a| parked_on(target, a, prefix)).sum::<Result<_, _>>();
        let seen = match seen {
            Ok(n) if n >= want => return Parked::All,
            Ok(n) => n,
            Err(why) => {
                sleep(BLIND_WAIT);
                return Parked::Unknown(why);
            }
        };
        if Instant::now() >= deadline {
            return Parked::Partial(seen);
        }
        sleep(POLL_INTERVAL);
    }
}

/// Parked subs of this run on one server, or why it cannot tell.
fn parked_on(target: Target, addr: SocketAddr, prefix: &str) -> Result<usize, String> {
    let seen = match target {
        Target::Esub => get(addr, "/keys?local=1").map(|(status, body)| match status {
            200 => Ok(count_listed(&body, prefix)),
            204 => Ok(0),
            s => Err(format!("GET /keys answered {s}")),
        }),
        Target::Nchan => get(addr, "/nchan_status").map(|(status, body)| match status {
            200 => nchan_subscribers(&body).ok_or_else(|| "no subscribers line".to_string()),
            s => Err(format!("GET /nchan_status answered {s}")),
        }),
    };
    seen.and_then(|r| r)
}

/// One `GET` on a fresh connection: status and body.
fn get(addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(REQUEST_TIMEOUT)).map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(r) = http::parse_response(&buf).map_err(|e| format!("{path}: {e:?}"))? {
            if (100..200).contains(&r.status) {
                buf.drain(..r.len);
                continue;
            }
            return Ok((r.status, r.body(&buf).to_vec()));
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err(format!("{path}: connection closed mid-response")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("{path}: read: {e}")),
        }
    }
}

/// Entries of a JSON array of strings that start with `prefix` (keys are `[a-z0-9]`, so no
/// escapes to decode).
fn count_listed(body: &[u8], prefix: &str) -> usize {
    let needle = format!("\"{prefix}");
    body.windows(needle.len()).filter(|w| *w == needle.as_bytes()).count()
}

/// The `subscribers: N` line of nchan_stub_status.
fn nchan_subscribers(body: &[u8]) -> Option<usize> {
    std::str::from_utf8(body)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("subscribers:"))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting() {
        assert_eq!(count_listed(br#"["a1","bq1","bq22","zbq3"]"#, "bq"), 2);
        assert_eq!(count_listed(b"[]", "bq"), 0);
        let status = b"total published messages: 1\nchannels: 3\nsubscribers: 1000\nredis pending commands: 0\n";
        assert_eq!(nchan_subscribers(status), Some(1000));
        assert_eq!(nchan_subscribers(b"nothing"), None);
    }
}
