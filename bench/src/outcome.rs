//! What a run found: the window's figures, the fault counts and the errors, as handed to the
//! report.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::control::Parked;
use crate::cpu::{self, Mark, ServerProbe};
use crate::hist::Histogram;
use crate::ledger::Counts;

/// First error messages kept for the report; the rest are only counted.
const KEEP_ERRORS: usize = 8;

/// Failures that are not a message's outcome: broken connections, unexpected statuses.
#[derive(Debug, Default)]
pub struct Errors {
    pub connections: u64,
    /// Non-200 answers to `GET /sub`, by status.
    pub sub_status: BTreeMap<u16, u64>,
    /// Rep answers other than delivered and miss, by status.
    pub rep_status: BTreeMap<u16, u64>,
    /// esub subs answered 200 without `Content-Type: application/octet-stream`.
    pub content_type: u64,
    pub first: Vec<String>,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.connections
            + self.sub_status.values().sum::<u64>()
            + self.rep_status.values().sum::<u64>()
            + self.content_type
    }

    pub fn note(&mut self, what: String) {
        if self.first.len() < KEEP_ERRORS {
            self.first.push(what);
        }
    }
}

/// The slowest delivery of the window, to find it again in server logs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Slowest {
    pub latency: Duration,
    pub key: usize,
    pub seq: u64,
    /// When it was received, from the start of the window.
    pub at: Duration,
}

/// The measured window's length and the CPU time spent in it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measured {
    pub window: Duration,
    pub server_cpu: Option<Duration>,
    pub gen_cpu: Option<Duration>,
    /// Involuntary context switches in the window: the scheduler took the CPU away.
    pub server_preempted: Option<u64>,
    pub gen_preempted: Option<u64>,
}

impl Measured {
    /// A window of length `window` that began at `start`, ending now.
    pub fn since(window: Duration, start: &Mark, probe: Option<&ServerProbe>) -> Measured {
        let end = Mark::now(probe);
        let delta = |a: Option<u64>, b: Option<u64>| b?.checked_sub(a?);
        let cpu = |a, b| delta(a, b).map(cpu::ticks_to_duration);
        Measured {
            window,
            server_cpu: cpu(start.server, end.server),
            gen_cpu: cpu(start.own, end.own),
            server_preempted: delta(start.server_preempted, end.server_preempted),
            gen_preempted: delta(start.own_preempted, end.own_preempted),
        }
    }
}

/// Parked capacity: the server's memory before and after parking, and the time it took.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    /// Source addresses the subs' connections came from.
    pub sources: usize,
    /// From the first connect until the server reported all subs parked.
    pub park: Duration,
    pub before: Memory,
    pub after: Memory,
}

/// Memory of the server's processes in KiB, summed over them: `VmRSS`, its anonymous and shared
/// memory parts (`RssAnon`, `RssShmem`, from /proc/<pid>/status) and `Pss` (smaps_rollup),
/// which splits shared pages between the processes that map them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub rss_kib: u64,
    pub anon_kib: u64,
    pub shmem_kib: u64,
    pub pss_kib: Option<u64>,
}

/// Everything a report needs from a run.
pub struct Outcome {
    pub prefix: String,
    pub parked: Parked,
    pub window: Duration,
    pub delivered: u64,
    pub hist: Histogram,
    pub slowest: Slowest,
    pub counts: Counts,
    pub lost: u64,
    pub unanswered: u64,
    /// Reps sent (all phases) to another server than their key's sub.
    pub crossed: u64,
    pub errors: Errors,
    pub aborted: Option<String>,
    pub server_pids: Vec<u32>,
    pub server_cpu: Option<Duration>,
    pub gen_cpu: Option<Duration>,
    pub server_preempted: Option<u64>,
    pub gen_preempted: Option<u64>,
    pub capacity: Option<Capacity>,
}

impl Outcome {
    /// A run's outcome with the window, the CPU figures and the server's pids filled in from
    /// `measured` and `probe`, and nothing counted yet: the run sets its counts over this.
    pub fn of_window(
        measured: Measured,
        probe: Option<&ServerProbe>,
        errors: Errors,
        aborted: Option<String>,
    ) -> Outcome {
        Outcome {
            prefix: String::new(),
            parked: Parked::All,
            window: measured.window,
            delivered: 0,
            hist: Histogram::new(),
            slowest: Slowest::default(),
            counts: Counts::default(),
            lost: 0,
            unanswered: 0,
            crossed: 0,
            errors,
            aborted,
            server_pids: probe.map(|p| p.pids().to_vec()).unwrap_or_default(),
            server_cpu: measured.server_cpu,
            gen_cpu: measured.gen_cpu,
            server_preempted: measured.server_preempted,
            gen_preempted: measured.gen_preempted,
            capacity: None,
        }
    }
}
