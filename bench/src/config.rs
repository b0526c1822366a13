//! Command line of one run: which server, how many parked subs and rep connections, how long.
//! Every limit is here with its reason.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Subs per run: each is a connection and a file descriptor on both sides; 50k is far past the
/// scenarios (100 to 10,000) and still below a 64k descriptor limit.
const MAX_SUBS: usize = 50_000;
/// Rep connections: each carries one request at a time; more than a few hundred would measure
/// connection handling rather than relaying.
const MAX_REPS: usize = 512;
/// Payloads must hold "<key>:<seq>:" so the sub can tell whose message it got.
const MIN_SIZE: usize = 40;
/// esub's default request body limit.
const MAX_SIZE: usize = 1 << 20;
/// Upper bound on any one phase given on the command line, so a typo cannot run for hours.
const MAX_PHASE: Duration = Duration::from_secs(3600);

pub const USAGE: &str = "\
usage: esub-bench --target esub|nchan --url 127.0.0.1:PORT [options]
       esub-bench table FILE...      one comparison table from JSON result lines (medians)

Round trip, long-poll: --subs parked subs on unique keys, --reps keep-alive rep connections
each sending one rep at a time to a key whose sub is parked; a sub re-parks as soon as it has
its message. One JSON line per run on stdout, a human summary on stderr.

options:
  --pid PID          server pid for CPU time (nchan: the nginx master; its workers are summed)
  --subs N           parked subs (default 1000)
  --reps M           rep connections (default 4)
  --size BYTES       payload size (default 100, at least 40)
  --warmup SECS      traffic before the measured window (default 1)
  --duration SECS    measured window (default 10)
  --grace SECS       wait for outstanding deliveries after the window (default 2)
  --max-msgs K       end the window after K reps sent in it (default: no limit)
  --ready-timeout S  wait for all subs to be parked at start (default 30)
  --label TEXT       free text copied into the JSON line";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Esub,
    Nchan,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Esub => "esub",
            Target::Nchan => "nchan",
        }
    }

    /// Path before the key of a rep.
    pub fn rep_path(self) -> &'static str {
        match self {
            Target::Esub => "/rep/",
            Target::Nchan => "/pub/",
        }
    }

    /// The rep's status when its message was delivered to a waiting sub.
    pub fn delivered_status(self) -> u16 {
        match self {
            Target::Esub => 200,
            Target::Nchan => 201,
        }
    }

    /// The rep's status when no sub waited (not a loss: the key is tried again).
    pub fn miss_status(self) -> u16 {
        match self {
            Target::Esub => 404,
            Target::Nchan => 202,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub target: Target,
    pub addr: SocketAddr,
    pub pid: Option<u32>,
    pub subs: usize,
    pub reps: usize,
    pub size: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub grace: Duration,
    pub max_msgs: u64,
    pub ready_timeout: Duration,
    pub label: String,
}

impl Config {
    pub fn parse(args: &[String]) -> Result<Config, String> {
        let mut target = None;
        let mut addr = None;
        let mut cfg = Config {
            target: Target::Esub,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pid: None,
            subs: 1000,
            reps: 4,
            size: 100,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(10),
            grace: Duration::from_secs(2),
            max_msgs: 0,
            ready_timeout: Duration::from_secs(30),
            label: String::new(),
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "-h" || flag == "--help" {
                return Err(USAGE.to_string());
            }
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--target" => {
                    target = Some(match value.as_str() {
                        "esub" => Target::Esub,
                        "nchan" => Target::Nchan,
                        _ => return Err(format!("--target: esub or nchan, not {value:?}")),
                    })
                }
                "--url" => addr = Some(parse_addr(value)?),
                "--pid" => cfg.pid = Some(number(flag, value, 1, u64::from(u32::MAX))? as u32),
                "--subs" => cfg.subs = number(flag, value, 1, MAX_SUBS as u64)? as usize,
                "--reps" => cfg.reps = number(flag, value, 1, MAX_REPS as u64)? as usize,
                "--size" => {
                    cfg.size = number(flag, value, MIN_SIZE as u64, MAX_SIZE as u64)? as usize
                }
                "--warmup" => cfg.warmup = seconds(flag, value, true)?,
                "--duration" => cfg.duration = seconds(flag, value, false)?,
                "--grace" => cfg.grace = seconds(flag, value, true)?,
                "--ready-timeout" => cfg.ready_timeout = seconds(flag, value, false)?,
                "--max-msgs" => cfg.max_msgs = number(flag, value, 1, u64::MAX)?,
                "--label" => cfg.label = value.clone(),
                _ => return Err(format!("unknown option {flag}\n\n{USAGE}")),
            }
        }
        cfg.target = target.ok_or("--target is required")?;
        cfg.addr = addr.ok_or("--url is required")?;
        Ok(cfg)
    }
}

/// `127.0.0.1:PORT`, optionally as `http://127.0.0.1:PORT/`. Loopback only: the generator is
/// meant to load a server on the same machine, never someone else's.
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let bare = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
    let addr = bare
        .to_socket_addrs()
        .map_err(|e| format!("--url {s:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("--url {s:?}: no address"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("--url {s:?}: only loopback addresses are allowed"));
    }
    Ok(addr)
}

fn number(flag: &str, value: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = value.parse().map_err(|_| format!("{flag}: not a number: {value:?}"))?;
    if n < min || n > max {
        return Err(format!("{flag}: {n} is outside {min}..={max}"));
    }
    Ok(n)
}

fn seconds(flag: &str, value: &str, zero_ok: bool) -> Result<Duration, String> {
    let s: f64 =
        value.parse().map_err(|_| format!("{flag}: not a number of seconds: {value:?}"))?;
    if !s.is_finite() || s < 0.0 || (!zero_ok && s == 0.0) || s > MAX_PHASE.as_secs_f64() {
        return Err(format!("{flag}: {value} seconds is out of range"));
    }
    Ok(Duration::from_secs_f64(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, String> {
        Config::parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn accepted() {
        let c = parse("--target nchan --url http://127.0.0.1:8091/ --pid 7 --subs 100 --reps 1 --duration 0.5 --warmup 0").unwrap();
        assert_eq!(c.target, Target::Nchan);
        assert_eq!(c.addr.port(), 8091);
        assert_eq!((c.pid, c.subs, c.reps, c.size), (Some(7), 100, 1, 100));
        assert_eq!((c.duration, c.warmup), (Duration::from_millis(500), Duration::ZERO));
    }

    #[test]
    fn rejected() {
        let rows = [
            "--url 127.0.0.1:1",
            "--target esub",
            "--target redis --url 127.0.0.1:1",
            "--target esub --url 10.0.0.1:80",
            "--target esub --url 127.0.0.1:1 --subs 0",
            "--target esub --url 127.0.0.1:1 --size 10",
            "--target esub --url 127.0.0.1:1 --duration 0",
            "--target esub --url 127.0.0.1:1 --duration x",
            "--target esub --url 127.0.0.1:1 --bogus 1",
            "--target esub --url 127.0.0.1:1 --subs",
        ];
        for row in rows {
            assert!(parse(row).is_err(), "{row}");
        }
    }
}
