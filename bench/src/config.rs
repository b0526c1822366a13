//! Command line of one run: which server, how many parked subs and rep connections, how long.
//! Every limit is here with its reason.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Subs per run: each is a connection and a file descriptor on both sides. The parked-capacity
/// scenario asks for 100,000; twice that still fits one process's usual `nr_open` (1 Mi).
const MAX_SUBS: usize = 200_000;
/// Source addresses 127.0.0.1 up to 127.0.0.<n>: each gives its own ~28k ephemeral ports per
/// server port; 200 of them hold far more connections than `MAX_SUBS`.
const MAX_SOURCES: usize = 200;
/// Rep connections: each carries one request at a time; more than a few hundred would measure
/// connection handling rather than relaying.
const MAX_REPS: usize = 512;
/// Payloads must hold "<key>:<seq>:" so the sub can tell whose message it got.
const MIN_SIZE: usize = 40;
/// esub's default request body limit.
const MAX_SIZE: usize = 1 << 20;
/// Servers in one list (`--url`, `--rep-url`, `--pid`): a cluster on one machine is a handful.
const MAX_SERVERS: usize = 16;
/// Upper bound on any one phase given on the command line, so a typo cannot run for hours.
const MAX_PHASE: Duration = Duration::from_secs(3600);

pub const USAGE: &str = "\
usage: esub-bench --target esub|nchan --url 127.0.0.1:PORT[,...] [--scenario S] [options]
       esub-bench table FILE...            one comparison table from JSON result lines (medians)
       esub-bench chart OUT.svg FILE...    the latency chart of the same lines, as SVG

Scenarios (--scenario):
  longpoll   round trip, long-poll (default): --subs parked subs on unique keys, --reps
             keep-alive rep connections each sending one rep at a time to a key whose sub is
             parked; a sub re-parks as soon as it has its message
  websocket  round trip, websocket: the same with persistent subscribers (esub /psub, nchan
             /ws); the next rep to a key goes once the previous message of that key arrived
  capacity   parked capacity: park --subs subs, the server's resident memory before and after,
             then one rep to each; the window is the time to deliver all (--duration caps it)
  floor      HTTP floor: --reps keep-alive connections, each one GET at a time (esub /ping,
             nginx /ok); a request counts as a message
  park       the time to park a sub (esub): --subs subs one after the other, each on a new key,
             from its GET written until the node lists it in GET /keys (asked back to back);
             a rep then releases it. The figures are these times, not round trips
One JSON line per run on stdout, a human summary on stderr.

Several servers (a cluster, or independent nodes): --url takes a comma-separated list and sub
i parks on the (i mod n)-th; rep connection r goes to the (r mod m)-th of --rep-url (default:
the --url list). Parked counts sum each sub server's count.

options:
  --pid PID[,...]    server pids for CPU time, summed (nchan: the nginx master; its workers
                     are summed)
  --rep-url U[,...]  where the rep connections go (default: --url)
  --rep-to any|home  any (default): a rep goes on any idle rep connection, so with the same
                     n servers in both lists (n-1)/n of them cross to another server; home: a
                     rep goes only on a connection to its sub's server (needs --rep-url unset
                     and --reps a multiple of the --url count)
  --subs N           parked subs (default 1000)
  --reps M           rep connections (default 4)
  --size BYTES       payload size (default 100, at least 40)
  --warmup SECS      traffic before the measured window (default 1)
  --duration SECS    measured window (default 10)
  --grace SECS       wait for outstanding deliveries after the window (default 2)
  --max-msgs K       end the window after K reps sent in it (default: no limit)
  --ready-timeout S  wait for all subs to be parked at start (default 30)
  --sources K        spread sub connections over source addresses 127.0.0.1..127.0.0.K
                     (default 1), so ephemeral ports do not run out with many subs
  --label TEXT       free text copied into the JSON line";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    LongPoll,
    WebSocket,
    Capacity,
    Floor,
    Park,
}

impl Scenario {
    /// The name in the JSON line, which the table and the chart group by.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::LongPoll => "round-trip-longpoll",
            Scenario::WebSocket => "round-trip-websocket",
            Scenario::Capacity => "parked-capacity",
            Scenario::Floor => "http-floor",
            Scenario::Park => "park-time",
        }
    }

    fn from_flag(s: &str) -> Option<Scenario> {
        Some(match s {
            "longpoll" => Scenario::LongPoll,
            "websocket" => Scenario::WebSocket,
            "capacity" => Scenario::Capacity,
            "floor" => Scenario::Floor,
            "park" => Scenario::Park,
            _ => return None,
        })
    }

    /// Subs are persistent: a message does not end the subscription, nothing is re-parked.
    pub fn websocket(self) -> bool {
        self == Scenario::WebSocket
    }

    /// Each key gets one message, and its sub does not park again.
    pub fn once(self) -> bool {
        self == Scenario::Capacity
    }
}

/// Which rep connection may carry the rep of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepTo {
    /// Any idle one, whatever server it goes to.
    Any,
    /// Only one to the server where the key's sub parks.
    Home,
}

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

    /// Path before the key of a websocket subscriber.
    pub fn ws_path(self) -> &'static str {
        match self {
            Target::Esub => "/psub/",
            Target::Nchan => "/ws/",
        }
    }

    /// The cheapest keep-alive request each server answers: esub's ping, nginx's static 200.
    pub fn floor_path(self) -> &'static str {
        match self {
            Target::Esub => "/ping",
            Target::Nchan => "/ok",
        }
    }

    /// The floor request's 200 body.
    pub fn floor_body(self) -> &'static [u8] {
        match self {
            Target::Esub => b"OK",
            Target::Nchan => b"ok",
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
    pub scenario: Scenario,
    /// Servers of the subs: sub i parks on `urls[i % n]` (never empty).
    pub urls: Vec<SocketAddr>,
    /// Servers of the rep connections: connection r goes to `rep_urls[r % m]` (never empty).
    pub rep_urls: Vec<SocketAddr>,
    pub rep_to: RepTo,
    /// Server processes whose CPU time is summed; empty: not measured.
    pub pids: Vec<u32>,
    pub subs: usize,
    pub reps: usize,
    pub size: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub grace: Duration,
    pub max_msgs: u64,
    pub ready_timeout: Duration,
    pub sources: usize,
    pub label: String,
}

impl Config {
    pub fn parse(args: &[String]) -> Result<Config, String> {
        let mut target = None;
        let mut cfg = Config {
            target: Target::Esub,
            scenario: Scenario::LongPoll,
            urls: Vec::new(),
            rep_urls: Vec::new(),
            rep_to: RepTo::Any,
            pids: Vec::new(),
            subs: 1000,
            reps: 4,
            size: 100,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(10),
            grace: Duration::from_secs(2),
            max_msgs: 0,
            ready_timeout: Duration::from_secs(30),
            sources: 1,
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
                "--scenario" => cfg.scenario = Scenario::from_flag(value).ok_or_else(|| {
                    format!(
                        "--scenario: longpoll, websocket, capacity, floor or park, not {value:?}"
                    )
                })?,
                "--sources" => cfg.sources = number(flag, value, 1, MAX_SOURCES as u64)? as usize,
                "--url" => cfg.urls = list(value, parse_addr)?,
                "--rep-url" => cfg.rep_urls = list(value, parse_addr)?,
                "--rep-to" => {
                    cfg.rep_to = match value.as_str() {
                        "any" => RepTo::Any,
                        "home" => RepTo::Home,
                        _ => return Err(format!("--rep-to: any or home, not {value:?}")),
                    }
                }
                "--pid" => {
                    cfg.pids = list(value, |v| Ok(number(flag, v, 1, u64::from(u32::MAX))? as u32))?
                }
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
        if cfg.urls.is_empty() {
            return Err("--url is required".into());
        }
        if cfg.rep_to == RepTo::Home
            && (!cfg.rep_urls.is_empty() || !cfg.reps.is_multiple_of(cfg.urls.len()))
        {
            return Err(
                "--rep-to home: no --rep-url, and --reps a multiple of the --url count".into()
            );
        }
        if cfg.rep_urls.is_empty() {
            cfg.rep_urls = cfg.urls.clone();
        }
        Ok(cfg)
    }

    /// The server sub (or floor connection) `i` connects to.
    pub fn sub_addr(&self, i: usize) -> SocketAddr {
        self.urls[i % self.urls.len()]
    }

    /// The server rep connection `r` connects to.
    pub fn rep_addr(&self, r: usize) -> SocketAddr {
        self.rep_urls[r % self.rep_urls.len()]
    }

    /// Ready queues of keys and idle lists of rep connections: one shared by all, or one per
    /// server with `--rep-to home`.
    pub fn groups(&self) -> usize {
        match self.rep_to {
            RepTo::Any => 1,
            RepTo::Home => self.urls.len(),
        }
    }

    /// The group of key `k`; its reps go on connections of the same group.
    pub fn key_group(&self, k: usize) -> usize {
        k % self.groups()
    }

    /// The group of rep connection `r` (with `home`, connection r goes to `urls[r % n]`).
    pub fn rep_group(&self, r: usize) -> usize {
        r % self.groups()
    }

    /// The rep of key `k` on connection `r` goes to another server than the key's sub.
    pub fn crosses(&self, r: usize, k: usize) -> bool {
        self.rep_addr(r) != self.sub_addr(k)
    }

    /// The sub servers as given, for the report.
    pub fn urls_text(&self) -> String {
        join(&self.urls)
    }

    pub fn rep_urls_text(&self) -> String {
        join(&self.rep_urls)
    }
}

fn join(addrs: &[SocketAddr]) -> String {
    addrs.iter().map(SocketAddr::to_string).collect::<Vec<_>>().join(",")
}

/// A comma-separated list, each item parsed by `one`; at most `MAX_SERVERS` items.
fn list<T>(value: &str, one: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    let items: Vec<T> = value.split(',').map(one).collect::<Result<_, _>>()?;
    if items.len() > MAX_SERVERS {
        return Err(format!("{value:?}: more than {MAX_SERVERS} items"));
    }
    Ok(items)
}

/// `127.0.0.1:PORT`, optionally as `http://127.0.0.1:PORT/`. Loopback only: the generator is
/// meant to load a server on the same machine, never someone else's.
pub(crate) fn parse_addr(s: &str) -> Result<SocketAddr, String> {
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

pub(crate) fn number(flag: &str, value: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = value.parse().map_err(|_| format!("{flag}: not a number: {value:?}"))?;
    if n < min || n > max {
        return Err(format!("{flag}: {n} is outside {min}..={max}"));
    }
    Ok(n)
}

pub(crate) fn seconds(flag: &str, value: &str, zero_ok: bool) -> Result<Duration, String> {
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
        assert_eq!(c.sub_addr(0).port(), 8091);
        assert_eq!((c.pids, c.subs, c.reps, c.size), (vec![7], 100, 1, 100));
        assert_eq!((c.duration, c.warmup), (Duration::from_millis(500), Duration::ZERO));
        assert_eq!((c.scenario, c.sources), (Scenario::LongPoll, 1));
        let c =
            parse("--target esub --url 127.0.0.1:1 --scenario capacity --subs 100000 --sources 7")
                .unwrap();
        assert_eq!((c.scenario, c.subs, c.sources), (Scenario::Capacity, 100_000, 7));
        assert!(c.scenario.once() && !c.scenario.websocket());
        for (flag, name) in [
            ("longpoll", "round-trip-longpoll"),
            ("websocket", "round-trip-websocket"),
            ("capacity", "parked-capacity"),
            ("floor", "http-floor"),
            ("park", "park-time"),
        ] {
            assert_eq!(Scenario::from_flag(flag).map(Scenario::name), Some(name));
        }
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
            "--target esub --url 127.0.0.1:1 --scenario pubsub",
            "--target esub --url 127.0.0.1:1 --sources 0",
            "--target esub --url 127.0.0.1:1 --subs 200001",
            "--target esub --url 127.0.0.1:1,10.0.0.1:2",
            "--target esub --url 127.0.0.1:1, --subs 1",
            "--target esub --url 127.0.0.1:1 --rep-to near",
            "--target esub --url 127.0.0.1:1,127.0.0.1:2 --rep-to home --reps 3",
            "--target esub --url 127.0.0.1:1 --rep-url 127.0.0.1:2 --rep-to home",
            "--target esub --url 127.0.0.1:1 --pid 1,x",
        ];
        for row in rows {
            assert!(parse(row).is_err(), "{row}");
        }
    }

    #[test]
    fn servers() {
        // One server: every sub and rep there, nothing crosses, one group.
        let c = parse("--target esub --url 127.0.0.1:1 --reps 4").unwrap();
        assert_eq!((c.rep_urls.clone(), c.groups()), (c.urls.clone(), 1));
        assert!(!(0..4).any(|r| c.crosses(r, r + 1)));
        // Subs on one node, reps to another: every rep crosses.
        let c = parse("--target esub --url 127.0.0.1:1 --rep-url 127.0.0.1:2 --pid 5,6").unwrap();
        assert_eq!(
            (c.sub_addr(3).port(), c.rep_addr(3).port(), c.pids.clone()),
            (1, 2, vec![5, 6])
        );
        assert!((0..4).all(|r| c.crosses(r, 7)));
        // Three nodes, any connection: key k on node k % 3, connection r to node r % 3.
        let c = parse("--target esub --url 127.0.0.1:1,127.0.0.1:2,127.0.0.1:3 --reps 6").unwrap();
        assert_eq!(c.groups(), 1);
        let rows = [(0, 0, false), (0, 1, true), (4, 1, false), (5, 1, true), (2, 5, false)];
        for (r, k, cross) in rows {
            assert_eq!((c.key_group(k), c.rep_group(r)), (0, 0));
            assert_eq!(c.crosses(r, k), cross, "rep {r} key {k}");
        }
        let crossing = (0..6).flat_map(|r| (0..30).map(move |k| (r, k)));
        assert_eq!(crossing.filter(|&(r, k)| c.crosses(r, k)).count(), 6 * 20);
        // Home: a key's group is its node, and a group's connections go to that node only.
        let c =
            parse("--target esub --url 127.0.0.1:1,127.0.0.1:2,127.0.0.1:3 --reps 6 --rep-to home")
                .unwrap();
        assert_eq!(c.groups(), 3);
        for r in 0..6 {
            for k in 0..30 {
                let same = c.key_group(k) == c.rep_group(r);
                assert_eq!(same, !c.crosses(r, k), "rep {r} key {k}");
            }
        }
        assert_eq!(c.urls_text(), "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3");
    }
}
