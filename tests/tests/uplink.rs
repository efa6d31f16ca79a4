//! The MQTT uplink sink against Mosquitto requiring client certificates: records arrive
//! at QoS 1 for a subscriber on the broker, seq for seq; a client certificate from another
//! CA is refused and the sink shows as failing; records too large for the uplink are set
//! aside as dead letters in the local bucket with the reason.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use skygate_e2e::{
    Agent, free_port, last_seq, mosquitto, pending, read_bucket, sink_status, tls_files, wait_until,
};

#[test]
fn records_reach_a_subscriber_through_mosquitto_with_client_certificates_and_oversized_ones_are_dead_lettered()
 {
    let root = tempfile::tempdir().expect("tmp");
    let tls = tls_files(root.path());
    let port = free_port();
    let _broker = mosquitto(
        root.path(),
        port,
        &format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true",
            tls.ca.display(),
            tls.cert.display(),
            tls.key.display()
        ),
    );

    // The consumer: a QoS 1 subscriber with its own client certificate.
    let received = root.path().join("received.txt");
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-v"])
        .args(["-i", "verifier", "-t", "skygate/gw-up/#"])
        .arg("--cafile")
        .arg(&tls.ca)
        .arg("--cert")
        .arg(&tls.client_cert)
        .arg("--key")
        .arg(&tls.client_key)
        .stdout(std::fs::File::create(&received).expect("out"))
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub");
    std::thread::sleep(Duration::from_millis(500));

    let bucket = root.path().join("bucket");
    let mqtt_sink = |name: &str, cert: &Path, key: &Path| {
        format!(
            "[sinks.{name}]\nkind = \"mqtt\"\nurl = \"mqtts://127.0.0.1:{port}\"\nca_cert = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n\
             max_message_bytes = \"2KiB\"\nbatch_max_age = \"300ms\"\nbackoff_initial = \"100ms\"\nbackoff_max = \"1s\"\n",
            tls.ca.display(),
            cert.display(),
            key.display()
        )
    };
    let sinks = format!(
        "{}{}[sinks.archive]\nkind = \"bucket\"\ndir = \"{}\"\nbatch_max_age = \"300ms\"\n\
         [[routes]]\nstreams = [\"deadletter\"]\nsinks = [\"archive\"]\n",
        mqtt_sink("uplink", &tls.client_cert, &tls.client_key),
        mqtt_sink("rogue", &tls.rogue_cert, &tls.rogue_key),
        bucket.display()
    );
    let head = "[gateway]\nid = \"gw-up\"\n[buffer]\ndurability = \"process\"\nmin_free_disk = \"1MiB\"\n[health]\nenabled = false\n";
    let cfg = root.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "{head}[drivers.wx]\nkind = \"sim\"\nstream = \"weather\"\ntick = \"10ms\"\n\
             [drivers.wx.channels.t]\nsignal = \"counter\"\nrate_hz = 50\n\
             [drivers.cam]\nkind = \"sim\"\nstream = \"cam\"\n\
             [drivers.cam.channels.frame]\nsignal = \"blob\"\nrate_hz = 2\nsize = 3000\ncontent_type = \"image/jpeg\"\n\
             {sinks}[[routes]]\nstreams = [\"weather\", \"cam\"]\nsinks = [\"uplink\", \"rogue\"]\n"
        ),
    )
    .expect("config");
    let data = root.path().join("data");
    let a = Agent::start(&cfg, &data);
    wait_until(
        Duration::from_secs(60),
        "deliveries and a failing rogue",
        || {
            sink_status(&data, "uplink")["delivered_records"].as_u64() >= Some(200)
                && sink_status(&data, "uplink")["dead_lettered"].as_u64() >= Some(3)
                && sink_status(&data, "rogue")["state"] == "failing"
        },
    );
    let rogue = sink_status(&data, "rogue");
    let err = rogue["last_error"].as_str().unwrap_or_default().to_string();
    assert!(
        !err.is_empty() && rogue["delivered_records"] == 0,
        "the broker must refuse another CA's client certificate: {rogue}"
    );
    a.stop();

    // Deliver the rest without new readings, then compare.
    let drain = root.path().join("drain.toml");
    std::fs::write(
        &drain,
        format!("{head}{sinks}[[routes]]\nstreams = [\"weather\", \"cam\"]\nsinks = [\"uplink\", \"rogue\"]\n"),
    )
    .expect("drain");
    let a = Agent::start(&drain, &data);
    wait_until(
        Duration::from_secs(60),
        "uplink and archive drained",
        || pending(&data, "uplink") == 0 && pending(&data, "archive") == 0,
    );
    a.stop();
    let last = last_seq(&data);
    std::thread::sleep(Duration::from_millis(500));
    let _ = sub.kill();
    let _ = sub.wait();

    let text = std::fs::read_to_string(&received).expect("received");
    let mut uplinked = std::collections::BTreeSet::new();
    for line in text.lines() {
        let (topic, payload) = line.split_once(' ').expect("topic payload");
        let v: serde_json::Value = serde_json::from_str(payload).expect("json payload");
        assert_eq!(
            topic,
            format!("skygate/gw-up/{}", v["stream"].as_str().expect("stream"))
        );
        assert_eq!(v["stream"], "weather", "only weather fits the uplink");
        uplinked.insert(v["seq"].as_u64().expect("seq"));
    }
    // Dead letters: the camera frames, in the archive, each naming its original seq.
    let archive = read_bucket(&bucket);
    let mut letters = std::collections::BTreeSet::new();
    let mut originals = std::collections::BTreeSet::new();
    for r in &archive.records {
        assert_eq!(r["stream"], "deadletter");
        assert_eq!(r["quality"], "bad");
        assert_eq!(r["type"], "blob", "the frame itself is kept");
        let why = r["quality_reason"].as_str().expect("reason");
        assert!(
            why.contains("refused by sink uplink (stream cam, seq "),
            "{why}"
        );
        assert!(why.contains("more than max_message_bytes"), "{why}");
        let seq: u64 = why
            .split("seq ")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .and_then(|s| s.parse().ok())
            .expect("original seq");
        originals.insert(seq);
        letters.insert(r["seq"].as_u64().expect("seq"));
    }
    assert!(!originals.is_empty(), "frames were dead-lettered");
    assert!(uplinked.is_disjoint(&originals));
    // Every seq accounted for: sent over the uplink, refused and set aside, or the
    // dead letter itself.
    let all: std::collections::BTreeSet<u64> = uplinked
        .iter()
        .chain(&originals)
        .chain(&letters)
        .copied()
        .collect();
    assert_eq!(
        all,
        (1..=last).collect(),
        "no hole: {} uplinked, {} set aside, {} letters, last {last}",
        uplinked.len(),
        originals.len(),
        letters.len()
    );
}

#[test]
fn dead_letters_follow_the_routes_of_a_reload() {
    let root = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let _broker = mosquitto(root.path(), port, "allow_anonymous true");
    let bucket = root.path().join("bucket");
    let data = root.path().join("data");
    let conf_d = root.path().join("conf.d");
    std::fs::create_dir_all(&conf_d).expect("conf.d");
    let cfg = root.path().join("c.toml");
    // Camera frames too large for the uplink; no route for dead letters yet.
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw-dl\"\n[buffer]\ndurability = \"process\"\nmin_free_disk = \"1MiB\"\n[health]\nenabled = false\n\
             [drivers.cam]\nkind = \"sim\"\nstream = \"cam\"\n[drivers.cam.channels.frame]\nsignal = \"blob\"\nrate_hz = 5\nsize = 3000\n\
             [sinks.uplink]\nkind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{port}\"\nmax_message_bytes = \"2KiB\"\nbatch_max_age = \"200ms\"\n\
             [sinks.archive]\nkind = \"bucket\"\ndir = \"{}\"\nbatch_max_age = \"200ms\"\n\
             [[routes]]\nstreams = [\"cam\"]\nsinks = [\"uplink\"]\n",
            bucket.display()
        ),
    )
    .expect("config");
    let a = Agent::start(&cfg, &data);
    // Unrouted, they are kept in the dead-letter file.
    let file = data.join("deadletter/uplink.ndjson");
    wait_until(Duration::from_secs(30), "dead letters in the file", || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.lines().count() >= 3)
    });
    // A reload routes them to the archive: the running sink follows.
    std::fs::write(
        conf_d.join("50-dl.toml"),
        "[[routes]]\nstreams = [\"deadletter\"]\nsinks = [\"archive\"]\n",
    )
    .expect("drop-in");
    let out = skygate_e2e::skygate(&["reload", "--data-dir", data.to_str().expect("utf8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        Duration::from_secs(30),
        "dead letters in the archive",
        || {
            read_bucket(&bucket)
                .records
                .iter()
                .any(|r| r["stream"] == "deadletter" && r["type"] == "blob")
        },
    );
    a.stop();
}
