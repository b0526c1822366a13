//! NATS server addresses: `nats://host[:port]` or `tls://host[:port]` (port 4222 when absent),
//! comma-separated lists as `ESUB_CLUSTER` gives them, and the bare `host:port` form INFO's
//! `connect_urls` use.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// The port nats-server listens on by default.
pub const DEFAULT_PORT: u16 = 4222;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerUrl {
    /// A name or an IP address; IPv6 without its brackets.
    pub host: String,
    pub port: u16,
    /// `tls://`: the connection must be TLS; a server that does not offer it fails the attempt.
    /// (`nats://` takes TLS too when the server requires it.)
    pub tls: bool,
}

/// Why a URL was refused; the text names the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(pub String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad NATS URL {:?} (want nats://host[:port] or tls://host[:port])", self.0)
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "tls" } else { "nats" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl ServerUrl {
    /// `nats://host[:port]`, `tls://host[:port]`, or `host:port` without a scheme (INFO's
    /// `connect_urls`). No user info, path or query: credentials go in `Options`.
    pub fn parse(s: &str) -> Result<ServerUrl, UrlError> {
        let bad = || UrlError(s.to_string());
        let (rest, tls) = match s.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("nats") => (rest, false),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("tls") => (rest, true),
            Some(_) => return Err(bad()),
            None => (s, false),
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
        Ok(ServerUrl { host: host.to_string(), port, tls })
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
        let rows: &[(&str, &str, u16, bool)] = &[
            ("nats://127.0.0.1:4223", "127.0.0.1", 4223, false),
            ("nats://localhost", "localhost", DEFAULT_PORT, false),
            ("NATS://h:1", "h", 1, false),
            ("10.0.0.2:5222", "10.0.0.2", 5222, false),
            ("nats://[::1]:4000", "::1", 4000, false),
            ("[::1]", "::1", DEFAULT_PORT, false),
            ("tls://h:1", "h", 1, true),
            ("TLS://nats.example.com", "nats.example.com", DEFAULT_PORT, true),
            ("tls://[::1]:4443", "::1", 4443, true),
        ];
        for &(s, host, port, tls) in rows {
            let want = ServerUrl { host: host.into(), port, tls };
            assert_eq!(ServerUrl::parse(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn refuses_bad_urls() {
        for s in [
            "",
            "nats://",
            "http://h:1",
            "tls://",
            "tls://u:p@h:1",
            "tcp://h:1",
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
        let urls =
            ServerUrl::parse_list("nats://a:1, nats://[::1]:2, tls://b, TLS://[::2]:3").unwrap();
        assert_eq!(
            urls.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["nats://a:1", "nats://[::1]:2", "tls://b:4222", "tls://[::2]:3"]
        );
        assert!(ServerUrl::parse_list("nats://a:1,").is_err());
        assert_eq!(
            ServerUrl { host: "127.0.0.1".into(), port: 9, tls: false }.resolve(),
            ["127.0.0.1:9".parse::<SocketAddr>().unwrap()]
        );
    }
}
