//! Backlog drain rate of the Kafka and S3 sinks against real peers, each against a raw
//! client ceiling measured in the same run.
//!
//! A buffer is pre-filled with a backlog (weather readings, as after an outage). Then:
//!
//! **Kafka**, to Tansu (memory engine) on loopback. Ceiling: a raw rdkafka producer with
//! the sink's settings (acks=all, idempotence, zstd, 5 ms linger) sending the same
//! records (key, value already encoded as the sink encodes it, the same headers) to
//! another topic of the same broker, all enqueued at once and flushed at the end. Then the sink's delivery loop draining the backlog from the buffer.
//!
//! **S3**, to s3s-fs (SigV4 checked) on loopback. Ceiling: a raw object_store put loop
//! writing the same objects (the batches, encoded and compressed as the sink does) one
//! after another. Then the bucket sink's delivery loop draining the backlog.
//!
//! Printed: records/s for both, the ratio sink/ceiling (goal >= 0.5) and the drain rate
//! against a 200 readings/s gateway (goal >= 2x); and, to show where a drain's time goes,
//! the rates of reading the backlog from the buffer alone and of encoding it alone.
//!
//!     cargo run --release -p skygate-e2e --bin skygate-bench-sinks [-- --records 200000 --batch 5000]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use skygate_agent::buffer::{Buffer, BufferOptions, NewRecord};
use skygate_agent::config::{BufferSettings, Durability, SinkCommon};
use skygate_agent::model::{BlobPlacement, Record};
use skygate_agent::sinks::Sink;
use skygate_agent::sinks::bucket::{BucketSink, BucketSinkRaw};
use skygate_agent::sinks::delivery::{DeadLetter, SinkSpec, spawn};
use skygate_agent::sinks::kafka::{KafkaSink, KafkaSinkRaw};
use skygate_drivers::{Quality, Reading, TimeQuality, Timestamp, Value};
use skygate_e2e::{Peer, free_port, wait_port};
use tokio_util::sync::CancellationToken;

const GATEWAY: &str = "gw-bench";
/// Records per batch (`--batch`), for the sinks and the ceilings alike.
static BATCH: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

fn batch() -> u32 {
    *BATCH.get_or_init(|| {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == "--batch")
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(5000)
    })
}
/// A busy gateway: the outage tests' ingest.
const INGEST_PER_S: f64 = 200.0;

fn records_arg() -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--records")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

fn cache_bin(root: &str, name: &str) -> PathBuf {
    let p = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cache/skygate")
        .join(root)
        .join("bin")
        .join(name);
    assert!(p.exists(), "{} missing: run scripts/setup", p.display());
    p
}

fn record(i: u64) -> Record {
    Record {
        seq: 0,
        stream: Arc::from("weather"),
        priority: 5,
        ingest_ts: Timestamp::now(),
        reading: Reading {
            source: Arc::from("wx"),
            channel: Arc::from(["temperature", "humidity", "pressure", "wind"][(i % 4) as usize]),
            ts: Timestamp::now(),
            time_quality: TimeQuality::Ntp,
            value: Value::Number(12.5 + (i % 100) as f64 / 10.0),
            unit: Some(Arc::from("degC")),
            quality: Quality::Good,
        },
        lineage: None,
    }
}

/// A buffer holding `n` records for sink "s".
async fn backlog(dir: &Path, n: u64) -> (Buffer, skygate_agent::buffer::BufferGuard) {
    let (buffer, guard) = Buffer::open(
        BufferOptions {
            events: None,
            dir: dir.to_path_buf(),
            settings: BufferSettings {
                durability: Durability::Process,
                max_bytes: 4 << 30,
                min_free_disk: 1 << 20,
                ..BufferSettings::default()
            },
            gateway_id: GATEWAY.into(),
            // "probe" gets the same records, for the breakdown's reads and acks.
            sinks: vec!["s".into(), "probe".into()],
            routes: vec![(vec!["*".into()], vec!["s".into(), "probe".into()])],
        },
        Arc::new(skygate_bsp::GenericLinux::default()),
    )
    .expect("buffer");
    let mask = buffer.mask_for(["s", "probe"]);
    let mut i = 0;
    while i < n {
        let chunk = (n - i).min(10_000);
        let recs = (i..i + chunk)
            .map(|k| NewRecord {
                record: record(k),
                sinks: mask,
            })
            .collect();
        buffer.append_durable(recs).await.expect("append");
        i += chunk;
    }
    (buffer, guard)
}

/// Drains the buffer through `sink`; records/s.
async fn drain(buffer: &Buffer, sink: Box<dyn Sink>, n: u64, dir: &Path) -> f64 {
    let tracker = tokio_util::task::TaskTracker::new();
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let h = spawn(
        &tracker,
        SinkSpec {
            name: "s".into(),
            sink,
            id: buffer.sink_id("s").expect("id"),
            buffer: buffer.clone(),
            common: SinkCommon {
                backfill_share: 0.5,
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_secs(1),
                batch_max_records: batch(),
                batch_max_bytes: 64 << 20,
                batch_max_age: Duration::from_millis(1),
                ..SinkCommon::default()
            },
            dead_letter: DeadLetter {
                stream: Arc::from("deadletter"),
                mask: Arc::default(),
                file: dir.join("dl.ndjson"),
                gateway: Arc::from(GATEWAY),
            },
            cancel: cancel.clone(),
        },
    );
    let mut status = h.status.clone();
    tokio::time::timeout(
        Duration::from_secs(600),
        status.wait_for(|s| s.delivered_records >= n),
    )
    .await
    .expect("drained in time")
    .expect("status");
    let secs = started.elapsed().as_secs_f64();
    if let Some(e) = &status.borrow().last_error {
        println!("  (errors on the way, last: {e})");
    }
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    n as f64 / secs
}

fn encoded(n: u64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut r = record(i);
            r.seq = i + 1;
            let mut v = Vec::with_capacity(256);
            skygate_agent::model::write_ndjson(&mut v, GATEWAY, &r, BlobPlacement::Inline);
            v.pop();
            v
        })
        .collect()
}

fn report(what: &str, ceiling: f64, sink: f64) {
    println!("{what}: ceiling (raw client) {ceiling:.0} records/s");
    println!("{what}: skygate sink        {sink:.0} records/s");
    println!(
        "{what}: ratio sink/ceiling {:.2} (goal >= 0.5); drain / ingest of {INGEST_PER_S:.0}/s = {:.0}x (goal >= 2x)",
        sink / ceiling,
        sink / INGEST_PER_S
    );
}

async fn kafka(n: u64) {
    let port = free_port();
    let b = format!("127.0.0.1:{port}");
    let listen = format!("tcp://{b}");
    let tansu = cache_bin("tansu", "tansu");
    let _broker = Peer::start(
        "tansu",
        &tansu,
        &[
            "broker",
            "--listener-url",
            &listen,
            "--advertised-listener-url",
            &listen,
            "--storage-engine",
            "memory://bench/",
        ],
        false,
    );
    wait_port(port, "tansu");
    for t in ["raw.weather", "skygate.weather"] {
        let o = std::process::Command::new(&tansu)
            .args([
                "topic",
                "create",
                t,
                "--broker",
                &listen,
                "--partitions",
                "1",
            ])
            .output()
            .expect("topic");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    // Ceiling: the same values, produced raw.
    let values = encoded(n);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.codec", "zstd")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let started = Instant::now();
    let mut futures = Vec::with_capacity(values.len());
    for (seq, v) in (1u64..).zip(&values) {
        loop {
            // The same record: key, value and the headers the sink puts on it.
            let headers = OwnedHeaders::new_with_capacity(6)
                .insert(Header {
                    key: "skygate-gateway",
                    value: Some(GATEWAY),
                })
                .insert(Header {
                    key: "skygate-seq",
                    value: Some(&seq.to_string()),
                })
                .insert(Header {
                    key: "skygate-stream",
                    value: Some("weather"),
                })
                .insert(Header {
                    key: "skygate-time-quality",
                    value: Some("ntp"),
                })
                .insert(Header {
                    key: "skygate-schema",
                    value: Some("1"),
                })
                .insert(Header {
                    key: "skygate-type",
                    value: Some("record"),
                });
            match producer.send_result(
                FutureRecord::to("raw.weather")
                    .key("weather")
                    .payload(v)
                    .headers(headers),
            ) {
                Ok(f) => {
                    futures.push(f);
                    break;
                }
                Err((_, _)) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }
    for f in futures {
        f.await.expect("delivery").expect("delivered");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let ceiling = n as f64 / started.elapsed().as_secs_f64();

    let dir = tempfile::tempdir().expect("tmp");
    let (buffer, guard) = backlog(dir.path(), n).await;
    let settings = toml::from_str::<KafkaSinkRaw>(&format!("brokers = [\"{b}\"]"))
        .expect("settings")
        .validate()
        .expect("valid");
    breakdown(&buffer, n, false).await;
    let rate = drain(
        &buffer,
        Box::new(KafkaSink::new("s", &settings, GATEWAY)),
        n,
        dir.path(),
    )
    .await;
    guard.close().await;
    report("kafka (tansu)", ceiling, rate);
}

/// Where a drain's time goes: reading the backlog from the buffer alone, encoding it as
/// NDJSON alone (zstd too when `compress`), and acking it alone, records/s each (on the
/// "probe" sink, which holds the same records).
async fn breakdown(buffer: &Buffer, n: u64, compress: bool) {
    let id = buffer.sink_id("probe").expect("id");
    let started = Instant::now();
    let (mut after, mut read) = (0u64, Vec::new());
    while (read.len() as u64) < n {
        let b = buffer
            .read(skygate_agent::buffer::ReadQuery {
                sink: id,
                after,
                upto: u64::MAX,
                max_records: batch(),
                max_bytes: 64 << 20,
            })
            .await
            .expect("read");
        if b.is_empty() {
            break;
        }
        after = b[b.len() - 1].seq;
        read.extend(b);
    }
    let read_rate = read.len() as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for chunk in read.chunks(batch() as usize) {
        let mut doc = Vec::with_capacity(chunk.len() * 256);
        for r in chunk {
            skygate_agent::model::write_ndjson(&mut doc, GATEWAY, r, BlobPlacement::Inline);
        }
        if compress {
            std::hint::black_box(zstd::bulk::compress(&doc, 3).expect("zstd"));
        }
        std::hint::black_box(doc);
    }
    let encode_rate = read.len() as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for chunk in read.chunks(batch() as usize) {
        buffer
            .ack(id, chunk[0].seq, chunk[chunk.len() - 1].seq)
            .await
            .expect("ack");
    }
    // Acks are queued for the writer: wait until they are committed.
    buffer.sync().await.expect("sync");
    let ack_rate = read.len() as f64 / started.elapsed().as_secs_f64();
    println!(
        "  breakdown: buffer read alone {read_rate:.0} records/s; NDJSON{} encode alone {encode_rate:.0} records/s; ack committed alone {ack_rate:.0} records/s",
        if compress { " + zstd" } else { "" }
    );
}

async fn s3(n: u64) {
    let port = free_port();
    let root = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(root.path().join("bench")).expect("bucket");
    let _s3 = Peer::start(
        "s3s-fs",
        &cache_bin("s3s-fs", "s3s-fs"),
        &[
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            "bench-key",
            "--secret-key",
            "bench-secret-1",
            root.path().to_str().expect("utf8"),
        ],
        false,
    );
    wait_port(port, "s3s-fs");
    skygate_drivers::tls::install_default_provider();
    let creds = root.path().join("creds");
    std::fs::write(
        &creds,
        "aws_access_key_id = bench-key\naws_secret_access_key = bench-secret-1\n",
    )
    .expect("creds");
    let endpoint = format!("http://127.0.0.1:{port}");

    // Ceiling: the sink's objects (one zstd NDJSON object per batch), put back to back.
    let objects: Vec<bytes::Bytes> = encoded(n)
        .chunks(batch() as usize)
        .map(|c| {
            let mut doc = Vec::new();
            for v in c {
                doc.extend_from_slice(v);
                doc.push(b'\n');
            }
            zstd::bulk::compress(&doc, 3).expect("zstd").into()
        })
        .collect();
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("bench")
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("bench-key")
        .with_secret_access_key("bench-secret-1")
        .build()
        .expect("store");
    let started = Instant::now();
    for (i, o) in objects.into_iter().enumerate() {
        store
            .put(
                &object_store::path::Path::from(format!("raw/{i:08}.ndjson.zst")),
                o.into(),
            )
            .await
            .expect("put");
    }
    let ceiling = n as f64 / started.elapsed().as_secs_f64();

    let dir = tempfile::tempdir().expect("tmp");
    let (buffer, guard) = backlog(dir.path(), n).await;
    let settings = toml::from_str::<BucketSinkRaw>(&format!(
        "url = \"s3://bench\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\ncredentials_file = \"{}\"",
        creds.display()
    ))
    .expect("settings")
    .validate()
    .expect("valid");
    breakdown(&buffer, n, true).await;
    let rate = drain(
        &buffer,
        Box::new(BucketSink::new(&settings, GATEWAY, dir.path())),
        n,
        dir.path(),
    )
    .await;
    guard.close().await;
    report("s3 (s3s-fs)", ceiling, rate);
}

fn main() {
    let n = records_arg();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("backlog of {n} records, batches of {}", batch());
    rt.block_on(kafka(n));
    rt.block_on(s3(n));
}
