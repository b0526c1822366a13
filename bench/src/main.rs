//! esub-bench: event-driven load generator for esub's relay (`/sub`, `/psub` + `/rep`) and its
//! peer nchan (`/sub`, `/ws` + `/pub`) in four scenarios, and the table and chart comparing them.

use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use esub_bench::config::{Config, Scenario, Target};
use esub_bench::cpu::ServerProbe;
use esub_bench::floor::Floor;
use esub_bench::outcome::{Capacity, Outcome};
use esub_bench::run::Run;
use esub_bench::{park, report, svg, table};

/// nginx forks its workers after writing its pid file: how long to wait for them to show up
/// before a probe that must see them from the start (parked capacity).
const WORKERS_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("chart") {
        return match svg::from_files(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("esub-bench chart: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.first().map(String::as_str) == Some("table") {
        return match table::from_files(&args[1..]) {
            Ok(t) => {
                print!("{t}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("esub-bench table: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cfg = match Config::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match bench(&cfg) {
        Ok(ok) => {
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("esub-bench: {} {}: {e}", cfg.target.name(), cfg.urls_text());
            ExitCode::FAILURE
        }
    }
}

/// One run; `Ok(false)` when it finished but was aborted for errors.
fn bench(cfg: &Config) -> Result<bool, String> {
    let subs = if matches!(cfg.scenario, Scenario::Floor | Scenario::Park) { 0 } else { cfg.subs };
    raise_fd_limit(subs + cfg.reps + 64)?;
    let outcome = match cfg.scenario {
        Scenario::LongPoll | Scenario::WebSocket => relay(cfg)?,
        Scenario::Capacity => capacity(cfg)?,
        Scenario::Floor => http_floor(cfg)?,
        Scenario::Park => {
            let probe = probe(cfg)?;
            park::run(cfg, &key_prefix(), probe.as_ref())?
        }
    };
    eprint!("{}", report::human(cfg, &outcome));
    println!("{}", report::json_line(cfg, &outcome));
    if outcome.server_cpu.is_none() && !cfg.pids.is_empty() {
        eprintln!(
            "  warning: server CPU unavailable (a process of the server exited during the run)"
        );
    }
    Ok(outcome.aborted.is_none())
}

fn probe(cfg: &Config) -> Result<Option<ServerProbe>, String> {
    if cfg.pids.is_empty() {
        return Ok(None);
    }
    let probe = ServerProbe::of(&cfg.pids);
    Ok(Some(probe.ok_or_else(|| format!("--pid {:?}: a process does not exist", cfg.pids))?))
}

/// Scenarios 1 and 2: round trips through parked or joined subs.
fn relay(cfg: &Config) -> Result<Outcome, String> {
    let mut run = Run::new(cfg, &key_prefix())?;
    let parked = run.park()?;
    // After start-up and parking: nginx's workers exist by now.
    let probe = probe(cfg)?;
    let measured = run.traffic(probe.as_ref())?;
    Ok(run.outcome(parked, measured, probe.as_ref()))
}

/// Scenario 3: the server's memory before and after parking every sub, then one rep to each.
fn capacity(cfg: &Config) -> Result<Outcome, String> {
    let &[pid] = cfg.pids.as_slice() else {
        return Err("--scenario capacity needs one --pid (the server's memory is measured)".into());
    };
    let deadline = Instant::now() + WORKERS_TIMEOUT;
    let probe = loop {
        let p = ServerProbe::new(pid).ok_or_else(|| format!("--pid {pid}: no such process"))?;
        if cfg.target != Target::Nchan || p.pids().len() > 1 || Instant::now() >= deadline {
            break p;
        }
        sleep(Duration::from_millis(20));
    };
    let memory =
        |when: &str| probe.memory().ok_or(format!("server memory {when}: a process exited"));
    let before = memory("before parking")?;
    let started = Instant::now();
    let mut run = Run::new(cfg, &key_prefix())?;
    let parked = run.park()?;
    let park = started.elapsed();
    let after = memory("after parking")?;
    let measured = run.traffic(Some(&probe))?;
    let mut outcome = run.outcome(parked, measured, Some(&probe));
    outcome.capacity = Some(Capacity { sources: cfg.sources, park, before, after });
    Ok(outcome)
}

/// Scenario 4: keep-alive GETs of the cheapest route.
fn http_floor(cfg: &Config) -> Result<Outcome, String> {
    let mut floor = Floor::new(cfg)?;
    floor.connect()?;
    let probe = probe(cfg)?;
    let measured = floor.traffic(probe.as_ref())?;
    Ok(floor.outcome(measured, probe.as_ref()))
}

/// Keys unique to this run (`b<pid hex><time hex>k<n>`), so a run never meets a previous run's
/// subs or channels on a server that stays up between runs. Lowercase hex and digits only.
fn key_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    format!("b{:x}{:x}k", std::process::id(), nanos & 0xff_ffff)
}

/// Each sub and rep is a descriptor: raise the soft limit towards the hard one.
fn raise_fd_limit(need: usize) -> Result<(), String> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    let need = need as libc::rlim_t;
    if lim.rlim_cur >= need {
        return Ok(());
    }
    if lim.rlim_max < need {
        return Err(format!("{need} descriptors needed, hard limit is {}", lim.rlim_max));
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}
