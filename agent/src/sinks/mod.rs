//! Sinks: where records go after the buffer, and the delivery loop they share.
//!
//! A [`Sink`] only moves a batch to its peer and says whether the peer confirmed it. The
//! shared [`delivery`] loop owns everything else: which records to send (live first, then
//! backfill), retries with backoff, acks to the buffer, gap markers and link state. So
//! every sink gets the buffer's guarantees the same way, and a sink kind is a small module
//! under `sinks/<kind>/`.

pub mod bucket;
pub mod delivery;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{SinkKind, SinkSettings};
use crate::model::{Gap, Record};

pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// A batch: records of one lane, in seq order, shared with blocking encoders.
pub type Batch = Arc<[Record]>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying: peer unreachable, timeout, throttled, 5xx.
    #[error("{0}")]
    Transient(String),
    /// Retrying the same batch will not help (rejected by the peer). Still retried with
    /// backoff until dead-lettering arrives with the sinks work; never dropped.
    #[error("{0}")]
    Permanent(String),
}

/// Moves batches to one peer.
pub trait Sink: Send + Sync + std::fmt::Debug + 'static {
    /// Delivers every record of the batch; `Ok` only when the peer confirmed all of them.
    /// Must be idempotent for the same batch: a retry overwrites, never duplicates.
    fn deliver(&mut self, batch: Batch) -> SinkFuture<'_>;
    /// Delivers a gap marker.
    fn deliver_gap<'a>(&'a mut self, gap: &'a Gap) -> SinkFuture<'a>;
}

#[derive(Debug, thiserror::Error)]
pub enum SinkBuildError {
    #[error("sink {sink}: {message}")]
    Invalid { sink: String, message: String },
}

/// Builds the sink a config describes. Relative paths are resolved against `data_dir`.
pub fn build(
    settings: &SinkSettings,
    gateway: &str,
    data_dir: &Path,
) -> Result<Box<dyn Sink>, SinkBuildError> {
    match &settings.kind {
        SinkKind::Bucket(b) => Ok(Box::new(bucket::BucketSink::new(b, gateway, data_dir))),
    }
}
