//! Small shared pieces: durable file writes, backoff, a lock-free latency histogram,
//! glob patterns, names, errors with source positions, a bandwidth throttle, TLS
//! configurations from PEM files.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod fs;
pub mod glob;
pub mod histogram;
pub mod names;
pub mod source;
pub mod throttle;

/// TLS configurations live with the drivers (feeds and brokers need them too).
pub use skygate_drivers::tls;

/// Runs `f`, which may block (compiling or calling a WASM module), from async code: on a
/// multi-threaded runtime through `block_in_place`, so the worker's other tasks move
/// elsewhere meanwhile; elsewhere (single-threaded tests and benches) directly.
pub fn blocking_here<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Resident memory (bytes) and CPU time (seconds) of this process, from /proc.
pub fn process_usage() -> (u64, f64) {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are 14 and 15.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .unwrap_or(0.0)
        / ticks;
    (rss, cpu)
}
