//! Configuration of an MQTT ingest driver.
//!
//! ```toml
//! [drivers.dome]
//! kind = "mqtt"
//! broker = "embedded"                  # the agent's own broker ([broker] section), or:
//! # url = "mqtts://broker.site:8883"   # an external broker (mqtt:// or mqtts://)
//! # username = "skygate"               # with password_file (never the password itself)
//! # password_file = "/etc/skygate/mqtt.pass"
//! # ca_cert = "/etc/skygate/site-ca.pem"   # trusted besides the system bundle
//! # client_id = "skygate-gw-17-dome"   # default: skygate-<driver>; a persistent session
//! # qos = 1                            # 0 or 1; QoS 1 is acknowledged after commit
//! max_payload = "1MiB"
//!
//! [[drivers.dome.topics]]
//! filter = "dome/+/env"                # MQTT wildcards
//! channel = "{1}"                      # {topic}, {1}..{9}; fields append ".<field>"
//! decoder = "json"                     # json | csv | number | raw
//! fields = { temperature = "/t", humidity = "/rh" }   # JSON pointers; none: every leaf
//! timestamp = "/time"                  # RFC 3339 text, or epoch with timestamp_unit
//! [drivers.dome.topics.channels.temperature]
//! unit = "degC"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::decode::{Decoder, EpochUnit, JsonField};
use super::topic::{ChannelTemplate, TopicFilter};
use crate::channels::{ChannelRaw, ValueType};
use crate::config::{ByteSize, FieldError, duration_opt, field_err, refuse, split_host_port};
use crate::serial::lines::LineParser;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecoderKind {
    Json,
    Csv,
    Number,
    Raw,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicRaw {
    pub filter: String,
    pub channel: Option<String>,
    pub decoder: DecoderKind,
    /// json: channel name -> JSON pointer.
    pub fields: Option<BTreeMap<String, String>>,
    pub timestamp: Option<String>,
    pub timestamp_unit: Option<EpochUnit>,
    /// csv: the delimiter (default ",") and the name of each column (`""` skips one).
    pub delimiter: Option<String>,
    pub columns: Option<Vec<String>>,
    /// json / csv: per field `type`, `unit`, `scale`, `offset`.
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelRaw>,
    /// number: the value's type, unit, scale and offset.
    #[serde(rename = "type")]
    pub value_type: Option<ValueType>,
    pub unit: Option<String>,
    pub scale: Option<f64>,
    pub offset: Option<f64>,
    /// raw: the blob's MIME type (default application/octet-stream).
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttConfigRaw {
    pub broker: Option<String>,
    /// Embedded broker only: simulated instruments publish to it (see `mqtt::sim`).
    pub simulate: Option<bool>,
    pub url: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    pub client_id: Option<String>,
    pub qos: Option<u8>,
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    #[schemars(with = "Option<crate::config::DurationText>")]
    pub keep_alive: Option<Duration>,
    pub max_payload: Option<ByteSize>,
    #[serde(default)]
    pub topics: Vec<TopicRaw>,
}

/// One subscription and how its messages become readings.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicMap {
    pub filter: TopicFilter,
    pub channel: ChannelTemplate,
    pub decoder: Decoder,
}

/// An external broker. The password stays in its file until the driver connects.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalBroker {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub ca_cert: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub client_id: String,
    pub qos: u8,
    pub keep_alive: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BrokerRef {
    /// The agent's embedded broker, consumed in-process.
    Embedded,
    External(ExternalBroker),
}

#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    pub broker: BrokerRef,
    pub topics: Vec<TopicMap>,
    pub max_payload: usize,
    /// Run the simulated instruments of `mqtt::sim` against the embedded broker.
    pub simulate: bool,
}

impl MqttConfigRaw {
    /// `driver` is the driver's name, for the default client id.
    pub fn validate(self, driver: &str) -> Result<MqttConfig, FieldError> {
        let max_payload = self.max_payload.map_or(1 << 20, |b| b.0);
        if !(16..=256 << 20).contains(&max_payload) {
            return Err(field_err("max_payload", "must be 16 B to 256 MiB"));
        }
        let external = [
            ("username", self.username.is_some()),
            ("password_file", self.password_file.is_some()),
            ("ca_cert", self.ca_cert.is_some()),
            ("client_id", self.client_id.is_some()),
            ("qos", self.qos.is_some()),
            ("keep_alive", self.keep_alive.is_some()),
        ];
        let broker = match (self.broker.as_deref(), self.url) {
            (Some("embedded"), None) => {
                refuse(&external, "applies to an external broker (url) only")?;
                BrokerRef::Embedded
            }
            (Some(other), None) => {
                return Err(field_err(
                    "broker",
                    &format!(
                        "{other:?}: the only broker by name is \"embedded\"; use url for others"
                    ),
                ));
            }
            (None, Some(url)) => {
                let (tls, host, port) = parse_url(&url)?;
                if self.password_file.is_some() && self.username.is_none() {
                    return Err(field_err("password_file", "needs a username"));
                }
                if self.ca_cert.is_some() && !tls {
                    return Err(field_err("ca_cert", "applies to mqtts:// only"));
                }
                let qos = self.qos.unwrap_or(1);
                if qos > 1 {
                    return Err(field_err(
                        "qos",
                        "0 or 1 (QoS 1 is acknowledged after commit)",
                    ));
                }
                let keep_alive = self.keep_alive.unwrap_or(Duration::from_secs(30));
                if keep_alive < Duration::from_secs(5) || keep_alive > Duration::from_secs(3600) {
                    return Err(field_err("keep_alive", "must be between 5s and 1h"));
                }
                let client_id = self
                    .client_id
                    .unwrap_or_else(|| format!("skygate-{driver}"));
                if client_id.is_empty() || client_id.len() > 128 {
                    return Err(field_err("client_id", "1 to 128 characters"));
                }
                BrokerRef::External(ExternalBroker {
                    host,
                    port,
                    tls,
                    ca_cert: self.ca_cert,
                    username: self.username,
                    password_file: self.password_file,
                    client_id,
                    qos,
                    keep_alive,
                })
            }
            (Some(_), Some(_)) => {
                return Err(field_err(
                    "url",
                    "set either broker = \"embedded\" or url, not both",
                ));
            }
            (None, None) => {
                return Err(field_err(
                    "broker",
                    "set broker = \"embedded\" or url = \"mqtt://host:port\"",
                ));
            }
        };
        let simulate = self.simulate.unwrap_or(false);
        if simulate && broker != BrokerRef::Embedded {
            return Err(field_err(
                "simulate",
                "simulated instruments publish to broker = \"embedded\"",
            ));
        }
        if self.topics.is_empty() {
            return Err(field_err(
                "topics",
                "subscribe to at least one topic filter",
            ));
        }
        let topics = self
            .topics
            .into_iter()
            .enumerate()
            .map(|(i, t)| t.validate(&format!("topics[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MqttConfig {
            broker,
            topics,
            max_payload: max_payload as usize,
            simulate,
        })
    }
}

impl TopicRaw {
    fn validate(self, at: &str) -> Result<TopicMap, FieldError> {
        let path = |f: &str| format!("{at}.{f}");
        let prefix = |e: FieldError| FieldError {
            path: path(&e.path),
            message: e.message,
        };
        let filter = TopicFilter::parse(&path("filter"), &self.filter)?;
        let template = self.channel.as_deref().unwrap_or("{topic}");
        let channel = ChannelTemplate::parse(&path("channel"), template, &filter)?;
        let json_only = [
            ("fields", self.fields.is_some()),
            ("timestamp", self.timestamp.is_some()),
            ("timestamp_unit", self.timestamp_unit.is_some()),
        ];
        let csv_only = [
            ("delimiter", self.delimiter.is_some()),
            ("columns", self.columns.is_some()),
        ];
        let number_only = [
            ("type", self.value_type.is_some()),
            ("unit", self.unit.is_some()),
            ("scale", self.scale.is_some()),
            ("offset", self.offset.is_some()),
        ];
        let per_field = [("channels", !self.channels.is_empty())];
        let raw_only = [("content_type", self.content_type.is_some())];
        let kind = self.decoder;
        let not_for = |fields: &[(&str, bool)], which: &str| {
            refuse(fields, &format!("applies to decoder = \"{which}\" only")).map_err(prefix)
        };
        if kind != DecoderKind::Json {
            not_for(&json_only, "json")?;
        }
        if kind != DecoderKind::Csv {
            not_for(&csv_only, "csv")?;
        }
        if kind != DecoderKind::Number {
            not_for(&number_only, "number")?;
        }
        if kind != DecoderKind::Raw {
            not_for(&raw_only, "raw")?;
        }
        if matches!(kind, DecoderKind::Number | DecoderKind::Raw) {
            refuse(&per_field, "applies to the json and csv decoders").map_err(prefix)?;
        }
        let decoder = match kind {
            DecoderKind::Json => {
                let fields = self.fields.unwrap_or_default();
                for name in self.channels.keys() {
                    if !fields.contains_key(name) {
                        return Err(field_err(
                            &path(&format!("channels.{name}")),
                            "not one of the configured fields",
                        ));
                    }
                }
                let mut out = Vec::new();
                for (name, pointer) in fields {
                    if !(pointer.is_empty() || pointer.starts_with('/')) {
                        return Err(field_err(
                            &path(&format!("fields.{name}")),
                            &format!("{pointer:?} is not a JSON pointer (they start with '/')"),
                        ));
                    }
                    let spec = self
                        .channels
                        .get(&name)
                        .cloned()
                        .unwrap_or_default()
                        .validate(&path(&format!("channels.{name}")))?;
                    out.push(JsonField {
                        name,
                        pointer,
                        spec,
                    });
                }
                if self.timestamp_unit.is_some() && self.timestamp.is_none() {
                    return Err(field_err(&path("timestamp_unit"), "needs timestamp"));
                }
                let timestamp = match self.timestamp {
                    Some(p) if !p.starts_with('/') => {
                        return Err(field_err(
                            &path("timestamp"),
                            &format!("{p:?} is not a JSON pointer (they start with '/')"),
                        ));
                    }
                    Some(p) => Some((p, self.timestamp_unit.unwrap_or(EpochUnit::Seconds))),
                    None => None,
                };
                Decoder::Json {
                    fields: out,
                    timestamp,
                }
            }
            DecoderKind::Csv => {
                let Some(columns) = self.columns else {
                    return Err(field_err(
                        &path("columns"),
                        "name each column (\"\" skips one)",
                    ));
                };
                Decoder::Csv(
                    LineParser::new(
                        None,
                        Some(self.delimiter.unwrap_or_else(|| ",".into())),
                        Some(columns),
                        self.channels,
                    )
                    .map_err(|e| {
                        prefix(FieldError {
                            path: e.path.replace("fields", "columns"),
                            message: e.message,
                        })
                    })?,
                )
            }
            DecoderKind::Number => Decoder::Number(
                ChannelRaw {
                    value_type: self.value_type,
                    unit: self.unit,
                    scale: self.scale,
                    offset: self.offset,
                }
                .validate(at)?,
            ),
            DecoderKind::Raw => Decoder::Raw {
                content_type: self
                    .content_type
                    .unwrap_or_else(|| "application/octet-stream".into()),
            },
        };
        Ok(TopicMap {
            filter,
            channel,
            decoder,
        })
    }
}

/// `mqtt://host[:1883]` or `mqtts://host[:8883]`: (tls, host, port).
pub fn parse_url(url: &str) -> Result<(bool, String, u16), FieldError> {
    let bad = |why: &str| field_err("url", &format!("{url:?}: {why}"));
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err(bad("use mqtt://host:port or mqtts://host:port"));
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.contains('@') {
        return Err(bad(
            "no path or credentials in the URL (use username, password_file)",
        ));
    }
    let (host, port) = split_host_port(rest).map_err(|why| bad(&why))?;
    let port = port.unwrap_or(if tls { 8883 } else { 1883 });
    Ok((tls, host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<MqttConfig, FieldError> {
        toml::from_str::<MqttConfigRaw>(s)
            .expect("toml")
            .validate("dome")
    }

    #[test]
    fn an_external_broker_with_json_csv_number_and_raw_topics() {
        let c = parse(
            r#"
url = "mqtts://broker.site"
username = "gw"
password_file = "/etc/skygate/mqtt.pass"
[[topics]]
filter = "dome/+/env"
channel = "{1}"
decoder = "json"
fields = { t = "/env/t" }
timestamp = "/ts"
timestamp_unit = "ms"
[topics.channels.t]
unit = "degC"
[[topics]]
filter = "wx/csv"
decoder = "csv"
columns = ["t", "", "rh"]
[[topics]]
filter = "ups/load"
decoder = "number"
unit = "%"
[[topics]]
filter = "cam/#"
decoder = "raw"
content_type = "image/jpeg"
"#,
        )
        .expect("valid");
        let BrokerRef::External(b) = &c.broker else {
            panic!("external")
        };
        assert_eq!(
            (b.host.as_str(), b.port, b.tls, b.qos),
            ("broker.site", 8883, true, 1)
        );
        assert_eq!(b.client_id, "skygate-dome");
        assert_eq!(c.topics.len(), 4);
        assert!(
            matches!(&c.topics[0].decoder, Decoder::Json { fields, timestamp: Some((_, EpochUnit::Millis)) } if fields[0].spec.unit.as_deref() == Some("degC"))
        );
        assert_eq!(c.max_payload, 1 << 20);
    }

    #[test]
    fn mistakes_name_the_field() {
        let cases = [
            ("broker = \"embedded\"\n", "topics"),
            (
                "broker = \"embedded\"\nusername = \"x\"\n[[topics]]\nfilter = \"a\"\ndecoder = \"raw\"\n",
                "username",
            ),
            (
                "broker = \"mosquitto\"\n[[topics]]\nfilter = \"a\"\ndecoder = \"raw\"\n",
                "broker",
            ),
            (
                "url = \"http://x\"\n[[topics]]\nfilter = \"a\"\ndecoder = \"raw\"\n",
                "url",
            ),
            (
                "url = \"mqtt://x:0\"\n[[topics]]\nfilter = \"a\"\ndecoder = \"raw\"\n",
                "url",
            ),
            (
                "url = \"mqtt://x\"\nqos = 2\n[[topics]]\nfilter = \"a\"\ndecoder = \"raw\"\n",
                "qos",
            ),
            (
                "url = \"mqtt://x\"\nca_cert = \"/ca\"\n[[topics]]\nfilter = \"a\"\ndecoder = \"raw\"\n",
                "ca_cert",
            ),
            (
                "broker = \"embedded\"\n[[topics]]\nfilter = \"a/#/b\"\ndecoder = \"raw\"\n",
                "topics[0].filter",
            ),
            (
                "broker = \"embedded\"\n[[topics]]\nfilter = \"a\"\ndecoder = \"raw\"\nunit = \"V\"\n",
                "topics[0].unit",
            ),
            (
                "broker = \"embedded\"\n[[topics]]\nfilter = \"a\"\ndecoder = \"csv\"\n",
                "topics[0].columns",
            ),
            (
                "broker = \"embedded\"\n[[topics]]\nfilter = \"a\"\ndecoder = \"json\"\nfields = { t = \"t\" }\n",
                "topics[0].fields.t",
            ),
            (
                "broker = \"embedded\"\n[[topics]]\nfilter = \"a/+\"\nchannel = \"{2}\"\ndecoder = \"number\"\n",
                "topics[0].channel",
            ),
            (
                "broker = \"embedded\"\n[[topics]]\nfilter = \"a\"\ndecoder = \"json\"\n[topics.channels.x]\nunit = \"V\"\n",
                "topics[0].channels.x",
            ),
            (
                "broker = \"embedded\"\nmax_payload = \"1GiB\"\n[[topics]]\nfilter = \"a\"\ndecoder = \"raw\"\n",
                "max_payload",
            ),
            (
                "url = \"mqtt://x\"\nsimulate = true\n[[topics]]\nfilter = \"a\"\ndecoder = \"raw\"\n",
                "simulate",
            ),
        ];
        for (cfg, path) in cases {
            let e = parse(cfg).expect_err(cfg);
            assert_eq!(e.path, path, "{cfg}: {e}");
        }
    }

    #[test]
    fn urls_and_sizes() {
        assert_eq!(
            parse_url("mqtt://127.0.0.1:1884"),
            Ok((false, "127.0.0.1".into(), 1884))
        );
        assert_eq!(
            parse_url("mqtt://[::1]:1884"),
            Ok((false, "::1".into(), 1884))
        );
        assert_eq!(parse_url("mqtts://h"), Ok((true, "h".into(), 8883)));
        assert!(parse_url("mqtt://user:pw@h").is_err());
    }
}
