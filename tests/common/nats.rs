//! nats-server processes for the cluster tests: one server (plain or TLS), or a cluster of them
//! joined by routes, each on free loopback ports, killed by PID on drop.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{POLL_DEADLINE, Server};

/// `NATS_SERVER_BIN`, else `nats-server` on PATH or where Debian puts it.
fn nats_server_bin() -> PathBuf {
    let found = match std::env::var_os("NATS_SERVER_BIN") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .chain(["/usr/sbin".into(), "/usr/bin".into(), "/usr/local/bin".into()])
                .map(|d| d.join("nats-server"))
                .find(|p| p.is_file())
        }
    };
    found.unwrap_or_else(|| {
        panic!("nats-server not found: run `bash tests/nats/install.sh` (make test does)")
    })
}

/// A free loopback port: bound, read, released (nats-server cannot take port 0).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
}

impl Nats {
    /// One server on a free port.
    pub fn start() -> Nats {
        Nats::start_with(free_port(), Vec::new())
    }

    /// One server on a free port that requires TLS of its clients, with `pki`'s certificate
    /// (its INFO says `tls_required`; clients start TLS after it).
    pub fn start_tls(pki: &super::tls::Pki) -> Nats {
        let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
        let args = vec![
            "--tls".into(),
            "--tlscert".into(),
            path(&pki.cert),
            "--tlskey".into(),
            path(&pki.key),
        ];
        Nats::start_with(free_port(), args)
    }

    /// `n` servers joined by routes (a full mesh, every route listed).
    pub fn cluster(n: usize) -> Vec<Nats> {
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let list = |skip: usize| {
            let urls: Vec<String> = routes
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, p)| format!("nats://127.0.0.1:{p}"))
                .collect();
            urls.join(",")
        };
        (0..n)
            .map(|i| {
                let args = vec![
                    "--cluster_name".into(),
                    "esubtest".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{}", routes[i]),
                    "--routes".into(),
                    list(i),
                ];
                Nats::start_with(free_port(), args)
            })
            .collect()
    }

    fn start_with(port: u16, args: Vec<String>) -> Nats {
        let mut n = Nats { child: None, port, args };
        n.restart();
        n
    }

    /// Starts (again) on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        let child = Command::new(nats_server_bin())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let end = Instant::now() + POLL_DEADLINE;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("nats-server on port {} exited: {status}", self.port);
            }
            assert!(Instant::now() < end, "nats-server did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn tls_url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.port)
    }

    /// SIGKILL by PID, then reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An esub node in cluster mode: `ESUB_CLUSTER=urls`, named `name`, heartbeats every 200 ms,
/// topics off (they would share a data directory), plus `env`.
pub fn esub_node(urls: &str, name: &str, env: &[(&str, &str)]) -> Server {
    let mut all = vec![
        ("ESUB_CLUSTER", urls),
        ("ESUB_NODE_NAME", name),
        ("ESUB_CLUSTER_HEARTBEAT_MS", "200"),
        ("ESUB_TOPICS", "off"),
        ("ESUB_WORKERS", "2"),
    ];
    all.extend_from_slice(env);
    let s = Server::start(&all);
    wait_joined(&s);
    s
}

/// Polls `/info` until it says `"cluster":"connected"`.
pub fn wait_joined(s: &Server) {
    let end = Instant::now() + POLL_DEADLINE;
    loop {
        let info = s.get("/info").body_str();
        if info.contains("\"cluster\":\"connected\"") {
            return;
        }
        assert!(Instant::now() < end, "node never joined: /info = {info}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
