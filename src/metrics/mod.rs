//! Metrics: each worker aggregates its own events (no lock on the request path) into DogStatsD
//! buckets, handed to the metrics thread every `ESUB_METRIC_INTERVAL_MS`, and into Prometheus
//! counters (per-worker atomics, summed by `GET /metrics`). Metric names live here.

pub mod prometheus;
pub mod statsd;

use std::collections::HashMap;
use std::net::{ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::server::Shared;
use prometheus::PromWorker;

/// The `route:` tag of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteTag {
    Info,
    Keys,
    Sub,
    Rep,
    Psub,
    Prep,
    Rsub,
    /// The topics half (API-topics 9); its consuming GETs count as `sub`.
    Pub,
    PubBatch,
    WsPub,
    WsSub,
    Ack,
    Man,
    Job,
    Bury,
}

impl RouteTag {
    pub const ALL: [RouteTag; 15] = [
        RouteTag::Info,
        RouteTag::Keys,
        RouteTag::Sub,
        RouteTag::Rep,
        RouteTag::Psub,
        RouteTag::Prep,
        RouteTag::Rsub,
        RouteTag::Pub,
        RouteTag::PubBatch,
        RouteTag::WsPub,
        RouteTag::WsSub,
        RouteTag::Ack,
        RouteTag::Man,
        RouteTag::Job,
        RouteTag::Bury,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RouteTag::Info => "info",
            RouteTag::Keys => "keys",
            RouteTag::Sub => "sub",
            RouteTag::Rep => "rep",
            RouteTag::Psub => "psub",
            RouteTag::Prep => "prep",
            RouteTag::Rsub => "rsub",
            RouteTag::Pub => "pub",
            RouteTag::PubBatch => "pub_batch",
            RouteTag::WsPub => "ws_pub",
            RouteTag::WsSub => "ws_sub",
            RouteTag::Ack => "ack",
            RouteTag::Man => "man",
            RouteTag::Job => "job",
            RouteTag::Bury => "bury",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Which family a bucket belongs to: requests, or a rep's way to its subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Series {
    /// `P.requests`, `P.duration`, `P.duration_max`.
    Requests,
    /// A rep written to a waiting sub: `P.sub_reply.*`, route tag `sub`.
    SubReply,
    /// A rep written to a psub member: `P.psub_reply.*`, route tag `psub`.
    PsubReply,
    /// A rep that came over `/prep`, written to its sub or member: `P.prep_message.*`.
    PrepMessage,
}

impl Series {
    pub const REPLIES: [Series; 3] = [Series::SubReply, Series::PsubReply, Series::PrepMessage];

    /// The name under the prefix that the three series hang from ("" for plain requests).
    pub fn stem(self) -> &'static str {
        match self {
            Series::Requests => "",
            Series::SubReply => "sub_reply.",
            Series::PsubReply => "psub_reply.",
            Series::PrepMessage => "prep_message.",
        }
    }

    pub fn route(self) -> RouteTag {
        match self {
            Series::SubReply => RouteTag::Sub,
            Series::PsubReply => RouteTag::Psub,
            Series::PrepMessage | Series::Requests => RouteTag::Prep,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Bucket {
    pub series: Series,
    pub route: RouteTag,
    pub key: Option<Arc<str>>,
    /// The topics half's `topic:` and `group:` tags (with `ESUB_TAG_KEYS`).
    pub topic: Option<(Arc<str>, Option<Arc<str>>)>,
    pub auth: bool,
    pub success: bool,
    pub confirmed: bool,
}

impl Bucket {
    /// Where `e` is counted; its key and topic only with `ESUB_TAG_KEYS` (`tag_keys`).
    pub fn of(e: &Event, tag_keys: bool) -> Bucket {
        Bucket {
            series: e.series,
            route: e.route,
            key: e.key.filter(|_| tag_keys).cloned(),
            topic: e.topic.filter(|_| tag_keys).cloned(),
            auth: e.auth,
            success: e.success,
            confirmed: e.confirmed,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Agg {
    pub count: u64,
    pub sum_us: u64,
    pub max_us: u64,
}

impl Agg {
    fn add(&mut self, us: u64) {
        self.count += 1;
        self.sum_us += us;
        self.max_us = self.max_us.max(us);
    }

    fn merge(&mut self, other: &Agg) {
        self.count += other.count;
        self.sum_us += other.sum_us;
        self.max_us = self.max_us.max(other.max_us);
    }
}

pub type Snapshot = HashMap<Bucket, Agg>;

/// One finished request or reply, as the code that saw it describes it.
pub struct Event<'a> {
    pub series: Series,
    pub route: RouteTag,
    pub key: Option<&'a Arc<str>>,
    /// A topics request's topic (raw name) and group.
    pub topic: Option<&'a (Arc<str>, Option<Arc<str>>)>,
    pub auth: bool,
    pub success: bool,
    pub confirmed: bool,
    pub took: Duration,
}

/// A worker's own metrics.
pub struct WorkerMetrics {
    /// `None` when statsd is off (unresolvable host): nothing is aggregated for it then.
    statsd: Option<Sender<Snapshot>>,
    buckets: Snapshot,
    /// The bucket of the latest requests, added up here until one lands in another bucket: a
    /// run of the same kind of request (the usual load) does not hash a bucket each.
    last: Option<(Bucket, Agg)>,
    pub prom: Arc<PromWorker>,
    pub tag_keys: bool,
    interval: Duration,
    pub next_flush: Instant,
}

impl WorkerMetrics {
    pub fn new(statsd: Option<Sender<Snapshot>>, prom: Arc<PromWorker>, config: &Config) -> Self {
        let interval = config.metric_interval;
        WorkerMetrics {
            statsd,
            buckets: HashMap::new(),
            last: None,
            prom,
            tag_keys: config.tag_keys,
            interval,
            next_flush: Instant::now() + interval,
        }
    }

    pub fn record(&mut self, e: Event) {
        let us = u64::try_from(e.took.as_micros()).unwrap_or(u64::MAX);
        self.prom.record(&e, us);
        if self.statsd.is_none() {
            return;
        }
        let bucket = Bucket::of(&e, self.tag_keys);
        match &mut self.last {
            Some((b, agg)) if *b == bucket => agg.add(us),
            last => {
                let mut agg = Agg::default();
                agg.add(us);
                if let Some((b, was)) = last.replace((bucket, agg)) {
                    self.buckets.entry(b).or_default().merge(&was);
                }
            }
        }
    }

    /// Hands the buckets to the metrics thread when the interval has passed.
    pub fn maybe_flush(&mut self, now: Instant) {
        if now < self.next_flush {
            return;
        }
        self.next_flush = now + self.interval;
        self.flush();
    }

    pub fn flush(&mut self) {
        if let Some((b, agg)) = self.last.take() {
            self.buckets.entry(b).or_default().merge(&agg);
        }
        if let Some(tx) = &self.statsd
            && !self.buckets.is_empty()
        {
            // The thread may have exited at shutdown; the figures go with it.
            let _ = tx.send(std::mem::take(&mut self.buckets));
        }
    }
}

/// Where statsd goes, or why it does not.
pub fn statsd_target(config: &Config) -> Option<std::net::SocketAddr> {
    let target = (config.statsd_host.as_str(), config.statsd_port);
    match target.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(addr)) => Some(addr),
        _ => {
            crate::warn!(
                "statsd disabled: cannot resolve DATADOG_SERVICE_HOST={}",
                config.statsd_host
            );
            None
        }
    }
}

/// The global tags, in their order: `environment:`, `esub_ip:`, `esub_node:`.
pub fn global_tags(config: &Config, ip: &str, node: &str) -> Vec<String> {
    let mut tags = Vec::new();
    if let Some(env) = &config.environment {
        tags.push(statsd::sanitize_tag(&format!("environment:{env}")));
    }
    tags.push(statsd::sanitize_tag(&format!("esub_ip:{ip}")));
    tags.push(statsd::sanitize_tag(&format!("esub_node:{node}")));
    tags
}

/// Every line of one flush: three per bucket, then the gauges.
pub fn lines(
    prefix: &str,
    acc: &Snapshot,
    gauges: &[(&str, u64)],
    global: &[String],
) -> Vec<Vec<u8>> {
    let prefix = statsd::sanitize(prefix);
    let mut out = Vec::with_capacity(acc.len() * 3 + gauges.len());
    let mut keyed: Vec<(&Bucket, &Agg)> = acc.iter().filter(|(_, a)| a.count > 0).collect();
    // A stable order makes packets comparable between flushes (and testable).
    keyed.sort_by_key(|(b, _)| {
        let t = b.topic.clone();
        (b.series as u8, b.route.index(), b.key.clone(), t, b.auth, b.success, b.confirmed)
    });
    for (b, a) in keyed {
        let key_tag = b.key.as_ref().map(|k| statsd::sanitize_tag(&format!("key:{k}")));
        let topic_tag = b.topic.as_ref().map(|(t, _)| statsd::sanitize_tag(&format!("topic:{t}")));
        let group_tag = b
            .topic
            .as_ref()
            .and_then(|(_, g)| g.as_ref())
            .map(|g| statsd::sanitize_tag(&format!("group:{g}")));
        let route = format!("route:{}", b.route.name());
        let mut tags: Vec<&str> = vec![&route];
        for tag in [&key_tag, &topic_tag, &group_tag].into_iter().flatten() {
            tags.push(tag);
        }
        if b.auth {
            tags.push("auth:true");
        }
        if b.confirmed {
            tags.push("confirmed:true");
        }
        tags.push(if b.success { "success:true" } else { "success:false" });
        tags.extend(global.iter().map(String::as_str));
        let stem = b.series.stem();
        let avg_ms = a.sum_us as f64 / a.count as f64 / 1000.0;
        let max_ms = a.max_us as f64 / 1000.0;
        let mut l = Vec::new();
        statsd::line(&mut l, &format!("{prefix}.{stem}requests"), a.count, "c", &tags);
        out.push(std::mem::take(&mut l));
        statsd::line(
            &mut l,
            &format!("{prefix}.{stem}duration"),
            format!("{avg_ms:.3}"),
            "ms",
            &tags,
        );
        out.push(std::mem::take(&mut l));
        statsd::line(
            &mut l,
            &format!("{prefix}.{stem}duration_max"),
            format!("{max_ms:.3}"),
            "ms",
            &tags,
        );
        out.push(l);
    }
    let global: Vec<&str> = global.iter().map(String::as_str).collect();
    for (name, value) in gauges {
        let mut l = Vec::new();
        statsd::line(&mut l, &format!("{prefix}.{name}"), value, "g", &global);
        out.push(l);
    }
    out
}

/// The metrics thread: merges the workers' buckets and sends them every interval; ends (after
/// a last flush) when every worker has dropped its sender.
pub fn run(shared: Arc<Shared>, rx: Receiver<Snapshot>, target: std::net::SocketAddr) {
    let config = &shared.config;
    let bind = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = match UdpSocket::bind(bind).and_then(|s| s.connect(target).map(|_| s)) {
        Ok(s) => s,
        Err(e) => {
            crate::warn!("statsd disabled: {e}");
            return;
        }
    };
    let _ = socket.set_nonblocking(true);
    let global = global_tags(config, &shared.ip, &shared.name);
    let mut acc = Snapshot::new();
    // The topics counters as last sent (statsd counters are deltas).
    let mut topic_sent = [0u64; 4];
    let mut next = Instant::now() + config.metric_interval;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        let last = match rx.recv_timeout(wait) {
            Ok(snap) => {
                for (b, a) in snap {
                    acc.entry(b).or_default().merge(&a);
                }
                continue;
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        next = Instant::now() + config.metric_interval;
        let dropped_before = shared.statsd_dropped.load(Ordering::Relaxed);
        let mut gauges = vec![
            ("sub.waiting", shared.registry.waiting() as u64),
            ("rep.waiting", shared.prep_sockets.load(Ordering::Relaxed) as u64),
        ];
        let mut packer = statsd::Packer::default();
        if let Some(hub) = &shared.hub {
            let (redelivered, skipped, instances) = hub.tallies();
            let now = [
                hub.msgs_in.load(Ordering::Relaxed),
                hub.msgs_out.load(Ordering::Relaxed),
                redelivered,
                skipped,
            ];
            let names =
                ["topic.msgs_in", "topic.msgs_out", "topic.redelivered", "topic.reset_skipped"];
            let prefix = statsd::sanitize(&config.metric_prefix);
            let tags: Vec<&str> = global.iter().map(String::as_str).collect();
            for i in 0..4 {
                let delta = now[i].saturating_sub(topic_sent[i]);
                topic_sent[i] = now[i];
                if delta > 0 {
                    let mut l = Vec::new();
                    statsd::line(&mut l, &format!("{prefix}.{}", names[i]), delta, "c", &tags);
                    packer.push(&l);
                }
            }
            gauges.push(("topic.instances", instances));
            gauges.push(("topic.jobs", hub.pending_jobs()));
        }
        for l in lines(&config.metric_prefix, &acc, &gauges, &global) {
            packer.push(&l);
        }
        acc.clear();
        let (datagrams, oversized) = packer.finish();
        let mut dropped = oversized;
        for d in &datagrams {
            crate::verbose!("statsd {}", String::from_utf8_lossy(d).replace('\n', " ; "));
            if socket.send(d).is_err() {
                dropped += 1;
            }
        }
        if dropped > 0 {
            shared.statsd_dropped.fetch_add(dropped, Ordering::Relaxed);
            crate::debug!("statsd dropped={dropped} total={}", dropped_before + dropped);
        }
        if last {
            return;
        }
    }
}

/// A request or reply event without key, topic or auth (the metrics tests').
#[cfg(test)]
pub(crate) fn test_event(
    series: Series,
    route: RouteTag,
    success: bool,
    us: u64,
) -> Event<'static> {
    Event {
        series,
        route,
        key: None,
        topic: None,
        auth: false,
        success,
        confirmed: false,
        took: Duration::from_micros(us),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs of one bucket are added up apart and merged when another bucket comes or at the
    /// flush: the figures are those of adding each request to the map.
    #[test]
    fn runs_of_a_bucket_add_up_as_each_request_would() {
        let config = Config::from_lookup(|_| None).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut m = WorkerMetrics::new(Some(tx), Arc::new(PromWorker::default()), &config);
        let event =
            |route, success, ms: u64| test_event(Series::Requests, route, success, ms * 1000);
        for (route, success, ms) in [
            (RouteTag::Pub, true, 1),
            (RouteTag::Pub, true, 5),
            (RouteTag::Sub, true, 2),
            (RouteTag::Pub, true, 3),
            (RouteTag::Pub, false, 4),
            (RouteTag::Pub, true, 1),
        ] {
            m.record(event(route, success, ms));
        }
        m.flush();
        let got = rx.try_recv().unwrap();
        let agg = |route, success| got.get(&Bucket::of(&event(route, success, 0), false)).copied();
        assert_eq!(got.len(), 3);
        assert_eq!(agg(RouteTag::Pub, true), Some(Agg { count: 4, sum_us: 10_000, max_us: 5_000 }));
        assert_eq!(agg(RouteTag::Sub, true), Some(Agg { count: 1, sum_us: 2_000, max_us: 2_000 }));
        assert_eq!(agg(RouteTag::Pub, false), Some(Agg { count: 1, sum_us: 4_000, max_us: 4_000 }));
        // Nothing since: nothing more is sent.
        m.flush();
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn topic_and_group_tags() {
        let mut acc = Snapshot::new();
        let b = Bucket {
            series: Series::Requests,
            route: RouteTag::Sub,
            key: None,
            topic: Some((Arc::from("app1.orders.v1"), Some(Arc::from("billing")))),
            auth: true,
            success: true,
            confirmed: false,
        };
        acc.insert(b, Agg { count: 2, sum_us: 2_000, max_us: 1_500 });
        let got: Vec<String> = lines("esub", &acc, &[], &[])
            .into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect();
        assert_eq!(
            got[0],
            "esub.requests:2|c|#route:sub,topic:app1.orders.v1,group:billing,auth:true,success:true"
        );
    }

    #[test]
    fn flush_lines_with_tags_in_order() {
        let mut acc = Snapshot::new();
        let b = Bucket {
            series: Series::Requests,
            route: RouteTag::Rep,
            key: Some(Arc::from("k:1")),
            topic: None,
            auth: true,
            success: true,
            confirmed: true,
        };
        acc.insert(b, Agg { count: 4, sum_us: 10_000, max_us: 7_000 });
        let reply = Bucket {
            series: Series::SubReply,
            route: RouteTag::Sub,
            key: None,
            topic: None,
            auth: false,
            success: false,
            confirmed: false,
        };
        acc.insert(reply, Agg { count: 1, sum_us: 250, max_us: 250 });
        let global =
            vec!["environment:prod".to_string(), "esub_ip:10.0.0.1".into(), "esub_node:n1".into()];
        let got: Vec<String> = lines("esub", &acc, &[("sub.waiting", 3)], &global)
            .into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect();
        let g = "environment:prod,esub_ip:10.0.0.1,esub_node:n1";
        let t = format!("route:rep,key:k_1,auth:true,confirmed:true,success:true,{g}");
        let r = format!("route:sub,success:false,{g}");
        assert_eq!(
            got,
            vec![
                format!("esub.requests:4|c|#{t}"),
                format!("esub.duration:2.500|ms|#{t}"),
                format!("esub.duration_max:7.000|ms|#{t}"),
                format!("esub.sub_reply.requests:1|c|#{r}"),
                format!("esub.sub_reply.duration:0.250|ms|#{r}"),
                format!("esub.sub_reply.duration_max:0.250|ms|#{r}"),
                format!("esub.sub.waiting:3|g|#{g}"),
            ]
        );
    }
}
