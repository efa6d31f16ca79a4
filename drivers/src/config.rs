//! What every driver's configuration shares: the error that names the offending field,
//! and durations written the human way (`"500ms"`, `"10s"`).
//!
//! Each driver kind has a raw, `deny_unknown_fields` struct deserialised from its TOML
//! table and a pure `validate()` returning a [`FieldError`] whose `path` is dotted below
//! the driver's table; the agent turns the path into a file, line and column.

/// A driver setting that is not valid, naming the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// Dotted path below the driver's table, e.g. `channels.temperature.rate_hz`.
    pub path: String,
    pub message: String,
}

pub(crate) fn field_err(path: &str, message: &str) -> FieldError {
    FieldError {
        path: path.into(),
        message: message.into(),
    }
}

/// The first of `fields` that is set though it does not apply here, as an error: a
/// setting meant for another mode is refused by name, never silently ignored.
pub(crate) fn refuse(fields: &[(&str, bool)], why: &str) -> Result<(), FieldError> {
    match fields.iter().find(|(_, set)| *set) {
        Some((f, _)) => Err(field_err(f, why)),
        None => Ok(()),
    }
}

/// `Option<Duration>` from a humantime string.
pub(crate) mod duration_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| {
            humantime::parse_duration(&s).map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {s:?}: {e} (write e.g. \"500ms\", \"10s\", \"5m\")"
                ))
            })
        })
        .transpose()
    }
}
