//! One topics run on one mio poll: producer connections publishing (one request or one
//! pipelined round in flight each, or at a fixed rate in the end-to-end scenario) and, end to
//! end, the consumers of one group reading and acking; then warm-up, measured window and drain,
//! as the relay runs do.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Poll, Token};

use super::config::{Config, Scenario, Target};
use super::esub::{self, Ended, SubStream};
use super::payload::{self, Books};
use super::redis;
use super::resp::{self, Value};
use super::setup;
use crate::conn::{Broken, Conn, Link, poll_events};
use crate::cpu::{Mark, ServerProbe};
use crate::hist::Histogram;
use crate::http;
use crate::outcome::{Errors, Measured};
use crate::pace::Pacer;

/// Events per poll: one per connection at most, and there are at most a few hundred.
const EVENTS: usize = 1024;
/// Longest sleep in poll: phase ends are checked at least this often.
const MAX_POLL_WAIT: Duration = Duration::from_millis(50);
/// The pacing timer's token: past every connection's.
const PACER: Token = Token(usize::MAX);
/// The topic's version in esub's paths.
pub const VER: &str = "v1";
/// The consumer group of the end-to-end scenario.
pub const GROUP: &str = "g";
/// How long a Redis consumer's read blocks on an empty stream: short enough that a read is
/// always outstanding, long enough to cost nothing while idle.
const BLOCK_MS: u64 = 1000;
/// esub without `GET /v1/status`: how long to let the consumers' first requests join the group
/// before publishing, so no partition moves (and redelivers) once messages flow.
const JOIN_SETTLE: Duration = Duration::from_millis(300);

struct Producer {
    conn: Option<Conn>,
    inflight: Option<Inflight>,
}

/// The request (or pipelined round) a producer waits on.
#[derive(Debug, Clone, Copy)]
struct Inflight {
    sent_at: Instant,
    /// Sequence number of its first message; the others follow.
    first: u64,
    count: u64,
    /// Redis: replies read so far, one per `XADD`.
    answered: u64,
    stored: u64,
}

struct Consumer {
    conn: Option<Conn>,
    /// Its read is written and not yet answered.
    reading: bool,
    /// esub: the responses being decoded.
    stream: SubStream,
    /// esub: last offset delivered per partition and not yet acked.
    acks: BTreeMap<i32, i64>,
    /// Redis: ids delivered per stream and not yet acked.
    ids: BTreeMap<Vec<u8>, Vec<Vec<u8>>>,
    /// Redis: `XACK` replies still due before the read's.
    acks_due: usize,
    /// Redis: its streams (esub assigns partitions itself) and its consumer name.
    streams: Vec<String>,
    name: String,
}

/// What a run counted; the window's figures and the totals.
#[derive(Default)]
pub struct Tally {
    /// Requests (or pipelined rounds) answered in the window, and their messages stored.
    pub requests: u64,
    pub msgs: u64,
    /// Request to answer, per request, in the window.
    pub pub_hist: Histogram,
    /// Pub written to delivery read, per message sent in the window (end to end).
    pub e2e_hist: Histogram,
    /// First deliveries read in the window.
    pub delivered: u64,
    /// Messages written in the window.
    pub offered: u64,
    /// End to end: most messages due and not yet written, in the window.
    pub max_backlog: u64,
    pub sent_total: u64,
    pub stored_total: u64,
    pub failed_total: u64,
}

/// Everything the report needs.
pub struct Figures {
    pub tally: Tally,
    pub books: Books,
    pub measured: Measured,
    pub unanswered: u64,
    pub errors: Errors,
    pub aborted: Option<String>,
    pub server_pids: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Warmup,
    Measure,
    Drain,
}

pub struct Run<'a> {
    cfg: &'a Config,
    topic: String,
    poll: Poll,
    producers: Vec<Producer>,
    consumers: Vec<Consumer>,
    idle: Vec<usize>,
    /// Redis: the topic's streams, by partition.
    streams: Vec<String>,
    next_stream: usize,
    next_seq: u64,
    scratch: Vec<u8>,
    body: Vec<u8>,
    epoch: Instant,
    /// Send times (ns since `epoch`) of the messages the end-to-end latency counts.
    window_ns: (u64, u64),
    measuring: bool,
    sending: bool,
    inflight: usize,
    open: usize,
    /// End to end: deliveries are checked (lost, doubled) only then.
    track: bool,
    books: Books,
    tally: Tally,
    errors: Errors,
    error_budget: u64,
    aborted: Option<String>,
    /// End to end: wakes the loop when the next message is due (`pace`).
    pacer: Option<Pacer>,
}

impl<'a> Run<'a> {
    /// A run on `topic` (new for every run, so no run meets another's messages).
    pub fn new(cfg: &'a Config, topic: String) -> Result<Run<'a>, String> {
        let consumers = if cfg.scenario == Scenario::EndToEnd { cfg.consumers } else { 0 };
        let streams: Vec<String> = (0..cfg.partitions).map(|p| redis::stream(&topic, p)).collect();
        Ok(Run {
            cfg,
            poll: Poll::new().map_err(|e| format!("poll: {e}"))?,
            producers: (0..cfg.conns).map(|_| Producer { conn: None, inflight: None }).collect(),
            consumers: (0..consumers)
                .map(|i| Consumer {
                    conn: None,
                    reading: false,
                    stream: SubStream::default(),
                    acks: BTreeMap::new(),
                    ids: BTreeMap::new(),
                    acks_due: 0,
                    streams: assigned(i, consumers, cfg.partitions)
                        .map(|p| streams[p].clone())
                        .collect(),
                    name: format!("c{i}"),
                })
                .collect(),
            idle: Vec::with_capacity(cfg.conns),
            streams,
            next_stream: 0,
            next_seq: 0,
            // One read takes a whole burst of answers or a batch of deliveries.
            scratch: vec![0; 256 * 1024],
            body: Vec::with_capacity(cfg.size),
            epoch: Instant::now(),
            window_ns: (0, 0),
            measuring: false,
            sending: false,
            inflight: 0,
            open: 0,
            track: consumers > 0,
            books: Books::default(),
            tally: Tally::default(),
            errors: Errors::default(),
            error_budget: 1000,
            aborted: None,
            pacer: None,
            topic,
        })
    }

    /// Creates the topic or the group, opens every connection, has every consumer's first read
    /// written and (esub) joined to the group.
    pub fn prepare(&mut self) -> Result<(), String> {
        let cfg = self.cfg;
        let deadline = Instant::now() + cfg.ready_timeout;
        match cfg.target {
            Target::Esub => {
                setup::esub_topic(cfg.addr, &self.topic, VER, cfg.partitions, cfg.ready_timeout)?
            }
            Target::Redis if self.track => {
                setup::redis_group(cfg.addr, &self.topic, cfg.partitions, GROUP, cfg.ready_timeout)?
            }
            Target::Redis => {}
        }
        for p in 0..self.producers.len() {
            self.connect_producer(p)?;
        }
        for c in 0..self.consumers.len() {
            self.connect_consumer(c)?;
        }
        let mut events = Events::with_capacity(EVENTS);
        let ready = |r: &Run| {
            r.open == r.producers.len()
                && r.consumers.iter().all(|c| {
                    c.reading
                        && c.conn.as_ref().is_some_and(|c| c.link == Link::Open && !c.writing())
                })
        };
        while !ready(self) {
            if Instant::now() >= deadline || self.aborted.is_some() {
                return Err(format!(
                    "{} of {} producer connections open, consumers ready: {}; {}",
                    self.open,
                    self.producers.len(),
                    self.consumers.iter().filter(|c| c.reading).count(),
                    self.errors.first.join("; ")
                ));
            }
            self.poll_once(&mut events, MAX_POLL_WAIT)?;
        }
        if cfg.target == Target::Esub && self.track {
            self.await_join(deadline, &mut events)?;
        }
        Ok(())
    }

    /// Until esub holds as many instances as there are consumers (`GET /v1/status`), or for a
    /// short settle when it does not say.
    fn await_join(&mut self, deadline: Instant, events: &mut Events) -> Result<(), String> {
        let want = self.consumers.len() as u64;
        let settle_end = Instant::now() + JOIN_SETTLE;
        loop {
            let now = Instant::now();
            match setup::esub_instances(self.cfg.addr, self.cfg.ready_timeout)? {
                Some(n) if n >= want => return Ok(()),
                Some(n) if now >= deadline => {
                    return Err(format!("{n} of {want} consumer instances joined"));
                }
                None if now >= settle_end => return Ok(()),
                _ => {}
            }
            self.poll_once(events, Duration::from_millis(20))?;
        }
    }

    /// Warm-up, measured window and drain; CPU is sampled at the window's two ends.
    pub fn traffic(&mut self, probe: Option<&ServerProbe>) -> Result<Measured, String> {
        let mut events = Events::with_capacity(EVENTS);
        let start = Instant::now();
        let warm_end = start + self.cfg.warmup;
        let window_end = warm_end + self.cfg.duration;
        let mut drain_end = window_end + self.cfg.grace;
        self.window_ns = (self.ns(warm_end), self.ns(window_end));
        let mut phase = Phase::Warmup;
        let mut cpu_start = Mark::now(probe);
        let mut began = start;
        let mut result = Measured::default();
        if self.cfg.scenario == Scenario::EndToEnd {
            self.pacer =
                Some(Pacer::new(self.poll.registry(), PACER).map_err(|e| format!("timerfd: {e}"))?);
        }
        self.sending = true;
        loop {
            let now = Instant::now();
            if phase == Phase::Warmup && now >= warm_end {
                phase = Phase::Measure;
                cpu_start = Mark::now(probe);
                began = Instant::now();
                self.measuring = true;
            }
            if phase == Phase::Measure && (now >= window_end || self.aborted.is_some()) {
                result = Measured::since(now - began, &cpu_start, probe);
                self.measuring = false;
                self.sending = false;
                phase = Phase::Drain;
                drain_end = now + self.cfg.grace;
            }
            let settled = self.inflight == 0 && self.books.outstanding() == 0;
            if phase == Phase::Drain && (settled || now >= drain_end) {
                return Ok(result);
            }
            if phase != Phase::Drain && self.aborted.is_some() {
                self.sending = false;
            }
            let mut wait = match phase {
                Phase::Warmup => warm_end,
                Phase::Measure => window_end,
                Phase::Drain => drain_end,
            }
            .saturating_duration_since(Instant::now())
            .min(MAX_POLL_WAIT);
            if let Some(next) = self.dispatch(start) {
                wait = wait.min(next.saturating_duration_since(Instant::now()));
                if let Some(pacer) = &mut self.pacer {
                    pacer.arm(next).map_err(|e| format!("timerfd: {e}"))?;
                }
            }
            self.poll_once(&mut events, wait)?;
        }
    }

    pub fn figures(self, measured: Measured, probe: Option<&ServerProbe>) -> Figures {
        Figures {
            tally: self.tally,
            books: self.books,
            measured,
            unanswered: self.inflight as u64,
            errors: self.errors,
            aborted: self.aborted,
            server_pids: probe.map(|p| p.pids().to_vec()).unwrap_or_default(),
        }
    }

    /// Ends the run's connections (esub's instances with them) and drops Redis's streams.
    pub fn finish(&mut self) -> Result<(), String> {
        for c in self.producers.iter_mut().filter_map(|p| p.conn.as_mut()) {
            c.deregister(self.poll.registry());
        }
        for c in self.consumers.iter_mut().filter_map(|c| c.conn.as_mut()) {
            c.deregister(self.poll.registry());
        }
        self.producers.clear();
        self.consumers.clear();
        match self.cfg.target {
            Target::Redis => setup::redis_drop(
                self.cfg.addr,
                &self.topic,
                self.cfg.partitions,
                self.cfg.ready_timeout,
            ),
            Target::Esub => Ok(()),
        }
    }

    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Gives idle producers their next request while sending is on. End to end only as many
    /// messages as are due at the fixed rate since `start`; returns when the next one is due.
    fn dispatch(&mut self, start: Instant) -> Option<Instant> {
        if !self.sending {
            return None;
        }
        if self.cfg.scenario != Scenario::EndToEnd {
            while let Some(p) = self.idle.pop() {
                if let Err(b) = self.send(p) {
                    self.producer_broken(p, b);
                }
            }
            return None;
        }
        let rate = self.cfg.rate as f64;
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while self.next_seq < due {
            let Some(p) = self.idle.pop() else { break };
            if let Err(b) = self.send(p) {
                self.producer_broken(p, b);
            }
        }
        if self.measuring {
            self.tally.max_backlog = self.tally.max_backlog.max(due.saturating_sub(self.next_seq));
        }
        Some(start + Duration::from_secs_f64((self.next_seq + 1) as f64 / rate))
    }

    fn poll_once(&mut self, events: &mut Events, wait: Duration) -> Result<(), String> {
        poll_events(&mut self.poll, events, wait)?;
        let producers = self.producers.len();
        for ev in events.iter() {
            if ev.token() == PACER {
                if let Some(pacer) = &mut self.pacer {
                    pacer.fired();
                }
                continue;
            }
            let t = ev.token().0;
            if t < producers {
                if let Err(b) = self.producer_event(t, ev) {
                    self.producer_broken(t, b);
                }
            } else if let Err(b) = self.consumer_event(t - producers, ev) {
                self.consumer_broken(t - producers, b);
            }
        }
        Ok(())
    }

    fn connect_producer(&mut self, p: usize) -> Result<(), String> {
        let conn = Conn::connect(self.cfg.addr, None, self.poll.registry(), Token(p))
            .map_err(|e| format!("connect producer {p}: {e}"))?;
        self.producers[p].conn = Some(conn);
        Ok(())
    }

    fn connect_consumer(&mut self, c: usize) -> Result<(), String> {
        let token = Token(self.producers.len() + c);
        let conn = Conn::connect(self.cfg.addr, None, self.poll.registry(), token)
            .map_err(|e| format!("connect consumer {c}: {e}"))?;
        let cons = &mut self.consumers[c];
        cons.conn = Some(conn);
        cons.reading = false;
        cons.stream = SubStream::default();
        cons.acks_due = 0;
        Ok(())
    }

    /// Writes producer `p`'s next request: one pub, a batch pub, or a round of `XADD`s.
    fn send(&mut self, p: usize) -> Result<(), Broken> {
        let cfg = self.cfg;
        let producer = &mut self.producers[p];
        let Some(conn) = producer.conn.as_mut() else {
            return Err(Broken("producer without a connection".into()));
        };
        let now = Instant::now();
        let sent_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let count = cfg.batch as u64;
        let first = self.next_seq;
        conn.wbuf.clear();
        match cfg.target {
            Target::Esub if cfg.scenario == Scenario::Batch => {
                esub::batch_head(&mut conn.wbuf, &self.topic, VER, cfg.batch, cfg.size);
                for seq in first..first + count {
                    esub::batch_record(&mut conn.wbuf, |o| {
                        payload::write(o, seq, sent_ns, cfg.size)
                    });
                }
            }
            Target::Esub => {
                self.body.clear();
                payload::write(&mut self.body, first, sent_ns, cfg.size);
                if cfg.msg_id {
                    esub::pub_request_id(&mut conn.wbuf, &self.topic, VER, &self.body, first);
                } else {
                    esub::pub_request(&mut conn.wbuf, &self.topic, VER, &self.body);
                }
            }
            Target::Redis => {
                // Keyless: partitions in turn, as esub's round robin; a round stays on one
                // stream, as a batch pub's keyless records share one partition.
                let stream = &self.streams[self.next_stream];
                self.next_stream = (self.next_stream + 1) % self.streams.len();
                for seq in first..first + count {
                    self.body.clear();
                    payload::write(&mut self.body, seq, sent_ns, cfg.size);
                    redis::xadd(&mut conn.wbuf, stream, &self.body);
                }
            }
        }
        conn.begin_write();
        self.next_seq += count;
        producer.inflight = Some(Inflight { sent_at: now, first, count, answered: 0, stored: 0 });
        self.inflight += 1;
        self.tally.sent_total += count;
        if self.measuring {
            self.tally.offered += count;
        }
        if self.track {
            for seq in first..first + count {
                self.books.sent(seq);
            }
        }
        conn.flush().map(|_| ())
    }

    fn producer_event(&mut self, p: usize, ev: &Event) -> Result<(), Broken> {
        let Some(conn) = self.producers[p].conn.as_mut() else {
            return Ok(());
        };
        let step = conn.step(ev, &mut self.scratch)?;
        if step.connected {
            self.open += 1;
            self.idle.push(p);
        }
        if !step.read {
            return Ok(());
        }
        match self.cfg.target {
            Target::Esub => self.esub_answers(p),
            Target::Redis => self.redis_answers(p),
        }
    }

    fn esub_answers(&mut self, p: usize) -> Result<(), Broken> {
        loop {
            let producer = &mut self.producers[p];
            let Some(conn) = producer.conn.as_mut() else { return Ok(()) };
            let resp = match http::parse_response(&conn.rbuf) {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Broken(format!("pub response: {e:?}"))),
            };
            if (100..200).contains(&resp.status) {
                conn.consume(resp.len);
                continue;
            }
            let Some(mut f) = producer.inflight else {
                return Err(Broken(format!("a {} nobody asked for", resp.status)));
            };
            let body = resp.body(&conn.rbuf);
            if resp.status == 201 {
                let listed = esub::batch_answer_count(body) as u64;
                if self.cfg.scenario == Scenario::Batch && listed != f.count {
                    self.errors
                        .note(format!("a batch pub of {} answered {listed} offsets", f.count));
                }
                f.stored = f.count;
            } else {
                *self.errors.rep_status.entry(resp.status).or_default() += 1;
                let body = String::from_utf8_lossy(body).into_owned();
                self.errors.note(format!("pub answered {}: {body:?}", resp.status));
            }
            f.answered = f.count;
            let close = resp.close;
            conn.consume(resp.len);
            self.complete(p, f);
            if close {
                return Err(Broken("pub response had Connection: close".into()));
            }
        }
    }

    fn redis_answers(&mut self, p: usize) -> Result<(), Broken> {
        loop {
            let producer = &mut self.producers[p];
            let Some(conn) = producer.conn.as_mut() else { return Ok(()) };
            let (v, used) = match resp::parse(&conn.rbuf) {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Broken(format!("XADD reply: {e:?}"))),
            };
            let Some(f) = producer.inflight.as_mut() else {
                return Err(Broken(format!("a reply nobody asked for: {v:?}")));
            };
            match v {
                Value::Bulk(Some(_)) => f.stored += 1,
                Value::Error(e) => {
                    // Redis has no status: its error replies are counted under 0.
                    *self.errors.rep_status.entry(0).or_default() += 1;
                    self.errors.note(format!("XADD: {}", String::from_utf8_lossy(e)));
                }
                other => return Err(Broken(format!("XADD reply: {other:?}"))),
            }
            f.answered += 1;
            let done = *f;
            conn.consume(used);
            if done.answered == done.count {
                self.complete(p, done);
            }
        }
    }

    /// Producer `p`'s request is answered: book it, and the producer is idle again.
    fn complete(&mut self, p: usize, f: Inflight) {
        self.producers[p].inflight = None;
        self.inflight -= 1;
        self.tally.stored_total += f.stored;
        self.tally.failed_total += f.count - f.stored;
        if self.measuring {
            self.tally.requests += 1;
            self.tally.msgs += f.stored;
            self.tally.pub_hist.record(f.sent_at.elapsed().as_nanos() as u64);
        }
        if self.track && f.stored == f.count {
            for seq in f.first..f.first + f.count {
                self.books.stored(seq);
            }
        }
        self.check_budget();
        self.idle.push(p);
    }

    fn consumer_event(&mut self, c: usize, ev: &Event) -> Result<(), Broken> {
        let Some(conn) = self.consumers[c].conn.as_mut() else {
            return Ok(());
        };
        let step = conn.step(ev, &mut self.scratch)?;
        if step.connected {
            self.read(c)?;
        }
        if !step.read {
            return Ok(());
        }
        let now = self.ns(Instant::now());
        match self.cfg.target {
            Target::Esub => self.esub_deliveries(c, now),
            Target::Redis => self.redis_deliveries(c, now),
        }
    }

    fn esub_deliveries(&mut self, c: usize, now: u64) -> Result<(), Broken> {
        loop {
            let Run { consumers, books, tally, cfg, window_ns, measuring, .. } = self;
            let Consumer { conn, stream, acks, .. } = &mut consumers[c];
            let Some(conn) = conn.as_mut() else { return Ok(()) };
            let mut d = Deliveries {
                books,
                tally,
                window_ns: *window_ns,
                measuring: *measuring,
                size: cfg.size,
                now,
            };
            let (used, end) = stream
                .advance(&conn.rbuf, &mut |partition, offset, p| {
                    d.record(p);
                    let last = acks.entry(partition).or_insert(offset);
                    *last = (*last).max(offset);
                })
                .map_err(|e| Broken(format!("sub response: {e:?}")))?;
            conn.consume(used);
            match end {
                None => return Ok(()),
                Some(Ended::Batch { close } | Ended::Empty { close }) => {
                    if close {
                        return Err(Broken("sub response had Connection: close".into()));
                    }
                }
                Some(Ended::Refused { status, body }) => {
                    *self.errors.sub_status.entry(status).or_default() += 1;
                    self.errors.note(format!("sub answered {status}: {body:?}"));
                    self.check_budget();
                }
            }
            self.consumers[c].reading = false;
            self.read(c)?;
        }
    }

    fn redis_deliveries(&mut self, c: usize, now: u64) -> Result<(), Broken> {
        loop {
            let Run { consumers, books, tally, cfg, window_ns, measuring, errors, .. } = self;
            let Consumer { conn, ids, acks_due, .. } = &mut consumers[c];
            let Some(conn) = conn.as_mut() else { return Ok(()) };
            let (v, used) = match resp::parse(&conn.rbuf) {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Broken(format!("consumer reply: {e:?}"))),
            };
            if *acks_due > 0 {
                *acks_due -= 1;
                match v {
                    Value::Int(_) => {}
                    Value::Error(e) => errors.note(format!("XACK: {}", String::from_utf8_lossy(e))),
                    other => return Err(Broken(format!("XACK reply: {other:?}"))),
                }
                conn.consume(used);
                continue;
            }
            let mut d = Deliveries {
                books,
                tally,
                window_ns: *window_ns,
                measuring: *measuring,
                size: cfg.size,
                now,
            };
            let walked = redis::entries(&v, &mut |e| {
                d.record(e.payload);
                ids.entry(e.stream.to_vec()).or_default().push(e.id.to_vec());
            });
            conn.consume(used);
            if let Err(e) = walked {
                *errors.sub_status.entry(0).or_default() += 1;
                errors.note(e.0);
                self.check_budget();
            }
            self.consumers[c].reading = false;
            self.read(c)?;
        }
    }

    /// Writes consumer `c`'s next read, acking what it got since the last one.
    fn read(&mut self, c: usize) -> Result<(), Broken> {
        let cfg = self.cfg;
        let cons = &mut self.consumers[c];
        let Some(conn) = cons.conn.as_mut() else { return Ok(()) };
        if cons.reading || self.aborted.is_some() {
            return Ok(());
        }
        conn.wbuf.clear();
        match cfg.target {
            Target::Esub => {
                let acks: Vec<(i32, i64)> = std::mem::take(&mut cons.acks).into_iter().collect();
                esub::sub_request(&mut conn.wbuf, &self.topic, VER, GROUP, cfg.fetch, &acks);
            }
            Target::Redis => {
                for (stream, ids) in std::mem::take(&mut cons.ids) {
                    let stream = String::from_utf8_lossy(&stream).into_owned();
                    redis::xack(&mut conn.wbuf, &stream, GROUP, &ids);
                    cons.acks_due += 1;
                }
                redis::xreadgroup(
                    &mut conn.wbuf,
                    GROUP,
                    &cons.name,
                    cfg.fetch,
                    BLOCK_MS,
                    &cons.streams,
                );
            }
        }
        conn.begin_write();
        cons.reading = true;
        conn.flush().map(|_| ())
    }

    fn producer_broken(&mut self, p: usize, why: Broken) {
        self.errors.connections += 1;
        self.errors.note(format!("producer {p}: {}", why.0));
        self.idle.retain(|&x| x != p);
        let producer = &mut self.producers[p];
        if let Some(mut conn) = producer.conn.take() {
            if conn.link == Link::Open {
                self.open -= 1;
            }
            conn.deregister(self.poll.registry());
        }
        if let Some(f) = producer.inflight.take() {
            self.inflight -= 1;
            self.tally.failed_total += f.count - f.stored;
        }
        self.check_budget();
        if self.aborted.is_none()
            && let Err(e) = self.connect_producer(p)
        {
            self.aborted = Some(e);
        }
    }

    fn consumer_broken(&mut self, c: usize, why: Broken) {
        self.errors.connections += 1;
        self.errors.note(format!("consumer {c}: {}", why.0));
        if let Some(mut conn) = self.consumers[c].conn.take() {
            conn.deregister(self.poll.registry());
        }
        self.check_budget();
        if self.aborted.is_none()
            && let Err(e) = self.connect_consumer(c)
        {
            self.aborted = Some(e);
        }
    }

    fn check_budget(&mut self) {
        if self.aborted.is_none() && self.errors.total() > self.error_budget {
            self.aborted = Some(format!("more than {} errors", self.error_budget));
        }
    }
}

/// Books one delivery: its fate, and its latency when it was sent in the window.
struct Deliveries<'b> {
    books: &'b mut Books,
    tally: &'b mut Tally,
    window_ns: (u64, u64),
    measuring: bool,
    size: usize,
    now: u64,
}

impl Deliveries<'_> {
    fn record(&mut self, p: &[u8]) {
        let Some((seq, sent)) = payload::read(p, self.size) else {
            self.books.corrupt += 1;
            return;
        };
        if !self.books.delivered(seq) {
            return;
        }
        if self.measuring {
            self.tally.delivered += 1;
        }
        if (self.window_ns.0..self.window_ns.1).contains(&sent) {
            self.tally.e2e_hist.record(self.now.saturating_sub(sent));
        }
    }
}

/// The partitions of consumer `i` of `k` over `partitions`: esub's contiguous rule (§5.1), so
/// Redis consumers read the same share of streams.
pub fn assigned(i: usize, k: usize, partitions: usize) -> std::ops::Range<usize> {
    let (q, r) = (partitions / k, partitions % k);
    let start = i * q + i.min(r);
    start..start + q + usize::from(i < r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_is_contiguous_and_complete() {
        // (consumers, partitions, each consumer's partitions)
        let rows = [
            (4, 4, "0..1 1..2 2..3 3..4"),
            (2, 4, "0..2 2..4"),
            (3, 4, "0..2 2..3 3..4"),
            (1, 5, "0..5"),
            (2, 20, "0..10 10..20"),
        ];
        for (k, p, want) in rows {
            let got: Vec<String> = (0..k).map(|i| format!("{:?}", assigned(i, k, p))).collect();
            assert_eq!(got.join(" "), want, "k={k} P={p}");
        }
    }
}
