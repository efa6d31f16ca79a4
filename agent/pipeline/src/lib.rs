//! The running agent: drivers -> bounded channel -> ingest -> buffer -> delivery per sink.
//!
//! Shutdown order (on the stop token): stop the drivers; ingest drains the channel and
//! ends when the last driver's sender is gone; wait until the buffer has committed what
//! was accepted; stop the sinks under a deadline (an in-flight batch that does not finish
//! stays pending for the next start); close the buffer (final commit, WAL checkpoint).
//! Every stage is bounded in time, so a stuck peer cannot keep the agent from stopping.

#![forbid(unsafe_code)]

mod drivers;
mod heartbeat;
mod ingest;
pub mod power;
mod reload;
pub mod status_leds;
mod supervisor;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use skygate_bsp::{Board, GenericLinux};
use skygate_drivers::files::FilesDriver;
use skygate_drivers::http::HttpDriver;
use skygate_drivers::modbus::ModbusDriver;
use skygate_drivers::mqtt::{BrokerRef, LocalBroker, MqttDriver, TopicFilter};
use skygate_drivers::serial::SerialDriver;
use skygate_drivers::sim::SimDriver;
use skygate_drivers::{Clock, Driver, SystemClock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use drivers::DriverSet;
use heartbeat::Heartbeat;
use skygate_audit::{Audit, AuditError, AuditEvent, AuditGuard};
use skygate_buffer::{Buffer, BufferError, BufferEvent, BufferGuard, BufferOptions, buffer_dir};
use skygate_config::{DriverKind, DriverSettings, HEALTH_SOURCE, HealthSettings, Settings};
use skygate_functions::builtins::BuildCx;
use skygate_functions::{Engine, WorkflowsView};
use skygate_sinks::{self as sinks, delivery::SinkHandle};

pub use drivers::{DRIVER_STOP, DriverRegistry};
use ingest::Routing;
pub use ingest::{IngestCounters, IngestView};
pub use reload::{ReloadHandle, ReloadRequest};
pub use skygate_control::view::{DriverInfo, LastValue, ReloadError, ReloadReport, SourceLive};

/// Readings waiting between the drivers and ingest.
pub const READING_QUEUE: usize = 8192;
/// Readings ingest takes per append.
pub const INGEST_BATCH: usize = 2048;
const INGEST_DRAIN: Duration = Duration::from_secs(10);
const SINK_STOP: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Buffer(#[from] BufferError),
    #[error(transparent)]
    Sink(#[from] sinks::SinkBuildError),
    #[error(transparent)]
    Control(#[from] skygate_control::ControlError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Broker(#[from] skygate_broker::BrokerError),
    #[error("start-up task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Where a driver's readings go: resolved once at start.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub stream: Arc<str>,
    pub priority: u8,
    pub sinks: u64,
}

/// A started agent: handles for observers (tests, the benchmark, the control API).
#[derive(Debug)]
pub struct Running {
    pub buffer: Buffer,
    pub sinks: BTreeMap<String, SinkHandle>,
    pub ingest: IngestView,
    pub drivers: DriverRegistry,
    /// Where reload requests go (SIGHUP, the control API).
    pub reload: mpsc::Sender<ReloadRequest>,
    /// The power-fail component's inputs and status.
    pub power: power::PowerHandle,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the agent in order and waits for it.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Opens the buffer and starts drivers, ingest and sinks. `stop` cancelled starts an
/// orderly shutdown; [`Running::stop`] does the same and waits.
pub async fn start(
    settings: Settings,
    data_dir: &Path,
    stop: CancellationToken,
) -> Result<Running, AgentError> {
    start_with(
        settings,
        data_dir,
        stop,
        Arc::new(GenericLinux::default()),
        Arc::new(SystemClock::default().with_probe(Box::new(kernel_sync))),
    )
    .await
}

/// [`start`] with the board and clock injected (tests).
pub async fn start_with(
    settings: Settings,
    data_dir: &Path,
    stop: CancellationToken,
    board: Arc<dyn Board>,
    clock: Arc<dyn Clock>,
) -> Result<Running, AgentError> {
    let Store {
        audit,
        audit_guard,
        buffer,
        guard,
        events,
    } = open_store(&settings, data_dir, &board).await?;
    let Sinks {
        stop: sinks_stop,
        tasks: sink_tasks,
        status: sink_status,
    } = start_sinks(&settings, &buffer, data_dir)?;

    let view = IngestView::default();
    let functions = BuildCx::new(Some(data_dir.join("wasm-cache")));
    let mut routing =
        skygate_util::blocking_here(|| routes_for(&settings, &buffer, &functions, &view.workflows));
    for (name, r) in &routing.routes {
        let taken = routing.engine.as_mut().is_some_and(|e| e.takes(&r.stream));
        if r.sinks == 0 && !taken {
            tracing::warn!(driver = %name, stream = %r.stream, "stream is routed to no sink and taken by no workflow: its readings are dropped (add a [[routes]] entry)");
        }
    }
    let (tx, rx) = mpsc::channel(READING_QUEUE);
    let (ingest_cmd_tx, ingest_cmd_rx) = mpsc::channel(4);
    let ingest = tokio::spawn(ingest::run(
        rx,
        ingest_cmd_rx,
        buffer.clone(),
        routing,
        view.clone(),
    ));

    // Which board file applies, and why (`skygate board` shows its devices).
    let board_file =
        skygate_bsp::board::this_machine(Path::new("/"), settings.gateway.board.as_deref());
    let power = power::spawn(
        power::PowerTask {
            data_dir: data_dir.to_path_buf(),
            budget: board_file
                .as_ref()
                .ok()
                .and_then(|(b, _, _)| b.power_fail.as_ref()?.hold_up())
                .unwrap_or(power::DEFAULT_BUDGET),
            buffer: buffer.clone(),
            ingest: ingest_cmd_tx.clone(),
            audit: audit.clone(),
            clock: clock.clone(),
            stream: Arc::from(settings.health.stream.as_str()),
            priority: settings.health.priority,
            sinks: buffer.mask_for(settings.sinks_for_stream(&settings.health.stream)),
        },
        stop.clone(),
    );
    let hardware = match &board_file {
        // Opening the GPIO line and the LEDs' sysfs files blocks briefly.
        Ok((b, _, _)) => skygate_util::blocking_here(|| {
            start_hardware(b, &power, &sink_status, &buffer, stop.clone())
        }),
        Err(_) => Hardware::default(),
    };

    let broker = match &settings.broker {
        Some(b) => Some(skygate_broker::start(
            b,
            embedded_mqtt_drivers(&settings),
            stop.clone(),
        )?),
        None => None,
    };
    let registry = DriverRegistry::default();
    let factory = DriverFactory {
        local: broker.clone().map(|b| Arc::new(b) as Arc<dyn LocalBroker>),
        broker: broker.clone(),
        data_dir: data_dir.to_path_buf(),
        buffer: buffer.clone(),
        sinks: sink_status.clone(),
        board: board.clone(),
        drivers: registry.clone(),
    };
    // From here only the manager's driver set holds the sender: ingest ends when the
    // manager has stopped every driver.
    let mut manager = reload::Manager {
        set: DriverSet::new(tx, clock.clone(), registry.clone()),
        current: settings.clone(),
        factory,
        ingest: ingest_cmd_tx,
        audit: audit.clone(),
        workflows: view.workflows.clone(),
        functions,
    };
    manager.start_all();
    let (reload_tx, reload_rx) = mpsc::channel(4);
    let manager_stop = CancellationToken::new();
    let manager = tokio::spawn(manager.run(reload_rx, manager_stop.clone()));

    let control_stop = CancellationToken::new();
    let control_state = skygate_control::ControlState {
        gateway: settings.gateway.id.clone(),
        site: settings.gateway.site.clone(),
        data_dir: data_dir.to_path_buf(),
        started: tokio::time::Instant::now(),
        buffer: buffer.clone(),
        sinks: sink_status.clone(),
        ingest: Arc::new(view.clone()),
        drivers: Arc::new(registry.clone()),
        reload: Arc::new(ReloadHandle(reload_tx.clone())),
        shutdown: control_stop.clone(),
        board: board.clone(),
        clock: clock.clone(),
        audit: audit.clone(),
        rates: Default::default(),
        broker: broker.as_ref().map(skygate_broker::EmbeddedBroker::metrics),
        power: Arc::new(power.clone()),
    };
    let control =
        skygate_control::serve(control_state, &settings.control, control_stop.clone()).await?;

    let supervisor = supervisor::spawn(buffer.clone(), view.counters.clone(), stop.clone());
    skygate_bsp::systemd::notify_ready();
    let board_file = board_file
        .map(|(b, why, _)| format!("{} ({why})", b.name))
        .unwrap_or_else(|e| e.to_string());
    tracing::info!(
        gateway = %settings.gateway.id,
        board = %board_file,
        data_dir = %data_dir.display(),
        drivers = settings.drivers.len(),
        sinks = settings.sinks.len(),
        "skygate running"
    );

    let b = buffer.clone();
    let stop_token = stop.clone();
    let task = tokio::spawn(async move {
        stop_token.cancelled().await;
        shutdown(Shutdown {
            audit,
            audit_guard,
            events,
            control_stop,
            control,
            manager_stop,
            manager,
            ingest,
            buffer: b,
            sinks_stop,
            sink_tasks,
            guard,
            supervisor,
            hardware,
        })
        .await;
    });
    Ok(Running {
        buffer,
        sinks: sink_status,
        ingest: view,
        drivers: registry,
        reload: reload_tx,
        power,
        stop,
        task,
    })
}

/// The audit trail and the buffer, open, with the task that files the buffer's evictions
/// in the audit trail.
struct Store {
    audit: Audit,
    audit_guard: AuditGuard,
    buffer: Buffer,
    guard: BufferGuard,
    events: tokio::task::JoinHandle<()>,
}

/// Opens the data directory's audit trail and buffer (a quarantined buffer is audited).
async fn open_store(
    settings: &Settings,
    data_dir: &Path,
    board: &Arc<dyn Board>,
) -> Result<Store, AgentError> {
    std::fs::create_dir_all(data_dir).map_err(|source| AgentError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let dir = data_dir.to_path_buf();
    let (audit, audit_guard) = tokio::task::spawn_blocking(move || Audit::open(&dir)).await??;
    let (events_tx, mut events_rx) = mpsc::channel(256);
    let opts = BufferOptions {
        events: Some(events_tx),
        dir: buffer_dir(data_dir),
        settings: settings.buffer.clone(),
        gateway_id: settings.gateway.id.clone(),
        sinks: settings.sinks.keys().cloned().collect(),
        routes: settings
            .routes
            .iter()
            .map(|r| (r.streams.clone(), r.sinks.clone()))
            .collect(),
    };
    let b = board.clone();
    let (buffer, guard) = tokio::task::spawn_blocking(move || Buffer::open(opts, b)).await??;
    if let Some(q) = &guard.report.quarantined {
        tracing::error!(dir = %q.dir.display(), reason = %q.reason, salvaged = q.salvaged_records, "started on a fresh buffer after quarantine");
        let detail = format!(
            "{}; salvaged {} records; resumed at seq {}",
            q.reason, q.salvaged_records, q.resumed_at_seq
        );
        audit
            .record(AuditEvent::agent(
                "buffer.quarantine",
                &q.dir.display().to_string(),
                "quarantined",
                detail,
            ))
            .await;
    }
    audit
        .record(AuditEvent::agent(
            "agent.start",
            &settings.gateway.id,
            "ok",
            format!("version {}", env!("CARGO_PKG_VERSION")),
        ))
        .await;
    // Evictions reach the audit trail from here; ends when the buffer writer stops.
    let evict_audit = audit.clone();
    let events = tokio::spawn(async move {
        while let Some(BufferEvent::Evicted(g)) = events_rx.recv().await {
            let detail = format!(
                "seqs {}..={}, {} records: {}",
                g.first_seq,
                g.last_seq,
                g.count.unwrap_or(0),
                g.reason
            );
            evict_audit
                .record(AuditEvent::agent(
                    "buffer.evict",
                    &g.stream,
                    "gap recorded",
                    detail,
                ))
                .await;
        }
    });
    Ok(Store {
        audit,
        audit_guard,
        buffer,
        guard,
        events,
    })
}

/// The sinks' delivery tasks, running, and what stops them.
struct Sinks {
    stop: CancellationToken,
    tasks: TaskTracker,
    status: BTreeMap<String, sinks::delivery::SinkHandle>,
}

/// Builds every sink, then starts their delivery loops.
fn start_sinks(settings: &Settings, buffer: &Buffer, data_dir: &Path) -> Result<Sinks, AgentError> {
    // Build every sink before anything runs, so a sink that cannot be built leaves
    // nothing half-started.
    let mut built = Vec::new();
    for s in settings.sinks.values() {
        let sink = sinks::build(s, &settings.gateway.id, data_dir)?;
        let id = buffer
            .sink_id(&s.name)
            .ok_or_else(|| BufferError::UnknownSink(s.name.clone()))?;
        built.push((s, sink, id));
    }

    let sinks_stop = CancellationToken::new();
    let sink_tasks = TaskTracker::new();

    // Sinks first: they only read the buffer, and the heartbeat reports their state.
    let mut sink_status = BTreeMap::new();
    for (s, sink, id) in built {
        let dead_letter = sinks::delivery::DeadLetter {
            stream: Arc::from(s.common.dead_letter_stream.as_str()),
            mask: Arc::new(dead_letter_mask(settings, buffer, &s.name, id).into()),
            file: data_dir
                .join("deadletter")
                .join(format!("{}.ndjson", s.name)),
            gateway: Arc::from(settings.gateway.id.as_str()),
        };
        let handle = sinks::delivery::spawn(
            &sink_tasks,
            sinks::delivery::SinkSpec {
                name: s.name.clone(),
                sink,
                id,
                buffer: buffer.clone(),
                common: s.common.clone(),
                dead_letter,
                cancel: sinks_stop.clone(),
            },
        );
        sink_status.insert(s.name.clone(), handle);
    }
    sink_tasks.close();
    Ok(Sinks {
        stop: sinks_stop,
        tasks: sink_tasks,
        status: sink_status,
    })
}

/// The kernel's adjtimex state as the clock's synchronisation (None: cannot tell).
fn kernel_sync() -> Option<skygate_drivers::clock::SyncState> {
    use skygate_drivers::clock::SyncState;
    let k = skygate_bsp::clock::kernel_clock().ok()?;
    Some(match (k.synced, k.pps) {
        (false, _) => SyncState::Unsynced,
        (true, true) => SyncState::Pps,
        (true, false) => SyncState::Ntp,
    })
}

/// The sinks a sink's dead letters go to: those its dead-letter stream is routed to, never
/// the sink itself (it would refuse them again).
pub(crate) fn dead_letter_mask(
    settings: &Settings,
    buffer: &Buffer,
    sink: &str,
    id: skygate_buffer::SinkId,
) -> u64 {
    settings.sinks.get(sink).map_or(0, |s| {
        buffer.mask_for(settings.sinks_for_stream(&s.common.dead_letter_stream)) & !id.mask()
    })
}

/// Routes per driver (and the heartbeat), and the workflows, as ingest uses them.
pub(crate) fn routes_for(
    settings: &Settings,
    buffer: &Buffer,
    cx: &BuildCx,
    view: &WorkflowsView,
) -> Routing {
    let engine = Engine::build(
        &settings.workflows,
        |w| {
            // Its own sinks, and wherever the config routes its output stream.
            buffer.mask_for(
                w.sinks
                    .iter()
                    .map(|(s, _)| s.as_str())
                    .chain(settings.sinks_for_stream(&w.output_stream)),
            )
        },
        |stream| buffer.mask_for(settings.sinks_for_stream(stream)),
        cx,
        view.clone(),
    );
    Routing {
        routes: driver_routes(settings, buffer),
        engine,
    }
}

fn driver_routes(settings: &Settings, buffer: &Buffer) -> HashMap<String, Route> {
    let heartbeat = settings.health.enabled.then_some((
        HEALTH_SOURCE,
        settings.health.stream.as_str(),
        settings.health.priority,
    ));
    settings
        .drivers
        .values()
        .map(|d| (d.name.as_str(), d.stream.as_str(), d.priority))
        .chain(heartbeat)
        .map(|(name, stream, priority)| {
            let sinks = settings.sinks_for_stream(stream);
            let route = Route {
                stream: Arc::from(stream),
                priority,
                sinks: buffer.mask_for(sinks.iter().copied()),
            };
            (name.to_string(), route)
        })
        .collect()
}

/// Builds drivers from their settings (at start and on reload).
#[derive(Debug)]
pub(crate) struct DriverFactory {
    data_dir: PathBuf,
    pub buffer: Buffer,
    sinks: BTreeMap<String, SinkHandle>,
    board: Arc<dyn Board>,
    drivers: DriverRegistry,
    /// The embedded MQTT broker, for `broker = "embedded"` drivers.
    local: Option<Arc<dyn LocalBroker>>,
    broker: Option<skygate_broker::EmbeddedBroker>,
}

/// The drivers that read the embedded broker, with their topic filters.
fn embedded_mqtt_drivers(settings: &Settings) -> Vec<(String, Vec<TopicFilter>)> {
    settings
        .drivers
        .values()
        .filter_map(|d| match &d.kind {
            DriverKind::Mqtt(cfg) if cfg.broker == BrokerRef::Embedded => Some((
                d.name.clone(),
                cfg.topics.iter().map(|t| t.filter.clone()).collect(),
            )),
            _ => None,
        })
        .collect()
}

impl DriverFactory {
    /// Tells the embedded broker which drivers claim which topics (see its module doc:
    /// their messages wait for them while they restart).
    pub fn expect_broker_drivers(&self, settings: &Settings) {
        if let Some(b) = &self.broker {
            b.expect(embedded_mqtt_drivers(settings));
        }
    }

    pub fn driver(&self, d: &DriverSettings) -> Box<dyn Driver> {
        match &d.kind {
            DriverKind::Sim(cfg) => Box::new(SimDriver::new(&d.name, cfg)),
            DriverKind::Modbus(cfg) => Box::new(ModbusDriver::new(&d.name, cfg)),
            DriverKind::Serial(cfg) => Box::new(SerialDriver::new(&d.name, cfg)),
            DriverKind::Http(cfg) => Box::new(HttpDriver::new(&d.name, cfg)),
            DriverKind::Mqtt(cfg) => Box::new(MqttDriver::new(&d.name, cfg, self.local.clone())),
            DriverKind::Files(cfg) => {
                let mut cfg = cfg.clone();
                cfg.resolve(&self.data_dir);
                Box::new(FilesDriver::new(
                    &d.name,
                    &cfg,
                    self.data_dir.join("drivers").join(&d.name),
                ))
            }
        }
    }

    pub fn heartbeat(&self, h: &HealthSettings) -> Box<dyn Driver> {
        Box::new(Heartbeat {
            interval: h.interval,
            data_dir: self.data_dir.clone(),
            buffer: self.buffer.clone(),
            sinks: self
                .sinks
                .iter()
                .map(|(n, h)| (n.clone(), h.clone()))
                .collect(),
            drivers: self.drivers.clone(),
            board: self.board.clone(),
        })
    }
}

struct Shutdown {
    audit: Audit,
    audit_guard: AuditGuard,
    events: tokio::task::JoinHandle<()>,
    control_stop: CancellationToken,
    control: tokio::task::JoinHandle<()>,
    manager_stop: CancellationToken,
    manager: tokio::task::JoinHandle<()>,
    ingest: tokio::task::JoinHandle<()>,
    buffer: Buffer,
    sinks_stop: CancellationToken,
    sink_tasks: TaskTracker,
    guard: BufferGuard,
    supervisor: tokio::task::JoinHandle<()>,
    hardware: Hardware,
}

/// The board's power-fail watch and status LEDs, while they run.
#[derive(Default)]
struct Hardware {
    power_watch: Option<skygate_bsp::power::Watch>,
    leds: Option<tokio::task::JoinHandle<()>>,
}

/// Starts what the board file names and this machine has: the power-fail line (GPIO
/// character device) feeding the power component, the status LEDs (sysfs). What is
/// missing is logged and left out; the agent runs without it.
fn start_hardware(
    board: &skygate_bsp::board::BoardSpec,
    power: &power::PowerHandle,
    sinks: &BTreeMap<String, SinkHandle>,
    buffer: &Buffer,
    stop: CancellationToken,
) -> Hardware {
    use skygate_bsp::leds::{Led, Leds, SysfsLed};
    let mut hw = Hardware::default();
    if let Some(spec) = &board.power_fail {
        let opened = skygate_bsp::power::GpioPowerFail::open(Path::new("/dev"), spec);
        match opened {
            Ok(line) => {
                let inputs = power.inputs.clone();
                let gone = power.inputs.clone();
                let w = skygate_bsp::power::watch(
                    Box::new(line),
                    move |s| inputs.send_modify(|i| i.gpio = Some(s)),
                    move |e| {
                        tracing::error!(error = %e, "power-fail input lost: power failures are no longer seen");
                        gone.send_modify(|i| i.gpio = None);
                    },
                );
                match w {
                    Ok(w) => hw.power_watch = Some(w),
                    Err(e) => tracing::error!(error = %e, "power-fail watch thread not started"),
                }
            }
            Err(e) => {
                tracing::warn!(board = %board.name, error = %e, "power-fail input not watched")
            }
        }
    }
    let leds: Vec<Box<dyn Led>> = board
        .leds
        .iter()
        .filter_map(|l| match SysfsLed::open(&l.name, &l.sysfs) {
            Ok(led) => Some(Box::new(led) as Box<dyn Led>),
            Err(e) => {
                tracing::warn!(board = %board.name, error = %e, "status LED not used");
                None
            }
        })
        .collect();
    if !leds.is_empty() {
        match Leds::spawn(leds) {
            Ok(leds) => {
                hw.leds = Some(tokio::spawn(status_leds::run(
                    leds,
                    sinks.clone(),
                    buffer.status(),
                    power.status.clone(),
                    stop,
                )))
            }
            Err(e) => tracing::error!(error = %e, "status LED thread not started"),
        }
    }
    hw
}

async fn shutdown(s: Shutdown) {
    skygate_bsp::systemd::notify_stopping();
    s.control_stop.cancel();
    if tokio::time::timeout(Duration::from_secs(2), s.control)
        .await
        .is_err()
    {
        tracing::warn!("control API did not close within 2s");
    }
    // The manager stops the drivers (each bounded by DRIVER_STOP) and drops the last
    // sender, which ends ingest once it has drained the queue.
    s.manager_stop.cancel();
    if tokio::time::timeout(DRIVER_STOP + Duration::from_secs(1), s.manager)
        .await
        .is_err()
    {
        tracing::warn!("drivers did not stop within {DRIVER_STOP:?}; going on");
    }
    if tokio::time::timeout(INGEST_DRAIN, s.ingest).await.is_err() {
        tracing::warn!("ingest did not drain within {INGEST_DRAIN:?}");
    }
    if let Err(e) = s.buffer.sync().await {
        tracing::error!(error = %e, "final commit failed");
    }
    tracing::info!("accepted readings committed; stopping sinks");
    s.sinks_stop.cancel();
    if tokio::time::timeout(SINK_STOP, s.sink_tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "sinks did not stop within {SINK_STOP:?}; unacknowledged records stay for the next start"
        );
    }
    s.supervisor.abort();
    if let Some(leds) = s.hardware.leds {
        let _ = tokio::time::timeout(Duration::from_secs(2), leds).await;
    }
    if let Some(w) = s.hardware.power_watch {
        let _ = tokio::task::spawn_blocking(move || drop(w)).await;
    }
    s.guard.close().await;
    // The writer is gone, so the eviction forwarder drains and ends.
    let _ = tokio::time::timeout(Duration::from_secs(2), s.events).await;
    s.audit
        .record(AuditEvent::agent("agent.stop", "", "ok", ""))
        .await;
    drop(s.audit);
    if tokio::time::timeout(Duration::from_secs(5), s.audit_guard.close())
        .await
        .is_err()
    {
        tracing::warn!("audit log did not close within 5s");
    }
    tracing::info!("stopped");
}
