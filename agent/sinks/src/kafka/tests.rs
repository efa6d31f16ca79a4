//! The Kafka sink against librdkafka's mock cluster: injected request errors, a broker
//! going down and leaders moving while a backlog drains through the real delivery loop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use skygate_drivers::Value;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::SinkCommon;
use crate::delivery::{DeadLetter, SinkSpec, spawn};
use crate::template::Template;
use skygate_buffer::{Buffer, BufferOptions, NewRecord};
use skygate_buffer::{BufferSettings, Durability};
use skygate_model::{Record, fixtures};

fn settings(brokers: &str) -> KafkaSinkSettings {
    KafkaSinkSettings {
        brokers: brokers.split(',').map(str::to_string).collect(),
        topic: Template::parse("skygate.{stream}").expect("topic"),
        key: Template::parse("{stream}").expect("key"),
        compression: "zstd",
        delivery_timeout: Duration::from_secs(60),
        linger: Duration::from_millis(5),
        message_max_bytes: 1_000_000,
        queue_max_messages: 100_000,
        tls: None,
        sasl: None,
        client_id: None,
    }
}

fn record(stream: &str, n: i64, text: Option<String>) -> Record {
    fixtures::record(stream, text.map_or(Value::Integer(n), Value::Text))
}

/// A message's header as text.
fn header(m: &impl Message, key: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|x| x.key == key)
        .and_then(|x| x.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Every message of the topics, in partition order: (stream header, seq header).
fn consume(brokers: &str, topics: &[&str], want: usize) -> Vec<(String, u64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "verify")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(topics).expect("subscribe");
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.len() < want && tokio::time::Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("message");
        let header = |k: &str| header(&m, k).unwrap_or_else(|| panic!("header {k} missing"));
        assert_eq!(header("skygate-gateway"), "gw");
        assert_eq!(header("skygate-schema"), "1");
        let seq: u64 = header("skygate-seq").parse().expect("seq");
        // The value is the record's NDJSON line, naming the same seq.
        let v: serde_json::Value =
            serde_json::from_slice(m.payload().expect("payload")).expect("json value");
        assert_eq!(v["seq"], seq);
        got.push((header("skygate-stream"), seq));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors_a_broker_down_and_leader_moves_lose_nothing_and_keep_each_streams_order() {
    let mock = MockCluster::new(3).expect("mock cluster");
    let brokers = mock.bootstrap_servers();
    let streams = ["wx", "gps", "sqm"];
    for s in streams {
        mock.create_topic(&format!("skygate.{s}"), 3, 3)
            .expect("topic");
    }
    let dir = tempfile::tempdir().expect("tmp");
    let (buffer, guard) = Buffer::open(
        BufferOptions {
            events: None,
            dir: dir.path().to_path_buf(),
            settings: BufferSettings {
                durability: Durability::Process,
                ..BufferSettings::default()
            },
            gateway_id: "gw".into(),
            sinks: vec!["k".into()],
            routes: vec![(vec!["*".into()], vec!["k".into()])],
        },
        Arc::new(skygate_bsp::GenericLinux::default()),
    )
    .expect("buffer");
    let id = buffer.sink_id("k").expect("id");
    const PER_STREAM: i64 = 3000;
    for chunk in 0..6 {
        let recs = (0..PER_STREAM / 6)
            .flat_map(|i| streams.map(|s| record(s, chunk * 1000 + i, None)))
            .map(|record| NewRecord {
                record,
                sinks: id.mask(),
            })
            .collect();
        buffer.append_durable(recs).await.expect("append");
    }
    let total = (PER_STREAM as u64) * 3;

    // Produce requests fail (retriable errors) before the first batch goes out.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        ],
    );
    let tracker = tokio_util::task::TaskTracker::new();
    let cancel = CancellationToken::new();
    let h = spawn(
        &tracker,
        SinkSpec {
            name: "k".into(),
            sink: Box::new(KafkaSink::new("k", &settings(&brokers), "gw")),
            id,
            buffer: buffer.clone(),
            common: SinkCommon {
                backfill_share: 0.5,
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_millis(500),
                batch_max_records: 500,
                batch_max_bytes: 1 << 30,
                batch_max_age: Duration::from_millis(1),
                ..SinkCommon::default()
            },
            dead_letter: DeadLetter {
                stream: Arc::from("deadletter"),
                mask: Arc::default(),
                file: dir.path().join("dl.ndjson"),
                gateway: Arc::from("gw"),
            },
            cancel: cancel.clone(),
        },
    );
    let mut status = h.status.clone();
    let wait_delivered = |n: u64| {
        let mut status = status.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(60),
                status.wait_for(|s| s.delivered_records >= n),
            )
            .await
            .unwrap_or_else(|_| panic!("fewer than {n} delivered in time"))
            .map(|_| ())
            .expect("status");
        }
    };
    wait_delivered(1000).await;
    // A broker goes down for two seconds mid-drain; then every partition moves leader.
    mock.broker_down(1).expect("down");
    tokio::time::sleep(Duration::from_secs(2)).await;
    mock.broker_up(1).expect("up");
    wait_delivered(4000).await;
    for s in streams {
        for p in 0..3 {
            mock.partition_leader(&format!("skygate.{s}"), p, Some(1 + (p + 1) % 3))
                .expect("leader");
        }
    }
    wait_delivered(total).await;
    assert_eq!(status.borrow_and_update().dead_lettered, 0);
    cancel.cancel();
    tracker.close();
    tracker.wait().await;

    let topics: Vec<String> = streams.iter().map(|s| format!("skygate.{s}")).collect();
    let b = brokers.clone();
    let got = tokio::task::spawn_blocking(move || {
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consume(&b, &topics, total as usize)
    })
    .await
    .expect("consumer task");
    let mut per_stream: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (stream, seq) in &got {
        per_stream.entry(stream.clone()).or_default().push(*seq);
    }
    assert_eq!(got.len() as u64, total, "every record once, no more");
    for (stream, seqs) in &per_stream {
        assert_eq!(seqs.len() as i64, PER_STREAM, "{stream}");
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{stream}: out of order or repeated"
        );
    }
    let mut all: Vec<u64> = got.iter().map(|g| g.1).collect();
    all.sort_unstable();
    assert_eq!(all, (1..=total).collect::<Vec<_>>(), "no holes by seq");
    guard.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_for_the_broker_is_returned_as_rejected_and_the_rest_delivered() {
    let mock = MockCluster::new(1).expect("mock cluster");
    let brokers = mock.bootstrap_servers();
    mock.create_topic("skygate.wx", 1, 1).expect("topic");
    let mut s = settings(&brokers);
    s.message_max_bytes = 2_000;
    let mut sink = KafkaSink::new("k", &s, "gw");
    let mut batch = vec![
        record("wx", 1, None),
        record("wx", 2, Some("x".repeat(10_000))),
        record("wx", 3, None),
    ];
    for (i, r) in batch.iter_mut().enumerate() {
        r.seq = 1 + i as u64;
    }
    let d = sink.deliver(batch.into()).await.expect("delivered");
    assert_eq!(d.rejected.len(), 1, "{:?}", d.rejected);
    assert_eq!(d.rejected[0].seq, 2);
    assert!(
        d.rejected[0].reason.contains("too large"),
        "{}",
        d.rejected[0].reason
    );
    let got = tokio::task::spawn_blocking(move || consume(&brokers, &["skygate.wx"], 2))
        .await
        .expect("consumer");
    assert_eq!(got, vec![("wx".into(), 1), ("wx".into(), 3)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_marker_goes_to_its_streams_topic_as_a_gap() {
    let mock = MockCluster::new(1).expect("mock cluster");
    let brokers = mock.bootstrap_servers();
    mock.create_topic("skygate.wx", 1, 1).expect("topic");
    let mut sink = KafkaSink::new("k", &settings(&brokers), "gw");
    let gap = fixtures::gap();
    sink.deliver_gap(&gap).await.expect("delivered");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "verify-gap")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&["skygate.wx"]).expect("subscribe");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let m = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no gap marker consumed"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            break m.expect("message").detach();
        }
    };
    assert_eq!(header(&m, "skygate-type").as_deref(), Some("gap"));
    assert_eq!(header(&m, "skygate-seq").as_deref(), Some("10"));
    let v: serde_json::Value = serde_json::from_slice(m.payload().expect("payload")).expect("json");
    assert_eq!(v["type"], "gap");
    assert_eq!(
        (v["first_seq"].as_u64(), v["last_seq"].as_u64()),
        (Some(10), Some(19))
    );
    assert_eq!(v["reason"], "evicted: buffer full");
}
