//! Durable state files: see [`skygate_drivers::fs`] (shared with the drivers' ledgers).

pub use skygate_drivers::fs::{fsync_dir, write_atomic};
