//! MQTT uplink sink: records to an MQTT broker at QoS 1, over TLS (mutual TLS supported).
//!
//! One message per record on the topic its template gives (default
//! `skygate/{gateway}/{stream}`); the payload is the record's NDJSON line of schema 1 (see
//! `model`) without the newline, blobs inline as base64. Gap markers go to the topic of
//! their stream (`_gaps` when the loss spans every stream) as their NDJSON line.
//!
//! # Acknowledgement
//! `publish()` returning only means rumqttc queued the message. A batch counts as
//! delivered when the broker sent a PUBACK for the packet id of every message of it: the
//! sink drives the event loop itself, notes the packet id rumqttc gives each outgoing
//! publish and counts the PUBACKs for those ids. At most `max_inflight` messages await
//! their PUBACK at a time. An error, or no PUBACK progress for `ack_timeout`, drops the
//! connection (a clean session, so nothing half-sent is replayed behind our back) and
//! fails the batch; the delivery loop sends it again on a new connection, so a message may
//! arrive twice (`gateway` + `seq` in the payload identify it), never not at all.
//!
//! A record larger than `max_message_bytes` is rejected (dead-lettered) before sending:
//! brokers drop a connection over an oversized packet, which would fail every batch.

pub mod config;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
};

use super::{Batch, Delivered, Rejected, Sink, SinkError, SinkFuture};
pub use config::{MqttSinkRaw, MqttSinkSettings};
use skygate_model::{self as model, BlobPlacement, Gap};
use skygate_security::secret::Secret;

/// How long a connection attempt may take, CONNACK included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

pub struct MqttSink {
    name: String,
    settings: Arc<MqttSinkSettings>,
    gateway: Arc<str>,
    client_id: String,
    /// The connection. rumqttc's event loop is not `Sync`; the mutex makes the sink so,
    /// and is never locked: every use has `&mut self` (`get_mut`).
    conn: std::sync::Mutex<Option<(AsyncClient, EventLoop)>>,
}

impl std::fmt::Debug for MqttSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSink")
            .field("name", &self.name)
            .field(
                "broker",
                &format!("{}:{}", self.settings.host, self.settings.port),
            )
            .finish_non_exhaustive()
    }
}

impl MqttSink {
    pub fn new(name: &str, settings: &MqttSinkSettings, gateway: &str) -> Self {
        Self {
            name: name.to_string(),
            client_id: settings
                .client_id
                .clone()
                .unwrap_or_else(|| format!("skygate-{gateway}-{name}")),
            settings: Arc::new(settings.clone()),
            gateway: Arc::from(gateway),
            conn: std::sync::Mutex::new(None),
        }
    }

    fn broker(&self) -> String {
        let scheme = if self.settings.tls { "mqtts" } else { "mqtt" };
        format!("{scheme}://{}:{}", self.settings.host, self.settings.port)
    }

    /// The connection, made (and its CONNACK awaited) when there is none.
    fn conn(&mut self) -> &mut Option<(AsyncClient, EventLoop)> {
        self.conn
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn connection(&mut self) -> Result<&mut (AsyncClient, EventLoop), SinkError> {
        if self.conn().is_none() {
            let s = &self.settings;
            let mut opts = MqttOptions::new(self.client_id.clone(), s.host.clone(), s.port);
            opts.set_keep_alive(s.keep_alive)
                .set_clean_session(true)
                .set_inflight(s.max_inflight)
                // Topic and header on top of the payload.
                .set_max_packet_size(64 * 1024, s.max_message_bytes + 64 * 1024);
            let settings = self.settings.clone();
            // Key, certificate and password files: small, but still file I/O.
            let (password, tls) = tokio::task::spawn_blocking(move || -> Result<_, String> {
                let password = match &settings.password_file {
                    Some(p) => Some(Secret::from_password_file(p).map_err(|e| e.to_string())?),
                    None => None,
                };
                let tls = if !settings.tls {
                    None
                } else {
                    let ca = settings.ca_cert.as_deref();
                    let cfg = match &settings.client_auth {
                        Some((cert, key)) => skygate_util::tls::client_config_mtls(ca, cert, key),
                        None => skygate_util::tls::client_config_site(ca),
                    };
                    Some(cfg.map_err(|e| format!("TLS: {e}"))?)
                };
                Ok((password, tls))
            })
            .await
            .map_err(|e| SinkError::transient("setup task", e))?
            .map_err(SinkError::permanent_msg)?;
            if let Some(user) = &s.username {
                opts.set_credentials(
                    user.clone(),
                    password
                        .as_ref()
                        .map(|p| p.expose().to_string())
                        .unwrap_or_default(),
                );
            }
            if let Some(cfg) = tls {
                opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(cfg)));
            }
            let (client, mut events) = AsyncClient::new(opts, usize::from(s.max_inflight) * 2);
            let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
                loop {
                    match events.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                        Ok(_) => {}
                        Err(e) => return Err(e),
                    }
                }
            })
            .await;
            match connected {
                Ok(Ok(())) => {
                    tracing::info!(sink = %self.name, broker = %self.broker(), "connected");
                    *self.conn() = Some((client, events));
                }
                Ok(Err(e)) => {
                    return Err(SinkError::transient(self.broker(), e));
                }
                Err(_) => {
                    return Err(SinkError::transient_msg(format!(
                        "{}: no CONNACK within {CONNECT_TIMEOUT:?}",
                        self.broker()
                    )));
                }
            }
        }
        Ok(self.conn().as_mut().expect("connected above"))
    }

    /// Publishes every message at QoS 1 and returns once each one's PUBACK arrived.
    async fn publish_all(&mut self, msgs: Vec<(String, Vec<u8>)>) -> Result<(), SinkError> {
        let broker = self.broker();
        let (inflight, ack_timeout) = (
            usize::from(self.settings.max_inflight),
            self.settings.ack_timeout,
        );
        let result = async {
            let (client, events) = self.connection().await?;
            let total = msgs.len();
            let mut msgs = msgs.into_iter();
            let (mut queued, mut acked) = (0usize, 0usize);
            // Packet ids of our publishes that still await their PUBACK.
            let mut waiting: HashSet<u16> = HashSet::new();
            loop {
                while queued < total && queued - acked < inflight {
                    let (topic, payload) = msgs.next().expect("counted");
                    client
                        .try_publish(topic, QoS::AtLeastOnce, false, payload)
                        .map_err(|e| SinkError::transient(broker.to_string(), e))?;
                    queued += 1;
                }
                if acked == total {
                    return Ok(());
                }
                match tokio::time::timeout(ack_timeout, events.poll()).await {
                    Err(_) => {
                        return Err(SinkError::transient_msg(format!(
                            "{broker}: no PUBACK for {ack_timeout:?} ({acked} of {total} acknowledged)"
                        )));
                    }
                    Ok(Err(e)) => return Err(SinkError::transient(broker.to_string(), e)),
                    Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                        waiting.insert(pkid);
                    }
                    Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                        if waiting.remove(&ack.pkid) {
                            acked += 1;
                        }
                    }
                    Ok(Ok(_)) => {}
                }
            }
        }
        .await;
        if result.is_err() {
            // A clean session next time: nothing of this one is replayed.
            *self.conn() = None;
        }
        result
    }
}

impl Sink for MqttSink {
    fn deliver(&mut self, batch: Batch) -> SinkFuture<'_, Delivered> {
        Box::pin(async move {
            let (gateway, settings) = (self.gateway.clone(), self.settings.clone());
            // Encoding is CPU work: off the runtime.
            let (msgs, rejected, bytes) = tokio::task::spawn_blocking(move || {
                let mut msgs = Vec::with_capacity(batch.len());
                let mut rejected = Vec::new();
                let mut bytes = 0u64;
                let mut topic = String::new();
                for r in batch.iter() {
                    let mut payload = Vec::with_capacity(256);
                    model::write_ndjson(&mut payload, &gateway, r, BlobPlacement::Inline);
                    payload.pop_if(|b| *b == b'\n');
                    if payload.len() > settings.max_message_bytes {
                        rejected.push(Rejected {
                            seq: r.seq,
                            reason: format!(
                                "{} bytes as an MQTT message, more than max_message_bytes ({})",
                                payload.len(),
                                settings.max_message_bytes
                            ),
                        });
                        continue;
                    }
                    settings.topic.render_into(&mut topic, &gateway, r);
                    bytes += (payload.len() + topic.len()) as u64;
                    msgs.push((topic.clone(), payload));
                }
                (msgs, rejected, bytes)
            })
            .await
            .map_err(|e| SinkError::transient("encoder task", e))?;
            self.publish_all(msgs).await?;
            Ok(Delivered { bytes, rejected })
        })
    }

    fn deliver_gap<'a>(&'a mut self, gap: &'a Gap) -> SinkFuture<'a> {
        Box::pin(async move {
            let stream = gap.stream_name("_gaps");
            let topic = self.settings.topic.render_gap(&self.gateway, stream);
            let mut payload = model::gap_ndjson(&self.gateway, gap);
            payload.pop_if(|b| *b == b'\n');
            self.publish_all(vec![(topic, payload)]).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

    use super::*;

    /// A Mosquitto of its own on a free loopback port (Debian `mosquitto`, which
    /// `scripts/setup` installs), killed on drop.
    struct Mosquitto(std::process::Child, u16);

    impl Drop for Mosquitto {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn mosquitto() -> Mosquitto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let child = std::process::Command::new("mosquitto")
            .args(["-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto (Debian mosquitto; scripts/setup installs it)");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "mosquitto did not listen"
            );
            #[allow(
                clippy::disallowed_methods,
                reason = "a test helper waiting for mosquitto, off any runtime"
            )]
            std::thread::sleep(Duration::from_millis(50));
        }
        Mosquitto(child, port)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gap_marker_is_published_on_its_streams_topic_and_acknowledged() {
        let broker = mosquitto();
        let (client, mut events) =
            AsyncClient::new(MqttOptions::new("verifier", "127.0.0.1", broker.1), 10);
        client
            .subscribe("skygate/gw/#", QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        // Wait for the SUBACK before anything is published.
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.expect("poll") {
                break;
            }
        }
        let settings =
            toml::from_str::<MqttSinkRaw>(&format!("url = \"mqtt://127.0.0.1:{}\"", broker.1))
                .expect("parse")
                .validate()
                .expect("valid");
        let mut sink = MqttSink::new("up", &settings, "gw");
        let gap = skygate_model::fixtures::gap();
        sink.deliver_gap(&gap)
            .await
            .expect("delivered and acknowledged");
        let p = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Event::Incoming(Packet::Publish(p)) = events.poll().await.expect("poll") {
                    return p;
                }
            }
        })
        .await
        .expect("the gap marker arrives");
        assert_eq!(p.topic, "skygate/gw/wx");
        let v: serde_json::Value = serde_json::from_slice(&p.payload).expect("json");
        assert_eq!(v["type"], "gap");
        assert_eq!(
            (v["first_seq"].as_u64(), v["last_seq"].as_u64()),
            (Some(10), Some(19))
        );
    }
}
