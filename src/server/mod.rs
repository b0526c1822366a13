//! The server: shared state, the per-worker context, and start-up (bind, spawn, drain, join).

pub mod listener;
pub mod mailbox;
pub mod timer;
pub mod worker;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::announce::{Feed, Kind};
use crate::cluster::handle::{CLUSTER_WORKER, ClusterHandle, ClusterMsg};
use crate::config::Config;
use crate::conn::buffer::READ_CHUNK;
use crate::metrics::prometheus::{self, PromWorker};
use crate::metrics::{self, WorkerMetrics};
use crate::registry::{Registry, Watch};
use mailbox::{ConnId, Mailbox, Msg};
use timer::TimerWheel;

/// What every worker shares.
pub struct Shared {
    pub config: Config,
    pub registry: Registry,
    pub mailboxes: Vec<Mailbox>,
    /// Open client connections in the whole process (`ESUB_MAX_CONNECTIONS`).
    pub open: AtomicUsize,
    pub started: Instant,
    /// Unix ms at start-up (a single node's `since_ms`).
    pub started_ms: u64,
    pub name: String,
    pub ip: String,
    pub port: u16,
    /// Each worker's Prometheus counters, summed by `/metrics`.
    pub prom: Vec<Arc<PromWorker>>,
    pub statsd_dropped: AtomicU64,
    /// Open `/prep` websockets (the `rep.waiting` gauge).
    pub prep_sockets: AtomicUsize,
    /// The store thread's queue (`None` with `ESUB_STORE=off`).
    pub store: Option<std::sync::mpsc::Sender<crate::store::Req>>,
    /// The topics half (`None` with `ESUB_TOPICS=off`).
    pub hub: Option<crate::topics::hub::Hub>,
    /// This node's name among the cluster's (`ESUB_NODE_NAME`, else host name:port).
    pub node_name: String,
    /// The `host:port` other nodes and clients reach this node at (`ESUB_ADVERTISE`).
    pub advertise: String,
    /// The cluster thread's handle: set at start-up with `ESUB_CLUSTER`, or by the first
    /// `/join` (read it through `cluster()`, which hides it while cluster mode is off).
    pub cluster_cell: std::sync::OnceLock<Arc<ClusterHandle>>,
    /// The cluster thread, joined at shutdown.
    pub cluster_thread: Mutex<Option<JoinHandle<()>>>,
    /// Which keys have stored reps (kept by the store thread; empty with `ESUB_STORE=off`).
    pub stored: crate::store::StoredKeys,
    /// The announce feed (`GET /announce`): this node's key events and other nodes'.
    pub announce: Arc<Feed>,
}

impl Shared {
    /// The `/metrics` text.
    pub fn prometheus(&self, now: Instant) -> String {
        let gauges = prometheus::Gauges {
            sub_waiting: self.registry.waiting() as u64,
            rep_waiting: self.prep_sockets.load(Ordering::Relaxed) as u64,
            connections: self.open.load(Ordering::Relaxed) as u64,
            statsd_dropped: self.statsd_dropped.load(Ordering::Relaxed),
            uptime_s: now.saturating_duration_since(self.started).as_secs(),
            topics: self.hub.as_ref().map(|h| {
                let (red, skip, inst) = h.tallies();
                let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
                [load(&h.msgs_in), load(&h.msgs_out), red, skip, inst, h.pending_jobs()]
            }),
        };
        prometheus::render(&self.config.metric_prefix, &self.prom, &gauges)
    }

    /// The `/info` object; `name` and `ip` come first, as clients expect. Cluster mode adds
    /// `node` and `cluster` (`connecting` or `connected`).
    pub fn info_json(&self, now: Instant) -> String {
        let cluster = match self.cluster() {
            Some(c) => format!(
                ",\"node\":{},\"cluster\":\"{}\"",
                serde_json::Value::from(self.node_name.as_str()),
                if c.joined() { "connected" } else { "connecting" }
            ),
            None => String::new(),
        };
        format!(
            "{{\"name\":{},\"ip\":{},\"version\":{},\"port\":{},\"workers\":{},\"uptime_s\":{}{cluster}}}",
            serde_json::Value::from(self.name.as_str()),
            serde_json::Value::from(self.ip.as_str()),
            serde_json::Value::from(env!("CARGO_PKG_VERSION")),
            self.port,
            self.config.workers,
            now.saturating_duration_since(self.started).as_secs()
        )
    }

    /// This node's heartbeat (and `/members` row).
    pub fn beat(&self) -> crate::cluster::members::Beat {
        let (subs, pools) = self.registry.counts();
        let since_ms = match self.cluster() {
            Some(c) => c.since_ms(),
            None => self.started_ms,
        };
        crate::cluster::members::Beat {
            node: self.node_name.clone(),
            addr: self.advertise.clone(),
            since_ms,
            subs: subs as u64,
            pools: pools as u64,
            stored: self.stored.count(),
            heartbeat_ms: self.config.cluster.heartbeat.as_millis() as u64,
        }
    }

    /// `GET /members`: every live node, this one included, sorted by name.
    pub fn members_json(&self) -> Vec<u8> {
        let mut beats = self.cluster().map(|c| c.others()).unwrap_or_default();
        beats.push(self.beat());
        beats.sort_by(|a, b| a.node.cmp(&b.node));
        let rows: Vec<serde_json::Value> = beats.iter().map(|b| b.row()).collect();
        serde_json::to_vec(&rows).unwrap_or_default()
    }

    /// `GET /keys` in cluster mode: `{node: [keys sorted] | null}`, nodes sorted, this node's
    /// own keys included.
    pub fn keys_map_json(
        &self,
        others: impl Iterator<Item = (String, Option<Vec<String>>)>,
    ) -> Vec<u8> {
        let mut map: std::collections::BTreeMap<String, Option<Vec<String>>> = others.collect();
        map.insert(self.node_name.clone(), Some(self.registry.keys()));
        serde_json::to_vec(&map).unwrap_or_default()
    }

    /// A key event of this node: into the feed, its waiting listeners woken; in cluster mode
    /// the cluster thread publishes it on `C.ev`.
    pub fn announce(&self, key: &Arc<str>, kind: Kind) {
        let (woken, first) = self.announce.record(key, kind);
        self.wake_listeners(woken);
        if let (true, Some(cluster)) = (first, self.cluster()) {
            cluster.post(ClusterMsg::Events);
        }
    }

    /// Wakes announce listeners through their workers' mailboxes.
    pub fn wake_listeners(&self, woken: Vec<ConnId>) {
        for to in woken {
            self.mailboxes[to.worker].post(Msg::Announce { to });
        }
    }

    /// The cluster thread, while cluster mode is on.
    pub fn cluster(&self) -> Option<&Arc<ClusterHandle>> {
        self.cluster_cell.get().filter(|c| c.active())
    }

    /// The cluster thread, started now (inactive, without NATS) if there is none yet: the
    /// first `/join` of a node started without `ESUB_CLUSTER`.
    pub fn cluster_or_start(self: &Arc<Self>) -> std::io::Result<Arc<ClusterHandle>> {
        let mut thread = self.cluster_thread.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = self.cluster_cell.get() {
            return Ok(c.clone());
        }
        let poll = mio::Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), crate::cluster::node::WAKER)?;
        let handle = Arc::new(ClusterHandle::new(waker));
        let _ = self.cluster_cell.set(handle.clone());
        let node = crate::cluster::node::Node::new(poll, self.clone())?;
        let t =
            std::thread::Builder::new().name("esub-cluster".into()).spawn(move || node.run())?;
        *thread = Some(t);
        Ok(handle)
    }

    /// Posts `msg` to the worker (or the cluster thread) it is for, from any thread.
    pub fn post(&self, msg: Msg) {
        match msg.target() {
            Some(to) if to.worker == CLUSTER_WORKER => self.to_cluster(msg),
            Some(to) => self.mailboxes[to.worker].post(msg),
            None => {}
        }
    }

    /// A message for the cluster thread from a worker: the outcome of a forwarded rep's
    /// delivery (the `ReplyTo` names the cluster thread and the delivery).
    pub fn to_cluster(&self, msg: Msg) {
        let Some(cluster) = self.cluster() else { return };
        if let Msg::Taken { reply, taken } = msg {
            // The store's answer to a `/rsub` another node forwarded here.
            return cluster.post(ClusterMsg::Taken { id: reply.conn.token, taken });
        }
        let (id, status, text) = match msg {
            Msg::Delivered { reply, .. } => (reply.conn.token, 200, "OK"),
            Msg::Failed { reply, why, .. } => (reply.conn.token, 404, why.text()),
            _ => return,
        };
        cluster.post(ClusterMsg::Outcome { id, status, text });
    }
}

/// Read buffers a worker keeps for reuse: enough for its busy connections at once, few enough
/// (4 MiB) that an idle worker holds little.
const POOLED_BUFFERS: usize = 256;

/// A worker's own context, handed to every connection step beside the connection itself.
pub struct Ctx {
    pub worker: usize,
    pub shared: Arc<Shared>,
    /// The time at the last poll wake-up: one clock read per batch of events.
    pub now: Instant,
    /// The wall clock at the same wake-up, unix milliseconds: a topic message's append time
    /// (one clock read per batch rather than per pub).
    pub wall_ms: u64,
    /// Messages for connections of this same worker, handled before the next poll.
    pub local: VecDeque<Msg>,
    pub timers: TimerWheel,
    pub buffers: Vec<Vec<u8>>,
    pub draining: bool,
    pub metrics: WorkerMetrics,
}

impl Ctx {
    /// A one-worker context with no server around it, for driving `Conn`s over in-memory
    /// streams (the fuzz target of a whole connection, unit tests). Messages to this worker
    /// queue in `local`; the returned `Poll` must outlive the context for wake-ups to land.
    pub fn standalone(config: Config) -> io::Result<(Ctx, mio::Poll)> {
        let poll = mio::Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), worker::WAKER)?;
        let now = Instant::now();
        let prom = Arc::new(PromWorker::default());
        let metrics = WorkerMetrics::new(None, prom.clone(), &config);
        let shared = Arc::new(Shared {
            name: "standalone".into(),
            ip: "127.0.0.1".into(),
            port: 0,
            prom: vec![prom],
            statsd_dropped: AtomicU64::new(0),
            prep_sockets: AtomicUsize::new(0),
            store: None,
            hub: None,
            node_name: "standalone".into(),
            advertise: "127.0.0.1:0".into(),
            cluster_cell: Default::default(),
            cluster_thread: Mutex::new(None),
            stored: Default::default(),
            announce: Arc::new(Feed::new("standalone")),
            started_ms: unix_ms(),
            config,
            registry: Registry::default(),
            mailboxes: vec![Mailbox::new(waker)],
            open: AtomicUsize::new(0),
            started: now,
        });
        Ok((Ctx::new(0, shared, metrics), poll))
    }

    /// A worker's context, fresh: no messages, no timers, no pooled buffers.
    pub fn new(worker: usize, shared: Arc<Shared>, metrics: WorkerMetrics) -> Ctx {
        let now = Instant::now();
        Ctx {
            worker,
            shared,
            now,
            wall_ms: unix_ms(),
            local: VecDeque::new(),
            timers: TimerWheel::new(now),
            buffers: Vec::new(),
            draining: false,
            metrics,
        }
    }

    /// Reads both clocks: at every poll wake-up.
    pub fn tick(&mut self) {
        self.now = Instant::now();
        self.wall_ms = unix_ms();
    }

    /// Sends a message to the worker that owns its target (this one: no lock, no wake-up), or
    /// to the cluster thread when it waits for a delivery's outcome.
    pub fn post(&mut self, msg: Msg) {
        match msg.target() {
            Some(to) if to.worker == self.worker => self.local.push_back(msg),
            Some(to) if to.worker == CLUSTER_WORKER => self.shared.to_cluster(msg),
            Some(to) => self.shared.mailboxes[to.worker].post(msg),
            None => {}
        }
    }

    pub fn take_buffer(&mut self) -> Vec<u8> {
        self.buffers.pop().unwrap_or_else(|| vec![0; READ_CHUNK])
    }

    pub fn give_buffer(&mut self, buf: Vec<u8>) {
        // Buffers that grew for a big head go back to the allocator.
        if self.buffers.len() < POOLED_BUFFERS && buf.len() == READ_CHUNK {
            self.buffers.push(buf);
        }
    }
}

/// How the topics store thread publishes a fired job: like a pub, through the hub's offset
/// assignment; nothing fires once the drain began.
fn on_fire(s: Arc<Shared>) -> crate::topics::scheduler::OnFire {
    use crate::topics::scheduler::Fired;
    Box::new(move |topic: &str, jobs, sink| {
        let Some(hub) = &s.hub else { return Fired::NoTopic };
        if hub.draining() {
            return Fired::Draining;
        }
        let Some(topic) = hub.get(topic) else { return Fired::NoTopic };
        hub.publish_jobs(&s, &topic, jobs, sink);
        Fired::Queued
    })
}

/// What the registry tells of a key's holders: the cluster thread (re)subscribes its subjects
/// on every change; the announce feed records appearances and departures.
fn watch(shared: std::sync::Weak<Shared>) -> Watch {
    Box::new(move |key: &Arc<str>, change, missing| {
        let kind = Kind::of(change);
        if !missing && kind.is_none() {
            return;
        }
        let Some(s) = shared.upgrade() else { return };
        if let (true, Some(c)) = (missing, s.cluster()) {
            c.post(ClusterMsg::KeyChanged(key.clone()));
        }
        if let Some(kind) = kind {
            s.announce(key, kind);
        }
    })
}

/// A running server: its address and its worker threads.
pub struct Server {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    statsd: Option<JoinHandle<()>>,
    store: Option<JoinHandle<()>>,
    topics: Option<JoinHandle<()>>,
}

/// The opened topics half, ready for its thread: `Hub::open`'s result.
pub type TopicsOpened = (
    crate::topics::hub::Hub,
    crate::topics::engine::TopicEngine,
    Arc<crate::topics::engine::Inbox>,
);

impl Server {
    /// Binds one listener per worker and starts the workers.
    /// `engine` is the opened store (`None` with `ESUB_STORE=off`).
    /// `topics` is the opened topics half (`None` with `ESUB_TOPICS=off`).
    pub fn start(
        config: Config,
        engine: Option<crate::store::Engine>,
        topics: Option<TopicsOpened>,
    ) -> io::Result<Server> {
        let mut listeners = Vec::with_capacity(config.workers);
        let mut addr = SocketAddr::new(config.bind, config.port);
        for _ in 0..config.workers {
            let l = listener::bind(addr)?;
            // Port 0: the first bind picks the port, the others join it.
            addr = l.local_addr()?;
            listeners.push(l);
        }
        let mut polls = Vec::with_capacity(config.workers);
        let mut mailboxes = Vec::with_capacity(config.workers);
        for _ in 0..config.workers {
            let poll = mio::Poll::new()?;
            let waker = mio::Waker::new(poll.registry(), worker::WAKER)?;
            mailboxes.push(Mailbox::new(waker));
            polls.push(poll);
        }
        let prom: Vec<Arc<PromWorker>> = (0..config.workers).map(|_| Arc::default()).collect();
        let target = metrics::statsd_target(&config);
        let (statsd_tx, statsd_rx) = std::sync::mpsc::channel();
        let (store_tx, store_rx) = std::sync::mpsc::channel();
        let (hub, topic_engine) = match topics {
            Some((hub, engine, rx)) => (Some(hub), Some((engine, rx))),
            None => (None, None),
        };
        // Cluster mode: the cluster thread's poll first, for the waker the registry posts to.
        let (cluster_poll, cluster) = if config.cluster.enabled() {
            let poll = mio::Poll::new()?;
            let waker = mio::Waker::new(poll.registry(), crate::cluster::node::WAKER)?;
            (Some(poll), Some(Arc::new(ClusterHandle::new(waker))))
        } else {
            (None, None)
        };
        let ip = config.node_ip.clone().unwrap_or_else(|| crate::node::first_ipv4().to_string());
        let host = crate::node::host_name();
        let node_name =
            config.cluster.node_name.clone().unwrap_or_else(|| format!("{host}:{}", addr.port()));
        let advertise =
            config.cluster.advertise.clone().unwrap_or_else(|| format!("{ip}:{}", addr.port()));
        // The registry's watch reaches the feed through the `Shared` that owns both.
        let shared = Arc::new_cyclic(|weak: &std::sync::Weak<Shared>| Shared {
            registry: Registry::watched(watch(weak.clone())),
            announce: Arc::new(match &cluster {
                Some(_) => Feed::for_cluster(&node_name),
                None => Feed::new(&node_name),
            }),
            node_name,
            advertise,
            cluster_cell: cluster.map(std::sync::OnceLock::from).unwrap_or_default(),
            cluster_thread: Mutex::new(None),
            stored: Default::default(),
            started_ms: unix_ms(),
            hub,
            prom: prom.clone(),
            statsd_dropped: AtomicU64::new(0),
            prep_sockets: AtomicUsize::new(0),
            store: engine.as_ref().map(|_| store_tx),
            name: host,
            ip,
            port: addr.port(),
            config,
            mailboxes,
            open: AtomicUsize::new(0),
            started: Instant::now(),
        });
        let statsd = match target {
            Some(target) => {
                let s = shared.clone();
                let t = std::thread::Builder::new()
                    .name("esub-statsd".into())
                    .spawn(move || metrics::run(s, statsd_rx, target))?;
                Some(t)
            }
            None => None,
        };
        let store = match engine {
            Some(engine) => {
                let s = shared.clone();
                let t = std::thread::Builder::new()
                    .name("esub-store".into())
                    .spawn(move || engine.run(s, store_rx))?;
                Some(t)
            }
            None => None,
        };
        let topics = match topic_engine {
            Some((mut engine, rx)) => {
                engine.set_on_fire(on_fire(shared.clone()));
                let s = shared.clone();
                let on_retention = Box::new(move |topic: &str, partition: u32, oldest: i64| {
                    if let Some(hub) = &s.hub {
                        hub.retained(topic, partition, oldest);
                    }
                });
                let t = std::thread::Builder::new()
                    .name("esub-topics".into())
                    .spawn(move || engine.run(rx, on_retention))?;
                Some(t)
            }
            None => None,
        };
        let mut threads = Vec::with_capacity(polls.len());
        for (i, (poll, l)) in polls.into_iter().zip(listeners).enumerate() {
            let sender = statsd.as_ref().map(|_| statsd_tx.clone());
            let m = WorkerMetrics::new(sender, prom[i].clone(), &shared.config);
            let l = mio::net::TcpListener::from_std(l);
            let w = worker::Worker::new(i, poll, l, shared.clone(), m)?;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("esub-worker-{i}"))
                    .spawn(move || w.run())?,
            );
        }
        drop(statsd_tx);
        if let Some(poll) = cluster_poll {
            let node = crate::cluster::node::Node::new(poll, shared.clone())?;
            let t = std::thread::Builder::new()
                .name("esub-cluster".into())
                .spawn(move || node.run())?;
            *shared.cluster_thread.lock().unwrap_or_else(PoisonError::into_inner) = Some(t);
        }
        Ok(Server { addr, shared, threads, statsd, store, topics })
    }

    /// Asks every worker to drain and waits for them (each stops by `ESUB_DRAIN_MS`).
    pub fn shutdown(self) {
        // The leave message goes first and NATS closes: other nodes stop sending here at once.
        let thread =
            self.shared.cluster_thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let (Some(c), Some(t)) = (self.shared.cluster_cell.get(), thread) {
            c.post(ClusterMsg::Shutdown);
            let _ = t.join();
        }
        // No job fires from now on (API-topics.md section 9).
        if let Some(hub) = &self.shared.hub {
            hub.begin_drain();
        }
        for m in &self.shared.mailboxes {
            m.post(Msg::Drain);
        }
        for t in self.threads {
            let _ = t.join();
        }
        // Every rep is answered: the store syncs what it holds and stops.
        if let (Some(tx), Some(t)) = (&self.shared.store, self.store) {
            let _ = tx.send(crate::store::Req::Shutdown);
            let _ = t.join();
        }
        // Pubs and acks already read were answered; the topics store syncs and stops.
        if let (Some(hub), Some(t)) = (&self.shared.hub, self.topics) {
            hub.send_now(crate::topics::engine::TReq::Shutdown);
            let _ = t.join();
        }
        // The workers' senders are gone with them: the metrics thread flushes once more and ends.
        if let Some(t) = self.statsd {
            let _ = t.join();
        }
    }
}

/// The wall clock in unix milliseconds (0 before 1970): the one helper every module uses.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
