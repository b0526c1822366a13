//! One relay run on one mio poll: park every sub (long-poll or websocket), check with the
//! server that they are parked, then warm-up, measured window and drain, with each rep
//! connection sending one rep at a time to the oldest key whose sub waits and has nothing
//! unresolved. The parked-capacity scenario sends one rep per key and ends when all arrived.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Poll, Token};

use crate::config::Config;
use crate::conn::{Broken, Conn, Link, poll_events};
use crate::control::{self, Parked};
use crate::cpu::{Mark, ServerProbe};
use crate::http;
use crate::ledger::{Answer, Ledger};
use crate::outcome::{Errors, Measured, Outcome};
use crate::sub::{Books, Stage, Sub, Tally};
use crate::ws::Rng;

/// Events per poll: enough for every rep and a burst of subs, small enough to stay in cache.
const EVENTS: usize = 1024;
/// Connects in flight while parking: the listen backlog (4096 for nchan) must not overflow,
/// or a dropped SYN costs a one-second retransmit.
const MAX_CONNECTING: usize = 256;
/// A key whose rep was answered "nobody waits" is tried again after this: its sub's request was
/// written but not yet processed, which takes microseconds, not milliseconds.
const RETRY_DELAY: Duration = Duration::from_millis(1);
/// Longest sleep in poll: phase ends and retries are checked at least this often.
const MAX_POLL_WAIT: Duration = Duration::from_millis(50);

struct Rep {
    conn: Option<Conn>,
    /// (key, seq) of the rep written and not yet answered.
    inflight: Option<(usize, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Warmup,
    Measure,
    Drain,
}

pub struct Run<'a> {
    cfg: &'a Config,
    poll: Poll,
    ledger: Ledger,
    subs: Vec<Sub>,
    reps: Vec<Rep>,
    /// Per group (`Config::groups`): keys whose sub waits and which have nothing unresolved,
    /// oldest first.
    ready: Vec<VecDeque<usize>>,
    /// Keys answered "nobody waits", with the time they may be tried again.
    deferred: VecDeque<(Instant, usize)>,
    /// Per group: open rep connections with nothing in flight.
    idle: Vec<Vec<usize>>,
    scratch: Vec<u8>,
    body: Vec<u8>,
    /// Websocket keys and masks.
    rng: Rng,
    connecting: usize,
    open_reps: usize,
    parked: usize,
    inflight_reps: usize,
    /// Reps sent to another server than their key's sub.
    crossed: u64,
    sending: bool,
    /// Start of the measured window, while it lasts.
    measuring: Option<Instant>,
    sent_before_window: u64,
    tally: Tally,
    errors: Errors,
    error_budget: u64,
    aborted: Option<String>,
}

impl<'a> Run<'a> {
    pub fn new(cfg: &'a Config, prefix: &str) -> Result<Run<'a>, String> {
        let poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
        Ok(Run {
            cfg,
            poll,
            ledger: Ledger::new(prefix, cfg.subs, cfg.size),
            subs: (0..cfg.subs).map(|_| Sub::new()).collect(),
            reps: (0..cfg.reps).map(|_| Rep { conn: None, inflight: None }).collect(),
            ready: (0..cfg.groups()).map(|_| VecDeque::with_capacity(cfg.subs)).collect(),
            deferred: VecDeque::new(),
            idle: (0..cfg.groups()).map(|_| Vec::with_capacity(cfg.reps)).collect(),
            // One read takes a whole burst of responses on a rep connection.
            scratch: vec![0; 64 * 1024],
            body: Vec::with_capacity(cfg.size + 64),
            rng: Rng::new(seed()),
            connecting: 0,
            open_reps: 0,
            parked: 0,
            inflight_reps: 0,
            crossed: 0,
            sending: false,
            measuring: None,
            sent_before_window: 0,
            tally: Tally::default(),
            errors: Errors::default(),
            // A server that fails everything must end the run, not spin it.
            error_budget: 1000.max(cfg.subs as u64),
            aborted: None,
        })
    }

    /// Parks all subs and opens all rep connections, then asks the server until it has them.
    pub fn park(&mut self) -> Result<Parked, String> {
        let deadline = Instant::now() + self.cfg.ready_timeout;
        let mut events = Events::with_capacity(EVENTS);
        let mut next_sub = 0;
        for r in 0..self.cfg.reps {
            self.connect_rep(r)?;
        }
        while self.parked < self.cfg.subs || self.open_reps < self.cfg.reps {
            while next_sub < self.cfg.subs && self.connecting < MAX_CONNECTING {
                self.connect_sub(next_sub)?;
                next_sub += 1;
            }
            self.poll_once(&mut events, MAX_POLL_WAIT)?;
            if let Some(why) = &self.aborted {
                return Err(format!(
                    "while parking: {why}; first: {}",
                    self.errors.first.join("; ")
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "after {:?}: {} of {} subs parked, {} of {} rep connections open",
                    self.cfg.ready_timeout,
                    self.parked,
                    self.cfg.subs,
                    self.open_reps,
                    self.cfg.reps
                ));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let prefix = String::from_utf8_lossy(self.ledger.prefix()).into_owned();
        Ok(control::wait_parked(self.cfg.target, &self.cfg.urls, &prefix, self.cfg.subs, left))
    }

    /// Warm-up, measured window and drain. CPU is sampled at the window's two ends. In the
    /// parked-capacity scenario (`once`) the window ends as soon as every key has its message.
    pub fn traffic(&mut self, probe: Option<&ServerProbe>) -> Result<Measured, String> {
        let mut events = Events::with_capacity(EVENTS);
        let start = Instant::now();
        let warm_end = start + self.cfg.warmup;
        let window_end = warm_end + self.cfg.duration;
        let mut drain_end = window_end + self.cfg.grace;
        let mut phase = Phase::Warmup;
        let mut cpu_start = Mark::now(probe);
        let mut result = Measured::default();
        let once = self.cfg.scenario.once();
        self.sending = true;
        loop {
            let now = Instant::now();
            if phase == Phase::Warmup && now >= warm_end {
                phase = Phase::Measure;
                cpu_start = Mark::now(probe);
                self.measuring = Some(Instant::now());
                self.sent_before_window = self.ledger.counts.sent;
                self.tally = Tally::default();
            }
            if once && self.ledger.counts.delivered >= self.cfg.subs as u64 {
                self.sending = false;
            }
            let nothing_left = self.inflight_reps == 0 && self.ledger.busy_keys() == 0;
            let stopped = !self.sending && nothing_left;
            if phase == Phase::Measure && (now >= window_end || stopped || self.aborted.is_some()) {
                let began = self.measuring.take().unwrap_or(now);
                result = Measured::since(now - began, &cpu_start, probe);
                phase = Phase::Drain;
                self.sending = false;
                drain_end = now + self.cfg.grace;
            }
            if phase == Phase::Drain && (nothing_left || now >= drain_end) {
                return Ok(result);
            }
            if phase != Phase::Drain && self.aborted.is_some() {
                self.sending = false;
            }
            self.dispatch();
            let next = match phase {
                Phase::Warmup => warm_end,
                Phase::Measure => window_end,
                Phase::Drain => drain_end,
            };
            let mut wait = next.saturating_duration_since(Instant::now()).min(MAX_POLL_WAIT);
            if let Some(&(t, _)) = self.deferred.front() {
                wait = wait.min(t.saturating_duration_since(Instant::now()));
            }
            self.poll_once(&mut events, wait)?;
        }
    }

    pub fn outcome(
        self,
        parked: Parked,
        measured: Measured,
        probe: Option<&ServerProbe>,
    ) -> Outcome {
        Outcome {
            prefix: String::from_utf8_lossy(self.ledger.prefix()).into_owned(),
            parked,
            delivered: self.tally.delivered,
            hist: self.tally.hist,
            slowest: self.tally.slowest,
            counts: self.ledger.counts,
            lost: self.ledger.lost(),
            unanswered: self.inflight_reps as u64,
            crossed: self.crossed,
            ..Outcome::of_window(measured, probe, self.errors, self.aborted)
        }
    }

    fn poll_once(&mut self, events: &mut Events, wait: Duration) -> Result<(), String> {
        poll_events(&mut self.poll, events, wait)?;
        for ev in events.iter() {
            let t = ev.token().0;
            if t < self.subs.len() {
                if let Err(b) = self.sub_event(t, ev) {
                    self.sub_broken(t, b);
                }
            } else if let Err(b) = self.rep_event(t - self.subs.len(), ev) {
                self.rep_broken(t - self.subs.len(), b);
            }
        }
        let now = Instant::now();
        while let Some(&(t, key)) = self.deferred.front() {
            if t > now {
                break;
            }
            self.deferred.pop_front();
            self.maybe_ready(key);
        }
        Ok(())
    }

    fn connect_sub(&mut self, i: usize) -> Result<(), String> {
        let addr = self.cfg.sub_addr(i);
        let conn = Conn::connect(addr, self.source(i), self.poll.registry(), Token(i))
            .map_err(|e| format!("connect sub {i}: {e}"))?;
        self.subs[i].attach(conn);
        self.connecting += 1;
        Ok(())
    }

    /// Sub `i`'s source address: 127.0.0.1 to 127.0.0.<sources> in turn, or the kernel's pick.
    fn source(&self, i: usize) -> Option<Ipv4Addr> {
        let n = self.cfg.sources;
        (n > 1).then(|| Ipv4Addr::new(127, 0, 0, 1 + (i % n) as u8))
    }

    fn connect_rep(&mut self, r: usize) -> Result<(), String> {
        let token = Token(self.subs.len() + r);
        let conn = Conn::connect(self.cfg.rep_addr(r), None, self.poll.registry(), token)
            .map_err(|e| format!("connect rep {r}: {e}"))?;
        self.reps[r].conn = Some(conn);
        Ok(())
    }

    /// One event of sub `i`; the parked count and the ready queue follow what it did.
    fn sub_event(&mut self, i: usize, ev: &Event) -> Result<(), Broken> {
        let sub = &mut self.subs[i];
        let was_connecting = sub.connecting();
        let was_waiting = sub.waiting();
        let mut books = Books {
            target: self.cfg.target,
            scenario: self.cfg.scenario,
            ledger: &mut self.ledger,
            tally: &mut self.tally,
            errors: &mut self.errors,
            rng: &mut self.rng,
            measuring: self.measuring,
        };
        let result = sub.on_event(i, ev, &mut books, &mut self.scratch);
        if was_connecting && sub.conn.as_ref().is_some_and(|c| c.link == Link::Open) {
            self.connecting -= 1;
        }
        match (was_waiting, sub.waiting()) {
            (false, true) => self.parked += 1,
            (true, false) => self.parked -= 1,
            _ => {}
        }
        // A long-poll sub that got its message and parked again, a websocket sub that got its
        // message, a sub that just parked or joined: its key may take the next rep.
        self.maybe_ready(i);
        self.check_budget();
        result
    }

    fn rep_event(&mut self, r: usize, ev: &Event) -> Result<(), Broken> {
        let Some(conn) = self.reps[r].conn.as_mut() else {
            return Ok(());
        };
        let step = conn.step(ev, &mut self.scratch)?;
        if step.connected {
            self.open_reps += 1;
            self.idle[self.cfg.rep_group(r)].push(r);
        }
        if !step.read {
            return Ok(());
        }
        let now = Instant::now();
        loop {
            let rep = &mut self.reps[r];
            let Some(conn) = rep.conn.as_mut() else {
                return Ok(());
            };
            let resp = match http::parse_response(&conn.rbuf) {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Broken(format!("rep response: {e:?}"))),
            };
            if (100..200).contains(&resp.status) {
                conn.consume(resp.len);
                continue;
            }
            let Some((key, seq)) = rep.inflight.take() else {
                return Err(Broken(format!("rep got a {} it did not ask for", resp.status)));
            };
            self.inflight_reps -= 1;
            let answer = if resp.status == self.cfg.target.delivered_status() {
                Answer::Delivered
            } else if resp.status == self.cfg.target.miss_status() {
                Answer::Miss
            } else {
                *self.errors.rep_status.entry(resp.status).or_default() += 1;
                let body = String::from_utf8_lossy(resp.body(&conn.rbuf)).into_owned();
                self.errors.note(format!("rep answered {}: {body:?}", resp.status));
                Answer::Failed
            };
            let close = resp.close;
            conn.consume(resp.len);
            if self.ledger.answer(key, seq, answer) {
                self.deferred.push_back((now + RETRY_DELAY, key));
            }
            if close {
                return Err(Broken("rep response had Connection: close".into()));
            }
            self.idle[self.cfg.rep_group(r)].push(r);
            self.check_budget();
        }
    }

    fn maybe_ready(&mut self, key: usize) {
        let sub = &mut self.subs[key];
        if sub.waiting() && !sub.queued && !self.ledger.busy(key) {
            sub.queued = true;
            self.ready[self.cfg.key_group(key)].push_back(key);
        }
    }

    /// Gives every idle rep connection a key of its group, while sending is on and keys are
    /// ready.
    fn dispatch(&mut self) {
        for g in 0..self.idle.len() {
            while self.sending && !self.idle[g].is_empty() {
                if self.cfg.max_msgs > 0
                    && self.measuring.is_some()
                    && self.ledger.counts.sent - self.sent_before_window >= self.cfg.max_msgs
                {
                    self.sending = false;
                    return;
                }
                let Some(key) = self.pop_ready(g) else {
                    break;
                };
                let Some(r) = self.idle[g].pop() else {
                    break;
                };
                if let Err(b) = self.send_rep(r, key) {
                    self.rep_broken(r, b);
                }
            }
        }
    }

    fn pop_ready(&mut self, group: usize) -> Option<usize> {
        while let Some(key) = self.ready[group].pop_front() {
            self.subs[key].queued = false;
            if self.subs[key].waiting() && !self.ledger.busy(key) {
                return Some(key);
            }
        }
        None
    }

    fn send_rep(&mut self, r: usize, key: usize) -> Result<(), Broken> {
        let rep = &mut self.reps[r];
        let Some(conn) = rep.conn.as_mut() else {
            return Err(Broken("rep without a connection".into()));
        };
        self.body.clear();
        let seq = self.ledger.send(key, Instant::now(), &mut self.body);
        http::rep_request_head(
            &mut conn.wbuf,
            self.cfg.target.rep_path(),
            self.ledger.prefix(),
            key,
            self.body.len(),
        );
        conn.wbuf.extend_from_slice(&self.body);
        conn.begin_write();
        rep.inflight = Some((key, seq));
        self.inflight_reps += 1;
        if self.cfg.crosses(r, key) {
            self.crossed += 1;
        }
        conn.flush().map(|_| ())
    }

    fn sub_broken(&mut self, i: usize, why: Broken) {
        self.errors.connections += 1;
        self.errors.note(format!("sub {i}: {}", why.0));
        let sub = &mut self.subs[i];
        if let Some(mut conn) = sub.conn.take() {
            if conn.link == Link::Connecting {
                self.connecting -= 1;
            }
            conn.deregister(self.poll.registry());
        }
        if sub.waiting() {
            self.parked -= 1;
        }
        sub.stage = Stage::Connecting;
        self.check_budget();
        if self.aborted.is_none()
            && let Err(e) = self.connect_sub(i)
        {
            self.aborted = Some(e);
        }
    }

    fn rep_broken(&mut self, r: usize, why: Broken) {
        self.errors.connections += 1;
        self.errors.note(format!("rep {r}: {}", why.0));
        self.idle[self.cfg.rep_group(r)].retain(|&x| x != r);
        if let Some(mut conn) = self.reps[r].conn.take() {
            if conn.link == Link::Open {
                self.open_reps -= 1;
            }
            conn.deregister(self.poll.registry());
        }
        if let Some((key, seq)) = self.reps[r].inflight.take() {
            self.inflight_reps -= 1;
            if self.ledger.answer(key, seq, Answer::Failed) {
                self.deferred.push_back((Instant::now() + RETRY_DELAY, key));
            }
        }
        self.check_budget();
        if self.aborted.is_none()
            && let Err(e) = self.connect_rep(r)
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

/// A seed for websocket keys and masks that differs between runs.
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}
