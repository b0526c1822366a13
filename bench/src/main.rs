//! esub-bench: event-driven load generator for the "round trip, long-poll" scenario against
//! esub (`/sub` + `/rep`) or its peer nchan (`/sub` + `/pub`), and the table that compares them.

mod config;
mod conn;
mod control;
mod cpu;
mod hist;
mod http;
mod json;
mod ledger;
mod outcome;
mod report;
mod run;
mod table;

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use config::Config;
use cpu::ServerProbe;
use run::Run;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
            eprintln!("esub-bench: {} {}: {e}", cfg.target.name(), cfg.addr);
            ExitCode::FAILURE
        }
    }
}

/// One run; `Ok(false)` when it finished but was aborted for errors.
fn bench(cfg: &Config) -> Result<bool, String> {
    raise_fd_limit(cfg.subs + cfg.reps + 64)?;
    let prefix = key_prefix();
    let mut run = Run::new(cfg, &prefix)?;
    let parked = run.park()?;
    // After start-up and parking: nginx's workers exist by now.
    let probe = match cfg.pid {
        Some(pid) => {
            Some(ServerProbe::new(pid).ok_or_else(|| format!("--pid {pid}: no such process"))?)
        }
        None => None,
    };
    let measured = run.traffic(probe.as_ref())?;
    let outcome = run.outcome(parked, measured, probe.as_ref());
    eprint!("{}", report::human(cfg, &outcome));
    println!("{}", report::json_line(cfg, &outcome));
    if outcome.server_cpu.is_none() && cfg.pid.is_some() {
        eprintln!(
            "  warning: server CPU unavailable (a process of the server exited during the run)"
        );
    }
    Ok(outcome.aborted.is_none())
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
