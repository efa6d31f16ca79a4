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

impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size: a number of bytes, or a string such as \"64MiB\", \"1.5GB\", \"512KiB\"",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": BYTE_SIZE_PATTERN }
            ]
        })
    }
}

/// What [`ByteSize::parse`] accepts, for the config's JSON Schema.
const BYTE_SIZE_PATTERN: &str = r"^\s*[0-9.]+\s*([kKmMgGtT]([iI][bB]|[bB])?|[bB])?\s*$";

/// A duration as written in the config (`"500ms"`, `"10s"`, `"1h 30m"`), for the JSON
/// Schema of fields read with [`duration_opt`].
#[derive(Debug)]
pub struct DurationText;

impl schemars::JsonSchema for DurationText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration: a number and a unit (ns, us, ms, s, m, h, d), e.g. \"500ms\", \"10s\", \"1h 30m\"",
            "type": "string",
            "pattern": r"^\s*([0-9]+(\.[0-9]+)?\s*[a-zA-Zµ]+\s*)+$",
            "examples": ["500ms", "10s", "5m"]
        })
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

/// A network endpoint as written: `host`, `host:port`, `[v6]` or `[v6]:port` (a bare
/// IPv6 address is all host). Returns the host and the port if one is written; refuses
/// what no connection could use (an empty host, a scheme, a path, a port that is not
/// 1-65535) with the reason.
pub fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    if s.contains("://") {
        return Err("no scheme here (write host or host:port)".into());
    }
    let (host, port) = if let Some(inner) = s.strip_prefix('[') {
        let (h, after) = inner.split_once(']').ok_or("unclosed '['")?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':').ok_or("junk after ']'")?)),
        }
    } else {
        match s.split_once(':') {
            // Two or more colons without brackets: an IPv6 address, no port.
            Some((_, rest)) if rest.contains(':') => (s, None),
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    if let Some(c) = host
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '/' | '@' | '?' | '#' | '[' | ']'))
    {
        return Err(format!("{c:?} cannot be part of a host name"));
    }
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("port {p:?} is not a TCP port (1-65535)"))
        })
        .transpose()?;
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn endpoints_split_into_host_and_port() {
        let ok = |s| split_host_port(s).expect(s);
        assert_eq!(ok("10.0.0.5"), ("10.0.0.5", None));
        assert_eq!(ok("10.0.0.5:1502"), ("10.0.0.5", Some(1502)));
        assert_eq!(ok("mast.site"), ("mast.site", None));
        assert_eq!(ok("fe80::1"), ("fe80::1", None));
        assert_eq!(ok("[fe80::1]"), ("fe80::1", None));
        assert_eq!(ok("[::1]:502"), ("::1", Some(502)));
        for (bad, why) in [
            ("", "no host"),
            (":502", "no host"),
            ("h:0", "not a TCP port"),
            ("h:70000", "not a TCP port"),
            ("h:", "not a TCP port"),
            ("h:port", "not a TCP port"),
            ("tcp://h:502", "no scheme"),
            ("h/x", "cannot be part"),
            ("my host", "cannot be part"),
            ("[::1", "unclosed"),
            ("[::1]502", "junk"),
        ] {
            let e = split_host_port(bad).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
