//! Whole connections, driven by the fuzz input through the state machine the server runs, with no
//! sockets: `Ctx::standalone` is a one-worker context, `Conn`s run over in-memory streams, and
//! this target plays the worker's loop (readiness events, the local mailbox, the timer wheel,
//! drain). Up to four connections share one registry, so subs, reps, psub members and `/prep`
//! sockets can meet.
//!
//! Input: `[flags, op...]`. `flags` picks the configuration (receipt mode, close-every-connection,
//! key tags, psub backlog); the limits are always small: 1024 head bytes, 4096 body bytes.
//! Each op is one byte; its high nibble names a connection slot (`& 3`), its low nibble says:
//! - 0-6: bytes arrive, then a readable event. The next byte `L` is the piece's length: `L + 1`
//!   below 0xE0, else `256 * (L - 0xE0) + next + 1` (up to 8 KiB).
//! - 7: bytes arrive (same encoding), no event yet: the next read takes them with what follows.
//! - 8: the peer closes its side (EOF), and a readable event.
//! - 9: the next byte sets how writes go (bytes per call, bytes until `WouldBlock`), then a
//!   writable event.
//! - 10: time passes (the next byte picks how much, around every timeout, or 200 to 800 days)
//!   and timers fire.
//! - 11: a new connection in the slot if it is free (the listener accepts), else a spurious wake.
//! - 12: with a high nibble of 8 or more, the connection is reset: reads and writes fail.
//! - 13: with a high nibble of 15, the worker drains (shutdown); else a spurious wake.
//! - 14: a writable event with writes unlimited again.
//! - 15: a readable event with no new bytes.
//!
//! Asserted, besides never panicking:
//! - Each connection's output is a sequence of well-formed HTTP/1.1 responses: a status line
//!   `HTTP/1.1 NNN Reason` with the reason that status has, CRLF line ends, headers httparse
//!   accepts, exactly one `Content-Length` (and a `Content-Type`) and that many body bytes,
//!   except for 1xx and 204, which carry neither. A 101 has the websocket headers and is
//!   followed by websocket frames only: final, unmasked, the shortest length encoding, known
//!   opcodes, control frames of at most 125 bytes, TEXT exactly when the payload is UTF-8, a
//!   close frame with a code one may send.
//! - Nothing is written after a `Connection: close` response, after a close frame, or once the
//!   loop has been told `Next::Close`; a response is queued whole (when nothing is waiting to be
//!   written, the output ends between two responses or frames); no write is empty.
//! - The registry holds exactly the parked subs and the psub members that are not closing, and
//!   `prep_sockets` counts the open `/prep` sockets; once every connection is closed, the
//!   registry is empty and no message is left.
//! - The poll timeout the wheel gives is never later than a connection's earliest timer entry
//!   (within a tick) and never before the current tick ends (which would spin the loop).
//! - Memory stays bounded: the live heap never grows more than `MAX_HEAP` over what the context
//!   itself takes, whatever the input (up to the fuzzer's `-max_len`), and a connection's whole
//!   output stays under `MAX_OUTPUT`.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeSet, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use esub::config::Config;
use esub::conn::{BodyRead, Conn, Next, State};
use esub::relay;
use esub::server::Ctx;
use esub::server::mailbox::ConnId;
use esub::server::timer::{Entry, TICK};
use esub::ws::Role;
use libfuzzer_sys::fuzz_target;

const MAX_CONNS: usize = 4;
const MAX_HEADER_BYTES: usize = 1024;
const MAX_BODY_BYTES: usize = 4096;
/// Ops per input: far more than a 16 KiB input holds, a guard against a slow unit only.
const MAX_OPS: usize = 8192;
/// Live heap above the context's own, at any moment.
const MAX_HEAP: usize = 4 << 20;
/// Bytes one connection may write in one run.
const MAX_OUTPUT: usize = 8 << 20;
/// Messages handled after one op: each answers or moves one step of one connection, and a rep
/// is redirected at most 8 times, so a storm means a loop.
const MAX_MESSAGES: usize = 100_000;

// ---------------------------------------------------------------------------------------------
// The live heap, counted.

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, layout) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

// ---------------------------------------------------------------------------------------------
// The configurations, read once (reading one looks up the number of cores).

fn configs() -> &'static [Config] {
    static CONFIGS: OnceLock<Vec<Config>> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        (0..32u8)
            .map(|f| {
                let backlog = ["0", "100", "4096", "65536"][usize::from(f >> 3 & 3)];
                let vars = [
                    ("ESUB_MAX_HEADER_BYTES", "1024"),
                    ("ESUB_MAX_BODY_BYTES", "4096"),
                    ("ESUB_WORKERS", "1"),
                    ("ESUB_CONFIRM_RECEIPT", if f & 1 != 0 { "1" } else { "0" }),
                    ("ESUB_CLOSE_CONNECTIONS", if f & 2 != 0 { "1" } else { "0" }),
                    ("ESUB_TAG_KEYS", if f & 4 != 0 { "1" } else { "0" }),
                    ("ESUB_MAX_PSUB_BACKLOG", backlog),
                ];
                Config::from_lookup(|name| {
                    vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
                })
                .expect("a valid configuration")
            })
            .collect()
    })
}

// ---------------------------------------------------------------------------------------------
// What a connection writes, checked as it is written.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Http,
    Ws,
    /// Nothing more may be written, and why.
    Done(&'static str),
}

/// The reason phrase of every status esub sends (RFC 9110 section 15; 431 is RFC 6585's).
fn reason(status: u16) -> Option<&'static str> {
    Some(match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => return None,
    })
}

/// Close codes an endpoint may send (RFC 6455 section 7.4.1).
fn close_code_ok(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// `ESUB_FUZZ_TRACE=1` prints what each connection wrote (to replay one input by hand).
fn tracing() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("ESUB_FUZZ_TRACE").is_some())
}

struct OutCheck {
    /// The connection's slot (for the trace).
    slot: usize,
    /// Written bytes not yet making a whole response or frame.
    pending: Vec<u8>,
    mode: Mode,
    total: usize,
}

impl OutCheck {
    fn new(slot: usize) -> OutCheck {
        OutCheck { slot, pending: Vec::new(), mode: Mode::Http, total: 0 }
    }

    fn feed(&mut self, bytes: &[u8]) {
        if tracing() {
            eprintln!("  slot {} wrote {:?}", self.slot, String::from_utf8_lossy(bytes));
        }
        if let Mode::Done(why) = self.mode {
            panic!("{} bytes written {why}: {:?}", bytes.len(), lossy(bytes));
        }
        self.total += bytes.len();
        assert!(self.total <= MAX_OUTPUT, "{} bytes written by one connection", self.total);
        self.pending.extend_from_slice(bytes);
        let buf = std::mem::take(&mut self.pending);
        let mut at = 0;
        while at < buf.len() {
            if let Mode::Done(why) = self.mode {
                panic!("{} bytes written {why}: {:?}", buf.len() - at, lossy(&buf[at..]));
            }
            let item = match self.mode {
                Mode::Http => self.response(&buf[at..]),
                Mode::Ws => self.frame(&buf[at..]),
                Mode::Done(_) => unreachable!(),
            };
            match item {
                Some(n) => at += n,
                None => break,
            }
        }
        self.pending = buf[at..].to_vec();
    }

    /// Whether the output ends between two responses or frames.
    fn at_boundary(&self) -> bool {
        self.pending.is_empty()
    }

    /// One response at the front of `b`: its length, or `None` while it is incomplete.
    fn response(&mut self, b: &[u8]) -> Option<usize> {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut r = httparse::Response::new(&mut headers);
        let head_len = match r.parse(b) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                let n = b.len().min(9);
                assert_eq!(&b[..n], &b"HTTP/1.1 "[..n], "not a status line: {:?}", lossy(b));
                assert!(b.len() < 2048, "a response head of {} bytes and no end", b.len());
                return None;
            }
            Err(e) => panic!("response head does not parse ({e}): {:?}", lossy(b)),
        };
        let head = &b[..head_len];
        let status = r.code.expect("a complete head has a status");
        let Some(want) = reason(status) else {
            panic!("status {status}: {:?}", lossy(head));
        };
        let line = format!("HTTP/1.1 {status} {want}\r\n");
        assert!(head.starts_with(line.as_bytes()), "status line of {:?}", lossy(head));
        for (i, &c) in head.iter().enumerate() {
            if c == b'\n' {
                assert!(i > 0 && head[i - 1] == b'\r', "bare LF in {:?}", lossy(head));
            }
        }
        let all = |name: &str| -> Vec<&[u8]> {
            r.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
                .collect()
        };
        let lengths = all("content-length");
        let bodyless = status < 200 || status == 204;
        let body = if bodyless {
            assert!(lengths.is_empty(), "Content-Length on a {status}: {:?}", lossy(head));
            assert!(all("content-type").is_empty(), "Content-Type on a {status}");
            0
        } else {
            assert_eq!(lengths.len(), 1, "Content-Length in {:?}", lossy(head));
            assert_eq!(all("content-type").len(), 1, "Content-Type in {:?}", lossy(head));
            let v = lengths[0];
            assert!(!v.is_empty() && v.iter().all(u8::is_ascii_digit), "Content-Length {v:?}");
            std::str::from_utf8(v).ok().and_then(|v| v.parse::<usize>().ok()).expect("a length")
        };
        let connection = all("connection");
        assert!(connection.len() <= 1, "Connection twice: {:?}", lossy(head));
        if status == 101 {
            let one = |name: &str| {
                let v = all(name);
                assert_eq!(v.len(), 1, "{name} in a 101: {:?}", lossy(head));
                v[0]
            };
            assert!(one("upgrade").eq_ignore_ascii_case(b"websocket"));
            assert!(one("connection").eq_ignore_ascii_case(b"upgrade"));
            assert_eq!(one("sec-websocket-accept").len(), 28, "accept value");
        }
        let total = head_len + body;
        if b.len() < total {
            return None;
        }
        if status == 101 {
            self.mode = Mode::Ws;
        } else if connection.iter().any(|v| v.eq_ignore_ascii_case(b"close")) {
            self.mode = Mode::Done("after a `Connection: close` response");
        }
        Some(total)
    }

    /// One server frame at the front of `b`.
    fn frame(&mut self, b: &[u8]) -> Option<usize> {
        let (&b0, &b1) = (b.first()?, b.get(1)?);
        assert!(b0 & 0x80 != 0, "a fragmented server frame: {b0:#04x}");
        assert_eq!(b0 & 0x70, 0, "reserved bits in a server frame: {b0:#04x}");
        let opcode = b0 & 0x0F;
        assert!(matches!(opcode, 1 | 2 | 8 | 9 | 10), "server frame opcode {opcode}");
        assert_eq!(b1 & 0x80, 0, "a masked server frame");
        let (head, len) = match b1 & 0x7F {
            126 => {
                let ext = b.get(2..4)?;
                let len = u64::from(u16::from_be_bytes([ext[0], ext[1]]));
                assert!(len >= 126, "length {len} in 16 bits");
                (4, len)
            }
            127 => {
                let ext: [u8; 8] = b.get(2..10)?.try_into().expect("8 bytes");
                let len = u64::from_be_bytes(ext);
                assert!(len > 0xFFFF && len >> 63 == 0, "length {len} in 64 bits");
                (10, len)
            }
            n => (2, u64::from(n)),
        };
        if opcode >= 8 {
            assert!(len <= 125, "control frame of {len} bytes");
        }
        assert!(len <= MAX_BODY_BYTES as u64, "a frame of {len} bytes, bodies are at most 4096");
        let end = head + len as usize;
        let payload = b.get(head..end)?;
        let utf8 = std::str::from_utf8(payload).is_ok();
        match opcode {
            1 => assert!(utf8, "TEXT frame that is not UTF-8"),
            2 => assert!(!utf8, "BINARY frame with a UTF-8 payload"),
            8 => {
                assert!(payload.len() >= 2, "close frame without a code");
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                assert!(close_code_ok(code), "close code {code}");
                assert!(std::str::from_utf8(&payload[2..]).is_ok(), "close reason not UTF-8");
                self.mode = Mode::Done("after a close frame");
            }
            9 => assert!(payload.is_empty(), "our pings carry nothing"),
            _ => {}
        }
        Some(end)
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The in-memory socket.

enum Piece {
    Data(Vec<u8>, usize),
    Eof,
    Reset,
}

struct Mem {
    input: VecDeque<Piece>,
    /// Bytes writes may take before `WouldBlock` (`None`: no limit).
    budget: Option<usize>,
    /// Most bytes one write call takes.
    chunk: usize,
    /// Reset by the peer: writes fail.
    reset: bool,
    /// The loop was told `Next::Close`: nothing may touch the socket any more.
    closed: bool,
    check: OutCheck,
}

impl Mem {
    fn new(slot: usize) -> Mem {
        Mem {
            input: VecDeque::new(),
            budget: None,
            chunk: usize::MAX,
            reset: false,
            closed: false,
            check: OutCheck::new(slot),
        }
    }
}

impl Read for Mem {
    /// As a TCP socket reads: whatever has arrived, up to the room given; EOF and errors once
    /// the bytes before them are read.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        assert!(!self.closed, "read after Next::Close");
        let mut n = 0;
        while n < buf.len() {
            match self.input.front_mut() {
                None => break,
                Some(Piece::Data(d, at)) => {
                    let k = (d.len() - *at).min(buf.len() - n);
                    buf[n..n + k].copy_from_slice(&d[*at..*at + k]);
                    *at += k;
                    n += k;
                    if *at == d.len() {
                        self.input.pop_front();
                    }
                }
                Some(Piece::Eof) if n == 0 => return Ok(0),
                Some(Piece::Reset) if n == 0 => {
                    return Err(io::ErrorKind::ConnectionReset.into());
                }
                Some(_) => break,
            }
        }
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
}

impl Write for Mem {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        assert!(!self.closed, "write after Next::Close");
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        assert!(total > 0, "an empty write (a socket would say 0: EOF)");
        if self.reset {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let room = self.budget.unwrap_or(usize::MAX).min(self.chunk);
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut left = total.min(room);
        let n = left;
        for b in bufs {
            let k = b.len().min(left);
            self.check.feed(&b[..k]);
            left -= k;
            if left == 0 {
                break;
            }
        }
        if let Some(budget) = &mut self.budget {
            *budget -= n;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The worker's loop, played by the input.

struct World {
    ctx: Ctx,
    /// The context's first `now`, which is also the timer wheel's origin (`Ctx::new`).
    start: Instant,
    conns: Vec<Option<Conn<Mem>>>,
    next_generation: u64,
}

impl World {
    fn open(&mut self, slot: usize) -> bool {
        if self.ctx.draining || self.conns[slot].is_some() {
            return false;
        }
        let id = ConnId { worker: 0, token: slot, generation: self.next_generation };
        self.next_generation += 1;
        self.conns[slot] = Some(Conn::new(Mem::new(slot), id, &mut self.ctx));
        true
    }

    /// `Worker::close`: the connection's state is already wound down; undo the rest.
    fn close(&mut self, slot: usize) {
        let Some(mut conn) = self.conns[slot].take() else { return };
        if tracing() {
            eprintln!("  close slot {slot}");
        }
        conn.stream.closed = true;
        conn.fail(&mut self.ctx);
        assert!(conn.out.is_empty(), "output kept past close");
    }

    fn drive(&mut self, slot: usize) {
        let Some(conn) = self.conns[slot].as_mut() else { return };
        if conn.drive(&mut self.ctx) == Next::Close {
            self.close(slot);
        }
    }

    /// `Worker::run_local` and `Worker::on_message`.
    fn run_local(&mut self) {
        let mut handled = 0;
        while let Some(msg) = self.ctx.local.pop_front() {
            handled += 1;
            assert!(handled <= MAX_MESSAGES, "{handled} messages after one event: a loop");
            let Some(target) = msg.target() else { continue };
            assert_eq!(target.worker, 0, "a message for another worker");
            let conn = self
                .conns
                .get_mut(target.token)
                .and_then(Option::as_mut)
                .filter(|c| c.id.generation == target.generation);
            let found = conn.is_some();
            relay::on_message(conn, &mut self.ctx, msg);
            if found {
                self.drive(target.token);
            }
        }
    }

    /// Time passes; the wheel's due entries fire (`Worker::on_timer`).
    fn advance(&mut self, by: Duration) {
        self.ctx.now += by;
        let mut due = Vec::new();
        self.ctx.timers.expire(self.ctx.now, &mut due);
        for Entry { token, generation, .. } in due {
            let Some(conn) = self
                .conns
                .get_mut(token)
                .and_then(Option::as_mut)
                .filter(|c| c.id.generation == generation)
            else {
                continue;
            };
            match conn.on_timer(&mut self.ctx) {
                Next::Close => self.close(token),
                Next::Continue => self.drive(token),
            }
        }
    }

    /// `Worker::start_drain`, without the listener.
    fn drain(&mut self) {
        if self.ctx.draining {
            return;
        }
        self.ctx.draining = true;
        for slot in 0..MAX_CONNS {
            let Some(conn) = self.conns[slot].as_mut() else { continue };
            relay::on_drain(conn, &mut self.ctx);
            if conn.is_idle() {
                self.close(slot);
            } else {
                self.drive(slot);
            }
        }
    }

    /// The poll timeout the worker would take from the wheel now (`Worker::poll_timeout`):
    /// never later than a connection's earliest entry (plus the tick it is rounded up to), and
    /// never before the current tick ends. The wheel has nothing to fire before then, so an
    /// earlier wake-up only wastes a turn of the loop, and a timeout that stays too early is a
    /// busy loop.
    fn check_wheel(&self) {
        let now = self.ctx.now;
        let timeout = self.ctx.timers.timeout(now);
        if let Some(t) = timeout {
            let since = now.saturating_duration_since(self.start).as_nanos();
            let ticks = since.div_ceil(TICK.as_nanos());
            let tick_end = self.start + Duration::from_nanos((ticks * TICK.as_nanos()) as u64);
            assert!(
                now + t >= tick_end,
                "poll timeout {t:?} at {:?} after the start: the current tick ends in {:?}",
                now - self.start,
                tick_end - now
            );
        }
        for conn in self.conns.iter().flatten() {
            if let Some(armed) = conn.armed {
                let Some(t) = timeout else { panic!("an entry at {armed:?}, and no timeout") };
                assert!(
                    now + t <= armed.max(now) + TICK,
                    "poll timeout {t:?}, entry due in {:?}",
                    armed.saturating_duration_since(now)
                );
            }
        }
    }

    /// What must hold between events.
    fn check(&self, base: usize) {
        let peak = PEAK.load(Ordering::Relaxed);
        assert!(peak <= base + MAX_HEAP, "heap grew by {} bytes", peak - base);
        let mut waiting = 0;
        let mut preps = 0;
        let mut keys = BTreeSet::new();
        for conn in self.conns.iter().flatten() {
            if conn.out.is_empty() {
                assert!(
                    conn.stream.check.at_boundary(),
                    "nothing left to write, yet the output ends inside a response or frame: {:?}",
                    lossy(&conn.stream.check.pending)
                );
            }
            // Only a parked sub and a request waiting on another connection may wait without
            // a deadline; every deadline has a wheel entry at or before it.
            let may_wait = matches!(
                conn.state,
                State::Parked { .. }
                    | State::AwaitRep(_)
                    | State::AwaitTake
                    | State::AwaitStore { .. }
            );
            assert!(
                may_wait || conn.deadline.is_some(),
                "{} without a deadline",
                state_name(&conn.state)
            );
            if let Some(deadline) = conn.deadline {
                assert!(
                    conn.armed.is_some_and(|armed| armed <= deadline),
                    "deadline {:?} after the wheel entry {:?} ({})",
                    deadline - self.ctx.now,
                    conn.armed.map(|a| a.saturating_duration_since(self.ctx.now)),
                    state_name(&conn.state)
                );
            }
            match &conn.state {
                State::Body(_, BodyRead::Length { body, filled }) => {
                    assert!(body.len() <= MAX_BODY_BYTES && *filled <= body.len());
                }
                State::Body(_, BodyRead::Chunked { body, .. }) => {
                    assert!(body.len() <= MAX_BODY_BYTES, "chunked body of {}", body.len());
                }
                State::Parked { key, .. } => {
                    waiting += 1;
                    keys.insert(key.to_string());
                }
                State::Ws(ws) => match &ws.role {
                    Role::Psub(m) if !ws.closing => {
                        waiting += 1;
                        keys.insert(m.pool.key.to_string());
                    }
                    Role::Psub(_) => {}
                    Role::Prep(_) => preps += 1,
                    // The standalone context has no topics half: these never occur here.
                    Role::TopicPub(_) | Role::TopicSub(_) => {}
                    Role::Announce(_) => {}
                },
                _ => {}
            }
        }
        self.check_wheel();
        let shared = &self.ctx.shared;
        assert_eq!(shared.registry.waiting(), waiting, "registry's waiting count");
        // Listing the keys locks all 64 shards; with nothing waiting, the end of the run lists
        // them anyway.
        if waiting > 0 {
            let registered: BTreeSet<String> = shared.registry.keys().into_iter().collect();
            assert_eq!(registered, keys, "registry's keys");
        }
        assert_eq!(shared.prep_sockets.load(Ordering::Relaxed), preps, "open /prep sockets");
    }
}

fn state_name(state: &State) -> &'static str {
    match state {
        State::Head => "head",
        State::Body(..) => "body",
        State::Parked { .. } => "parked",
        State::Delivering { .. } => "delivering",
        State::AwaitRep(_) => "await-rep",
        State::AwaitStore { .. } => "await-store",
        State::AwaitTake => "await-take",
        State::Replaying { .. } => "replaying",
        State::ReplayingRemote(_) => "replaying-remote",
        State::Ws(_) => "websocket",
        State::Topic(_) => "topic",
        State::AwaitClaim { .. } => "await-claim",
        State::AwaitWhere { .. } => "await-where",
        State::AwaitCluster => "await-cluster",
        State::Announce { .. } => "announce",
        State::Closing => "closing",
    }
}

/// Time steps around every timeout: header 10 s, idle 75 s, write 5 s, confirm 1 s, ping 60 s
/// (a ping at 30 s), the wheel's 10 ms tick (and 1 ms, off the tick), and 200 days (times up
/// to 4: the wheel counts ticks in a u64, and 2^32 ticks are 497 days).
const STEPS_MS: [u64; 16] = [
    0,
    10,
    100,
    1000,
    1010,
    4990,
    5010,
    9990,
    10_010,
    30_010,
    59_990,
    60_010,
    75_010,
    1,
    500,
    200 * 86_400_000,
];

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    /// A piece: its length, then its bytes.
    fn piece(&mut self) -> Vec<u8> {
        let l = usize::from(self.byte().unwrap_or(0));
        let len = if l < 0xE0 {
            l + 1
        } else {
            256 * (l - 0xE0) + usize::from(self.byte().unwrap_or(0)) + 1
        };
        let (a, b) = self.0.split_at(len.min(self.0.len()));
        self.0 = b;
        a.to_vec()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(flags) = input.byte() else { return };
    let config = configs()[usize::from(flags % 32)].clone();
    assert_eq!(
        (config.max_header_bytes, config.max_body_bytes),
        (MAX_HEADER_BYTES, MAX_BODY_BYTES)
    );
    let (ctx, _poll) = Ctx::standalone(config).expect("a standalone context");
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let start = ctx.now;
    let mut w =
        World { ctx, start, conns: (0..MAX_CONNS).map(|_| None).collect(), next_generation: 1 };
    w.open(0);

    let mut ops = 0;
    while let Some(op) = input.byte() {
        ops += 1;
        if ops > MAX_OPS {
            break;
        }
        let slot = usize::from(op >> 4) & (MAX_CONNS - 1);
        let high = op >> 4;
        if tracing() {
            eprintln!("op {op:#04x} (slot {slot}, kind {})", op & 0x0F);
        }
        match op & 0x0F {
            kind @ 0..=7 => {
                let piece = input.piece();
                if let Some(conn) = w.conns[slot].as_mut() {
                    conn.stream.input.push_back(Piece::Data(piece, 0));
                    if kind < 7 {
                        conn.can_read = true;
                        w.drive(slot);
                    }
                }
            }
            8 => {
                if let Some(conn) = w.conns[slot].as_mut() {
                    conn.stream.input.push_back(Piece::Eof);
                    conn.can_read = true;
                    w.drive(slot);
                }
            }
            9 => {
                let b = input.byte().unwrap_or(0);
                if let Some(conn) = w.conns[slot].as_mut() {
                    conn.stream.chunk = [usize::MAX, 1, 7, 100][usize::from(b & 3)];
                    conn.stream.budget =
                        [None, Some(0), Some(1), Some(13), Some(200), Some(4096), Some(0), None]
                            [usize::from(b >> 2 & 7)];
                    w.drive(slot);
                }
            }
            10 => {
                let b = input.byte().unwrap_or(0);
                let ms = STEPS_MS[usize::from(b & 15)] * (1 + u64::from(b >> 6));
                w.advance(Duration::from_millis(ms));
            }
            11 => {
                if !w.open(slot) {
                    w.drive(slot);
                }
            }
            12 if high >= 8 => {
                if let Some(conn) = w.conns[slot].as_mut() {
                    conn.stream.input.push_back(Piece::Reset);
                    conn.stream.reset = true;
                    conn.can_read = true;
                    w.drive(slot);
                }
            }
            13 if high == 15 => w.drain(),
            14 => {
                if let Some(conn) = w.conns[slot].as_mut() {
                    conn.stream.budget = None;
                    conn.stream.chunk = usize::MAX;
                    w.drive(slot);
                }
            }
            15 => {
                if let Some(conn) = w.conns[slot].as_mut() {
                    conn.can_read = true;
                    w.drive(slot);
                }
            }
            _ => w.drive(slot),
        }
        w.run_local();
        w.check(base);
    }

    // The peers read everything: whatever is queued is written, and ends on a boundary.
    for slot in 0..MAX_CONNS {
        if let Some(conn) = w.conns[slot].as_mut() {
            conn.stream.budget = None;
            conn.stream.chunk = usize::MAX;
            w.drive(slot);
            w.run_local();
        }
    }
    w.check(base);
    for conn in w.conns.iter().flatten() {
        assert!(
            conn.stream.reset || conn.out.is_empty(),
            "output left unwritten on a writable socket"
        );
    }

    // Every connection closes: nothing may stay registered or queued.
    for slot in 0..MAX_CONNS {
        w.close(slot);
        w.run_local();
    }
    w.check(base);
    assert_eq!(w.ctx.shared.registry.waiting(), 0);
    assert!(w.ctx.shared.registry.keys().is_empty());
    assert!(w.ctx.local.is_empty());
});
