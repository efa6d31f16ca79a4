//! The agent's unit of data: a [`Record`] is a [`Reading`] with a stream, a priority, the
//! time it was ingested and — once committed to the buffer — its gateway-wide `seq`.
//!
//! # Sequence numbers
//! `seq` is assigned by the buffer's writer in commit order, starting at 1, persisted, never
//! reused and without holes: a hole seen downstream is always a loss explained by a recorded
//! gap (eviction or quarantine) or a documented filter (a stream not routed to that sink).
//! `(gateway, seq)` is the idempotency key every sink carries.
//!
//! # NDJSON schema (version 1)
//! One JSON object per line, as written to buckets and by `skygate buffer export`:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `schema` | int | `1` |
//! | `gateway` | string | gateway id |
//! | `seq` | int | gateway-wide sequence number (absent in `skygate tail`: not yet numbered) |
//! | `stream` | string | routing key |
//! | `ts` | string | RFC 3339 UTC with nanoseconds: when the instrument observed it |
//! | `ts_ns` | int | the same, nanoseconds since the Unix epoch |
//! | `ingest_ts` | string | RFC 3339: when the agent accepted it |
//! | `time_quality` | string | `pps`, `gps`, `ntp`, `unsynced`, `step_detected` |
//! | `source` | string | driver instance |
//! | `channel` | string | instrument channel |
//! | `priority` | int | 0 (lowest) to 9 |
//! | `type` | string | `number`, `integer`, `bool`, `text`, `bytes`, `blob` |
//! | `value` | varies | number, integer, bool, string; `bytes`: base64 string; `blob`: object below |
//! | `unit` | string? | unit, when known |
//! | `quality` | string | `good`, `uncertain`, `bad` |
//! | `quality_reason` | string? | why not good |
//! | `lineage` | object? | on records a workflow made: `{"workflow", "first_seq", "last_seq", "count"}`: `count` input records with seqs in `first_seq..=last_seq` (in `skygate tail`, inputs not numbered yet have no seq to show) |
//!
//! A blob's `value` is `{"content_type", "size", "name"?, "meta"?, "key"?, "data_base64"?}`:
//! `meta` holds what the instrument said about the object (e.g. FITS keywords: `OBJECT`,
//! `EXPTIME`, ...) as an object of strings, numbers and booleans, present only when there
//! is some (an additive field: schema 1 readers that ignore unknown keys are unaffected);
//! `key` names the object holding the bytes when the sink stores them apart; otherwise the
//! bytes are inline as `data_base64`.
//!
//! A gap marker is a line with `"type": "gap"` and `gateway`, `stream` (`*` when unknown),
//! `first_seq`, `last_seq`, `count` (records lost; null when unknown), `first_ts`,
//! `last_ts`, `reason`.

#![forbid(unsafe_code)]

use std::sync::Arc;

/// The heartbeat's readings carry this as `source`; no driver may take the name.
pub const HEALTH_SOURCE: &str = "skygate";

use base64::Engine;
use serde::Serialize;
use skygate_drivers::{Reading, Timestamp, Value};

pub const NDJSON_SCHEMA_VERSION: u32 = 1;

/// A reading on its way through the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// 0 until the buffer commits it.
    pub seq: u64,
    pub stream: Arc<str>,
    /// 0 (lowest, evicted first) to 9.
    pub priority: u8,
    pub ingest_ts: Timestamp,
    pub reading: Reading,
    /// Set on records a workflow made: the records they came from.
    pub lineage: Option<Lineage>,
}

/// Where a record made by a workflow came from: `count` input records whose seqs lie in
/// `first..=last` (one input: `first == last`). Inputs are numbered by the buffer even
/// when no sink stores them, so the range always names real seqs, and `(gateway, workflow,
/// first, last)` identifies a derivation: the same inputs derived twice (a file read again
/// after a crash) show up downstream as the same lineage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    pub workflow: Arc<str>,
    pub first: SeqRef,
    pub last: SeqRef,
    pub count: u32,
}

/// An input's seq as a derived record knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqRef {
    Seq(u64),
    /// This many seqs before the record's own: an input committed in the same append,
    /// whose seq is not known until the writer numbers both. Resolved when read back.
    Back(u64),
}

impl SeqRef {
    /// The absolute seq, given the seq of the record holding the reference (0 when it is
    /// not numbered yet: then only absolute references are known).
    pub fn resolve(self, own_seq: u64) -> Option<u64> {
        match self {
            Self::Seq(s) => Some(s),
            Self::Back(d) if own_seq > d => Some(own_seq - d),
            Self::Back(_) => None,
        }
    }
}

impl Lineage {
    /// The same lineage with both ends absolute, as stored records carry it.
    pub fn resolved(&self, own_seq: u64) -> Lineage {
        let fix = |r: SeqRef| r.resolve(own_seq).map_or(r, SeqRef::Seq);
        Lineage {
            workflow: self.workflow.clone(),
            first: fix(self.first),
            last: fix(self.last),
            count: self.count,
        }
    }
}

/// A recorded loss: records of `stream` in `first_seq..=last_seq` that will never arrive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub id: i64,
    pub stream: String,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Records lost; `None` when the loss could not be counted (quarantined database).
    pub count: Option<u64>,
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
    pub reason: String,
    pub recorded_at: i64,
}

impl Gap {
    /// The stream to file the marker under: its own, or `all` when the loss spans every
    /// stream (`*`, which is not a valid name in topics and keys).
    pub fn stream_name<'a>(&'a self, all: &'a str) -> &'a str {
        if self.stream == "*" {
            all
        } else {
            &self.stream
        }
    }
}

/// A value as the control API shows it (an NDJSON line or a last value), as a short
/// string for people (the CLI and the TUI): `12.5 degC`,
/// `<image/jpeg 4096 B>`.
pub fn value_text(v: &serde_json::Value) -> String {
    let value = match &v["value"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => format!(
            "<{} {} B>",
            o.get("content_type")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("blob"),
            o.get("size").unwrap_or(&serde_json::Value::Null)
        ),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.4}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string(),
            _ => n.to_string(),
        },
        other => other.to_string(),
    };
    match v["unit"].as_str() {
        Some(u) => format!("{value} {u}"),
        None => value,
    }
}

/// Fixtures for the unit tests of the crates above (their dev-dependency turns on the
/// `fixtures` feature; release builds do not carry them).
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures {
    use std::sync::Arc;

    use skygate_drivers::{Quality, Reading, TimeQuality, Timestamp, Value};

    use super::{Gap, Record};

    /// A good reading of `sim`/`t` on `stream`, not yet numbered (seq 0).
    pub fn record(stream: &str, value: Value) -> Record {
        Record {
            seq: 0,
            stream: Arc::from(stream),
            priority: 5,
            ingest_ts: Timestamp::now(),
            reading: Reading {
                source: Arc::from("sim"),
                channel: Arc::from("t"),
                ts: Timestamp::now(),
                time_quality: TimeQuality::Ntp,
                value,
                unit: None,
                quality: Quality::Good,
            },
            lineage: None,
        }
    }

    /// Ten records of `wx` (seqs 10 to 19) evicted.
    pub fn gap() -> Gap {
        Gap {
            id: 1,
            stream: "wx".into(),
            first_seq: 10,
            last_seq: 19,
            count: Some(10),
            first_ts: None,
            last_ts: None,
            reason: "evicted: buffer full".into(),
            recorded_at: 0,
        }
    }
}

/// Where a blob's bytes go in an NDJSON line.
#[derive(Debug, Clone, Copy)]
pub enum BlobPlacement<'a> {
    /// Stored apart under this object key.
    Key(&'a str),
    /// Inline, base64.
    Inline,
    /// Left out: only type, size and name (live views: `skygate tail`, the TUI).
    Omitted,
}

pub fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

#[derive(Serialize)]
struct Line<'a> {
    schema: u32,
    gateway: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    stream: &'a str,
    ts: String,
    ts_ns: i64,
    ingest_ts: String,
    time_quality: &'static str,
    source: &'a str,
    channel: &'a str,
    priority: u8,
    #[serde(rename = "type")]
    kind: &'static str,
    value: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
    quality: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    quality_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lineage: Option<LineageLine<'a>>,
}

#[derive(Serialize)]
struct LineageLine<'a> {
    workflow: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seq: Option<u64>,
    count: u32,
}

/// A value as the `value` field of an NDJSON line.
pub fn value_json(value: &Value, blob: BlobPlacement<'_>) -> serde_json::Value {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    match value {
        Value::Number(v) => serde_json::json!(v),
        Value::Integer(v) => serde_json::json!(v),
        Value::Bool(v) => serde_json::json!(v),
        Value::Text(v) => serde_json::json!(v),
        Value::Bytes(b) => serde_json::json!(b64(b)),
        Value::Blob(b) => {
            let mut o = serde_json::json!({
                "content_type": b.content_type,
                "size": b.data.len(),
            });
            if let Some(n) = &b.name {
                o["name"] = serde_json::json!(n);
            }
            if !b.meta.is_empty() {
                o["meta"] = serde_json::json!(b.meta);
            }
            match blob {
                BlobPlacement::Key(k) => o["key"] = serde_json::json!(k),
                BlobPlacement::Inline => o["data_base64"] = serde_json::json!(b64(&b.data)),
                BlobPlacement::Omitted => {}
            }
            o
        }
    }
}

/// Appends one record as an NDJSON line (with the trailing newline) to `out`. A record
/// not yet numbered by the buffer (`seq` 0: live views) has no `seq` field.
pub fn write_ndjson(out: &mut Vec<u8>, gateway: &str, rec: &Record, blob: BlobPlacement<'_>) {
    let r = &rec.reading;
    let value = value_json(&r.value, blob);
    let line = Line {
        schema: NDJSON_SCHEMA_VERSION,
        gateway,
        seq: (rec.seq != 0).then_some(rec.seq),
        stream: &rec.stream,
        ts: rfc3339(r.ts.as_nanos()),
        ts_ns: r.ts.as_nanos(),
        ingest_ts: rfc3339(rec.ingest_ts.as_nanos()),
        time_quality: r.time_quality.as_str(),
        source: &r.source,
        channel: &r.channel,
        priority: rec.priority,
        kind: r.value.kind(),
        value,
        unit: r.unit.as_deref(),
        quality: r.quality.as_str(),
        quality_reason: r.quality.reason(),
        lineage: rec.lineage.as_ref().map(|l| LineageLine {
            workflow: &l.workflow,
            first_seq: l.first.resolve(rec.seq),
            last_seq: l.last.resolve(rec.seq),
            count: l.count,
        }),
    };
    // Serialising plain structs and json values into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

/// A gap marker as one NDJSON line (with the trailing newline).
pub fn gap_ndjson(gateway: &str, gap: &Gap) -> Vec<u8> {
    let mut v = serde_json::to_vec(&serde_json::json!({
        "schema": NDJSON_SCHEMA_VERSION,
        "type": "gap",
        "gateway": gateway,
        "stream": gap.stream,
        "first_seq": gap.first_seq,
        "last_seq": gap.last_seq,
        "count": gap.count,
        "first_ts": gap.first_ts.map(rfc3339),
        "last_ts": gap.last_ts.map(rfc3339),
        "reason": gap.reason,
        "recorded_at": rfc3339(gap.recorded_at),
    }))
    .unwrap_or_default();
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use skygate_drivers::{Quality, TimeQuality};

    #[test]
    fn an_ndjson_line_carries_gateway_seq_stream_ts_and_the_value_at_top_level() {
        let rec = Record {
            seq: 42,
            stream: Arc::from("weather"),
            priority: 5,
            ingest_ts: Timestamp(1_700_000_000_500_000_000),
            reading: Reading {
                source: Arc::from("mast"),
                channel: Arc::from("temperature"),
                ts: Timestamp(1_700_000_000_123_456_789),
                time_quality: TimeQuality::Ntp,
                value: Value::Number(12.5),
                unit: Some(Arc::from("degC")),
                quality: Quality::Uncertain("out of range".into()),
            },
            lineage: None,
        };
        let mut out = Vec::new();
        write_ndjson(&mut out, "gw-1", &rec, BlobPlacement::Inline);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["gateway"], "gw-1");
        assert_eq!(v["seq"], 42);
        assert_eq!(v["stream"], "weather");
        assert_eq!(v["ts"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(v["ts_ns"], 1_700_000_000_123_456_789i64);
        assert_eq!(v["type"], "number");
        assert_eq!(v["value"], 12.5);
        assert_eq!(v["unit"], "degC");
        assert_eq!(v["quality"], "uncertain");
        assert_eq!(v["quality_reason"], "out of range");
        assert_eq!(v["time_quality"], "ntp");
    }
}
