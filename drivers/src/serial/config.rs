//! Configuration of a serial-line instrument.
//!
//! ```toml
//! [drivers.gps]
//! kind = "serial"
//! serial_port = "/dev/ttyS1"
//! baud = 9600                  # parity (default "none"), data_bits, stop_bits
//! protocol = "nmea"           # or "lines" with regex, or delimiter + fields:
//! # regex = '^(?P<temperature>-?\d+\.\d),(?P<humidity>\d+)'
//! # [drivers.gps.channels.temperature] unit = "degC", scale, offset, type
//! silence = "10s"              # no bytes for this long: the driver says failing
//! counters_every = "60s"       # framing/checksum counters as readings this often
//! # simulate = true            # no port: a simulated GPS (nmea) or SQM-LE (lines)
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::lines::{ChannelRaw, LineParser};
use super::port::{LineRaw, Parity, SerialSettings};
use crate::config::{FieldError, duration_opt, field_err, refuse};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// NMEA 0183 (GPS, timing receivers, some weather stations).
    Nmea,
    /// One line of values at a time, found by `regex` or `delimiter` + `fields`.
    Lines,
    /// The byte stream as it comes, stored as blobs for later forensics.
    Raw,
}

/// Raw capture: how big a blob may grow, and how long its first byte may wait.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureSettings {
    pub chunk_bytes: usize,
    pub chunk_age: Duration,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SerialConfigRaw {
    /// A simulated instrument instead of a port: a GPS for `nmea`, an SQM-LE for `lines`.
    pub simulate: Option<bool>,
    pub serial_port: Option<String>,
    pub baud: Option<u32>,
    pub parity: Option<Parity>,
    pub data_bits: Option<u8>,
    pub stop_bits: Option<u8>,
    pub protocol: Protocol,
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    #[schemars(with = "Option<crate::config::DurationText>")]
    pub silence: Option<Duration>,
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    #[schemars(with = "Option<crate::config::DurationText>")]
    pub counters_every: Option<Duration>,
    /// `protocol = "lines"`: a regular expression whose named groups are channels...
    pub regex: Option<String>,
    /// ... or a delimiter and the name of each field (`""` skips one).
    pub delimiter: Option<String>,
    pub fields: Option<Vec<String>>,
    /// Per channel: `type`, `unit`, `scale`, `offset`.
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelRaw>,
    /// `protocol = "raw"`: bytes per blob (default 65536) and the longest a blob waits
    /// after its first byte (default 10s).
    pub chunk_bytes: Option<usize>,
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    #[schemars(with = "Option<crate::config::DurationText>")]
    pub chunk_age: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SerialConfig {
    pub line: SerialSettings,
    pub protocol: Protocol,
    /// The line parser (`protocol = "lines"` only).
    pub lines: Option<LineParser>,
    /// Raw capture (`protocol = "raw"` only).
    pub capture: Option<CaptureSettings>,
    pub silence: Duration,
    pub counters_every: Duration,
    /// Read a simulated instrument (see `serial::sim`) instead of `line`.
    pub simulate: bool,
}

impl SerialConfigRaw {
    pub fn validate(self) -> Result<SerialConfig, FieldError> {
        let simulate = self.simulate.unwrap_or(false);
        if simulate {
            refuse(
                &[("serial_port", self.serial_port.is_some())],
                "a simulated instrument has no port",
            )?;
            if self.protocol == Protocol::Raw {
                return Err(field_err(
                    "simulate",
                    "simulates an NMEA GPS (protocol = \"nmea\") or an SQM-LE meter (\"lines\")",
                ));
            }
        }
        let line = LineRaw {
            serial_port: if simulate {
                Some("(simulated)".into())
            } else {
                self.serial_port
            },
            baud: self.baud,
            parity: self.parity,
            data_bits: self.data_bits,
            stop_bits: self.stop_bits,
        }
        .validate(9600, Parity::None)?;
        let silence = self.silence.unwrap_or(Duration::from_secs(10));
        if silence < Duration::from_millis(100) || silence > Duration::from_secs(3600) {
            return Err(field_err("silence", "must be between 100ms and 1h"));
        }
        let counters_every = self.counters_every.unwrap_or(Duration::from_secs(60));
        if counters_every < Duration::from_millis(100) {
            return Err(field_err("counters_every", "must be at least 100ms"));
        }
        let line_fields = [
            ("regex", self.regex.is_some()),
            ("delimiter", self.delimiter.is_some()),
            ("fields", self.fields.is_some()),
            ("channels", !self.channels.is_empty()),
        ];
        let capture_fields = [
            ("chunk_bytes", self.chunk_bytes.is_some()),
            ("chunk_age", self.chunk_age.is_some()),
        ];
        if self.protocol != Protocol::Lines {
            refuse(&line_fields, "applies to protocol = \"lines\" only")?;
        }
        if self.protocol != Protocol::Raw {
            refuse(&capture_fields, "applies to protocol = \"raw\" only")?;
        }
        let capture = match self.protocol {
            Protocol::Raw => {
                let chunk_bytes = self.chunk_bytes.unwrap_or(64 * 1024);
                if !(64..=16 * 1024 * 1024).contains(&chunk_bytes) {
                    return Err(field_err("chunk_bytes", "must be 64 to 16777216"));
                }
                let chunk_age = self.chunk_age.unwrap_or(Duration::from_secs(10));
                if chunk_age < Duration::from_millis(10) || chunk_age > Duration::from_secs(3600) {
                    return Err(field_err("chunk_age", "must be between 10ms and 1h"));
                }
                Some(CaptureSettings {
                    chunk_bytes,
                    chunk_age,
                })
            }
            _ => None,
        };
        let lines = match self.protocol {
            Protocol::Lines => Some(LineParser::new(
                self.regex,
                self.delimiter,
                self.fields,
                self.channels,
            )?),
            _ => None,
        };
        Ok(SerialConfig {
            line,
            protocol: self.protocol,
            lines,
            capture,
            silence,
            counters_every,
            simulate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<SerialConfig, FieldError> {
        toml::from_str::<SerialConfigRaw>(s)
            .expect("parse")
            .validate()
    }

    #[test]
    fn an_nmea_receiver_defaults_to_9600_8n1() {
        let c = parse("serial_port = \"/dev/ttyS1\"\nprotocol = \"nmea\"\n").expect("valid");
        assert_eq!(
            (c.line.baud, c.line.parity, c.protocol),
            (9600, Parity::None, Protocol::Nmea)
        );
        assert_eq!(c.silence, Duration::from_secs(10));
        let e = parse("protocol = \"nmea\"\n").expect_err("no port");
        assert_eq!(e.path, "serial_port");
        let e = parse("serial_port = \"/dev/x\"\nprotocol = \"nmea\"\nsilence = \"1ms\"\n")
            .expect_err("silence");
        assert_eq!(e.path, "silence");
        assert!(
            toml::from_str::<SerialConfigRaw>("serial_port = \"/dev/x\"\nprotocol = \"morse\"\n")
                .is_err()
        );
    }
}
