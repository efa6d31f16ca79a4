//! Small shared pieces: durable file writes, backoff, a lock-free latency histogram.

pub mod backoff;
pub mod fs;
pub mod histogram;
