//! End-to-end harness: start the real `esub` binary on port 0, talk raw HTTP/1.x over TCP.
//! Every socket read has a timeout and every wait has a deadline, so a server bug fails a test
//! instead of hanging it.
#![allow(dead_code)]

mod client;
pub mod cluster;
pub mod driver;
mod json;
pub mod nats;
pub mod tls;
pub mod topics;
pub mod ws;

pub use client::{Client, Response};
pub use json::{Json, parse_json};

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long any single socket read or write may block before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may take to print its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for "eventually" conditions polled by the helpers.
pub const POLL_DEADLINE: Duration = Duration::from_secs(10);
/// Pause between polls: short enough to keep tests fast, long enough not to spin.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Plain-text content type every error body carries (API.md section 1).
pub const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

// ---------------------------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------------------------

/// A running `esub` child. Killed (SIGKILL by PID) and reaped on drop; its stderr is kept and
/// printed when the test panics.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// The first stdout line exactly as printed, without the newline.
    pub first_line: String,
    stderr: Arc<Mutex<Vec<u8>>>,
    exited: Option<ExitStatus>,
}

/// The `esub` command with a clean environment: inherited `ESUB_*` / `DATADOG_*` variables are
/// removed so the caller's shell cannot change what a test sees.
pub fn esub_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_esub"));
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str()
            && (k.starts_with("ESUB_") || k.starts_with("DATADOG_"))
        {
            cmd.env_remove(k);
        }
    }
    // Keep any phase-2 data out of the source tree even if a default changes.
    cmd.env("ESUB_DATA_DIR", std::env::temp_dir().join("esub-e2e-data"));
    cmd
}

fn spawn_collector<R: Read + Send + 'static>(mut r: R) -> Arc<Mutex<Vec<u8>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&out);
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    });
    out
}

impl Server {
    /// Start with `ESUB_PORT=0`, `ESUB_BIND=127.0.0.1` plus `env` (which may override both).
    pub fn start(env: &[(&str, &str)]) -> Server {
        Server::start_inner(env, true)
    }

    /// Start with `ESUB_PORT=0` plus `env`, leaving `ESUB_BIND` at the server's default.
    pub fn start_default_bind(env: &[(&str, &str)]) -> Server {
        Server::start_inner(env, false)
    }

    fn start_inner(env: &[(&str, &str)], loopback: bool) -> Server {
        let mut cmd = esub_command();
        cmd.env("ESUB_PORT", "0");
        if loopback {
            cmd.env("ESUB_BIND", "127.0.0.1");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn esub binary");
        let stderr = spawn_collector(child.stderr.take().unwrap());

        // Stdout: forward every line to a channel, keep draining so the server never blocks.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let _ = tx.send(line);
                    }
                }
            }
        });

        let first = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                // Give the collector a moment to see the pipe close.
                let deadline = Instant::now() + Duration::from_millis(500);
                while Instant::now() < deadline && Arc::strong_count(&stderr) > 1 {
                    thread::sleep(POLL_INTERVAL);
                }
                panic!(
                    "esub did not print its listening line within {START_TIMEOUT:?} ({e:?}); \
                     exit: {status:?}; env: {env:?}\n--- stderr ---\n{}",
                    String::from_utf8_lossy(&stderr.lock().unwrap())
                );
            }
        };
        // Drain the rest of stdout in the background (lines after the first are not checked).
        thread::spawn(move || for _ in rx {});

        let first_line = first.trim_end_matches(['\r', '\n']).to_string();
        let addr = parse_listening_line(&first_line)
            .unwrap_or_else(|| panic!("bad first stdout line: {first_line:?}"));
        // A server bound to 0.0.0.0 is reached through loopback.
        let addr = if addr.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        };
        Server { child, addr, first_line, stderr, exited: None }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// A new connection to the server.
    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// One request on a new connection.
    pub fn get(&self, path: &str) -> Response {
        self.client().get(path)
    }

    /// `HEAD path` on a fresh connection.
    pub fn head(&self, path: &str) -> Response {
        self.client().head(path)
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Response {
        self.client().post(path, body)
    }

    /// A connection that has sent `GET <path>` and waits (the response is read by the caller).
    pub fn sub(&self, path: &str) -> Client {
        let mut c = self.client();
        c.send_get(path);
        c
    }

    /// `GET /keys?local=1` decoded (this node's keys, in cluster mode too): the empty list
    /// for 204.
    pub fn keys(&self) -> Vec<String> {
        keys_of(&self.get("/keys?local=1"))
    }

    /// Poll `/keys` until every key in `want` is listed.
    pub fn wait_for_keys(&self, want: &[&str]) {
        let deadline = Instant::now() + POLL_DEADLINE;
        loop {
            let keys = self.keys();
            if want.iter().all(|w| keys.iter().any(|k| k == w)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "keys {want:?} not all listed within {POLL_DEADLINE:?}; /keys = {keys:?}"
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    pub fn wait_for_key(&self, key: &str) {
        self.wait_for_keys(&[key]);
    }

    /// Poll `/keys` until `key` is not listed.
    pub fn wait_for_key_gone(&self, key: &str) {
        let deadline = Instant::now() + POLL_DEADLINE;
        loop {
            let keys = self.keys();
            if !keys.iter().any(|k| k == key) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "key {key:?} still listed after {POLL_DEADLINE:?}; /keys = {keys:?}"
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Send SIGTERM through the `kill` utility (no libc in tests).
    pub fn sigterm(&self) {
        self.signal("-TERM");
    }

    pub fn sigint(&self) {
        self.signal("-INT");
    }

    fn signal(&self, sig: &str) {
        let st =
            Command::new("kill").args([sig, &self.pid().to_string()]).status().expect("run kill");
        assert!(st.success(), "kill {sig} failed: {st:?}");
    }

    /// Wait for the process to exit, failing after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                self.exited = Some(st);
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "esub did not exit within {within:?}\n--- stderr ---\n{}",
                self.stderr()
            );
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- esub stderr (pid {}, {}) ---\n{}--- end of esub stderr ---",
                self.child.id(),
                self.first_line,
                self.stderr()
            );
        }
    }
}

/// `listening on <addr>:<port>` → the address, or `None` when the line has another shape.
pub fn parse_listening_line(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix("listening on ")?;
    rest.parse::<SocketAddr>().ok()
}

/// Output of a run that is expected to end by itself (`--help`, bad configuration).
pub struct Finished {
    /// `None` when the process was still running at the deadline (it was then killed).
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// Run `esub` with `args` and `env` (on port 0, loopback) until it exits; kill it if it is
/// still running after `within` (`status` is then `None`).
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)], within: Duration) -> Finished {
    let mut cmd = esub_command();
    cmd.env("ESUB_PORT", "0").env("ESUB_BIND", "127.0.0.1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn esub binary");
    let out = spawn_collector(child.stdout.take().unwrap());
    let err = spawn_collector(child.stderr.take().unwrap());
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(POLL_INTERVAL);
    };
    // The pipes close when the process exits; wait (bounded) for the collectors to finish.
    let drain_deadline = Instant::now() + Duration::from_secs(2);
    while (Arc::strong_count(&out) > 1 || Arc::strong_count(&err) > 1)
        && Instant::now() < drain_deadline
    {
        thread::sleep(POLL_INTERVAL);
    }
    let stdout = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err.lock().unwrap()).into_owned();
    Finished { status, stdout, stderr }
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// The keys of a `/keys` response: `[]` for 204, the decoded JSON array of strings for 200.
#[track_caller]
pub fn keys_of(r: &Response) -> Vec<String> {
    match r.status {
        204 => {
            assert!(r.body.is_empty(), "204 with a body");
            Vec::new()
        }
        200 => match parse_json(&r.body_str()) {
            Ok(Json::Arr(items)) => items
                .into_iter()
                .map(|j| match j {
                    Json::Str(s) => s,
                    other => panic!("non-string key {other:?} in {:?}", r.body_str()),
                })
                .collect(),
            other => panic!("/keys body is not a JSON array: {other:?} from {:?}", r.body_str()),
        },
        s => panic!("/keys answered {s}: {r:?}"),
    }
}

/// Percent-encode every byte (`%XX`), for keys whose raw form must differ from the decoded one.
pub fn percent_encode_all(s: &[u8]) -> String {
    s.iter().map(|b| format!("%{b:02X}")).collect()
}

/// Count how many of `items` equal each value.
pub fn tally<T: std::hash::Hash + Eq + Clone>(items: &[T]) -> HashMap<T, usize> {
    let mut m = HashMap::new();
    for i in items {
        *m.entry(i.clone()).or_insert(0) += 1;
    }
    m
}
