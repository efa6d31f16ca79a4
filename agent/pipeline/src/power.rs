//! Power failing: when the power-fail input asserts — the board's GPIO line
//! (`[power_fail]` in the board file) or a UPS daemon through `skygate power fail`
//! (`POST /v1/power/fail`) — the agent stops intake, commits, checkpoints and flushes
//! within the hold-up time, and leaves a durable marker. When power returns, without a
//! restart or at the next start after the gateway went down, it reports the event: one
//! record on the health stream, the audit trail, the log.
//!
//! # Invariants
//! 1. On failure, in order: hold ingest (its last batch handed to the buffer), seal the
//!    buffer (commit, `wal_checkpoint(TRUNCATE)`, `syncfs`), write the marker
//!    (`<data-dir>/power-fail.json`: temp, fsync, rename, fsync dir). When the marker
//!    exists, every reading accepted before the edge is on the disk. Readings arriving
//!    while held wait in the drivers' bounded channel (MQTT clients get no PUBACK and send
//!    again after the cut); nothing accepted is dropped.
//! 2. The time from the edge to the marker is measured every time (`sealed_ms`, in the
//!    marker, the log, the report and `skygate_power_fail_seal_seconds`) and compared
//!    with the board's hold-up `budget`; over budget is an error in the log.
//! 3. The marker is removed only after the report record committed: a crash between the
//!    two reports the event twice, never not at all.
//! 4. Power is failed while any input says so (GPIO or operator); intake resumes when
//!    all say it is back. A stop of the agent releases the hold first, so the orderly
//!    shutdown drains the channel as usual.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use serde::{Deserialize, Serialize};
pub use skygate_bsp::power::PowerState;
use skygate_drivers::{BoxFuture, Clock, Quality, Reading, TimeQuality, Timestamp, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::ingest::IngestCmd;
use skygate_audit::{Audit, AuditEvent};
use skygate_buffer::{Buffer, NewRecord};
use skygate_control::view::{self, PowerCounts};
use skygate_model::Record;

/// The marker's file name in the data directory.
pub const MARKER: &str = "power-fail.json";
/// The hold-up time assumed when the board file names none.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(2);
/// The record's channel on the health stream.
pub const CHANNEL: &str = "power.event";

/// What each input says; `None` until it has spoken (an input the board lacks never does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PowerInputs {
    pub gpio: Option<PowerState>,
    pub operator: Option<PowerState>,
}

impl PowerInputs {
    /// The input that says power failed, if any.
    pub fn failed_by(&self) -> Option<&'static str> {
        if self.gpio == Some(PowerState::Failed) {
            Some("gpio")
        } else if self.operator == Some(PowerState::Failed) {
            Some("operator")
        } else {
            None
        }
    }
}

/// The durable record of a power failure, written once the buffer is sealed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    /// Wall-clock time of the edge (ns since the epoch) and how good the clock was.
    pub failed_at: i64,
    pub time_quality: u8,
    /// `gpio` or `operator`.
    pub input: String,
    pub intake_stopped_ms: f64,
    pub sealed_ms: f64,
    pub budget_ms: f64,
    /// Everything up to this seq was on the disk when the marker was written.
    pub last_seq: u64,
}

/// What the control API and the LEDs see.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PowerStatus {
    pub inputs: PowerInputs,
    /// Failed and sealed: the marker of the failure in progress.
    pub failed: Option<Marker>,
    /// The last failure reported (this run).
    pub last_event: Option<serde_json::Value>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct PowerMetrics {
    pub failures: AtomicU64,
    /// The last failure's edge-to-marker time, in microseconds.
    pub last_seal_us: AtomicU64,
}

/// Handles of the power component: its inputs, its status.
#[derive(Debug, Clone)]
pub struct PowerHandle {
    pub inputs: watch::Sender<PowerInputs>,
    pub status: watch::Receiver<PowerStatus>,
    pub metrics: Arc<PowerMetrics>,
}

impl view::Power for PowerHandle {
    fn status(&self) -> serde_json::Value {
        serde_json::to_value(&*self.status.borrow()).unwrap_or_default()
    }

    fn failed_by(&self) -> Option<&'static str> {
        self.status.borrow().inputs.failed_by()
    }

    fn counts(&self) -> PowerCounts {
        PowerCounts {
            failures: self.metrics.failures.load(Ordering::Relaxed),
            last_seal_seconds: self.metrics.last_seal_us.load(Ordering::Relaxed) as f64 / 1e6,
            failed: self.status.borrow().failed.is_some(),
        }
    }

    fn set_operator(&self, want: PowerState) -> BoxFuture<Option<serde_json::Value>> {
        let mut status = self.status.clone();
        self.inputs.send_modify(|i| i.operator = Some(want));
        Box::pin(async move {
            let st = status
                .wait_for(|st| {
                    st.inputs.operator == Some(want)
                        && st.failed.is_some() == st.inputs.failed_by().is_some()
                })
                .await
                .ok()?;
            serde_json::to_value(&*st).ok()
        })
    }
}

pub(crate) struct PowerTask {
    pub data_dir: PathBuf,
    pub budget: Duration,
    pub buffer: Buffer,
    pub ingest: mpsc::Sender<IngestCmd>,
    pub audit: Audit,
    pub clock: Arc<dyn Clock>,
    /// Where the report goes: the health stream, its priority and sinks.
    pub stream: Arc<str>,
    pub priority: u8,
    pub sinks: u64,
}

/// Starts the power component: first reports a failure a marker left from before this
/// start (the gateway went down on its hold-up supply), then watches the inputs.
pub(crate) fn spawn(task: PowerTask, stop: CancellationToken) -> PowerHandle {
    let (inputs, rx) = watch::channel(PowerInputs::default());
    let (status_tx, status) = watch::channel(PowerStatus::default());
    let metrics = Arc::new(PowerMetrics::default());
    let m = metrics.clone();
    tokio::spawn(async move { task.run(rx, status_tx, m, stop).await });
    PowerHandle {
        inputs,
        status,
        metrics,
    }
}

impl PowerTask {
    async fn run(
        self,
        mut rx: watch::Receiver<PowerInputs>,
        status: watch::Sender<PowerStatus>,
        metrics: Arc<PowerMetrics>,
        stop: CancellationToken,
    ) {
        if let Some(m) = self.read_marker().await {
            tracing::warn!(
                failed_at = m.failed_at,
                sealed_ms = m.sealed_ms,
                last_seq = m.last_seq,
                "started after a power failure"
            );
            self.report(&m, None, &status).await;
        }
        let mut current: Option<Marker> = None;
        loop {
            let inputs = *rx.borrow_and_update();
            status.send_modify(|s| s.inputs = inputs);
            match (inputs.failed_by(), &current) {
                (Some(input), None) => {
                    let m = self.fail(input, &metrics).await;
                    status.send_modify(|s| s.failed = Some(m.clone()));
                    current = Some(m);
                }
                (None, Some(m)) => {
                    self.hold(false).await;
                    let restored = Timestamp::now();
                    tracing::info!(
                        outage_s = (restored.0 - m.failed_at) as f64 / 1e9,
                        "input power is back: intake resumed"
                    );
                    self.report(m, Some(restored), &status).await;
                    status.send_modify(|s| s.failed = None);
                    current = None;
                }
                _ => {}
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { break },
                _ = stop.cancelled() => break,
            }
        }
        if current.is_some() {
            // Shutting down while on hold-up power: let the orderly stop drain the channel.
            self.hold(false).await;
        }
    }

    async fn hold(&self, on: bool) {
        let (tx, rx) = oneshot::channel();
        if self.ingest.send(IngestCmd::Hold(on, tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops intake, seals the buffer and writes the marker; measures each step.
    async fn fail(&self, input: &str, metrics: &PowerMetrics) -> Marker {
        let t0 = Instant::now();
        let (failed_at, tq) = self.clock.now();
        let failed_at = failed_at.0;
        self.hold(true).await;
        let intake = t0.elapsed();
        let last_seq = match self.buffer.seal().await {
            Ok(r) => r.last_seq,
            Err(e) => {
                // The writer retries its commits; what it could not write stays queued.
                tracing::error!(error = %e, "power failing: the buffer could not be sealed");
                0
            }
        };
        // `sealed_ms` in the file is the time up to the marker's own write; the log, the
        // metrics and the returned marker have the full figure.
        let mut marker = Marker {
            failed_at,
            time_quality: tq.to_code(),
            input: input.to_string(),
            intake_stopped_ms: ms(intake),
            sealed_ms: ms(t0.elapsed()),
            budget_ms: ms(self.budget),
            last_seq,
        };
        let path = self.data_dir.join(MARKER);
        let body = serde_json::to_vec_pretty(&marker).unwrap_or_default();
        let written = skygate_util::blocking_here(|| skygate_util::fs::write_atomic(&path, &body));
        let sealed = t0.elapsed();
        marker.sealed_ms = ms(sealed);
        if let Err(e) = written {
            tracing::error!(path = %path.display(), error = %e, "power failing: the marker could not be written");
        }
        metrics.failures.fetch_add(1, Ordering::Relaxed);
        metrics
            .last_seal_us
            .store(sealed.as_micros() as u64, Ordering::Relaxed);
        let over = sealed > self.budget;
        tracing::warn!(
            input,
            intake_stopped_ms = ms(intake),
            sealed_ms = ms(sealed),
            budget_ms = ms(self.budget),
            last_seq,
            "input power lost: intake stopped, buffer committed, checkpointed and flushed"
        );
        if over {
            tracing::error!(
                sealed_ms = ms(sealed),
                budget_ms = ms(self.budget),
                "power failing: sealing took longer than the hold-up budget"
            );
        }
        self.audit
            .record(AuditEvent::agent(
                "power.fail",
                input,
                if over { "sealed over budget" } else { "sealed" },
                format!(
                    "intake stopped in {:.1} ms, sealed in {:.1} ms (budget {:.0} ms) at seq {last_seq}",
                    ms(intake),
                    ms(sealed),
                    ms(self.budget)
                ),
            ))
            .await;
        marker
    }

    async fn read_marker(&self) -> Option<Marker> {
        let path = self.data_dir.join(MARKER);
        let text = match tokio::fs::read(&path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "power-fail marker unreadable");
                return None;
            }
        };
        match serde_json::from_slice(&text) {
            Ok(m) => Some(m),
            Err(e) => {
                // A torn marker cannot be (write_atomic renames), but say what was there.
                tracing::error!(path = %path.display(), error = %e, "power-fail marker is not valid; removed");
                let _ = tokio::fs::remove_file(&path).await;
                None
            }
        }
    }

    /// The report: a record on the health stream (committed before the marker goes), an
    /// audit entry, the log. `restored` is `None` after a restart (the gateway went down).
    async fn report(
        &self,
        m: &Marker,
        restored: Option<Timestamp>,
        status: &watch::Sender<PowerStatus>,
    ) {
        let now = Timestamp::now();
        let event = serde_json::json!({
            "event": "power_fail",
            "input": m.input,
            "failed_at": rfc3339(m.failed_at),
            "restored_at": rfc3339(restored.unwrap_or(now).0),
            "outage_s": (restored.unwrap_or(now).0 - m.failed_at) as f64 / 1e9,
            "went_down": restored.is_none(),
            "intake_stopped_ms": m.intake_stopped_ms,
            "sealed_ms": m.sealed_ms,
            "budget_ms": m.budget_ms,
            "last_seq": m.last_seq,
        });
        let record = NewRecord {
            record: Record {
                seq: 0,
                stream: self.stream.clone(),
                priority: self.priority,
                ingest_ts: now,
                reading: Reading {
                    source: Arc::from(skygate_config::HEALTH_SOURCE),
                    channel: Arc::from(CHANNEL),
                    ts: Timestamp(m.failed_at),
                    time_quality: TimeQuality::from_code(m.time_quality)
                        .unwrap_or(TimeQuality::Unsynced),
                    value: Value::Text(event.to_string()),
                    unit: None,
                    quality: Quality::Good,
                },
                lineage: None,
            },
            sinks: self.sinks,
        };
        if self.sinks != 0
            && let Err(e) = self.buffer.append_durable(vec![record]).await
        {
            tracing::error!(error = %e, "power-fail report not stored; the marker stays for the next start");
            return;
        }
        self.audit
            .record(AuditEvent::agent(
                "power.restored",
                &m.input,
                if restored.is_some() {
                    "resumed"
                } else {
                    "restarted"
                },
                event.to_string(),
            ))
            .await;
        let path = self.data_dir.join(MARKER);
        if let Err(e) = tokio::fs::remove_file(&path).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(path = %path.display(), error = %e, "power-fail marker not removed: it will be reported again");
        }
        tracing::info!(report = %event, "power failure reported");
        status.send_modify(|s| s.last_event = Some(event));
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn rfc3339(ns: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}
