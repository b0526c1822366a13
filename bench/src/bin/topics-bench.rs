//! topics-bench: one run of esub's topics or of Redis Streams under the same workload (single
//! pubs, batch pubs, end to end through a consumer group), or the table comparing many runs.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use esub_bench::cpu::ServerProbe;
use esub_bench::topics::config::{Config, Target};
use esub_bench::topics::run::Run;
use esub_bench::topics::{report, setup};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("table") {
        return match report::from_files(&args[1..]) {
            Ok(t) => {
                print!("{t}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("topics-bench table: {e}");
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
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("topics-bench: {} {}: {e}", cfg.target.name(), cfg.addr);
            ExitCode::FAILURE
        }
    }
}

/// One run; `Ok(false)` when it finished but was aborted for errors.
fn bench(cfg: &Config) -> Result<bool, String> {
    let topic = topic_name();
    let server = match cfg.target {
        Target::Esub => setup::esub_version(cfg.addr, cfg.ready_timeout),
        Target::Redis => setup::redis_version(cfg.addr, cfg.ready_timeout),
    };
    let probe = match cfg.pid {
        Some(pid) => {
            Some(ServerProbe::new(pid).ok_or_else(|| format!("--pid {pid}: no such process"))?)
        }
        None => None,
    };
    let mut run = Run::new(cfg, topic.clone())?;
    run.prepare()?;
    let measured = run.traffic(probe.as_ref())?;
    let cleanup = run.finish();
    let figures = run.figures(measured, probe.as_ref());
    eprint!("{}", report::human(cfg, &figures));
    println!("{}", report::json_line(cfg, &topic, &server, &figures));
    if figures.measured.server_cpu.is_none() && cfg.pid.is_some() {
        eprintln!("  warning: server CPU unavailable (the server's process exited during the run)");
    }
    if let Err(e) = cleanup {
        eprintln!("  warning: cleaning up: {e}");
    }
    Ok(figures.aborted.is_none())
}

/// A topic (and Redis stream prefix) new for every run, so no run meets an earlier one's
/// messages on a server that stays up: `b<pid hex><time hex>`, within esub's name rule.
fn topic_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    format!("b{:x}{:x}", std::process::id(), nanos & 0xff_ffff)
}
