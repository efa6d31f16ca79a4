//! MQTT payload decoders: JSON (fields by JSON pointer, optional timestamp field), CSV,
//! a bare number, raw bytes. Pure: a payload in, values out.
//!
//! Invariants: a payload that cannot be decoded at all (not UTF-8, not JSON, empty) is a
//! [`DecodeError`] the driver counts and logs; a field that is missing or does not convert
//! is a bad-quality value naming why, so one broken field never hides the others. Nothing
//! here panics on any input (fuzzed).

use bytes::Bytes;

use crate::channels::ChannelSpec;
use crate::reading::{Blob, Timestamp, Value};
use crate::serial::lines::{LineError, LineParser};

/// Units of a numeric timestamp field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
pub enum EpochUnit {
    #[serde(rename = "s")]
    Seconds,
    #[serde(rename = "ms")]
    Millis,
    #[serde(rename = "us")]
    Micros,
    #[serde(rename = "ns")]
    Nanos,
}

/// One JSON field: channel name (below the topic's channel), pointer, conversion.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonField {
    pub name: String,
    pub pointer: String,
    pub spec: ChannelSpec,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decoder {
    /// Configured fields, or every scalar leaf when none are configured.
    Json {
        fields: Vec<JsonField>,
        /// Where the instrument's own timestamp is: RFC 3339 text or an epoch number.
        timestamp: Option<(String, EpochUnit)>,
    },
    /// Each non-empty line is a record of delimited fields.
    Csv(LineParser),
    /// The payload is one number (or integer / text per the spec).
    Number(ChannelSpec),
    /// The payload as it is, stored as a blob.
    Raw { content_type: String },
}

/// A value for one channel, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Below the topic's channel: empty for `number` and `raw`, the field for JSON/CSV.
    pub field: String,
    pub value: Result<Value, String>,
    pub unit: Option<String>,
}

/// What one payload gave.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Payload {
    pub values: Vec<Decoded>,
    /// The instrument's timestamp, when the decoder found one.
    pub ts: Option<Timestamp>,
}

/// Why a whole payload gave nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty payload")]
    Empty,
    #[error("not UTF-8 text (at byte {0})")]
    NotText(usize),
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("JSON with no scalar values")]
    NoValues,
    #[error("timestamp {pointer}: {why}")]
    Timestamp { pointer: String, why: String },
    #[error("CSV line {line}: {why}")]
    Csv { line: usize, why: LineError },
}

/// Leaves taken from an unconfigured JSON document at most; deeper or further ones are
/// ignored, so a huge document cannot turn into a flood of channels.
pub const MAX_JSON_LEAVES: usize = 256;
const MAX_JSON_DEPTH: usize = 8;

impl Decoder {
    pub fn decode(&self, payload: &Bytes) -> Result<Payload, DecodeError> {
        if let Decoder::Raw { content_type } = self {
            return Ok(Payload {
                values: vec![Decoded {
                    field: String::new(),
                    value: Ok(Value::Blob(Blob::new(
                        content_type.clone(),
                        None,
                        payload.clone(),
                    ))),
                    unit: None,
                }],
                ts: None,
            });
        }
        let text = std::str::from_utf8(payload)
            .map_err(|e| DecodeError::NotText(e.valid_up_to()))?
            .trim();
        if text.is_empty() {
            return Err(DecodeError::Empty);
        }
        match self {
            Decoder::Raw { .. } => unreachable!("handled above"),
            Decoder::Number(spec) => Ok(Payload {
                values: vec![Decoded {
                    field: String::new(),
                    value: spec.convert(text),
                    unit: spec.unit.clone(),
                }],
                ts: None,
            }),
            Decoder::Csv(parser) => {
                let mut values = Vec::new();
                for (i, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() {
                        continue;
                    }
                    let got = parser
                        .parse(line)
                        .map_err(|why| DecodeError::Csv { line: i + 1, why })?;
                    values.extend(got.into_iter().map(|(name, value)| Decoded {
                        field: name.to_string(),
                        value,
                        unit: parser.channels.get(name).and_then(|c| c.unit.clone()),
                    }));
                }
                Ok(Payload { values, ts: None })
            }
            Decoder::Json { fields, timestamp } => {
                let doc: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| DecodeError::NotJson(e.to_string()))?;
                let ts = match timestamp {
                    Some((pointer, unit)) => Some(json_timestamp(&doc, pointer, *unit)?),
                    None => None,
                };
                let values = if fields.is_empty() {
                    let mut out = Vec::new();
                    leaves(&doc, &mut String::new(), 0, &mut out);
                    if out.is_empty() {
                        return Err(DecodeError::NoValues);
                    }
                    out
                } else {
                    fields
                        .iter()
                        .map(|f| Decoded {
                            field: f.name.clone(),
                            value: match doc.pointer(&f.pointer) {
                                None => Err(format!("no field at {}", f.pointer)),
                                Some(v) => json_value(v, &f.spec),
                            },
                            unit: f.spec.unit.clone(),
                        })
                        .collect()
                };
                Ok(Payload { values, ts })
            }
        }
    }
}

fn json_value(v: &serde_json::Value, spec: &ChannelSpec) -> Result<Value, String> {
    match v {
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) if spec.value_type == crate::channels::ValueType::Integer => {
                spec.convert(&i.to_string())
            }
            (_, Some(f)) => spec.convert_number(f),
            _ => Err(format!("number out of range: {n}")),
        },
        serde_json::Value::String(s) => spec.convert(s.trim()),
        serde_json::Value::Bool(b) => Ok(Value::Bool(*b)),
        serde_json::Value::Null => Err("null".into()),
        serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
            Err("an array or object, not a value".into())
        }
    }
}

/// Every scalar leaf, named by its path with `.` (array items by index).
fn leaves(v: &serde_json::Value, path: &mut String, depth: usize, out: &mut Vec<Decoded>) {
    if out.len() >= MAX_JSON_LEAVES || depth > MAX_JSON_DEPTH {
        return;
    }
    let mut child = |key: &str, item: &serde_json::Value, out: &mut Vec<Decoded>| {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        leaves(item, path, depth + 1, out);
        path.truncate(len);
    };
    match v {
        serde_json::Value::Object(m) => m.iter().for_each(|(k, item)| child(k, item, out)),
        serde_json::Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, item)| child(&i.to_string(), item, out)),
        serde_json::Value::Null => {}
        scalar => out.push(Decoded {
            field: path.clone(),
            value: match scalar {
                serde_json::Value::String(s) => Ok(Value::Text(s.clone())),
                other => json_value(other, &ChannelSpec::default()),
            },
            unit: None,
        }),
    }
}

fn json_timestamp(
    doc: &serde_json::Value,
    pointer: &str,
    unit: EpochUnit,
) -> Result<Timestamp, DecodeError> {
    let err = |why: String| DecodeError::Timestamp {
        pointer: pointer.to_string(),
        why,
    };
    match doc.pointer(pointer) {
        None => Err(err("missing".into())),
        Some(serde_json::Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s.trim())
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .map(Timestamp)
            .ok_or_else(|| err(format!("{s:?} is not an RFC 3339 time"))),
        Some(serde_json::Value::Number(n)) => {
            let per_unit = match unit {
                EpochUnit::Seconds => 1e9,
                EpochUnit::Millis => 1e6,
                EpochUnit::Micros => 1e3,
                EpochUnit::Nanos => 1.0,
            };
            let ns = n.as_f64().map(|f| f * per_unit);
            match ns {
                // i64 nanoseconds reach the year 2262.
                Some(ns) if ns.is_finite() && ns.abs() < 9.2e18 => Ok(Timestamp(ns as i64)),
                _ => Err(err(format!("{n} is out of range"))),
            }
        }
        Some(other) => Err(err(format!("{other} is neither text nor a number"))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::channels::{ChannelRaw, ValueType};

    fn json(fields: &[(&str, &str, ChannelSpec)], ts: Option<(&str, EpochUnit)>) -> Decoder {
        Decoder::Json {
            fields: fields
                .iter()
                .map(|(n, p, s)| JsonField {
                    name: n.to_string(),
                    pointer: p.to_string(),
                    spec: s.clone(),
                })
                .collect(),
            timestamp: ts.map(|(p, u)| (p.to_string(), u)),
        }
    }

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    #[test]
    fn json_fields_by_pointer_with_scale_units_and_the_instruments_timestamp() {
        let deci = ChannelSpec {
            scale: 0.1,
            unit: Some("degC".into()),
            ..ChannelSpec::default()
        };
        let d = json(
            &[
                ("temperature", "/env/t", deci),
                ("door", "/door_open", ChannelSpec::default()),
                ("missing", "/nope", ChannelSpec::default()),
                (
                    "state",
                    "/state",
                    ChannelSpec {
                        value_type: ValueType::Text,
                        ..ChannelSpec::default()
                    },
                ),
            ],
            Some(("/time", EpochUnit::Seconds)),
        );
        let got = d
            .decode(&b(r#"{"env":{"t":215},"door_open":false,"state":"tracking","time":"2026-11-22T10:00:00.5Z"}"#))
            .expect("decodes");
        assert_eq!(got.ts, Some(Timestamp(1_795_341_600_500_000_000)));
        assert_eq!(got.values[0].value, Ok(Value::Number(21.5)));
        assert_eq!(got.values[0].unit.as_deref(), Some("degC"));
        assert_eq!(got.values[1].value, Ok(Value::Bool(false)));
        assert_eq!(got.values[2].value, Err("no field at /nope".into()));
        assert_eq!(got.values[3].value, Ok(Value::Text("tracking".into())));
        let epoch_ms = json(&[], Some(("/ts", EpochUnit::Millis)));
        let got = epoch_ms
            .decode(&b(r#"{"ts":1795341600500,"v":1}"#))
            .expect("ok");
        assert_eq!(got.ts, Some(Timestamp(1_795_341_600_500_000_000)));
        assert!(matches!(
            epoch_ms.decode(&b(r#"{"ts":"yesterday","v":1}"#)),
            Err(DecodeError::Timestamp { .. })
        ));
    }

    #[test]
    fn json_without_fields_takes_every_scalar_leaf() {
        let got = json(&[], None)
            .decode(&b(r#"{"a":1,"b":{"c":2.5,"d":[true,"x"]},"n":null}"#))
            .expect("ok");
        let names: Vec<&str> = got.values.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(names, ["a", "b.c", "b.d.0", "b.d.1"]);
        assert_eq!(got.values[1].value, Ok(Value::Number(2.5)));
        assert_eq!(got.values[3].value, Ok(Value::Text("x".into())));
        let wide = format!(
            "{{{}}}",
            (0..1000)
                .map(|i| format!("\"k{i}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(
            json(&[], None).decode(&b(&wide)).expect("ok").values.len(),
            MAX_JSON_LEAVES
        );
        assert_eq!(json(&[], None).decode(&b("[]")), Err(DecodeError::NoValues));
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        let d = json(&[], None);
        assert!(matches!(
            d.decode(&b("{\"a\":")),
            Err(DecodeError::NotJson(_))
        ));
        assert_eq!(d.decode(&b("  ")), Err(DecodeError::Empty));
        assert_eq!(
            d.decode(&Bytes::from_static(b"\xff\xfe")),
            Err(DecodeError::NotText(0))
        );
        let deep = "[".repeat(10_000);
        assert!(d.decode(&b(&deep)).is_err());
    }

    proptest::proptest! {
        /// Whatever a publisher sends, every decoder answers (values or an error) and
        /// never panics; JSON-looking input is generated too, not only noise.
        #[test]
        fn no_payload_makes_a_decoder_panic(
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            json_like in "[\\[\\]{}\":,0-9a-z.eE+-]{0,200}",
        ) {
            let decoders = [
                json(&[], Some(("/ts", EpochUnit::Nanos))),
                json(&[("a", "/a/0", ChannelSpec::default())], None),
                Decoder::Number(ChannelSpec::default()),
                Decoder::Csv(
                    LineParser::new(None, Some(",".into()), Some(vec!["a".into(), "b".into()]), BTreeMap::new())
                        .expect("valid"),
                ),
            ];
            for d in &decoders {
                let _ = d.decode(&Bytes::from(noise.clone()));
                let _ = d.decode(&Bytes::from(json_like.clone()));
            }
        }
    }

    #[test]
    fn numbers_csv_lines_and_raw_bytes() {
        let n = Decoder::Number(ChannelSpec {
            unit: Some("hPa".into()),
            ..ChannelSpec::default()
        });
        let got = n.decode(&b(" 1013.2\n")).expect("ok");
        assert_eq!(got.values[0].value, Ok(Value::Number(1013.2)));
        assert_eq!(got.values[0].unit.as_deref(), Some("hPa"));
        assert_eq!(
            n.decode(&b("high")).expect("ok").values[0].value,
            Err("not a number: \"high\"".into())
        );
        let csv = Decoder::Csv(
            LineParser::new(
                None,
                Some(",".into()),
                Some(vec!["t".into(), "".into(), "rh".into()]),
                BTreeMap::from([(
                    "t".to_string(),
                    ChannelRaw {
                        unit: Some("degC".into()),
                        ..ChannelRaw::default()
                    },
                )]),
            )
            .expect("valid"),
        );
        let got = csv.decode(&b("12.5,x,40\n13.0,y,41\n")).expect("ok");
        assert_eq!(got.values.len(), 4);
        assert_eq!(got.values[2].value, Ok(Value::Number(13.0)));
        assert_eq!(got.values[0].unit.as_deref(), Some("degC"));
        assert!(matches!(
            csv.decode(&b("12.5,x,40\n13.0\n")),
            Err(DecodeError::Csv { line: 2, .. })
        ));
        let raw = Decoder::Raw {
            content_type: "application/octet-stream".into(),
        };
        let got = raw.decode(&Bytes::from_static(b"\x00\xff")).expect("ok");
        assert!(
            matches!(&got.values[0].value, Ok(Value::Blob(bl)) if bl.data.as_ref() == b"\x00\xff")
        );
    }
}
