//! What the control API sees of the pipeline: narrow traits the pipeline implements over
//! its own handles, answered with plain data. The API holds none of the pipeline's
//! registries, channels or tasks, so it can neither reach into ingest nor hold a lock the
//! pipeline waits for; and the pipeline may change inside without the API noticing.
//!
//! Every call is cheap and does not block (a lock held for a copy at most): handlers call
//! them on the async workers.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use skygate_bsp::power::PowerState;
use skygate_drivers::{BoxFuture, DriverHealth, Timestamp};
use tokio::sync::broadcast;

use skygate_functions::WorkflowStatus;
use skygate_model::Record;
use skygate_util::source::ConfigError;

/// Ingest's counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestCounts {
    /// True while the ingest task runs (it ends when every driver has stopped).
    pub running: bool,
    pub readings: u64,
    pub unrouted: u64,
}

/// The last value of one channel.
#[derive(Debug, Clone, Serialize)]
pub struct LastValue {
    pub ts: Timestamp,
    pub time_quality: &'static str,
    /// As in the NDJSON schema; blobs without their bytes.
    pub value: serde_json::Value,
    pub unit: Option<String>,
    pub quality: &'static str,
    pub quality_reason: Option<String>,
}

/// What one source (driver) has produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceLive {
    pub readings: u64,
    pub last_ts: Option<Timestamp>,
    pub channels: BTreeMap<String, LastValue>,
}

/// Ingest as the API sees it: counters, last values, the live stream, the workflows.
pub trait Ingest: Send + Sync + fmt::Debug {
    fn counts(&self) -> IngestCounts;
    /// What one source has produced; `None` before its first reading.
    fn live(&self, source: &str) -> Option<SourceLive>;
    /// The installed workflows and their counters.
    fn workflows(&self) -> Vec<WorkflowStatus>;
    /// Each routed batch from now on, as records not yet numbered (seq 0).
    fn tail(&self) -> broadcast::Receiver<Arc<[Record]>>;
}

/// One driver as observers see it.
#[derive(Debug, Clone)]
pub struct DriverInfo {
    pub name: String,
    pub kind: &'static str,
    pub stream: String,
    pub priority: u8,
    pub health: DriverHealth,
}

/// The drivers that are configured and started, by name.
pub trait Drivers: Send + Sync + fmt::Debug {
    fn list(&self) -> Vec<DriverInfo>;
}

/// What a reload changed.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReloadReport {
    pub source: String,
    pub drivers_started: Vec<String>,
    pub drivers_stopped: Vec<String>,
    pub drivers_restarted: Vec<String>,
    pub routes_changed: bool,
    pub workflows_changed: bool,
    pub health_changed: bool,
    /// Sections that changed but apply only at the next start.
    pub restart_required: Vec<String>,
}

impl ReloadReport {
    /// One line for the log and the audit row.
    pub fn summary(&self) -> String {
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(",")
            }
        };
        format!(
            "started {}; stopped {}; restarted {}; routes {}; workflows {}; heartbeat {}; restart required: {}",
            list(&self.drivers_started),
            list(&self.drivers_stopped),
            list(&self.drivers_restarted),
            if self.routes_changed {
                "changed"
            } else {
                "same"
            },
            if self.workflows_changed {
                "changed"
            } else {
                "same"
            },
            if self.health_changed {
                "changed"
            } else {
                "same"
            },
            list(&self.restart_required),
        )
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadError {
    #[error("the new configuration is not valid, nothing changed: {0}")]
    Config(ConfigError),
    #[error("the agent runs on settings given inline; there is no file to read again")]
    NoSource,
    #[error("the agent is stopping")]
    Stopping,
}

/// Reads the configuration again and applies what can change live.
pub trait Reload: Send + Sync + fmt::Debug {
    /// `actor` and `origin` go to the audit log. Resolves once applied or refused; `None`
    /// when the agent is stopping and takes no more requests.
    fn reload(
        &self,
        actor: String,
        origin: String,
    ) -> BoxFuture<Option<Result<ReloadReport, ReloadError>>>;
}

/// The power component's counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PowerCounts {
    pub failures: u64,
    /// The last failure's edge-to-marker time, in seconds.
    pub last_seal_seconds: f64,
    /// A failure is in progress (sealed, not yet restored).
    pub failed: bool,
}

/// The power-fail component: its status, and the operator's input (UPS daemons).
pub trait Power: Send + Sync + fmt::Debug {
    /// `GET /v1/power`'s answer: the inputs, a failure in progress, the last one reported.
    fn status(&self) -> serde_json::Value;
    /// The input that says power failed, if any (`gpio`, `operator`).
    fn failed_by(&self) -> Option<&'static str>;
    fn counts(&self) -> PowerCounts;
    /// Sets the operator's input. Resolves, with the status, once the agent has acted on
    /// it (sealed, or resumed); `None` when the agent is stopping.
    fn set_operator(&self, state: PowerState) -> BoxFuture<Option<serde_json::Value>>;
}
