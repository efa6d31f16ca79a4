//! How a configured channel turns instrument text or numbers into a [`Value`]: its type,
//! unit, scale and offset. Shared by the drivers that parse text (serial lines, MQTT
//! payloads, CSV files).
//!
//! Invariant: a value that does not convert is `Err(why)` naming the text, never a guess;
//! the caller turns it into a bad-quality reading so one broken field never hides others.

use serde::Deserialize;

use crate::config::{FieldError, field_err};
use crate::reading::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    #[default]
    Number,
    Integer,
    Text,
}

/// A channel as written in the config.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelRaw {
    #[serde(rename = "type")]
    pub value_type: Option<ValueType>,
    pub unit: Option<String>,
    pub scale: Option<f64>,
    pub offset: Option<f64>,
}

/// A checked channel: `value * scale + offset`, in `unit`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelSpec {
    pub value_type: ValueType,
    pub unit: Option<String>,
    pub scale: f64,
    pub offset: f64,
}

impl Default for ChannelSpec {
    fn default() -> Self {
        Self {
            value_type: ValueType::Number,
            unit: None,
            scale: 1.0,
            offset: 0.0,
        }
    }
}

impl ChannelRaw {
    /// Checks the channel; `path` names it in errors (e.g. `channels.temperature`).
    pub fn validate(self, path: &str) -> Result<ChannelSpec, FieldError> {
        let scale = self.scale.unwrap_or(1.0);
        let offset = self.offset.unwrap_or(0.0);
        let value_type = self.value_type.unwrap_or_default();
        if !scale.is_finite() || scale == 0.0 || !offset.is_finite() {
            return Err(field_err(
                &format!("{path}.scale"),
                "scale must be finite and not 0; offset finite",
            ));
        }
        if value_type == ValueType::Text && (self.scale.is_some() || self.offset.is_some()) {
            return Err(field_err(
                &format!("{path}.scale"),
                "text has no scale or offset",
            ));
        }
        Ok(ChannelSpec {
            value_type,
            unit: self.unit,
            scale,
            offset,
        })
    }
}

impl ChannelSpec {
    /// The value of `text` (already trimmed) for this channel.
    pub fn convert(&self, text: &str) -> Result<Value, String> {
        match self.value_type {
            ValueType::Text => Ok(Value::Text(text.to_string())),
            ValueType::Integer if self.scale == 1.0 && self.offset == 0.0 => text
                .parse::<i64>()
                .map(Value::Integer)
                .map_err(|_| format!("not an integer: {text:?}")),
            ValueType::Integer | ValueType::Number => match text.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(self.number(v)),
                _ => Err(format!("not a number: {text:?}")),
            },
        }
    }

    /// A number the instrument sent as a number (JSON): scaled, or text if asked.
    pub fn convert_number(&self, v: f64) -> Result<Value, String> {
        match self.value_type {
            ValueType::Text => Ok(Value::Text(v.to_string())),
            ValueType::Integer if self.scale == 1.0 && self.offset == 0.0 => {
                if v.fract() == 0.0 && v.abs() < 9.0e15 {
                    Ok(Value::Integer(v as i64))
                } else {
                    Err(format!("not an integer: {v}"))
                }
            }
            _ if !v.is_finite() => Err(format!("not a finite number: {v}")),
            _ => Ok(self.number(v)),
        }
    }

    fn number(&self, v: f64) -> Value {
        Value::Number(v * self.scale + self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_numbers_convert_with_scale_offset_and_type() {
        let spec = ChannelRaw {
            scale: Some(0.1),
            offset: Some(-40.0),
            ..ChannelRaw::default()
        }
        .validate("channels.t")
        .expect("valid");
        assert_eq!(spec.convert("655"), Ok(Value::Number(655.0 * 0.1 - 40.0)));
        assert_eq!(
            spec.convert_number(655.0),
            Ok(Value::Number(655.0 * 0.1 - 40.0))
        );
        assert_eq!(spec.convert("--.-"), Err("not a number: \"--.-\"".into()));
        let int = ChannelRaw {
            value_type: Some(ValueType::Integer),
            ..ChannelRaw::default()
        }
        .validate("x")
        .expect("valid");
        assert_eq!(int.convert("22"), Ok(Value::Integer(22)));
        assert_eq!(int.convert_number(22.0), Ok(Value::Integer(22)));
        assert!(int.convert_number(22.5).is_err());
        let e = ChannelRaw {
            value_type: Some(ValueType::Text),
            scale: Some(2.0),
            ..ChannelRaw::default()
        }
        .validate("channels.status")
        .expect_err("text with scale");
        assert_eq!(e.path, "channels.status.scale");
        let e = ChannelRaw {
            scale: Some(0.0),
            ..ChannelRaw::default()
        }
        .validate("channels.z")
        .expect_err("zero scale");
        assert_eq!(e.path, "channels.z.scale");
    }
}
