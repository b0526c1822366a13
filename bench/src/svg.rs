//! The latency chart: for every scenario of the table, grouped bars of p50, p90, p99, p99.9
//! and max, esub beside nchan, on a log scale, as plain SVG text (medians over runs, like the
//! table). `esub-bench chart OUT.svg FILE...`.

use std::fmt::Write;

use crate::table::{self, Group, PERCENTILES, Record};

const ESUB_COLOR: &str = "#1f77b4";
const NCHAN_COLOR: &str = "#ff7f0e";
/// Bar geometry in pixels: a bar, the gap between esub's and nchan's, the gap after a pair.
const BAR: f64 = 8.0;
const BAR_GAP: f64 = 1.0;
const PAIR_GAP: f64 = 6.0;
/// Between two scenarios.
const GROUP_GAP: f64 = 30.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 64.0;
const PLOT_HEIGHT: f64 = 300.0;
const BOTTOM: f64 = 64.0;

/// `OUT.svg FILE...`: reads the JSON lines of the files and writes the chart to `OUT.svg`.
pub fn from_files(args: &[String]) -> Result<(), String> {
    let [out, inputs @ ..] = args else {
        return Err("usage: esub-bench chart OUT.svg FILE...".into());
    };
    if inputs.is_empty() {
        return Err("usage: esub-bench chart OUT.svg FILE...".into());
    }
    let records = table::read_records(inputs)?;
    let svg = render(&records, &subtitle(&records));
    std::fs::write(out, svg).map_err(|e| format!("{out}: {e}"))
}

/// The date of the newest run and the machine drawing the chart (which is the one that ran it
/// when `run.sh` draws it).
fn subtitle(records: &[Record]) -> String {
    let newest = records.iter().filter_map(|r| r.get("unix_time")?.num()).fold(0.0, f64::max);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{} UTC, {cores} cores, kernel {}; medians over runs; hover a bar for its value",
        utc_date(newest as u64),
        kernel.trim()
    )
}

/// `YYYY-MM-DD HH:MM` of a Unix time (days to civil date: Howard Hinnant's algorithm).
fn utc_date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}", secs / 3600, secs % 3600 / 60)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A log axis from `lo` to `hi` (µs, powers of ten) onto the plot's pixel rows.
#[derive(Debug, Clone, Copy)]
struct LogAxis {
    lo: f64,
    hi: f64,
}

impl LogAxis {
    /// The decades around every value; one decade around 1 µs when there is none.
    fn around(values: impl Iterator<Item = f64>) -> LogAxis {
        let (mut min, mut max) = (f64::INFINITY, 0.0f64);
        for v in values.filter(|v| v.is_finite() && *v > 0.0) {
            min = min.min(v);
            max = max.max(v);
        }
        if max == 0.0 {
            return LogAxis { lo: 1.0, hi: 10.0 };
        }
        let lo = 10f64.powf(min.log10().floor());
        let hi = 10f64.powf(max.log10().ceil()).max(lo * 10.0);
        LogAxis { lo, hi }
    }

    /// Pixel row of `v` (clamped to the axis): `TOP + PLOT_HEIGHT` at `lo`, `TOP` at `hi`.
    fn y(&self, v: f64) -> f64 {
        let v = v.clamp(self.lo, self.hi);
        let f = (v / self.lo).log10() / (self.hi / self.lo).log10();
        TOP + PLOT_HEIGHT * (1.0 - f)
    }

    fn decades(&self) -> Vec<f64> {
        let n = (self.hi / self.lo).log10().round() as i32;
        (0..=n).map(|i| self.lo * 10f64.powi(i)).collect()
    }

    /// 2 and 5 times each decade but the top one: faint lines that make values readable.
    fn minors(&self) -> Vec<f64> {
        let d = self.decades();
        d[..d.len() - 1].iter().flat_map(|&v| [2.0 * v, 5.0 * v]).collect()
    }
}

/// A duration in µs as the axis writes it.
fn us_label(us: f64) -> String {
    if us >= 1e6 {
        format!("{} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{} ms", us / 1e3)
    } else {
        format!("{us} µs")
    }
}

/// The scenario's name and its parameters on two lines.
fn label_lines(g: &Group) -> (String, String) {
    let label = g.label();
    match label.find(" N=").or_else(|| label.find(" C=")) {
        Some(i) => (label[..i].to_string(), label[i + 1..].to_string()),
        None => (label, String::new()),
    }
}

pub fn render(records: &[Record], subtitle: &str) -> String {
    let groups = table::groups(records);
    let value =
        |runs: &[&Record], k: &str| if runs.is_empty() { None } else { table::med(runs, k) };
    let axis = LogAxis::around(groups.iter().flat_map(|g| {
        PERCENTILES.iter().flat_map(move |(k, _)| [value(&g.esub, k), value(&g.nchan, k)]).flatten()
    }));
    let pair = 2.0 * BAR + BAR_GAP + PAIR_GAP;
    let group_width = PERCENTILES.len() as f64 * pair;
    let n = groups.len().max(1) as f64;
    let width = LEFT + n * group_width + (n - 1.0) * GROUP_GAP + RIGHT;
    let height = TOP + PLOT_HEIGHT + BOTTOM;
    let bottom = TOP + PLOT_HEIGHT;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="20" font-size="14" font-weight="bold">Latency percentiles, esub vs nchan (log scale)</text>"#
    );
    let _ = writeln!(s, r##"<text x="{LEFT}" y="38" fill="#555">{}</text>"##, escape(subtitle));
    for (i, (name, color)) in [("esub", ESUB_COLOR), ("nchan", NCHAN_COLOR)].iter().enumerate() {
        let x = LEFT + i as f64 * 70.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="46" width="10" height="10" fill="{color}"/><text x="{}" y="55">{name}</text>"#,
            x + 14.0
        );
    }
    for m in axis.minors() {
        let y = axis.y(m);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.0}" y2="{y:.1}" stroke="#f0f0f0"/>"##,
            width - RIGHT
        );
    }
    // Decade grid lines and their labels.
    for d in axis.decades() {
        let y = axis.y(d);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.0}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            width - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            escape(&us_label(d))
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#333"/><line x1="{LEFT}" y1="{bottom}" x2="{:.0}" y2="{bottom}" stroke="#333"/>"##,
        width - RIGHT
    );
    if groups.is_empty() {
        let _ = writeln!(s, r#"<text x="{}" y="{}">no results</text>"#, LEFT + 10.0, TOP + 20.0);
    }
    for (gi, g) in groups.iter().enumerate() {
        let gx = LEFT + gi as f64 * (group_width + GROUP_GAP) + PAIR_GAP / 2.0;
        let _ = writeln!(s, r#"<g class="scenario">"#);
        for (pi, (key, short)) in PERCENTILES.iter().enumerate() {
            let px = gx + pi as f64 * pair;
            for (ti, (name, runs, color)) in
                [("esub", &g.esub, ESUB_COLOR), ("nchan", &g.nchan, NCHAN_COLOR)].iter().enumerate()
            {
                let Some(v) = value(runs, key) else {
                    continue;
                };
                let x = px + ti as f64 * (BAR + BAR_GAP);
                let y = axis.y(v);
                let _ = writeln!(
                    s,
                    r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{BAR}" height="{:.1}" fill="{color}"><title>{}: {name} {short} {v:.0} µs</title></rect>"#,
                    (bottom - y).max(0.5),
                    escape(&g.label()),
                );
            }
            let label = short.trim_start_matches('p');
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}" font-size="8" text-anchor="middle">{label}</text>"#,
                px + BAR + BAR_GAP / 2.0,
                bottom + 11.0
            );
        }
        let (name, params) = label_lines(g);
        let cx = gx + group_width / 2.0 - PAIR_GAP / 2.0;
        let _ = writeln!(
            s,
            r#"<text x="{cx:.1}" y="{}" text-anchor="middle">{}</text><text x="{cx:.1}" y="{}" text-anchor="middle">{}</text>"#,
            bottom + 28.0,
            escape(&name),
            bottom + 42.0,
            escape(&params)
        );
        let _ = writeln!(s, "</g>");
    }
    s += "</svg>\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse_flat;

    fn rec(scenario: &str, target: &str, subs: u64, p50: f64) -> Record {
        parse_flat(&format!(
            r#"{{"scenario":"{scenario}","target":"{target}","subs":{subs},"reps":4,"size":100,"p50_us":{p50},"p90_us":{},"p99_us":{},"p999_us":{},"max_us":{},"unix_time":1796159312}}"#,
            p50 * 2.0,
            p50 * 4.0,
            p50 * 8.0,
            p50 * 100.0
        ))
        .unwrap()
    }

    /// Every opened element is closed, in order, and no text holds a raw `<` or `&`.
    fn well_formed(svg: &str) {
        let mut stack = Vec::new();
        let mut rest = svg;
        while let Some(i) = rest.find('<') {
            let text = &rest[..i];
            assert!(!text.contains('>') && !text.contains("& "), "bad text {text:?}");
            let end = rest[i..].find('>').expect("unclosed tag") + i;
            let tag = &rest[i + 1..end];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name.to_string()), "mismatched </{name}>");
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap().to_string());
            }
            rest = &rest[end + 1..];
        }
        assert!(stack.is_empty(), "unclosed {stack:?}");
    }

    #[test]
    fn bars_for_every_percentile_and_target() {
        let recs = vec![
            rec("round-trip-longpoll", "esub", 100, 20.0),
            rec("round-trip-longpoll", "nchan", 100, 30.0),
            rec("parked-capacity", "esub", 19000, 500.0),
            rec("http-floor", "nchan", 0, 50.0),
        ];
        let svg = render(&recs, "a <subtitle> & more");
        well_formed(&svg);
        // Two targets in the first group, one in each other: 5 bars per target.
        assert_eq!(svg.matches(r#"class="bar""#).count(), 4 * 5);
        assert_eq!(svg.matches(r#"class="scenario""#).count(), 3);
        assert!(svg.contains("a &lt;subtitle&gt; &amp; more"));
        assert!(svg.contains(">1. long-poll</text>") && svg.contains(">N=100 M=4</text>"));
        assert!(svg.contains(">3. parked capacity</text>") && svg.contains(">C=4</text>"));
        // Values from 20 µs to 50 ms: the axis runs over decades 10 µs to 100 ms.
        for label in ["10 µs", "100 µs", "1 ms", "10 ms", "100 ms"] {
            assert!(svg.contains(&format!(">{label}</text>")), "{label}");
        }
        assert!(!svg.contains(">1 µs<") && !svg.contains(">1 s<"));
    }

    #[test]
    fn log_axis() {
        let a = LogAxis::around([20.0, 50_000.0, f64::NAN, 0.0].into_iter());
        assert_eq!((a.lo, a.hi), (10.0, 100_000.0));
        assert_eq!(a.y(10.0), TOP + PLOT_HEIGHT);
        assert_eq!(a.y(100_000.0), TOP);
        assert!((a.y(1000.0) - (TOP + PLOT_HEIGHT / 2.0)).abs() < 1e-9);
        // Out of range values sit on the axis ends; larger values are higher (smaller y).
        assert_eq!(a.y(1.0), TOP + PLOT_HEIGHT);
        assert!(a.y(300.0) < a.y(200.0));
        assert_eq!(a.decades().len(), 5);
        assert_eq!(a.minors(), [20.0, 50.0, 200.0, 500.0, 2000.0, 5000.0, 20_000.0, 50_000.0]);
        let one = LogAxis::around([100.0].into_iter());
        assert_eq!((one.lo, one.hi), (100.0, 1000.0));
        let none = LogAxis::around(std::iter::empty());
        assert_eq!((none.lo, none.hi), (1.0, 10.0));
        assert_eq!(render(&[], "").matches("no results").count(), 1);
    }

    #[test]
    fn dates_and_labels() {
        assert_eq!(utc_date(0), "1970-01-01 00:00");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc_date(1_796_159_312), "2026-12-01 21:08");
        assert_eq!(us_label(10.0), "10 µs");
        assert_eq!(us_label(1000.0), "1 ms");
        assert_eq!(us_label(1e6), "1 s");
    }
}
