//! Sinks: where records go after the buffer, and the delivery loop they share.
//!
//! A [`Sink`] only moves a batch to its peer and says whether the peer confirmed it. The
//! shared [`delivery`] loop owns everything else: which records to send (live first, then
//! backfill), retries with backoff, acks to the buffer, gap markers and link state. So
//! every sink gets the buffer's guarantees the same way, and a sink kind is a small module
//! under `sinks/<kind>/`.

#![forbid(unsafe_code)]

pub mod bucket;
pub mod delivery;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod mqtt;
mod settings;
pub mod template;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

pub use settings::{SinkCommon, SinkKind, SinkSettings};
use skygate_model::{Gap, Record};

pub type SinkFuture<'a, T = ()> = Pin<Box<dyn Future<Output = Result<T, SinkError>> + Send + 'a>>;

/// A batch: records of one lane, in seq order, shared with blocking encoders.
pub type Batch = Arc<[Record]>;

/// What went wrong underneath a sink error, kept typed (the status snapshot and the log
/// share one error, hence `Arc`).
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// A failed delivery or setup. The message says what was being done (`bucket s3://x`,
/// `broker host:8883`); the cause, when there is one, is the library's own error, shown
/// after the message (the control API's `last_error` is one line) and given by
/// [`std::error::Error::source`] to code that tells causes apart.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying: peer unreachable, timeout, throttled, 5xx.
    #[error("{}", joined(.context, .cause.as_ref()))]
    Transient {
        context: String,
        #[source]
        cause: Option<Cause>,
    },
    /// Retrying the same batch will not help by itself (the peer refuses the whole batch:
    /// bad credentials, a missing bucket); it is still retried with backoff, because an
    /// operator can fix the cause, and the link shows as failing. Records the peer refuses
    /// one by one are [`Delivered::rejected`] instead.
    #[error("{}", joined(.context, .cause.as_ref()))]
    Permanent {
        context: String,
        #[source]
        cause: Option<Cause>,
    },
}

impl SinkError {
    /// A transient error: `context` (what was being done) failed with `cause`.
    pub fn transient(
        context: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Transient {
            context: context.into(),
            cause: Some(Arc::new(cause)),
        }
    }

    /// A permanent error: `context` (what was being done) failed with `cause`.
    pub fn permanent(
        context: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Permanent {
            context: context.into(),
            cause: Some(Arc::new(cause)),
        }
    }

    /// A transient error that is its own cause (a timeout, a peer's refusal code).
    pub fn transient_msg(msg: impl Into<String>) -> Self {
        Self::Transient {
            context: msg.into(),
            cause: None,
        }
    }

    /// A permanent error that is its own cause (a malformed credentials file line).
    pub fn permanent_msg(msg: impl Into<String>) -> Self {
        Self::Permanent {
            context: msg.into(),
            cause: None,
        }
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Permanent { .. })
    }
}

/// `context: cause`, or either alone.
fn joined(context: &str, cause: Option<&Cause>) -> String {
    match cause {
        Some(c) if context.is_empty() => c.to_string(),
        Some(c) => format!("{context}: {c}"),
        None => context.to_string(),
    }
}

/// What the peer confirmed of a batch.
#[derive(Debug, Default)]
pub struct Delivered {
    /// Bytes sent for the batch (payloads and the names that go with them), for the
    /// bandwidth cap.
    pub bytes: u64,
    /// Records the peer refused for good (too large, not authorised); every other record
    /// of the batch was confirmed. The delivery loop sets these aside as dead letters.
    pub rejected: Vec<Rejected>,
}

/// One record a peer refused for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub seq: u64,
    pub reason: String,
}

/// Moves batches to one peer.
pub trait Sink: Send + Sync + std::fmt::Debug + 'static {
    /// Delivers every record of the batch; `Ok` only when the peer confirmed all of them.
    /// Must be idempotent for the same batch: a retry overwrites, never duplicates.
    fn deliver(&mut self, batch: Batch) -> SinkFuture<'_, Delivered>;
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
        SinkKind::Mqtt(m) => Ok(Box::new(mqtt::MqttSink::new(&settings.name, m, gateway))),
        #[cfg(feature = "kafka")]
        SinkKind::Kafka(k) => Ok(Box::new(kafka::KafkaSink::new(&settings.name, k, gateway))),
    }
}
