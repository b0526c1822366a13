//! One client connection of the generator: a non-blocking socket, the bytes read but not yet
//! parsed, and the request being written. Socket results are classified once, here.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use std::time::Duration;

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};

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

/// What one poll event did to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// It became open with this event.
    pub connected: bool,
    /// New bytes are in `rbuf`.
    pub read: bool,
}

/// Waits for events up to `wait`; a signal is no error, only an empty wake-up.
pub fn poll_events(poll: &mut Poll, events: &mut Events, wait: Duration) -> Result<(), String> {
    match poll.poll(events, Some(wait)) {
        Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(format!("poll: {e}")),
        _ => Ok(()),
    }
}

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
    /// Starts connecting to `addr`, from `source` when given (else the kernel's choice).
    pub fn connect(
        addr: SocketAddr,
        source: Option<Ipv4Addr>,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Conn> {
        let mut stream = match source {
            None => TcpStream::connect(addr)?,
            Some(ip) => connect_from(ip, addr)?,
        };
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

    /// One poll event for a request/response connection: finishes connecting, sends what is
    /// pending and reads what arrived. The caller then parses `rbuf` when `read` is set.
    pub fn step(&mut self, ev: &Event, scratch: &mut [u8]) -> Result<Step, Broken> {
        let mut step = Step { connected: false, read: false };
        if self.link == Link::Connecting {
            if !self.check_connected()? {
                return Ok(step);
            }
            step.connected = true;
        }
        if self.writing() {
            self.flush()?;
        }
        let closing = ev.is_read_closed() || ev.is_error();
        step.read = (ev.is_readable() || closing) && self.fill(scratch, closing)?;
        Ok(step)
    }

    /// The buffer to append a message to: emptied first unless a write is still going out, so
    /// a message queued behind another (a pong behind a pong) follows it. `flush` sends it.
    pub fn append(&mut self) -> &mut Vec<u8> {
        if !self.writing() {
            self.wbuf.clear();
            self.wpos = 0;
        }
        &mut self.wbuf
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

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

/// A non-blocking connect from a chosen loopback source address. The port is picked at
/// `connect`, per destination (`IP_BIND_ADDRESS_NO_PORT`), not at `bind`, where every source
/// address would share one ephemeral range across all destinations.
fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> io::Result<TcpStream> {
    let SocketAddr::V4(dst) = addr else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "source addresses need IPv4"));
    };
    let flags = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket(2) with constant arguments; no memory is passed.
    let fd = unsafe { libc::socket(libc::AF_INET, flags, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket nothing else owns; `owned` closes it on every return below.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: the option value is a c_int we own, with its size.
    let rc = unsafe {
        libc::setsockopt(
            owned.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let src = sockaddr(SocketAddrV4::new(source, 0));
    // SAFETY: `src` is a sockaddr_in we own, passed with its size.
    if unsafe { libc::bind(owned.as_raw_fd(), (&src as *const libc::sockaddr_in).cast(), len) } != 0
    {
        return Err(io::Error::last_os_error());
    }
    let dst = sockaddr(dst);
    // SAFETY: `dst` is a sockaddr_in we own, passed with its size.
    if unsafe { libc::connect(owned.as_raw_fd(), (&dst as *const libc::sockaddr_in).cast(), len) }
        != 0
    {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(TcpStream::from_std(std::net::TcpStream::from(owned)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    #[test]
    fn connects_from_the_source_address_given() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let poll = mio::Poll::new().unwrap();
        for source in [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 3)] {
            let mut c = Conn::connect(addr, Some(source), poll.registry(), Token(0)).unwrap();
            let (_peer, from) = listener.accept().unwrap();
            assert_eq!(from.ip(), source);
            let deadline = Instant::now() + Duration::from_secs(5);
            while !c.check_connected().unwrap() {
                assert!(Instant::now() < deadline, "not connected");
                std::thread::sleep(Duration::from_millis(1));
            }
            c.deregister(poll.registry());
        }
    }

    /// Polls until `c` reports a step with `read` set, collecting every step seen.
    fn steps_until_read(poll: &mut Poll, c: &mut Conn) -> Vec<Step> {
        let mut events = Events::with_capacity(8);
        let mut scratch = [0u8; 16];
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !seen.last().is_some_and(|s: &Step| s.read) {
            assert!(Instant::now() < deadline, "no read after {seen:?}");
            poll_events(poll, &mut events, Duration::from_millis(50)).unwrap();
            for ev in events.iter() {
                seen.push(c.step(ev, &mut scratch).unwrap());
            }
        }
        seen
    }

    #[test]
    fn step_connects_once_writes_and_reads() {
        use std::io::{Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut poll = Poll::new().unwrap();
        let mut c =
            Conn::connect(listener.local_addr().unwrap(), None, poll.registry(), Token(0)).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.wbuf.extend_from_slice(b"ping");
        c.begin_write();
        peer.write_all(b"0123456789abcdefXYZ").unwrap();
        let seen = steps_until_read(&mut poll, &mut c);
        assert_eq!(seen.iter().filter(|s| s.connected).count(), 1, "{seen:?}");
        assert!(seen[0].connected, "the first step connects: {seen:?}");
        let mut got = [0u8; 4];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        // Reads past the 16-byte scratch: the whole burst arrives in one step or the next.
        while c.rbuf.len() < 19 {
            steps_until_read(&mut poll, &mut c);
        }
        assert_eq!(c.rbuf, b"0123456789abcdefXYZ");
        // The peer closing is an error, not a silent end.
        drop(peer);
        let mut events = Events::with_capacity(8);
        let mut scratch = [0u8; 16];
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = loop {
            assert!(Instant::now() < deadline, "the close never showed");
            poll_events(&mut poll, &mut events, Duration::from_millis(50)).unwrap();
            if let Some(e) = events.iter().find_map(|ev| c.step(ev, &mut scratch).err()) {
                break e;
            }
        };
        assert_eq!(err.0, "server closed the connection");
    }
}
