//! The Kafka sink against Tansu, an Apache-Kafka-compatible broker: plain, SASL/SCRAM over
//! TLS and mutual TLS (Tansu's own TLS is not usable, so a socat TLS front stands before
//! it, as a site's TLS terminator would). Records are consumed back by an independent
//! client (confluent-kafka, its own librdkafka) and must match seq for seq, with the
//! headers the sink documents. Wrong credentials and a client certificate from another CA
//! must leave the sink failing with a clear error. The outage run (a cut link with an
//! agent restart in the middle) is here too: Kafka's per-partition order shows live data
//! arriving before the backlog ends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use skygate_e2e::{
    Agent, FaultProxy, Peer, free_port, last_seq, peer_python, peers_dir, pending, sink_status,
    tls_files, wait_port, wait_until,
};

fn tansu() -> PathBuf {
    let p = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cache/skygate/tansu/bin/tansu");
    assert!(p.exists(), "{} missing: run scripts/setup", p.display());
    p
}

/// A Tansu broker listening on `port`, advertising `advertised`, storing in SQLite under
/// `dir` (so users and topics survive its restart).
fn broker(dir: &Path, port: u16, advertised: &str, auth: bool) -> Peer {
    // Tansu reads the database path relative to its working directory.
    let db = "sqlite://tansu.db";
    let listen = format!("tcp://127.0.0.1:{port}");
    let mut args = vec![
        "broker",
        "--listener-url",
        &listen,
        "--advertised-listener-url",
        advertised,
        "--storage-engine",
        db,
    ];
    if auth {
        args.push("--authentication");
    }
    let peer = Peer::start_in("tansu", &tansu(), &args, false, dir);
    wait_port(port, "tansu");
    peer
}

fn tansu_cmd(args: &[&str]) {
    let o = Command::new(tansu()).args(args).output().expect("tansu");
    assert!(
        o.status.success(),
        "tansu {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Messages read back by confluent-kafka.
fn consume(
    bootstrap: &str,
    topics: &[&str],
    want: u64,
    extra: &[String],
) -> Vec<serde_json::Value> {
    let o = Command::new(peer_python())
        .arg(peers_dir().join("kafka_consume.py"))
        .args([bootstrap, &topics.join(","), &want.to_string()])
        .args(extra)
        .output()
        .expect("kafka_consume.py");
    assert!(
        o.status.success(),
        "kafka_consume.py: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

const HEAD: &str = "[gateway]\nid = \"gw-k\"\n[buffer]\ndurability = \"process\"\nmin_free_disk = \"1MiB\"\n[health]\nenabled = false\n";

fn drivers() -> &'static str {
    "[drivers.wx]\nkind = \"sim\"\nstream = \"weather\"\ntick = \"10ms\"\n\
     [drivers.wx.channels.t]\nsignal = \"counter\"\nrate_hz = 50\n\
     [drivers.gps]\nkind = \"sim\"\nstream = \"gps\"\ntick = \"10ms\"\n\
     [drivers.gps.channels.lat]\nsignal = \"counter\"\nrate_hz = 20\n"
}

/// Runs the rig until `sink` delivered some, then drains without instruments.
fn run_and_drain(
    root: &Path,
    sinks: &str,
    sink: &str,
    check_running: impl Fn(&Path),
) -> (PathBuf, u64) {
    let data = root.join("data");
    let cfg = root.join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "{HEAD}{}{sinks}[[routes]]\nstreams = [\"weather\", \"gps\"]\nsinks = [\"{sink}\"]\n",
            drivers()
        ),
    )
    .expect("config");
    let a = Agent::start(&cfg, &data);
    wait_until(Duration::from_secs(90), "deliveries", || {
        sink_status(&data, sink)["delivered_records"].as_u64() >= Some(300)
    });
    check_running(&data);
    a.stop();
    let drain = root.join("drain.toml");
    std::fs::write(
        &drain,
        format!(
            "{HEAD}{sinks}[[routes]]\nstreams = [\"weather\", \"gps\"]\nsinks = [\"{sink}\"]\n"
        ),
    )
    .expect("drain");
    let a = Agent::start(&drain, &data);
    wait_until(Duration::from_secs(60), "drained", || {
        pending(&data, sink) == 0
    });
    a.stop();
    let last = last_seq(&data);
    (data, last)
}

/// Seq for seq: every record once, each stream in seq order within its partition, the
/// documented headers, the value naming the same seq.
fn assert_exact(msgs: &[serde_json::Value], last: u64) {
    let mut per_stream: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in msgs {
        let h = &m["headers"];
        let seq: u64 = h["skygate-seq"]
            .as_str()
            .expect("seq header")
            .parse()
            .expect("seq");
        assert_eq!(h["skygate-gateway"], "gw-k");
        assert_eq!(h["skygate-schema"], "1");
        assert_eq!(h["skygate-type"], "record");
        assert_eq!(h["skygate-time-quality"], m["value"]["time_quality"]);
        assert_eq!(m["value"]["seq"], seq);
        let stream = h["skygate-stream"].as_str().expect("stream").to_string();
        assert_eq!(m["topic"], format!("skygate.{stream}"));
        per_stream.entry(stream).or_default().push(seq);
    }
    let mut all: Vec<u64> = per_stream.values().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=last).collect::<Vec<_>>(),
        "every seq exactly once"
    );
    for (stream, seqs) in &per_stream {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{stream} out of order"
        );
    }
}

#[test]
fn plain_tansu_receives_every_record_seq_for_seq_with_headers() {
    let root = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let b = format!("127.0.0.1:{port}");
    let _tansu = broker(root.path(), port, &format!("tcp://{b}"), false);
    for t in ["skygate.weather", "skygate.gps"] {
        tansu_cmd(&[
            "topic",
            "create",
            t,
            "--broker",
            &format!("tcp://{b}"),
            "--partitions",
            "3",
        ]);
    }
    let sink =
        format!("[sinks.k]\nkind = \"kafka\"\nbrokers = [\"{b}\"]\nbatch_max_age = \"200ms\"\n");
    let (_, last) = run_and_drain(root.path(), &sink, "k", |_| {});
    let msgs = consume(&b, &["skygate.weather", "skygate.gps"], last, &[]);
    assert_exact(&msgs, last);
}

#[test]
fn sasl_scram_over_tls_delivers_and_a_wrong_password_fails_clearly() {
    let root = tempfile::tempdir().expect("tmp");
    let tls = tls_files(root.path());
    let (port, tls_port) = (free_port(), free_port());
    let plain = format!("tcp://127.0.0.1:{port}");
    // Users and topics first, on a broker without authentication; then it restarts with
    // authentication required (SQLite keeps both).
    {
        let _setup = broker(root.path(), port, &plain, false);
        tansu_cmd(&[
            "user",
            "create",
            "gw-k",
            "scram-pass-1",
            "--broker",
            &plain,
            "--mechanism",
            "scram512",
        ]);
        tansu_cmd(&[
            "user",
            "create",
            "verifier",
            "verify-pass-1",
            "--broker",
            &plain,
            "--mechanism",
            "scram512",
        ]);
        for t in ["skygate.weather", "skygate.gps"] {
            tansu_cmd(&[
                "topic",
                "create",
                t,
                "--broker",
                &plain,
                "--partitions",
                "3",
            ]);
        }
    }
    let _tansu = broker(
        root.path(),
        port,
        &format!("tcp://localhost:{tls_port}"),
        true,
    );
    let _front = Peer::start(
        "socat tls",
        Path::new("socat"),
        &[
            &format!(
                "OPENSSL-LISTEN:{tls_port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                tls.cert.display(),
                tls.key.display()
            ),
            &format!("TCP:127.0.0.1:{port}"),
        ],
        false,
    );
    wait_port(tls_port, "socat");
    let pass = root.path().join("k.pass");
    std::fs::write(&pass, "scram-pass-1\n").expect("pass");
    let wrong = root.path().join("wrong.pass");
    std::fs::write(&wrong, "not-it\n").expect("pass");
    let sink = |name: &str, pass: &Path| {
        format!(
            "[sinks.{name}]\nkind = \"kafka\"\nbrokers = [\"localhost:{tls_port}\"]\ntls_ca = \"{}\"\n\
             sasl_mechanism = \"SCRAM-SHA-512\"\nsasl_username = \"gw-k\"\nsasl_password_file = \"{}\"\n\
             batch_max_age = \"200ms\"\ndelivery_timeout = \"5s\"\nbackoff_initial = \"200ms\"\nbackoff_max = \"2s\"\n",
            tls.ca.display(),
            pass.display()
        )
    };
    // The wrong password first, on its own: it must fail, and say why.
    let bad_root = root.path().join("bad");
    std::fs::create_dir_all(&bad_root).expect("dir");
    let bad_cfg = bad_root.join("c.toml");
    std::fs::write(
        &bad_cfg,
        format!(
            "{HEAD}{}{}[[routes]]\nstreams = [\"weather\"]\nsinks = [\"kbad\"]\n",
            drivers(),
            sink("kbad", &wrong)
        ),
    )
    .expect("config");
    let bad_data = bad_root.join("data");
    let a = Agent::start(&bad_cfg, &bad_data);
    wait_until(
        Duration::from_secs(90),
        "the wrong password failing",
        || sink_status(&bad_data, "kbad")["state"] == "failing",
    );
    let err = sink_status(&bad_data, "kbad")["last_error"].to_string();
    assert!(
        err.contains("SASL") || err.contains("uthenticat"),
        "wrong password: {err}"
    );
    assert_eq!(sink_status(&bad_data, "kbad")["delivered_records"], 0);
    a.stop();

    let (_, last) = run_and_drain(root.path(), &sink("k", &pass), "k", |_| {});
    let extra: Vec<String> = [
        "security.protocol=sasl_ssl".to_string(),
        format!("ssl.ca.location={}", tls.ca.display()),
        "sasl.mechanism=SCRAM-SHA-512".to_string(),
        "sasl.username=verifier".to_string(),
        "sasl.password=verify-pass-1".to_string(),
    ]
    .into();
    let msgs = consume(
        &format!("localhost:{tls_port}"),
        &["skygate.weather", "skygate.gps"],
        last,
        &extra,
    );
    assert_exact(&msgs, last);
}

#[test]
fn mutual_tls_delivers_and_a_client_certificate_from_another_ca_is_refused() {
    let root = tempfile::tempdir().expect("tmp");
    let tls = tls_files(root.path());
    let (port, tls_port) = (free_port(), free_port());
    let _tansu = broker(
        root.path(),
        port,
        &format!("tcp://localhost:{tls_port}"),
        false,
    );
    for t in ["skygate.weather", "skygate.gps"] {
        tansu_cmd(&[
            "topic",
            "create",
            t,
            "--broker",
            &format!("tcp://127.0.0.1:{port}"),
            "--partitions",
            "3",
        ]);
    }
    let _front = Peer::start(
        "socat mtls",
        Path::new("socat"),
        &[
            &format!(
                "OPENSSL-LISTEN:{tls_port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},cafile={},verify=1",
                tls.cert.display(),
                tls.key.display(),
                tls.ca.display()
            ),
            &format!("TCP:127.0.0.1:{port}"),
        ],
        false,
    );
    wait_port(tls_port, "socat");
    let sink = |name: &str, cert: &Path, key: &Path| {
        format!(
            "[sinks.{name}]\nkind = \"kafka\"\nbrokers = [\"localhost:{tls_port}\"]\ntls_ca = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
             batch_max_age = \"200ms\"\ndelivery_timeout = \"5s\"\nbackoff_initial = \"200ms\"\nbackoff_max = \"2s\"\n",
            tls.ca.display(),
            cert.display(),
            key.display()
        )
    };
    let rogue = sink("rogue", &tls.rogue_cert, &tls.rogue_key);
    let (_, last) = run_and_drain(
        root.path(),
        &format!(
            "{}{rogue}[[routes]]\nstreams = [\"weather\"]\nsinks = [\"rogue\"]\n",
            sink("k", &tls.client_cert, &tls.client_key)
        ),
        "k",
        |data| {
            wait_until(
                Duration::from_secs(60),
                "the rogue certificate failing",
                || sink_status(data, "rogue")["state"] == "failing",
            );
            let s = sink_status(data, "rogue");
            assert_eq!(s["delivered_records"], 0, "{s}");
            assert!(!s["last_error"].is_null(), "{s}");
        },
    );
    let extra: Vec<String> = vec![
        "security.protocol=ssl".into(),
        format!("ssl.ca.location={}", tls.ca.display()),
        format!("ssl.certificate.location={}", tls.client_cert.display()),
        format!("ssl.key.location={}", tls.client_key.display()),
    ];
    let msgs = consume(
        &format!("localhost:{tls_port}"),
        &["skygate.weather", "skygate.gps"],
        last,
        &extra,
    );
    assert_exact(&msgs, last);
}

#[test]
fn an_outage_with_an_agent_restart_loses_nothing_and_live_data_goes_first() {
    let root = tempfile::tempdir().expect("tmp");
    let (port, front) = (free_port(), free_port());
    let _tansu = broker(
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
    let data = root.path().join("data");
    let cfg = root.path().join("c.toml");
    let sink = format!(
        "[sinks.k]\nkind = \"kafka\"\nbrokers = [\"127.0.0.1:{front}\"]\nbatch_max_age = \"100ms\"\nbatch_max_records = 100\n\
         delivery_timeout = \"4s\"\nbackoff_initial = \"200ms\"\nbackoff_max = \"1s\"\n"
    );
    let table = format!(
        "{HEAD}[drivers.wx]\nkind = \"sim\"\nstream = \"weather\"\ntick = \"5ms\"\n\
         [drivers.wx.channels.t]\nsignal = \"counter\"\nrate_hz = 100\n[drivers.wx.channels.p]\nsignal = \"counter\"\nrate_hz = 100\n\
         {sink}[[routes]]\nstreams = [\"weather\"]\nsinks = [\"k\"]\n"
    );
    std::fs::write(&cfg, &table).expect("config");
    let a = Agent::start(&cfg, &data);
    wait_until(Duration::from_secs(60), "first deliveries", || {
        sink_status(&data, "k")["delivered_records"].as_u64() >= Some(200)
    });
    proxy.down();
    std::thread::sleep(Duration::from_secs(5));
    a.stop();
    let a = Agent::start(&cfg, &data);
    std::thread::sleep(Duration::from_secs(5));
    let backlog = pending(&data, "k");
    proxy.up();
    let t0 = Instant::now();
    wait_until(Duration::from_secs(120), "the backlog drained", || {
        let s = sink_status(&data, "k");
        s["state"] == "connected" && s["backfilling"] == false && pending(&data, "k") < 400
    });
    let secs = t0.elapsed().as_secs_f64();
    let boundary = sink_status(&data, "k")["backfill_boundary"]
        .as_u64()
        .expect("boundary");
    a.stop();
    println!(
        "outage kafka: backlog {backlog} records drained in {secs:.1} s ({:.0} records/s, ingest 200/s)",
        backlog as f64 / secs
    );
    let drain = root.path().join("drain.toml");
    std::fs::write(
        &drain,
        format!("{HEAD}{sink}[[routes]]\nstreams = [\"weather\"]\nsinks = [\"k\"]\n"),
    )
    .expect("drain");
    let a = Agent::start(&drain, &data);
    wait_until(Duration::from_secs(60), "rest delivered", || {
        pending(&data, "k") == 0
    });
    a.stop();
    let last = last_seq(&data);
    assert!(backlog > 500, "the outage built a backlog ({backlog})");
    // One partition: offsets are the order the broker took the records in.
    let msgs = consume(
        &format!("127.0.0.1:{front}"),
        &["skygate.weather"],
        u64::MAX,
        &[],
    );
    let arrived: Vec<u64> = msgs
        .iter()
        .map(|m| m["value"]["seq"].as_u64().expect("seq"))
        .collect();
    let got: std::collections::BTreeSet<u64> = arrived.iter().copied().collect();
    let missing: Vec<u64> = (1..=last).filter(|s| !got.contains(s)).take(10).collect();
    assert!(missing.is_empty(), "never arrived (first 10): {missing:?}");
    let first_at = |s: u64| arrived.iter().position(|x| *x == s).expect("arrived");
    assert!(
        first_at(boundary + 1) < first_at(boundary),
        "live seq {} should reach Kafka before the backlog's last seq {boundary}",
        boundary + 1
    );
}
