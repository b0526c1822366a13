//! The cluster thread: one NATS connection in its own `mio::Poll`, fed by its mailbox. It checks
//! this node's name at the first connection, keeps the members table from heartbeats, and hands
//! key traffic to `Routing`.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use mio::{Events, Poll, Token};

use super::client::{Client, Event, Message, Options, RequestError, RequestToken};
use super::handle::{ClusterHandle, ClusterMsg};
use super::members::{Beat, Members};
use super::routing::{Forward, Routing};
use super::subject::Subjects;
use super::url::ServerUrl;
use crate::server::Shared;
use crate::server::mailbox::{Msg, ReplyTo};
use crate::server::unix_ms;

pub const WAKER: Token = Token(0);
const NATS: Token = Token(1);

/// Where the node stands with its name (`API-cluster.md` section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Never connected yet.
    Unchecked,
    /// Asking `C.node.<name>` whether a live node has the name.
    Checking(RequestToken),
    /// The name is ours: heartbeats go out while connected.
    Joined,
}

/// Whether the current outage (from start-up or a lost connection to the next connection) has
/// been logged at WARN: its first failed attempt is, the next ones (several a second while NATS
/// stays down) only at debug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    Unreported,
    Reported,
}

pub struct Node {
    poll: Poll,
    client: Client,
    shared: Arc<Shared>,
    handle: Arc<ClusterHandle>,
    subjects: Subjects,
    routing: Routing,
    phase: Phase,
    outage: Outage,
    members: Members,
    next_beat: Option<Instant>,
    /// When to take this node's key events from the feed and publish them on `C.ev`: one
    /// message (of at most `EVENTS_BATCH` bytes) per `EVENTS_DELAY`, not one per event: each
    /// message costs every NATS server and every node on the way.
    events_due: Option<Instant>,
    events: Vec<crate::announce::Event>,
    json: Vec<u8>,
    /// NATS client options, kept to build a client for a `/join`.
    opts: Options,
    /// Cluster mode came from a `/join`, not `ESUB_CLUSTER`: a name in use answers 409 and
    /// the node goes back to being a single node (with `ESUB_CLUSTER` it exits 2).
    by_join: bool,
    /// `/join`s waiting for this node to be in the cluster, each with its deadline.
    joins: Vec<(ReplyTo, Instant)>,
}

/// How long a key event waits for others to share its `C.ev` message: at 10,000 events a
/// second, 50 of them per message instead of one, for 5 ms more on other nodes' feeds.
const EVENTS_DELAY: std::time::Duration = std::time::Duration::from_millis(5);

/// Bytes of key events sent in one `C.ev` message at most (well under NATS's `max_payload`).
const EVENTS_BATCH: usize = 64 * 1024;

impl Node {
    /// The cluster thread for `shared`'s handle: connecting to `ESUB_CLUSTER`'s URLs, or
    /// (none configured) idle until a `/join`.
    pub fn new(poll: Poll, shared: Arc<Shared>) -> io::Result<Node> {
        let handle = shared.cluster_cell.get().cloned().ok_or(io::ErrorKind::InvalidInput)?;
        let cfg = &shared.config.cluster;
        // Always built: a `nats://` URL follows a server that requires TLS.
        let tls = super::tls::client_config(cfg.ca.clone()).map_err(io::Error::other)?;
        let opts = Options {
            name: shared.node_name.clone(),
            connect_timeout: cfg.timeout,
            tls: Some(tls),
            // A node's claims must reach other nodes only (see `Routing::claim`).
            echo: false,
            ..Options::default()
        };
        let registry = poll.registry().try_clone()?;
        let mut client = Client::new(cfg.urls.clone(), opts.clone(), registry, NATS);
        if cfg.urls.is_empty() {
            client.close();
        }
        handle.set_active(!cfg.urls.is_empty());
        let subjects = Subjects::new(&cfg.name);
        let routing = Routing::new(subjects.clone(), &shared.node_name, cfg.timeout);
        Ok(Node {
            poll,
            client,
            shared,
            handle,
            subjects,
            routing,
            phase: Phase::Unchecked,
            outage: Outage::Unreported,
            members: Members::default(),
            next_beat: None,
            events_due: None,
            events: Vec::new(),
            json: Vec::new(),
            opts,
            by_join: false,
            joins: Vec::new(),
        })
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut inbox = Vec::new();
        loop {
            let now = Instant::now();
            let timeout = self.next_deadline().map(|d| d.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                crate::warn!("cluster poll failed error={e}");
                return;
            }
            let now = Instant::now();
            let mut mail = false;
            for ev in events.iter() {
                match ev.token() {
                    WAKER => mail = true,
                    _ => {
                        let mut out = Vec::new();
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            out.extend(self.client.on_readable(now));
                        }
                        if ev.is_writable() {
                            out.extend(self.client.on_writable(now));
                        }
                        self.on_events(out, now);
                    }
                }
            }
            if mail {
                self.handle.drain(&mut inbox);
                for msg in inbox.drain(..) {
                    if !self.on_mail(msg, now) {
                        return self.leave();
                    }
                }
            }
            self.tick(now);
            let out = self.client.on_timer(now);
            self.on_events(out, now);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let join = self.joins.iter().map(|(_, d)| *d).min();
        [
            join,
            self.client.next_deadline(),
            self.next_beat,
            self.members.next_expiry(),
            self.routing.next_deadline(),
            self.events_due,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// `false` on shutdown.
    fn on_mail(&mut self, msg: ClusterMsg, now: Instant) -> bool {
        let (c, s) = (&mut self.client, &*self.shared);
        match msg {
            ClusterMsg::KeyChanged(key) => self.routing.key_changed(c, s, key),
            ClusterMsg::Forward { key, token, psub, body, reply } => {
                let f = Forward { key, token, pool: psub, body, reply };
                self.routing.forward(c, s, f)
            }
            ClusterMsg::Where { key, of, reply } => self.routing.locate(c, s, key, of, reply),
            ClusterMsg::Rsub { key, token, reply } => self.routing.rsub(c, s, key, token, reply),
            ClusterMsg::Taken { id, taken } => self.routing.taken(c, s, id, taken),
            ClusterMsg::Keys { reply } => {
                let expected = self.members.beats().map(|b| b.node.clone()).collect();
                self.routing.scatter_keys(c, s, reply, expected)
            }
            ClusterMsg::Claim { key, token, conn } => {
                self.routing.claim(c, s, &key, token.as_deref(), conn)
            }
            ClusterMsg::Outcome { id, status, text } => self.routing.outcome(c, id, status, text),
            ClusterMsg::Events => {
                if self.events_due.is_none() {
                    self.events_due = Some(now + EVENTS_DELAY);
                }
            }
            ClusterMsg::Join { url, reply } => self.join(url, reply, now),
            ClusterMsg::Shutdown => return false,
        }
        true
    }

    /// `POST /join`: a node not in a cluster connects to `url` (the answer waits for the name
    /// check, at most `ESUB_CLUSTER_TIMEOUT_MS`); one in a cluster answers 200 if `url` is one
    /// of its servers (configured or announced), else 409.
    fn join(&mut self, url: ServerUrl, reply: ReplyTo, now: Instant) {
        let deadline = now + self.shared.config.cluster.timeout;
        if self.handle.active() {
            let same = |u: &ServerUrl| u.host.eq_ignore_ascii_case(&url.host) && u.port == url.port;
            if !self.client.known_urls().any(same) {
                return answer(&self.shared, reply, 409, "Already in a cluster");
            }
            if self.handle.joined() {
                return self.joined_answer(reply);
            }
            return self.joins.push((reply, deadline));
        }
        crate::info!("cluster join nats={}:{}", url.host, url.port);
        let registry = match self.poll.registry().try_clone() {
            Ok(r) => r,
            Err(e) => {
                crate::warn!("cluster join failed error={e}");
                return answer(&self.shared, reply, 502, "Cluster unreachable");
            }
        };
        let cfg = &self.shared.config.cluster;
        self.client = Client::new(vec![url], self.opts.clone(), registry, NATS);
        self.routing = Routing::new(self.subjects.clone(), &self.shared.node_name, cfg.timeout);
        self.phase = Phase::Unchecked;
        self.members.clear();
        self.by_join = true;
        self.handle.set_since_ms(0);
        // Old events are not news to the cluster.
        self.shared.announce.start_outbox();
        self.handle.set_active(true);
        // What this node holds already gets its subjects (sent once connected).
        for key in self.shared.registry.keys() {
            self.routing.key_changed(&mut self.client, &self.shared, Arc::from(key));
        }
        for key in self.shared.stored.keys() {
            self.routing.key_changed(&mut self.client, &self.shared, key);
        }
        self.joins.push((reply, deadline));
    }

    /// A `/join`'s 200: the members as `/members` shows them.
    fn joined_answer(&self, reply: ReplyTo) {
        let body = self.shared.members_json();
        self.shared.post(Msg::Json { reply, status: 200, body });
    }

    /// A `/join` that cannot be: the node is a single node again (its handle off, NATS closed).
    fn leave_cluster(&mut self) {
        self.client.close();
        self.routing.forget_all(&self.shared);
        self.handle.set_active(false);
        self.handle.set_joined(false);
        self.members.clear();
        self.publish_members();
        self.next_beat = None;
        self.phase = Phase::Unchecked;
    }

    /// `/join`s past their deadline: 502; a node that joined by `/join` and never got in
    /// leaves it.
    fn expire_joins(&mut self, now: Instant) {
        if self.joins.iter().all(|(_, d)| *d > now) {
            return;
        }
        let (late, waiting): (Vec<_>, Vec<_>) = self.joins.drain(..).partition(|(_, d)| *d <= now);
        self.joins = waiting;
        // Single again before anyone hears the answer.
        if self.by_join && self.joins.is_empty() && !self.handle.joined() {
            crate::warn!("cluster join gave up: NATS not reached in time");
            self.leave_cluster();
        }
        for (reply, _) in late {
            answer(&self.shared, reply, 502, "Cluster unreachable");
        }
    }

    /// Publishes this node's key events since the last time, one JSON object per line, in
    /// messages of at most `EVENTS_BATCH` bytes (none while not in the cluster).
    fn flush_events(&mut self) {
        self.events_due = None;
        self.shared.announce.take_outbox(&mut self.events);
        let joined = self.phase == Phase::Joined && self.client.is_connected();
        for (i, e) in self.events.iter().enumerate() {
            if !joined {
                break;
            }
            if !self.json.is_empty() {
                self.json.push(b'\n');
            }
            e.write_json(&mut self.json);
            if self.json.len() >= EVENTS_BATCH || i + 1 == self.events.len() {
                let r = self.client.publish(&self.subjects.events(), None, None, &self.json);
                if let Err(e) = r {
                    crate::debug!("cluster events not sent error={e:?}");
                }
                self.json.clear();
            }
        }
        self.events.clear();
    }

    /// Heartbeats when due, members gone silent, lingering subjects over.
    fn tick(&mut self, now: Instant) {
        if self.next_beat.is_some_and(|t| t <= now) {
            self.beat(now);
        }
        if self.events_due.is_some_and(|t| t <= now) {
            self.flush_events();
        }
        self.expire_joins(now);
        if !self.members.expire(now).is_empty() {
            self.publish_members();
        }
        self.routing.expire(&mut self.client, &self.shared, now);
    }

    fn beat(&mut self, now: Instant) {
        let beat = self.shared.beat();
        let _ = self.client.publish(&self.subjects.heartbeat(), None, None, &beat.to_json());
        self.next_beat = Some(now + self.shared.config.cluster.heartbeat);
    }

    fn publish_members(&self) {
        self.handle.set_others(self.members.beats().cloned().collect());
    }

    fn on_events(&mut self, events: Vec<Event>, now: Instant) {
        for e in events {
            match e {
                Event::Connected { addr, .. } => {
                    crate::info!("cluster connected nats={addr} tls={}", self.client.is_tls());
                    self.outage = Outage::Unreported;
                    self.on_connected(now);
                }
                Event::ConnectFailed { addr, reason } if reason.is_misconfiguration() => {
                    crate::warn!("cluster connect failed nats={addr:?} reason={reason}");
                }
                Event::ConnectFailed { addr, reason } if self.outage == Outage::Unreported => {
                    self.outage = Outage::Reported;
                    crate::warn!("cluster unreachable nats={addr:?} reason={reason} retrying=true");
                }
                Event::ConnectFailed { addr, reason } => {
                    crate::debug!("cluster connect failed nats={addr:?} reason={reason}");
                }
                Event::Disconnected(reason) => {
                    self.outage = Outage::Reported;
                    crate::warn!("cluster disconnected reason={reason}");
                    self.handle.set_joined(false);
                    self.next_beat = None;
                }
                Event::ServerError(text) => crate::warn!("cluster server error={text:?}"),
                Event::Msg(m) => self.on_msg(m, now),
                Event::Reply { token, result } => self.on_reply(token, result, now),
            }
        }
    }

    fn on_connected(&mut self, now: Instant) {
        match self.phase {
            Phase::Unchecked => {
                let subject = self.subjects.node(&self.shared.node_name);
                let timeout = self.shared.config.cluster.timeout;
                match self.client.request(&subject, None, &b""[..], timeout) {
                    Ok(t) => self.phase = Phase::Checking(t),
                    Err(e) => crate::warn!("cluster name check not sent error={e:?}"),
                }
            }
            Phase::Checking(_) => {}
            Phase::Joined => self.joined(now),
        }
    }

    /// In the cluster (again): announce this node at once, then every heartbeat.
    fn joined(&mut self, now: Instant) {
        if self.handle.since_ms() == 0 {
            self.handle.set_since_ms(unix_ms());
        }
        self.handle.set_joined(true);
        self.beat(now);
        for (reply, _) in std::mem::take(&mut self.joins) {
            self.joined_answer(reply);
        }
    }

    fn on_reply(
        &mut self,
        token: RequestToken,
        result: Result<Message, RequestError>,
        now: Instant,
    ) {
        if self.phase != Phase::Checking(token) {
            self.routing.on_reply(&mut self.client, &self.shared, token, result);
            return;
        }
        match result {
            Ok(_) if self.by_join => {
                crate::warn!("cluster join refused: node name in use");
                // Single again before anyone hears the answer.
                self.leave_cluster();
                for (reply, _) in std::mem::take(&mut self.joins) {
                    answer(&self.shared, reply, 409, "Node name in use");
                }
            }
            Ok(_) => {
                eprintln!(
                    "ERROR node name {:?} is in use by a live node (set ESUB_NODE_NAME)",
                    self.shared.node_name
                );
                std::process::exit(2);
            }
            // The connection went before an answer: ask again at the next one.
            Err(RequestError::Disconnected) => self.phase = Phase::Unchecked,
            Err(RequestError::NoResponders | RequestError::Timeout) => {
                self.phase = Phase::Joined;
                let c = &mut self.client;
                let subs = [
                    c.subscribe(&self.subjects.node(&self.shared.node_name), None),
                    c.subscribe(&self.subjects.heartbeat(), None),
                    c.subscribe(&self.subjects.leave(), None),
                    c.subscribe(&self.subjects.events(), None),
                ];
                if subs.iter().any(Result::is_err) || !self.routing.subscribe_fixed(c) {
                    crate::warn!("cluster subscriptions refused");
                }
                crate::info!("cluster joined node={}", self.shared.node_name);
                self.joined(now);
            }
        }
    }

    fn on_msg(&mut self, m: Message, now: Instant) {
        if m.subject == self.subjects.heartbeat() {
            let Some(beat) = Beat::parse(&m.payload) else { return };
            if beat.node == self.shared.node_name {
                return;
            }
            if self.members.heard(beat, now) {
                // A newcomer learns this node at once, not a heartbeat later.
                crate::info!("cluster member joined");
                self.beat(now);
            }
            self.publish_members();
        } else if m.subject == self.subjects.leave() {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
            if let Some(node) = v.get("node").and_then(|n| n.as_str())
                && self.members.left(node)
            {
                self.publish_members();
            }
        } else if m.subject == self.subjects.events() {
            // One event per line (a batch); a line that is not one is skipped.
            for line in m.payload.split(|&b| b == b'\n') {
                if let Some(event) = crate::announce::Event::parse(line) {
                    let woken = self.shared.announce.append(event);
                    self.shared.wake_listeners(woken);
                }
            }
        } else if m.subject == self.subjects.node(&self.shared.node_name) {
            if let Some(reply) = &m.reply {
                let addr = self.shared.advertise.clone();
                let _ = self.client.publish(reply, None, None, addr.as_bytes());
            }
        } else {
            self.routing.on_msg(&mut self.client, &self.shared, m);
        }
    }

    /// Shutdown: the leave message, then NATS closes (interest goes at once).
    fn leave(mut self) {
        if self.phase == Phase::Joined && self.client.is_connected() {
            self.flush_events();
            let body = serde_json::json!({ "node": self.shared.node_name }).to_string();
            let _ = self.client.publish(&self.subjects.leave(), None, None, body.as_bytes());
        }
        self.handle.set_joined(false);
        self.members.clear();
        self.client.close();
    }
}

fn answer(s: &Shared, reply: ReplyTo, status: u16, text: &'static str) {
    s.post(Msg::Answer { reply, status, text });
}
