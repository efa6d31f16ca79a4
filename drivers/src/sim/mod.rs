//! Simulated instruments: configurable signals at configurable rates, per channel.
//!
//! The demo and the benchmarks use it. Each channel emits `rate_hz` readings per second on
//! average, whatever the tick: on every tick the driver emits as many readings as are due
//! since start. When the agent pushes back (the channel is full) the driver falls behind;
//! it then drops the backlog beyond [`MAX_CATCH_UP`] of readings instead of bursting, and
//! counts what it skipped, like a real instrument that was not read in time.

mod config;
mod signal;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub use config::{SignalKind, SimChannelConfig, SimChannelRaw, SimConfig, SimConfigRaw};
use signal::Signal;

use crate::driver::{BoxFuture, Driver, DriverContext, DriverError};
use crate::reading::Reading;

/// At most this much time's worth of readings is emitted to catch up after a stall.
pub const MAX_CATCH_UP: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct SimDriver {
    name: Arc<str>,
    tick: Duration,
    channels: Vec<SimChannel>,
}

#[derive(Debug)]
struct SimChannel {
    name: Arc<str>,
    unit: Option<Arc<str>>,
    rate_hz: f64,
    signal: Signal,
    emitted: u64,
    skipped: u64,
}

impl SimDriver {
    /// Builds a driver from validated configuration.
    pub fn new(name: &str, config: &SimConfig) -> Self {
        let mut channels: Vec<SimChannel> = config
            .channels
            .iter()
            .map(|(ch, c)| SimChannel {
                name: Arc::from(ch.as_str()),
                unit: c.unit.as_deref().map(Arc::from),
                rate_hz: c.rate_hz,
                signal: Signal::new(c),
                emitted: 0,
                skipped: 0,
            })
            .collect();
        channels.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            name: Arc::from(name),
            tick: config.tick,
            channels,
        }
    }
}

impl Driver for SimDriver {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(mut self: Box<Self>, ctx: DriverContext) -> BoxFuture<Result<(), DriverError>> {
        Box::pin(async move {
            let start = Instant::now();
            // A simulator always answers.
            ctx.health.ok();
            let mut ticker = tokio::time::interval(self.tick);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = ctx.cancel.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                let elapsed = start.elapsed().as_secs_f64();
                let (ts, tq) = ctx.clock.now();
                for ch in &mut self.channels {
                    let due_total = (elapsed * ch.rate_hz) as u64;
                    let mut due = due_total.saturating_sub(ch.emitted + ch.skipped);
                    let cap = (ch.rate_hz * MAX_CATCH_UP.as_secs_f64()).ceil().max(1.0) as u64;
                    if due > cap {
                        ch.skipped += due - cap;
                        ctx.health.count("skipped", due - cap);
                        tracing::debug!(driver = %self.name, channel = %ch.name, skipped = due - cap, "sim fell behind");
                        due = cap;
                    }
                    for _ in 0..due {
                        let n = ch.emitted;
                        ch.emitted += 1;
                        let reading = Reading::good(
                            self.name.clone(),
                            ch.name.clone(),
                            (ts, tq),
                            ch.signal.sample(n, n as f64 / ch.rate_hz),
                            ch.unit.clone(),
                        );
                        tokio::select! {
                            biased;
                            _ = ctx.cancel.cancelled() => return Ok(()),
                            sent = ctx.out.send(reading) => if sent.is_err() { return Ok(()) },
                        }
                    }
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::driver::ReadingSender;
    use crate::reading::Value;
    use tokio_util::sync::CancellationToken;

    fn config(toml_text: &str) -> SimConfig {
        let raw: SimConfigRaw = toml::from_str(toml_text).expect("parse");
        raw.validate().expect("valid")
    }

    #[tokio::test(start_paused = true)]
    async fn each_channel_emits_at_its_configured_rate() {
        let cfg = config(
            r#"
            tick = "10ms"
            [channels.fast]
            signal = "counter"
            rate_hz = 100
            [channels.slow]
            signal = "sine"
            rate_hz = 2
            amplitude = 1.0
            period = "1s"
            "#,
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel(10_000);
        let cancel = CancellationToken::new();
        let ctx = DriverContext {
            out: ReadingSender::new(tx),
            cancel: cancel.clone(),
            clock: Arc::new(SystemClock::default()),
            health: Default::default(),
        };
        let task = tokio::spawn(Box::new(SimDriver::new("wx", &cfg)).run(ctx));
        tokio::time::sleep(Duration::from_millis(2_005)).await;
        cancel.cancel();
        task.await.expect("join").expect("driver ok");
        let mut fast = Vec::new();
        let mut slow = 0;
        while let Ok(e) = rx.try_recv() {
            let r = e.reading;
            assert_eq!(&*r.source, "wx");
            match &*r.channel {
                "fast" => fast.push(r.value),
                "slow" => slow += 1,
                other => panic!("unexpected channel {other}"),
            }
        }
        assert!(
            (199..=201).contains(&fast.len()),
            "fast emitted {}",
            fast.len()
        );
        assert!((3..=5).contains(&slow), "slow emitted {slow}");
        // A counter counts from its start by its step, without skipping.
        for (i, v) in fast.iter().enumerate() {
            assert_eq!(*v, Value::Integer(i as i64));
        }
    }
}
