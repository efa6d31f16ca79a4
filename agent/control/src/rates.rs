//! Rates for people: readings ingested per second and records each sink delivers per
//! second, over the last [`WINDOW`] seconds. Sampled once a second from the components'
//! counters by one small task the control API owns; nothing on the data path changes.
//!
//! Invariant: at most `WINDOW + 1` samples are kept per counter.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

use super::view::Ingest;
use skygate_sinks::delivery::SinkHandle;

/// Seconds the rates average over.
pub const WINDOW: usize = 10;

#[derive(Debug, Default)]
struct Series(VecDeque<(Instant, u64)>);

impl Series {
    fn push(&mut self, at: Instant, v: u64) {
        if self.0.len() > WINDOW {
            self.0.pop_front();
        }
        self.0.push_back((at, v));
    }

    fn rate(&self) -> Option<f64> {
        let (t0, v0) = self.0.front()?;
        let (t1, v1) = self.0.back()?;
        let dt = t1.duration_since(*t0).as_secs_f64();
        (dt > 0.0).then(|| v1.saturating_sub(*v0) as f64 / dt)
    }
}

#[derive(Debug, Default)]
struct Inner {
    ingest: Series,
    sinks: BTreeMap<String, Series>,
}

/// Shared read side of the sampler.
#[derive(Debug, Clone, Default)]
pub struct Rates(Arc<Mutex<Inner>>);

impl Rates {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Readings accepted per second; `None` until two samples exist.
    pub fn ingest(&self) -> Option<f64> {
        self.lock().ingest.rate()
    }

    /// Records the sink's peer confirmed per second.
    pub fn sink(&self, name: &str) -> Option<f64> {
        self.lock().sinks.get(name)?.rate()
    }

    /// Samples once a second until `stop`.
    pub fn spawn(
        &self,
        ingest: Arc<dyn Ingest>,
        sinks: BTreeMap<String, SinkHandle>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let rates = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = Instant::now();
                let readings = ingest.counts().readings;
                let mut inner = rates.lock();
                inner.ingest.push(now, readings);
                for (name, h) in &sinks {
                    let delivered = h.status.borrow().delivered_records;
                    inner
                        .sinks
                        .entry(name.clone())
                        .or_default()
                        .push(now, delivered);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_over_the_window_and_needs_two_samples() {
        let mut s = Series::default();
        let t = Instant::now();
        assert_eq!(s.rate(), None);
        s.push(t, 100);
        assert_eq!(s.rate(), None);
        for i in 1..=30u64 {
            s.push(t + Duration::from_secs(i), 100 + 50 * i);
        }
        assert_eq!(s.0.len(), WINDOW + 1);
        assert_eq!(s.rate(), Some(50.0));
    }
}
