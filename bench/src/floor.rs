//! The HTTP floor: `--reps` keep-alive connections, each sending one `GET` at a time (esub
//! `/ping`, nginx `/ok`) on one mio poll, so the cost of a server's HTTP layer shows with no
//! relaying in it. Same phases, figures and CPU accounting as a relay run; a request is the
//! "message".

use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Poll, Token};

use crate::config::Config;
use crate::conn::{Broken, Conn, Link, poll_events};
use crate::cpu::{Mark, ServerProbe};
use crate::hist::Histogram;
use crate::http;
use crate::ledger::Counts;
use crate::outcome::{Errors, Measured, Outcome, Slowest};

/// Events per poll: one per connection at most, and there are at most a few hundred.
const EVENTS: usize = 1024;
/// Longest sleep in poll: phase ends are checked at least this often.
const MAX_POLL_WAIT: Duration = Duration::from_millis(50);

struct Client {
    conn: Option<Conn>,
    /// When the request in flight was written; `None` when idle.
    sent_at: Option<Instant>,
}

pub struct Floor<'a> {
    cfg: &'a Config,
    poll: Poll,
    clients: Vec<Client>,
    scratch: Vec<u8>,
    open: usize,
    sending: bool,
    inflight: usize,
    measuring: Option<Instant>,
    answered: u64,
    hist: Histogram,
    slowest: Slowest,
    counts: Counts,
    errors: Errors,
    error_budget: u64,
    aborted: Option<String>,
}

impl<'a> Floor<'a> {
    pub fn new(cfg: &'a Config) -> Result<Floor<'a>, String> {
        Ok(Floor {
            cfg,
            poll: Poll::new().map_err(|e| format!("poll: {e}"))?,
            clients: (0..cfg.reps).map(|_| Client { conn: None, sent_at: None }).collect(),
            scratch: vec![0; 64 * 1024],
            open: 0,
            sending: false,
            inflight: 0,
            measuring: None,
            answered: 0,
            hist: Histogram::new(),
            slowest: Slowest::default(),
            counts: Counts::default(),
            errors: Errors::default(),
            error_budget: 1000,
            aborted: None,
        })
    }

    /// Opens every connection; the server is idle, so this is quick or a failure.
    pub fn connect(&mut self) -> Result<(), String> {
        for c in 0..self.clients.len() {
            self.reconnect(c).map_err(|e| format!("connect: {e}"))?;
        }
        let deadline = Instant::now() + self.cfg.ready_timeout;
        let mut events = Events::with_capacity(EVENTS);
        while self.open < self.clients.len() {
            if Instant::now() >= deadline || self.aborted.is_some() {
                return Err(format!(
                    "{} of {} connections open; {}",
                    self.open,
                    self.clients.len(),
                    self.errors.first.join("; ")
                ));
            }
            self.poll_once(&mut events, MAX_POLL_WAIT)?;
        }
        Ok(())
    }

    /// Warm-up, measured window, then answers still in flight for up to the grace period.
    pub fn traffic(&mut self, probe: Option<&ServerProbe>) -> Result<Measured, String> {
        let mut events = Events::with_capacity(EVENTS);
        let warm_end = Instant::now() + self.cfg.warmup;
        let window_end = warm_end + self.cfg.duration;
        let mut cpu_start = Mark::now(probe);
        let mut result = None;
        let mut drain_end = window_end + self.cfg.grace;
        self.sending = true;
        for c in 0..self.clients.len() {
            self.send(c);
        }
        loop {
            let now = Instant::now();
            if result.is_none() && self.measuring.is_none() && now >= warm_end {
                cpu_start = Mark::now(probe);
                self.measuring = Some(Instant::now());
                self.answered = 0;
                self.hist = Histogram::new();
            }
            if let Some(began) = self.measuring
                && (now >= window_end || self.aborted.is_some())
            {
                self.measuring = None;
                self.sending = false;
                result = Some(Measured::since(now - began, &cpu_start, probe));
                drain_end = now + self.cfg.grace;
            }
            if let Some(m) = result
                && (self.inflight == 0 || now >= drain_end)
            {
                return Ok(m);
            }
            let next = match (result.is_some(), self.measuring.is_some()) {
                (true, _) => drain_end,
                (false, true) => window_end,
                (false, false) => warm_end,
            };
            let wait = next.saturating_duration_since(now).min(MAX_POLL_WAIT);
            self.poll_once(&mut events, wait)?;
        }
    }

    pub fn outcome(self, measured: Measured, probe: Option<&ServerProbe>) -> Outcome {
        Outcome {
            delivered: self.answered,
            hist: self.hist,
            slowest: self.slowest,
            counts: self.counts,
            unanswered: self.inflight as u64,
            ..Outcome::of_window(measured, probe, self.errors, self.aborted)
        }
    }

    fn poll_once(&mut self, events: &mut Events, wait: Duration) -> Result<(), String> {
        poll_events(&mut self.poll, events, wait)?;
        for ev in events.iter() {
            let c = ev.token().0;
            if let Err(b) = self.event(c, ev) {
                self.broken(c, b);
            }
        }
        Ok(())
    }

    fn reconnect(&mut self, c: usize) -> std::io::Result<()> {
        let conn = Conn::connect(self.cfg.sub_addr(c), None, self.poll.registry(), Token(c))?;
        self.clients[c].conn = Some(conn);
        Ok(())
    }

    fn event(&mut self, c: usize, ev: &Event) -> Result<(), Broken> {
        let Some(conn) = self.clients[c].conn.as_mut() else {
            return Ok(());
        };
        let step = conn.step(ev, &mut self.scratch)?;
        if step.connected {
            self.open += 1;
            self.send(c);
        }
        if !step.read {
            return Ok(());
        }
        let now = Instant::now();
        loop {
            let client = &mut self.clients[c];
            let Some(conn) = client.conn.as_mut() else {
                return Ok(());
            };
            let resp = match http::parse_response(&conn.rbuf) {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Broken(format!("response: {e:?}"))),
            };
            let Some(sent_at) = client.sent_at.take() else {
                return Err(Broken(format!("a {} nobody asked for", resp.status)));
            };
            self.inflight -= 1;
            let body = resp.body(&conn.rbuf);
            if resp.status == 200 && body == self.cfg.target.floor_body() {
                self.counts.acked += 1;
                if let Some(began) = self.measuring {
                    self.answered += 1;
                    let latency = now.saturating_duration_since(sent_at);
                    self.hist.record(latency.as_nanos() as u64);
                    if latency > self.slowest.latency {
                        let at = now.saturating_duration_since(began);
                        self.slowest = Slowest { latency, key: c, seq: self.counts.sent, at };
                    }
                }
            } else {
                *self.errors.rep_status.entry(resp.status).or_default() += 1;
                let body = String::from_utf8_lossy(body).into_owned();
                self.errors.note(format!("GET answered {}: {body:?}", resp.status));
            }
            let close = resp.close;
            conn.consume(resp.len);
            if close {
                return Err(Broken("response had Connection: close".into()));
            }
            self.check_budget();
            self.send(c);
        }
    }

    /// Writes the next request on an idle, open connection while sending is on.
    fn send(&mut self, c: usize) {
        let client = &mut self.clients[c];
        let Some(conn) = client.conn.as_mut() else {
            return;
        };
        if !self.sending || client.sent_at.is_some() || conn.link != Link::Open {
            return;
        }
        http::get_request(&mut conn.wbuf, self.cfg.target.floor_path());
        conn.begin_write();
        client.sent_at = Some(Instant::now());
        self.inflight += 1;
        self.counts.sent += 1;
        if let Err(b) = conn.flush() {
            self.broken(c, b);
        }
    }

    fn broken(&mut self, c: usize, why: Broken) {
        self.errors.connections += 1;
        self.errors.note(format!("connection {c}: {}", why.0));
        let client = &mut self.clients[c];
        if let Some(mut conn) = client.conn.take() {
            if conn.link == Link::Open {
                self.open -= 1;
            }
            conn.deregister(self.poll.registry());
        }
        if client.sent_at.take().is_some() {
            self.inflight -= 1;
            self.counts.failed += 1;
        }
        self.check_budget();
        if self.aborted.is_none()
            && let Err(e) = self.reconnect(c)
        {
            self.aborted = Some(format!("reconnect: {e}"));
        }
    }

    fn check_budget(&mut self) {
        if self.aborted.is_none() && self.errors.total() > self.error_budget {
            self.aborted = Some(format!("more than {} errors", self.error_budget));
        }
    }
}
