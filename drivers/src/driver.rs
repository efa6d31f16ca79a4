//! The contract between a driver and the agent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::health::DriverHealth;
use crate::reading::Reading;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Why a driver stopped.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("driver {driver}: invalid configuration: {message}")]
    Config { driver: String, message: String },
    #[error("driver {driver}: {message}")]
    Fatal { driver: String, message: String },
}

/// The agent side of the channel closed: the agent is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("the agent stopped accepting readings")]
pub struct SendError;

/// What a committed reading became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// In the buffer, per the buffer's durability setting.
    Stored,
    /// Not stored: no sink takes the driver's stream (the config says so).
    NotRouted,
}

/// One reading on its way to the agent, and who (if anyone) waits for its commit.
#[derive(Debug)]
pub struct Envelope {
    pub reading: Reading,
    pub committed: Option<oneshot::Sender<Committed>>,
}

/// Where a driver puts its readings. Bounded: `send` waits for room, which is how a busy
/// agent slows its drivers down instead of queueing without limit.
///
/// Readings from one sender are committed in the order sent, so a driver that needs to
/// know when its data is safe (to acknowledge an MQTT message, to delete a file) asks
/// for the last reading of the item only.
#[derive(Debug, Clone)]
pub struct ReadingSender {
    tx: mpsc::Sender<Envelope>,
}

impl ReadingSender {
    pub fn new(tx: mpsc::Sender<Envelope>) -> Self {
        Self { tx }
    }

    pub async fn send(&self, reading: Reading) -> Result<(), SendError> {
        self.tx
            .send(Envelope {
                reading,
                committed: None,
            })
            .await
            .map_err(|_| SendError)
    }

    /// Sends `reading`; the receiver resolves once it and every reading sent before it
    /// are committed. A receiver that errors means the agent stopped before the commit:
    /// the reading may or may not be stored, so the instrument should send it again.
    pub async fn send_committed(
        &self,
        reading: Reading,
    ) -> Result<oneshot::Receiver<Committed>, SendError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Envelope {
                reading,
                committed: Some(tx),
            })
            .await
            .map_err(|_| SendError)?;
        Ok(rx)
    }
}

/// What a running driver gets from the agent.
#[derive(Debug, Clone)]
pub struct DriverContext {
    pub out: ReadingSender,
    /// Cancelled when the agent stops its sources; a driver returns promptly after.
    pub cancel: CancellationToken,
    pub clock: Arc<dyn Clock>,
    /// Where the driver reports its instrument's state, errors and wire counters.
    pub health: DriverHealth,
}

/// A configured instrument driver. `run` owns the connection and its loop until cancelled.
pub trait Driver: Send + std::fmt::Debug + 'static {
    /// The driver instance's name (its key in the config); readings carry it as `source`.
    fn name(&self) -> &str;
    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<Result<(), DriverError>>;
}

/// `base * 2^(failures - 1)`, at most `max`: how long a driver waits before trying an
/// instrument, port or feed again after `failures` failures in a row.
pub fn doubling_backoff(base: Duration, failures: u32, max: Duration) -> Duration {
    base.saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(max)
}
