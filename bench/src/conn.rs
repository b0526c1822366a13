//! One client connection of the generator: a non-blocking socket, the bytes read but not yet
//! parsed, and the request being written. Socket results are classified once, here.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

/// What one socket call did.
pub enum Io {
    Progress(usize),
    WouldBlock,
    Eof,
    Fatal(io::Error),
}

fn classify(r: io::Result<usize>) -> Io {
    match r {
        Ok(0) => Io::Eof,
        Ok(n) => Io::Progress(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Io::WouldBlock,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Io::Progress(0),
        Err(e) => Io::Fatal(e),
    }
}

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// `connect` issued, not yet writable.
    Connecting,
    Open,
}

/// The connection is unusable; the caller counts it and reconnects.
#[derive(Debug)]
pub struct Broken(pub String);

pub struct Conn {
    stream: TcpStream,
    pub link: Link,
    /// Bytes read and not yet consumed by a complete response.
    pub rbuf: Vec<u8>,
    /// The request being written and how much of it has gone out.
    pub wbuf: Vec<u8>,
    wpos: usize,
}

impl Conn {
    pub fn connect(addr: SocketAddr, registry: &Registry, token: Token) -> io::Result<Conn> {
        let mut stream = TcpStream::connect(addr)?;
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Conn { stream, link: Link::Connecting, rbuf: Vec::new(), wbuf: Vec::new(), wpos: 0 })
    }

    pub fn deregister(&mut self, registry: &Registry) {
        // The socket is closed right after; a failure here changes nothing.
        let _ = registry.deregister(&mut self.stream);
    }

    /// On a writable event while connecting: `Ok(true)` once the connection is established.
    pub fn check_connected(&mut self) -> Result<bool, Broken> {
        if self.link == Link::Open {
            return Ok(true);
        }
        if let Ok(Some(e)) | Err(e) = self.stream.take_error() {
            return Err(Broken(format!("connect: {e}")));
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                // Requests are written whole; Nagle would only hold back their last segment.
                self.stream.set_nodelay(true).map_err(|e| Broken(format!("nodelay: {e}")))?;
                self.link = Link::Open;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(Broken(format!("connect: {e}"))),
        }
    }

    /// Starts sending what the caller put in `wbuf`.
    pub fn begin_write(&mut self) {
        self.wpos = 0;
    }

    pub fn writing(&self) -> bool {
        self.wpos < self.wbuf.len()
    }

    /// Writes as much of `wbuf` as the socket takes: `Ok(true)` when all of it has gone.
    /// A short write means the socket buffer is full; the writable edge that follows resumes.
    pub fn flush(&mut self) -> Result<bool, Broken> {
        if self.link != Link::Open {
            return Ok(false);
        }
        while self.wpos < self.wbuf.len() {
            match classify(self.stream.write(&self.wbuf[self.wpos..])) {
                Io::Progress(n) => self.wpos += n,
                Io::WouldBlock => return Ok(false),
                Io::Eof => return Err(Broken("write: connection closed".into())),
                Io::Fatal(e) => return Err(Broken(format!("write: {e}"))),
            }
        }
        Ok(true)
    }

    /// Appends what the socket has to `rbuf`, using `scratch` for the reads. `Ok(true)` if
    /// anything arrived. Eof is an error: both servers keep these connections open. `to_end`:
    /// the event said the peer closed or failed, so read on until that shows.
    pub fn fill(&mut self, scratch: &mut [u8], to_end: bool) -> Result<bool, Broken> {
        let mut got = false;
        loop {
            match classify(self.stream.read(scratch)) {
                Io::Progress(n) => {
                    self.rbuf.extend_from_slice(&scratch[..n]);
                    got |= n > 0;
                    // A read shorter than the buffer emptied the socket. With epoll's edge
                    // trigger any later arrival raises a new event, so the read that would only
                    // say WouldBlock is skipped: it is one syscall per message saved.
                    if n > 0 && n < scratch.len() && !to_end {
                        return Ok(got);
                    }
                }
                Io::WouldBlock => return Ok(got),
                Io::Eof => return Err(Broken("server closed the connection".into())),
                Io::Fatal(e) => return Err(Broken(format!("read: {e}"))),
            }
        }
    }

    /// Drops the first `n` bytes of `rbuf` (one parsed response).
    pub fn consume(&mut self, n: usize) {
        if n >= self.rbuf.len() {
            self.rbuf.clear();
        } else {
            self.rbuf.drain(..n);
        }
    }
}
