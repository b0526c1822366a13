//! Micro-benchmark of esub's storage engine, in-process (no HTTP): how many appends per second
//! the store thread commits (`ESUB_FSYNC=interval` and `always`, with W appends outstanding as
//! W concurrent reps would keep), how fast stored records replay (take + tombstone), and how long
//! a reopen takes. Usage: store-bench [DIR] (default: a temp dir, removed at the end).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use esub::config::Config;
use esub::conn::buffer::Body;
use esub::server::Ctx;
use esub::server::mailbox::{ConnId, Msg, ReplyTo};
use esub::store::{Engine, Req, Taken};

/// Appends in flight at once: like that many rep connections each waiting for its answer.
const WINDOW: usize = 256;

struct Bench {
    ctx: Ctx,
    poll: mio::Poll,
    tx: mpsc::Sender<Req>,
    thread: Option<std::thread::JoinHandle<()>>,
    inbox: Vec<Msg>,
}

fn config(dir: &std::path::Path, fsync: &str) -> Config {
    let dir = dir.to_string_lossy().into_owned();
    let fsync = fsync.to_string();
    Config::from_lookup(move |k| match k {
        "ESUB_STORE" => Some("undelivered".into()),
        "ESUB_DATA_DIR" => Some(dir.clone()),
        "ESUB_FSYNC" => Some(fsync.clone()),
        "ESUB_RETENTION_BYTES" => Some("100000000000".into()),
        _ => None,
    })
    .expect("bench configuration")
}

impl Bench {
    fn open(dir: &std::path::Path, fsync: &str) -> (Bench, Duration) {
        let config = config(dir, fsync);
        let t0 = Instant::now();
        let engine = Engine::open(&config).expect("open the store");
        let opened = t0.elapsed();
        let (ctx, poll) = Ctx::standalone(config).expect("a standalone context");
        let (tx, rx) = mpsc::channel();
        let shared = ctx.shared.clone();
        let thread = std::thread::spawn(move || engine.run(shared, rx));
        (Bench { ctx, poll, tx, thread: Some(thread), inbox: Vec::new() }, opened)
    }

    /// Waits for the store's answers and returns them.
    fn answers(&mut self) -> Vec<Msg> {
        let mut events = mio::Events::with_capacity(8);
        loop {
            self.ctx.shared.mailboxes[0].drain(&mut self.inbox);
            if !self.inbox.is_empty() {
                return std::mem::take(&mut self.inbox);
            }
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(100)));
        }
    }

    fn close(mut self) {
        let _ = self.tx.send(Req::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn reply(seq: u64) -> ReplyTo {
    ReplyTo { conn: ConnId { worker: 0, token: 0, generation: 1 }, seq }
}

/// Appends `n` bodies over `keys` keys with `WINDOW` outstanding; returns appends per second.
fn appends(b: &mut Bench, n: usize, keys: usize, body: &Body) -> f64 {
    let keys: Vec<std::sync::Arc<str>> = (0..keys).map(|k| format!("key{k}").into()).collect();
    let t0 = Instant::now();
    let (mut sent, mut done) = (0usize, 0usize);
    while done < n {
        while sent < n && sent - done < WINDOW {
            let key = keys[sent % keys.len()].clone();
            let req =
                Req::Append { key, token: None, body: body.clone(), reply: reply(sent as u64) };
            b.tx.send(req).expect("store thread alive");
            sent += 1;
        }
        for m in b.answers() {
            match m {
                Msg::Stored { result: Ok(()), .. } => done += 1,
                Msg::Stored { result: Err(e), .. } => panic!("append failed: {e:?}"),
                _ => {}
            }
        }
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

/// Replays every record of `keys` keys, `WINDOW` takes outstanding; returns records per second.
fn replays(b: &mut Bench, keys: usize) -> (f64, usize) {
    let t0 = Instant::now();
    let mut total = 0;
    let mut live: Vec<usize> = (0..keys).collect();
    while !live.is_empty() {
        for &k in live.iter().take(WINDOW) {
            let req = Req::Take { key: format!("key{k}"), token: None, reply: reply(k as u64) };
            b.tx.send(req).expect("store thread alive");
        }
        let want = live.len().min(WINDOW);
        let mut got = 0;
        let mut empty = Vec::new();
        while got < want {
            for m in b.answers() {
                let Msg::Taken { reply, taken } = m else { continue };
                got += 1;
                match taken {
                    Taken::Got { key, id, .. } => {
                        total += 1;
                        b.tx.send(Req::Done { key, id, delivered: true })
                            .expect("store thread alive");
                    }
                    _ => empty.push(reply.seq as usize),
                }
            }
        }
        live.retain(|k| !empty.contains(k));
    }
    (total as f64 / t0.elapsed().as_secs_f64(), total)
}

fn main() {
    let dir = std::env::args().nth(1).map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::env::temp_dir().join(format!("esub-store-bench-{}", std::process::id()))
    });
    let body: Body = std::sync::Arc::new(vec![b'x'; 100]);
    println!(
        "store-bench: 100-byte bodies, {WINDOW} appends outstanding, data dir {}",
        dir.display()
    );
    for fsync in ["interval", "always"] {
        let _ = std::fs::remove_dir_all(&dir);
        let (mut b, _) = Bench::open(&dir, fsync);
        let n = if fsync == "always" { 200_000 } else { 1_000_000 };
        let rate = appends(&mut b, n, 1000, &body);
        println!("appends, ESUB_FSYNC={fsync}: {rate:.0}/s ({n} appends over 1000 keys)");
        if fsync == "interval" {
            let (rate, total) = replays(&mut b, 1000);
            println!("replays (take + tombstone): {rate:.0}/s ({total} records)");
        }
        b.close();
    }
    // Reopen over about 1 GiB: 16 KiB bodies.
    let _ = std::fs::remove_dir_all(&dir);
    let (mut b, _) = Bench::open(&dir, "interval");
    let big: Body = std::sync::Arc::new(vec![b'y'; 16 * 1024]);
    let rate = appends(&mut b, 65_536, 5000, &big);
    println!("appends of 16 KiB bodies: {rate:.0}/s ({:.0} MB/s)", rate * 16384.0 / 1e6);
    b.close();
    let bytes: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    let (b, opened) = Bench::open(&dir, "interval");
    println!(
        "reopen over {:.2} GiB: {} ms (warm page cache)",
        bytes as f64 / (1u64 << 30) as f64,
        opened.as_millis()
    );
    b.close();
    let _ = std::fs::remove_dir_all(&dir);
}
