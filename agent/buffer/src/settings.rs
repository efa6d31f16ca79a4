//! What the buffer is told by the config (`[buffer]`).

use std::time::Duration;

/// How much a commit survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: a committed record survives a power cut.
    Power,
    /// `synchronous=NORMAL`: a committed record survives the process being killed.
    Process,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BufferSettings {
    pub durability: Durability,
    /// Cap on stored record bytes (rows and spooled blobs).
    pub max_bytes: u64,
    /// Evict when the filesystem's free space (plus reusable database pages) drops below.
    pub min_free_disk: u64,
    /// Largest group commit, in records.
    pub commit_max_records: u32,
    /// How long the writer may wait to fill a group once it has work. Zero: commit as soon
    /// as the queue is empty (the natural group is what arrived during the last commit).
    pub commit_max_delay: Duration,
    /// Blob payloads larger than this are stored as spool files, not in the database.
    pub blob_spool_threshold: u64,
}

impl Default for BufferSettings {
    fn default() -> Self {
        Self {
            durability: Durability::Power,
            max_bytes: 1024 * 1024 * 1024,
            min_free_disk: 256 * 1024 * 1024,
            commit_max_records: 8192,
            commit_max_delay: Duration::ZERO,
            blob_spool_threshold: 64 * 1024,
        }
    }
}
