//! The generators' shared parts: connections, CPU and memory probes, latency histograms, HTTP
//! and websocket codecs, result lines and tables. `esub-bench` (the relay against nchan) is
//! `src/main.rs`; `topics-bench` (topics against Redis Streams) is `src/bin/topics-bench.rs`.

pub mod config;
pub mod conn;
pub mod control;
pub mod cpu;
pub mod digest;
pub mod floor;
pub mod hist;
pub mod http;
pub mod json;
pub mod ledger;
pub mod outcome;
pub mod pace;
pub mod park;
pub mod report;
pub mod run;
mod sub;
pub mod svg;
pub mod table;
pub mod topics;
pub mod ws;
