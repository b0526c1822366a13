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

/// A free loopback port for a nats-server (it cannot take port 0): one that binds now, picked
/// at random below the kernel's ephemeral range (32768 and up), where the port-0 listeners and
/// the outgoing connections of the tests running alongside cannot take it meanwhile.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    for _ in 0..1000 {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 20_000 + (RandomState::new().hash_one(n) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
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

    /// `n` servers joined by routes (a full mesh, every route listed). A port taken between
    /// its pick and the server's bind (the server exits) means new ports for all, a few times.
    pub fn cluster(n: usize) -> Vec<Nats> {
        for _ in 0..4 {
            if let Ok(servers) = Nats::try_cluster(n) {
                return servers;
            }
        }
        Nats::try_cluster(n).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_cluster(n: usize) -> Result<Vec<Nats>, String> {
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
                let mut server = Nats { child: None, port: free_port(), args };
                server.try_restart().map(|()| server)
            })
            .collect()
    }

    /// A new server on `port`, or (it was taken meanwhile) on another free one.
    fn start_with(port: u16, args: Vec<String>) -> Nats {
        let mut n = Nats { child: None, port, args };
        for _ in 0..4 {
            if n.try_restart().is_ok() {
                return n;
            }
            n.port = free_port();
        }
        n.restart();
        n
    }

    /// Starts (again) on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        if let Err(e) = self.try_restart() {
            panic!("{e}");
        }
    }

    fn try_restart(&mut self) -> Result<(), String> {
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
                self.child = None;
                return Err(format!("nats-server on port {} exited: {status}", self.port));
            }
            assert!(Instant::now() < end, "nats-server did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
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
