//! Helpers of the cluster tests (`tests/cluster.rs`, `tests/cluster_faults.rs`): waits on
//! routing, membership and stopped processes, and test bodies.

use std::thread;
use std::time::{Duration, Instant};

use super::{Json, Server, parse_json};

const DEADLINE: Duration = Duration::from_secs(10);

/// Polls until a rep posted to `via` reaches `key`'s holder: a probe with a token the holder's
/// sub does not have gets the holder's 403 (a 404 means the interest has not crossed yet).
pub fn wait_routed(via: &Server, key: &str) {
    let end = Instant::now() + DEADLINE;
    loop {
        let r = via.post(&format!("/rep/{key}?token=__probe__"), b"probe");
        if r.status == 403 {
            return;
        }
        assert!(Instant::now() < end, "{key} not routed via {}: {r:?}", via.addr);
        thread::sleep(Duration::from_millis(10));
    }
}

/// Polls until every thread of `pid` is stopped (`T` in `/proc/<pid>/task/*/stat`): a
/// SIGSTOP reaches a busy process's threads a moment after `kill` returns.
pub fn wait_stopped(pid: u32) {
    let end = Instant::now() + DEADLINE;
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process exists");
        let stopped = tasks.flatten().all(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            // The state follows the command name's closing parenthesis.
            stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T'))
        });
        if stopped {
            return;
        }
        assert!(Instant::now() < end, "{pid} never stopped");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A binary body of `len` bytes, every value present.
pub fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// The node names in `/members`, in order.
pub fn member_names(s: &Server) -> Vec<String> {
    let r = s.get("/members");
    assert_eq!(r.status, 200, "{r:?}");
    match parse_json(&r.body_str()) {
        Ok(Json::Arr(rows)) => rows
            .into_iter()
            .map(|row| match row.get("node") {
                Some(Json::Str(n)) => n.clone(),
                other => panic!("row without node: {other:?}"),
            })
            .collect(),
        other => panic!("/members: {other:?}"),
    }
}

/// Polls `/members` on `s` until it lists exactly `want`; returns how long that took.
pub fn wait_members(s: &Server, want: &[&str], within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let names = member_names(s);
        if names == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "members {names:?}, want {want:?} within {within:?}");
        thread::sleep(Duration::from_millis(10));
    }
}
