//! The `esub` binary: configuration from the environment, start the workers, wait for
//! SIGTERM/SIGINT, drain, exit 0. Invalid configuration exits 2 with one line.

use std::io::Write;
use std::process::ExitCode;

use esub::config::{Config, help_text};
use esub::server::Server;

/// mimalloc, not glibc's malloc: a topic partition keeps its last few thousand messages, freed
/// oldest first, which overflows glibc's per-thread caches into its bins on every pub (about
/// 4 % of a single pub's CPU here); mimalloc's per-page free lists do not care about the order.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Blocks the shutdown signals in this thread (and so in every thread spawned after), then
/// `wait_for_signal` takes them synchronously: no handler runs at an arbitrary point.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it before use, and
    // pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> libc::c_int {
    let mut sig: libc::c_int = 0;
    // SAFETY: set was initialised by block_signals; sig is a valid out pointer.
    while unsafe { libc::sigwait(set, &mut sig) } != 0 {}
    sig
}

fn main() -> ExitCode {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        print!("{}", help_text());
        return ExitCode::SUCCESS;
    }
    if let Some(arg) = std::env::args().nth(1) {
        eprintln!(
            "ERROR unknown argument {arg:?}; esub is configured by environment variables (see --help)"
        );
        return ExitCode::from(2);
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ERROR {e}");
            return ExitCode::from(2);
        }
    };
    // A write past RLIMIT_FSIZE must fail with EFBIG (answered 507), not kill the process.
    // SAFETY: setting a signal's disposition to SIG_IGN has no handler to be unsafe in.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let engine = match config.store {
        esub::config::StoreMode::Off => None,
        _ => match esub::store::Engine::open(&config) {
            Ok(e) => Some(e),
            Err(e) => {
                eprintln!("ERROR {e}");
                return ExitCode::from(2);
            }
        },
    };
    esub::log::set_level(if config.verbose_debug { 2 } else { u8::from(config.debug) });
    let topics = match config.topics {
        None => None,
        Some(_) => match esub::topics::hub::Hub::open(&config) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("ERROR {e}");
                return ExitCode::from(2);
            }
        },
    };
    let topics_line = match &topics {
        None => "topics=off".to_string(),
        Some((hub, _, _)) => {
            if !hub.auth_file {
                esub::warn!(
                    "topics auth is open: no ESUB_APPS_FILE, any appid may publish and consume"
                );
            }
            format!(
                "topics=on auth={} topic_count={}",
                if hub.auth_file { "file" } else { "open" },
                hub.topic_count()
            )
        }
    };
    let nofile = esub::node::raise_nofile();
    let signals = block_signals();
    let workers = config.workers;
    let store_mode = format!("{:?}", config.store).to_lowercase();
    let server = match Server::start(config, engine, topics) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ERROR cannot listen: {e}");
            return ExitCode::from(2);
        }
    };
    // Tests and scripts read the port from this first stdout line.
    println!("listening on {}", server.addr);
    let _ = std::io::stdout().flush();
    esub::info!(
        "started addr={} workers={workers} store={store_mode} nofile={nofile} {topics_line}",
        server.addr
    );
    let sig = loop {
        let sig = wait_for_signal(&signals);
        if sig != libc::SIGHUP {
            break sig;
        }
        if let Some(hub) = &server.shared.hub {
            hub.reload_auth();
        }
    };
    esub::info!("draining signal={sig}");
    server.shutdown();
    esub::info!("stopped");
    ExitCode::SUCCESS
}
