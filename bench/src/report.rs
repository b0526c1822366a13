//! The result of one run: one JSON line (the record `table` reads back) and a human summary.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{Config, RepTo, Scenario};
use crate::control::Parked;
use crate::json::Writer;
use crate::outcome::Outcome;

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn per_msg_us(cpu: Option<std::time::Duration>, msgs: u64) -> Option<f64> {
    if msgs == 0 {
        return None;
    }
    Some(cpu?.as_secs_f64() * 1e6 / msgs as f64)
}

fn status_counts(m: &std::collections::BTreeMap<u16, u64>) -> String {
    m.iter().map(|(s, n)| format!("{s}:{n}")).collect::<Vec<_>>().join(" ")
}

pub fn msgs_per_s(o: &Outcome) -> f64 {
    let secs = o.window.as_secs_f64();
    if secs > 0.0 { o.delivered as f64 / secs } else { 0.0 }
}

pub fn json_line(cfg: &Config, o: &Outcome) -> String {
    let h = &o.hist;
    let parked = match &o.parked {
        Parked::All => "all".to_string(),
        Parked::Partial(n) => format!("partial:{n}"),
        Parked::Unknown(why) => format!("unknown:{why}"),
    };
    let unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let pids = o.server_pids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
    let mut w = Writer::default();
    w.str("bench", "esub-bench")
        .str("scenario", cfg.scenario.name())
        .str("target", cfg.target.name())
        .str("label", &cfg.label)
        .str("url", &cfg.urls_text())
        .str("rep_url", &cfg.rep_urls_text())
        .str(
            "rep_to",
            match cfg.rep_to {
                RepTo::Any => "any",
                RepTo::Home => "home",
            },
        )
        // The HTTP floor has no subs.
        .int("subs", if cfg.scenario == Scenario::Floor { 0 } else { cfg.subs as u64 })
        .int("reps", cfg.reps as u64)
        .int("size", cfg.size as u64)
        .num("warmup_s", Some(cfg.warmup.as_secs_f64()), 3)
        .num("window_s", Some(o.window.as_secs_f64()), 3)
        .str("parked", &parked)
        .str("key_prefix", &o.prefix)
        .int("delivered", o.delivered)
        .num("msgs_per_s", Some(msgs_per_s(o)), 1)
        .num("p50_us", Some(us(h.quantile(0.5))), 1)
        .num("p90_us", Some(us(h.quantile(0.9))), 1)
        .num("p99_us", Some(us(h.quantile(0.99))), 1)
        .num("p999_us", Some(us(h.quantile(0.999))), 1)
        .num("max_us", Some(us(h.max())), 1)
        .num("mean_us", Some(us(h.mean())), 1)
        .int("slowest_key", o.slowest.key as u64)
        .int("slowest_seq", o.slowest.seq)
        .num("slowest_at_s", Some(o.slowest.at.as_secs_f64()), 3)
        .int("sent", o.counts.sent)
        .int("acked", o.counts.acked)
        .int("misses", o.counts.misses)
        .int("failed", o.counts.failed)
        .int("crossed", o.crossed)
        .num("cross_share", (o.counts.sent > 0).then(|| o.crossed as f64 / o.counts.sent as f64), 3)
        .int("delivered_total", o.counts.delivered)
        .int("lost", o.lost)
        .int("duplicated", o.counts.duplicated)
        .int("misdelivered", o.counts.misdelivered)
        .int("ghost", o.counts.ghost)
        .int("corrupt", o.counts.corrupt)
        .int("unanswered", o.unanswered)
        .int("errors", o.errors.total())
        .int("conn_errors", o.errors.connections)
        .str("sub_status", &status_counts(&o.errors.sub_status))
        .str("rep_status", &status_counts(&o.errors.rep_status))
        .int("content_type_errors", o.errors.content_type)
        .str("first_error", o.errors.first.first().map_or("", String::as_str))
        .str("aborted", o.aborted.as_deref().unwrap_or(""))
        .str("server_pids", &pids)
        .num("server_cpu_s", o.server_cpu.map(|d| d.as_secs_f64()), 3)
        .num("server_cpu_us_per_msg", per_msg_us(o.server_cpu, o.delivered), 2)
        .num("gen_cpu_s", o.gen_cpu.map(|d| d.as_secs_f64()), 3)
        .num("gen_cpu_us_per_msg", per_msg_us(o.gen_cpu, o.delivered), 2)
        .num("server_preempted", o.server_preempted.map(|n| n as f64), 0)
        .num("gen_preempted", o.gen_preempted.map(|n| n as f64), 0)
        .int("unix_time", unix);
    if let Some(c) = &o.capacity {
        let per_sub = |before: u64, after: u64| {
            (cfg.subs > 0).then(|| (after as f64 - before as f64) * 1024.0 / cfg.subs as f64)
        };
        w.int("sources", c.sources as u64)
            .num("park_s", Some(c.park.as_secs_f64()), 3)
            .num("deliver_s", Some(o.window.as_secs_f64()), 3)
            .int("rss_before_kib", c.before.rss_kib)
            .int("rss_after_kib", c.after.rss_kib)
            .num("rss_per_sub_b", per_sub(c.before.rss_kib, c.after.rss_kib), 0)
            .num("anon_per_sub_b", per_sub(c.before.anon_kib, c.after.anon_kib), 0)
            .num("shmem_per_sub_b", per_sub(c.before.shmem_kib, c.after.shmem_kib), 0)
            .num(
                "pss_per_sub_b",
                c.before.pss_kib.zip(c.after.pss_kib).and_then(|(b, a)| per_sub(b, a)),
                0,
            );
    }
    w.finish()
}

pub fn human(cfg: &Config, o: &Outcome) -> String {
    let h = &o.hist;
    let mut s = if cfg.scenario == Scenario::Floor {
        format!(
            "{} {} connections={} {}: {:.0} requests/s ({} answered in {:.2} s)\n",
            cfg.target.name(),
            cfg.scenario.name(),
            cfg.reps,
            cfg.target.floor_path(),
            msgs_per_s(o),
            o.delivered,
            o.window.as_secs_f64(),
        )
    } else {
        format!(
            "{} {} subs={} reps={} size={}: {:.0} msgs/s ({} delivered in {:.2} s), parked at start: {:?}\n",
            cfg.target.name(),
            cfg.scenario.name(),
            cfg.subs,
            cfg.reps,
            cfg.size,
            msgs_per_s(o),
            o.delivered,
            o.window.as_secs_f64(),
            o.parked,
        )
    };
    s += &format!(
        "  latency µs: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}",
        us(h.quantile(0.5)),
        us(h.quantile(0.9)),
        us(h.quantile(0.99)),
        us(h.quantile(0.999)),
        us(h.max()),
        us(h.mean()),
    );
    s += &format!(
        "  (slowest: key {}{} seq {} at {:.3} s into the window)\n",
        o.prefix,
        o.slowest.key,
        o.slowest.seq,
        o.slowest.at.as_secs_f64()
    );
    s += &format!(
        "  lost {}  duplicated {}  misdelivered {}  ghost {}  corrupt {}  unanswered {}  misses {}  errors {}\n",
        o.lost,
        o.counts.duplicated,
        o.counts.misdelivered,
        o.counts.ghost,
        o.counts.corrupt,
        o.unanswered,
        o.counts.misses,
        o.errors.total(),
    );
    let cpu = |d: Option<std::time::Duration>| match (d, per_msg_us(d, o.delivered)) {
        (Some(d), Some(per)) => format!("{:.2} s = {per:.2} µs/msg", d.as_secs_f64()),
        (Some(d), None) => format!("{:.2} s", d.as_secs_f64()),
        _ => "n/a".to_string(),
    };
    let n = |v: Option<u64>| v.map_or("n/a".to_string(), |v| v.to_string());
    s += &format!(
        "  server CPU {} (pids {:?})  generator CPU {}  preempted: server {} generator {}\n",
        cpu(o.server_cpu),
        o.server_pids,
        cpu(o.gen_cpu),
        n(o.server_preempted),
        n(o.gen_preempted),
    );
    if o.errors.total() > 0 {
        s += &format!(
            "  errors: connections {}  sub statuses [{}]  rep statuses [{}]  content-type {}\n",
            o.errors.connections,
            status_counts(&o.errors.sub_status),
            status_counts(&o.errors.rep_status),
            o.errors.content_type
        );
        for e in &o.errors.first {
            s += &format!("    {e}\n");
        }
    }
    if let Some(c) = &o.capacity {
        let per_sub = |b: u64, a: u64| (a as f64 - b as f64) * 1024.0 / cfg.subs.max(1) as f64;
        s += &format!(
            "  parked {} subs from {} source address(es) in {:.2} s; delivered one rep to each in {:.3} s\n",
            cfg.subs,
            c.sources,
            c.park.as_secs_f64(),
            o.window.as_secs_f64()
        );
        s += &format!(
            "  server VmRSS {} -> {} KiB: {:.0} B per parked sub (anon {:.0} B, shmem {:.0} B{})\n",
            c.before.rss_kib,
            c.after.rss_kib,
            per_sub(c.before.rss_kib, c.after.rss_kib),
            per_sub(c.before.anon_kib, c.after.anon_kib),
            per_sub(c.before.shmem_kib, c.after.shmem_kib),
            match c.before.pss_kib.zip(c.after.pss_kib) {
                Some((b, a)) => format!(", Pss {:.0} B", per_sub(b, a)),
                None => String::new(),
            }
        );
    }
    if let Some(why) = &o.aborted {
        s += &format!("  ABORTED: {why}\n");
    }
    s
}
