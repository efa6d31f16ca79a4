//! MQTT ingest: messages on subscribed topic filters become readings, through a decoder
//! per filter (JSON, CSV, number, raw).
//!
//! Two brokers:
//! - **embedded**: the agent's own broker on the instrument LAN, consumed in-process
//!   through [`LocalBroker`] (no socket, no second copy of each message);
//! - **external**: a site broker, through rumqttc, with username/password (read from a
//!   file when connecting), TLS trusting the system bundle plus a site CA, and a
//!   persistent session (`clean_session = false`) so the broker keeps QoS 1 messages for
//!   the gateway while it is away.
//!
//! Invariants:
//! - QoS 1 from an external broker is acknowledged only once the message's readings are
//!   committed to the buffer (or the config routes the stream nowhere); a message that
//!   was not committed when the agent stopped is not acknowledged, and the broker sends it
//!   again on the next connection. Acknowledgements go out in the order messages came, as
//!   MQTT requires.
//! - QoS 1/2 from the embedded broker: each [`Delivery`] carries the answer its PUBACK
//!   waits for; the driver answers once the message's readings are committed (in the
//!   order delivered), or at once when the message gives nothing to store.
//! - A payload that does not decode is counted (`decode_errors`), reported in the
//!   driver's recent errors with its topic, and dropped; a field that does not convert
//!   is a bad-quality reading. Nothing a publisher sends can stop the driver.
//! - A payload larger than `max_payload` is refused by the client (external) or the
//!   embedded broker before it reaches a decoder.
//! - A message matching several filters is decoded by the first in config order only.
//! - Readings take the time the message arrived, unless the JSON decoder found the
//!   instrument's own timestamp; either way they carry the gateway's time quality.
//! - Connection failures back off (1 s doubling to 60 s, reset on a good connection).

pub mod config;
pub mod decode;
pub mod sim;
pub mod topic;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::{mpsc, oneshot};

pub use config::{BrokerRef, ExternalBroker, MqttConfig, MqttConfigRaw, TopicMap};
pub use topic::TopicFilter;

use crate::driver::{
    BoxFuture, Committed, Driver, DriverContext, DriverError, SendError, doubling_backoff,
};
use crate::reading::{Quality, Reading};

/// A message as a broker delivered it.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
}

/// A message from the embedded broker and, for a QoS 1/2 publish, the answer its
/// publisher waits for: the broker acknowledges the PUBLISH only once every subscriber
/// has answered [`Committed`]; a dropped `ack` means "not committed", and the broker
/// closes the publisher's connection without acknowledging, so the instrument sends
/// the message again.
#[derive(Debug)]
pub struct Delivery {
    pub msg: Message,
    pub ack: Option<oneshot::Sender<Committed>>,
}

/// The agent's embedded broker, as an MQTT driver sees it.
pub trait LocalBroker: Send + Sync + std::fmt::Debug + 'static {
    /// Messages on any of `filters` from now on, until the receiver is dropped. One
    /// subscription per `subscriber` name: a new one replaces the old.
    fn subscribe(
        &self,
        subscriber: &str,
        filters: Vec<TopicFilter>,
    ) -> BoxFuture<Result<mpsc::Receiver<Delivery>, String>>;

    /// Publishes as a client would (simulated instruments use this).
    fn publish(&self, msg: Message) -> BoxFuture<Result<(), String>>;
}

/// QoS 1 messages received but not yet acknowledged, at most: the client's inflight.
const MAX_UNACKED: usize = 100;
/// Embedded-broker messages whose commit the driver waits for, at most; past it the
/// driver stops taking deliveries (the broker's queue, then its publishers, wait).
const MAX_PENDING_ACKS: usize = 4096;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct MqttDriver {
    name: Arc<str>,
    config: MqttConfig,
    local: Option<Arc<dyn LocalBroker>>,
}

impl MqttDriver {
    /// `local` is the embedded broker, when the agent runs one.
    pub fn new(name: &str, config: &MqttConfig, local: Option<Arc<dyn LocalBroker>>) -> Self {
        Self {
            name: Arc::from(name),
            config: config.clone(),
            local,
        }
    }
}

impl Driver for MqttDriver {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<Result<(), DriverError>> {
        Box::pin(async move {
            match &self.config.broker {
                BrokerRef::Embedded => self.run_embedded(&ctx).await,
                BrokerRef::External(b) => self.run_external(b, &ctx).await,
            }
        })
    }
}

impl MqttDriver {
    fn fatal(&self, message: String) -> DriverError {
        DriverError::Fatal {
            driver: self.name.to_string(),
            message,
        }
    }

    async fn run_embedded(&self, ctx: &DriverContext) -> Result<(), DriverError> {
        let Some(local) = &self.local else {
            return Err(DriverError::Config {
                driver: self.name.to_string(),
                message: "broker = \"embedded\" needs the agent's [broker] section".into(),
            });
        };
        let filters = self
            .config
            .topics
            .iter()
            .map(|t| t.filter.clone())
            .collect();
        let mut rx = local
            .subscribe(&self.name, filters)
            .await
            .map_err(|e| self.fatal(format!("embedded broker: {e}")))?;
        // Subscribed first, so the simulated instruments' first messages are not missed.
        if self.config.simulate {
            tokio::spawn(sim::instruments(local.clone(), ctx.cancel.child_token()));
        }
        ctx.health.ok();
        // Commits answered in the order sent, so the oldest pending is answered first.
        let mut pending: VecDeque<(oneshot::Receiver<Committed>, oneshot::Sender<Committed>)> =
            VecDeque::new();
        loop {
            let full = pending.len() >= MAX_PENDING_ACKS;
            let oldest = async {
                match pending.front_mut() {
                    Some((rx, _)) => rx.await,
                    None => std::future::pending().await,
                }
            };
            let delivery = tokio::select! {
                _ = ctx.cancel.cancelled() => return Ok(()),
                committed = oldest => {
                    let (_, ack) = pending.pop_front().expect("front exists");
                    match committed {
                        Ok(c) => { let _ = ack.send(c); }
                        // Not committed (the agent is stopping): the ack is dropped, so
                        // the broker does not acknowledge and the publisher resends.
                        Err(_) => drop(ack),
                    }
                    continue;
                }
                d = rx.recv(), if !full => d,
            };
            let Some(Delivery { msg, ack }) = delivery else {
                return Err(self.fatal("the embedded broker stopped".into()));
            };
            match self.handle(ctx, &msg, ack.is_some()).await {
                Ok(Some(committed)) => pending.push_back((committed, ack.expect("asked for"))),
                // Nothing to store (not decoded, or nothing in it): answered at once.
                Ok(None) => {
                    if let Some(ack) = ack {
                        let _ = ack.send(Committed::NotRouted);
                    }
                }
                Err(SendError) => return Ok(()),
            }
        }
    }

    /// Decodes one message and sends its readings; with `commit`, returns a receiver for
    /// the commit of the last one (`None` when the message gave nothing to store).
    async fn handle(
        &self,
        ctx: &DriverContext,
        msg: &Message,
        commit: bool,
    ) -> Result<Option<oneshot::Receiver<Committed>>, SendError> {
        let Some((map, caps)) = self
            .config
            .topics
            .iter()
            .find_map(|t| t.filter.captures(&msg.topic).map(|c| (t, c)))
        else {
            // A broker may deliver an overlapping subscription's message; not ours.
            ctx.health.count("unmatched", 1);
            return Ok(None);
        };
        if msg.payload.len() > self.config.max_payload {
            ctx.health.count("decode_errors", 1);
            ctx.health.error(format!(
                "{}: payload of {} bytes is over max_payload ({})",
                msg.topic,
                msg.payload.len(),
                self.config.max_payload
            ));
            return Ok(None);
        }
        let payload = match map.decoder.decode(&msg.payload) {
            Ok(p) => p,
            Err(e) => {
                ctx.health.count("decode_errors", 1);
                ctx.health.error(format!("{}: {e}", msg.topic));
                tracing::debug!(driver = %self.name, topic = %msg.topic, error = %e, "payload not decoded");
                return Ok(None);
            }
        };
        ctx.health.ok();
        ctx.health.count("messages", 1);
        let (now, tq) = ctx.clock.now();
        let ts = payload.ts.unwrap_or(now);
        let base = map.channel.render(&msg.topic, &caps);
        let last = payload.values.len().saturating_sub(1);
        let mut committed = None;
        for (i, d) in payload.values.into_iter().enumerate() {
            let channel = match (base.is_empty(), d.field.is_empty()) {
                (_, true) => base.clone(),
                (true, false) => d.field,
                (false, false) => format!("{base}.{}", d.field),
            };
            let (value, quality) = match d.value {
                Ok(v) => (v, Quality::Good),
                Err(why) => (
                    crate::reading::Value::Text(String::new()),
                    Quality::Bad(why),
                ),
            };
            let mut r = Reading::good(
                self.name.clone(),
                Arc::from(channel),
                (ts, tq),
                value,
                d.unit.map(Arc::from),
            );
            r.quality = quality;
            if commit && i == last {
                committed = Some(ctx.out.send_committed(r).await?);
            } else {
                ctx.out.send(r).await?;
            }
        }
        Ok(committed)
    }

    async fn run_external(
        &self,
        b: &ExternalBroker,
        ctx: &DriverContext,
    ) -> Result<(), DriverError> {
        let mut failures = 0u32;
        loop {
            let outcome = self.session(b, ctx, &mut failures).await;
            match outcome {
                Session::Stopped => return Ok(()),
                Session::Failed(e) => {
                    failures += 1;
                    ctx.health.error(e.clone());
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(driver = %self.name, error = %e, failures, "MQTT broker connection failed; backing off");
                    }
                    let wait = doubling_backoff(FIRST_RETRY, failures, MAX_RETRY);
                    tokio::select! {
                        _ = ctx.cancel.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// One client, from connecting until it fails or the driver stops.
    async fn session(
        &self,
        b: &ExternalBroker,
        ctx: &DriverContext,
        failures: &mut u32,
    ) -> Session {
        let mut opts = MqttOptions::new(b.client_id.clone(), b.host.clone(), b.port);
        opts.set_keep_alive(b.keep_alive)
            .set_clean_session(false)
            .set_manual_acks(b.qos == 1)
            .set_inflight(MAX_UNACKED as u16)
            // Topic and header on top of the payload.
            .set_max_packet_size(self.config.max_payload + 65_536 + 16, 64 * 1024);
        if let Some(user) = &b.username {
            let password = match &b.password_file {
                None => String::new(),
                Some(p) => match std::fs::read_to_string(p) {
                    Ok(s) => s.trim_end_matches(['\r', '\n']).to_string(),
                    Err(e) => {
                        return Session::Failed(format!("password_file {}: {e}", p.display()));
                    }
                },
            };
            opts.set_credentials(user.clone(), password);
        }
        if b.tls {
            match crate::tls::client_config_site(b.ca_cert.as_deref()) {
                Ok(cfg) => {
                    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(cfg)));
                }
                Err(e) => return Session::Failed(format!("TLS: {e}")),
            }
        }
        let (client, mut events) = AsyncClient::new(opts, 64);
        let qos = if b.qos == 1 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        let filters: Vec<_> = self
            .config
            .topics
            .iter()
            .map(|t| rumqttc::SubscribeFilter::new(t.filter.as_str().to_string(), qos))
            .collect();
        // Messages waiting for their commit, oldest first: acknowledged in this order.
        let mut unacked: VecDeque<(rumqttc::Publish, Option<oneshot::Receiver<Committed>>)> =
            VecDeque::new();
        loop {
            // Acknowledge what is committed, in order; stop at the first still waiting.
            while let Some((_, pending)) = unacked.front_mut() {
                let done = match pending {
                    None => true,
                    Some(rx) => match rx.try_recv() {
                        Ok(_) => true,
                        Err(oneshot::error::TryRecvError::Empty) => false,
                        Err(oneshot::error::TryRecvError::Closed) => return Session::abandoned(),
                    },
                };
                if !done {
                    break;
                }
                let (publish, _) = unacked.pop_front().expect("front exists");
                if client.try_ack(&publish).is_err() {
                    return Session::Failed("the MQTT client stopped".into());
                }
            }
            let full = unacked.len() >= MAX_UNACKED;
            // Resolves when the oldest message's commit is answered (true) or abandoned.
            let wait_commit = async {
                match unacked.front_mut().and_then(|(_, rx)| rx.as_mut()) {
                    Some(rx) => rx.await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let step = tokio::select! {
                _ = ctx.cancel.cancelled() => None,
                committed = wait_commit => Some(Err(committed)),
                ev = events.poll(), if !full => Some(Ok(ev)),
            };
            let event = match step {
                None => {
                    let _ = client.try_disconnect();
                    return Session::Stopped;
                }
                Some(Err(false)) => return Session::abandoned(),
                Some(Err(true)) => {
                    if let Some((_, rx)) = unacked.front_mut() {
                        *rx = None;
                    }
                    continue;
                }
                Some(Ok(ev)) => ev,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    tracing::info!(driver = %self.name, host = %b.host, port = b.port, session_present = ack.session_present, "connected to MQTT broker");
                    if client.try_subscribe_many(filters.clone()).is_err() {
                        return Session::Failed("the MQTT client stopped".into());
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let refused = ack
                        .return_codes
                        .iter()
                        .zip(&self.config.topics)
                        .filter(|(c, _)| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                        .map(|(_, t)| t.filter.as_str())
                        .collect::<Vec<_>>();
                    if refused.is_empty() {
                        *failures = 0;
                        ctx.health.ok();
                    } else {
                        let e = format!(
                            "the broker refused the subscription to {refused:?} (its ACL?)"
                        );
                        ctx.health.error(e.clone());
                        tracing::warn!(driver = %self.name, "{e}");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let msg = Message {
                        topic: p.topic.clone(),
                        payload: p.payload.clone(),
                    };
                    let manual = p.qos != QoS::AtMostOnce && b.qos == 1;
                    match self.handle(ctx, &msg, manual).await {
                        Ok(rx) if manual => unacked.push_back((p, rx)),
                        Ok(_) => {}
                        Err(SendError) => return Session::Stopped,
                    }
                }
                Ok(_) => {}
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                    return Session::Failed(format!("the broker refused the connection: {code:?}"));
                }
                Err(e) => return Session::Failed(format!("{}:{}: {e}", b.host, b.port)),
            }
        }
    }
}

enum Session {
    Stopped,
    Failed(String),
}

impl Session {
    /// A commit was not confirmed (the agent is stopping, or the buffer failed): the
    /// message stays unacknowledged and a new connection gets it again.
    fn abandoned() -> Self {
        Session::Failed("a message's commit was not confirmed; reconnecting for redelivery".into())
    }
}
