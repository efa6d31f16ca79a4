//! Kafka sink, through librdkafka (built from source: the same TLS and zstd on ARM).
//!
//! # Message format
//! One Kafka message per record:
//! - topic and key from templates (default `skygate.{stream}` and `{stream}`: one stream
//!   maps to one partition, so a stream's order holds in the topic);
//! - value: the record as one NDJSON line of schema 1 (see `model`), without the newline;
//!   blobs inline as base64 (route large blobs to a bucket sink instead);
//! - headers: `skygate-gateway`, `skygate-seq` (decimal), `skygate-stream`,
//!   `skygate-time-quality`, `skygate-schema` (`1`) and `skygate-type` (`record` or `gap`).
//!
//! Gap markers go to the topic of their stream (`_gaps` when the loss spans every stream)
//! with `skygate-type: gap` and the gap's NDJSON line as value.
//!
//! # Acknowledgement
//! The producer runs with `acks=all` and idempotence, and a batch counts as delivered only
//! when librdkafka's delivery report confirmed every message (or refused it for good). A
//! record the broker or librdkafka refuses permanently (too large, not authorised, invalid)
//! is returned as rejected for the delivery loop to dead-letter; any other failure fails
//! the batch, which is retried. A retry sends, per stream, everything from the first record
//! that was not confirmed, so a stream's records reach the topic in seq order at least once
//! (a retry may repeat a few; `gateway + seq` in the headers identifies them).
//!
//! librdkafka reconnects by itself; a fatal producer error (the idempotent producer lost
//! its sequence state) drops the producer, and the next attempt builds a new one.

pub mod config;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::{Batch, Delivered, Rejected, Sink, SinkError, SinkFuture};
pub use config::{KafkaSinkRaw, KafkaSinkSettings};
use skygate_model::{self as model, BlobPlacement, Gap, NDJSON_SCHEMA_VERSION, Record};
use skygate_security::secret::Secret;

/// librdkafka's log and error callbacks, into tracing; keeps the latest client-level error
/// (connection refused, TLS or SASL failure) to explain a batch that timed out.
#[derive(Debug)]
struct Context {
    sink: String,
    last_error: Arc<Mutex<Option<String>>>,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(sink = %self.sink, fac, "librdkafka: {msg}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(sink = %self.sink, fac, "librdkafka: {msg}"),
            _ => tracing::debug!(sink = %self.sink, fac, "librdkafka: {msg}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(sink = %self.sink, %error, "librdkafka: {reason}");
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(reason.to_string());
        }
    }
}

type Producer_ = FutureProducer<Context>;

/// What a failed attempt at a batch got through, so its retry sends only the rest.
#[derive(Debug)]
struct Partial {
    first: u64,
    last: u64,
    /// Per stream, every record up to this seq was confirmed.
    confirmed_upto: HashMap<Arc<str>, u64>,
    rejected: Vec<Rejected>,
}

pub struct KafkaSink {
    name: String,
    settings: Arc<KafkaSinkSettings>,
    gateway: Arc<str>,
    producer: Option<Producer_>,
    /// The producer context's latest client-level error.
    last_error: Arc<Mutex<Option<String>>>,
    partial: Option<Partial>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the settings' secrets (there are none in them) nor the producer's config.
        f.debug_struct("KafkaSink")
            .field("name", &self.name)
            .field("brokers", &self.settings.brokers)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    pub fn new(name: &str, settings: &KafkaSinkSettings, gateway: &str) -> Self {
        Self {
            name: name.to_string(),
            settings: Arc::new(settings.clone()),
            gateway: Arc::from(gateway),
            producer: None,
            last_error: Arc::default(),
            partial: None,
        }
    }

    /// The producer, built on first use and after a fatal error. Building reads the
    /// password file and has librdkafka load certificates and start its threads: done on a
    /// blocking thread, not on the runtime.
    async fn producer(&mut self) -> Result<Producer_, SinkError> {
        if let Some(p) = &self.producer {
            if let Some((code, reason)) = p.client().fatal_error() {
                tracing::warn!(sink = %self.name, ?code, %reason, "producer failed fatally; building a new one");
                self.producer = None;
            } else {
                return Ok(p.clone());
            }
        }
        let settings = self.settings.clone();
        let context = Context {
            sink: self.name.clone(),
            last_error: self.last_error.clone(),
        };
        let p = tokio::task::spawn_blocking(move || {
            client_config(&settings)?
                .create_with_context::<_, Producer_>(context)
                .map_err(|e| SinkError::permanent("cannot create Kafka producer", e))
        })
        .await
        .map_err(|e| SinkError::transient("producer task", e))??;
        self.producer = Some(p.clone());
        Ok(p)
    }

    fn explain(&self, e: &KafkaError) -> String {
        let client = self.last_error.lock().ok().and_then(|e| e.clone());
        match client {
            Some(c) => format!("{e} (last broker error: {c})"),
            None => e.to_string(),
        }
    }
}

/// The librdkafka configuration. Secrets are read here, from their files, and go nowhere
/// else (a `ClientConfig` is never logged).
pub fn client_config(s: &KafkaSinkSettings) -> Result<ClientConfig, SinkError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", s.brokers.join(","))
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.codec", s.compression)
        .set("linger.ms", s.linger.as_millis().to_string())
        .set(
            "message.timeout.ms",
            s.delivery_timeout.as_millis().to_string(),
        )
        .set("message.max.bytes", s.message_max_bytes.to_string())
        .set(
            "queue.buffering.max.messages",
            s.queue_max_messages.to_string(),
        )
        // Bounded in bytes too: at most 256 MiB or 4x the largest message.
        .set(
            "queue.buffering.max.kbytes",
            (s.message_max_bytes * 4 / 1024)
                .clamp(16 * 1024, 256 * 1024)
                .to_string(),
        )
        .set("reconnect.backoff.ms", "200")
        .set("reconnect.backoff.max.ms", "10000")
        .set("client.id", s.client_id.as_deref().unwrap_or("skygate"));
    let protocol = match (&s.tls, &s.sasl) {
        (None, None) => "plaintext",
        (Some(_), None) => "ssl",
        (None, Some(_)) => "sasl_plaintext",
        (Some(_), Some(_)) => "sasl_ssl",
    };
    c.set("security.protocol", protocol);
    if let Some(t) = &s.tls {
        // librdkafka reports a missing file as "BIO lib"; name it, as the other sinks do.
        // Transient: provisioning may put the file there later, and the records wait.
        let files = t.ca.iter().chain(t.client.iter().flat_map(|(c, k)| [c, k]));
        for f in files {
            std::fs::File::open(f)
                .map_err(|e| SinkError::transient(format!("TLS: {}", f.display()), e))?;
        }
        if let Some(ca) = &t.ca {
            c.set("ssl.ca.location", ca.display().to_string());
        }
        if let Some((cert, key)) = &t.client {
            c.set("ssl.certificate.location", cert.display().to_string())
                .set("ssl.key.location", key.display().to_string());
        }
    }
    if let Some(sasl) = &s.sasl {
        let password = Secret::from_password_file(&sasl.password_file)
            .map_err(|e| SinkError::transient("", e))?;
        c.set("sasl.mechanism", sasl.mechanism)
            .set("sasl.username", &sasl.username)
            .set("sasl.password", password.expose());
    }
    Ok(c)
}

/// Whether a per-message error is the broker's (or librdkafka's) final word on that record.
fn permanent(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::InvalidRecord
            | C::InvalidTopic
            | C::TopicAuthorizationFailed
            | C::PolicyViolation
            | C::InvalidMessage
    )
}

fn code_of(e: &KafkaError) -> Option<RDKafkaErrorCode> {
    match e {
        KafkaError::MessageProduction(c) => Some(*c),
        other => other.rdkafka_error_code(),
    }
}

/// One record, encoded.
struct Outgoing {
    seq: u64,
    stream: Arc<str>,
    topic: String,
    key: String,
    value: Vec<u8>,
    time_quality: &'static str,
}

fn encode(
    batch: &[Record],
    gateway: &str,
    s: &KafkaSinkSettings,
    skip: Option<&Partial>,
) -> Vec<Outgoing> {
    let mut out = Vec::with_capacity(batch.len());
    let mut topic = String::new();
    let mut key = String::new();
    for r in batch {
        if let Some(p) = skip
            && p.confirmed_upto
                .get(&r.stream)
                .is_some_and(|upto| r.seq <= *upto)
        {
            continue;
        }
        s.topic.render_into(&mut topic, gateway, r);
        s.key.render_into(&mut key, gateway, r);
        let mut value = Vec::with_capacity(256);
        model::write_ndjson(&mut value, gateway, r, BlobPlacement::Inline);
        value.pop_if(|b| *b == b'\n');
        out.push(Outgoing {
            seq: r.seq,
            stream: r.stream.clone(),
            topic: topic.clone(),
            key: key.clone(),
            value,
            time_quality: r.reading.time_quality.as_str(),
        });
    }
    out
}

/// The documented headers. `schema` is [`NDJSON_SCHEMA_VERSION`] as text, made once per
/// batch by the caller.
fn headers(
    gateway: &str,
    seq: &str,
    stream: &str,
    tq: &str,
    kind: &str,
    schema: &str,
) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(6)
        .insert(Header {
            key: "skygate-gateway",
            value: Some(gateway),
        })
        .insert(Header {
            key: "skygate-seq",
            value: Some(seq),
        })
        .insert(Header {
            key: "skygate-stream",
            value: Some(stream),
        })
        .insert(Header {
            key: "skygate-time-quality",
            value: Some(tq),
        })
        .insert(Header {
            key: "skygate-schema",
            value: Some(schema),
        })
        .insert(Header {
            key: "skygate-type",
            value: Some(kind),
        })
}

/// Enqueues one message, waiting while librdkafka's bounded queue is full (it drains as
/// the broker confirms, or as messages time out). Blocking: runs on a blocking thread.
fn enqueue(
    producer: &Producer_,
    topic: &str,
    key: &str,
    value: &[u8],
    headers: OwnedHeaders,
    give_up: tokio::time::Instant,
) -> Result<DeliveryFuture, KafkaError> {
    let mut record = FutureRecord::to(topic)
        .key(key)
        .payload(value)
        .headers(headers);
    loop {
        match producer.send_result(record) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                if tokio::time::Instant::now() < give_up =>
            {
                record = r;
                #[allow(
                    clippy::disallowed_methods,
                    reason = "runs in spawn_blocking: librdkafka's queue is full, wait for it to drain"
                )]
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

impl Sink for KafkaSink {
    fn deliver(&mut self, batch: Batch) -> SinkFuture<'_, Delivered> {
        Box::pin(async move {
            let producer = self.producer().await?;
            let first = batch[0].seq;
            let last = batch[batch.len() - 1].seq;
            let partial = self
                .partial
                .take()
                .filter(|p| p.first == first && p.last == last);
            let settings = self.settings.clone();
            let gateway = self.gateway.clone();
            let timeout = settings.delivery_timeout;
            let pb = producer.clone();
            let batch_b = batch.clone();
            // Encoding and enqueueing are CPU work and may wait on a full queue: off the runtime.
            let (sent, mut rejected, bytes, enqueue_err) = tokio::task::spawn_blocking(move || {
                let msgs = encode(&batch_b, &gateway, &settings, partial.as_ref());
                let give_up = tokio::time::Instant::now() + timeout;
                let mut sent = Vec::with_capacity(msgs.len());
                let mut rejected = partial.map(|p| p.rejected).unwrap_or_default();
                let mut bytes = 0u64;
                let schema = NDJSON_SCHEMA_VERSION.to_string();
                for m in msgs {
                    let seq = m.seq.to_string();
                    let h = headers(&gateway, &seq, &m.stream, m.time_quality, "record", &schema);
                    bytes += (m.value.len() + m.key.len() + m.topic.len() + 64) as u64;
                    match enqueue(&pb, &m.topic, &m.key, &m.value, h, give_up) {
                        Ok(f) => sent.push((m.seq, m.stream, f)),
                        Err(e) if code_of(&e).is_some_and(permanent) => rejected.push(Rejected {
                            seq: m.seq,
                            reason: format!("refused by the Kafka producer: {e}"),
                        }),
                        Err(e) => return (sent, rejected, bytes, Some(e)),
                    }
                }
                (sent, rejected, bytes, None)
            })
            .await
            .map_err(|e| SinkError::transient("encoder task", e))?;

            // Every confirmation (or final refusal), in enqueue order.
            let mut failed_from: HashMap<Arc<str>, u64> = HashMap::new();
            let mut confirmed_upto: HashMap<Arc<str>, u64> = HashMap::new();
            let mut first_error: Option<KafkaError> = enqueue_err;
            for (seq, stream, f) in sent {
                match f.await {
                    Ok(Ok(_)) => {
                        if !failed_from.contains_key(&stream) {
                            confirmed_upto.insert(stream, seq);
                        }
                    }
                    Ok(Err((e, _))) if code_of(&e).is_some_and(permanent) => {
                        rejected.push(Rejected {
                            seq,
                            reason: format!("refused by Kafka: {e}"),
                        });
                        if !failed_from.contains_key(&stream) {
                            confirmed_upto.insert(stream, seq);
                        }
                    }
                    Ok(Err((e, _))) => {
                        failed_from.entry(stream).or_insert(seq);
                        first_error.get_or_insert(e);
                    }
                    Err(_) => {
                        failed_from.entry(stream).or_insert(seq);
                        first_error.get_or_insert(KafkaError::Canceled);
                    }
                }
            }
            if let Some(e) = first_error {
                let msg = self.explain(&e);
                rejected.sort_by_key(|r| r.seq);
                self.partial = Some(Partial {
                    first,
                    last,
                    confirmed_upto,
                    rejected,
                });
                return Err(SinkError::transient_msg(format!("Kafka: {msg}")));
            }
            rejected.sort_by_key(|r| r.seq);
            Ok(Delivered { bytes, rejected })
        })
    }

    fn deliver_gap<'a>(&'a mut self, gap: &'a Gap) -> SinkFuture<'a, ()> {
        Box::pin(async move {
            let producer = self.producer().await?;
            let stream = gap.stream_name("_gaps");
            let topic = self.settings.topic.render_gap(&self.gateway, stream);
            let key = self.settings.key.render_gap(&self.gateway, stream);
            let mut value = model::gap_ndjson(&self.gateway, gap);
            value.pop_if(|b| *b == b'\n');
            let seq = gap.first_seq.to_string();
            let schema = NDJSON_SCHEMA_VERSION.to_string();
            let h = headers(&self.gateway, &seq, stream, "", "gap", &schema);
            let give_up = tokio::time::Instant::now() + self.settings.delivery_timeout;
            let f = {
                let p = producer.clone();
                tokio::task::spawn_blocking(move || enqueue(&p, &topic, &key, &value, h, give_up))
                    .await
                    .map_err(|e| SinkError::transient("gap task", e))?
            };
            let result = match f {
                Ok(f) => match f.await {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err((e, _))) => e,
                    Err(_) => KafkaError::Canceled,
                },
                Err(e) => e,
            };
            Err(SinkError::transient_msg(format!(
                "Kafka gap marker: {}",
                self.explain(&result)
            )))
        })
    }
}

#[cfg(test)]
mod tests;
