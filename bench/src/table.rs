//! The comparison table: JSON result lines of both targets grouped by scenario and parameters,
//! medians per cell when a scenario ran more than once, one row per figure with esub, nchan and
//! their ratio, as Markdown. The chart reads the same groups.

use std::collections::BTreeMap;

use crate::json::{Value, parse_flat};

pub type Record = BTreeMap<String, Value>;

/// Latency figures of a run, in the JSON line's names, and how the table and chart label them.
pub const PERCENTILES: [(&str, &str); 5] = [
    ("p50_us", "p50"),
    ("p90_us", "p90"),
    ("p99_us", "p99"),
    ("p999_us", "p99.9"),
    ("max_us", "max"),
];

/// Every line that starts with `{` in `paths`.
pub fn read_records(paths: &[String]) -> Result<Vec<Record>, String> {
    let mut records = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with('{') {
                records.push(parse_flat(line).map_err(|e| format!("{path}:{}: {e}", n + 1))?);
            }
        }
    }
    Ok(records)
}

/// Reads the lines of `paths` and renders the table.
pub fn from_files(paths: &[String]) -> Result<String, String> {
    Ok(render(&read_records(paths)?))
}

/// One scenario with one set of parameters, and the runs of each target.
pub struct Group<'a> {
    /// Scenario number in the issue's order (1 to 4; 9 for an unknown name).
    pub number: u8,
    pub scenario: String,
    pub subs: u64,
    pub reps: u64,
    pub size: u64,
    pub esub: Vec<&'a Record>,
    pub nchan: Vec<&'a Record>,
}

impl Group<'_> {
    /// Short name: number, scenario and parameters.
    pub fn label(&self) -> String {
        let size = if self.size == 100 { String::new() } else { format!(" {} B", self.size) };
        match self.number {
            1 => format!("1. long-poll N={} M={}{size}", self.subs, self.reps),
            2 => format!("2. websocket N={} M={}{size}", self.subs, self.reps),
            3 => format!("3. parked capacity N={} M={}{size}", self.subs, self.reps),
            4 => format!("4. HTTP floor C={}", self.reps),
            _ => format!("{} N={} M={}{size}", self.scenario, self.subs, self.reps),
        }
    }
}

fn scenario_number(name: &str) -> u8 {
    match name {
        "round-trip-longpoll" => 1,
        "round-trip-websocket" => 2,
        "parked-capacity" => 3,
        "http-floor" => 4,
        _ => 9,
    }
}

/// Scenario number and name, subs, reps, size: what makes runs comparable.
type GroupKey = (u8, String, u64, u64, u64);

/// Records grouped by scenario and parameters, in the issue's order.
pub fn groups(records: &[Record]) -> Vec<Group<'_>> {
    let mut map: BTreeMap<GroupKey, (Vec<&Record>, Vec<&Record>)> = BTreeMap::new();
    for r in records {
        let scenario = r.get("scenario").and_then(Value::str).unwrap_or("?").to_string();
        let key = (
            scenario_number(&scenario),
            scenario,
            num(r, "subs").unwrap_or(0.0) as u64,
            num(r, "reps").unwrap_or(0.0) as u64,
            num(r, "size").unwrap_or(0.0) as u64,
        );
        let runs = map.entry(key).or_default();
        match r.get("target").and_then(Value::str) {
            Some("esub") => runs.0.push(r),
            Some("nchan") => runs.1.push(r),
            _ => {}
        }
    }
    map.into_iter()
        .map(|((number, scenario, subs, reps, size), (esub, nchan))| Group {
            number,
            scenario,
            subs,
            reps,
            size,
            esub,
            nchan,
        })
        .collect()
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
pub fn med(runs: &[&Record], k: &str) -> Option<f64> {
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

/// One figure's row: its label, and how to get the value out of a target's runs.
struct Figure {
    label: &'static str,
    key: &'static str,
    decimals: usize,
}

const fn fig(label: &'static str, key: &'static str, decimals: usize) -> Figure {
    Figure { label, key, decimals }
}

/// The scalar figures of each scenario, in the order they are shown.
fn figures(number: u8) -> &'static [Figure] {
    const RELAY: &[Figure] = &[
        fig("msgs/s", "msgs_per_s", 0),
        fig("server CPU µs/msg", "server_cpu_us_per_msg", 1),
        fig("generator CPU µs/msg", "gen_cpu_us_per_msg", 1),
    ];
    const CAPACITY: &[Figure] = &[
        fig("server VmRSS per parked sub, B", "rss_per_sub_b", 0),
        fig("  of which anonymous, B", "anon_per_sub_b", 0),
        fig("server Pss per parked sub, B", "pss_per_sub_b", 0),
        fig("time to park all N, s", "park_s", 2),
        fig("time to deliver one rep to each, s", "deliver_s", 3),
        fig("deliveries/s", "msgs_per_s", 0),
        fig("server CPU µs/msg (delivering)", "server_cpu_us_per_msg", 1),
    ];
    const FLOOR: &[Figure] = &[
        fig("requests/s", "msgs_per_s", 0),
        fig("server CPU µs/request", "server_cpu_us_per_msg", 1),
        fig("generator CPU µs/request", "gen_cpu_us_per_msg", 1),
    ];
    match number {
        3 => CAPACITY,
        4 => FLOOR,
        _ => RELAY,
    }
}

fn latency_cells(e: &[&Record], n: &[&Record]) -> (String, String, String) {
    let cell = |runs: &[&Record]| {
        if runs.is_empty() {
            return "n/a".to_string();
        }
        PERCENTILES.iter().map(|(k, _)| fmt(med(runs, k), 0)).collect::<Vec<_>>().join(" / ")
    };
    let ratios = PERCENTILES
        .iter()
        .map(|(k, _)| ratio(med(e, k), med(n, k)))
        .collect::<Vec<_>>()
        .join(" / ");
    (cell(e), cell(n), ratios)
}

pub fn render(records: &[Record]) -> String {
    let mut out =
        String::from("| scenario (runs esub/nchan) | figure | esub | nchan | esub/nchan |\n");
    out += "|---|---|---|---|---|\n";
    for g in groups(records) {
        let (e, n) = (&g.esub[..], &g.nchan[..]);
        let mut first = format!("{} ({}/{})", g.label(), e.len(), n.len());
        let mut row = |figure: &str, ec: String, nc: String, rc: String| {
            out += &format!("| {} | {figure} | {ec} | {nc} | {rc} |\n", std::mem::take(&mut first));
        };
        let value = |runs: &[&Record], k: &str| if runs.is_empty() { None } else { med(runs, k) };
        for f in figures(g.number) {
            let (ev, nv) = (value(e, f.key), value(n, f.key));
            row(f.label, fmt(ev, f.decimals), fmt(nv, f.decimals), ratio(ev, nv));
            // The latency of those messages or requests right below their rate.
            if f.key == "msgs_per_s" {
                let (ec, nc, rc) = latency_cells(e, n);
                row("latency p50 / p90 / p99 / p99.9 / max µs", ec, nc, rc);
            }
        }
        let label = if g.number == 4 { "errors" } else { "lost / dup / misdelivered" };
        let cell = |runs: &[&Record]| {
            if g.number == 4 && !runs.is_empty() {
                let mut s = sum(runs, "errors").to_string();
                if sum(runs, "unanswered") > 0 {
                    s += &format!(" unanswered {}", sum(runs, "unanswered"));
                }
                s
            } else {
                faults(runs)
            }
        };
        row(label, cell(e), cell(n), String::new());
    }
    out += "\nMedians over the runs; fault counts are sums. Latency: a rep's first byte written to the \
            sub's last byte read (HTTP floor: request written to response read). CPU: utime+stime of \
            the server (nchan: master + workers) or of the generator over the measured window, per \
            delivered message or answered request. Memory: the server's VmRSS (summed over nginx's \
            processes) after parking minus before, divided by N; kernel socket buffers are not in it.\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(scenario: &str, target: &str, rate: f64, lost: u64) -> Record {
        parse_flat(&format!(
            r#"{{"scenario":"{scenario}","target":"{target}","subs":1000,"reps":4,"size":100,"msgs_per_s":{rate},"p50_us":100,"p90_us":200,"p99_us":300,"p999_us":600,"max_us":900,"server_cpu_us_per_msg":10,"gen_cpu_us_per_msg":5,"lost":{lost},"duplicated":0,"misdelivered":0,"errors":0,"rss_per_sub_b":2048,"park_s":1.5,"deliver_s":0.25}}"#
        ))
        .unwrap()
    }

    fn row<'a>(table: &'a str, figure: &str) -> &'a str {
        table.lines().find(|l| l.contains(&format!("| {figure} |"))).unwrap_or_else(|| {
            panic!("no {figure:?} row in\n{table}");
        })
    }

    #[test]
    fn medians_ratios_and_sums() {
        let l = "round-trip-longpoll";
        let recs = vec![
            rec(l, "esub", 30000.0, 0),
            rec(l, "esub", 10000.0, 1),
            rec(l, "esub", 20000.0, 0),
            rec(l, "nchan", 10000.0, 0),
        ];
        let t = render(&recs);
        assert_eq!(
            row(&t, "msgs/s"),
            "| 1. long-poll N=1000 M=4 (3/1) | msgs/s | 20000 | 10000 | 2.00 |"
        );
        assert_eq!(
            row(&t, "latency p50 / p90 / p99 / p99.9 / max µs"),
            "|  | latency p50 / p90 / p99 / p99.9 / max µs | 100 / 200 / 300 / 600 / 900 | \
             100 / 200 / 300 / 600 / 900 | 1.00 / 1.00 / 1.00 / 1.00 / 1.00 |"
        );
        assert_eq!(
            row(&t, "lost / dup / misdelivered"),
            "|  | lost / dup / misdelivered | 1/0/0 | 0/0/0 |  |"
        );
        // msgs/s, latency, server CPU, generator CPU, faults.
        assert_eq!(t.lines().filter(|l| l.starts_with('|')).count(), 2 + 5);
    }

    #[test]
    fn scenarios_in_order_with_their_own_figures() {
        let recs = vec![
            rec("http-floor", "esub", 50000.0, 0),
            rec("parked-capacity", "nchan", 9000.0, 0),
            rec("parked-capacity", "esub", 18000.0, 0),
            rec("round-trip-websocket", "esub", 30000.0, 0),
            rec("round-trip-longpoll", "nchan", 10000.0, 0),
        ];
        let t = render(&recs);
        let labels: Vec<&str> = t
            .lines()
            .filter_map(|l| l.strip_prefix("| ")?.split(" (").next())
            .filter(|l| l.starts_with(char::is_numeric))
            .collect();
        assert_eq!(
            labels,
            [
                "1. long-poll N=1000 M=4",
                "2. websocket N=1000 M=4",
                "3. parked capacity N=1000 M=4",
                "4. HTTP floor C=4"
            ]
        );
        assert!(row(&t, "server VmRSS per parked sub, B").ends_with("| 2048 | 2048 | 1.00 |"));
        assert!(row(&t, "deliveries/s").ends_with("| 18000 | 9000 | 2.00 |"));
        assert!(row(&t, "requests/s").ends_with("| 50000 | n/a | n/a |"));
        assert!(row(&t, "errors").ends_with("| 0 | n/a |  |"));
        // The websocket row has no nchan run.
        let ws = t.lines().find(|l| l.starts_with("| 2. websocket")).unwrap();
        assert!(ws.ends_with("| 30000 | n/a | n/a |"), "{ws}");
    }

    #[test]
    fn median_of_even_count() {
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
