//! Names built from a record: Kafka topics and keys, MQTT topics.
//!
//! A template is text with placeholders `{stream}`, `{gateway}`, `{source}` and `{channel}`;
//! `{{` and `}}` are literal braces. It is parsed once when the config loads, so an unknown
//! placeholder is a config error, never a surprise at delivery time.

use std::fmt::Write;

use skygate_model::Record;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Stream,
    Gateway,
    Source,
    Channel,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

impl Template {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                    let part = match name.as_str() {
                        "stream" => Part::Stream,
                        "gateway" => Part::Gateway,
                        "source" => Part::Source,
                        "channel" => Part::Channel,
                        other => {
                            return Err(format!(
                                "unknown placeholder {{{other}}} in {s:?}; use {{stream}}, {{gateway}}, {{source}} or {{channel}}"
                            ));
                        }
                    };
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(part);
                }
                '}' => return Err(format!("unmatched '}}' in {s:?}")),
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        if parts.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Self(parts))
    }

    /// The name for one record, appended to `out` (cleared first).
    pub fn render_into(&self, out: &mut String, gateway: &str, r: &Record) {
        self.render_parts(
            out,
            gateway,
            &r.stream,
            &r.reading.source,
            &r.reading.channel,
        );
    }

    /// The name for a gap marker of `stream` (no source or channel: those render empty).
    pub fn render_gap(&self, gateway: &str, stream: &str) -> String {
        let mut out = String::new();
        self.render_parts(&mut out, gateway, stream, "", "");
        out
    }

    fn render_parts(
        &self,
        out: &mut String,
        gateway: &str,
        stream: &str,
        source: &str,
        channel: &str,
    ) {
        out.clear();
        for p in &self.0 {
            let _ = match p {
                Part::Text(t) => out.write_str(t),
                Part::Stream => out.write_str(stream),
                Part::Gateway => out.write_str(gateway),
                Part::Source => out.write_str(source),
                Part::Channel => out.write_str(channel),
            };
        }
    }

    /// Whether every record of one stream renders the same (only `{stream}`/`{gateway}`).
    pub fn per_stream(&self) -> bool {
        self.0
            .iter()
            .all(|p| !matches!(p, Part::Source | Part::Channel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_render_and_unknown_ones_are_refused() {
        let t = Template::parse("gw/{gateway}/{stream}/{{x}}").expect("valid");
        assert_eq!(t.render_gap("g1", "wx"), "gw/g1/wx/{x}");
        assert!(t.per_stream());
        assert!(!Template::parse("{channel}").expect("valid").per_stream());
        assert!(
            Template::parse("a.{strem}")
                .unwrap_err()
                .contains("unknown placeholder")
        );
        assert!(Template::parse("a}").is_err());
        assert!(Template::parse("").is_err());
    }
}
