//! The running drivers, started and stopped by name: all at start, some on a reload, all
//! at stop. Owned by the pipeline's manager task (one owner, so a reload and a stop never
//! interleave); observers read the [`DriverRegistry`].
//!
//! Invariants: a driver appears in the registry from its start until it is stopped for
//! good (a failed driver stays, state `failed`, until a reload or restart); stopping waits
//! for the task, bounded by [`DRIVER_STOP`], so every reading it sent is in the queue
//! before the caller goes on.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use skygate_drivers::{
    Clock, Driver, DriverContext, DriverHealth, DriverState, Envelope, ReadingSender,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use skygate_control::view::{self, DriverInfo};

/// How long a driver gets to return after it was told to stop.
pub const DRIVER_STOP: Duration = Duration::from_secs(5);

/// The drivers that are configured and started, by name.
#[derive(Debug, Clone, Default)]
pub struct DriverRegistry(Arc<RwLock<BTreeMap<String, DriverInfo>>>);

impl DriverRegistry {
    pub fn list(&self) -> Vec<DriverInfo> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn insert(&self, info: DriverInfo) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(info.name.clone(), info);
    }

    fn remove(&self, name: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

#[derive(Debug)]
struct RunningDriver {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
pub(crate) struct DriverSet {
    running: HashMap<String, RunningDriver>,
    tx: mpsc::Sender<Envelope>,
    clock: Arc<dyn Clock>,
    registry: DriverRegistry,
}

impl DriverSet {
    pub fn new(
        tx: mpsc::Sender<Envelope>,
        clock: Arc<dyn Clock>,
        registry: DriverRegistry,
    ) -> Self {
        Self {
            running: HashMap::new(),
            tx,
            clock,
            registry,
        }
    }

    /// Starts a driver under `name` (which must not be running).
    pub fn start(
        &mut self,
        name: &str,
        kind: &'static str,
        stream: &str,
        priority: u8,
        driver: Box<dyn Driver>,
    ) {
        let health = DriverHealth::default();
        let stop = CancellationToken::new();
        let ctx = DriverContext {
            out: ReadingSender::new(self.tx.clone()),
            cancel: stop.clone(),
            clock: self.clock.clone(),
            health: health.clone(),
        };
        self.registry.insert(DriverInfo {
            name: name.to_string(),
            kind,
            stream: stream.to_string(),
            priority,
            health: health.clone(),
        });
        tracing::info!(driver = %name, kind, %stream, "driver started");
        let n = name.to_string();
        let task = tokio::spawn(async move {
            match driver.run(ctx).await {
                Ok(()) => {
                    health.set_state(DriverState::Stopped);
                    tracing::debug!(driver = %n, "driver stopped");
                }
                Err(e) => {
                    health.error(e.to_string());
                    health.set_state(DriverState::Failed);
                    tracing::error!(driver = %n, error = %e, "driver failed");
                }
            }
        });
        if let Some(old) = self
            .running
            .insert(name.to_string(), RunningDriver { stop, task })
        {
            // A caller bug, not an operator's: never leave the old one running unseen.
            tracing::error!(driver = %name, "driver started twice; stopping the older one");
            old.stop.cancel();
        }
    }

    /// Stops the named drivers and waits for them (together, bounded by [`DRIVER_STOP`]).
    pub async fn stop(&mut self, names: &[String]) {
        let mut tasks = Vec::new();
        for name in names {
            if let Some(d) = self.running.remove(name) {
                d.stop.cancel();
                tasks.push((name.clone(), d.task));
            }
        }
        let deadline = tokio::time::Instant::now() + DRIVER_STOP;
        for (name, task) in tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                tracing::warn!(driver = %name, "driver did not stop within {DRIVER_STOP:?}; aborted");
                abort.abort();
            }
            self.registry.remove(&name);
        }
    }

    pub async fn stop_all(&mut self) {
        let names: Vec<String> = self.running.keys().cloned().collect();
        self.stop(&names).await;
    }

    /// Waits (up to `limit`) until ingest has taken every queued reading.
    pub async fn wait_queue_empty(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.tx.capacity() < self.tx.max_capacity() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

impl view::Drivers for DriverRegistry {
    fn list(&self) -> Vec<DriverInfo> {
        DriverRegistry::list(self)
    }
}
