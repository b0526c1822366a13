//! `ClusterConfig`: the cluster settings of `API-cluster.md` section 1, read with the rest of
//! `Config`; an invalid value is a `ConfigError` naming its variable (exit 2).

use std::time::Duration;

use rustls::RootCertStore;

use super::tls;
use super::url::ServerUrl;
use crate::config::ConfigError;

/// The cluster settings. `urls` empty: single-node mode, no NATS code runs.
#[derive(Clone, Debug, Default)]
pub struct ClusterConfig {
    pub urls: Vec<ServerUrl>,
    /// The subject prefix `C`.
    pub name: String,
    /// Required on the cluster routes (`X-Esub-Cluster-Token`) when set.
    pub token: Option<String>,
    /// `None`: host name + ":" + bound port, settled once the port is known.
    pub node_name: Option<String>,
    /// `None`: the node IP + ":" + bound port.
    pub advertise: Option<String>,
    pub heartbeat: Duration,
    /// One request over NATS (and the connect handshake).
    pub timeout: Duration,
    /// `ESUB_CLUSTER_CA`: the CA certificates TLS servers are checked against, read at start-up
    /// (a missing or bad file exits 2 then, not at the first TLS attempt). `None`: the bundled
    /// Mozilla roots.
    pub ca: Option<RootCertStore>,
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        !self.urls.is_empty()
    }

    /// Reads the `ESUB_CLUSTER*`, `ESUB_NODE_NAME` and `ESUB_ADVERTISE` variables through `get`.
    /// `ESUB_CLUSTER_CA` names a file, which is read here.
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let bad = |var: &'static str, value: String, expected: &'static str| ConfigError {
            var,
            value,
            expected,
        };
        let urls = match get("ESUB_CLUSTER").filter(|v| !v.trim().is_empty()) {
            None => Vec::new(),
            Some(v) => ServerUrl::parse_list(v.trim()).map_err(|_| {
                bad("ESUB_CLUSTER", v, "nats://host:port or tls://host:port, comma-separated")
            })?,
        };
        let name = get("ESUB_CLUSTER_NAME").unwrap_or_else(|| "esub".into());
        if !valid_prefix(&name) {
            let expected = "a subject prefix: no whitespace, '*' or '>', no empty '.' token";
            return Err(bad("ESUB_CLUSTER_NAME", name, expected));
        }
        let token = get("ESUB_CLUSTER_TOKEN").filter(|t| !t.is_empty());
        let node_name = match get("ESUB_NODE_NAME") {
            None => None,
            Some(v) if !v.trim().is_empty() && !v.contains(char::is_control) => {
                Some(v.trim().to_string())
            }
            Some(v) => return Err(bad("ESUB_NODE_NAME", v, "a non-empty name")),
        };
        let advertise = match get("ESUB_ADVERTISE") {
            None => None,
            Some(v) if valid_host_port(v.trim()) => Some(v.trim().to_string()),
            Some(v) => return Err(bad("ESUB_ADVERTISE", v, "host:port")),
        };
        let ms = |var: &'static str, default: u64| match get(var) {
            None => Ok(Duration::from_millis(default)),
            Some(v) => match v.trim().parse::<u64>() {
                // A day is past any sane heartbeat or request; larger would overflow deadlines.
                Ok(n) if (1..=86_400_000).contains(&n) => Ok(Duration::from_millis(n)),
                _ => Err(bad(var, v, "a whole number of milliseconds of at least 1")),
            },
        };
        let ca = match get("ESUB_CLUSTER_CA").filter(|v| !v.trim().is_empty()) {
            None => None,
            Some(v) => Some(tls::load_roots(v.trim()).map_err(|_| {
                bad("ESUB_CLUSTER_CA", v, "a readable PEM file of CA certificates")
            })?),
        };
        Ok(ClusterConfig {
            urls,
            name,
            token,
            node_name,
            advertise,
            heartbeat: ms("ESUB_CLUSTER_HEARTBEAT_MS", 1000)?,
            timeout: ms("ESUB_CLUSTER_TIMEOUT_MS", 2000)?,
            ca,
        })
    }
}

/// A subject prefix: dot-separated non-empty tokens without whitespace or wildcards.
fn valid_prefix(s: &str) -> bool {
    !s.is_empty()
        && !s.contains(|c: char| c.is_whitespace() || c.is_control() || c == '*' || c == '>')
        && s.split('.').all(|t| !t.is_empty())
}

/// `host:port` with a non-empty host and a port from 1 to 65535.
fn valid_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !s.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<ClusterConfig, ConfigError> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ClusterConfig::from_lookup(&|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_and_values() {
        let c = parse(&[]).unwrap();
        assert!(!c.enabled());
        assert_eq!((c.name.as_str(), c.token.as_deref()), ("esub", None));
        assert_eq!(c.heartbeat, Duration::from_millis(1000));
        assert_eq!(c.timeout, Duration::from_millis(2000));
        assert!(c.ca.is_none());
        let c = parse(&[
            ("ESUB_CLUSTER", "nats://127.0.0.1:4222, tls://h:5"),
            ("ESUB_CLUSTER_NAME", "prod.eu"),
            ("ESUB_CLUSTER_TOKEN", "s3"),
            ("ESUB_NODE_NAME", "n1"),
            ("ESUB_ADVERTISE", "10.0.0.1:8090"),
            ("ESUB_CLUSTER_HEARTBEAT_MS", "200"),
            ("ESUB_CLUSTER_TIMEOUT_MS", "500"),
        ])
        .unwrap();
        assert!(c.enabled());
        assert_eq!(c.urls.iter().map(|u| u.tls).collect::<Vec<_>>(), [false, true]);
        assert_eq!(c.name, "prod.eu");
        assert_eq!(c.token.as_deref(), Some("s3"));
        assert_eq!(c.node_name.as_deref(), Some("n1"));
        assert_eq!(c.advertise.as_deref(), Some("10.0.0.1:8090"));
        assert_eq!(c.heartbeat, Duration::from_millis(200));
        assert_eq!(c.timeout, Duration::from_millis(500));
    }

    #[test]
    fn invalid_values_name_their_variable() {
        let rows: &[(&str, &str)] = &[
            ("ESUB_CLUSTER", "http://x:1"),
            ("ESUB_CLUSTER", "nats://h:0"),
            ("ESUB_CLUSTER_NAME", ""),
            ("ESUB_CLUSTER_NAME", "a b"),
            ("ESUB_CLUSTER_NAME", "a.*"),
            ("ESUB_CLUSTER_NAME", "a>"),
            ("ESUB_CLUSTER_NAME", ".a"),
            ("ESUB_CLUSTER_NAME", "a."),
            ("ESUB_CLUSTER_NAME", "a..b"),
            ("ESUB_NODE_NAME", " "),
            ("ESUB_ADVERTISE", "nohost"),
            ("ESUB_ADVERTISE", "h:0"),
            ("ESUB_ADVERTISE", ":80"),
            ("ESUB_CLUSTER_HEARTBEAT_MS", "0"),
            ("ESUB_CLUSTER_HEARTBEAT_MS", "x"),
            ("ESUB_CLUSTER_TIMEOUT_MS", "-1"),
            ("ESUB_CLUSTER_CA", "/nonexistent/ca.pem"),
            ("ESUB_CLUSTER_CA", "/dev/null"),
        ];
        for (var, value) in rows {
            let err = parse(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, *var, "{var}={value}");
        }
    }
}
