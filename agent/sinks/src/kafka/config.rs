//! Configuration of a Kafka sink.
//!
//! ```toml
//! [sinks.pipeline]
//! kind = "kafka"
//! brokers = ["kafka1.site:9093", "kafka2.site:9093"]
//! topic = "skygate.{stream}"        # {stream} {gateway} {source} {channel}
//! key = "{stream}"                  # same placeholders; one stream -> one partition keeps order
//! compression = "zstd"              # none | gzip | snappy | lz4 | zstd
//! delivery_timeout = "30s"          # a record not confirmed by then fails the batch (retried)
//! message_max_bytes = "1MiB"        # larger records are dead-lettered, not retried
//! queue_max_messages = 100000       # librdkafka's local queue bound
//! tls = true                        # implied by tls_ca / tls_cert
//! tls_ca = "/etc/skygate/kafka-ca.pem"
//! tls_cert = "/etc/skygate/gw.crt"  # mutual TLS: client certificate and key
//! tls_key = "/etc/skygate/gw.key"
//! sasl_mechanism = "SCRAM-SHA-512"  # or SCRAM-SHA-256; needs TLS
//! sasl_username = "gw-17"
//! sasl_password_file = "/etc/skygate/kafka.pass"
//! ```
//!
//! The safety settings are not configurable: `acks=all` and the idempotent producer are
//! always on, because the buffer counts a record delivered only on the broker's
//! confirmation of a replicated write.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use skygate_drivers::FieldError;
use skygate_drivers::config::{ByteSize, duration_opt, field_err, pair, split_host_port};

use crate::template::Template;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkRaw {
    pub brokers: Vec<String>,
    pub topic: Option<String>,
    pub key: Option<String>,
    pub compression: Option<String>,
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    #[schemars(with = "Option<skygate_drivers::config::DurationText>")]
    pub delivery_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    #[schemars(with = "Option<skygate_drivers::config::DurationText>")]
    pub linger: Option<Duration>,
    pub message_max_bytes: Option<ByteSize>,
    pub queue_max_messages: Option<u32>,
    pub tls: Option<bool>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password_file: Option<PathBuf>,
    pub client_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSinkSettings {
    pub brokers: Vec<String>,
    pub topic: Template,
    pub key: Template,
    pub compression: &'static str,
    pub delivery_timeout: Duration,
    pub linger: Duration,
    pub message_max_bytes: u64,
    pub queue_max_messages: u32,
    pub tls: Option<KafkaTls>,
    pub sasl: Option<KafkaSasl>,
    pub client_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KafkaTls {
    /// Trusted CAs; without one, the system bundle.
    pub ca: Option<PathBuf>,
    /// Client certificate and key, for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSasl {
    pub mechanism: &'static str,
    pub username: String,
    /// Read when the producer is built; the password is never in the config.
    pub password_file: PathBuf,
}

const COMPRESSIONS: &[&str] = &["none", "gzip", "snappy", "lz4", "zstd"];
const MECHANISMS: &[&str] = &["SCRAM-SHA-256", "SCRAM-SHA-512"];

impl KafkaSinkRaw {
    pub fn validate(self) -> Result<KafkaSinkSettings, FieldError> {
        if self.brokers.is_empty() {
            return Err(field_err(
                "brokers",
                "list at least one broker as host:port",
            ));
        }
        for b in &self.brokers {
            let why = match split_host_port(b) {
                Ok((_, Some(_))) => continue,
                Ok((_, None)) => "no port".to_string(),
                Err(why) => why,
            };
            return Err(field_err(
                "brokers",
                &format!("{b:?} is not host:port ({why}; security comes from tls/sasl)"),
            ));
        }
        let topic = Template::parse(self.topic.as_deref().unwrap_or("skygate.{stream}"))
            .map_err(|e| field_err("topic", &e))?;
        let key = Template::parse(self.key.as_deref().unwrap_or("{stream}"))
            .map_err(|e| field_err("key", &e))?;
        let compression = match self.compression.as_deref() {
            None => "zstd",
            Some(c) => COMPRESSIONS
                .iter()
                .copied()
                .find(|k| *k == c)
                .ok_or_else(|| {
                    field_err(
                        "compression",
                        &format!("unknown {c:?}; one of {}", COMPRESSIONS.join(", ")),
                    )
                })?,
        };
        let delivery_timeout = self.delivery_timeout.unwrap_or(Duration::from_secs(30));
        if delivery_timeout < Duration::from_secs(1) {
            return Err(field_err("delivery_timeout", "must be at least 1s"));
        }
        let linger = self.linger.unwrap_or(Duration::from_millis(5));
        if linger > Duration::from_secs(5) {
            return Err(field_err("linger", "must be at most 5s"));
        }
        let message_max_bytes = self.message_max_bytes.map_or(1_000_000, |b| b.0);
        if !(1_000..=1_000_000_000).contains(&message_max_bytes) {
            return Err(field_err(
                "message_max_bytes",
                "must be between 1KB and 1GB",
            ));
        }
        let queue_max_messages = self.queue_max_messages.unwrap_or(100_000);
        if !(1_000..=10_000_000).contains(&queue_max_messages) {
            return Err(field_err(
                "queue_max_messages",
                "must be between 1000 and 10000000",
            ));
        }
        let client = pair(self.tls_cert, self.tls_key, ("tls_cert", "tls_key"))?;
        let wants_tls = self.tls_ca.is_some() || client.is_some();
        let tls = match self.tls {
            Some(false) if wants_tls => {
                return Err(field_err(
                    "tls",
                    "tls = false contradicts tls_ca/tls_cert; remove one",
                ));
            }
            Some(true) => true,
            Some(false) => false,
            None => wants_tls,
        };
        let tls = tls.then_some(KafkaTls {
            ca: self.tls_ca,
            client,
        });
        let sasl = match (
            self.sasl_mechanism,
            self.sasl_username,
            self.sasl_password_file,
        ) {
            (None, None, None) => None,
            (Some(m), Some(u), Some(p)) => {
                let mechanism = MECHANISMS
                    .iter()
                    .copied()
                    .find(|k| k.eq_ignore_ascii_case(&m))
                    .ok_or_else(|| {
                        field_err(
                            "sasl_mechanism",
                            &format!("unsupported {m:?}; one of {}", MECHANISMS.join(", ")),
                        )
                    })?;
                if tls.is_none() {
                    return Err(field_err(
                        "sasl_mechanism",
                        "SASL needs TLS: set tls = true (and tls_ca for a site CA)",
                    ));
                }
                Some(KafkaSasl {
                    mechanism,
                    username: u,
                    password_file: p,
                })
            }
            (m, u, _) => {
                let missing = if m.is_none() {
                    "sasl_mechanism"
                } else if u.is_none() {
                    "sasl_username"
                } else {
                    "sasl_password_file"
                };
                return Err(field_err(
                    missing,
                    "SASL needs sasl_mechanism, sasl_username and sasl_password_file",
                ));
            }
        };
        Ok(KafkaSinkSettings {
            brokers: self.brokers,
            topic,
            key,
            compression,
            delivery_timeout,
            linger,
            message_max_bytes,
            queue_max_messages,
            tls,
            sasl,
            client_id: self.client_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(extra: &str) -> Result<KafkaSinkSettings, FieldError> {
        let text = format!("brokers = [\"127.0.0.1:9092\"]\n{extra}");
        let raw: KafkaSinkRaw = toml::from_str(&text).expect("parse");
        raw.validate()
    }

    #[test]
    fn defaults_are_safe_and_mistakes_name_their_field() {
        let s = raw("").expect("valid");
        assert_eq!(s.compression, "zstd");
        assert!(s.tls.is_none() && s.sasl.is_none());
        assert_eq!(
            raw("compression = \"brotli\"").unwrap_err().path,
            "compression"
        );
        assert_eq!(raw("topic = \"t.{nope}\"").unwrap_err().path, "topic");
        assert_eq!(raw("tls_cert = \"/c\"").unwrap_err().path, "tls_key");
        let e = raw("sasl_mechanism = \"SCRAM-SHA-256\"\nsasl_username = \"u\"\nsasl_password_file = \"/p\"")
            .unwrap_err();
        assert!(e.message.contains("needs TLS"), "{e}");
        let e = raw("sasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"\nsasl_password_file = \"/p\"\ntls = true")
            .unwrap_err();
        assert_eq!(e.path, "sasl_mechanism");
        let s = raw("tls_ca = \"/ca\"\nsasl_mechanism = \"scram-sha-512\"\nsasl_username = \"u\"\nsasl_password_file = \"/p\"")
            .expect("valid");
        assert_eq!(s.sasl.expect("sasl").mechanism, "SCRAM-SHA-512");
        let bad: KafkaSinkRaw = toml::from_str("brokers = [\"tcp://h:1\"]").expect("parse");
        assert_eq!(bad.validate().unwrap_err().path, "brokers");
    }
}
