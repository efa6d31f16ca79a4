//! Configuration of an MQTT uplink sink.
//!
//! ```toml
//! [sinks.uplink]
//! kind = "mqtt"
//! url = "mqtts://broker.site:8883"     # mqtt:// or mqtts://
//! topic = "skygate/{gateway}/{stream}" # {stream} {gateway} {source} {channel}
//! ca_cert = "/etc/skygate/site-ca.pem" # trusted besides the system bundle
//! client_cert = "/etc/skygate/gw.crt"  # mutual TLS
//! client_key = "/etc/skygate/gw.key"
//! # username = "gw-17"                 # with password_file (never the password itself)
//! # password_file = "/etc/skygate/uplink.pass"
//! client_id = "skygate-gw-17-uplink"   # default: skygate-<gateway>-<sink>
//! keep_alive = "30s"
//! max_inflight = 100                   # QoS 1 messages awaiting PUBACK
//! max_message_bytes = "256KiB"         # larger records are dead-lettered
//! ack_timeout = "30s"                  # no PUBACK progress for this long: reconnect
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use skygate_drivers::FieldError;
use skygate_drivers::config::{ByteSize, duration_opt, field_err, pair, refuse};

use crate::template::Template;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttSinkRaw {
    pub url: String,
    pub topic: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub client_id: Option<String>,
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    #[schemars(with = "Option<skygate_drivers::config::DurationText>")]
    pub keep_alive: Option<Duration>,
    pub max_inflight: Option<u16>,
    pub max_message_bytes: Option<ByteSize>,
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    #[schemars(with = "Option<skygate_drivers::config::DurationText>")]
    pub ack_timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MqttSinkSettings {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub topic: Template,
    pub ca_cert: Option<PathBuf>,
    /// Client certificate and key, for mutual TLS.
    pub client_auth: Option<(PathBuf, PathBuf)>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// `None`: `skygate-<gateway>-<sink>`, filled in when the sink is built.
    pub client_id: Option<String>,
    pub keep_alive: Duration,
    pub max_inflight: u16,
    pub max_message_bytes: usize,
    pub ack_timeout: Duration,
}

impl MqttSinkRaw {
    pub fn validate(self) -> Result<MqttSinkSettings, FieldError> {
        let (tls, host, port) = skygate_drivers::mqtt::config::parse_url(&self.url)?;
        if !tls {
            refuse(
                &[
                    ("ca_cert", self.ca_cert.is_some()),
                    ("client_cert", self.client_cert.is_some()),
                    ("client_key", self.client_key.is_some()),
                ],
                "needs TLS: use an mqtts:// url",
            )?;
        }
        let client_auth = pair(
            self.client_cert,
            self.client_key,
            ("client_cert", "client_key"),
        )?;
        if self.password_file.is_some() && self.username.is_none() {
            return Err(field_err("username", "password_file needs a username"));
        }
        let topic = Template::parse(
            self.topic
                .as_deref()
                .unwrap_or("skygate/{gateway}/{stream}"),
        )
        .map_err(|e| field_err("topic", &e))?;
        let max_inflight = self.max_inflight.unwrap_or(100);
        if !(1..=1000).contains(&max_inflight) {
            return Err(field_err("max_inflight", "must be 1 to 1000"));
        }
        let max_message_bytes = self.max_message_bytes.map_or(256 * 1024, |b| b.0);
        if !(1024..=256 * 1024 * 1024).contains(&max_message_bytes) {
            return Err(field_err(
                "max_message_bytes",
                "must be between 1KiB and 256MiB",
            ));
        }
        let keep_alive = self.keep_alive.unwrap_or(Duration::from_secs(30));
        if keep_alive < Duration::from_secs(5) {
            return Err(field_err("keep_alive", "must be at least 5s"));
        }
        Ok(MqttSinkSettings {
            tls,
            host,
            port,
            topic,
            ca_cert: self.ca_cert,
            client_auth,
            username: self.username,
            password_file: self.password_file,
            client_id: self.client_id,
            keep_alive,
            max_inflight,
            max_message_bytes: max_message_bytes as usize,
            ack_timeout: self.ack_timeout.unwrap_or(Duration::from_secs(30)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MqttSinkSettings, FieldError> {
        toml::from_str::<MqttSinkRaw>(text)
            .expect("parse")
            .validate()
    }

    #[test]
    fn tls_settings_need_mqtts_and_come_in_pairs() {
        let s = parse("url = \"mqtts://h:8883\"\nclient_cert = \"/c\"\nclient_key = \"/k\"")
            .expect("ok");
        assert!(s.tls && s.client_auth.is_some());
        assert_eq!((s.host.as_str(), s.port), ("h", 8883));
        assert_eq!(
            parse("url = \"mqtt://h\"\nca_cert = \"/ca\"")
                .unwrap_err()
                .path,
            "ca_cert"
        );
        assert_eq!(
            parse("url = \"mqtts://h\"\nclient_cert = \"/c\"")
                .unwrap_err()
                .path,
            "client_key"
        );
        assert_eq!(
            parse("url = \"mqtts://h\"\npassword_file = \"/p\"")
                .unwrap_err()
                .path,
            "username"
        );
        assert_eq!(parse("url = \"http://h\"").unwrap_err().path, "url");
        assert_eq!(
            parse("url = \"mqtt://h\"\ntopic = \"a/{x}\"")
                .unwrap_err()
                .path,
            "topic"
        );
    }
}
