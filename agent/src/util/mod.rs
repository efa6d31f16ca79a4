//! Small shared pieces: durable file writes, backoff, a lock-free latency histogram,
//! secrets that do not print, a bandwidth throttle, TLS configurations from PEM files.

pub mod backoff;
pub mod fs;
pub mod histogram;
pub mod secret;
pub mod throttle;

/// TLS configurations live with the drivers (feeds and brokers need them too).
pub use skygate_drivers::tls;
