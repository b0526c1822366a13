//! The comparison table: JSON result lines of both targets, grouped by scenario, medians per
//! cell when a scenario ran more than once, as Markdown.

use std::collections::BTreeMap;

use crate::json::{Value, parse_flat};

type Record = BTreeMap<String, Value>;

/// Reads every line that starts with `{` from `paths` and renders the table.
pub fn from_files(paths: &[String]) -> Result<String, String> {
    let mut records = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with('{') {
                records.push(parse_flat(line).map_err(|e| format!("{path}:{}: {e}", n + 1))?);
            }
        }
    }
    Ok(render(&records))
}

fn num(r: &Record, k: &str) -> Option<f64> {
    r.get(k).and_then(Value::num)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 })
}

/// Median of `k` over the runs that have it.
fn med(runs: &[&Record], k: &str) -> Option<f64> {
    median(runs.iter().filter_map(|r| num(r, k)).collect())
}

fn sum(runs: &[&Record], k: &str) -> u64 {
    runs.iter().filter_map(|r| num(r, k)).sum::<f64>() as u64
}

fn fmt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("n/a".to_string(), |v| format!("{v:.decimals$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".to_string(),
    }
}

fn latency(runs: &[&Record]) -> String {
    if runs.is_empty() {
        return "n/a".to_string();
    }
    format!(
        "{} / {} / {}",
        fmt(med(runs, "p50_us"), 0),
        fmt(med(runs, "p99_us"), 0),
        fmt(med(runs, "max_us"), 0)
    )
}

/// Sums over runs: a loss in any run must show.
fn faults(runs: &[&Record]) -> String {
    if runs.is_empty() {
        return "n/a".to_string();
    }
    let mut s =
        format!("{}/{}/{}", sum(runs, "lost"), sum(runs, "duplicated"), sum(runs, "misdelivered"));
    let extra = [
        ("ghost", "ghost"),
        ("corrupt", "corrupt"),
        ("unanswered", "unanswered"),
        ("errors", "err"),
    ];
    for (k, label) in extra {
        let n = sum(runs, k);
        if n > 0 {
            s += &format!(" {label} {n}");
        }
    }
    if runs.iter().any(|r| r.get("aborted").and_then(Value::str).is_some_and(|a| !a.is_empty())) {
        s += " ABORTED";
    }
    s
}

pub fn render(records: &[Record]) -> String {
    // (subs, reps, size) -> target -> runs
    let mut groups: BTreeMap<(u64, u64, u64), BTreeMap<String, Vec<&Record>>> = BTreeMap::new();
    for r in records {
        let key = (
            num(r, "subs").unwrap_or(0.0) as u64,
            num(r, "reps").unwrap_or(0.0) as u64,
            num(r, "size").unwrap_or(0.0) as u64,
        );
        let target = r.get("target").and_then(Value::str).unwrap_or("?").to_string();
        groups.entry(key).or_default().entry(target).or_default().push(r);
    }
    let mut out = String::from(
        "| scenario (N subs, M reps, bytes) | runs | esub msgs/s | nchan msgs/s | esub/nchan | \
         esub p50/p99/max µs | nchan p50/p99/max µs | esub CPU µs/msg | nchan CPU µs/msg | \
         CPU esub/nchan | gen CPU µs/msg esub/nchan | esub lost/dup/misdel | nchan lost/dup/misdel |\n",
    );
    out += "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    let none: Vec<&Record> = Vec::new();
    for ((subs, reps, size), by_target) in &groups {
        let e = by_target.get("esub").unwrap_or(&none);
        let n = by_target.get("nchan").unwrap_or(&none);
        let rate = |runs: &[&Record]| if runs.is_empty() { None } else { med(runs, "msgs_per_s") };
        let cpu = |runs: &[&Record]| {
            if runs.is_empty() { None } else { med(runs, "server_cpu_us_per_msg") }
        };
        let gen_cpu = |runs: &[&Record]| {
            fmt(if runs.is_empty() { None } else { med(runs, "gen_cpu_us_per_msg") }, 1)
        };
        out += &format!(
            "| N={subs} M={reps} {size} B | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |\n",
            e.len(),
            n.len(),
            fmt(rate(e), 0),
            fmt(rate(n), 0),
            ratio(rate(e), rate(n)),
            latency(e),
            latency(n),
            fmt(cpu(e), 1),
            fmt(cpu(n), 1),
            ratio(cpu(e), cpu(n)),
            gen_cpu(e),
            gen_cpu(n),
            faults(e),
            faults(n),
        );
    }
    out += "\nmsgs/s, latency and CPU are medians over the runs (esub/nchan counts in `runs`); \
            lost/dup/misdel and the extra fault counts are sums. Latency: rep's first byte written \
            to the sub's last byte read. CPU: utime+stime of the server (nchan: master + workers) \
            over the measured window per delivered message.\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(target: &str, rate: f64, lost: u64) -> Record {
        parse_flat(&format!(
            r#"{{"target":"{target}","subs":1000,"reps":4,"size":100,"msgs_per_s":{rate},"p50_us":100,"p99_us":300,"max_us":900,"server_cpu_us_per_msg":10,"gen_cpu_us_per_msg":5,"lost":{lost},"duplicated":0,"misdelivered":0}}"#
        ))
        .unwrap()
    }

    #[test]
    fn medians_ratios_and_sums() {
        let recs = vec![
            rec("esub", 30000.0, 0),
            rec("esub", 10000.0, 1),
            rec("esub", 20000.0, 0),
            rec("nchan", 10000.0, 0),
        ];
        let t = render(&recs);
        let row = t.lines().nth(2).unwrap();
        assert!(
            row.starts_with("| N=1000 M=4 100 B | 3/1 | 20000 | 10000 | 2.00 | 100 / 300 / 900 |"),
            "{row}"
        );
        assert!(row.contains("| 1/0/0 | 0/0/0 |"), "{row}");
    }

    #[test]
    fn missing_peer_is_na() {
        let t = render(&[rec("esub", 100.0, 0)]);
        let row = t.lines().nth(2).unwrap();
        assert!(row.contains("| 100 | n/a | n/a |"), "{row}");
    }

    #[test]
    fn median_of_even_count() {
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
