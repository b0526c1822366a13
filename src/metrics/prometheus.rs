//! `GET /metrics`: per-worker atomic counters (a relaxed add on the worker's own cache lines per
//! event), summed and rendered in the Prometheus text format on request.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Event, RouteTag, Series};

/// Latency bucket bounds in microseconds: 100 µs to 10 s, the range a relay's answers live in.
const BOUNDS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    2_500_000, 10_000_000,
];
/// Histograms: one per route, then one per reply series.
const HISTS: usize = RouteTag::ALL.len() + Series::REPLIES.len();
/// Request counters per route: success × auth × confirmed.
const FLAGS: usize = 8;

struct Hist {
    /// Non-cumulative counts per bucket; the last is +Inf.
    counts: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Default for Hist {
    fn default() -> Hist {
        Hist { counts: std::array::from_fn(|_| AtomicU64::new(0)), sum_us: AtomicU64::new(0) }
    }
}

/// One worker's counters. Only its worker writes; `/metrics` reads all workers'.
pub struct PromWorker {
    requests: [AtomicU64; RouteTag::ALL.len() * FLAGS],
    replies: [AtomicU64; Series::REPLIES.len() * 2],
    hists: [Hist; HISTS],
}

impl Default for PromWorker {
    fn default() -> PromWorker {
        PromWorker {
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            replies: std::array::from_fn(|_| AtomicU64::new(0)),
            hists: std::array::from_fn(|_| Hist::default()),
        }
    }
}

fn reply_index(s: Series) -> usize {
    match s {
        Series::SubReply => 0,
        Series::PsubReply => 1,
        _ => 2,
    }
}

impl PromWorker {
    pub fn record(&self, e: &Event, us: u64) {
        let hist = match e.series {
            Series::Requests => {
                let flags = usize::from(e.success)
                    | usize::from(e.auth) << 1
                    | usize::from(e.confirmed) << 2;
                self.requests[e.route.index() * FLAGS + flags].fetch_add(1, Ordering::Relaxed);
                e.route.index()
            }
            s => {
                self.replies[reply_index(s) * 2 + usize::from(e.success)]
                    .fetch_add(1, Ordering::Relaxed);
                RouteTag::ALL.len() + reply_index(s)
            }
        };
        let h = &self.hists[hist];
        let b = BOUNDS_US.iter().position(|&bound| us <= bound).unwrap_or(BOUNDS_US.len());
        h.counts[b].fetch_add(1, Ordering::Relaxed);
        h.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

fn sum(workers: &[std::sync::Arc<PromWorker>], f: impl Fn(&PromWorker) -> &AtomicU64) -> u64 {
    workers.iter().map(|w| f(w).load(Ordering::Relaxed)).sum()
}

/// Figures that are not per-worker counters.
pub struct Gauges {
    pub sub_waiting: u64,
    pub rep_waiting: u64,
    pub connections: u64,
    pub statsd_dropped: u64,
    pub uptime_s: u64,
    /// The topics half: msgs_in, msgs_out, redelivered, reset_skipped, live instances,
    /// pending jobs.
    pub topics: Option<[u64; 6]>,
}

/// Renders everything in the text exposition format (version 0.0.4).
pub fn render(prefix: &str, workers: &[std::sync::Arc<PromWorker>], g: &Gauges) -> String {
    let p: String =
        prefix.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let mut s = String::new();
    let _ = writeln!(s, "# HELP {p}_requests_total Requests answered, by route and outcome.");
    let _ = writeln!(s, "# TYPE {p}_requests_total counter");
    for route in RouteTag::ALL {
        for flags in 0..FLAGS {
            let n = sum(workers, |w| &w.requests[route.index() * FLAGS + flags]);
            if n == 0 {
                continue;
            }
            let (success, auth, confirmed) = (flags & 1 != 0, flags & 2 != 0, flags & 4 != 0);
            let _ = writeln!(
                s,
                "{p}_requests_total{{route=\"{}\",success=\"{success}\",auth=\"{auth}\",confirmed=\"{confirmed}\"}} {n}",
                route.name()
            );
        }
    }
    let _ = writeln!(
        s,
        "# HELP {p}_replies_total Reps written to their subscriber, by kind and outcome."
    );
    let _ = writeln!(s, "# TYPE {p}_replies_total counter");
    for kind in Series::REPLIES {
        for success in [false, true] {
            let n = sum(workers, |w| &w.replies[reply_index(kind) * 2 + usize::from(success)]);
            let name = kind.stem().trim_end_matches('.');
            let _ = writeln!(s, "{p}_replies_total{{kind=\"{name}\",success=\"{success}\"}} {n}");
        }
    }
    let hist = |s: &mut String, name: &str, label: &str, value: &str, i: usize| {
        let mut cumulative = 0;
        for (b, bound) in BOUNDS_US.iter().enumerate() {
            cumulative += sum(workers, |w| &w.hists[i].counts[b]);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(s, "{name}_bucket{{{label}=\"{value}\",le=\"{le}\"}} {cumulative}");
        }
        cumulative += sum(workers, |w| &w.hists[i].counts[BOUNDS_US.len()]);
        let _ = writeln!(s, "{name}_bucket{{{label}=\"{value}\",le=\"+Inf\"}} {cumulative}");
        let total = sum(workers, |w| &w.hists[i].sum_us) as f64 / 1e6;
        let _ = writeln!(s, "{name}_sum{{{label}=\"{value}\"}} {total}");
        let _ = writeln!(s, "{name}_count{{{label}=\"{value}\"}} {cumulative}");
    };
    let name = format!("{p}_request_duration_seconds");
    let _ = writeln!(s, "# HELP {name} Time from a request's head to its response, by route.");
    let _ = writeln!(s, "# TYPE {name} histogram");
    for route in RouteTag::ALL {
        hist(&mut s, &name, "route", route.name(), route.index());
    }
    let name = format!("{p}_reply_duration_seconds");
    let _ = writeln!(s, "# HELP {name} Time from a rep's arrival to its write to the subscriber.");
    let _ = writeln!(s, "# TYPE {name} histogram");
    for kind in Series::REPLIES {
        let label = kind.stem().trim_end_matches('.');
        hist(&mut s, &name, "kind", label, RouteTag::ALL.len() + reply_index(kind));
    }
    for (name, help, kind, value) in [
        ("sub_waiting", "Waiting subs plus psub members.", "gauge", g.sub_waiting),
        ("rep_waiting", "Open /prep websockets.", "gauge", g.rep_waiting),
        ("connections", "Open client connections.", "gauge", g.connections),
        ("statsd_dropped_total", "DogStatsD datagrams not sent.", "counter", g.statsd_dropped),
        ("uptime_seconds", "Seconds since start.", "gauge", g.uptime_s),
    ] {
        let _ =
            writeln!(s, "# HELP {p}_{name} {help}\n# TYPE {p}_{name} {kind}\n{p}_{name} {value}");
    }
    if let Some(t) = g.topics {
        for (name, help, kind, value) in [
            ("topic_msgs_in_total", "Topic messages appended.", "counter", t[0]),
            ("topic_msgs_out_total", "Topic messages delivered.", "counter", t[1]),
            ("topic_redelivered_total", "Messages re-sent after the ack timeout.", "counter", t[2]),
            ("topic_reset_skipped_total", "Messages retention removed unread.", "counter", t[3]),
            ("topic_instances", "Live consumer instances.", "gauge", t[4]),
            ("topic_jobs", "Delayed jobs waiting to fire.", "gauge", t[5]),
        ] {
            let _ = writeln!(
                s,
                "# HELP {p}_{name} {help}\n# TYPE {p}_{name} {kind}\n{p}_{name} {value}"
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn renders_cumulative_buckets_and_sums_workers() {
        let a = Arc::new(PromWorker::default());
        let b = Arc::new(PromWorker::default());
        let event = super::super::test_event;
        for (w, us) in [(&a, 50), (&a, 300), (&b, 20_000_000)] {
            let e = event(Series::Requests, RouteTag::Rep, true, us);
            w.record(&e, us);
        }
        let e = event(Series::SubReply, RouteTag::Sub, true, 200);
        b.record(&e, 200);
        let g = Gauges {
            sub_waiting: 2,
            rep_waiting: 0,
            connections: 5,
            topics: None,
            statsd_dropped: 0,
            uptime_s: 1,
        };
        let text = render("esub", &[a, b], &g);
        assert!(text.contains("esub_requests_total{route=\"rep\",success=\"true\",auth=\"false\",confirmed=\"false\"} 3\n"));
        assert!(
            text.contains("esub_request_duration_seconds_bucket{route=\"rep\",le=\"0.0001\"} 1\n")
        );
        assert!(
            text.contains("esub_request_duration_seconds_bucket{route=\"rep\",le=\"0.0005\"} 2\n")
        );
        assert!(text.contains("esub_request_duration_seconds_bucket{route=\"rep\",le=\"10\"} 2\n"));
        assert!(
            text.contains("esub_request_duration_seconds_bucket{route=\"rep\",le=\"+Inf\"} 3\n")
        );
        assert!(text.contains("esub_request_duration_seconds_count{route=\"rep\"} 3\n"));
        assert!(text.contains("esub_replies_total{kind=\"sub_reply\",success=\"true\"} 1\n"));
        assert!(text.contains("esub_sub_waiting 2\n"));
        assert!(!text.contains("route=\"sub\",success"), "zero counters are left out");
    }
}
