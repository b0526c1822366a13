//! One subscriber connection and what it reads: long-poll (`GET /sub`, parked again after each
//! message, or not in the parked-capacity scenario) or websocket (an upgrade, then one frame per
//! message), each message booked as a receipt in the ledger and the window's tally.

use std::time::Instant;

use mio::event::Event;

use crate::config::{Scenario, Target};
use crate::conn::{Broken, Conn, Link};
use crate::hist::Histogram;
use crate::http;
use crate::ledger::{Ledger, Receipt};
use crate::outcome::{Errors, Slowest};
use crate::ws::{self, Incoming, Opcode, Rng};

/// Where a sub stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// No connection yet, or `connect` not yet complete.
    Connecting,
    /// Long-poll: its `GET /sub` is being written.
    Requesting,
    /// Websocket: the upgrade is written or being written; the `101` must carry this key's
    /// accept value.
    Upgrading(String),
    /// Long-poll: its `GET /sub` was written whole and is not answered yet. Websocket: joined.
    /// Either way a rep to its key should find it.
    Waiting,
    /// It has had its one message and does not park again (parked capacity).
    Done,
}

pub struct Sub {
    pub conn: Option<Conn>,
    pub stage: Stage,
    /// It is in the ready queue.
    pub queued: bool,
    frames: ws::Reader,
}

/// The measured window's deliveries.
#[derive(Default)]
pub struct Tally {
    pub delivered: u64,
    pub hist: Histogram,
    pub slowest: Slowest,
}

/// What reading a sub needs besides the sub: the run's books and settings.
pub struct Books<'a> {
    pub target: Target,
    pub scenario: Scenario,
    pub ledger: &'a mut Ledger,
    pub tally: &'a mut Tally,
    pub errors: &'a mut Errors,
    pub rng: &'a mut Rng,
    /// Start of the measured window, while it lasts: only its deliveries are timed.
    pub measuring: Option<Instant>,
}

impl Books<'_> {
    /// Books a message body that the sub of `key` read at `now`.
    fn receive(&mut self, key: usize, body: &[u8], now: Instant) {
        // The receipt is always booked; only the window's deliveries are timed.
        if let Receipt::Delivered(sent_at) = self.ledger.receive(key, body)
            && let Some(began) = self.measuring
        {
            let t = &mut *self.tally;
            t.delivered += 1;
            let latency = now.saturating_duration_since(sent_at);
            t.hist.record(latency.as_nanos() as u64);
            if latency > t.slowest.latency {
                t.slowest = Slowest {
                    latency,
                    key,
                    seq: self.ledger.last_sent(key),
                    at: now.saturating_duration_since(began),
                };
            }
        }
    }
}

impl Sub {
    pub fn new() -> Sub {
        Sub { conn: None, stage: Stage::Connecting, queued: false, frames: ws::Reader::default() }
    }

    /// A rep to its key should find it.
    pub fn waiting(&self) -> bool {
        self.stage == Stage::Waiting
    }

    /// It holds a connection whose `connect` has not completed.
    pub fn connecting(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.link == Link::Connecting)
    }

    /// A new connection replaces a broken one (or the first).
    pub fn attach(&mut self, conn: Conn) {
        self.conn = Some(conn);
        self.stage = Stage::Connecting;
        self.frames = ws::Reader::default();
    }

    /// Handles one poll event of its socket: connect, write, read and book what arrived.
    pub fn on_event(
        &mut self,
        key: usize,
        ev: &Event,
        b: &mut Books,
        scratch: &mut [u8],
    ) -> Result<(), Broken> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        if conn.link == Link::Connecting {
            if !conn.check_connected()? {
                return Ok(());
            }
            if b.scenario.websocket() {
                let accept_key = b.rng.handshake_key();
                let path = b.target.ws_path();
                ws::upgrade_request(&mut conn.wbuf, path, b.ledger.prefix(), key, &accept_key);
                self.stage = Stage::Upgrading(accept_key);
            } else {
                http::sub_request(&mut conn.wbuf, b.ledger.prefix(), key);
                self.stage = Stage::Requesting;
            }
            conn.begin_write();
        }
        if conn.writing() && conn.flush()? && self.stage == Stage::Requesting {
            self.stage = Stage::Waiting;
        }
        let closing = ev.is_read_closed() || ev.is_error();
        if !(ev.is_readable() || closing) || !conn.fill(scratch, closing)? {
            return Ok(());
        }
        let now = Instant::now();
        if b.scenario.websocket() {
            self.read_frames(key, now, b)
        } else {
            self.read_responses(key, now, b)
        }
    }

    /// Long-poll: each response answers the one `GET /sub` in flight.
    fn read_responses(&mut self, key: usize, now: Instant, b: &mut Books) -> Result<(), Broken> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(());
            };
            let resp = match http::parse_response(&conn.rbuf) {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Broken(format!("sub response: {e:?}"))),
            };
            if (100..200).contains(&resp.status) {
                conn.consume(resp.len);
                continue;
            }
            if self.stage != Stage::Waiting {
                return Err(Broken(format!("sub got a {} it did not ask for", resp.status)));
            }
            self.stage = Stage::Done;
            if resp.status == 200 {
                if b.target == Target::Esub
                    && resp.content_type(&conn.rbuf) != Some(b"application/octet-stream")
                {
                    b.errors.content_type += 1;
                    b.errors.note(format!(
                        "sub 200 with Content-Type {:?}",
                        resp.content_type(&conn.rbuf).map(String::from_utf8_lossy)
                    ));
                }
                b.receive(key, resp.body(&conn.rbuf), now);
            } else {
                *b.errors.sub_status.entry(resp.status).or_default() += 1;
                let body = String::from_utf8_lossy(resp.body(&conn.rbuf)).into_owned();
                b.errors.note(format!("sub answered {}: {body:?}", resp.status));
            }
            let close = resp.close;
            conn.consume(resp.len);
            if close {
                return Err(Broken("sub response had Connection: close".into()));
            }
            if b.scenario.once() {
                continue;
            }
            // Park again at once.
            http::sub_request(&mut conn.wbuf, b.ledger.prefix(), key);
            conn.begin_write();
            self.stage = Stage::Requesting;
            if conn.flush()? {
                self.stage = Stage::Waiting;
            }
        }
    }

    /// Websocket: the `101`, then frames; a ping is answered with a masked pong.
    fn read_frames(&mut self, key: usize, now: Instant, b: &mut Books) -> Result<(), Broken> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(());
            };
            if let Stage::Upgrading(accept_key) = &self.stage {
                let resp = match http::parse_response(&conn.rbuf) {
                    Ok(Some(r)) => r,
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(Broken(format!("upgrade response: {e:?}"))),
                };
                if let Err(why) = ws::check_upgrade(&conn.rbuf, &resp, accept_key) {
                    if resp.status != 101 {
                        *b.errors.sub_status.entry(resp.status).or_default() += 1;
                    }
                    return Err(Broken(why));
                }
                conn.consume(resp.len);
                self.stage = Stage::Waiting;
                continue;
            }
            // A ping's payload (at most 125 bytes) is copied out so the pong can be written
            // once the frame's bytes are consumed.
            let mut pong: Option<([u8; 125], usize)> = None;
            let (incoming, used) = match self.frames.next(&conn.rbuf) {
                Ok(Some(x)) => x,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Broken(format!("websocket frame: {e:?}"))),
            };
            match incoming {
                Incoming::Message { text, body } => {
                    // esub: a rep whose body is UTF-8 (all of the bench's are) is a TEXT frame.
                    if b.target == Target::Esub && !text {
                        b.errors.content_type += 1;
                        b.errors.note("websocket BINARY frame for a UTF-8 body".into());
                    }
                    b.receive(key, body, now);
                }
                Incoming::Ping(p) => {
                    let mut copy = [0u8; 125];
                    copy[..p.len()].copy_from_slice(p);
                    pong = Some((copy, p.len()));
                }
                Incoming::Pong | Incoming::Fragment => {}
                Incoming::Close(code, why) => {
                    return Err(Broken(format!(
                        "server closed the websocket: {code:?} {:?}",
                        String::from_utf8_lossy(why)
                    )));
                }
            }
            conn.consume(used);
            if let Some((payload, n)) = pong {
                ws::write_frame(conn.append(), Opcode::Pong, &payload[..n], b.rng.mask());
                conn.flush()?;
            }
        }
    }
}
