//! One line per event on stderr: `LEVEL message key=value ...`. Debug levels are switched on
//! once at start-up; checking them costs one relaxed load.

use std::sync::atomic::{AtomicU8, Ordering};

static LEVEL: AtomicU8 = AtomicU8::new(0);

/// 0: info and warnings; 1: `ESUB_DEBUG`; 2: `ESUB_VERBOSE_DEBUG`.
pub fn set_level(level: u8) {
    LEVEL.store(level, Ordering::Relaxed);
}

pub fn level() -> u8 {
    LEVEL.load(Ordering::Relaxed)
}

#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { eprintln!("INFO {}", format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { eprintln!("WARN {}", format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { if $crate::log::level() >= 1 { eprintln!("DEBUG {}", format_args!($($arg)*)) } };
}

#[macro_export]
macro_rules! verbose {
    ($($arg:tt)*) => { if $crate::log::level() >= 2 { eprintln!("DEBUG {}", format_args!($($arg)*)) } };
}
