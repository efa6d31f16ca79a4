//! Tells systemd the agent is alive — only while it is. The watchdog is pinged after the
//! buffer writer answered a sync (so a wedged writer or a stuck commit lets systemd restart
//! the agent), and the status line shows what the agent is doing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::IngestCounters;
use skygate_buffer::{Buffer, BufferMetrics};

pub(super) fn spawn(
    buffer: Buffer,
    ingest: Arc<IngestCounters>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let interval = skygate_bsp::systemd::watchdog_interval()
        .map(|d| d / 2)
        .unwrap_or(Duration::from_secs(10));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        let mut last_readings = 0u64;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let alive = tokio::time::timeout(interval, buffer.sync())
                .await
                .is_ok_and(|r| r.is_ok());
            if alive {
                skygate_bsp::systemd::notify_watchdog();
            } else {
                tracing::error!(
                    "buffer writer did not answer within {interval:?}; withholding the watchdog ping"
                );
            }
            let readings = ingest.readings.load(Ordering::Relaxed);
            let rate = (readings - last_readings) as f64 / interval.as_secs_f64();
            last_readings = readings;
            let m = buffer.metrics();
            let status = buffer.status().borrow().clone();
            let text = format!(
                "{}; {rate:.0} readings/s; {} records buffered",
                if status.degraded {
                    format!("DEGRADED: {}", status.reasons.join("; "))
                } else {
                    "ok".into()
                },
                BufferMetrics::get(&m.records_stored),
            );
            skygate_bsp::systemd::notify_status(&text);
        }
    })
}
