//! A wake-up at a microsecond, for the fixed-rate scenarios. `Poll::poll` takes its timeout in
//! whole milliseconds (mio rounds a shorter one up), so a generator paced by the poll timeout
//! alone sends a "fixed" rate in bursts of a millisecond's messages or more, and every request
//! of a burst waits for the ones before it at the server: latency of the generator's making.
//! A `timerfd` in the same poll wakes it when the next message is due.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

pub struct Pacer {
    fd: OwnedFd,
    /// The expiry set and not yet seen.
    armed: Option<Instant>,
}

impl Pacer {
    /// A timer registered in `registry` as `token`, readable at each expiry.
    pub fn new(registry: &Registry, token: Token) -> io::Result<Pacer> {
        // SAFETY: plain syscall; the descriptor is owned below.
        let fd = unsafe {
            libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        Ok(Pacer { fd, armed: None })
    }

    /// Has the poll woken at `at` (at once when it has passed); the one expiry pending.
    pub fn arm(&mut self, at: Instant) -> io::Result<()> {
        if self.armed == Some(at) {
            return Ok(());
        }
        // Zero would disarm: a time already passed fires after a microsecond.
        let d = at.saturating_duration_since(Instant::now()).max(Duration::from_micros(1));
        let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        let value = libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        };
        let spec = libc::itimerspec { it_interval: zero, it_value: value };
        // SAFETY: `spec` outlives the call; no old value is asked for.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = Some(at);
        Ok(())
    }

    /// Takes an expiry (on the timer's event): the descriptor is readable again only at the
    /// next one, and the next `arm` sets a new time.
    pub fn fired(&mut self) {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into `count`; a timer not expired yet (EAGAIN) is fine.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
        self.armed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};

    /// The poll wakes at the timer's time, well under the millisecond a poll timeout rounds to.
    #[test]
    fn wakes_the_poll_under_a_millisecond() {
        let mut poll = Poll::new().unwrap();
        let mut pacer = Pacer::new(poll.registry(), Token(7)).unwrap();
        let mut events = Events::with_capacity(4);
        let mut woke = Vec::new();
        for _ in 0..20 {
            let at = Instant::now() + Duration::from_micros(200);
            pacer.arm(at).unwrap();
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                poll.poll(&mut events, Some(Duration::from_millis(100))).unwrap();
                if events.iter().any(|e| e.token() == Token(7)) {
                    break;
                }
                assert!(Instant::now() < deadline, "the timer never fired");
            }
            let now = Instant::now();
            assert!(now >= at, "woke before the time asked for");
            woke.push(now - at);
            pacer.fired();
        }
        woke.sort();
        // The median wake-up is late by far less than the millisecond a poll timeout rounds
        // to (a shared machine may stall any single one).
        assert!(woke[woke.len() / 2] < Duration::from_micros(600), "late by {woke:?}");
    }
}
