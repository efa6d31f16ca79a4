//! MQTT topic filters (`+` one level, `#` the rest) and the channel names a matched topic
//! gives.
//!
//! Invariants: a filter is checked once, when the config is read (wildcards occupy a
//! whole level, `#` only last); matching follows MQTT 3.1.1 §4.7, including that a
//! wildcard in the first level never matches a `$`-topic (`$SYS/...`).

use std::fmt;

use crate::config::{FieldError, field_err};

/// A checked MQTT topic filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter(String);

impl TopicFilter {
    pub fn parse(path: &str, filter: &str) -> Result<Self, FieldError> {
        if filter.is_empty() {
            return Err(field_err(path, "an empty topic filter matches nothing"));
        }
        if filter.len() > 65_535 || filter.contains('\0') {
            return Err(field_err(path, "too long, or contains NUL"));
        }
        let levels: Vec<&str> = filter.split('/').collect();
        for (i, level) in levels.iter().enumerate() {
            if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
                return Err(field_err(
                    path,
                    &format!("{filter:?}: '#' must be a whole level and the last one"),
                ));
            }
            if level.contains('+') && *level != "+" {
                return Err(field_err(
                    path,
                    &format!("{filter:?}: '+' must be a whole level, e.g. \"site/+/temp\""),
                ));
            }
        }
        Ok(Self(filter.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The levels the wildcards matched (`#` gives the rest joined by `/`), or `None`
    /// when `topic` does not match.
    pub fn captures<'t>(&self, topic: &'t str) -> Option<Vec<&'t str>> {
        if topic.starts_with('$') && (self.0.starts_with('+') || self.0.starts_with('#')) {
            return None;
        }
        let mut caps = Vec::new();
        let mut rest = Some(topic);
        for level in self.0.split('/') {
            if level == "#" {
                // `a/#` also matches `a` itself: then it captured nothing.
                caps.push(rest.unwrap_or(""));
                return Some(caps);
            }
            let r = rest?;
            let (this, next) = match r.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (r, None),
            };
            match level {
                "+" => caps.push(this),
                l if l == this => {}
                _ => return None,
            }
            rest = next;
        }
        rest.is_none().then_some(caps)
    }

    pub fn matches(&self, topic: &str) -> bool {
        self.captures(topic).is_some()
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a topic becomes a channel name: literal text with `{topic}` (the whole topic,
/// `/` as `.`) and `{1}`..`{9}` (what the n-th wildcard matched, `/` as `.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelTemplate(String);

impl ChannelTemplate {
    pub fn parse(path: &str, template: &str, filter: &TopicFilter) -> Result<Self, FieldError> {
        let wildcards = filter
            .as_str()
            .split('/')
            .filter(|l| *l == "+" || *l == "#")
            .count();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| field_err(path, "unclosed '{'"))?;
            let name = &rest[open + 1..open + close];
            let ok = name == "topic"
                || name
                    .parse::<usize>()
                    .is_ok_and(|n| n >= 1 && n <= wildcards);
            if !ok {
                return Err(field_err(
                    path,
                    &format!(
                        "{{{name}}}: use {{topic}}, or {{1}}..{{{wildcards}}} for the wildcards of {filter:?}",
                        filter = filter.as_str()
                    ),
                ));
            }
            rest = &rest[open + close + 1..];
        }
        Ok(Self(template.to_string()))
    }

    pub fn render(&self, topic: &str, caps: &[&str]) -> String {
        let mut out = String::with_capacity(self.0.len() + topic.len());
        let mut rest = self.0.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = rest[open..].find('}').map_or(rest.len(), |c| open + c);
            let name = &rest[open + 1..close];
            let text = if name == "topic" {
                topic
            } else {
                name.parse::<usize>()
                    .ok()
                    .and_then(|n| caps.get(n.wrapping_sub(1)))
                    .copied()
                    .unwrap_or("")
            };
            out.extend(text.chars().map(|c| if c == '/' { '.' } else { c }));
            rest = rest.get(close + 1..).unwrap_or("");
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> TopicFilter {
        TopicFilter::parse("filter", s).expect("valid filter")
    }

    #[test]
    fn wildcards_match_as_mqtt_says() {
        assert_eq!(
            f("dome/+/temp").captures("dome/east/temp"),
            Some(vec!["east"])
        );
        assert!(!f("dome/+/temp").matches("dome/east/wing/temp"));
        assert!(!f("dome/+/temp").matches("dome/temp"));
        assert_eq!(f("dome/#").captures("dome/a/b"), Some(vec!["a/b"]));
        assert_eq!(f("dome/#").captures("dome"), Some(vec![""]));
        assert!(f("#").matches("anything/at/all"));
        assert!(!f("#").matches("$SYS/broker/load"));
        assert!(!f("+/broker").matches("$SYS/broker"));
        assert!(f("$SYS/#").matches("$SYS/broker"));
        assert!(f("a/b").matches("a/b"));
        assert!(!f("a/b").matches("a/b/c"));
        assert!(!f("a/b/c").matches("a/b"));
        assert_eq!(f("+/+").captures("/x"), Some(vec!["", "x"]));
    }

    #[test]
    fn malformed_filters_are_refused_by_name() {
        for bad in ["", "a/#/b", "a#", "a/b+", "+a/b"] {
            let e = TopicFilter::parse("topics[0].filter", bad).expect_err(bad);
            assert_eq!(e.path, "topics[0].filter");
        }
    }

    proptest::proptest! {
        /// Any topic against any valid filter: a match gives one capture per wildcard,
        /// and rendering a template from it never panics.
        #[test]
        fn matching_and_rendering_never_panic(
            filter in "[a-c+#/$]{1,12}",
            topic in "[a-c/$]{0,16}",
        ) {
            if let Ok(f) = TopicFilter::parse("filter", &filter) {
                let wildcards = filter.split('/').filter(|l| *l == "+" || *l == "#").count();
                if let Some(caps) = f.captures(&topic) {
                    proptest::prop_assert_eq!(caps.len(), wildcards);
                    let t = ChannelTemplate::parse("channel", "x.{topic}", &f).expect("valid");
                    let _ = t.render(&topic, &caps);
                }
            }
        }
    }

    #[test]
    fn channel_templates_name_wildcards_and_the_topic() {
        let filter = f("obs/+/weather/#");
        let t = ChannelTemplate::parse("channel", "wx.{1}.{2}", &filter).expect("valid");
        let caps = filter.captures("obs/east/weather/mast/2").expect("match");
        assert_eq!(t.render("obs/east/weather/mast/2", &caps), "wx.east.mast.2");
        let t = ChannelTemplate::parse("channel", "{topic}", &filter).expect("valid");
        assert_eq!(t.render("obs/e/weather/x", &["e", "x"]), "obs.e.weather.x");
        let e = ChannelTemplate::parse("channel", "{3}", &filter).expect_err("no third");
        assert!(e.message.contains("{1}..{2}"), "{e}");
        assert!(ChannelTemplate::parse("channel", "{topic", &filter).is_err());
    }
}
