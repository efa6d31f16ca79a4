//! The manager task: owns the running drivers, applies configuration reloads, and stops
//! the drivers when the agent stops.
//!
//! A reload (SIGHUP, `skygate reload`, the TUI, a workflow file changing on disk) reads
//! the configuration again from where it came from. A configuration that does not
//! validate changes nothing. Otherwise what can change live is applied — drivers added,
//! removed or changed, routes, workflows, the heartbeat — and what cannot (gateway,
//! buffer, sinks, control) is reported as needing a restart and keeps running as before.
//!
//! Order, so no reading is lost or misrouted: stop removed and changed drivers (each
//! returns after its last send); wait until ingest has taken the queue; install the new
//! routes and workflows (ingest swaps them between batches: each reading goes through the
//! old workflows or the new, never both or neither); start new and changed drivers.

use std::collections::BTreeSet;
use std::time::Duration;

use skygate_drivers::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::drivers::DriverSet;
use super::ingest::IngestCmd;
use super::{DriverFactory, dead_letter_mask, routes_for};
use skygate_audit::{Audit, AuditEvent};
use skygate_config::{ConfigSource, DriverSettings, HEALTH_SOURCE, Settings};
use skygate_control::view::{self, ReloadError, ReloadReport};
use skygate_functions::WorkflowsView;
use skygate_functions::builtins::BuildCx;

/// Longest wait for ingest to take the queued readings of stopped drivers.
const QUEUE_DRAIN: Duration = Duration::from_secs(5);
/// How often workflow files are checked for changes.
const WORKFLOW_WATCH: Duration = Duration::from_secs(1);

/// Who asked for a reload, and where the answer goes.
#[derive(Debug)]
pub struct ReloadRequest {
    pub actor: String,
    pub origin: String,
    pub reply: Option<oneshot::Sender<Result<ReloadReport, ReloadError>>>,
}

/// Where reload requests go: SIGHUP and the control API share it.
#[derive(Debug, Clone)]
pub struct ReloadHandle(pub mpsc::Sender<ReloadRequest>);

impl view::Reload for ReloadHandle {
    fn reload(
        &self,
        actor: String,
        origin: String,
    ) -> BoxFuture<Option<Result<ReloadReport, ReloadError>>> {
        let tx = self.0.clone();
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            let req = ReloadRequest {
                actor,
                origin,
                reply: Some(reply),
            };
            tx.send(req).await.ok()?;
            answer.await.ok()
        })
    }
}

pub(super) struct Manager {
    pub set: DriverSet,
    pub current: Settings,
    pub factory: DriverFactory,
    pub ingest: mpsc::Sender<IngestCmd>,
    pub audit: Audit,
    pub workflows: WorkflowsView,
    pub functions: BuildCx,
}

fn start_driver(set: &mut DriverSet, factory: &DriverFactory, d: &DriverSettings) {
    set.start(
        &d.name,
        d.kind.as_str(),
        &d.stream,
        d.priority,
        factory.driver(d),
    );
}

impl Manager {
    /// Starts every configured driver and the heartbeat.
    pub fn start_all(&mut self) {
        for d in self.current.drivers.values() {
            start_driver(&mut self.set, &self.factory, d);
        }
        self.start_heartbeat();
    }

    fn start_heartbeat(&mut self) {
        let h = &self.current.health;
        if h.enabled {
            self.set.start(
                HEALTH_SOURCE,
                "health",
                &h.stream,
                h.priority,
                self.factory.heartbeat(h),
            );
        }
    }

    /// Serves reloads until `stop`, then stops every driver (waiting for each). A
    /// workflow file that changes on disk reloads the configuration like SIGHUP.
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<ReloadRequest>,
        stop: CancellationToken,
    ) {
        let mut watch = tokio::time::interval(WORKFLOW_WATCH);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = self.workflow_stamps().await;
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(req) = requests.recv() => {
                    let result = self.reload(&req).await;
                    if let Some(reply) = req.reply {
                        let _ = reply.send(result);
                    }
                    seen = self.workflow_stamps().await;
                }
                _ = watch.tick(), if self.watches_files() => {
                    let now = self.workflow_stamps().await;
                    if now != seen {
                        // Taken before reading, whatever the outcome: a bad file is
                        // reported once, not every second until it is fixed, and a change
                        // made while this reload reads is seen on the next tick.
                        seen = now;
                        let req = ReloadRequest {
                            actor: "agent".into(),
                            origin: "workflow file changed".into(),
                            reply: None,
                        };
                        let _ = self.reload(&req).await;
                    }
                }
            }
        }
        // Refuse what is still queued rather than leave callers waiting.
        requests.close();
        while let Ok(req) = requests.try_recv() {
            if let Some(reply) = req.reply {
                let _ = reply.send(Err(ReloadError::Stopping));
            }
        }
        tracing::info!("stopping: drivers first");
        self.set.stop_all().await;
    }

    fn watches_files(&self) -> bool {
        matches!(self.current.source, ConfigSource::File(_))
            && !self.current.workflow_files.is_empty()
    }

    /// What the workflow files and their modules on disk look like (modification time and size; `None` for
    /// one that cannot be read, so a file that disappears counts as a change too).
    async fn workflow_stamps(&self) -> Vec<Option<(std::time::SystemTime, u64)>> {
        if !self.watches_files() {
            return Vec::new();
        }
        let files =
            skygate_functions::watched_files(&self.current.workflow_files, &self.current.workflows);
        let mut out = Vec::with_capacity(files.len());
        for f in &files {
            let m = tokio::fs::metadata(f).await.ok();
            out.push(m.and_then(|m| Some((m.modified().ok()?, m.len()))));
        }
        out
    }

    async fn reload(&mut self, req: &ReloadRequest) -> Result<ReloadReport, ReloadError> {
        let source = self.current.source.clone();
        let loaded = tokio::task::spawn_blocking(move || source.load())
            .await
            .ok()
            .flatten();
        let target = self.current.source.to_string();
        let event = |result: &str, detail: String| AuditEvent {
            actor: req.actor.clone(),
            origin: req.origin.clone(),
            action: "config.reload".into(),
            target: target.clone(),
            result: result.into(),
            detail,
        };
        let new = match loaded {
            None => {
                self.audit
                    .record(event("rejected: no source", String::new()))
                    .await;
                return Err(ReloadError::NoSource);
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "reload: configuration not valid; nothing changed");
                self.audit
                    .record(event("rejected: invalid", e.to_string()))
                    .await;
                return Err(ReloadError::Config(e));
            }
            Some(Ok(s)) => s,
        };
        let report = self.apply(new).await;
        tracing::info!(actor = %req.actor, summary = %report.summary(), "configuration reloaded");
        self.audit.record(event("ok", report.summary())).await;
        Ok(report)
    }

    async fn apply(&mut self, new: Settings) -> ReloadReport {
        let old = &self.current;
        let mut report = ReloadReport {
            source: old.source.to_string(),
            ..Default::default()
        };
        for (section, changed) in [
            ("gateway", old.gateway != new.gateway),
            ("buffer", old.buffer != new.buffer),
            ("sinks", old.sinks != new.sinks),
            ("control", old.control != new.control),
            ("broker", old.broker != new.broker),
        ] {
            if changed {
                report.restart_required.push(section.to_string());
            }
        }
        let old_names: BTreeSet<&String> = old.drivers.keys().collect();
        let new_names: BTreeSet<&String> = new.drivers.keys().collect();
        report.drivers_stopped = old_names
            .difference(&new_names)
            .map(|n| n.to_string())
            .collect();
        report.drivers_started = new_names
            .difference(&old_names)
            .map(|n| n.to_string())
            .collect();
        report.drivers_restarted = old_names
            .intersection(&new_names)
            .filter(|n| old.drivers[**n] != new.drivers[**n])
            .map(|n| n.to_string())
            .collect();
        report.routes_changed = old.routes != new.routes;
        report.workflows_changed = old.workflows != new.workflows;
        report.health_changed = old.health != new.health;

        let mut to_stop: Vec<String> = report
            .drivers_stopped
            .iter()
            .chain(&report.drivers_restarted)
            .cloned()
            .collect();
        if report.health_changed && old.health.enabled {
            to_stop.push(HEALTH_SOURCE.to_string());
        }
        self.set.stop(&to_stop).await;

        // What keeps running as before stays in the settings, so the next reload reports
        // it again until a restart applies it.
        let mut next = new;
        next.gateway = self.current.gateway.clone();
        next.buffer = self.current.buffer.clone();
        next.sinks = self.current.sinks.clone();
        next.control = self.current.control.clone();
        if !self.set.wait_queue_empty(QUEUE_DRAIN).await {
            tracing::warn!(
                "reload: ingest did not take the queue within {QUEUE_DRAIN:?}; routing anyway"
            );
        }
        // Compiling WASM modules (or reading them from the cache) blocks.
        let routing = skygate_util::blocking_here(|| {
            routes_for(
                &next,
                &self.factory.buffer,
                &self.functions,
                &self.workflows,
            )
        });
        for (name, h) in &self.factory.sinks {
            let mask = dead_letter_mask(&next, &self.factory.buffer, name, h.id);
            h.dead_letter
                .mask
                .store(mask, std::sync::atomic::Ordering::Relaxed);
        }
        let (done, installed) = oneshot::channel();
        if self
            .ingest
            .send(IngestCmd::SetRoutes(Box::new(routing), done))
            .await
            .is_ok()
        {
            let _ = installed.await;
        }
        self.current = next;
        self.factory.expect_broker_drivers(&self.current);
        let start: Vec<String> = report
            .drivers_started
            .iter()
            .chain(&report.drivers_restarted)
            .cloned()
            .collect();
        for name in start {
            start_driver(&mut self.set, &self.factory, &self.current.drivers[&name]);
        }
        if report.health_changed {
            self.start_heartbeat();
        }
        report
    }
}
