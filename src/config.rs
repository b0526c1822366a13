//! `Config`: every setting, read from the environment once at start-up, with its default,
//! its reason and its validation. An invalid value is a `ConfigError` naming the variable.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `ESUB_STORE`: which reps are kept on disk for replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreMode {
    Off,
    Undelivered,
    All,
}

/// `ESUB_FSYNC`: when stored records reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    Always,
    Interval,
}

/// Everything the server reads from the environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub port: u16,
    pub bind: IpAddr,
    pub workers: usize,
    pub node_ip: Option<String>,
    pub close_connections: bool,
    pub confirm_receipt: bool,
    pub confirm_timeout: Duration,
    pub ping_frequency: Duration,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub max_connections: usize,
    pub max_psub_backlog: usize,
    pub drain: Duration,
    pub store: StoreMode,
    pub data_dir: PathBuf,
    pub fsync: Fsync,
    pub fsync_interval: Duration,
    pub retention: Duration,
    pub retention_bytes: u64,
    pub segment_bytes: u64,
    pub statsd_host: String,
    pub statsd_port: u16,
    pub metric_prefix: String,
    pub environment: Option<String>,
    pub tag_keys: bool,
    pub metric_interval: Duration,
    pub debug: bool,
    pub verbose_debug: bool,
    /// The topics half (`API-topics.md`); `None` with `ESUB_TOPICS=off`.
    pub topics: Option<TopicsConfig>,
    /// Cluster mode (`API-cluster.md`); off unless `ESUB_CLUSTER` is set.
    pub cluster: crate::cluster::config::ClusterConfig,
}

/// `API-topics.md` section 11.
#[derive(Debug, Clone)]
pub struct TopicsConfig {
    pub apps_file: Option<PathBuf>,
    pub trust_xff: bool,
    pub pub_max_bytes: usize,
    pub max_key_bytes: usize,
    pub max_tag_bytes: usize,
    pub pub_max_batch: usize,
    pub default_partitions: u32,
    pub max_partitions: u32,
    /// Topics on the node at most (shadow queues count): each holds files and memory.
    pub max_topics: usize,
    /// Groups (with their queues) one topic keeps offsets for at most.
    pub max_groups: usize,
    pub retention_hours: f64,
    pub segment_bytes: u64,
    pub retention_check: Duration,
    pub sub_timeout: Duration,
    pub batch_idle: Duration,
    pub sub_max_batch: usize,
    /// `None`: off.
    pub ack_timeout: Option<Duration>,
    /// `ESUB_MAX_BODY_BYTES`: batch pubs and ack bodies.
    pub max_body: usize,
    /// `ESUB_JOB_MAX_BYTES`: a delayed job's payload.
    pub job_max_bytes: usize,
    /// `ESUB_JOB_TICK_MS`: the scheduler's resolution (a due job fires within it, normally).
    pub job_tick: Duration,
    /// `ESUB_RATE_IP`, `ESUB_RATE_IP_BURST`: (per second, burst); `None`: off.
    pub rate_ip: Option<(u32, u32)>,
    /// `ESUB_RATE_APPID`, `ESUB_RATE_APPID_BURST`: (per second, burst); `None`: off.
    pub rate_appid: Option<(u32, u32)>,
    /// `ESUB_PUNISH_MS`: 400, 401, 404 and 405 are sent this late (429 twice), then the
    /// connection closes; `None`: off.
    pub punish: Option<Duration>,
    /// The idempotent-pub window (4.4); 0 turns it off.
    pub dedupe_ms: u64,
    pub dedupe_max_ids: usize,
}

/// A variable whose value cannot be used; start-up stops with exit code 2.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}={:?}: expected {}", self.var, self.value, self.expected)
    }
}

impl std::error::Error for ConfigError {}

/// One row of the `--help` table: name, default, purpose.
const VARS: &[(&str, &str, &str)] = &[
    ("ESUB_PORT", "8090", "listening port (0 picks a free one)"),
    ("ESUB_BIND", "0.0.0.0", "listening address"),
    ("ESUB_WORKERS", "number of cores", "event loops, one thread each"),
    ("ESUB_NODE_IP", "first non-loopback IPv4", "address in /info and metric tags"),
    ("ESUB_CLOSE_CONNECTIONS", "unset", "close every HTTP connection after its response"),
    ("ESUB_CONFIRM_RECEIPT", "unset", "receipt mode for psubs (low traffic)"),
    ("ESUB_CONFIRM_TIMEOUT_MS", "1000", "receipt wait"),
    ("ESUB_PING_FREQUENCY", "60", "seconds between keepalive sweeps (high traffic)"),
    ("ESUB_MAX_HEADER_BYTES", "8192", "request head limit (431 beyond)"),
    ("ESUB_MAX_BODY_BYTES", "1048576", "request body limit (413 beyond)"),
    ("ESUB_HEADER_TIMEOUT_MS", "10000", "time to send a complete request head"),
    ("ESUB_IDLE_TIMEOUT_MS", "75000", "idle keep-alive connection between requests"),
    ("ESUB_WRITE_TIMEOUT_MS", "5000", "time for a sub's response to be written"),
    ("ESUB_MAX_CONNECTIONS", "100000", "open connections per process; beyond it accepts wait"),
    ("ESUB_MAX_PSUB_BACKLOG", "4194304", "unsent bytes a psub member may hold before reps skip it"),
    ("ESUB_DRAIN_MS", "5000", "shutdown drain"),
    ("ESUB_STORE", "off", "off | undelivered | all: which reps are stored for replay"),
    ("ESUB_DATA_DIR", "./esub-data", "where stored reps live"),
    ("ESUB_FSYNC", "interval", "always | interval: when stored reps reach the disk"),
    ("ESUB_FSYNC_MS", "200", "fsync period with interval; background writeback period with always"),
    ("ESUB_RETENTION_SECS", "86400", "stored reps older than this are dropped"),
    ("ESUB_RETENTION_BYTES", "1073741824", "stored bytes beyond this drop the oldest"),
    ("ESUB_STORE_SEGMENT_BYTES", "67108864", "store segment size; retention drops whole segments"),
    ("ESUB_TOPICS", "on", "on | off: the Kafka-style topics half (/v1/)"),
    ("ESUB_ENGINE", "embedded", "topics engine (embedded; nats later)"),
    ("ESUB_APPS_FILE", "unset", "topics auth file; unset = open mode"),
    ("ESUB_TRUST_XFF", "unset", "client IP from X-Forwarded-For"),
    ("ESUB_PUB_MAX_BYTES", "524288", "topic message payload limit"),
    ("ESUB_MAX_KEY_BYTES", "256", "topic message key limit"),
    ("ESUB_MAX_TAG_BYTES", "1024", "topic message tag limit"),
    ("ESUB_PUB_MAX_BATCH", "1000", "records per batch pub"),
    ("ESUB_JOB_MAX_BYTES", "16384", "delayed job payload limit"),
    ("ESUB_JOB_TICK_MS", "100", "job scheduler resolution: a due job fires within it"),
    ("ESUB_DEFAULT_PARTITIONS", "1", "partitions of auto-created topics"),
    ("ESUB_MAX_PARTITIONS", "20", "partitions upper bound"),
    ("ESUB_MAX_TOPICS", "10000", "topics on the node at most (shadow queues count); past it 507"),
    ("ESUB_MAX_GROUPS", "10000", "consumer groups one topic keeps offsets for; past it 507"),
    ("ESUB_TOPIC_RETENTION_HOURS", "168", "default retention.hours"),
    ("ESUB_TOPIC_SEGMENT_BYTES", "67108864", "topic segment size; retention drops whole segments"),
    ("ESUB_TOPIC_RETENTION_CHECK_MS", "10000", "how often retention runs"),
    ("ESUB_SUB_TIMEOUT_MS", "30000", "topic long poll"),
    ("ESUB_SUB_BATCH_IDLE_MS", "1000", "a batch GET ends after this long without a message"),
    ("ESUB_SUB_MAX_BATCH", "4000", "sub batch clamp"),
    ("ESUB_ACK_TIMEOUT_MS", "0", "redelivery to a live ack=1 instance (0 = off)"),
    ("ESUB_RATE_IP", "0", "/v1/ requests per second per client IP (0 = off)"),
    ("ESUB_RATE_IP_BURST", "= ESUB_RATE_IP", "requests a client IP may make at once"),
    ("ESUB_RATE_APPID", "0", "/v1/ requests and messages per second per appid (0 = off)"),
    ("ESUB_RATE_APPID_BURST", "= ESUB_RATE_APPID", "what an appid may spend at once"),
    ("ESUB_PUNISH_MS", "0", "delay of 400/401/404/405 (429: twice), then close (0 = off)"),
    ("ESUB_DEDUPE_MS", "120000", "idempotent pub window for X-Msg-Id (0 = off)"),
    ("ESUB_DEDUPE_MAX_IDS", "1000000", "ids the window keeps; the oldest go first"),
    ("ESUB_CLUSTER", "unset", "NATS URLs nats://h:p or tls://h:p[,...]; set = cluster mode"),
    ("ESUB_CLUSTER_CA", "bundled Mozilla roots", "PEM file of CA certificates for NATS TLS"),
    ("ESUB_CLUSTER_NAME", "esub", "cluster subject prefix (clusters may share one NATS)"),
    ("ESUB_CLUSTER_TOKEN", "unset", "required on the cluster routes (X-Esub-Cluster-Token)"),
    ("ESUB_NODE_NAME", "host name:port", "this node's name, unique among live nodes"),
    ("ESUB_ADVERTISE", "node IP:port", "host:port sent in Location and heartbeats"),
    ("ESUB_CLUSTER_HEARTBEAT_MS", "1000", "heartbeat period; a node is lost after 3"),
    ("ESUB_CLUSTER_TIMEOUT_MS", "2000", "one request over NATS"),
    ("DATADOG_SERVICE_HOST", "localhost", "DogStatsD host"),
    ("DATADOG_SERVICE_PORT", "8125", "DogStatsD UDP port"),
    ("ESUB_METRIC_PREFIX", "esub", "metric name prefix"),
    ("ESUB_ENVIRONMENT_NAME", "unset", "adds an environment: tag"),
    ("ESUB_TAG_KEYS", "unset", "adds key: tags (topics: topic: and group:)"),
    ("ESUB_METRIC_INTERVAL_MS", "10000", "statsd flush period"),
    ("ESUB_DEBUG", "unset", "per-request debug lines"),
    ("ESUB_VERBOSE_DEBUG", "unset", "socket-level debug lines"),
];

/// The text `esub --help` prints.
pub fn help_text() -> String {
    let mut s = String::from(
        "esub: wait for the answer another process will produce.\n\n\
         Usage: esub [--help]\n\n\
         Configuration is read from the environment:\n\n",
    );
    for (name, default, purpose) in VARS {
        s.push_str(&format!("  {name:<26} {default:<26} {purpose}\n"));
    }
    s
}

/// A flag is on when set to anything but empty or `0`.
fn flag(value: Option<&str>) -> bool {
    matches!(value, Some(v) if !v.is_empty() && v != "0")
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `get`, so tests can supply a table instead of the environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let num =
            |var: &'static str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
                match get(var) {
                    None => Ok(default),
                    Some(v) => match v.trim().parse::<u64>() {
                        Ok(n) if (min..=max).contains(&n) => Ok(n),
                        _ => Err(ConfigError {
                            var,
                            value: v,
                            expected: match (min, max) {
                                (0, 65535) => "a number from 0 to 65535",
                                (1, _) => "a whole number of at least 1",
                                _ => "a whole number",
                            },
                        }),
                    },
                }
            };
        let ms = |var: &'static str, default: u64| -> Result<Duration, ConfigError> {
            num(var, default, 1, u64::MAX / 4).map(Duration::from_millis)
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;

        let bind = match get("ESUB_BIND") {
            None => IpAddr::from([0, 0, 0, 0]),
            Some(v) => v.trim().parse().map_err(|_| ConfigError {
                var: "ESUB_BIND",
                value: v,
                expected: "an IPv4 or IPv6 address",
            })?,
        };
        let node_ip = match get("ESUB_NODE_IP") {
            None => None,
            Some(v) if v.trim().parse::<IpAddr>().is_ok() => Some(v.trim().to_string()),
            Some(v) => {
                return Err(ConfigError {
                    var: "ESUB_NODE_IP",
                    value: v,
                    expected: "an IP address",
                });
            }
        };
        let word = |var: &'static str,
                    default: &'static str,
                    allowed: &'static [&'static str],
                    expected: &'static str| {
            let v = get(var).unwrap_or_else(|| default.to_string());
            match allowed.iter().find(|a| v.trim().eq_ignore_ascii_case(a)) {
                Some(a) => Ok(*a),
                None => Err(ConfigError { var, value: v, expected }),
            }
        };
        let store = match word(
            "ESUB_STORE",
            "off",
            &["off", "undelivered", "all"],
            "off, undelivered or all",
        )? {
            "undelivered" => StoreMode::Undelivered,
            "all" => StoreMode::All,
            _ => StoreMode::Off,
        };
        let fsync =
            match word("ESUB_FSYNC", "interval", &["always", "interval"], "always or interval")? {
                "always" => Fsync::Always,
                _ => Fsync::Interval,
            };
        let text = |var: &'static str, default: &str| -> Result<String, ConfigError> {
            let v = get(var).unwrap_or_else(|| default.to_string());
            if v.trim().is_empty() {
                return Err(ConfigError { var, value: v, expected: "a non-empty value" });
            }
            Ok(v.trim().to_string())
        };
        let topics = match word("ESUB_TOPICS", "on", &["on", "off"], "on or off")? {
            "off" => None,
            _ => {
                word("ESUB_ENGINE", "embedded", &["embedded"], "embedded (nats comes later)")?;
                let hours = match get("ESUB_TOPIC_RETENTION_HOURS") {
                    None => 168.0,
                    Some(v) => match v.trim().parse::<f64>() {
                        Ok(h) if h > 0.0 && h.is_finite() => h,
                        _ => {
                            return Err(ConfigError {
                                var: "ESUB_TOPIC_RETENTION_HOURS",
                                value: v,
                                expected: "a number of hours above 0",
                            });
                        }
                    },
                };
                let max_partitions = num("ESUB_MAX_PARTITIONS", 20, 1, 100_000)? as u32;
                let default_partitions = num("ESUB_DEFAULT_PARTITIONS", 1, 1, 100_000)? as u32;
                if default_partitions > max_partitions {
                    return Err(ConfigError {
                        var: "ESUB_DEFAULT_PARTITIONS",
                        value: default_partitions.to_string(),
                        expected: "at most ESUB_MAX_PARTITIONS",
                    });
                }
                let ack_ms = num("ESUB_ACK_TIMEOUT_MS", 0, 0, u64::MAX / 4)?;
                // A million a second per key is past what one node serves at all.
                let bucket = |rate: &'static str, burst: &'static str| {
                    let r = num(rate, 0, 0, 1_000_000)? as u32;
                    let b = num(burst, u64::from(r.max(1)), 1, 1_000_000)? as u32;
                    Ok::<_, ConfigError>((r > 0).then_some((r, b)))
                };
                // A punished connection is held this long: past a minute, clients have long
                // given up and we would only pile up sockets.
                let punish_ms = num("ESUB_PUNISH_MS", 0, 0, 60_000)?;
                Some(TopicsConfig {
                    apps_file: get("ESUB_APPS_FILE")
                        .filter(|v| !v.trim().is_empty())
                        .map(|v| PathBuf::from(v.trim())),
                    trust_xff: flag(get("ESUB_TRUST_XFF").as_deref()),
                    pub_max_bytes: num("ESUB_PUB_MAX_BYTES", 524_288, 1, 1 << 30)? as usize,
                    max_key_bytes: num("ESUB_MAX_KEY_BYTES", 256, 1, 65_535)? as usize,
                    max_tag_bytes: num("ESUB_MAX_TAG_BYTES", 1024, 1, 65_535)? as usize,
                    pub_max_batch: num("ESUB_PUB_MAX_BATCH", 1000, 1, 1 << 20)? as usize,
                    default_partitions,
                    max_partitions,
                    max_topics: num("ESUB_MAX_TOPICS", 10_000, 1, 10_000_000)? as usize,
                    max_groups: num("ESUB_MAX_GROUPS", 10_000, 1, 10_000_000)? as usize,
                    retention_hours: hours,
                    segment_bytes: num("ESUB_TOPIC_SEGMENT_BYTES", 64 << 20, 4096, 1 << 40)?,
                    retention_check: ms("ESUB_TOPIC_RETENTION_CHECK_MS", 10_000)?,
                    sub_timeout: ms("ESUB_SUB_TIMEOUT_MS", 30_000)?,
                    batch_idle: ms("ESUB_SUB_BATCH_IDLE_MS", 1000)?,
                    sub_max_batch: num("ESUB_SUB_MAX_BATCH", 4000, 1, 1 << 20)? as usize,
                    ack_timeout: (ack_ms > 0).then(|| Duration::from_millis(ack_ms)),
                    max_body: num("ESUB_MAX_BODY_BYTES", 1 << 20, 0, 1 << 30)? as usize,
                    job_max_bytes: num("ESUB_JOB_MAX_BYTES", 16_384, 1, 1 << 30)? as usize,
                    // 0 would make every round a busy loop; jobs due the same millisecond
                    // fire together anyway.
                    job_tick: Duration::from_millis(num("ESUB_JOB_TICK_MS", 100, 1, 3_600_000)?),
                    rate_ip: bucket("ESUB_RATE_IP", "ESUB_RATE_IP_BURST")?,
                    rate_appid: bucket("ESUB_RATE_APPID", "ESUB_RATE_APPID_BURST")?,
                    punish: (punish_ms > 0).then(|| Duration::from_millis(punish_ms)),
                    dedupe_ms: num("ESUB_DEDUPE_MS", 120_000, 0, u64::MAX / 4)?,
                    dedupe_max_ids: num("ESUB_DEDUPE_MAX_IDS", 1_000_000, 0, 1 << 32)? as usize,
                })
            }
        };
        let cluster = crate::cluster::config::ClusterConfig::from_lookup(&get)?;
        Ok(Config {
            topics,
            cluster,
            store,
            data_dir: PathBuf::from(text("ESUB_DATA_DIR", "./esub-data")?),
            fsync,
            fsync_interval: ms("ESUB_FSYNC_MS", 200)?,
            retention: Duration::from_secs(num("ESUB_RETENTION_SECS", 86_400, 1, u64::MAX / 4)?),
            retention_bytes: num("ESUB_RETENTION_BYTES", 1 << 30, 1, u64::MAX)?,
            // Small segments are for tests of retention; below 4 KiB every batch would roll.
            segment_bytes: num("ESUB_STORE_SEGMENT_BYTES", 64 << 20, 4096, 1 << 40)?,
            statsd_host: text("DATADOG_SERVICE_HOST", "localhost")?,
            statsd_port: num("DATADOG_SERVICE_PORT", 8125, 0, 65535)? as u16,
            metric_prefix: text("ESUB_METRIC_PREFIX", "esub")?,
            environment: get("ESUB_ENVIRONMENT_NAME").filter(|e| !e.trim().is_empty()),
            tag_keys: flag(get("ESUB_TAG_KEYS").as_deref()),
            metric_interval: ms("ESUB_METRIC_INTERVAL_MS", 10_000)?,
            port: num("ESUB_PORT", 8090, 0, 65535)? as u16,
            bind,
            // More loops than this would only fight over 2..N cores and registry shards.
            workers: num("ESUB_WORKERS", cores, 1, 1024)? as usize,
            node_ip,
            close_connections: flag(get("ESUB_CLOSE_CONNECTIONS").as_deref()),
            confirm_receipt: flag(get("ESUB_CONFIRM_RECEIPT").as_deref()),
            confirm_timeout: ms("ESUB_CONFIRM_TIMEOUT_MS", 1000)?,
            ping_frequency: Duration::from_secs(num("ESUB_PING_FREQUENCY", 60, 1, 1 << 32)?),
            // 256 bytes is the smallest head that can carry a 256-byte key and a token.
            max_header_bytes: num("ESUB_MAX_HEADER_BYTES", 8192, 256, 1 << 24)? as usize,
            // Bodies live in memory until delivered: 1 GiB is far past any sane reply.
            max_body_bytes: num("ESUB_MAX_BODY_BYTES", 1 << 20, 0, 1 << 30)? as usize,
            header_timeout: ms("ESUB_HEADER_TIMEOUT_MS", 10_000)?,
            idle_timeout: ms("ESUB_IDLE_TIMEOUT_MS", 75_000)?,
            write_timeout: ms("ESUB_WRITE_TIMEOUT_MS", 5000)?,
            max_connections: num("ESUB_MAX_CONNECTIONS", 100_000, 1, 1 << 24)? as usize,
            // Past 4 MiB unsent a member is not keeping up; reps go elsewhere (or 404).
            max_psub_backlog: num("ESUB_MAX_PSUB_BACKLOG", 4 << 20, 0, 1 << 34)? as usize,
            drain: ms("ESUB_DRAIN_MS", 5000)?,
            debug: flag(get("ESUB_DEBUG").as_deref()) || flag(get("ESUB_VERBOSE_DEBUG").as_deref()),
            verbose_debug: flag(get("ESUB_VERBOSE_DEBUG").as_deref()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.port, 8090);
        assert_eq!(c.bind.to_string(), "0.0.0.0");
        assert!(c.workers >= 1);
        assert_eq!(c.max_header_bytes, 8192);
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert_eq!(c.header_timeout, Duration::from_millis(10_000));
        assert_eq!(c.idle_timeout, Duration::from_millis(75_000));
        assert_eq!(c.write_timeout, Duration::from_millis(5000));
        assert_eq!(c.max_connections, 100_000);
        assert_eq!((c.store, c.fsync), (StoreMode::Off, Fsync::Interval));
        assert_eq!(c.fsync_interval, Duration::from_millis(200));
        assert_eq!((c.statsd_host.as_str(), c.statsd_port), ("localhost", 8125));
        assert_eq!(c.metric_prefix, "esub");
        assert_eq!(c.metric_interval, Duration::from_millis(10_000));
        assert_eq!(parse(&[("ESUB_STORE", "ALL")]).unwrap().store, StoreMode::All);
        assert!(!c.close_connections);
    }

    #[test]
    fn invalid_values_name_their_variable() {
        let rows: &[(&str, &str)] = &[
            ("ESUB_PORT", "abc"),
            ("ESUB_PORT", "70000"),
            ("ESUB_PORT", "-1"),
            ("ESUB_WORKERS", "0"),
            ("ESUB_WORKERS", "two"),
            ("ESUB_BIND", "localhost:80"),
            ("ESUB_NODE_IP", "not-an-ip"),
            ("ESUB_MAX_BODY_BYTES", "-1"),
            ("ESUB_HEADER_TIMEOUT_MS", "0"),
            ("ESUB_MAX_HEADER_BYTES", "10"),
            ("ESUB_STORE", "bogus"),
            ("ESUB_FSYNC", "sometimes"),
            ("DATADOG_SERVICE_PORT", "x"),
            ("ESUB_METRIC_INTERVAL_MS", "0"),
            ("ESUB_DATA_DIR", " "),
        ];
        for (var, value) in rows {
            let err = parse(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, *var, "{var}={value}");
            assert!(err.to_string().contains(var));
        }
    }

    #[test]
    fn rate_limits_and_punishment() {
        let t = |pairs: &[(&str, &str)]| parse(pairs).unwrap().topics.unwrap();
        let c = t(&[]);
        assert_eq!((c.rate_ip, c.rate_appid, c.punish), (None, None, None));
        let c = t(&[("ESUB_RATE_IP", "5"), ("ESUB_RATE_APPID", "100")]);
        assert_eq!((c.rate_ip, c.rate_appid), (Some((5, 5)), Some((100, 100))));
        let c =
            t(&[("ESUB_RATE_IP", "2"), ("ESUB_RATE_IP_BURST", "10"), ("ESUB_PUNISH_MS", "300")]);
        assert_eq!((c.rate_ip, c.punish), (Some((2, 10)), Some(Duration::from_millis(300))));
        assert_eq!(t(&[("ESUB_RATE_IP", "0"), ("ESUB_RATE_IP_BURST", "3")]).rate_ip, None);
        let rows: &[(&str, &str)] = &[
            ("ESUB_RATE_IP", "-1"),
            ("ESUB_RATE_IP", "1.5"),
            ("ESUB_RATE_IP_BURST", "0"),
            ("ESUB_RATE_APPID", "x"),
            ("ESUB_RATE_APPID", "2000000"),
            ("ESUB_RATE_APPID_BURST", "0"),
            ("ESUB_PUNISH_MS", "-5"),
            ("ESUB_PUNISH_MS", "60001"),
        ];
        for (var, value) in rows {
            let err = parse(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, *var, "{var}={value}");
        }
    }

    #[test]
    fn flags() {
        for (v, on) in [("1", true), ("yes", true), ("0", false), ("", false)] {
            assert_eq!(parse(&[("ESUB_CLOSE_CONNECTIONS", v)]).unwrap().close_connections, on);
        }
        assert_eq!(parse(&[("ESUB_PORT", "0")]).unwrap().port, 0);
    }

    #[test]
    fn help_lists_every_variable() {
        let h = help_text();
        for (name, _, _) in VARS {
            assert!(h.contains(name));
        }
    }
}
