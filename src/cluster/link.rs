//! One TCP connection to a NATS server: the mio stream, the TLS session once it starts, the
//! plaintext received and not yet parsed, and the plaintext queued to send.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::ClientConfig;

use super::tls::Tls;
use super::url::ServerUrl;
use crate::conn::buffer::{Buffer, Io, OutQueue};

/// What `close` reads into while it reads out the socket.
const READ_CAP: usize = 64 * 1024;

pub(super) struct Link {
    stream: TcpStream,
    pub addr: SocketAddr,
    /// The URL `addr` came from: its host names the server for TLS, its scheme asks for TLS.
    pub url: ServerUrl,
    /// Present from `start_tls` on: everything after the plaintext INFO goes through it.
    tls: Option<Box<Tls>>,
    pub rx: Buffer,
    pub tx: OutQueue,
    /// The last write stopped at `WouldBlock`: nothing more goes out before a writable event.
    pub write_blocked: bool,
    /// A read pass stopped at its budget, so the socket may hold more than readiness will
    /// report again (edge-triggered): the client reads on at its next turn.
    pub read_more: bool,
}

impl Link {
    /// Starts a non-blocking connect and registers the stream for both directions, once, for
    /// its whole life (edge-triggered: a writable event means a connect finished or room freed).
    pub fn open(
        addr: SocketAddr,
        url: ServerUrl,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Link> {
        let mut stream = TcpStream::connect(addr)?;
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Link {
            stream,
            addr,
            url,
            tls: None,
            rx: Buffer::default(),
            tx: OutQueue::default(),
            write_blocked: false,
            read_more: false,
        })
    }

    /// Whether the connect finished (mio's recipe: a pending socket error fails it; a peer
    /// address means it is up; `NotConnected` means not yet).
    pub fn connected(&mut self) -> io::Result<bool> {
        if let Some(e) = self.stream.take_error()? {
            return Err(e);
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                // Requests and replies are small and latency-bound: no Nagle delay.
                self.stream.set_nodelay(true)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Starts TLS with the URL's host as the server name: from here `read` decrypts and
    /// `flush` encrypts (the handshake goes first). `Err` says why it cannot start.
    pub fn start_tls(&mut self, config: Arc<ClientConfig>) -> Result<(), String> {
        self.tls = Some(Box::new(Tls::new(config, &self.url.host)?));
        Ok(())
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// One read into `rx`, which may hold up to `cap` bytes (`Io::WouldBlock` when full).
    pub fn read(&mut self, cap: usize) -> Io {
        match &mut self.tls {
            None => self.rx.read_from(&mut self.stream, cap),
            Some(tls) => tls.read(&mut self.stream, &mut self.rx, cap),
        }
    }

    /// Whether a read of `n` bytes emptied the socket, so an edge-triggered poll will report
    /// new bytes. Never under TLS: a short plaintext read says nothing of the records behind it.
    pub fn drained(&self, n: usize) -> bool {
        self.tls.is_none() && self.rx.drained(n)
    }

    /// Whether `flush` has something it can write now: plaintext (under TLS, once the handshake
    /// is done: until then it waits for the server, not for us), or TLS records.
    pub fn wants_write(&self) -> bool {
        match &self.tls {
            None => !self.tx.is_empty(),
            Some(t) => t.wants_write() || (!self.tx.is_empty() && !t.is_handshaking()),
        }
    }

    /// Writes until the queue is empty or the socket is full; `Err` when the link is dead.
    pub fn flush(&mut self) -> Result<(), Io> {
        if let Some(tls) = &mut self.tls {
            if !self.write_blocked {
                self.write_blocked = tls.flush(&mut self.stream, &mut self.tx)?;
            }
            return Ok(());
        }
        while !self.tx.is_empty() && !self.write_blocked {
            match self.tx.write_to(&mut self.stream) {
                Io::Progress(_) => {}
                Io::WouldBlock => self.write_blocked = true,
                dead => return Err(dead),
            }
        }
        Ok(())
    }

    /// Leaves the poll; with `linger`, first writes what it can and half-closes, reading out
    /// what the server sent so closing does not reset the connection and lose the last bytes.
    pub fn close(mut self, registry: &Registry, linger: bool) {
        if linger {
            if let Some(tls) = &mut self.tls {
                tls.close();
            }
            let _ = self.flush();
            let _ = self.stream.shutdown(Shutdown::Write);
            // A few reads: what arrived before our FIN; a server that keeps sending is not waited for.
            for _ in 0..16 {
                let n = self.rx.len();
                self.rx.consume(n);
                if !matches!(self.read(READ_CAP), Io::Progress(_)) {
                    break;
                }
            }
        }
        let _ = registry.deregister(&mut self.stream);
    }
}
