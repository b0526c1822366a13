//! The result of one topics run (one JSON line and a human summary), and the table that sets
//! esub's runs beside Redis's: medians per cell, the ratio esub/Redis, faults summed.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::config::{Config, Scenario};
use super::run::Figures;
use crate::hist::Histogram;
use crate::json::{Value, Writer};
use crate::table::{Record, med, read_records};

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn per_msg_us(cpu: Option<Duration>, msgs: u64) -> Option<f64> {
    (msgs > 0).then(|| cpu.map(|d| d.as_secs_f64() * 1e6 / msgs as f64)).flatten()
}

fn per_s(n: u64, window: Duration) -> f64 {
    let s = window.as_secs_f64();
    if s > 0.0 { n as f64 / s } else { 0.0 }
}

fn status_counts(m: &BTreeMap<u16, u64>) -> String {
    m.iter().map(|(s, n)| format!("{s}:{n}")).collect::<Vec<_>>().join(" ")
}

/// The messages a run's CPU is divided by: stored in the window (end to end: published, each
/// also delivered).
fn msgs(f: &Figures) -> u64 {
    f.tally.msgs
}

fn percentiles(w: &mut Writer, prefix: &str, h: &Histogram) {
    for (q, name) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p999")] {
        w.num(&format!("{prefix}_{name}_us"), Some(us(h.quantile(q))), 1);
    }
    w.num(&format!("{prefix}_max_us"), Some(us(h.max())), 1);
}

pub fn json_line(cfg: &Config, topic: &str, server: &str, f: &Figures) -> String {
    let t = &f.tally;
    let window = f.measured.window;
    let unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let pids = f.server_pids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
    let e2e = cfg.scenario == Scenario::EndToEnd;
    let mut w = Writer::default();
    w.str("bench", "topics-bench")
        .str("scenario", cfg.scenario.name())
        .str("target", cfg.target.name())
        .str("server", server)
        .str("fsync", &cfg.fsync)
        .str("msg_id", if cfg.msg_id { "on" } else { "off" })
        .str("label", &cfg.label)
        .str("url", &cfg.addr.to_string())
        .str("topic", topic)
        .int("conns", cfg.conns as u64)
        .int("batch", cfg.batch as u64)
        .int("partitions", cfg.partitions as u64)
        .int("size", cfg.size as u64)
        .int("rate", if e2e { cfg.rate } else { 0 })
        .int("consumers", if e2e { cfg.consumers as u64 } else { 0 })
        .int("fetch", if e2e { cfg.fetch as u64 } else { 0 })
        .num("warmup_s", Some(cfg.warmup.as_secs_f64()), 3)
        .num("window_s", Some(window.as_secs_f64()), 3)
        .int("requests", t.requests)
        .int("msgs", t.msgs)
        .num("msgs_per_s", Some(per_s(t.msgs, window)), 1)
        .num("offered_per_s", Some(per_s(t.offered, window)), 1);
    percentiles(&mut w, "pub", &t.pub_hist);
    w.int("delivered", t.delivered).num("delivered_per_s", Some(per_s(t.delivered, window)), 1);
    if e2e {
        percentiles(&mut w, "e2e", &t.e2e_hist);
    }
    let lost = if e2e { f.books.outstanding() } else { 0 };
    w.int("max_backlog", t.max_backlog)
        .int("sent", t.sent_total)
        .int("stored", t.stored_total)
        .int("failed", t.failed_total)
        .int("delivered_total", f.books.delivered)
        .int("lost", lost)
        .int("duplicated", f.books.duplicated)
        .int("corrupt", f.books.corrupt)
        .int("unanswered", f.unanswered)
        .int("errors", f.errors.total())
        .int("conn_errors", f.errors.connections)
        .str("pub_status", &status_counts(&f.errors.rep_status))
        .str("sub_status", &status_counts(&f.errors.sub_status))
        .str("first_error", f.errors.first.first().map_or("", String::as_str))
        .str("aborted", f.aborted.as_deref().unwrap_or(""))
        .str("server_pids", &pids)
        .num("server_cpu_s", f.measured.server_cpu.map(|d| d.as_secs_f64()), 3)
        .num("server_cpu_us_per_msg", per_msg_us(f.measured.server_cpu, msgs(f)), 2)
        .num("gen_cpu_s", f.measured.gen_cpu.map(|d| d.as_secs_f64()), 3)
        .num("gen_cpu_us_per_msg", per_msg_us(f.measured.gen_cpu, msgs(f)), 2)
        .num("server_preempted", f.measured.server_preempted.map(|n| n as f64), 0)
        .num("gen_preempted", f.measured.gen_preempted.map(|n| n as f64), 0)
        .int("unix_time", unix);
    w.finish()
}

pub fn human(cfg: &Config, f: &Figures) -> String {
    let t = &f.tally;
    let window = f.measured.window;
    let mut s = format!(
        "{} {} conns={} batch={} size={} fsync={}: {:.0} msgs/s stored ({} in {} requests, {:.2} s)\n",
        cfg.target.name(),
        cfg.scenario.name(),
        cfg.conns,
        cfg.batch,
        cfg.size,
        cfg.fsync,
        per_s(t.msgs, window),
        t.msgs,
        t.requests,
        window.as_secs_f64(),
    );
    let line = |name: &str, h: &Histogram| {
        format!(
            "  {name} µs: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}\n",
            us(h.quantile(0.5)),
            us(h.quantile(0.9)),
            us(h.quantile(0.99)),
            us(h.quantile(0.999)),
            us(h.max()),
        )
    };
    s += &line("request to answer", &t.pub_hist);
    if cfg.scenario == Scenario::EndToEnd {
        s += &format!(
            "  offered {:.0} msgs/s (max backlog {}), delivered {:.0} msgs/s to {} consumers\n",
            per_s(t.offered, window),
            t.max_backlog,
            per_s(t.delivered, window),
            cfg.consumers
        );
        s += &line("pub to delivery", &t.e2e_hist);
        s += &format!(
            "  lost {}  duplicated {}  corrupt {}  (sent {}, stored {}, delivered {})\n",
            f.books.outstanding(),
            f.books.duplicated,
            f.books.corrupt,
            t.sent_total,
            t.stored_total,
            f.books.delivered
        );
    }
    let cpu = |d: Option<Duration>| match (d, per_msg_us(d, msgs(f))) {
        (Some(d), Some(per)) => format!("{:.2} s = {per:.2} µs/msg", d.as_secs_f64()),
        (Some(d), None) => format!("{:.2} s", d.as_secs_f64()),
        _ => "n/a".to_string(),
    };
    s += &format!(
        "  server CPU {} (pids {:?})  generator CPU {}\n",
        cpu(f.measured.server_cpu),
        f.server_pids,
        cpu(f.measured.gen_cpu),
    );
    if f.errors.total() > 0 || t.failed_total > 0 || f.unanswered > 0 {
        s += &format!(
            "  failed {}  unanswered {}  errors: connections {}  pub [{}]  sub [{}]\n",
            t.failed_total,
            f.unanswered,
            f.errors.connections,
            status_counts(&f.errors.rep_status),
            status_counts(&f.errors.sub_status),
        );
        for e in &f.errors.first {
            s += &format!("    {e}\n");
        }
    }
    if let Some(why) = &f.aborted {
        s += &format!("  ABORTED: {why}\n");
    }
    s
}

// --- the table ---------------------------------------------------------------------------------

fn str_of<'r>(r: &'r Record, k: &str) -> &'r str {
    r.get(k).and_then(Value::str).unwrap_or("")
}

fn num_of(r: &Record, k: &str) -> f64 {
    r.get(k).and_then(Value::num).unwrap_or(0.0)
}

/// Which of the issue's scenarios a run belongs to, and its parameters: (letter, label).
fn scenario_of(r: &Record) -> (char, String) {
    let conns = num_of(r, "conns");
    match str_of(r, "scenario") {
        "single" if str_of(r, "fsync") == "always" => {
            ('d', format!("d. fsync always, single pubs, {conns} connections"))
        }
        "single" => ('a', format!("a. single pubs, {conns} connections")),
        "batch" => (
            'b',
            format!(
                "b. batch pubs, {conns} connections (esub: records per request, Redis: XADDs per round trip, as below)"
            ),
        ),
        "e2e" => (
            'c',
            format!(
                "c. end to end at {} msgs/s offered, {} consumers fetching {}, {conns} producer connections",
                num_of(r, "rate"),
                num_of(r, "consumers"),
                num_of(r, "fetch")
            ),
        ),
        other => ('z', other.to_string()),
    }
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.decimals$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".into(),
    }
}

/// Sums over runs, so a fault in any run shows.
fn total(runs: &[&Record], k: &str) -> Option<f64> {
    (!runs.is_empty()).then(|| runs.iter().map(|r| num_of(r, k)).sum())
}

/// The figures of a scenario: label, JSON key, decimals, and whether they are summed (faults)
/// rather than medians.
fn rows(letter: char) -> &'static [(&'static str, &'static str, usize, bool)] {
    const PUBS: &[(&str, &str, usize, bool)] = &[
        ("msgs/s stored", "msgs_per_s", 0, false),
        ("server CPU µs/msg", "server_cpu_us_per_msg", 2, false),
        ("request to answer p50 µs", "pub_p50_us", 0, false),
        ("request to answer p99 µs", "pub_p99_us", 0, false),
        ("request to answer max µs", "pub_max_us", 0, false),
        ("messages per request", "batch", 0, false),
        ("generator CPU µs/msg", "gen_cpu_us_per_msg", 2, false),
        ("failed msgs (sum)", "failed", 0, true),
        ("errors (sum)", "errors", 0, true),
    ];
    const E2E: &[(&str, &str, usize, bool)] = &[
        ("delivered msgs/s", "delivered_per_s", 0, false),
        ("pub to delivery p50 µs", "e2e_p50_us", 0, false),
        ("pub to delivery p99 µs", "e2e_p99_us", 0, false),
        ("pub to delivery p99.9 µs", "e2e_p999_us", 0, false),
        ("pub to delivery max µs", "e2e_max_us", 0, false),
        ("lost (sum)", "lost", 0, true),
        ("duplicated (sum)", "duplicated", 0, true),
        ("corrupt (sum)", "corrupt", 0, true),
        ("server CPU µs/msg (pub + delivery)", "server_cpu_us_per_msg", 2, false),
        ("pub request to answer p99 µs", "pub_p99_us", 0, false),
        ("offered msgs/s", "offered_per_s", 0, false),
        ("most msgs due and not yet sent", "max_backlog", 0, false),
        ("failed msgs (sum)", "failed", 0, true),
        ("errors (sum)", "errors", 0, true),
    ];
    if letter == 'c' { E2E } else { PUBS }
}

/// A scenario's runs: esub's, then Redis's.
type Runs<'r> = (Vec<&'r Record>, Vec<&'r Record>);

pub fn render(records: &[Record]) -> String {
    let mut groups: BTreeMap<(char, String), Runs> = BTreeMap::new();
    for r in records.iter().filter(|r| str_of(r, "bench") == "topics-bench") {
        let g = groups.entry(scenario_of(r)).or_default();
        match str_of(r, "target") {
            "esub" => g.0.push(r),
            _ => g.1.push(r),
        }
    }
    let mut out = String::new();
    for ((letter, label), (e, r)) in &groups {
        let runs = e.len().max(r.len());
        let aborted = e.iter().chain(r).any(|x| !str_of(x, "aborted").is_empty());
        out += &format!(
            "\n**{label}** ({runs} run(s) each{}{})\n\n| figure | esub | Redis | esub/Redis |\n|---|---:|---:|---:|\n",
            if runs > 1 { ", medians" } else { "" },
            if aborted { "; ABORTED runs" } else { "" }
        );
        for &(name, key, decimals, summed) in rows(*letter) {
            let get = |runs: &[&Record]| if summed { total(runs, key) } else { med(runs, key) };
            let (a, b) = (get(e), get(r));
            let rat = if summed || key == "batch" || key == "max_backlog" {
                String::new()
            } else {
                ratio(a, b)
            };
            out += &format!("| {name} | {} | {} | {rat} |\n", cell(a, decimals), cell(b, decimals));
        }
    }
    out
}

/// Reads the JSON lines of `paths` and renders the table.
pub fn from_files(paths: &[String]) -> Result<String, String> {
    Ok(render(&read_records(paths)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse_flat;

    #[test]
    fn table_groups_targets_and_takes_medians() {
        let lines = [
            r#"{"bench":"topics-bench","scenario":"single","target":"esub","fsync":"interval","conns":16,"msgs_per_s":100000,"server_cpu_us_per_msg":4,"pub_p99_us":300,"batch":1,"aborted":""}"#,
            r#"{"bench":"topics-bench","scenario":"single","target":"esub","fsync":"interval","conns":16,"msgs_per_s":120000,"server_cpu_us_per_msg":5,"pub_p99_us":200,"batch":1,"aborted":""}"#,
            r#"{"bench":"topics-bench","scenario":"single","target":"esub","fsync":"interval","conns":16,"msgs_per_s":80000,"server_cpu_us_per_msg":3,"pub_p99_us":100,"batch":1,"aborted":""}"#,
            r#"{"bench":"topics-bench","scenario":"single","target":"redis","fsync":"everysec","conns":16,"msgs_per_s":50000,"server_cpu_us_per_msg":8,"batch":1,"aborted":""}"#,
            r#"{"bench":"topics-bench","scenario":"single","target":"redis","fsync":"always","conns":64,"msgs_per_s":60000,"batch":1,"aborted":""}"#,
            r#"{"bench":"topics-bench","scenario":"e2e","target":"esub","fsync":"interval","conns":16,"rate":10000,"consumers":4,"fetch":100,"lost":1,"duplicated":0,"e2e_p99_us":700,"aborted":""}"#,
            r#"{"bench":"topics-bench","scenario":"e2e","target":"esub","fsync":"interval","conns":16,"rate":10000,"consumers":4,"fetch":100,"lost":2,"duplicated":3,"e2e_p99_us":900,"aborted":"x"}"#,
            r#"{"bench":"esub-bench","scenario":"floor","target":"esub"}"#,
        ];
        let records: Vec<Record> = lines.iter().map(|l| parse_flat(l).unwrap()).collect();
        let t = render(&records);
        assert!(t.contains("**a. single pubs, 16 connections** (3 run(s) each, medians)"), "{t}");
        assert!(t.contains("| msgs/s stored | 100000 | 50000 | 2.00 |"), "{t}");
        assert!(t.contains("| server CPU µs/msg | 4.00 | 8.00 | 0.50 |"), "{t}");
        assert!(t.contains("| request to answer p99 µs | 200 | n/a | n/a |"), "{t}");
        assert!(
            t.contains("**d. fsync always, single pubs, 64 connections** (1 run(s) each)"),
            "{t}"
        );
        assert!(t.contains("| msgs/s stored | n/a | 60000 | n/a |"), "{t}");
        assert!(t.contains("(2 run(s) each, medians; ABORTED runs)"), "{t}");
        assert!(t.contains("| lost (sum) | 3 | n/a |  |"), "{t}");
        assert!(t.contains("| duplicated (sum) | 3 | n/a |  |"), "{t}");
        assert!(t.contains("| pub to delivery p99 µs | 800 | n/a | n/a |"), "{t}");
        assert!(!t.contains("floor"), "{t}");
        let a = t.find("**a.").unwrap();
        let c = t.find("**c.").unwrap();
        let d = t.find("**d.").unwrap();
        assert!(a < c && c < d, "{t}");
    }
}
