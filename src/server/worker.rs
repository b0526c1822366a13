//! `Worker`: one event loop on one thread. Accepts from its own listener, dispatches readiness
//! to connections, handles its mailbox and its timers, and drains on shutdown.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::conn::{Conn, Next};
use crate::metrics::WorkerMetrics;
use crate::relay;
use crate::server::mailbox::{ConnId, Msg};
use crate::server::timer::Entry;
use crate::server::{Ctx, Shared, listener};

pub const WAKER: Token = Token(usize::MAX - 1);
const LISTENER: Token = Token(usize::MAX - 2);

/// Events taken per poll: enough to amortise the syscall, few enough to keep latency even.
const EVENTS: usize = 1024;
/// Accepts per wake-up before serving the connections we have again (fairness under a flood).
const ACCEPTS_PER_WAKE: usize = 256;
/// Back-off when out of descriptors or at `ESUB_MAX_CONNECTIONS`: long enough not to spin,
/// short enough that a freed slot is used soon.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

pub struct Worker {
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Slab<Conn>,
    ctx: Ctx,
    next_generation: u64,
    /// Accept again at this time (backlog left after a full batch, or a back-off).
    accept_at: Option<Instant>,
    drain_deadline: Option<Instant>,
}

impl Worker {
    pub fn new(
        id: usize,
        poll: Poll,
        mut listener: TcpListener,
        shared: Arc<Shared>,
        metrics: WorkerMetrics,
    ) -> io::Result<Worker> {
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Worker {
            poll,
            listener: Some(listener),
            conns: Slab::with_capacity(1024),
            ctx: Ctx::new(id, shared, metrics),
            next_generation: 1,
            accept_at: None,
            drain_deadline: None,
        })
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        let mut inbox = Vec::new();
        let mut due = Vec::new();
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                crate::warn!("poll failed worker={} error={e}", self.ctx.worker);
                return;
            }
            self.ctx.tick();
            let mut mail = false;
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => mail = true,
                    Token(t) => {
                        let readable =
                            event.is_readable() || event.is_read_closed() || event.is_error();
                        if readable && let Some(conn) = self.conns.get_mut(t) {
                            conn.can_read = true;
                        }
                        self.drive(t);
                    }
                }
            }
            if mail {
                self.ctx.shared.mailboxes[self.ctx.worker].drain(&mut inbox);
                for msg in inbox.drain(..) {
                    self.on_message(msg);
                }
            }
            self.run_local();
            if self.accept_at.is_some_and(|at| at <= self.ctx.now) {
                self.accept_at = None;
                self.accept();
            }
            self.ctx.timers.expire(self.ctx.now, &mut due);
            for Entry { token, generation, .. } in due.drain(..) {
                self.on_timer(token, generation);
            }
            self.run_local();
            let shared = self.ctx.shared.clone();
            if let Some(hub) = &shared.hub {
                // This iteration's appends (interval mode), one write per partition; their
                // answers to this worker's connections are handled at once, and may queue more.
                loop {
                    crate::server::mailbox::hold();
                    hub.flush_appends();
                    crate::server::mailbox::release_local(self.ctx.worker, &mut self.ctx.local);
                    if self.ctx.local.is_empty() {
                        break;
                    }
                    self.run_local();
                }
                // One wake-up of the topics store for everything this iteration queued.
                hub.wake();
            }
            self.ctx.metrics.maybe_flush(self.ctx.now);
            if let Some(deadline) = self.drain_deadline
                && (self.conns.is_empty() || self.ctx.now >= deadline)
            {
                self.ctx.metrics.flush();
                return;
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let mut t = self.ctx.timers.timeout(self.ctx.now);
        let mut at_most = |d: Duration| t = Some(t.map_or(d, |t| t.min(d)));
        if let Some(at) = self.accept_at {
            at_most(at.saturating_duration_since(self.ctx.now));
        }
        if let Some(at) = self.drain_deadline {
            at_most(at.saturating_duration_since(self.ctx.now));
        }
        at_most(self.ctx.metrics.next_flush.saturating_duration_since(self.ctx.now));
        t
    }

    fn run_local(&mut self) {
        while let Some(msg) = self.ctx.local.pop_front() {
            self.on_message(msg);
        }
    }

    fn accept(&mut self) {
        let max = self.ctx.shared.config.max_connections;
        for _ in 0..ACCEPTS_PER_WAKE {
            let Some(listener) = &self.listener else {
                return;
            };
            if self.ctx.shared.open.fetch_add(1, Ordering::Relaxed) >= max {
                self.ctx.shared.open.fetch_sub(1, Ordering::Relaxed);
                self.accept_at = Some(self.ctx.now + ACCEPT_RETRY);
                return;
            }
            match listener.accept() {
                Ok((stream, peer)) => self.add(stream, peer.ip()),
                Err(e) => {
                    self.ctx.shared.open.fetch_sub(1, Ordering::Relaxed);
                    match e.kind() {
                        io::ErrorKind::WouldBlock => return,
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => continue,
                        _ if listener::out_of_fds(&e) => {
                            crate::warn!("accept paused worker={} error={e}", self.ctx.worker);
                            self.accept_at = Some(self.ctx.now + ACCEPT_RETRY);
                            return;
                        }
                        _ => {
                            crate::warn!("accept failed worker={} error={e}", self.ctx.worker);
                            self.accept_at = Some(self.ctx.now + ACCEPT_RETRY);
                            return;
                        }
                    }
                }
            }
        }
        // A full batch: more may wait, and the edge will not fire again for them.
        self.accept_at = Some(self.ctx.now);
    }

    fn add(&mut self, mut stream: mio::net::TcpStream, peer: std::net::IpAddr) {
        // Replies are small and latency is the product: never wait for Nagle.
        let _ = stream.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let token = entry.key();
        if let Err(e) = self.poll.registry().register(&mut stream, Token(token), Interest::READABLE)
        {
            crate::warn!("register failed error={e}");
            self.ctx.shared.open.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let id = ConnId { worker: self.ctx.worker, token, generation: self.next_generation };
        self.next_generation += 1;
        crate::verbose!("accept conn={token}");
        let mut conn = Conn::new(stream, id, &mut self.ctx);
        conn.peer = Some(peer);
        entry.insert(conn);
    }

    fn drive(&mut self, token: usize) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if conn.drive(&mut self.ctx) == Next::Close {
            return self.close(token);
        }
        // Ask for writability only while bytes wait for room in the socket.
        let want = !conn.out.is_empty();
        if want != conn.write_interest {
            let interest =
                if want { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            match self.poll.registry().reregister(&mut conn.stream, Token(token), interest) {
                Ok(()) => conn.write_interest = want,
                Err(e) => {
                    crate::warn!("reregister failed conn={token} error={e}");
                    self.close(token);
                }
            }
        }
    }

    /// Removes a connection whose state is already wound down (`Conn::fail` or `Closing`).
    fn close(&mut self, token: usize) {
        let mut conn = self.conns.remove(token);
        conn.fail(&mut self.ctx);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.ctx.shared.open.fetch_sub(1, Ordering::Relaxed);
        crate::verbose!("close conn={token}");
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id.token).filter(|c| c.id.generation == id.generation)
    }

    fn on_message(&mut self, msg: Msg) {
        let Some(target) = msg.target() else {
            return self.start_drain();
        };
        let conn =
            self.conns.get_mut(target.token).filter(|c| c.id.generation == target.generation);
        relay::on_message(conn, &mut self.ctx, msg);
        if self.conn_mut(target).is_some() {
            self.drive(target.token);
        }
    }

    fn on_timer(&mut self, token: usize, generation: u64) {
        let Some(conn) = self.conns.get_mut(token).filter(|c| c.id.generation == generation) else {
            return;
        };
        match conn.on_timer(&mut self.ctx) {
            Next::Close => self.close(token),
            // The timer may have queued bytes (a ping, a close frame): write them.
            Next::Continue => self.drive(token),
        }
    }

    fn start_drain(&mut self) {
        if self.ctx.draining {
            return;
        }
        // Serve what is already in the accept queue, then stop taking new connections: with
        // SO_REUSEPORT the kernel sends new ones to a listener that is still open.
        let accepted_from = self.next_generation;
        self.accept();
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.accept_at = None;
        self.ctx.draining = true;
        self.drain_deadline = Some(self.ctx.now + self.ctx.shared.config.drain);
        let tokens: Vec<usize> = self.conns.iter().map(|(t, _)| t).collect();
        for token in tokens {
            let Some(conn) = self.conns.get_mut(token) else {
                continue;
            };
            relay::on_drain(conn, &mut self.ctx);
            // A connection accepted just now has not been read yet: its request may be in its
            // socket or on the way. Closing it would reset the client (unread bytes) or answer
            // it with an EOF; it is served (and closed after its answer) like any other.
            let fresh = conn.id.generation >= accepted_from;
            if conn.is_idle() && !fresh {
                self.close(token);
            } else {
                self.drive(token);
            }
        }
    }
}
