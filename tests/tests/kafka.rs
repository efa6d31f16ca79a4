//! The Kafka sink against Tansu, an Apache-Kafka-compatible broker: plain, SASL/SCRAM over
//! TLS and mutual TLS (Tansu's own TLS is not usable, so a socat TLS front stands before
//! it, as a site's TLS terminator would). Records are consumed back by an independent
//! client (confluent-kafka, its own librdkafka) and must match seq for seq, with the
//! headers the sink documents. Wrong credentials and a client certificate from another CA
//! must leave the sink failing with a clear error. (The outage run is in `outage.rs`.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use skygate_e2e::{
    Agent, Peer, TlsFiles, free_port, kafka_consume, last_seq, pending, sink_status, tansu_broker,
    tansu_cmd, tls_files, wait_port, wait_until,
};

/// socat terminating TLS on `tls_port` for the broker on `port` (Tansu's own TLS is not
/// usable); `client_certs`: require a client certificate signed by the test CA.
fn tls_front(tls_port: u16, port: u16, tls: &TlsFiles, client_certs: bool) -> Peer {
    let verify = if client_certs {
        format!("cafile={},verify=1", tls.ca.display())
    } else {
        "verify=0".to_string()
    };
    let front = Peer::start(
        "socat tls",
        Path::new("socat"),
        &[
            &format!(
                "OPENSSL-LISTEN:{tls_port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},{verify}",
                tls.cert.display(),
                tls.key.display()
            ),
            &format!("TCP:127.0.0.1:{port}"),
        ],
        false,
    );
    wait_port(tls_port, "socat");
    front
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
    let _tansu = tansu_broker(root.path(), port, &format!("tcp://{b}"), false);
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
    let msgs = kafka_consume(&b, &["skygate.weather", "skygate.gps"], last, &[]);
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
        let _setup = tansu_broker(root.path(), port, &plain, false);
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
    let _tansu = tansu_broker(
        root.path(),
        port,
        &format!("tcp://localhost:{tls_port}"),
        true,
    );
    let _front = tls_front(tls_port, port, &tls, false);
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
    let msgs = kafka_consume(
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
    let _tansu = tansu_broker(
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
    let _front = tls_front(tls_port, port, &tls, true);
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
    let msgs = kafka_consume(
        &format!("localhost:{tls_port}"),
        &["skygate.weather", "skygate.gps"],
        last,
        &extra,
    );
    assert_exact(&msgs, last);
}
