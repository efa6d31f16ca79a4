//! The data model every driver produces.
//!
//! A [`Reading`] says what an instrument said at one instant: which source and channel,
//! when (with how far that time can be trusted), the value, its unit, and whether the
//! instrument or driver vouches for it. It carries no routing: the agent decides the
//! stream, priority and sequence number.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Nanoseconds since the Unix epoch, UTC. `i64` covers the years 1678 to 2262.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            Err(e) => Self(-i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX)),
        }
    }

    pub fn as_nanos(self) -> i64 {
        self.0
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        )
    }
}

/// How far the reading's timestamp can be trusted, from the gateway's clock state when the
/// reading was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeQuality {
    /// Disciplined by a GPS receiver's pulse-per-second: microseconds.
    Pps,
    /// Taken from a GPS fix without PPS: tens of milliseconds.
    Gps,
    /// The kernel clock is synchronised (NTP/PTP): milliseconds.
    Ntp,
    /// The clock is free-running; it may be anywhere.
    Unsynced,
    /// A wall-clock step was seen recently: timestamps around it may be out of order.
    StepDetected,
}

impl TimeQuality {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pps => "pps",
            Self::Gps => "gps",
            Self::Ntp => "ntp",
            Self::Unsynced => "unsynced",
            Self::StepDetected => "step_detected",
        }
    }

    pub fn to_code(self) -> u8 {
        match self {
            Self::Pps => 0,
            Self::Gps => 1,
            Self::Ntp => 2,
            Self::Unsynced => 3,
            Self::StepDetected => 4,
        }
    }

    pub fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => Self::Pps,
            1 => Self::Gps,
            2 => Self::Ntp,
            3 => Self::Unsynced,
            4 => Self::StepDetected,
            _ => return None,
        })
    }
}

/// Whether the value can be used, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "quality", content = "reason", rename_all = "snake_case")]
pub enum Quality {
    Good,
    /// Usable with care (out of calibrated range, stale, substituted).
    Uncertain(String),
    /// Not usable: the instrument reported an error or the driver could not read it.
    Bad(String),
}

impl Quality {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Uncertain(_) => "uncertain",
            Self::Bad(_) => "bad",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Good => None,
            Self::Uncertain(r) | Self::Bad(r) => Some(r),
        }
    }
}

/// A scalar describing a blob: a FITS keyword's value, a file's size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetaValue {
    Bool(bool),
    Integer(i64),
    Number(f64),
    Text(String),
}

/// A binary object an instrument produced: a camera frame, a FITS file, a raw capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Blob {
    /// MIME type, e.g. `image/jpeg`, `application/fits`.
    pub content_type: String,
    /// Original file name where there is one.
    pub name: Option<String>,
    pub data: Bytes,
    /// What the instrument said about the object (FITS header keywords, ...); travels
    /// with the record, so consumers need not open the object to index it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, MetaValue>,
}

impl Blob {
    pub fn new(content_type: impl Into<String>, name: Option<String>, data: Bytes) -> Self {
        Self {
            content_type: content_type.into(),
            name,
            data,
            meta: BTreeMap::new(),
        }
    }
}

/// What the instrument said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    Number(f64),
    Integer(i64),
    Bool(bool),
    Text(String),
    Bytes(Bytes),
    Blob(Blob),
}

impl Value {
    /// Size of the payload in bytes, for accounting (not the encoded size).
    pub fn payload_len(&self) -> usize {
        match self {
            Self::Number(_) | Self::Integer(_) => 8,
            Self::Bool(_) => 1,
            Self::Text(s) => s.len(),
            Self::Bytes(b) => b.len(),
            Self::Blob(b) => b.data.len(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Number(_) => "number",
            Self::Integer(_) => "integer",
            Self::Bool(_) => "bool",
            Self::Text(_) => "text",
            Self::Bytes(_) => "bytes",
            Self::Blob(_) => "blob",
        }
    }
}

/// One observation by one instrument channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// The driver instance that read it (its name in the config).
    pub source: Arc<str>,
    /// The instrument channel, e.g. `temperature`, `wind_speed`, `frame`.
    pub channel: Arc<str>,
    /// When the instrument observed it (or the driver read it, if the instrument says not).
    pub ts: Timestamp,
    pub time_quality: TimeQuality,
    pub value: Value,
    pub unit: Option<Arc<str>>,
    pub quality: Quality,
}

impl Reading {
    /// A reading the instrument vouches for, taken at `now` (from [`crate::Clock::now`]).
    pub fn good(
        source: Arc<str>,
        channel: Arc<str>,
        (ts, time_quality): (Timestamp, TimeQuality),
        value: Value,
        unit: Option<Arc<str>>,
    ) -> Self {
        Self {
            source,
            channel,
            ts,
            time_quality,
            value,
            unit,
            quality: Quality::Good,
        }
    }
}
