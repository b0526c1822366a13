//! Metrics end to end (API.md section 5, and the `/info` identity the tags repeat): DogStatsD
//! datagrams caught on a UDP socket of the test, and `GET /metrics` in the Prometheus text format.
//!
//! Every server here flushes every 200 ms to a `UdpSocket` the test bound on port 0; a thread
//! drains that socket into memory, and the tests poll what it caught with deadlines.

mod common;

use common::{IO_TIMEOUT, Json, Server, parse_json};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

const INTERVAL_MS: u64 = 200;
/// How long statsd figures may take to show up (25 flush intervals).
const STATSD_DEADLINE: Duration = Duration::from_secs(5);
/// After the expected figures arrived: this many more flushes must add nothing.
const QUIET: Duration = Duration::from_millis(3 * INTERVAL_MS + 100);
const NODE_IP: &str = "10.9.8.7";
const MAX_DATAGRAM: usize = 1432;

// ---------------------------------------------------------------------------------------------
// The statsd catcher
// ---------------------------------------------------------------------------------------------

/// A UDP socket on 127.0.0.1 and a thread that keeps draining it.
struct Catcher {
    port: u16,
    datagrams: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Catcher {
    fn start() -> Catcher {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        // A big receive buffer so a burst of flushes is not dropped by our own kernel queue
        // (capped by net.core.rmem_max; the draining thread does the rest).
        let size: libc::c_int = 8 << 20;
        // SAFETY: a valid socket fd and a pointer to a c_int of the size passed.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let port = sock.local_addr().unwrap().port();
        let datagrams = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, stopped) = (Arc::clone(&datagrams), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stopped.load(Ordering::Relaxed) {
                // An error is the read timeout: look at the stop flag again.
                if let Ok(n) = sock.recv(&mut buf) {
                    sink.lock().unwrap().push(buf[..n].to_vec());
                }
            }
        });
        Catcher { port, datagrams, stop, thread: Some(thread) }
    }

    fn port_str(&self) -> String {
        self.port.to_string()
    }

    /// How many datagrams arrived so far (a mark for `since`).
    fn mark(&self) -> usize {
        self.datagrams.lock().unwrap().len()
    }

    fn all(&self) -> Vec<Vec<u8>> {
        self.datagrams.lock().unwrap().clone()
    }

    /// The lines of the datagrams that arrived after `mark`, in arrival order.
    fn lines_since(&self, mark: usize) -> Vec<Line> {
        self.datagrams.lock().unwrap()[mark..].iter().flat_map(|d| parse_datagram(d)).collect()
    }

    /// Polls until `done` holds for the lines after `mark`; fails with `what` after `within`.
    #[track_caller]
    fn wait_for(
        &self,
        mark: usize,
        within: Duration,
        what: &str,
        done: impl Fn(&[Line]) -> bool,
    ) -> Vec<Line> {
        let deadline = Instant::now() + within;
        loop {
            let lines = self.lines_since(mark);
            if done(&lines) {
                return lines;
            }
            if Instant::now() >= deadline {
                panic!(
                    "statsd: {what} not seen within {within:?}; {} lines arrived:\n{}",
                    lines.len(),
                    show_lines(&lines, 80)
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Catcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One DogStatsD line `name:value|kind|#tag,tag`.
#[derive(Clone, Debug, PartialEq)]
struct Line {
    name: String,
    value: String,
    kind: String,
    /// The tags exactly as sent, comma-joined ("" when none).
    tags: String,
}

impl Line {
    fn text(&self) -> String {
        if self.tags.is_empty() {
            format!("{}:{}|{}", self.name, self.value, self.kind)
        } else {
            format!("{}:{}|{}|#{}", self.name, self.value, self.kind, self.tags)
        }
    }

    fn count(&self) -> u64 {
        self.value.parse().unwrap_or_else(|_| panic!("counter value not an integer: {self:?}"))
    }
}

fn show_lines(lines: &[Line], max: usize) -> String {
    let mut s: String = lines.iter().take(max).map(|l| format!("  {}\n", l.text())).collect();
    if lines.len() > max {
        s.push_str(&format!("  ... {} more\n", lines.len() - max));
    }
    s
}

/// Splits a datagram into lines and parses each strictly.
#[track_caller]
fn parse_datagram(d: &[u8]) -> Vec<Line> {
    let text = std::str::from_utf8(d).unwrap_or_else(|_| panic!("datagram is not UTF-8: {d:?}"));
    assert!(!text.is_empty(), "empty datagram");
    text.split('\n')
        .map(|l| {
            parse_line(l).unwrap_or_else(|e| panic!("bad statsd line {l:?} ({e}) in {text:?}"))
        })
        .collect()
}

fn parse_line(l: &str) -> Result<Line, String> {
    let (name, rest) = l.split_once(':').ok_or("no ':'")?;
    if name.is_empty() || name.contains(['|', '#', ',', ' ']) {
        return Err("bad name".into());
    }
    let mut parts = rest.split('|');
    let value = parts.next().ok_or("no value")?;
    let kind = parts.next().ok_or("no type")?;
    let tags = match parts.next() {
        None => "",
        Some(t) => t.strip_prefix('#').ok_or("third field is not #tags")?,
    };
    if parts.next().is_some() {
        return Err("too many fields".into());
    }
    if !matches!(kind, "c" | "ms" | "g") {
        return Err(format!("unexpected type {kind:?}"));
    }
    if value.is_empty() || value.parse::<f64>().is_err() {
        return Err("value is not a number".into());
    }
    if !tags.is_empty() && tags.split(',').any(|t| t.is_empty() || !t.contains(':')) {
        return Err("bad tag list".into());
    }
    Ok(Line { name: name.into(), value: value.into(), kind: kind.into(), tags: tags.into() })
}

/// Sum of the counter lines per (name, tags), over every `.requests` counter.
fn counters(lines: &[Line]) -> BTreeMap<(String, String), u64> {
    let mut m = BTreeMap::new();
    for l in lines.iter().filter(|l| l.kind == "c") {
        *m.entry((l.name.clone(), l.tags.clone())).or_insert(0) += l.count();
    }
    m
}

/// Every `X.requests` counter line is followed by `X.duration` and `X.duration_max` (in that
/// order, same tags), with millisecond values to three decimals, avg <= max, and avg == max
/// when the bucket counted one event.
#[track_caller]
fn check_duration_triples(lines: &[Line]) {
    for (i, l) in lines.iter().enumerate() {
        let Some(stem) = l.name.strip_suffix(".requests") else {
            continue;
        };
        assert_eq!(l.kind, "c", "{} should be a counter", l.text());
        let (Some(avg), Some(max)) = (lines.get(i + 1), lines.get(i + 2)) else {
            panic!("{} is not followed by its duration lines", l.text());
        };
        assert_eq!(
            (avg.name.as_str(), avg.kind.as_str(), avg.tags.as_str()),
            (format!("{stem}.duration").as_str(), "ms", l.tags.as_str()),
            "line after {} is {}",
            l.text(),
            avg.text()
        );
        assert_eq!(
            (max.name.as_str(), max.kind.as_str(), max.tags.as_str()),
            (format!("{stem}.duration_max").as_str(), "ms", l.tags.as_str()),
            "second line after {} is {}",
            l.text(),
            max.text()
        );
        for d in [avg, max] {
            let frac = d.value.split_once('.').map(|(_, f)| f.len());
            assert_eq!(frac, Some(3), "duration not in ms to 3 decimals: {}", d.text());
        }
        let (a, m): (f64, f64) = (avg.value.parse().unwrap(), max.value.parse().unwrap());
        assert!(a >= 0.0 && a <= m, "avg {a} > max {m}: {} / {}", avg.text(), max.text());
        if l.count() == 1 {
            assert_eq!(avg.value, max.value, "one event: avg must equal max ({})", l.text());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Servers and requests
// ---------------------------------------------------------------------------------------------

/// A server that sends statsd to `c` every 200 ms, with ESUB_NODE_IP set, plus `extra`.
fn start(c: &Catcher, extra: &[(&str, &str)]) -> Server {
    let port = c.port_str();
    let mut env: Vec<(&str, &str)> = vec![
        ("DATADOG_SERVICE_HOST", "127.0.0.1"),
        ("DATADOG_SERVICE_PORT", &port),
        ("ESUB_METRIC_INTERVAL_MS", "200"),
        ("ESUB_NODE_IP", NODE_IP),
        ("ESUB_WORKERS", "2"),
    ];
    env.extend_from_slice(extra);
    Server::start(&env)
}

/// The host name the server reports (`/info` `name`), which the `esub_node:` tag carries.
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("read host name");
    raw.trim().to_string()
}

fn global_tags(env: Option<&str>) -> String {
    let mut g = String::new();
    if let Some(e) = env {
        g.push_str(&format!("environment:{e},"));
    }
    g.push_str(&format!("esub_ip:{NODE_IP},esub_node:{}", host_name()));
    g
}

/// The `/metrics` text (must be 200 with the Prometheus content type).
fn prom_text(s: &Server) -> String {
    let r = s.get("/metrics");
    assert_eq!(r.status, 200, "/metrics: {r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8"),
        "/metrics content type"
    );
    r.body_str()
}

/// Polls `/metrics` (which is not itself measured) until it has the line `want`.
#[track_caller]
fn wait_prom_line(s: &Server, want: &str) {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let text = prom_text(s);
        if text.lines().any(|l| l == want) {
            return;
        }
        assert!(Instant::now() < deadline, "/metrics never showed {want:?}; last:\n{text}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A sub parks on `k1` and gets `hello` from a rep (its connection is then closed by the
/// client), a rep with a token to a key nobody waits on gets 404, one `/info`; plus requests
/// that are not measured: `/ping`, a 404 path, a 405, `/metrics`. `prom` is the metric
/// prefix as `/metrics` spells it.
fn basic_requests(s: &Server, prom: &str) {
    let mut sub = s.sub("/sub/k1");
    wait_prom_line(s, &format!("{prom}_sub_waiting 1"));
    s.post("/rep/k1", b"hello").assert(200, b"OK");
    sub.read_response().assert_delivered(b"hello");
    sub.close();
    s.post("/rep/nokey?token=tok", b"x").assert_text(404, "Unknown key");
    let info = s.get("/info");
    assert_eq!(info.status, 200, "/info: {info:?}");
    s.get("/ping").assert(200, b"OK");
    s.get("/nope").assert_text(404, "Not Found");
    assert_eq!(s.post("/ping", b"").status, 405);
    prom_text(s);
}

/// Waits (bounded) until the counters after `mark` include `want`, then for three more
/// flushes in which nothing may be added; the sums over all datagrams must then be exactly
/// `want`. Returns every line that arrived.
#[track_caller]
fn expect_counters(c: &Catcher, mark: usize, want: &BTreeMap<(String, String), u64>) -> Vec<Line> {
    let covered = |lines: &[Line]| {
        let got = counters(lines);
        want.iter().all(|(k, n)| got.get(k).is_some_and(|g| g >= n))
    };
    let deadline = Instant::now() + STATSD_DEADLINE;
    while !covered(&c.lines_since(mark)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let quiet_until = Instant::now() + QUIET;
    while Instant::now() < quiet_until {
        thread::sleep(Duration::from_millis(20));
    }
    let lines = c.lines_since(mark);
    let got = counters(&lines);
    let show = |m: &BTreeMap<(String, String), u64>| -> String {
        m.iter().map(|((n, t), v)| format!("  {n}:{v}|c|#{t}\n")).collect()
    };
    assert!(
        &got == want,
        "statsd counters summed over all datagrams differ\n--- want:\n{}--- got:\n{}--- all lines:\n{}",
        show(want),
        show(&got),
        show_lines(&lines, 200)
    );
    lines
}

fn key(name: &str, tags: &str) -> (String, String) {
    (name.to_string(), tags.to_string())
}

// ---------------------------------------------------------------------------------------------
// DogStatsD
// ---------------------------------------------------------------------------------------------

#[test]
fn statsd_lines_and_tag_order_by_default() {
    let c = Catcher::start();
    let s = start(&c, &[]);
    let mark = c.mark();
    basic_requests(&s, "esub");
    let g = global_tags(None);
    let want: BTreeMap<_, _> = [
        (key("esub.requests", &format!("route:info,success:true,{g}")), 1),
        (key("esub.requests", &format!("route:sub,success:true,{g}")), 1),
        (key("esub.requests", &format!("route:rep,success:true,{g}")), 1),
        (key("esub.requests", &format!("route:rep,auth:true,success:false,{g}")), 1),
        (key("esub.sub_reply.requests", &format!("route:sub,success:true,{g}")), 1),
    ]
    .into_iter()
    .collect();
    let lines = expect_counters(&c, mark, &want);
    check_duration_triples(&lines);
    // Gauges carry the global tags only; nothing waits at the end.
    let last = c.wait_for(mark, STATSD_DEADLINE, "gauges at zero", |ls| {
        ls.iter().any(|l| l.text() == format!("esub.sub.waiting:0|g|#{g}"))
            && ls.iter().any(|l| l.text() == format!("esub.rep.waiting:0|g|#{g}"))
    });
    // The topics half (on by default) adds its gauges (API-topics.md section 9).
    let gauges =
        ["esub.sub.waiting", "esub.rep.waiting", "esub.topic.instances", "esub.topic.jobs"];
    for l in last.iter().filter(|l| l.kind == "g") {
        assert!(gauges.contains(&l.name.as_str()), "unexpected gauge {}", l.text());
        assert_eq!(l.tags, g, "gauge tags: {}", l.text());
    }
    for l in &last {
        assert!(l.name.starts_with("esub."), "line without the default prefix: {}", l.text());
        assert!(!l.tags.contains("key:"), "key tag without ESUB_TAG_KEYS: {}", l.text());
        assert!(!l.tags.contains("environment:"), "environment tag while unset: {}", l.text());
    }
}

#[test]
fn statsd_key_and_environment_tags_and_prefix() {
    let c = Catcher::start();
    let s = start(
        &c,
        &[
            ("ESUB_TAG_KEYS", "1"),
            ("ESUB_ENVIRONMENT_NAME", "staging"),
            ("ESUB_METRIC_PREFIX", "relay"),
        ],
    );
    let mark = c.mark();
    basic_requests(&s, "relay");
    let g = global_tags(Some("staging"));
    let want: BTreeMap<_, _> = [
        (key("relay.requests", &format!("route:info,success:true,{g}")), 1),
        (key("relay.requests", &format!("route:sub,key:k1,success:true,{g}")), 1),
        (key("relay.requests", &format!("route:rep,key:k1,success:true,{g}")), 1),
        (key("relay.requests", &format!("route:rep,key:nokey,auth:true,success:false,{g}")), 1),
        (key("relay.sub_reply.requests", &format!("route:sub,key:k1,success:true,{g}")), 1),
    ]
    .into_iter()
    .collect();
    let lines = expect_counters(&c, mark, &want);
    check_duration_triples(&lines);
    let lines = c.wait_for(mark, STATSD_DEADLINE, "gauges", |ls| {
        ls.iter().any(|l| l.text() == format!("relay.sub.waiting:0|g|#{g}"))
            && ls.iter().any(|l| l.text() == format!("relay.rep.waiting:0|g|#{g}"))
    });
    for l in &lines {
        assert!(l.name.starts_with("relay."), "ESUB_METRIC_PREFIX not applied: {}", l.text());
    }
}

/// A delivered sub counts as one `route:sub` success even when its client keeps the
/// connection and sends another request on it (as `requests` sessions and curl do).
#[test]
fn statsd_delivered_sub_counted_on_a_kept_alive_connection() {
    let c = Catcher::start();
    let s = start(&c, &[]);
    let g = global_tags(None);
    let mark = c.mark();
    let mut sub = s.sub("/sub/ka");
    wait_prom_line(&s, "esub_sub_waiting 1");
    s.post("/rep/ka", b"v").assert(200, b"OK");
    sub.read_response().assert_delivered(b"v");
    assert_eq!(sub.get("/info").status, 200, "the sub's connection serves the next request");
    let want: BTreeMap<_, _> = [
        (key("esub.requests", &format!("route:sub,success:true,{g}")), 1),
        (key("esub.requests", &format!("route:rep,success:true,{g}")), 1),
        (key("esub.requests", &format!("route:info,success:true,{g}")), 1),
        (key("esub.sub_reply.requests", &format!("route:sub,success:true,{g}")), 1),
    ]
    .into_iter()
    .collect();
    let lines = expect_counters(&c, mark, &want);
    check_duration_triples(&lines);
}

/// `P.sub.waiting` counts parked subs plus psub members, `P.rep.waiting` open `/prep` sockets.
#[test]
fn statsd_gauges_follow_waiting_subs_members_and_prep_sockets() {
    let c = Catcher::start();
    let s = start(&c, &[]);
    let g = global_tags(None);
    let gauge = |name: &str, v: u64| format!("esub.{name}:{v}|g|#{g}");
    let seen = |mark: usize, want: Vec<String>| {
        c.wait_for(mark, STATSD_DEADLINE, &format!("{want:?}"), |ls| {
            want.iter().all(|w| ls.iter().any(|l| &l.text() == w))
        });
    };
    seen(c.mark(), vec![gauge("sub.waiting", 0), gauge("rep.waiting", 0)]);

    let mut sub = s.sub("/sub/g1");
    wait_prom_line(&s, "esub_sub_waiting 1");
    seen(c.mark(), vec![gauge("sub.waiting", 1), gauge("rep.waiting", 0)]);

    let mut member = ws_join(&s, "/psub/g2");
    wait_prom_line(&s, "esub_sub_waiting 2");
    let mut prep = ws_join(&s, "/prep");
    wait_prom_line(&s, "esub_rep_waiting 1");
    seen(c.mark(), vec![gauge("sub.waiting", 2), gauge("rep.waiting", 1)]);

    s.post("/rep/g1", b"x").assert(200, b"OK");
    sub.read_response().assert_delivered(b"x");
    member.close(None).unwrap();
    prep.close(None).unwrap();
    wait_prom_line(&s, "esub_sub_waiting 0");
    wait_prom_line(&s, "esub_rep_waiting 0");
    seen(c.mark(), vec![gauge("sub.waiting", 0), gauge("rep.waiting", 0)]);
}

/// A rep to a psub member (`psub_reply`) and a rep sent over `/prep` (`prep_message`).
#[test]
fn statsd_psub_reply_and_prep_message_series() {
    let c = Catcher::start();
    let s = start(&c, &[]);
    let g = global_tags(None);
    let mark = c.mark();
    let mut member = ws_join(&s, "/psub/pk?token=pt");
    s.post("/rep/pk?token=pt", b"one").assert(200, b"OK");
    assert_eq!(recv_data(&mut member), b"one");
    let mut prep = ws_join(&s, "/prep?confirm=1");
    let frame = r#"{"key": "pk", "token": "pt", "data": "two"}"#;
    prep.send(Message::text(frame)).unwrap();
    assert_eq!(recv_data(&mut member), b"two");
    assert_eq!(recv_data(&mut prep), b"ok");
    member.close(None).unwrap();
    prep.close(None).unwrap();
    let want: BTreeMap<_, _> = [
        (key("esub.requests", &format!("route:psub,auth:true,success:true,{g}")), 1),
        (key("esub.requests", &format!("route:prep,success:true,{g}")), 1),
        (key("esub.requests", &format!("route:rep,auth:true,success:true,{g}")), 1),
        (key("esub.psub_reply.requests", &format!("route:psub,auth:true,success:true,{g}")), 1),
        (key("esub.prep_message.requests", &format!("route:prep,auth:true,success:true,{g}")), 1),
    ]
    .into_iter()
    .collect();
    let lines = expect_counters(&c, mark, &want);
    check_duration_triples(&lines);
}

/// Receipt mode: the rep a member confirmed carries `confirmed:true`, after `auth`, before
/// `success`; so does the psub reply.
#[test]
fn statsd_confirmed_tag_in_receipt_mode() {
    let c = Catcher::start();
    let s = start(&c, &[("ESUB_CONFIRM_RECEIPT", "1"), ("ESUB_TAG_KEYS", "1")]);
    let g = global_tags(None);
    let mark = c.mark();
    let mut member = ws_join(&s, "/psub/ck");
    let rep = thread::spawn({
        let addr = s.addr;
        move || common::Client::connect(addr).post("/rep/ck?token=", b"m")
    });
    assert_eq!(recv_data(&mut member), b"m");
    member.send(Message::text("ok")).unwrap();
    rep.join().unwrap().assert(200, b"OK");
    member.close(None).unwrap();
    let want: BTreeMap<_, _> = [
        (key("esub.requests", &format!("route:psub,key:ck,success:true,{g}")), 1),
        (key("esub.requests", &format!("route:rep,key:ck,confirmed:true,success:true,{g}")), 1),
        (
            key(
                "esub.psub_reply.requests",
                &format!("route:psub,key:ck,confirmed:true,success:true,{g}"),
            ),
            1,
        ),
    ]
    .into_iter()
    .collect();
    let lines = expect_counters(&c, mark, &want);
    check_duration_triples(&lines);
}

/// `Udp: ... RcvbufErrors` from /proc/net/snmp: datagrams our own kernel queue dropped.
fn udp_rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let names: Vec<&str> = udp.next()?.split_whitespace().collect();
    let values: Vec<&str> = udp.next()?.split_whitespace().collect();
    let i = names.iter().position(|n| *n == "RcvbufErrors")?;
    values.get(i)?.parse().ok()
}

/// 10,000 reps to distinct keys with key tags on: many buckets, many datagrams. Each datagram
/// stays within 1432 bytes, several lines share datagrams, and the `route:rep` counts add up to
/// exactly the reps sent, each key exactly once.
#[test]
fn statsd_burst_of_distinct_keys_fits_datagrams_and_adds_up() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 2500;
    const BATCH: usize = 100;
    let c = Catcher::start();
    let s = start(&c, &[("ESUB_TAG_KEYS", "1")]);
    let g = global_tags(None);
    let rcvbuf_before = udp_rcvbuf_errors();
    let mark = c.mark();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let addr = s.addr;
            thread::spawn(move || {
                let mut client = common::Client::connect(addr);
                for start in (0..PER_THREAD).step_by(BATCH) {
                    let mut req = Vec::new();
                    for i in start..start + BATCH {
                        write!(
                            req,
                            "POST /rep/burst-{t}-{i:05} HTTP/1.1\r\nHost: esub\r\nContent-Length: 1\r\n\r\nx"
                        )
                        .unwrap();
                    }
                    client.send(&req);
                    for _ in 0..BATCH {
                        client.read_response().assert_text(404, "Unknown key");
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("burst thread");
    }
    let total = (THREADS * PER_THREAD) as u64;
    let rep_sum = |lines: &[Line]| -> u64 {
        lines
            .iter()
            .filter(|l| l.name == "esub.requests" && l.tags.starts_with("route:rep,"))
            .map(Line::count)
            .sum()
    };
    // Wait until the sum reaches the target, or stops growing for a while.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut last, mut since) = (u64::MAX, Instant::now());
    loop {
        let sum = rep_sum(&c.lines_since(mark));
        if sum >= total {
            break;
        }
        if sum != last {
            (last, since) = (sum, Instant::now());
        }
        if since.elapsed() > Duration::from_secs(3) || Instant::now() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    // Three more flushes must add nothing (nothing doubled).
    let quiet_until = Instant::now() + QUIET;
    while Instant::now() < quiet_until {
        thread::sleep(Duration::from_millis(20));
    }
    let datagrams: Vec<Vec<u8>> = c.all()[mark..].to_vec();
    let lines = c.lines_since(mark);
    let dropped = prom_text(&s)
        .lines()
        .find_map(|l| l.strip_prefix("esub_statsd_dropped_total ").map(str::to_string));
    let rcvbuf_after = udp_rcvbuf_errors();
    let sum = rep_sum(&lines);
    assert_eq!(
        sum,
        total,
        "sum of esub.requests for route:rep over {} datagrams; server's esub_statsd_dropped_total \
         = {dropped:?}; kernel UDP RcvbufErrors before/after = {rcvbuf_before:?}/{rcvbuf_after:?}",
        datagrams.len()
    );
    for d in &datagrams {
        assert!(
            d.len() <= MAX_DATAGRAM,
            "datagram of {} bytes (limit {MAX_DATAGRAM}): {:?}...",
            d.len(),
            String::from_utf8_lossy(&d[..200])
        );
    }
    assert!(
        datagrams.iter().any(|d| d.iter().filter(|&&b| b == b'\n').count() >= 2),
        "no datagram carries several lines"
    );
    // Each key exactly once, with its tags in order.
    let mut per_key: HashMap<String, u64> = HashMap::new();
    for l in lines.iter().filter(|l| l.name == "esub.requests") {
        let k = l
            .tags
            .strip_prefix("route:rep,key:")
            .and_then(|rest| rest.strip_suffix(&format!(",success:false,{g}")))
            .unwrap_or_else(|| panic!("unexpected requests line {}", l.text()));
        *per_key.entry(k.to_string()).or_insert(0) += l.count();
    }
    assert_eq!(per_key.len(), THREADS * PER_THREAD, "distinct keys counted");
    for t in 0..THREADS {
        for i in 0..PER_THREAD {
            let k = format!("burst-{t}-{i:05}");
            assert_eq!(per_key.get(&k), Some(&1), "count of key {k}");
        }
    }
    check_duration_triples(&lines);
    assert_eq!(dropped.as_deref(), Some("0"), "server counted dropped statsd datagrams");
}

/// An unresolvable DATADOG_SERVICE_HOST: one warning, and the server works as usual.
#[test]
fn unresolvable_statsd_host_warns_once_and_server_runs() {
    let s = Server::start(&[
        ("DATADOG_SERVICE_HOST", "nonexistent.invalid"),
        ("ESUB_METRIC_INTERVAL_MS", "200"),
    ]);
    // The topics half's open-mode warning is not about statsd.
    let warns = |s: &Server| -> Vec<String> {
        let lines = s.stderr();
        let warn = |l: &&str| l.starts_with("WARN") && !l.starts_with("WARN topics auth is open");
        lines.lines().filter(warn).map(str::to_string).collect()
    };
    let deadline = Instant::now() + IO_TIMEOUT;
    while warns(&s).is_empty() {
        assert!(Instant::now() < deadline, "no WARN line; stderr:\n{}", s.stderr());
        thread::sleep(Duration::from_millis(5));
    }
    s.get("/ping").assert(200, b"OK");
    let mut sub = s.sub("/sub/u1");
    s.wait_for_key("u1");
    s.post("/rep/u1", b"still works").assert(200, b"OK");
    sub.read_response().assert_delivered(b"still works");
    // Several flush intervals later: still exactly one warning, still serving.
    let until = Instant::now() + QUIET;
    while Instant::now() < until {
        thread::sleep(Duration::from_millis(20));
    }
    s.get("/ping").assert(200, b"OK");
    let text = prom_text(&s);
    assert!(text.contains("esub_replies_total{kind=\"sub_reply\",success=\"true\"} 1\n"), "{text}");
    let w = warns(&s);
    assert_eq!(w.len(), 1, "expected one WARN line, got {w:?}");
    assert!(w[0].contains("nonexistent.invalid"), "the warning should name the host: {:?}", w[0]);
}

// ---------------------------------------------------------------------------------------------
// Prometheus
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_prom(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("bad labels {line:?}"));
                let labels = body
                    .split(',')
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("{line:?}"));
                        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                        (k.to_string(), v.unwrap_or_else(|| panic!("{line:?}")).to_string())
                    })
                    .collect();
                (n.to_string(), labels)
            }
        };
        out.push(Sample { name, labels, value });
    }
    out
}

/// Checks every histogram of `name` by its `label`: `le` ascending to `+Inf`, counts
/// cumulative, `+Inf` bucket equal to `_count`; returns `_count` per label value.
#[track_caller]
fn check_histograms(samples: &[Sample], name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut counts = BTreeMap::new();
    let values: Vec<String> = samples
        .iter()
        .filter(|s| s.name == format!("{name}_count"))
        .map(|s| s.labels[label].clone())
        .collect();
    assert!(!values.is_empty(), "no {name}_count samples");
    for v in values {
        let of = |suffix: &str| -> Vec<&Sample> {
            samples
                .iter()
                .filter(|s| s.name == format!("{name}{suffix}") && s.labels[label] == v)
                .collect()
        };
        let buckets = of("_bucket");
        assert!(!buckets.is_empty(), "{name}{{{label}={v}}} has no buckets");
        let mut prev_le = f64::NEG_INFINITY;
        let mut prev_count = 0.0;
        for b in &buckets {
            let le = match b.labels["le"].as_str() {
                "+Inf" => f64::INFINITY,
                x => x.parse().unwrap_or_else(|_| panic!("bad le in {b:?}")),
            };
            assert!(le > prev_le, "{name}{{{label}={v}}}: le not ascending at {b:?}");
            assert!(b.value >= prev_count, "{name}{{{label}={v}}}: not cumulative at {b:?}");
            (prev_le, prev_count) = (le, b.value);
        }
        assert_eq!(buckets.last().unwrap().labels["le"], "+Inf", "{name}{{{label}={v}}}");
        let count = of("_count");
        let sum = of("_sum");
        assert_eq!((count.len(), sum.len()), (1, 1), "{name}{{{label}={v}}}: _count/_sum");
        assert_eq!(prev_count, count[0].value, "{name}{{{label}={v}}}: +Inf bucket != _count");
        assert!(sum[0].value >= 0.0, "{name}{{{label}={v}}}: negative _sum");
        counts.insert(v, count[0].value);
    }
    counts
}

#[test]
fn prometheus_counters_and_histograms_are_consistent() {
    let c = Catcher::start();
    let s = start(&c, &[]);
    let mut sub = s.sub("/sub/pk?token=t1");
    wait_prom_line(&s, "esub_sub_waiting 1");
    s.post("/rep/pk?token=t1", b"body").assert(200, b"OK");
    sub.read_response().assert_delivered(b"body");
    sub.close();
    s.post("/rep/none", b"x").assert_text(404, "Unknown key");
    assert_eq!(s.get("/info").status, 200);
    assert_eq!(s.get("/keys").status, 204);
    s.get("/ping").assert(200, b"OK");
    s.get("/nope").assert_text(404, "Not Found");
    // The sub is counted once its connection is done with; wait for its line.
    let deadline = Instant::now() + IO_TIMEOUT;
    let text = loop {
        let text = prom_text(&s);
        if text.contains("esub_requests_total{route=\"sub\"") || Instant::now() > deadline {
            break text;
        }
        thread::sleep(Duration::from_millis(5));
    };
    for want in [
        "# TYPE esub_requests_total counter",
        "# TYPE esub_replies_total counter",
        "# TYPE esub_request_duration_seconds histogram",
        "# TYPE esub_reply_duration_seconds histogram",
        "# TYPE esub_sub_waiting gauge",
        "# TYPE esub_rep_waiting gauge",
        "# TYPE esub_connections gauge",
        "# TYPE esub_statsd_dropped_total counter",
        "# TYPE esub_uptime_seconds gauge",
    ] {
        assert!(text.lines().any(|l| l == want), "missing {want:?} in:\n{text}");
    }
    let requests: Vec<&str> =
        text.lines().filter(|l| l.starts_with("esub_requests_total{")).collect();
    let lbl = |route: &str, success: bool, auth: bool| {
        format!(
            "esub_requests_total{{route=\"{route}\",success=\"{success}\",auth=\"{auth}\",confirmed=\"false\"}} 1"
        )
    };
    let mut want = vec![
        lbl("info", true, false),
        lbl("keys", true, false),
        lbl("sub", true, true),
        lbl("rep", true, true),
        lbl("rep", false, false),
    ];
    want.sort();
    let mut got: Vec<String> = requests.iter().map(|l| l.to_string()).collect();
    got.sort();
    assert_eq!(got, want, "esub_requests_total lines");
    for (kind, success, n) in [
        ("sub_reply", true, 1),
        ("sub_reply", false, 0),
        ("psub_reply", true, 0),
        ("psub_reply", false, 0),
        ("prep_message", true, 0),
        ("prep_message", false, 0),
    ] {
        let line = format!("esub_replies_total{{kind=\"{kind}\",success=\"{success}\"}} {n}");
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    let samples = parse_prom(&text);
    let by_route = check_histograms(&samples, "esub_request_duration_seconds", "route");
    for (route, n) in [("info", 1.0), ("keys", 1.0), ("sub", 1.0), ("rep", 2.0), ("psub", 0.0)] {
        assert_eq!(by_route.get(route), Some(&n), "histogram _count for route {route}");
    }
    let by_kind = check_histograms(&samples, "esub_reply_duration_seconds", "kind");
    assert_eq!(by_kind.get("sub_reply"), Some(&1.0), "reply histogram _count for sub_reply");
    let one = |name: &str| -> f64 {
        let v: Vec<&Sample> = samples.iter().filter(|s| s.name == name).collect();
        assert_eq!(v.len(), 1, "{name} samples");
        v[0].value
    };
    assert_eq!(one("esub_sub_waiting"), 0.0);
    assert_eq!(one("esub_rep_waiting"), 0.0);
    assert!(one("esub_connections") >= 1.0, "the /metrics connection itself is open");
    assert_eq!(one("esub_statsd_dropped_total"), 0.0);
    assert!(one("esub_uptime_seconds") >= 0.0);
}

// ---------------------------------------------------------------------------------------------
// /info
// ---------------------------------------------------------------------------------------------

#[test]
fn info_names_host_ip_version_port_and_workers() {
    let s = Server::start(&[("ESUB_NODE_IP", NODE_IP), ("ESUB_WORKERS", "3")]);
    let r = s.get("/info");
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.body_str();
    assert!(body.starts_with("{\"name\":"), "/info must start with \"name\": {body}");
    let j = parse_json(&body).unwrap_or_else(|e| panic!("/info not JSON ({e}): {body}"));
    assert_eq!(
        j.object_keys(),
        vec!["name", "ip", "version", "port", "workers", "uptime_s"],
        "{body}"
    );
    assert_eq!(j.get("name").and_then(Json::as_str), Some(host_name().as_str()));
    assert_eq!(j.get("ip").and_then(Json::as_str), Some(NODE_IP));
    assert_eq!(j.get("version").and_then(Json::as_str), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(j.get("port"), Some(&Json::Num(f64::from(s.port()))));
    assert_eq!(j.get("workers"), Some(&Json::Num(3.0)));
    match j.get("uptime_s") {
        Some(Json::Num(n)) => assert!(*n >= 0.0 && n.fract() == 0.0, "uptime_s {n}"),
        other => panic!("uptime_s: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// websocket helpers
// ---------------------------------------------------------------------------------------------

type Ws = WebSocket<std::net::TcpStream>;

#[track_caller]
fn ws_join(s: &Server, path: &str) -> Ws {
    let t = std::net::TcpStream::connect_timeout(&s.addr, IO_TIMEOUT).expect("connect");
    t.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    t.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    t.set_nodelay(true).unwrap();
    let url = format!("ws://{}{}", s.addr, path);
    match tungstenite::client(url.as_str(), t) {
        Ok((ws, resp)) => {
            assert_eq!(resp.status().as_u16(), 101, "{path}: {resp:?}");
            ws
        }
        Err(e) => panic!("websocket handshake for {path} failed: {e}"),
    }
}

/// The next data message's bytes (pings and pongs skipped).
#[track_caller]
fn recv_data(ws: &mut Ws) -> Vec<u8> {
    loop {
        match ws.read() {
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Text(t)) => return t.as_bytes().to_vec(),
            Ok(Message::Binary(b)) => return b.to_vec(),
            Ok(other) => panic!("expected a data message, got {other:?}"),
            Err(e) => panic!("websocket read failed: {e}"),
        }
    }
}

/// API-topics 9: with ESUB_TAG_KEYS the topics routes' lines carry `topic:` (the raw name) and,
/// where a group is named, `group:`; without it they carry neither.
#[test]
fn topics_requests_carry_topic_and_group_tags_with_tag_keys() {
    let dir = std::env::temp_dir().join(format!("esub-metrics-topics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_string_lossy().into_owned();
    for tag_keys in [true, false] {
        let c = Catcher::start();
        let mut extra = vec![("ESUB_DATA_DIR", d.as_str()), ("ESUB_SUB_TIMEOUT_MS", "100")];
        if tag_keys {
            extra.push(("ESUB_TAG_KEYS", "1"));
        }
        let s = start(&c, &extra);
        let mark = c.mark();
        let mut cl = s.client();
        cl.send(b"POST /v1/msgs/orders/v1 HTTP/1.1\r\nHost: e\r\nAppid: app1\r\nContent-Length: 2\r\n\r\nhi");
        assert_eq!(cl.read_response().status, 201);
        cl.send(
            b"GET /v1/msgs/app1/orders/v1?group=billing HTTP/1.1\r\nHost: e\r\nAppid: app2\r\n\r\n",
        );
        assert_eq!(cl.read_response().status, 200);
        let has = |ls: &[Line], route: &str, tag: &str| {
            ls.iter().any(|l| {
                l.name == "esub.requests"
                    && l.tags.split(',').any(|t| t == route)
                    && l.tags.split(',').any(|t| t == tag)
            })
        };
        if tag_keys {
            c.wait_for(mark, STATSD_DEADLINE, "topic and group tags", |ls| {
                has(ls, "route:pub", "topic:app1.orders.v1")
                    && has(ls, "route:sub", "topic:app1.orders.v1")
                    && has(ls, "route:sub", "group:billing")
            });
        } else {
            let ls = c.wait_for(mark, STATSD_DEADLINE, "the pub and sub lines", |ls| {
                has(ls, "route:pub", "success:true") && has(ls, "route:sub", "success:true")
            });
            assert!(
                !ls.iter().any(|l| l.tags.contains("topic:") || l.tags.contains("group:")),
                "topic or group tags without ESUB_TAG_KEYS:\n{}",
                show_lines(&ls, 40)
            );
        }
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
