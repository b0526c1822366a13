//! The NATS connection as a non-blocking state machine: connects to the servers in turn with
//! bounded back-off, handshakes, keeps subscriptions across reconnects, does request/reply
//! through one inbox, sends keep-alive PINGs and bounds its send queue; goes TLS after the INFO
//! when the URL or the server asks. No threads of its own: the owner's `mio::Poll` drives it
//! through `on_readable`, `on_writable` and `on_timer`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use super::dialer::Dialer;
use super::event::Incoming;
pub use super::event::{
    Event, Message, Options, Payload, PubError, Reason, RequestError, RequestToken, Sid,
};
use super::headers::Headers;
use super::link::Link;
use super::proto::{self, Info};
use super::url::ServerUrl;
use crate::conn::buffer::Io;

/// Events returned by one `on_*` call before it stops reading (and reads on at the next): keeps
/// a flood from one server from growing one batch without bound.
const MAX_EVENTS: usize = 1024;
/// Reads in one pass, for the same reason.
const MAX_READS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting until then before the next attempt.
    Idle {
        until: Instant,
    },
    /// TCP connect in flight.
    Connecting {
        deadline: Instant,
    },
    /// Connected, waiting for the server's INFO.
    AwaitInfo {
        deadline: Instant,
    },
    /// CONNECT, the SUBs and a PING sent (queued behind the TLS handshake when there is one);
    /// the PONG means all of them took effect.
    AwaitPong {
        deadline: Instant,
    },
    Connected {
        next_ping: Instant,
        pings_out: u32,
    },
    /// `close` was called.
    Closed,
}

struct Subscription {
    subject: String,
    queue: Option<String>,
}

pub struct Client {
    dialer: Dialer,
    opts: Options,
    registry: Registry,
    token: Token,
    phase: Phase,
    link: Option<Link>,
    info: Option<Info>,
    subs: BTreeMap<Sid, Subscription>,
    next_sid: u64,
    /// `_INBOX.<nuid>.`: a request's reply subject is this and its token.
    inbox: String,
    inbox_sid: Sid,
    requests: HashMap<u64, Instant>,
    deadlines: BTreeSet<(Instant, u64)>,
    next_request: u64,
    events: Vec<Event>,
    now: Instant,
    dropped: u64,
}

impl Client {
    /// A client that will connect to `urls` in turn; the first attempt is due at once (call
    /// `on_timer`). `registry` is the owner's poll's (a `try_clone`); the stream is registered
    /// under `token`, and the owner routes that token's events to `on_readable`/`on_writable`.
    pub fn new(urls: Vec<ServerUrl>, opts: Options, registry: Registry, token: Token) -> Client {
        let now = Instant::now();
        Client {
            dialer: Dialer::new(urls, opts.reconnect_min, opts.reconnect_max),
            opts,
            registry,
            token,
            phase: Phase::Idle { until: now },
            link: None,
            info: None,
            subs: BTreeMap::new(),
            next_sid: 2,
            inbox: format!("_INBOX.{}.", nuid()),
            inbox_sid: Sid(1),
            requests: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_request: 1,
            events: Vec::new(),
            now,
            dropped: 0,
        }
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.phase, Phase::Connected { .. })
    }

    /// Whether the current connection (or attempt) has gone TLS.
    pub fn is_tls(&self) -> bool {
        self.link.as_ref().is_some_and(Link::is_tls)
    }

    /// The last INFO of the current (or last) server.
    pub fn server_info(&self) -> Option<&Info> {
        self.info.as_ref()
    }

    /// Largest headers + payload the server takes.
    pub fn max_payload(&self) -> usize {
        self.info.as_ref().map_or(proto::DEFAULT_MAX_PAYLOAD, |i| i.max_payload)
    }

    /// The configured URLs, then those the servers announced.
    pub fn known_urls(&self) -> impl Iterator<Item = &ServerUrl> {
        self.dialer.urls()
    }

    /// `_INBOX.<nuid>.`, unique to this client: replies come back on it.
    pub fn inbox_prefix(&self) -> &str {
        &self.inbox
    }

    /// Messages dropped: for a sid no longer subscribed, a request already answered or timed
    /// out, or with a subject or header block we cannot read.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Bytes queued and not yet written.
    pub fn outgoing(&self) -> usize {
        self.link.as_ref().map_or(0, |l| l.tx.pending())
    }

    /// When `on_timer` wants to run next: an attempt, a handshake deadline, a PING, a request
    /// timeout; or the last `now` seen when output is waiting or reading stopped at its budget.
    pub fn next_deadline(&self) -> Option<Instant> {
        if let Some(l) = &self.link
            && (l.read_more || (l.wants_write() && !l.write_blocked))
        {
            return Some(self.now);
        }
        let phase = match self.phase {
            Phase::Idle { until } => Some(until),
            Phase::Connecting { deadline }
            | Phase::AwaitInfo { deadline }
            | Phase::AwaitPong { deadline } => Some(deadline),
            Phase::Connected { next_ping, .. } => Some(next_ping),
            Phase::Closed => None,
        };
        let request = self.deadlines.first().map(|&(d, _)| d);
        phase.into_iter().chain(request).min()
    }

    pub fn on_readable(&mut self, now: Instant) -> Vec<Event> {
        self.now = now;
        self.check_connect();
        self.read_pass();
        self.flush();
        std::mem::take(&mut self.events)
    }

    pub fn on_writable(&mut self, now: Instant) -> Vec<Event> {
        self.now = now;
        if let Some(l) = &mut self.link {
            l.write_blocked = false;
        }
        self.check_connect();
        self.flush();
        std::mem::take(&mut self.events)
    }

    /// Runs what is due (attempts, deadlines, PINGs, request timeouts), reads on where a pass
    /// stopped at its budget, and writes what is queued: call it after every poll wake-up, and
    /// after a batch of publishes (or let `next_deadline` ask for it).
    pub fn on_timer(&mut self, now: Instant) -> Vec<Event> {
        self.now = now;
        match self.phase {
            Phase::Idle { until } if until <= now => self.attempt(),
            Phase::Connecting { deadline }
            | Phase::AwaitInfo { deadline }
            | Phase::AwaitPong { deadline }
                if deadline <= now =>
            {
                self.drop_link(Reason::Timeout)
            }
            Phase::Connected { next_ping, pings_out } if next_ping <= now => {
                if pings_out >= self.opts.max_pings_out {
                    self.drop_link(Reason::StalePings);
                } else if let Some(l) = &mut self.link {
                    l.tx.with_bytes(proto::ping);
                    let next_ping = now + self.opts.ping_interval;
                    self.phase = Phase::Connected { next_ping, pings_out: pings_out + 1 };
                }
            }
            _ => {}
        }
        while let Some(&(deadline, id)) = self.deadlines.first()
            && deadline <= now
        {
            self.deadlines.pop_first();
            self.requests.remove(&id);
            let token = RequestToken(id);
            self.events.push(Event::Reply { token, result: Err(RequestError::Timeout) });
        }
        if self.link.as_ref().is_some_and(|l| l.read_more) {
            self.read_pass();
        }
        self.flush();
        std::mem::take(&mut self.events)
    }

    /// Subscribes now (when connected) and after every reconnect. `queue`: each message goes
    /// to one member of the group. Not bounded by `max_outgoing`: a SUB is a short line per
    /// subscription the caller holds.
    pub fn subscribe(&mut self, subject: &str, queue: Option<&str>) -> Result<Sid, PubError> {
        if !proto::valid_subject(subject, true) || queue.is_some_and(|q| !proto::valid_queue(q)) {
            return Err(PubError::BadSubject);
        }
        let sid = Sid(self.next_sid);
        self.next_sid += 1;
        if let Some(l) = self.subs_link() {
            l.tx.with_bytes(|out| {
                let _ = proto::subscribe(out, subject, queue, sid.0);
            });
        }
        let (subject, queue) = (subject.to_string(), queue.map(str::to_string));
        self.subs.insert(sid, Subscription { subject, queue });
        Ok(sid)
    }

    /// Ends a subscription; `false` when it did not exist. Messages already on their way for
    /// it are dropped.
    pub fn unsubscribe(&mut self, sid: Sid) -> bool {
        if self.subs.remove(&sid).is_none() {
            return false;
        }
        if let Some(l) = self.subs_link() {
            l.tx.with_bytes(|out| proto::unsubscribe(out, sid.0, None));
        }
        true
    }

    pub fn publish<'a>(
        &mut self,
        subject: &str,
        reply: Option<&str>,
        headers: Option<&Headers>,
        payload: impl Into<Payload<'a>>,
    ) -> Result<(), PubError> {
        self.send(subject, reply, headers, payload.into())
    }

    /// Publishes with a reply subject in our inbox; the answer, a no-responders status, a
    /// timeout or a lost connection comes back as one `Event::Reply` with the token.
    pub fn request<'a>(
        &mut self,
        subject: &str,
        headers: Option<&Headers>,
        payload: impl Into<Payload<'a>>,
        timeout: Duration,
    ) -> Result<RequestToken, PubError> {
        if self.requests.len() >= self.opts.max_requests {
            return Err(PubError::Full);
        }
        let id = self.next_request;
        let reply = format!("{}{id}", self.inbox);
        self.send(subject, Some(&reply), headers, payload.into())?;
        self.next_request += 1;
        let deadline = Instant::now().max(self.now) + timeout;
        self.requests.insert(id, deadline);
        self.deadlines.insert((deadline, id));
        Ok(RequestToken(id))
    }

    /// Forgets a request (its caller went away); a late reply is dropped.
    pub fn cancel(&mut self, token: RequestToken) {
        if let Some(d) = self.requests.remove(&token.0) {
            self.deadlines.remove(&(d, token.0));
        }
    }

    /// Closes for good (shutdown): writes what it can of the queue, half-closes, and makes no
    /// more attempts. Pending requests are forgotten.
    pub fn close(&mut self) {
        if let Some(link) = self.link.take() {
            link.close(&self.registry, true);
        }
        self.requests.clear();
        self.deadlines.clear();
        self.phase = Phase::Closed;
    }

    /// The link, once the handshake has sent the subscriptions (so new ones go out directly).
    fn subs_link(&mut self) -> Option<&mut Link> {
        match self.phase {
            Phase::AwaitPong { .. } | Phase::Connected { .. } => self.link.as_mut(),
            _ => None,
        }
    }

    fn send(
        &mut self,
        subject: &str,
        reply: Option<&str>,
        headers: Option<&Headers>,
        payload: Payload<'_>,
    ) -> Result<(), PubError> {
        if !proto::valid_subject(subject, false)
            || reply.is_some_and(|r| !proto::valid_subject(r, false))
        {
            return Err(PubError::BadSubject);
        }
        let mut block = Vec::new();
        if let Some(h) = headers {
            h.encode(&mut block).map_err(|_| PubError::BadHeader)?;
        }
        if block.len() + payload.len() > self.max_payload() {
            return Err(PubError::TooLarge);
        }
        let max_outgoing = self.opts.max_outgoing;
        let connected = self.is_connected();
        let Some(link) = self.link.as_mut().filter(|_| connected) else {
            return Err(PubError::NotConnected);
        };
        let need = proto::publish_overhead(subject, reply) + block.len() + payload.len();
        // One message always fits an empty queue, whatever the bound.
        if !link.tx.is_empty() && link.tx.pending() + need > max_outgoing {
            return Err(PubError::Full);
        }
        let block = headers.map(|_| block.as_slice());
        link.tx.with_bytes(|out| {
            let _ = proto::publish_head(out, subject, reply, block, payload.len());
            if let Payload::Bytes(b) = payload {
                out.extend_from_slice(b);
            }
        });
        if let Payload::Shared(body) = payload {
            link.tx.push_shared(body);
        }
        link.tx.with_bytes(|out| out.extend_from_slice(b"\r\n"));
        Ok(())
    }

    /// Starts the next attempt: the next address of this round, else (the round is over)
    /// the back-off.
    fn attempt(&mut self) {
        let events = &mut self.events;
        let next = self.dialer.next(|url| {
            let reason = Reason::Unresolved(url.host.clone());
            events.push(Event::ConnectFailed { addr: None, reason });
        });
        let Some((addr, url)) = next else {
            self.phase = Phase::Idle { until: self.now + self.dialer.back_off() };
            return;
        };
        match Link::open(addr, url, &self.registry, self.token) {
            Ok(link) => {
                self.link = Some(link);
                self.phase = Phase::Connecting { deadline: self.now + self.opts.connect_timeout };
            }
            Err(e) => {
                let reason = Reason::from(e);
                self.events.push(Event::ConnectFailed { addr: Some(addr), reason });
                self.next_attempt();
            }
        }
    }

    /// After a failed attempt: the next at once while the round has servers left.
    fn next_attempt(&mut self) {
        let wait = if self.dialer.round_left() { Duration::ZERO } else { self.dialer.back_off() };
        self.phase = Phase::Idle { until: self.now + wait };
    }

    /// Ends the link: a failed attempt moves on to the next server, a lost connection fails
    /// its requests and starts again with the next server at once.
    fn drop_link(&mut self, reason: Reason) {
        let addr = self.link.take().map(|l| {
            let addr = l.addr;
            l.close(&self.registry, false);
            addr
        });
        if self.is_connected() {
            for (id, _) in self.requests.drain() {
                let result = Err(RequestError::Disconnected);
                self.events.push(Event::Reply { token: RequestToken(id), result });
            }
            self.deadlines.clear();
            self.events.push(Event::Disconnected(reason));
            self.phase = Phase::Idle { until: self.now };
        } else {
            self.events.push(Event::ConnectFailed { addr, reason });
            self.next_attempt();
        }
    }

    fn check_connect(&mut self) {
        let Phase::Connecting { deadline } = self.phase else { return };
        let Some(link) = &mut self.link else { return };
        match link.connected() {
            Ok(true) => self.phase = Phase::AwaitInfo { deadline },
            Ok(false) => {}
            Err(e) => self.drop_link(Reason::from(e)),
        }
    }

    /// Parses and acts on what is buffered, reading more until the socket is empty, the link
    /// is gone, or the pass is at its budget.
    fn read_pass(&mut self) {
        if matches!(self.phase, Phase::Connecting { .. }) {
            return;
        }
        if let Some(l) = &mut self.link {
            l.read_more = false;
        }
        for _ in 0..MAX_READS {
            if !self.parse_buffered() {
                return;
            }
            let cap = proto::MAX_LINE + self.max_payload() + 2;
            let Some(link) = &mut self.link else { return };
            match link.read(cap) {
                Io::Progress(n) if n > 0 && link.drained(n) => {
                    self.parse_buffered();
                    return;
                }
                Io::Progress(_) => {}
                // A full buffer still parses (see `proto::parse`); only an empty socket waits.
                Io::WouldBlock => return,
                Io::Eof => return self.drop_link(Reason::Eof),
                Io::Fatal(e) => return self.drop_link(Reason::from(e)),
            }
        }
        if let Some(l) = &mut self.link {
            l.read_more = true;
        }
    }

    /// Acts on every complete operation buffered; `false` when reading should stop (the link
    /// is gone, or this call's events are at their budget).
    fn parse_buffered(&mut self) -> bool {
        loop {
            if self.events.len() >= MAX_EVENTS {
                if let Some(l) = &mut self.link {
                    l.read_more = true;
                }
                return false;
            }
            let max_payload = self.max_payload();
            let Some(link) = &mut self.link else { return false };
            let incoming = match proto::parse(link.rx.filled(), max_payload) {
                Ok(None) => return true,
                Err(e) => {
                    self.drop_link(Reason::Protocol(e));
                    return false;
                }
                Ok(Some((op, used))) => {
                    let incoming = Incoming::from(op);
                    link.rx.consume(used);
                    incoming
                }
            };
            self.handle(incoming);
            if self.link.is_none() {
                return false;
            }
        }
    }

    fn handle(&mut self, incoming: Incoming) {
        match (self.phase, incoming) {
            (Phase::AwaitInfo { deadline }, Incoming::Info(info)) => {
                if let Err(reason) = self.secure(info.tls_required) {
                    return self.drop_link(reason);
                }
                self.absorb(*info);
                self.handshake();
                self.phase = Phase::AwaitPong { deadline };
            }
            (Phase::AwaitInfo { .. }, _) => self.drop_link(Reason::NoInfo),
            (_, Incoming::Info(info)) => self.absorb(*info),
            (_, Incoming::Ping) => {
                if let Some(l) = &mut self.link {
                    l.tx.with_bytes(proto::pong);
                }
            }
            (Phase::AwaitPong { .. }, Incoming::Pong) => {
                let next_ping = self.now + self.opts.ping_interval;
                self.phase = Phase::Connected { next_ping, pings_out: 0 };
                self.dialer.connected();
                let addr = self.link.as_ref().map(|l| l.addr);
                let server_id = self.info.as_ref().map(|i| i.server_id.clone()).unwrap_or_default();
                if let Some(addr) = addr {
                    self.events.push(Event::Connected { addr, server_id });
                }
            }
            (Phase::Connected { next_ping, .. }, Incoming::Pong) => {
                self.phase = Phase::Connected { next_ping, pings_out: 0 };
            }
            (Phase::AwaitPong { .. }, Incoming::Err(text)) => self.drop_link(Reason::Server(text)),
            (_, Incoming::Err(text)) => self.events.push(Event::ServerError(text)),
            (_, Incoming::Msg(Some(m))) => self.deliver(m),
            (_, Incoming::Msg(None)) => self.dropped += 1,
            (_, Incoming::Pong | Incoming::Ok) => {}
        }
    }

    /// After the plaintext INFO: starts TLS when the URL is `tls://` or the server requires it
    /// (a `nats://` URL follows the server up to TLS, as NATS clients do; it is never taken
    /// down to plaintext). TLS is checked against `Options::tls`, with the URL's host as the
    /// name. The server sends nothing more until the handshake, so bytes behind the INFO are
    /// refused: they would be taken as if they had come over TLS.
    fn secure(&mut self, tls_required: bool) -> Result<(), Reason> {
        let Some(link) = &mut self.link else { return Ok(()) };
        if !link.url.tls && !tls_required {
            return Ok(());
        }
        if !tls_required {
            return Err(Reason::TlsUnavailable);
        }
        let Some(config) = self.opts.tls.clone() else {
            return Err(Reason::TlsRequired);
        };
        if !link.rx.is_empty() {
            return Err(Reason::Tls("plaintext after INFO".into()));
        }
        link.start_tls(config).map_err(Reason::Tls)
    }

    /// Keeps an INFO: its limits, and the cluster's other servers to fail over to.
    fn absorb(&mut self, info: Info) {
        self.dialer.learn(&info.connect_urls);
        self.info = Some(info);
    }

    /// CONNECT, the inbox and every subscription, then the PING whose PONG says all took.
    fn handshake(&mut self) {
        let Some(link) = &mut self.link else { return };
        let o = &self.opts;
        let connect = proto::Connect {
            name: &o.name,
            user: o.user.as_deref(),
            pass: o.pass.as_deref(),
            token: o.token.as_deref(),
            echo: o.echo,
        };
        let inbox = format!("{}*", self.inbox);
        let (subs, inbox_sid) = (&self.subs, self.inbox_sid);
        link.tx.with_bytes(|out| {
            proto::connect(out, &connect);
            let _ = proto::subscribe(out, &inbox, None, inbox_sid.0);
            for (sid, s) in subs {
                let _ = proto::subscribe(out, &s.subject, s.queue.as_deref(), sid.0);
            }
            proto::ping(out);
        });
    }

    fn deliver(&mut self, m: Message) {
        if m.sid == self.inbox_sid {
            let id = m.subject.strip_prefix(&self.inbox).and_then(|t| t.parse::<u64>().ok());
            let Some((id, deadline)) = id.and_then(|id| Some((id, self.requests.remove(&id)?)))
            else {
                self.dropped += 1;
                return;
            };
            self.deadlines.remove(&(deadline, id));
            let no_responders =
                m.payload.is_empty() && m.headers.as_ref().is_some_and(Headers::is_no_responders);
            let result = if no_responders { Err(RequestError::NoResponders) } else { Ok(m) };
            self.events.push(Event::Reply { token: RequestToken(id), result });
        } else if self.subs.contains_key(&m.sid) {
            self.events.push(Event::Msg(m));
        } else {
            self.dropped += 1;
        }
    }

    /// Writes what is queued, unless the socket is full or still connecting.
    fn flush(&mut self) {
        if matches!(self.phase, Phase::Connecting { .. } | Phase::Idle { .. }) {
            return;
        }
        let Some(link) = &mut self.link else { return };
        match link.flush() {
            Ok(()) => {}
            Err(Io::Fatal(e)) => self.drop_link(Reason::from(e)),
            Err(_) => self.drop_link(Reason::Eof),
        }
    }
}

/// 22 random base-62 characters (about 131 bits) from the kernel, as NATS inboxes use; the
/// clock and the process id when /dev/urandom cannot be read.
fn nuid() -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut seed = [0u8; 22];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed));
    if read.is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut x = t ^ (u128::from(std::process::id()) << 64) | 1;
        for b in &mut seed {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
    seed.iter().map(|&b| DIGITS[usize::from(b) % DIGITS.len()] as char).collect()
}

#[cfg(test)]
mod tests;
