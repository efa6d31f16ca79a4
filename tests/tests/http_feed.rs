//! The HTTP feed driver against Python's http.server: conditional GETs store each
//! document once, errors, timeouts and redirects are reported, and HTTPS trusts a site CA.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use skygate_e2e::{
    Agent, Peer, driver_status, free_port, peers_dir, read_bucket, tls_files, wait_until,
};

fn feed_server(port: u16, tls: Option<(&Path, &Path)>) -> Peer {
    let script = peers_dir().join("http_feed.py");
    let port = port.to_string();
    let mut args = vec![script.to_str().expect("utf8").to_string(), port];
    if let Some((c, k)) = tls {
        args.push(c.to_str().expect("utf8").into());
        args.push(k.to_str().expect("utf8").into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The standard library's server: any python3 does.
    Peer::start("http feed", Path::new("python3"), &args, true)
}

fn documents(bucket: &Path, source: &str) -> Vec<String> {
    let mut docs: Vec<(u64, String)> = read_bucket(bucket)
        .records
        .iter()
        .filter(|r| r["source"] == source && r["channel"] == "document")
        .filter_map(|r| {
            let key = r["value"]["key"].as_str()?;
            let text = std::fs::read_to_string(bucket.join(key)).ok()?;
            Some((r["seq"].as_u64()?, text))
        })
        .collect();
    docs.sort();
    docs.into_iter().map(|(_, t)| t).collect()
}

fn counter(data: &Path, driver: &str, name: &str) -> u64 {
    driver_status(data, driver)["counters"][name]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn a_feed_is_stored_once_per_version_and_failures_are_reported() {
    let root = tempfile::tempdir().expect("tmp");
    let data = root.path().join("data");
    let bucket = root.path().join("bucket");
    let port = free_port();
    let _server = feed_server(port, None);
    let tls = tls_files(root.path());
    let tls_port = free_port();
    let _tls_server = feed_server(tls_port, Some((&tls.cert, &tls.key)));
    let base = format!("http://127.0.0.1:{port}");
    let cfg = root.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw-http\"\n[health]\nenabled = false\n\
             [drivers.mpec]\nkind = \"http\"\nurl = \"{base}/feed.txt\"\ninterval = \"200ms\"\ntimeout = \"2s\"\n\
             [drivers.broken]\nkind = \"http\"\nurl = \"{base}/broken\"\ninterval = \"1h\"\n\
             [drivers.slow]\nkind = \"http\"\nurl = \"{base}/slow\"\ninterval = \"1h\"\ntimeout = \"500ms\"\n\
             [drivers.moved]\nkind = \"http\"\nurl = \"{base}/moved\"\ninterval = \"1h\"\n\
             [drivers.secure]\nkind = \"http\"\nurl = \"https://localhost:{tls_port}/feed.txt\"\ninterval = \"1h\"\nca_cert = \"{}\"\n\
             [drivers.untrusted]\nkind = \"http\"\nurl = \"https://localhost:{tls_port}/feed.txt\"\ninterval = \"1h\"\n{}",
            tls.ca.display(),
            skygate_e2e::archive_sink(&bucket, "batch_max_age = \"100ms\"\n")
        ),
    )
    .expect("config");
    let a = Agent::start(&cfg, &data);

    // Version 1 once, however many polls: the rest are 304s.
    wait_until(Duration::from_secs(20), "several conditional polls", || {
        counter(&data, "mpec", "not_modified") >= 3 && !documents(&bucket, "mpec").is_empty()
    });
    assert_eq!(
        documents(&bucket, "mpec"),
        ["MPEC 2026-W01: minor planet circular, version 1\n"]
    );
    // A new version is stored once too.
    let bump = std::process::Command::new("curl")
        .args(["-s", &format!("{base}/bump")])
        .output()
        .expect("curl");
    assert!(bump.status.success());
    wait_until(Duration::from_secs(20), "version 2", || {
        documents(&bucket, "mpec").len() == 2
    });
    let before = counter(&data, "mpec", "not_modified");
    wait_until(Duration::from_secs(20), "more 304s", || {
        counter(&data, "mpec", "not_modified") > before + 2
    });
    let docs = documents(&bucket, "mpec");
    assert_eq!(docs.len(), 2, "{docs:?}");
    assert!(docs[1].contains("version 2"));
    let rec = read_bucket(&bucket)
        .records
        .into_iter()
        .find(|r| r["source"] == "mpec")
        .expect("record");
    assert_eq!(rec["value"]["content_type"], "text/plain; charset=utf-8");
    assert_eq!(rec["value"]["name"], "feed.txt");

    let reason = |d: &str| -> String {
        driver_status(&data, d)["last_error"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    wait_until(
        Duration::from_secs(20),
        "the failing feeds to report",
        || {
            reason("broken").contains("500")
                && reason("slow").contains("within")
                && reason("moved").contains("moved to /feed.txt")
                && reason("untrusted").contains("TLS")
                && !documents(&bucket, "secure").is_empty()
        },
    );
    for d in ["broken", "slow", "moved", "untrusted"] {
        assert_eq!(
            driver_status(&data, d)["state"],
            Value::from("failing"),
            "{d}"
        );
    }
    assert!(
        documents(&bucket, "secure")[0].contains("version"),
        "HTTPS with the site CA"
    );
    assert_eq!(a.stop(), Some(0));
}
