//! Running out of file descriptors: the server keeps serving what it has, does not spin, and
//! accepts again once descriptors are free (API.md section 1, issue "event-loop server").

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Client, Server};

/// The server's open descriptor numbers.
fn open_fds(pid: u32) -> Vec<usize> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("list the server's fds");
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// utime + stime of the whole server process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_descriptors_keeps_serving_without_spinning_and_recovers() {
    let s = Server::start(&[("ESUB_WORKERS", "1")]);
    let pid = s.pid();
    let mut control = s.client();
    assert_eq!(control.get("/ping").status, 200);
    // RLIMIT_NOFILE bounds descriptor numbers and the kernel hands out the lowest free one:
    // a limit just past the fourth free number leaves exactly four, then accept fails (EMFILE).
    let fds = open_fds(pid);
    let free = 4;
    let fourth_free = (0..).filter(|n| !fds.contains(n)).nth(free - 1).unwrap();
    let limit = fourth_free + 1;
    let st = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={limit}:{limit}")])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(st.success(), "prlimit failed: {st:?}");

    // The kernel completes every connection (backlog); the server can accept only four.
    let mut clients: Vec<Client> = (0..12).map(|_| s.client()).collect();
    for c in &mut clients {
        c.send_get("/ping");
    }
    let mut answered = Vec::new();
    let mut waiting = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        c.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        match c.try_read_response() {
            Ok(r) => {
                assert_eq!(r.status, 200);
                answered.push(i);
            }
            // Nothing within 300 ms: not accepted (the error is the read timeout).
            Err(_) => waiting.push(i),
        }
        c.stream.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
    }
    assert!(answered.len() <= free, "only {free} descriptors were free: {answered:?}");
    assert!(!waiting.is_empty(), "some connections must wait for a descriptor");

    // Out of descriptors, the open connections are still served, and the loop does not spin.
    for _ in 0..20 {
        assert_eq!(control.get("/ping").status, 200);
    }
    // A second with connections waiting in the backlog and no descriptor to take them: a busy
    // accept loop would burn all of it (100 ticks); retrying every 50 ms costs next to nothing.
    // (The sleep is the measurement window, not a wait for something to happen.)
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(pid) - before;
    assert!(spent < 10, "the server used {spent} ticks of CPU in an idle second while out of fds");
    assert_eq!(control.get("/ping").status, 200);

    // Free the descriptors: every waiting connection is accepted and answered.
    let mut rest: Vec<Client> = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        if waiting.contains(&i) {
            rest.push(c);
        }
    }
    let answered_count = answered.len();
    drop(control);
    let deadline = Instant::now() + common::POLL_DEADLINE;
    for c in &mut rest {
        let r = c.read_response();
        assert_eq!(r.status, 200, "a waiting connection is served once a descriptor is free");
        assert!(Instant::now() < deadline);
        // Leave room for the next one.
        c.stream.shutdown(std::net::Shutdown::Both).ok();
    }
    assert!(answered_count + rest.len() == 12);
    // Still alive and serving, under the same limit, once the descriptors are back.
    drop(rest);
    let mut again = None;
    let deadline = Instant::now() + common::POLL_DEADLINE;
    while again.is_none() && Instant::now() < deadline {
        let mut c = s.client();
        c.stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        again = c.try_read_ping();
    }
    assert_eq!(again, Some(200), "the server serves new connections again");
}

trait PingOnce {
    fn try_read_ping(&mut self) -> Option<u16>;
}

impl PingOnce for Client {
    /// One `GET /ping`; `None` when nothing comes back in time (not accepted yet).
    fn try_read_ping(&mut self) -> Option<u16> {
        self.try_send(b"GET /ping HTTP/1.1\r\nHost: esub\r\n\r\n").ok()?;
        self.try_read_response().ok().map(|r| r.status)
    }
}
