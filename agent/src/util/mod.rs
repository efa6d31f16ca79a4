//! Small shared pieces: durable file writes, backoff, a lock-free latency histogram,
//! secrets that do not print, TLS configurations from PEM files.

pub mod backoff;
pub mod fs;
pub mod histogram;
pub mod secret;
pub mod tls;
