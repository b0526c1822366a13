//! CPU time of processes from /proc: utime + stime of a process and its direct children (the
//! nginx workers under their master; esub has none), and of the generator itself; and their
//! involuntary context switches, which tell a preempted process from a slow one. Also the
//! server's resident memory, for the parked-capacity scenario.

use std::fs;
use std::time::Duration;

use crate::outcome::Memory;

/// Clock ticks per second for the utime/stime fields of /proc/<pid>/stat.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the running system; no memory is passed.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// utime + stime in ticks, all threads included, from /proc/<pid>/stat; `None` if it is gone.
fn stat_ticks(pid: &str) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields = after_comm(&stat)?;
    // After "pid (comm)": state is field 3, utime field 14, stime field 15.
    let mut it = fields.split_ascii_whitespace().skip(11);
    let utime: u64 = it.next()?.parse().ok()?;
    let stime: u64 = it.next()?.parse().ok()?;
    Some(utime + stime)
}

fn stat_ppid(pid: &str) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    after_comm(&stat)?.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// The fields after the command name, which may itself hold spaces and parentheses.
fn after_comm(stat: &str) -> Option<&str> {
    Some(&stat[stat.rfind(')')? + 1..])
}

/// Direct children of `pid`, found by scanning /proc for their parent id (works without
/// CONFIG_PROC_CHILDREN).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| stat_ppid(&p.to_string()) == Some(pid))
        .collect();
    out.sort_unstable();
    out
}

/// The process tree measured as "the server": a pid and the children it had when the probe was
/// made. A child that exits mid-run takes its ticks with it, so the probe is made after start-up.
pub struct ServerProbe {
    pids: Vec<u32>,
}

impl ServerProbe {
    pub fn new(pid: u32) -> Option<ServerProbe> {
        stat_ticks(&pid.to_string())?;
        let mut pids = vec![pid];
        pids.extend(children(pid));
        Some(ServerProbe { pids })
    }

    /// Several servers measured as one (a cluster's nodes): each pid with its children.
    pub fn of(pids: &[u32]) -> Option<ServerProbe> {
        let mut all = Vec::new();
        for &p in pids {
            all.extend(ServerProbe::new(p)?.pids);
        }
        all.sort_unstable();
        all.dedup();
        Some(ServerProbe { pids: all })
    }

    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// Summed ticks of the tree; `None` if any of its processes has gone.
    pub fn ticks(&self) -> Option<u64> {
        self.pids.iter().map(|p| stat_ticks(&p.to_string())).sum()
    }

    /// Summed resident memory of the tree; `None` if any of its processes has gone.
    pub fn memory(&self) -> Option<Memory> {
        let mut m = Memory { pss_kib: Some(0), ..Memory::default() };
        for p in &self.pids {
            let status = fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            m.rss_kib += kib_field(&status, "VmRSS:")?;
            m.anon_kib += kib_field(&status, "RssAnon:").unwrap_or(0);
            m.shmem_kib += kib_field(&status, "RssShmem:").unwrap_or(0);
            // smaps_rollup needs a 4.14 kernel; without it Pss is unknown, not zero.
            let pss = fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
                .ok()
                .and_then(|r| kib_field(&r, "Pss:"));
            m.pss_kib = m.pss_kib.zip(pss).map(|(a, b)| a + b);
        }
        Some(m)
    }

    /// Summed involuntary context switches of the tree's threads.
    pub fn preempted(&self) -> Option<u64> {
        self.pids.iter().map(|p| preempted(&p.to_string())).sum()
    }
}

/// The generator's own ticks.
pub fn self_ticks() -> Option<u64> {
    stat_ticks("self")
}

/// Involuntary context switches of all threads of `pid` ("self" works): how often the
/// scheduler took the CPU away while it still had work.
pub fn preempted(pid: &str) -> Option<u64> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0;
    for t in tasks {
        let status = fs::read_to_string(t.ok()?.path().join("status")).ok()?;
        sum += status
            .lines()
            .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))?
            .trim()
            .parse::<u64>()
            .ok()?;
    }
    Some(sum)
}

/// The counters a window subtracts: server and generator CPU ticks and involuntary switches.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    pub server: Option<u64>,
    pub own: Option<u64>,
    pub server_preempted: Option<u64>,
    pub own_preempted: Option<u64>,
}

impl Mark {
    pub fn now(probe: Option<&ServerProbe>) -> Mark {
        Mark {
            server: probe.and_then(ServerProbe::ticks),
            own: self_ticks(),
            server_preempted: probe.and_then(ServerProbe::preempted),
            own_preempted: preempted("self"),
        }
    }
}

/// The number of a `Name:   123 kB` line of /proc/<pid>/status or smaps_rollup.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name))?.split_whitespace().next()?.parse().ok()
}

pub fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_secs_f64(ticks as f64 / ticks_per_second() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_with_spaces_and_parens() {
        let stat = "42 (a) b (c)) S 7 42 42 0 -1 4194560 100 0 0 0 12 34 0 0 20 0 1 0 99";
        let fields = after_comm(stat).unwrap();
        assert_eq!(fields.split_ascii_whitespace().nth(1), Some("7"));
        let mut it = fields.split_ascii_whitespace().skip(11);
        assert_eq!((it.next(), it.next()), (Some("12"), Some("34")));
    }

    #[test]
    fn own_process_is_readable() {
        assert!(self_ticks().is_some());
        let probe = ServerProbe::new(std::process::id()).unwrap();
        assert_eq!(probe.pids()[0], std::process::id());
        assert!(probe.ticks().is_some());
        assert!(probe.preempted().is_some());
        assert!(preempted("self").is_some());
        assert!(ticks_per_second() > 0);
        let m = probe.memory().unwrap();
        assert!(m.rss_kib > 0 && m.rss_kib >= m.anon_kib, "{m:?}");
        assert!(Mark::now(Some(&probe)).server.is_some());
        let both = ServerProbe::of(&[std::process::id(), std::process::id()]).unwrap();
        assert_eq!(both.pids(), probe.pids());
        assert!(ServerProbe::of(&[std::process::id(), u32::MAX]).is_none());
    }

    #[test]
    fn kib_fields() {
        let status = "Name:\tx\nVmRSS:\t   12345 kB\nRssAnon:\t 100 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(12345));
        assert_eq!(kib_field(status, "RssAnon:"), Some(100));
        assert_eq!(kib_field(status, "RssShmem:"), None);
        assert_eq!(kib_field("Rss:  9 kB\nPss:   7 kB\n", "Pss:"), Some(7));
    }
}
