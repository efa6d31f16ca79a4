//! Signal generators. Deterministic given their config and sample index, except the random
//! walk and blob content, which use a per-channel RNG.

use bytes::Bytes;
use rand::{Rng, SeedableRng, rngs::SmallRng};

use super::config::{SignalKind, SimChannelConfig};
use crate::reading::{Blob, Value};

#[derive(Debug)]
pub(super) struct Signal {
    cfg: SimChannelConfig,
    walk: f64,
    rng: SmallRng,
}

impl Signal {
    pub(super) fn new(cfg: &SimChannelConfig) -> Self {
        Self {
            walk: cfg.start.clamp(cfg.min, cfg.max),
            cfg: cfg.clone(),
            rng: SmallRng::from_os_rng(),
        }
    }

    /// The `n`th sample, taken `t` seconds after start.
    pub(super) fn sample(&mut self, n: u64, t: f64) -> Value {
        let c = &self.cfg;
        match c.signal {
            SignalKind::Sine => Value::Number(
                c.offset + c.amplitude * (std::f64::consts::TAU * t / c.period.as_secs_f64()).sin(),
            ),
            SignalKind::RandomWalk => {
                let step = if c.step > 0.0 {
                    self.rng.random_range(-c.step..=c.step)
                } else {
                    0.0
                };
                self.walk = (self.walk + step).clamp(c.min, c.max);
                Value::Number(self.walk)
            }
            SignalKind::Step => {
                let i = (t / c.every.as_secs_f64()) as usize % c.levels.len();
                Value::Number(c.levels[i])
            }
            SignalKind::Counter => Value::Integer(
                (c.start as i64).wrapping_add((c.step as i64).wrapping_mul(n as i64)),
            ),
            SignalKind::Text => Value::Text(c.values[n as usize % c.values.len()].clone()),
            SignalKind::Blob => {
                let mut data = vec![0u8; c.size];
                self.rng.fill(&mut data[..]);
                Value::Blob(Blob::new(c.content_type.clone(), None, Bytes::from(data)))
            }
        }
    }
}
