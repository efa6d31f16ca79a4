//! Link outages, per sink: the peer is cut off for a while during steady ingest (a relay
//! in front of it stops forwarding, as a firewall dropping packets would), the agent is
//! restarted in the middle of the outage, then the link comes back. Every record ingested
//! must arrive (at least once, no holes by seq), records ingested after the recovery must
//! reach the consumer before the backlog has finished, and the backlog must drain. The
//! drain rate is printed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skygate_e2e::{
    Agent, FaultProxy, Peer, free_port, kafka_consume, last_seq, mosquitto, pending, sink_status,
    tansu_broker, tansu_cmd, wait_until,
};

const HEAD: &str = "[gateway]\nid = \"gw-out\"\n[buffer]\ndurability = \"process\"\nmin_free_disk = \"1MiB\"\n[health]\nenabled = false\n";

/// What an outage run saw.
#[derive(Debug)]
struct Outage {
    data: PathBuf,
    /// The sink's backfill boundary after the link came back: seqs above it are live.
    boundary: u64,
    backlog: u64,
    drain_secs: f64,
}

/// Steady ingest (200 readings/s) into `sink`, which reaches its peer through `proxy`;
/// cut for `cut` with an agent restart halfway, then restored.
fn run_outage(root: &Path, sink: &str, table: &str, proxy: &FaultProxy, cut: Duration) -> Outage {
    let data = root.join("data");
    let cfg = root.join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "{HEAD}[drivers.wx]\nkind = \"sim\"\nstream = \"weather\"\ntick = \"5ms\"\n\
             [drivers.wx.channels.t]\nsignal = \"counter\"\nrate_hz = 100\n\
             [drivers.wx.channels.p]\nsignal = \"counter\"\nrate_hz = 100\n\
             {table}[[routes]]\nstreams = [\"*\"]\nsinks = [\"{sink}\"]\n"
        ),
    )
    .expect("config");
    let a = Agent::start(&cfg, &data);
    wait_until(Duration::from_secs(60), "first deliveries", || {
        sink_status(&data, sink)["delivered_records"].as_u64() >= Some(200)
    });
    proxy.down();
    std::thread::sleep(cut / 2);
    // Restarted mid-outage: what piled up is in the buffer, not in memory.
    a.stop();
    let a = Agent::start(&cfg, &data);
    std::thread::sleep(cut / 2);
    let backlog = pending(&data, sink);
    proxy.up();
    let t0 = Instant::now();
    // The loop notices the link is back at its next retry; from then on it sends live data
    // first and the backlog behind it.
    wait_until(Duration::from_secs(120), "the backlog drained", || {
        let s = sink_status(&data, sink);
        s["state"] == "connected" && s["backfilling"] == false && pending(&data, sink) < 400
    });
    let drain_secs = t0.elapsed().as_secs_f64();
    let boundary = sink_status(&data, sink)["backfill_boundary"]
        .as_u64()
        .expect("boundary");
    a.stop();
    // Deliver what is left without new readings, so the consumer must hold 1..=last.
    let drain = root.join("drain.toml");
    std::fs::write(
        &drain,
        format!("{HEAD}{table}[[routes]]\nstreams = [\"*\"]\nsinks = [\"{sink}\"]\n"),
    )
    .expect("drain config");
    let a = Agent::start(&drain, &data);
    wait_until(Duration::from_secs(60), "the rest delivered", || {
        pending(&data, sink) == 0
    });
    a.stop();
    println!(
        "outage {sink}: backlog {backlog} records drained in {drain_secs:.1} s ({:.0} records/s, ingest 200/s)",
        backlog as f64 / drain_secs
    );
    Outage {
        data,
        boundary,
        backlog,
        drain_secs,
    }
}

/// Arrival order at the consumer: no holes, and live records before the backlog's end.
fn assert_outage(o: &Outage, arrived: &[u64]) {
    let last = last_seq(&o.data);
    let got: BTreeSet<u64> = arrived.iter().copied().collect();
    let missing: Vec<u64> = (1..=last).filter(|s| !got.contains(s)).take(10).collect();
    assert!(
        missing.is_empty(),
        "seqs never arrived (first 10): {missing:?}"
    );
    assert!(
        o.backlog > 500,
        "the outage built a backlog ({})",
        o.backlog
    );
    // The last backlog record and the first live one, by first arrival.
    let first_at = |s: u64| arrived.iter().position(|x| *x == s).expect("arrived");
    let backlog_end = first_at(o.boundary);
    let first_live = first_at(o.boundary + 1);
    assert!(
        first_live < backlog_end,
        "live seq {} arrived at {first_live}, after the backlog ended (seq {} at {backlog_end})",
        o.boundary + 1,
        o.boundary
    );
    assert!(o.drain_secs > 0.0);
}

#[test]
fn mqtt_uplink_outage_loses_nothing_and_sends_live_data_before_the_backlog() {
    let root = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let _broker = mosquitto(root.path(), port, "allow_anonymous true");
    let received = root.path().join("received.txt");
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-i", "verifier", "-t", "skygate/gw-out/#"])
        .stdout(std::fs::File::create(&received).expect("out"))
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub");
    std::thread::sleep(Duration::from_millis(500));
    let proxy = FaultProxy::start(port);
    let table = format!(
        "[sinks.up]\nkind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{}\"\nbatch_max_age = \"100ms\"\nbatch_max_records = 100\n\
         backoff_initial = \"200ms\"\nbackoff_max = \"1s\"\nack_timeout = \"3s\"\nkeep_alive = \"5s\"\n",
        proxy.port
    );
    let o = run_outage(root.path(), "up", &table, &proxy, Duration::from_secs(8));
    std::thread::sleep(Duration::from_millis(500));
    let _ = sub.kill();
    let _ = sub.wait();
    let text = std::fs::read_to_string(&received).expect("received");
    let arrived: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["seq"]
                .as_u64()
                .expect("seq")
        })
        .collect();
    assert_outage(&o, &arrived);
}

#[test]
fn bucket_outage_loses_nothing_and_sends_live_data_before_the_backlog() {
    let root = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let _gcs = Peer::start(
        "gcs emulator",
        &skygate_e2e::peer_python(),
        &[
            skygate_e2e::peers_dir()
                .join("gcs_emulator.py")
                .to_str()
                .expect("utf8"),
            &port.to_string(),
            "arch",
        ],
        true,
    );
    let proxy = FaultProxy::start(port);
    let creds = root.path().join("gcs.creds");
    std::fs::write(
        &creds,
        "google_service_account_key = {\"private_key\": \"unused\", \"private_key_id\": \"unused\", \"client_email\": \"skygate@emulator\", \"disable_oauth\": true}\n",
    )
    .expect("creds");
    let table = format!(
        "[sinks.b]\nkind = \"bucket\"\nurl = \"gs://arch\"\nendpoint = \"http://127.0.0.1:{}\"\ncredentials_file = \"{}\"\n\
         batch_max_age = \"100ms\"\nbatch_max_records = 100\nbackoff_initial = \"200ms\"\nbackoff_max = \"1s\"\n",
        proxy.port,
        creds.display()
    );
    let o = run_outage(root.path(), "b", &table, &proxy, Duration::from_secs(8));
    // Read back with Google's client; objects in the order the store created them.
    let out = root.path().join("mirror");
    let st = Command::new(skygate_e2e::peer_python())
        .arg(skygate_e2e::peers_dir().join("bucket_mirror.py"))
        .arg("gcs")
        .arg(&out)
        .args([&format!("http://127.0.0.1:{port}"), "arch"])
        .status()
        .expect("mirror");
    assert!(st.success());
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.path().join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    let mut objects: Vec<(String, String)> = manifest
        .as_object()
        .expect("manifest")
        .iter()
        .filter(|(k, _)| k.ends_with(".ndjson.zst"))
        .map(|(k, m)| {
            (
                m["created"].as_str().expect("created").to_string(),
                k.clone(),
            )
        })
        .collect();
    objects.sort();
    let mut arrived = Vec::new();
    for (_, key) in objects {
        let raw = std::fs::read(out.join(&key)).expect("object");
        let text = zstd::decode_all(&raw[..]).expect("zstd");
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).expect("json");
            arrived.push(v["seq"].as_u64().expect("seq"));
        }
    }
    assert_outage(&o, &arrived);
}

#[test]
fn kafka_outage_loses_nothing_and_sends_live_data_before_the_backlog() {
    let root = tempfile::tempdir().expect("tmp");
    let (port, front) = (free_port(), free_port());
    // The broker advertises the relay's address, so every connection goes through it.
    let _tansu = tansu_broker(
        root.path(),
        port,
        &format!("tcp://127.0.0.1:{front}"),
        false,
    );
    tansu_cmd(&[
        "topic",
        "create",
        "skygate.weather",
        "--broker",
        &format!("tcp://127.0.0.1:{port}"),
        "--partitions",
        "1",
    ]);
    let proxy = FaultProxy::start_on(front, port);
    let table = format!(
        "[sinks.k]\nkind = \"kafka\"\nbrokers = [\"127.0.0.1:{front}\"]\nbatch_max_age = \"100ms\"\nbatch_max_records = 100\n\
         delivery_timeout = \"4s\"\nbackoff_initial = \"200ms\"\nbackoff_max = \"1s\"\n"
    );
    let o = run_outage(root.path(), "k", &table, &proxy, Duration::from_secs(10));
    // One partition: offsets are the order the broker took the records in.
    let arrived: Vec<u64> = kafka_consume(
        &format!("127.0.0.1:{front}"),
        &["skygate.weather"],
        u64::MAX,
        &[],
    )
    .iter()
    .map(|m| m["value"]["seq"].as_u64().expect("seq"))
    .collect();
    assert_outage(&o, &arrived);
}
