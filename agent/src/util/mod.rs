//! Small shared pieces: durable file writes, backoff, a lock-free latency histogram,
//! secrets that do not print, a bandwidth throttle, TLS configurations from PEM files.

pub mod backoff;
pub mod fs;
pub mod histogram;
pub mod secret;
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
