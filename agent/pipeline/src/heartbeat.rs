//! The `gateway.health` heartbeat: every interval, the gateway's own state as readings
//! (CPU, memory, disk free, temperatures, backlog, link and driver states, time quality), routed
//! like any stream so the fleet sees its gateways through Kafka and buckets as well.
//!
//! It is a driver like the others (source `skygate`): it reads the components' handles,
//! never their state directly, and goes through the same bounded channel and buffer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use skygate_bsp::Board;
use skygate_drivers::{BoxFuture, Driver, DriverContext, DriverError, Quality, Reading, Value};

use super::DriverRegistry;
use skygate_buffer::{Buffer, BufferMetrics};
use skygate_model::HEALTH_SOURCE;
use skygate_sinks::delivery::SinkHandle;
use skygate_util::process_usage;

#[derive(Debug)]
pub struct Heartbeat {
    pub interval: Duration,
    pub data_dir: PathBuf,
    pub buffer: Buffer,
    pub sinks: Vec<(String, SinkHandle)>,
    pub drivers: DriverRegistry,
    pub board: Arc<dyn Board>,
}

fn mem_available() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| {
            let v = l.strip_prefix("MemAvailable:")?;
            Some(v.split_whitespace().next()?.parse::<u64>().ok()? * 1024)
        })
}

impl Heartbeat {
    /// One round of readings. Blocking (sysfs sensors can be slow on some boards): run it
    /// off the async runtime. `rss` comes from the same /proc read as the CPU figure.
    fn readings(
        &self,
        cpu_percent: Option<f64>,
        rss: u64,
        clock: &dyn skygate_drivers::Clock,
    ) -> Vec<Reading> {
        let (ts, tq) = clock.now();
        let source: Arc<str> = Arc::from(HEALTH_SOURCE);
        let r = |channel: &str, value: Value, unit: Option<&str>| {
            Reading::good(
                source.clone(),
                Arc::from(channel),
                (ts, tq),
                value,
                unit.map(Arc::from),
            )
        };
        let m = self.buffer.metrics();
        let mut out = vec![
            r("rss_bytes", Value::Integer(rss as i64), Some("B")),
            r(
                "buffer_records",
                Value::Integer(BufferMetrics::get(&m.records_stored) as i64),
                None,
            ),
            r(
                "buffer_bytes",
                Value::Integer(BufferMetrics::get(&m.bytes_stored) as i64),
                Some("B"),
            ),
            r(
                "buffer_degraded",
                Value::Bool(self.buffer.status().borrow().degraded),
                None,
            ),
            r("time_quality", Value::Text(tq.as_str().into()), None),
        ];
        if let Some(p) = cpu_percent {
            out.push(r("cpu_percent", Value::Number(p), Some("%")));
        }
        if let Some(avail) = mem_available() {
            out.push(r(
                "mem_available_bytes",
                Value::Integer(avail as i64),
                Some("B"),
            ));
        }
        match self.board.disk_space(&self.data_dir) {
            Ok(d) => out.push(r(
                "disk_free_bytes",
                Value::Integer(d.available_bytes as i64),
                Some("B"),
            )),
            Err(e) => out.push(Reading {
                quality: Quality::Bad(e.to_string()),
                ..r("disk_free_bytes", Value::Integer(0), Some("B"))
            }),
        }
        for t in self.board.temperatures() {
            out.push(r(
                &format!("temperature.{}", t.sensor),
                Value::Number(t.celsius),
                Some("degC"),
            ));
        }
        for (name, h) in &self.sinks {
            let state = serde_json::to_value(&h.status.borrow().state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            out.push(r(&format!("link.{name}"), Value::Text(state), None));
            out.push(r(
                &format!("backlog.{name}"),
                Value::Integer(self.buffer.backlog(h.id).0 as i64),
                None,
            ));
        }
        for d in self.drivers.list() {
            if d.name != HEALTH_SOURCE {
                let state = d.health.snapshot().state.as_str();
                out.push(r(
                    &format!("driver.{}", d.name),
                    Value::Text(state.into()),
                    None,
                ));
            }
        }
        out
    }
}

impl Driver for Heartbeat {
    fn name(&self) -> &str {
        HEALTH_SOURCE
    }

    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<Result<(), DriverError>> {
        let this: Arc<Self> = Arc::from(self);
        Box::pin(async move {
            let mut tick = tokio::time::interval(this.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut last_cpu, mut last_at) = (process_usage().1, Instant::now());
            loop {
                tokio::select! {
                    biased;
                    _ = ctx.cancel.cancelled() => return Ok(()),
                    _ = tick.tick() => {}
                }
                let (hb, clock, prev) = (this.clone(), ctx.clock.clone(), (last_cpu, last_at));
                let round = tokio::task::spawn_blocking(move || {
                    let (rss, cpu) = process_usage();
                    let at = Instant::now();
                    // The first round comes right at start: too short a window to mean
                    // anything (start-up work would read as hundreds of percent).
                    let wall = at.duration_since(prev.1).as_secs_f64();
                    let percent = (wall >= 1.0).then(|| ((cpu - prev.0) / wall * 100.0).max(0.0));
                    (hb.readings(percent, rss, &*clock), cpu, at)
                })
                .await;
                let Ok((readings, cpu, at)) = round else {
                    continue;
                };
                (last_cpu, last_at) = (cpu, at);
                ctx.health.ok();
                for reading in readings {
                    if ctx.out.send(reading).await.is_err() {
                        return Ok(());
                    }
                }
            }
        })
    }
}
