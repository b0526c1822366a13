//! The server: shared state, the per-worker context, and start-up (bind, spawn, drain, join).

pub mod listener;
pub mod mailbox;
pub mod timer;
pub mod worker;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::config::Config;
use crate::conn::buffer::READ_CHUNK;
use crate::metrics::prometheus::{self, PromWorker};
use crate::metrics::{self, WorkerMetrics};
use crate::registry::Registry;
use mailbox::{Mailbox, Msg};
use timer::TimerWheel;

/// What every worker shares.
pub struct Shared {
    pub config: Config,
    pub registry: Registry,
    pub mailboxes: Vec<Mailbox>,
    /// Open client connections in the whole process (`ESUB_MAX_CONNECTIONS`).
    pub open: AtomicUsize,
    pub started: Instant,
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

    /// The `/info` object; `name` and `ip` come first, as clients expect.
    pub fn info_json(&self, now: Instant) -> String {
        format!(
            "{{\"name\":{},\"ip\":{},\"version\":{},\"port\":{},\"workers\":{},\"uptime_s\":{}}}",
            serde_json::Value::from(self.name.as_str()),
            serde_json::Value::from(self.ip.as_str()),
            serde_json::Value::from(env!("CARGO_PKG_VERSION")),
            self.port,
            self.config.workers,
            now.saturating_duration_since(self.started).as_secs()
        )
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
            local: VecDeque::new(),
            timers: TimerWheel::new(now),
            buffers: Vec::new(),
            draining: false,
            metrics,
        }
    }

    /// Sends a message to the worker that owns its target (this one: no lock, no wake-up).
    pub fn post(&mut self, msg: Msg) {
        match msg.target() {
            Some(to) if to.worker == self.worker => self.local.push_back(msg),
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
        let shared = Arc::new(Shared {
            hub,
            prom: prom.clone(),
            statsd_dropped: AtomicU64::new(0),
            prep_sockets: AtomicUsize::new(0),
            store: engine.as_ref().map(|_| store_tx),
            name: crate::node::host_name(),
            ip: config.node_ip.clone().unwrap_or_else(|| crate::node::first_ipv4().to_string()),
            port: addr.port(),
            config,
            registry: Registry::default(),
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
        Ok(Server { addr, shared, threads, statsd, store, topics })
    }

    /// Asks every worker to drain and waits for them (each stops by `ESUB_DRAIN_MS`).
    pub fn shutdown(self) {
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
