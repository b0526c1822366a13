//! Which NATS server to try next: the configured URLs, then those the servers announced, in
//! turn (every address a name resolves to); after a whole round fails, a doubling wait.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use super::url::ServerUrl;

/// Servers learnt from INFO's `connect_urls`, kept at most: a cluster is a handful.
const MAX_DISCOVERED: usize = 32;

pub(super) struct Dialer {
    urls: Vec<ServerUrl>,
    discovered: Vec<ServerUrl>,
    /// The next URL (an index into `urls` then `discovered`, modulo their count).
    cursor: usize,
    /// URLs taken in this round.
    tried: usize,
    /// Addresses of the URL being tried (`current`), not yet attempted.
    addrs: VecDeque<SocketAddr>,
    current: Option<ServerUrl>,
    /// Rounds failed in a row.
    failures: u32,
    min: Duration,
    max: Duration,
}

/// The wait after `failures` failed rounds in a row: `min` doubling up to `max`.
pub fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    min.saturating_mul(1u32.checked_shl(failures).unwrap_or(u32::MAX)).min(max)
}

impl Dialer {
    pub fn new(urls: Vec<ServerUrl>, min: Duration, max: Duration) -> Dialer {
        Dialer {
            urls,
            discovered: Vec::new(),
            cursor: 0,
            tried: 0,
            addrs: VecDeque::new(),
            current: None,
            failures: 0,
            min,
            max,
        }
    }

    pub fn urls(&self) -> impl Iterator<Item = &ServerUrl> {
        self.urls.iter().chain(&self.discovered)
    }

    fn count(&self) -> usize {
        self.urls.len() + self.discovered.len()
    }

    /// The next address of this round and the URL it came from, resolving the next URL when
    /// the last one's addresses are used up; `unresolved` hears of each URL that resolved to
    /// nothing. `None`: the round is over (call `back_off`).
    pub fn next(
        &mut self,
        mut unresolved: impl FnMut(&ServerUrl),
    ) -> Option<(SocketAddr, ServerUrl)> {
        while self.addrs.is_empty() && self.tried < self.count() {
            let i = self.cursor % self.count();
            let url = match self.urls.get(i) {
                Some(u) => u,
                None => &self.discovered[i - self.urls.len()],
            };
            self.cursor = self.cursor.wrapping_add(1);
            self.tried += 1;
            self.addrs = url.resolve().into();
            if self.addrs.is_empty() {
                unresolved(url);
            }
            self.current = Some(url.clone());
        }
        let addr = self.addrs.pop_front()?;
        Some((addr, self.current.clone()?))
    }

    /// Whether this round still has addresses or URLs to try.
    pub fn round_left(&self) -> bool {
        !self.addrs.is_empty() || self.tried < self.count()
    }

    /// The round failed: the wait before the next one, which starts at the following URL.
    pub fn back_off(&mut self) -> Duration {
        let wait = backoff(self.failures, self.min, self.max);
        self.failures = self.failures.saturating_add(1);
        self.tried = 0;
        self.addrs.clear();
        wait
    }

    /// A connection was made: the next loss starts a fresh round, with the next URL and no wait.
    pub fn connected(&mut self) {
        self.failures = 0;
        self.tried = 0;
        self.addrs.clear();
    }

    /// Adds the servers an INFO announced (`host:port`) that are not known yet. They want TLS
    /// when a configured URL is `tls://` (as NATS clients do): one `tls://` asks for TLS with
    /// the whole cluster, and an announcement cannot lower that.
    pub fn learn(&mut self, connect_urls: &[String]) {
        let tls = self.urls.iter().any(|u| u.tls);
        for u in connect_urls {
            if self.discovered.len() >= MAX_DISCOVERED {
                return;
            }
            if let Ok(url) = ServerUrl::parse(u).map(|url| ServerUrl { tls: url.tls || tls, ..url })
                && !self.urls.contains(&url)
                && !self.discovered.contains(&url)
            {
                self.discovered.push(url);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(port: u16) -> ServerUrl {
        ServerUrl { host: "127.0.0.1".into(), port, tls: false }
    }

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let rows =
            [(0, 100), (1, 200), (2, 400), (4, 1600), (5, 2000), (31, 2000), (u32::MAX, 2000)];
        for (failures, ms) in rows {
            assert_eq!(backoff(failures, min, max), Duration::from_millis(ms), "{failures}");
        }
    }

    #[test]
    fn rounds_go_through_every_url_then_wait() {
        let ms = Duration::from_millis;
        let mut d = Dialer::new(vec![url(1), url(2)], ms(100), ms(300));
        let mut next = || d.next(|u| panic!("{u} did not resolve")).map(|(a, _)| a.port());
        assert_eq!((next(), next(), next()), (Some(1), Some(2), None));
        assert!(!d.round_left());
        assert_eq!((d.back_off(), d.back_off(), d.back_off()), (ms(100), ms(200), ms(300)));
        // Announced servers join the rotation, once each; the next round starts where the last
        // one stopped.
        d.learn(&["127.0.0.1:3".into(), "127.0.0.1:1".into(), "127.0.0.1:3".into(), "x y".into()]);
        assert_eq!(d.urls().map(|u| u.port).collect::<Vec<_>>(), [1, 2, 3]);
        let mut next = || d.next(|_| {}).map(|(a, _)| a.port());
        assert_eq!((next(), next(), next(), next()), (Some(3), Some(1), Some(2), None));
        // After a connection to 2, a loss tries 3 first, without waiting.
        let mut d = Dialer::new(vec![url(1), url(2), url(3)], ms(100), ms(300));
        d.next(|_| {});
        d.back_off();
        assert_eq!(d.next(|_| {}).map(|(a, _)| a.port()), Some(2));
        d.connected();
        assert!(d.round_left());
        assert_eq!(d.next(|_| {}).map(|(a, _)| a.port()), Some(3));
        assert_eq!(d.back_off(), ms(100), "a connection resets the back-off");
    }

    #[test]
    fn names_that_do_not_resolve_are_reported_and_skipped() {
        // An empty name fails in the resolver itself, with no DNS traffic (`parse` refuses it).
        let bad = ServerUrl { host: String::new(), port: 4222, tls: false };
        let mut d = Dialer::new(vec![bad, url(5)], Duration::ZERO, Duration::ZERO);
        let mut missing = Vec::new();
        assert_eq!(d.next(|u| missing.push(u.host.clone())).map(|(a, _)| a.port()), Some(5));
        assert_eq!(missing, [""]);
    }

    #[test]
    fn announced_servers_want_tls_when_a_configured_one_does() {
        let ms = Duration::from_millis;
        let tls = ServerUrl { tls: true, ..url(1) };
        let mut d = Dialer::new(vec![tls.clone()], ms(1), ms(1));
        d.learn(&["127.0.0.1:1".into(), "127.0.0.1:2".into()]);
        assert_eq!(d.urls().map(|u| (u.port, u.tls)).collect::<Vec<_>>(), [(1, true), (2, true)]);
        assert_eq!(d.next(|_| {}), Some(("127.0.0.1:1".parse().unwrap(), tls)));
        let mut d = Dialer::new(vec![url(1)], ms(1), ms(1));
        d.learn(&["127.0.0.1:2".into()]);
        assert!(d.urls().all(|u| !u.tls));
    }
}
