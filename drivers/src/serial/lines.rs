//! The configurable ASCII line parser, for weather stations, sky-quality meters and other
//! instruments that print one line of values at a time.
//!
//! Two ways to find the values in a line: a regular expression whose named groups are the
//! channels, or a delimiter with a list naming each field (an empty name skips it). Each
//! channel may set a type (`number` by default, `integer`, `text`), a unit, a scale and
//! an offset. Pure: a line in, values out.
//!
//! Invariants: a line that does not match gives no readings and is counted (`unmatched`);
//! a value that does not parse gives a bad-quality reading naming the text, so one broken
//! field never hides the others of the line.

use std::collections::BTreeMap;

use regex::Regex;

pub use crate::channels::{ChannelRaw, ChannelSpec, ValueType};
use crate::config::FieldError;
use crate::reading::Value;

#[derive(Debug, Clone)]
pub enum Matcher {
    Regex(Regex),
    Delimited {
        delimiter: String,
        /// Field position -> channel; `None` skips the field.
        fields: Vec<Option<String>>,
    },
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Matcher::Regex(a), Matcher::Regex(b)) => a.as_str() == b.as_str(),
            (
                Matcher::Delimited {
                    delimiter: a,
                    fields: fa,
                },
                Matcher::Delimited {
                    delimiter: b,
                    fields: fb,
                },
            ) => a == b && fa == fb,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LineParser {
    pub matcher: Matcher,
    pub channels: BTreeMap<String, ChannelSpec>,
}

/// One channel's value from a line, or why its text is not one.
pub type FieldValue = Result<Value, String>;

/// Why a line gave nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LineError {
    #[error("the line does not match the pattern")]
    NoMatch,
    #[error("{got} fields where {want} are configured")]
    FieldCount { want: usize, got: usize },
}

impl LineParser {
    /// Builds a parser from the driver's `regex` or `delimiter` + `fields`, and `channels`.
    pub fn new(
        regex: Option<String>,
        delimiter: Option<String>,
        fields: Option<Vec<String>>,
        channels: BTreeMap<String, ChannelRaw>,
    ) -> Result<Self, FieldError> {
        let err = |path: &str, message: String| FieldError {
            path: path.into(),
            message,
        };
        let (matcher, names): (Matcher, Vec<String>) = match (regex, delimiter, fields) {
            (Some(r), None, None) => {
                let re = Regex::new(&r)
                    .map_err(|e| err("regex", format!("not a valid regular expression: {e}")))?;
                let names: Vec<String> = re.capture_names().flatten().map(str::to_string).collect();
                if names.is_empty() {
                    return Err(err(
                        "regex",
                        "needs named groups, e.g. (?P<temperature>-?\\d+\\.\\d+)".into(),
                    ));
                }
                (Matcher::Regex(re), names)
            }
            (None, Some(d), Some(f)) => {
                if d.is_empty() {
                    return Err(err("delimiter", "must not be empty".into()));
                }
                let fields: Vec<Option<String>> = f
                    .into_iter()
                    .map(|n| (!n.is_empty()).then_some(n))
                    .collect();
                let names: Vec<String> = fields.iter().flatten().cloned().collect();
                if names.is_empty() {
                    return Err(err("fields", "name at least one field".into()));
                }
                let mut seen = std::collections::BTreeSet::new();
                if let Some(dup) = names.iter().find(|n| !seen.insert(*n)) {
                    return Err(err("fields", format!("{dup:?} is named twice")));
                }
                (
                    Matcher::Delimited {
                        delimiter: d,
                        fields,
                    },
                    names,
                )
            }
            (None, Some(_), None) => {
                return Err(err(
                    "fields",
                    "a delimiter needs fields naming each column".into(),
                ));
            }
            (None, None, Some(_)) => {
                return Err(err("delimiter", "fields need a delimiter".into()));
            }
            (Some(_), _, _) => {
                return Err(err(
                    "regex",
                    "use either regex or delimiter + fields, not both".into(),
                ));
            }
            (None, None, None) => {
                return Err(err(
                    "regex",
                    "protocol = \"lines\" needs regex, or delimiter and fields".into(),
                ));
            }
        };
        for name in channels.keys() {
            if !names.contains(name) {
                return Err(err(
                    &format!("channels.{name}"),
                    format!("no such field in the pattern; it names {names:?}"),
                ));
            }
        }
        let mut specs = BTreeMap::new();
        for name in names {
            let raw = channels.get(&name).cloned().unwrap_or_default();
            let spec = raw.validate(&format!("channels.{name}"))?;
            specs.insert(name, spec);
        }
        Ok(Self {
            matcher,
            channels: specs,
        })
    }

    /// The values of one line, by channel; a value that does not parse is `Err(why)`.
    pub fn parse<'a>(&'a self, line: &'a str) -> Result<Vec<(&'a str, FieldValue)>, LineError> {
        let raw: Vec<(&str, &str)> = match &self.matcher {
            Matcher::Regex(re) => {
                let caps = re.captures(line).ok_or(LineError::NoMatch)?;
                self.channels
                    .keys()
                    .filter_map(|n| caps.name(n).map(|m| (n.as_str(), m.as_str())))
                    .collect()
            }
            Matcher::Delimited { delimiter, fields } => {
                let parts: Vec<&str> = line.split(delimiter.as_str()).collect();
                if parts.len() < fields.len() {
                    return Err(LineError::FieldCount {
                        want: fields.len(),
                        got: parts.len(),
                    });
                }
                fields
                    .iter()
                    .zip(parts)
                    .filter_map(|(f, p)| f.as_deref().map(|n| (n, p)))
                    .collect()
            }
        };
        Ok(raw
            .into_iter()
            .filter_map(|(name, text)| {
                let spec = self.channels.get(name)?;
                let (name, _) = self.channels.get_key_value(name)?;
                Some((name.as_str(), spec.convert(text.trim())))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any line against a regex parser and a delimited one: values or an error.
        #[test]
        fn no_line_makes_the_line_parser_panic(line in "\\PC{0,200}") {
            let re = LineParser::new(
                Some(r"(?P<a>-?[0-9.]+)\s+(?P<b>\S+)".into()),
                None,
                None,
                BTreeMap::new(),
            )
            .expect("valid");
            let delimited = LineParser::new(
                None,
                Some(";".into()),
                Some(vec!["a".into(), "".into(), "b".into()]),
                BTreeMap::from([(
                    "b".to_string(),
                    ChannelRaw { value_type: Some(ValueType::Integer), ..ChannelRaw::default() },
                )]),
            )
            .expect("valid");
            let _ = re.parse(&line);
            let _ = delimited.parse(&line);
        }
    }

    fn ch(unit: &str, scale: Option<f64>) -> ChannelRaw {
        ChannelRaw {
            unit: Some(unit.into()),
            scale,
            ..ChannelRaw::default()
        }
    }

    #[test]
    fn named_groups_become_channels_with_units_and_scale() {
        // A Unihedron SQM-LE answer to `rx`.
        let p = LineParser::new(
            Some(r"^r,\s*(?P<mpsas>-?\d+\.\d+)m,\s*(?P<freq>\d+)Hz,\s*(?P<counts>\d+)c,\s*\d+\.\d+s,\s*(?P<temp>-?\d+\.\d+)C".into()),
            None,
            None,
            BTreeMap::from([
                ("mpsas".to_string(), ch("mag/arcsec2", None)),
                ("temp".to_string(), ch("degC", None)),
                ("freq".to_string(), ChannelRaw { value_type: Some(ValueType::Integer), ..ChannelRaw::default() }),
            ]),
        )
        .expect("valid");
        let got = p
            .parse("r, 21.43m,0000000022Hz,0000000000c,0000000.000s, 014.2C")
            .expect("match");
        assert_eq!(
            got,
            vec![
                ("counts", Ok(Value::Number(0.0))),
                ("freq", Ok(Value::Integer(22))),
                ("mpsas", Ok(Value::Number(21.43))),
                ("temp", Ok(Value::Number(14.2))),
            ]
        );
        assert_eq!(p.channels["mpsas"].unit.as_deref(), Some("mag/arcsec2"));
        assert_eq!(p.parse("garbage"), Err(LineError::NoMatch));
    }

    #[test]
    fn delimited_fields_skip_blanks_and_a_bad_value_spoils_only_itself() {
        let p = LineParser::new(
            None,
            Some(",".into()),
            Some(vec![
                "".into(),
                "temperature".into(),
                "humidity".into(),
                "status".into(),
            ]),
            BTreeMap::from([
                ("humidity".to_string(), ch("%", Some(0.1))),
                (
                    "status".to_string(),
                    ChannelRaw {
                        value_type: Some(ValueType::Text),
                        ..ChannelRaw::default()
                    },
                ),
            ]),
        )
        .expect("valid");
        // In field order; the first field is skipped, extra fields are ignored.
        let got = p.parse("WX1, 12.5 ,655,OK,extra").expect("match");
        assert_eq!(
            got,
            vec![
                ("temperature", Ok(Value::Number(12.5))),
                ("humidity", Ok(Value::Number(65.5))),
                ("status", Ok(Value::Text("OK".into()))),
            ]
        );
        let got = p.parse("WX1,--.-,655,OK").expect("match");
        assert_eq!(
            got[0],
            ("temperature", Err("not a number: \"--.-\"".into()))
        );
        assert_eq!(got[1].1, Ok(Value::Number(65.5)));
        assert_eq!(
            p.parse("WX1,12.5"),
            Err(LineError::FieldCount { want: 4, got: 2 })
        );
    }

    #[test]
    fn configuration_mistakes_name_the_field() {
        let none = BTreeMap::new;
        let e = LineParser::new(Some("(".into()), None, None, none()).expect_err("bad regex");
        assert_eq!(e.path, "regex");
        let e = LineParser::new(Some(r"\d+".into()), None, None, none()).expect_err("no groups");
        assert!(e.message.contains("named groups"), "{e}");
        let e = LineParser::new(None, Some(",".into()), None, none()).expect_err("no fields");
        assert_eq!(e.path, "fields");
        let e = LineParser::new(
            None,
            Some(",".into()),
            Some(vec!["a".into(), "a".into()]),
            none(),
        )
        .expect_err("twice");
        assert!(e.message.contains("twice"), "{e}");
        let e = LineParser::new(
            Some(r"(?P<t>\d+)".into()),
            None,
            None,
            BTreeMap::from([("x".to_string(), ChannelRaw::default())]),
        )
        .expect_err("unknown channel");
        assert_eq!(e.path, "channels.x");
        let e = LineParser::new(None, None, None, none()).expect_err("nothing");
        assert!(e.message.contains("needs regex"), "{e}");
    }
}
