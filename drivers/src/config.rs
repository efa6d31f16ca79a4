//! What every driver's configuration shares: the error that names the offending field,
//! and durations written the human way (`"500ms"`, `"10s"`).
//!
//! Each driver kind has a raw, `deny_unknown_fields` struct deserialised from its TOML
//! table and a pure `validate()` returning a [`FieldError`] whose `path` is dotted below
//! the driver's table; the agent turns the path into a file, line and column.

use serde::{Deserialize, Deserializer};

/// A driver setting that is not valid, naming the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// Dotted path below the driver's table, e.g. `channels.temperature.rate_hz`.
    pub path: String,
    pub message: String,
}

pub fn field_err(path: &str, message: &str) -> FieldError {
    FieldError {
        path: path.into(),
        message: message.into(),
    }
}

/// The first of `fields` that is set though it does not apply here, as an error: a
/// setting meant for another mode is refused by name, never silently ignored.
pub fn refuse(fields: &[(&str, bool)], why: &str) -> Result<(), FieldError> {
    match fields.iter().find(|(_, set)| *set) {
        Some((f, _)) => Err(field_err(f, why)),
        None => Ok(()),
    }
}

/// Two settings that only make sense together (a certificate and its key): both or
/// neither; one alone is an error naming the missing one.
pub fn pair<A, B>(
    a: Option<A>,
    b: Option<B>,
    (name_a, name_b): (&str, &str),
) -> Result<Option<(A, B)>, FieldError> {
    match (a, b) {
        (Some(a), Some(b)) => Ok(Some((a, b))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(field_err(name_b, &format!("{name_a} needs {name_b}"))),
        (None, Some(_)) => Err(field_err(name_a, &format!("{name_b} needs {name_a}"))),
    }
}

/// `Option<Duration>` from a humantime string.
pub mod duration_opt {
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

/// A size in bytes: an integer, or a string such as `"64MiB"`, `"1.5GB"`, `"512KiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<u64, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("invalid size {s:?} (write e.g. \"64MiB\", \"1GB\")"))?;
        let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "m" | "mb" => 1e6,
            "g" | "gb" => 1e9,
            "t" | "tb" => 1e12,
            "kib" => 1024.0,
            "mib" => 1024.0 * 1024.0,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            "tib" => 1024.0f64.powi(4),
            other => {
                return Err(format!(
                    "invalid size unit {other:?} in {s:?} (use B, KB, MB, GB, KiB, MiB, GiB)"
                ));
            }
        };
        let v = n * mult;
        if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
            return Err(format!("size {s:?} is out of range"));
        }
        Ok(v as u64)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Str(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a size: an integer number of bytes or a string such as \"64MiB\"",
            )
        })? {
            Raw::Int(i) => u64::try_from(i)
                .map(ByteSize)
                .map_err(|_| serde::de::Error::custom("a size cannot be negative")),
            Raw::Str(s) => ByteSize::parse(&s)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}
