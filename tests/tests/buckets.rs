//! The bucket sink against real object-store APIs: Google Cloud Storage's
//! (gcp-storage-emulator), Azure Blob's (Azurite, over HTTPS with a test CA) and S3's
//! (s3s-fs, which checks SigV4 signatures). What the agent wrote is read back with each
//! cloud's own client library (google-cloud-storage, azure-storage-blob, boto3) and must
//! decode to exactly the records the agent committed: every seq once, blobs as their own
//! objects with their content type and metadata.

use std::path::{Path, PathBuf};
use std::time::Duration;

use skygate_e2e::{
    Agent, BucketContents, Peer, free_port, last_seq, peer_python, peers_dir, pending, read_bucket,
    sink_status, tls_files, wait_port, wait_until,
};

/// Azurite's well-known development account.
const AZ_ACCOUNT: &str = "devstoreaccount1";
const AZ_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Weather readings at 50 Hz and a 3 kB camera frame every second, every stream routed to
/// the sinks given.
fn config(gateway: &str, sinks: &str, routed_to: &[&str]) -> String {
    let names: Vec<String> = routed_to.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[gateway]\nid = \"{gateway}\"\n[buffer]\ndurability = \"process\"\nmin_free_disk = \"1MiB\"\n\
         [drivers.wx]\nkind = \"sim\"\nstream = \"weather\"\ntick = \"10ms\"\n\
         [drivers.wx.channels.t]\nsignal = \"counter\"\nrate_hz = 50\n\
         [drivers.cam]\nkind = \"sim\"\nstream = \"cam\"\n\
         [drivers.cam.channels.frame]\nsignal = \"blob\"\nrate_hz = 1\nsize = 3000\ncontent_type = \"image/jpeg\"\n\
         {sinks}\n[[routes]]\nstreams = [\"*\"]\nsinks = [{}]\n",
        names.join(", ")
    )
}

/// Runs the rig for a few seconds, then lets a drain agent (same sinks, no instruments)
/// deliver what is left, so the bucket must end up holding exactly seqs 1..=last.
fn run_and_drain(root: &Path, gateway: &str, sinks: &str, sink: &str) -> (PathBuf, u64) {
    let data = root.join("data");
    let cfg = root.join("c.toml");
    std::fs::write(&cfg, config(gateway, sinks, &[sink])).expect("config");
    let a = Agent::start(&cfg, &data);
    wait_until(Duration::from_secs(60), "deliveries", || {
        sink_status(&data, sink)["delivered_records"].as_u64() >= Some(150)
    });
    a.stop();
    let drain = root.join("drain.toml");
    std::fs::write(
        &drain,
        format!(
            "[gateway]\nid = \"{gateway}\"\n[buffer]\nmin_free_disk = \"1MiB\"\n[health]\nenabled = false\n{sinks}\n[[routes]]\nstreams = [\"*\"]\nsinks = [\"{sink}\"]\n"
        ),
    )
    .expect("drain config");
    let a = Agent::start(&drain, &data);
    wait_until(Duration::from_secs(60), "the backlog drained", || {
        pending(&data, sink) == 0
    });
    a.stop();
    let last = last_seq(&data);
    (data, last)
}

/// Reads the bucket back with the cloud's client library into `root/mirror`.
fn mirror(root: &Path, args: &[&str]) -> (BucketContents, serde_json::Value) {
    let out = root.join("mirror");
    let o = std::process::Command::new(peer_python())
        .arg(peers_dir().join("bucket_mirror.py"))
        .arg(args[0])
        .arg(&out)
        .args(&args[1..])
        .output()
        .expect("bucket_mirror.py");
    assert!(
        o.status.success(),
        "bucket_mirror.py {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let manifest = std::fs::read(root.join("manifest.json")).expect("manifest");
    (
        read_bucket(&out),
        serde_json::from_slice(&manifest).expect("manifest json"),
    )
}

/// Every committed seq exactly once; every blob its own object with its content type and
/// metadata naming its seq.
/// `other_blobs`: a driver whose blobs are not camera frames (checked by the caller).
fn assert_exact(
    contents: &BucketContents,
    manifest: &serde_json::Value,
    last: u64,
    other_blobs: Option<&str>,
) {
    let counts = contents.seq_counts();
    let seqs: Vec<u64> = counts.keys().copied().collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "every seq, no holes");
    assert!(counts.values().all(|c| *c == 1), "no seq twice");
    let others = contents
        .records
        .iter()
        .filter(|r| other_blobs.is_some_and(|o| r["source"] == o))
        .count();
    let blob_records: Vec<&serde_json::Value> = contents
        .records
        .iter()
        .filter(|r| r["type"] == "blob" && !other_blobs.is_some_and(|o| r["source"] == o))
        .collect();
    assert!(!blob_records.is_empty(), "camera frames delivered");
    assert_eq!(contents.blob_objects, blob_records.len() + others);
    for r in blob_records {
        let key = r["value"]["key"].as_str().expect("blob key");
        let m = &manifest[key];
        assert_eq!(m["content_type"], "image/jpeg", "{key}");
        assert_eq!(m["size"], 3000, "{key}");
        assert_eq!(m["metadata"]["skygate_seq"], r["seq"].to_string(), "{key}");
        assert_eq!(m["metadata"]["skygate_stream"], "cam", "{key}");
    }
    for (key, m) in manifest.as_object().expect("manifest") {
        if key.ends_with(".ndjson.zst") {
            assert_eq!(m["content_type"], "application/zstd", "{key}");
            assert_eq!(m["metadata"]["skygate_schema"], "1", "{key}");
        }
    }
}

#[test]
fn gcs_objects_read_back_with_googles_client_are_exactly_the_committed_records() {
    let root = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let _gcs = Peer::start(
        "gcs emulator",
        &peer_python(),
        &[
            peers_dir().join("gcs_emulator.py").to_str().expect("utf8"),
            &port.to_string(),
            "arch",
        ],
        true,
    );
    // The emulator takes no OAuth: a placeholder service account with OAuth disabled.
    let creds = root.path().join("gcs.creds");
    std::fs::write(
        &creds,
        "google_service_account_key = {\"private_key\": \"unused\", \"private_key_id\": \"unused\", \"client_email\": \"skygate@emulator\", \"disable_oauth\": true}\n",
    )
    .expect("creds");
    let sink = format!(
        "[sinks.g]\nkind = \"bucket\"\nurl = \"gs://arch\"\nendpoint = \"http://127.0.0.1:{port}\"\ncredentials_file = \"{}\"\nbatch_max_age = \"500ms\"\n",
        creds.display()
    );
    let (_, last) = run_and_drain(root.path(), "gw-gcs", &sink, "g");
    let endpoint = format!("http://127.0.0.1:{port}");
    let (contents, manifest) = mirror(root.path(), &["gcs", &endpoint, "arch"]);
    assert_exact(&contents, &manifest, last, None);
}

#[test]
fn azure_over_https_with_a_site_ca_gets_every_record_and_bad_credentials_or_an_untrusted_server_fail_clearly()
 {
    let root = tempfile::tempdir().expect("tmp");
    let tls = tls_files(root.path());
    let port = free_port();
    let azurite = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cache/skygate/node/node_modules/.bin/azurite-blob");
    let _az = Peer::start(
        "azurite",
        &azurite,
        &[
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--silent",
            "--cert",
            tls.cert.to_str().expect("utf8"),
            "--key",
            tls.key.to_str().expect("utf8"),
        ],
        false,
    );
    wait_port(port, "azurite");
    let endpoint = format!("https://127.0.0.1:{port}");
    let ca = tls.ca.to_str().expect("utf8");
    for container in ["arch", "other"] {
        let o = std::process::Command::new(peer_python())
            .arg(peers_dir().join("bucket_mirror.py"))
            .args(["azure-create", &endpoint, container, AZ_ACCOUNT, AZ_KEY, ca])
            .output()
            .expect("create container");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let creds = |name: &str, key: &str| {
        let p = root.path().join(name);
        std::fs::write(
            &p,
            format!(
                "azure_storage_account_name = {AZ_ACCOUNT}\nazure_storage_account_key = \"{key}\"\n"
            ),
        )
        .expect("creds");
        p
    };
    let good = creds("az.creds", AZ_KEY);
    let wrong = creds("wrong.creds", &AZ_KEY.replace('E', "F"));
    let sink = |name: &str, container: &str, ca: &Path, creds: &Path| {
        format!(
            "[sinks.{name}]\nkind = \"bucket\"\nurl = \"az://{container}\"\nendpoint = \"{endpoint}/{AZ_ACCOUNT}\"\nca_cert = \"{}\"\ncredentials_file = \"{}\"\nbatch_max_age = \"500ms\"\nbackoff_initial = \"100ms\"\nbackoff_max = \"1s\"\n",
            ca.display(),
            creds.display()
        )
    };

    // Wrong key and an untrusted server certificate, side by side with a good sink.
    let data = root.path().join("bad-data");
    let cfg = root.path().join("bad.toml");
    let sinks = format!(
        "{}{}{}",
        sink("az", "arch", &tls.ca, &good),
        sink("wrongkey", "other", &tls.ca, &wrong),
        sink("untrusted", "other", &tls.other_ca, &good)
    );
    std::fs::write(
        &cfg,
        config("gw-az-bad", &sinks, &["az", "wrongkey", "untrusted"]),
    )
    .expect("config");
    let a = Agent::start(&cfg, &data);
    wait_until(Duration::from_secs(60), "both bad sinks failing", || {
        sink_status(&data, "wrongkey")["state"] == "failing"
            && sink_status(&data, "untrusted")["state"] == "failing"
    });
    let wrong_err = sink_status(&data, "wrongkey")["last_error"].to_string();
    assert!(
        wrong_err.contains("403") && wrong_err.contains("az://other"),
        "wrong key: {wrong_err}"
    );
    let tls_err = sink_status(&data, "untrusted")["last_error"].to_string();
    assert!(
        tls_err.to_lowercase().contains("certificate") || tls_err.contains("error sending request"),
        "untrusted server: {tls_err}"
    );
    let good_delivered = sink_status(&data, "az")["delivered_records"]
        .as_u64()
        .expect("count");
    assert!(good_delivered > 0, "the good sink delivers meanwhile");
    a.stop();

    // A clean run: every record arrives, read back by Azure's own client over HTTPS.
    let run = root.path().join("run");
    std::fs::create_dir_all(&run).expect("dir");
    let (_, last) = run_and_drain(&run, "gw-az", &sink("az", "arch", &tls.ca, &good), "az");
    let (contents, manifest) = mirror(&run, &["azure", &endpoint, "arch", AZ_ACCOUNT, AZ_KEY, ca]);
    // The first (failing-sinks) run wrote into "arch" too: keep this gateway's objects.
    let ours = BucketContents {
        records: contents
            .records
            .iter()
            .filter(|r| r["gateway"] == "gw-az")
            .cloned()
            .collect(),
        gaps: Vec::new(),
        objects: 0,
        blob_objects: manifest
            .as_object()
            .expect("manifest")
            .keys()
            .filter(|k| k.starts_with("skygate/gw-az/") && k.contains("/blobs/"))
            .count(),
    };
    assert_exact(&ours, &manifest, last, None);
}

fn s3s_fs() -> PathBuf {
    let p = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cache/skygate/s3s-fs/bin/s3s-fs");
    assert!(p.exists(), "{} missing: run scripts/setup", p.display());
    p
}

#[test]
fn s3_with_signed_requests_gets_every_record_a_large_file_goes_up_in_parts_and_a_wrong_secret_fails_clearly()
 {
    let root = tempfile::tempdir().expect("tmp");
    let store = root.path().join("s3");
    std::fs::create_dir_all(store.join("arch")).expect("bucket");
    let port = free_port();
    let _s3 = Peer::start(
        "s3s-fs",
        &s3s_fs(),
        &[
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            "gw-key",
            "--secret-key",
            "gw-secret-1",
            store.to_str().expect("utf8"),
        ],
        false,
    );
    wait_port(port, "s3s-fs");
    let endpoint = format!("http://127.0.0.1:{port}");
    let creds = |name: &str, secret: &str| {
        let p = root.path().join(name);
        std::fs::write(
            &p,
            format!("# S3 keys for the archive\naws_access_key_id = gw-key\naws_secret_access_key = \"{secret}\"\n"),
        )
        .expect("creds");
        p
    };
    let (good, wrong) = (
        creds("s3.creds", "gw-secret-1"),
        creds("wrong.creds", "guessed"),
    );
    let sink = |name: &str, creds: &Path| {
        format!(
            "[sinks.{name}]\nkind = \"bucket\"\nurl = \"s3://arch\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\ncredentials_file = \"{}\"\n\
             multipart_threshold = \"5MiB\"\npart_size = \"5MiB\"\nbatch_max_age = \"500ms\"\nbackoff_initial = \"100ms\"\nbackoff_max = \"1s\"\n",
            creds.display()
        )
    };

    // The wrong secret: refused by the signature check, and the sink says so.
    let bad = root.path().join("bad");
    std::fs::create_dir_all(&bad).expect("dir");
    let cfg = bad.join("c.toml");
    std::fs::write(
        &cfg,
        config("gw-s3-bad", &sink("s3bad", &wrong), &["s3bad"]),
    )
    .expect("config");
    let data = bad.join("data");
    let a = Agent::start(&cfg, &data);
    wait_until(Duration::from_secs(60), "the wrong secret failing", || {
        sink_status(&data, "s3bad")["state"] == "failing"
    });
    let s = sink_status(&data, "s3bad");
    let err = s["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("s3://arch") && err.contains("403"),
        "wrong secret: {s}"
    );
    assert_eq!(s["delivered_records"], 0);
    a.stop();

    // A 12 MiB instrument file goes up as a multipart upload, beside the readings.
    let drop_dir = root.path().join("incoming");
    std::fs::create_dir_all(&drop_dir).expect("dir");
    let big: Vec<u8> = (0..12 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(drop_dir.join("frame-0001.raw"), &big).expect("big file");
    let files = format!(
        "[drivers.cam2]\nkind = \"files\"\ndir = \"{}\"\nformat = \"blob\"\ncontent_type = \"application/octet-stream\"\nafter = \"delete\"\nsettle = \"1s\"\n",
        drop_dir.display()
    );
    let (_, last) = run_and_drain(
        root.path(),
        "gw-s3",
        &format!("{files}{}", sink("s3", &good)),
        "s3",
    );
    assert!(
        !drop_dir.join("frame-0001.raw").exists(),
        "the file is deleted once its upload was confirmed"
    );
    let (contents, manifest) = mirror(
        root.path(),
        &["s3", &endpoint, "arch", "gw-key", "gw-secret-1"],
    );
    // The big file: its own object, byte for byte, uploaded in parts.
    let big_rec = contents
        .records
        .iter()
        .find(|r| r["source"] == "cam2")
        .expect("the file's record");
    let key = big_rec["value"]["key"].as_str().expect("key");
    let got = std::fs::read(root.path().join("mirror").join(key)).expect("object");
    assert!(
        got == big,
        "the uploaded file differs ({} bytes)",
        got.len()
    );
    let etag = manifest[key]["metadata"]["etag"]
        .as_str()
        .unwrap_or_default();
    assert!(
        etag.ends_with("-3"),
        "a 3-part multipart upload's ETag, got {etag:?}"
    );
    // Everything else as with the other stores (the big file is not a camera frame).
    assert_exact(&contents, &manifest, last, Some("cam2"));
}
