//! One TCP connection to a NATS server: the mio stream, the bytes received and not yet parsed,
//! and the bytes queued to send.

use std::io;
use std::net::{Shutdown, SocketAddr};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::conn::buffer::{Buffer, Io, OutQueue};

/// What `close` reads into while it reads out the socket.
const READ_CAP: usize = 64 * 1024;

pub(super) struct Link {
    stream: TcpStream,
    pub addr: SocketAddr,
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
    pub fn open(addr: SocketAddr, registry: &Registry, token: Token) -> io::Result<Link> {
        let mut stream = TcpStream::connect(addr)?;
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Link {
            stream,
            addr,
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

    /// One read into `rx`, which may hold up to `cap` bytes (`Io::WouldBlock` when full).
    pub fn read(&mut self, cap: usize) -> Io {
        self.rx.read_from(&mut self.stream, cap)
    }

    /// Writes until the queue is empty or the socket is full; `Err` when the link is dead.
    pub fn flush(&mut self) -> Result<(), Io> {
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
