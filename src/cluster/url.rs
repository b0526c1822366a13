//! NATS server addresses: `nats://host[:port]` (port 4222 when absent), comma-separated lists
//! as `ESUB_CLUSTER` gives them, and the bare `host:port` form INFO's `connect_urls` use.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// The port nats-server listens on by default.
pub const DEFAULT_PORT: u16 = 4222;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerUrl {
    /// A name or an IP address; IPv6 without its brackets.
    pub host: String,
    pub port: u16,
}

/// Why a URL was refused; the text names the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(pub String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad NATS URL {:?} (want nats://host[:port])", self.0)
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "nats://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "nats://{}:{}", self.host, self.port)
        }
    }
}

impl ServerUrl {
    /// `nats://host[:port]`, or `host:port` without a scheme (INFO's `connect_urls`). No user
    /// info, path or query: credentials go in `Options`. `tls://` is refused until TLS exists.
    pub fn parse(s: &str) -> Result<ServerUrl, UrlError> {
        let bad = || UrlError(s.to_string());
        let rest = match s.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("nats") => rest,
            Some(_) => return Err(bad()),
            None => s,
        };
        if rest.is_empty()
            || rest.contains(['/', '?', '#', '@'])
            || rest.contains(char::is_whitespace)
        {
            return Err(bad());
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(bad)?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => return Err(bad()),
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().ok().filter(|&p| p != 0).ok_or_else(bad)?
            }
            Some(_) => return Err(bad()),
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(ServerUrl { host: host.to_string(), port })
    }

    /// A comma-separated list (blanks around entries allowed); at least one URL.
    pub fn parse_list(s: &str) -> Result<Vec<ServerUrl>, UrlError> {
        let urls =
            s.split(',').map(str::trim).map(ServerUrl::parse).collect::<Result<Vec<_>, _>>()?;
        if urls.is_empty() {
            return Err(UrlError(s.to_string()));
        }
        Ok(urls)
    }

    /// The addresses the host resolves to. Blocks on DNS for a name (the cluster thread is the
    /// only caller, and it has nothing else to serve); an IP address resolves at once.
    pub fn resolve(&self) -> Vec<SocketAddr> {
        (self.host.as_str(), self.port).to_socket_addrs().map(Iterator::collect).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let rows: &[(&str, &str, u16)] = &[
            ("nats://127.0.0.1:4223", "127.0.0.1", 4223),
            ("nats://localhost", "localhost", DEFAULT_PORT),
            ("NATS://h:1", "h", 1),
            ("10.0.0.2:5222", "10.0.0.2", 5222),
            ("nats://[::1]:4000", "::1", 4000),
            ("[::1]", "::1", DEFAULT_PORT),
        ];
        for &(s, host, port) in rows {
            assert_eq!(ServerUrl::parse(s), Ok(ServerUrl { host: host.into(), port }), "{s}");
        }
    }

    #[test]
    fn refuses_bad_urls() {
        for s in [
            "",
            "nats://",
            "http://h:1",
            "tls://h:1",
            "nats://h:",
            "nats://h:0",
            "nats://h:65536",
            "nats://h:x",
            "nats://u:p@h:1",
            "nats://h:1/path",
            "nats://::1:4222",
            "nats://[::1]x",
            "nats://h 1",
            "nats://:4222",
        ] {
            assert!(ServerUrl::parse(s).is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn parses_lists_and_prints_urls() {
        let urls = ServerUrl::parse_list("nats://a:1, nats://[::1]:2").unwrap();
        assert_eq!(
            urls.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["nats://a:1", "nats://[::1]:2"]
        );
        assert!(ServerUrl::parse_list("nats://a:1,").is_err());
        assert_eq!(
            ServerUrl { host: "127.0.0.1".into(), port: 9 }.resolve(),
            ["127.0.0.1:9".parse::<SocketAddr>().unwrap()]
        );
    }
}
