//! Command line of one topics run: which server, which workload, how many connections, how
//! long. Every limit is here with its reason.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{number, parse_addr, seconds};

/// Producer connections: each carries one request (or one pipelined round) at a time; the
/// issue's scenarios use 16 and 64.
const MAX_CONNS: usize = 512;
/// Consumers of the group: esub refuses more instances than partitions anyway.
const MAX_CONSUMERS: usize = 64;
/// esub's `ESUB_MAX_PARTITIONS` default.
const MAX_PARTITIONS: usize = 20;
/// Records per request: esub's `ESUB_PUB_MAX_BATCH` default.
const MAX_BATCH: usize = 1000;
/// Records per consumer response: esub's `ESUB_SUB_MAX_BATCH` default.
const MAX_FETCH: usize = 4000;
/// A payload holds its sequence number and send time.
const MIN_SIZE: usize = super::payload::HEAD;
/// esub's `ESUB_PUB_MAX_BYTES` default; a batch of them must still fit 1 MiB, checked below.
const MAX_SIZE: usize = 512 * 1024;
/// esub's default request body limit (`ESUB_MAX_BODY_BYTES`): a batch pub must fit.
const MAX_BODY: usize = 1 << 20;
/// Offered load of the end-to-end scenario, messages per second.
const MAX_RATE: u64 = 10_000_000;

pub const USAGE: &str = "\
usage: topics-bench --target esub|redis --url 127.0.0.1:PORT [--scenario S] [options]
       topics-bench table FILE...    the comparison table of JSON result lines (medians)

Scenarios (--scenario):
  single   --conns keep-alive connections, each one pub at a time (esub POST /v1/msgs/T/V,
           Redis XADD to the stream of the next partition in turn)
  batch    the same with --batch messages per round trip (esub: one batch pub of that many
           records; Redis: that many XADDs to one stream, pipelined)
  e2e      end to end: pubs at a fixed --rate over --conns connections, --consumers of one
           group (esub GET ...?group=g&batch=--fetch&ack=1 with piggy-back acks; Redis
           XREADGROUP COUNT --fetch BLOCK + XACK), pub-to-delivery latency, lost and doubled
One JSON line per run on stdout, a human summary on stderr.

options:
  --pid PID          server pid for CPU time per message
  --conns N          producer connections (default 16)
  --batch N          messages per round trip in `batch` (default: esub 1000, Redis 100)
  --rate R           e2e offered load, messages/s (default 10000)
  --consumers N      e2e consumers (default 4)
  --fetch N          e2e messages per consumer request (default 100)
  --partitions P     partitions of the topic, streams in Redis (default 4)
  --size BYTES       payload size (default 100, at least 16)
  --warmup SECS      traffic before the measured window (default 1)
  --duration SECS    measured window (default 10)
  --grace SECS       wait for answers and deliveries after the window (default 2)
  --fsync TEXT       the server's fsync policy, copied into the JSON line (default unknown)
  --label TEXT       free text copied into the JSON line
  --msg-id on|off    esub single pubs carry a unique X-Msg-Id each (default off)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Esub,
    Redis,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Esub => "esub",
            Target::Redis => "redis",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Single,
    Batch,
    EndToEnd,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Single => "single",
            Scenario::Batch => "batch",
            Scenario::EndToEnd => "e2e",
        }
    }

    fn from_flag(s: &str) -> Option<Scenario> {
        [Scenario::Single, Scenario::Batch, Scenario::EndToEnd].into_iter().find(|x| x.name() == s)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub target: Target,
    pub scenario: Scenario,
    pub addr: SocketAddr,
    pub pid: Option<u32>,
    pub conns: usize,
    /// Messages per request or pipelined round; 1 outside `batch`.
    pub batch: usize,
    pub rate: u64,
    pub consumers: usize,
    pub fetch: usize,
    pub partitions: usize,
    pub size: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub grace: Duration,
    /// How long setting up (connecting, creating the topic, joining the group) may take.
    pub ready_timeout: Duration,
    pub fsync: String,
    pub label: String,
    /// esub single pubs carry a unique `X-Msg-Id` each (issue 9: the idempotent window's cost).
    pub msg_id: bool,
}

impl Config {
    pub fn parse(args: &[String]) -> Result<Config, String> {
        let mut target = None;
        let mut addr = None;
        let mut batch = None;
        let mut cfg = Config {
            target: Target::Esub,
            scenario: Scenario::Single,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pid: None,
            conns: 16,
            batch: 1,
            rate: 10_000,
            consumers: 4,
            fetch: 100,
            partitions: 4,
            size: 100,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(10),
            grace: Duration::from_secs(2),
            ready_timeout: Duration::from_secs(10),
            fsync: "unknown".into(),
            label: String::new(),
            msg_id: false,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "-h" || flag == "--help" {
                return Err(USAGE.to_string());
            }
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let n = |min: usize, max: usize| -> Result<usize, String> {
                Ok(number(flag, value, min as u64, max as u64)? as usize)
            };
            match flag.as_str() {
                "--target" => {
                    target = Some(match value.as_str() {
                        "esub" => Target::Esub,
                        "redis" => Target::Redis,
                        _ => return Err(format!("--target: esub or redis, not {value:?}")),
                    })
                }
                "--scenario" => {
                    cfg.scenario = Scenario::from_flag(value)
                        .ok_or_else(|| format!("--scenario: single, batch or e2e, not {value:?}"))?
                }
                "--url" => addr = Some(parse_addr(value)?),
                "--pid" => cfg.pid = Some(number(flag, value, 1, u64::from(u32::MAX))? as u32),
                "--conns" => cfg.conns = n(1, MAX_CONNS)?,
                "--batch" => batch = Some(n(1, MAX_BATCH)?),
                "--rate" => cfg.rate = number(flag, value, 1, MAX_RATE)?,
                "--consumers" => cfg.consumers = n(1, MAX_CONSUMERS)?,
                "--fetch" => cfg.fetch = n(1, MAX_FETCH)?,
                "--partitions" => cfg.partitions = n(1, MAX_PARTITIONS)?,
                "--size" => cfg.size = n(MIN_SIZE, MAX_SIZE)?,
                "--warmup" => cfg.warmup = seconds(flag, value, true)?,
                "--duration" => cfg.duration = seconds(flag, value, false)?,
                "--grace" => cfg.grace = seconds(flag, value, true)?,
                "--ready-timeout" => cfg.ready_timeout = seconds(flag, value, false)?,
                "--fsync" => cfg.fsync = value.clone(),
                "--label" => cfg.label = value.clone(),
                "--msg-id" => {
                    cfg.msg_id = match value.as_str() {
                        "on" => true,
                        "off" => false,
                        _ => return Err(format!("--msg-id: on or off, not {value:?}")),
                    }
                }
                _ => return Err(format!("unknown option {flag}\n\n{USAGE}")),
            }
        }
        cfg.target = target.ok_or("--target is required")?;
        cfg.addr = addr.ok_or("--url is required")?;
        if cfg.scenario == Scenario::EndToEnd && cfg.consumers > cfg.partitions {
            // esub refuses more instances than partitions; Redis consumers would read nothing.
            return Err(format!(
                "--consumers {} is more than --partitions {}",
                cfg.consumers, cfg.partitions
            ));
        }
        if cfg.scenario == Scenario::Batch {
            cfg.batch = batch.unwrap_or(match cfg.target {
                Target::Esub => 1000,
                Target::Redis => 100,
            });
            let body = cfg.batch * (super::esub::PUB_RECORD_HEAD + cfg.size);
            if cfg.target == Target::Esub && body > MAX_BODY {
                return Err(format!(
                    "--batch {} of --size {}: a {body}-byte body is over esub's 1 MiB limit",
                    cfg.batch, cfg.size
                ));
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, String> {
        Config::parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn accepted() {
        let c = parse("--target redis --url 127.0.0.1:6390 --scenario batch --pid 9").unwrap();
        assert_eq!(
            (c.target, c.scenario, c.batch, c.pid),
            (Target::Redis, Scenario::Batch, 100, Some(9))
        );
        let c = parse("--target esub --url 127.0.0.1:1 --scenario batch").unwrap();
        assert_eq!(c.batch, 1000);
        let c = parse("--target esub --url 127.0.0.1:1 --batch 50").unwrap();
        assert_eq!((c.scenario, c.batch, c.conns), (Scenario::Single, 1, 16));
        let c = parse("--target esub --url 127.0.0.1:1 --scenario e2e --rate 500 --consumers 2 --fetch 10 --duration 0.5")
            .unwrap();
        assert_eq!((c.rate, c.consumers, c.fetch), (500, 2, 10));
        assert_eq!(c.duration, Duration::from_millis(500));
    }

    #[test]
    fn rejected() {
        let rows = [
            "--url 127.0.0.1:1",
            "--target esub",
            "--target nchan --url 127.0.0.1:1",
            "--target esub --url 10.0.0.1:80",
            "--target esub --url 127.0.0.1:1 --conns 0",
            "--target esub --url 127.0.0.1:1 --size 8",
            "--target esub --url 127.0.0.1:1 --partitions 21",
            "--target esub --url 127.0.0.1:1 --scenario batch --batch 1001",
            "--target esub --url 127.0.0.1:1 --scenario batch --size 2000",
            "--target esub --url 127.0.0.1:1 --scenario fanout",
            "--target esub --url 127.0.0.1:1 --rate",
            "--target esub --url 127.0.0.1:1 --scenario e2e --consumers 5",
        ];
        for row in rows {
            assert!(parse(row).is_err(), "{row}");
        }
        // Redis has no body limit: 1000 pipelined XADDs of 2000 bytes are fine.
        assert!(
            parse("--target redis --url 127.0.0.1:1 --scenario batch --batch 1000 --size 2000")
                .is_ok()
        );
    }
}
