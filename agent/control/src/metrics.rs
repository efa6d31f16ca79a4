//! `/metrics`: the agent's counters in the Prometheus/OpenMetrics text format.
//!
//! Built per scrape from the components' own counters (atomics, watch channels); nothing
//! here is kept between scrapes. Names are prefixed `skygate_`; counters end in `_total`.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::server::{ControlState, sink_replies};
use skygate_buffer::BufferMetrics;
use skygate_drivers::DriverState;
use skygate_sinks::delivery::LinkState;

type Labels = Vec<(String, String)>;

fn counter(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let c: Counter = Counter::default();
    c.inc_by(v);
    reg.register(name, help, c);
}

fn gauge(reg: &mut Registry, name: &str, help: &str, v: f64) {
    let g: Gauge<f64, AtomicU64> = Gauge::default();
    g.set(v);
    reg.register(name, help, g);
}

fn labelled(
    reg: &mut Registry,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, f64)>,
) {
    let fam = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for (labels, v) in rows {
        fam.get_or_create(&labels).set(v);
    }
    reg.register(name, help, fam);
}

fn labelled_counter(
    reg: &mut Registry,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) {
    let fam = Family::<Labels, Counter>::default();
    for (labels, v) in rows {
        fam.get_or_create(&labels).inc_by(v);
    }
    reg.register(name, help, fam);
}

fn sink_label(name: &str) -> Labels {
    vec![("sink".into(), name.into())]
}

pub(super) async fn render(s: &ControlState) -> String {
    let mut reg = Registry::with_prefix("skygate");
    ingest_and_power(&mut reg, s);
    if let Some(b) = &s.broker {
        broker(&mut reg, b);
    }
    buffer(&mut reg, s);
    sinks(&mut reg, &sink_replies(s).await);
    workflows(&mut reg, &s.ingest.workflows());
    drivers(&mut reg, s);
    process(&mut reg, s);
    let mut out = String::new();
    if let Err(e) = encode(&mut out, &reg) {
        tracing::error!(error = %e, "metrics encoding failed");
    }
    out
}

/// Readings taken in, and the power-fail input.
fn ingest_and_power(reg: &mut Registry, s: &ControlState) {
    counter(
        reg,
        "ingest_readings",
        "Readings accepted from drivers",
        s.ingest.counts().readings,
    );
    counter(
        reg,
        "ingest_unrouted",
        "Readings dropped: their stream has no route",
        s.ingest.counts().unrouted,
    );
    let pm = s.power.counts();
    counter(
        reg,
        "power_failures",
        "Power failures seen (power-fail line or operator input)",
        pm.failures,
    );
    gauge(
        reg,
        "power_fail_seal_seconds",
        "The last power failure: time from the edge until intake was stopped and the buffer on the disk",
        pm.last_seal_seconds,
    );
    gauge(
        reg,
        "power_failed",
        "1 while input power is lost",
        f64::from(u8::from(pm.failed)),
    );
}

/// The embedded broker's counters.
fn broker(reg: &mut Registry, b: &skygate_broker::BrokerMetrics) {
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    for (name, help, v) in [
        (
            "broker_connections",
            "Embedded broker: clients connected",
            n(&b.connections),
        ),
        (
            "broker_logins_refused",
            "Embedded broker: wrong user or password",
            n(&b.logins_refused),
        ),
        (
            "broker_published",
            "Embedded broker: publishes handled (QoS 1/2: acknowledged after commit)",
            n(&b.published),
        ),
        (
            "broker_refused",
            "Embedded broker: publishes not acknowledged (commit not confirmed)",
            n(&b.refused),
        ),
        (
            "broker_unclaimed",
            "Embedded broker: publishes acknowledged and dropped, no driver claims the topic",
            n(&b.unclaimed),
        ),
    ] {
        counter(reg, name, help, v);
    }
}

/// The buffer: commits, acknowledgements, evictions, size, latency to durable.
fn buffer(reg: &mut Registry, s: &ControlState) {
    let m = s.buffer.metrics();
    let get = BufferMetrics::get;
    counter(
        reg,
        "buffer_records_committed",
        "Records committed to the buffer",
        get(&m.records_committed),
    );
    counter(reg, "buffer_commits", "Group commits", get(&m.commits));
    counter(
        reg,
        "buffer_records_acked",
        "Per-sink acknowledgements applied",
        get(&m.records_acked),
    );
    counter(
        reg,
        "buffer_records_evicted",
        "Records evicted (recorded as gaps)",
        get(&m.records_evicted),
    );
    counter(reg, "buffer_gaps", "Gaps recorded", get(&m.gaps_recorded));
    counter(
        reg,
        "buffer_write_errors",
        "Failed buffer commits (retried)",
        get(&m.write_errors),
    );
    gauge(
        reg,
        "buffer_records",
        "Records stored",
        get(&m.records_stored) as f64,
    );
    gauge(
        reg,
        "buffer_bytes",
        "Bytes stored (rows and spooled blobs)",
        get(&m.bytes_stored) as f64,
    );
    gauge(
        reg,
        "buffer_last_seq",
        "Last seq issued",
        *s.buffer.head().borrow() as f64,
    );
    gauge(
        reg,
        "buffer_degraded",
        "1 while the buffer is degraded",
        f64::from(u8::from(s.buffer.status().borrow().degraded)),
    );
    labelled(
        reg,
        "ingest_to_durable_seconds",
        "Reading timestamp to commit, quantiles since start",
        [0.5, 0.9, 0.99].map(|q| {
            (
                vec![("quantile".to_string(), q.to_string())],
                m.ingest_to_durable_us.quantile(q) as f64 / 1e6,
            )
        }),
    );
}

/// Per sink: what is owed, its state, what it delivered.
fn sinks(reg: &mut Registry, sinks: &[super::server::SinkReply]) {
    labelled(
        reg,
        "sink_backlog_records",
        "Records still owed to the sink",
        sinks
            .iter()
            .map(|r| (sink_label(&r.name), r.backlog_records as f64)),
    );
    labelled(
        reg,
        "sink_backlog_bytes",
        "Bytes still owed to the sink",
        sinks
            .iter()
            .map(|r| (sink_label(&r.name), r.backlog_bytes as f64)),
    );
    labelled(
        reg,
        "sink_oldest_unsent_age_seconds",
        "Age of the oldest record still owed (0 when none)",
        sinks
            .iter()
            .map(|r| (sink_label(&r.name), r.oldest_unsent_age_s.unwrap_or(0.0))),
    );
    labelled(
        reg,
        "sink_consecutive_failures",
        "Delivery failures since the last success",
        sinks.iter().map(|r| {
            (
                sink_label(&r.name),
                f64::from(r.status.consecutive_failures),
            )
        }),
    );
    let states = [
        LinkState::Starting,
        LinkState::Connected,
        LinkState::BackingOff,
        LinkState::Failing,
        LinkState::Paused,
        LinkState::Stopped,
    ];
    labelled(
        reg,
        "sink_state",
        "1 for the state the sink is in",
        sinks.iter().flat_map(|r| {
            states.iter().map(move |st| {
                let name = serde_json::to_value(st)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                (
                    vec![
                        ("sink".to_string(), r.name.clone()),
                        ("state".to_string(), name),
                    ],
                    f64::from(u8::from(r.status.state == *st)),
                )
            })
        }),
    );
    labelled_counter(
        reg,
        "sink_dead_lettered_records",
        "Records the peer refused for good, set aside as dead letters",
        sinks
            .iter()
            .map(|r| (sink_label(&r.name), r.status.dead_lettered)),
    );
    labelled_counter(
        reg,
        "sink_sent_bytes",
        "Bytes sent for delivered batches",
        sinks
            .iter()
            .map(|r| (sink_label(&r.name), r.status.bytes_sent)),
    );
    labelled_counter(
        reg,
        "sink_delivered_records",
        "Records the peer confirmed",
        sinks
            .iter()
            .map(|r| (sink_label(&r.name), r.status.delivered_records)),
    );
    labelled_counter(
        reg,
        "sink_gaps_delivered",
        "Gap markers the peer confirmed",
        sinks
            .iter()
            .map(|r| (sink_label(&r.name), r.status.gaps_delivered)),
    );
}

/// Per workflow: records in and out, errors, dead letters.
fn workflows(reg: &mut Registry, flows: &[skygate_functions::WorkflowStatus]) {
    let flow_label =
        |w: &skygate_functions::WorkflowStatus| vec![("workflow".into(), w.name.clone())];
    for (name, help, pick) in [
        (
            "workflow_input_records",
            "Records a workflow took",
            (|w: &skygate_functions::WorkflowStatus| w.records_in) as fn(&_) -> u64,
        ),
        ("workflow_output_records", "Records a workflow made", |w| {
            w.records_out
        }),
        (
            "workflow_errors",
            "Values a workflow step could not use (passed on unchanged)",
            |w| w.errors,
        ),
        (
            "workflow_dead_lettered_records",
            "Records a failed step (a WASM call) sent to dead letters",
            |w| w.dead_lettered,
        ),
    ] {
        labelled_counter(
            reg,
            name,
            help,
            flows.iter().map(|w| (flow_label(w), pick(w))),
        );
    }
}

/// Per driver: readings, errors, up.
fn drivers(reg: &mut Registry, s: &ControlState) {
    let drivers: Vec<_> = s
        .drivers
        .list()
        .into_iter()
        .map(|d| {
            let live = s.ingest.live(&d.name).unwrap_or_default();
            (
                vec![("driver".to_string(), d.name)],
                d.health.snapshot(),
                live,
            )
        })
        .collect();
    labelled_counter(
        reg,
        "driver_readings",
        "Readings the driver produced",
        drivers
            .iter()
            .map(|(l, _, live)| (l.clone(), live.readings)),
    );
    labelled_counter(
        reg,
        "driver_errors",
        "Errors the driver reported (timeouts, exceptions, CRC, decode)",
        drivers.iter().map(|(l, h, _)| (l.clone(), h.errors)),
    );
    labelled(
        reg,
        "driver_up",
        "1 while the driver's last exchange with its instrument worked",
        drivers.iter().map(|(l, h, _)| {
            (
                l.clone(),
                f64::from(u8::from(h.state == DriverState::Running)),
            )
        }),
    );
}

/// The process: memory, CPU, uptime, and the time quality of the gateway's clock.
fn process(reg: &mut Registry, s: &ControlState) {
    let (rss, cpu) = skygate_util::process_usage();
    gauge(
        reg,
        "process_resident_memory_bytes",
        "Resident set size",
        rss as f64,
    );
    let cpu_total: Counter<f64, AtomicU64> = Counter::default();
    cpu_total.inc_by(cpu);
    reg.register(
        "process_cpu_seconds",
        "User and system CPU time used",
        cpu_total,
    );
    gauge(
        reg,
        "uptime_seconds",
        "Seconds since the agent started",
        s.started.elapsed().as_secs_f64(),
    );
    labelled(
        reg,
        "time_quality",
        "1 for the gateway's current time quality",
        [s.clock.now().1.as_str()].map(|q| (vec![("quality".to_string(), q.to_string())], 1.0)),
    );
}
