//! Configuration of the simulator: raw (as written) and validated.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{FieldError, duration_opt, field_err as err};

/// The signal a simulated channel produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    /// `offset + amplitude * sin(2π t / period)`; numbers.
    Sine,
    /// Starts at `start`, moves by a uniform step in `[-step, step]`, kept in `[min, max]`.
    RandomWalk,
    /// Cycles through `levels`, holding each for `every`.
    Step,
    /// `start`, `start + step`, ...; integers.
    Counter,
    /// Cycles through `values`; text.
    Text,
    /// Random bytes of `size`, tagged `content_type`; a small blob (e.g. a thumbnail).
    Blob,
}

/// A channel as written in the config. Which fields apply depends on `signal`; a field that
/// does not apply is an error, so a typo'd config never silently does something else.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimChannelRaw {
    pub signal: SignalKind,
    pub rate_hz: f64,
    pub unit: Option<String>,
    pub amplitude: Option<f64>,
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    #[schemars(with = "Option<crate::config::DurationText>")]
    pub period: Option<Duration>,
    pub offset: Option<f64>,
    pub start: Option<f64>,
    pub step: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub levels: Option<Vec<f64>>,
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    #[schemars(with = "Option<crate::config::DurationText>")]
    pub every: Option<Duration>,
    pub values: Option<Vec<String>>,
    pub size: Option<usize>,
    pub content_type: Option<String>,
}

/// The simulator section of a driver, as written.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimConfigRaw {
    /// How often the driver wakes to emit what is due. Default 10 ms.
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    #[schemars(with = "Option<crate::config::DurationText>")]
    pub tick: Option<Duration>,
    pub channels: BTreeMap<String, SimChannelRaw>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimChannelConfig {
    pub signal: SignalKind,
    pub rate_hz: f64,
    pub unit: Option<String>,
    pub amplitude: f64,
    pub period: Duration,
    pub offset: f64,
    pub start: f64,
    pub step: f64,
    pub min: f64,
    pub max: f64,
    pub levels: Vec<f64>,
    pub every: Duration,
    pub values: Vec<String>,
    pub size: usize,
    pub content_type: String,
}

/// Validated simulator configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub tick: Duration,
    pub channels: BTreeMap<String, SimChannelConfig>,
}

/// Upper bound per channel: beyond this the sim is a benchmark of itself.
const MAX_RATE_HZ: f64 = 10_000_000.0;
/// Blobs above this belong to a camera or file driver, not a simulator.
const MAX_SIM_BLOB: usize = 16 * 1024 * 1024;

impl SimConfigRaw {
    /// Pure validation: raw settings in, settings the driver can trust out.
    pub fn validate(self) -> Result<SimConfig, FieldError> {
        let tick = self.tick.unwrap_or(Duration::from_millis(10));
        if tick.is_zero() || tick > Duration::from_secs(60) {
            return Err(err("tick", "must be between 1ms and 60s"));
        }
        if self.channels.is_empty() {
            return Err(err("channels", "at least one channel is needed"));
        }
        let mut channels = BTreeMap::new();
        for (name, c) in self.channels {
            let at = |field: &str| format!("channels.{name}.{field}");
            if !(c.rate_hz > 0.0 && c.rate_hz <= MAX_RATE_HZ) {
                return Err(FieldError {
                    path: at("rate_hz"),
                    message: format!("must be > 0 and <= {MAX_RATE_HZ}, got {}", c.rate_hz),
                });
            }
            let allowed: &[&str] = match c.signal {
                SignalKind::Sine => &["amplitude", "period", "offset"],
                SignalKind::RandomWalk => &["start", "step", "min", "max"],
                SignalKind::Step => &["levels", "every"],
                SignalKind::Counter => &["start", "step"],
                SignalKind::Text => &["values"],
                SignalKind::Blob => &["size", "content_type"],
            };
            for (field, present) in [
                ("amplitude", c.amplitude.is_some()),
                ("period", c.period.is_some()),
                ("offset", c.offset.is_some()),
                ("start", c.start.is_some()),
                ("step", c.step.is_some()),
                ("min", c.min.is_some()),
                ("max", c.max.is_some()),
                ("levels", c.levels.is_some()),
                ("every", c.every.is_some()),
                ("values", c.values.is_some()),
                ("size", c.size.is_some()),
                ("content_type", c.content_type.is_some()),
            ] {
                if present && !allowed.contains(&field) {
                    return Err(FieldError {
                        path: at(field),
                        message: format!(
                            "does not apply to signal {:?}; it takes: {}",
                            c.signal,
                            allowed.join(", ")
                        ),
                    });
                }
            }
            let period = c.period.unwrap_or(Duration::from_secs(60));
            if period.is_zero() {
                return Err(FieldError {
                    path: at("period"),
                    message: "must be greater than zero".into(),
                });
            }
            let (min, max) = (c.min.unwrap_or(f64::MIN), c.max.unwrap_or(f64::MAX));
            if min > max {
                return Err(FieldError {
                    path: at("min"),
                    message: format!("min {min} is above max {max}"),
                });
            }
            let levels = c.levels.unwrap_or_else(|| vec![0.0, 1.0]);
            if levels.is_empty() {
                return Err(FieldError {
                    path: at("levels"),
                    message: "needs at least one level".into(),
                });
            }
            let values = c.values.unwrap_or_else(|| vec!["ok".into()]);
            if values.is_empty() {
                return Err(FieldError {
                    path: at("values"),
                    message: "needs at least one value".into(),
                });
            }
            let size = c.size.unwrap_or(1024);
            if size == 0 || size > MAX_SIM_BLOB {
                return Err(FieldError {
                    path: at("size"),
                    message: format!("must be between 1 and {MAX_SIM_BLOB} bytes"),
                });
            }
            let every = c.every.unwrap_or(Duration::from_secs(10));
            if every.is_zero() {
                return Err(FieldError {
                    path: at("every"),
                    message: "must be greater than zero".into(),
                });
            }
            channels.insert(
                name,
                SimChannelConfig {
                    signal: c.signal,
                    rate_hz: c.rate_hz,
                    unit: c.unit,
                    amplitude: c.amplitude.unwrap_or(1.0),
                    period,
                    offset: c.offset.unwrap_or(0.0),
                    start: c.start.unwrap_or(0.0),
                    step: c.step.unwrap_or(1.0),
                    min,
                    max,
                    levels,
                    every,
                    values,
                    size,
                    content_type: c
                        .content_type
                        .unwrap_or_else(|| "application/octet-stream".into()),
                },
            );
        }
        Ok(SimConfig { tick, channels })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<SimConfig, FieldError> {
        toml::from_str::<SimConfigRaw>(s).expect("parse").validate()
    }

    #[test]
    fn a_field_that_does_not_apply_to_the_signal_is_rejected_by_name() {
        let e = parse("[channels.t]\nsignal = \"counter\"\nrate_hz = 1\nperiod = \"1s\"\n")
            .expect_err("period does not apply to a counter");
        assert_eq!(e.path, "channels.t.period");
    }

    #[test]
    fn a_rate_of_zero_is_rejected() {
        let e = parse("[channels.t]\nsignal = \"sine\"\nrate_hz = 0\n").expect_err("zero rate");
        assert_eq!(e.path, "channels.t.rate_hz");
    }

    #[test]
    fn an_unknown_key_fails_at_parse_time() {
        let e = toml::from_str::<SimConfigRaw>("[channels.t]\nsignal = \"sine\"\nrate = 1\n")
            .expect_err("unknown key");
        assert!(e.to_string().contains("unknown field `rate`"), "{e}");
    }
}
