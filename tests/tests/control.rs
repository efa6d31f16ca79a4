//! The control API and the CLI over it, against a running agent.

use std::path::Path;
use std::time::Duration;

use skygate_e2e::{Agent, read_bucket, require_root, sim_rig, sinks_json, skygate, wait_until};

fn api(data: &Path, method: &str, path: &str) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let ep = skygate_agent::control::client::Endpoint::Unix(data.join("skygate.sock"));
    rt.block_on(ep.request(method, path))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn scrape(data: &Path) -> prometheus_parse::Scrape {
    let text = String::from_utf8(api(data, "GET", "/metrics")).expect("utf8");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("prometheus text")
}

fn sample(s: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    let found = s
        .samples
        .iter()
        .find(|x| x.metric == name && label.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("metric {name} {label:?} missing"));
    match found.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => panic!("{name}: not a plain value"),
    }
}

#[test]
fn pausing_a_sink_stops_its_delivery_and_resuming_starts_it_again() {
    let (root, data, cfg) = sim_rig("gw-ctl", 2, 100);
    let bucket = root.path().join("bucket");
    let a = Agent::start(&cfg, &data);
    wait_until(Duration::from_secs(30), "first delivery", || {
        read_bucket(&bucket).records.len() > 50
    });
    let d = data.to_str().expect("utf8");

    let out = skygate(&["sinks", "pause", "archive", "--data-dir", d]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(15), "the sink to pause", || {
        sinks_json(&data)[0]["state"] == "paused"
    });
    let delivered = read_bucket(&bucket).records.len();
    let backlog = sinks_json(&data)[0]["backlog_records"]
        .as_u64()
        .expect("backlog");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        read_bucket(&bucket).records.len(),
        delivered,
        "nothing delivered while paused"
    );
    let s = sinks_json(&data);
    assert!(
        s[0]["backlog_records"].as_u64().expect("backlog") > backlog + 100,
        "backlog grows while paused: {s}"
    );
    assert!(
        s[0]["paused"] == true && s[0]["oldest_unsent_age_s"].as_f64().expect("age") >= 2.0,
        "{s}"
    );

    let out = skygate(&["sinks", "resume", "archive", "--data-dir", d]);
    assert!(out.status.success());
    let out = skygate(&["sinks", "flush", "archive", "--data-dir", d]);
    assert!(out.status.success());
    wait_until(Duration::from_secs(30), "delivery after resume", || {
        read_bucket(&bucket).records.len() > delivered + 400
            && sinks_json(&data)[0]["backlog_records"]
                .as_u64()
                .unwrap_or(u64::MAX)
                < 300
    });
    let out = skygate(&["sinks", "pause", "nope", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown sink"));
    assert_eq!(a.stop(), Some(0));
}

#[test]
fn metrics_parse_as_prometheus_text_and_move_with_traffic_and_status_answers() {
    let (_root, data, cfg) = sim_rig("gw-metrics", 2, 100);
    let a = Agent::start_serving(&cfg, &data);
    wait_until(Duration::from_secs(20), "a delivery", || {
        sinks_json(&data)[0]["delivered_records"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });
    let first = scrape(&data);
    std::thread::sleep(Duration::from_millis(1500));
    let second = scrape(&data);
    for s in &second.samples {
        assert!(
            s.metric.starts_with("skygate_"),
            "unprefixed metric {}",
            s.metric
        );
    }
    let readings = |s: &prometheus_parse::Scrape| sample(s, "skygate_ingest_readings_total", None);
    assert!(
        readings(&second) > readings(&first) + 100.0,
        "ingest counter moves"
    );
    assert!(sample(&second, "skygate_buffer_records_committed_total", None) >= readings(&first));
    assert_eq!(
        sample(&second, "skygate_sink_state", Some(("state", "connected"))),
        1.0
    );
    assert!(
        sample(
            &second,
            "skygate_sink_delivered_records_total",
            Some(("sink", "archive"))
        ) > 0.0
    );
    assert!(sample(&second, "skygate_process_resident_memory_bytes", None) > 1e6);
    assert_eq!(sample(&second, "skygate_buffer_degraded", None), 0.0);

    assert_eq!(api(&data, "GET", "/healthz"), b"ok\n");
    assert_eq!(api(&data, "GET", "/readyz"), b"ready\n");
    let out = skygate(&[
        "status",
        "--json",
        "--data-dir",
        data.to_str().expect("utf8"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(v["gateway"], "gw-metrics");
    assert_eq!(v["ingest"]["running"], true);
    assert!(v["buffer"]["last_seq"].as_u64().expect("seq") > 0);
    assert!(v["uptime_s"].as_u64().is_some() && v["time_quality"].as_str().is_some());
    assert_eq!(a.stop(), Some(0));
    assert!(
        !data.join("skygate.sock").exists(),
        "socket removed at stop"
    );
}

#[test]
fn another_user_cannot_use_the_control_socket() {
    if !require_root("control socket permissions") {
        return;
    }
    let (root, data, cfg) = sim_rig("gw-perm", 1, 10);
    // Let anyone traverse to the socket, so only the socket's own mode is tested.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let a = Agent::start_serving(&cfg, &data);
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mode = std::fs::metadata(data.join("skygate.sock"))
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(skygate_e2e::skygate_bin())
        .args(["status", "--data-dir", data.to_str().expect("utf8")])
        .output()
        .expect("setpriv");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Root (the owner) still can.
    let out = skygate(&["status", "--data-dir", data.to_str().expect("utf8")]);
    assert!(out.status.success());
    assert_eq!(a.stop(), Some(0));
}

#[test]
fn operator_actions_and_agent_events_are_audited_and_an_edited_row_fails_verify() {
    let (_root, data, cfg) = sim_rig("gw-audit", 1, 20);
    let a = Agent::start_serving(&cfg, &data);
    let d = data.to_str().expect("utf8");
    assert!(
        skygate(&["sinks", "pause", "archive", "--data-dir", d])
            .status
            .success()
    );
    assert!(
        !skygate(&["sinks", "resume", "nope", "--data-dir", d])
            .status
            .success()
    );
    assert_eq!(a.stop(), Some(0));

    let out = skygate(&["audit", "--json", "--data-dir", d]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = rows.as_array().expect("rows");
    let actions: Vec<&str> = rows.iter().filter_map(|r| r["action"].as_str()).collect();
    assert_eq!(
        actions,
        ["agent.start", "sink.pause", "sink.resume", "agent.stop"],
        "{rows:?}"
    );
    assert_eq!(rows[1]["actor"], "uid:0(root)");
    assert_eq!(rows[1]["origin"], "unix-socket");
    assert_eq!(rows[1]["target"], "archive");
    assert_eq!(rows[1]["result"], "ok");
    assert_eq!(rows[2]["result"], "rejected: unknown sink");

    let out = skygate(&["audit", "--verify", "--data-dir", d]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Someone rewrites history: the pause never happened.
    let conn = rusqlite::Connection::open(data.join("audit.db")).expect("open");
    conn.execute(
        "UPDATE audit SET action = 'sink.flush' WHERE action = 'sink.pause'",
        [],
    )
    .expect("edit");
    drop(conn);
    let out = skygate(&["audit", "--verify", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("row 2 was altered"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Metric names a PromQL expression refers to (`skygate_` identifiers).
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("skygate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn every_query_of_the_shipped_grafana_dashboard_names_a_metric_the_agent_exports() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/grafana/skygate-dashboard.json"
    );
    let dash: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("dashboard")).expect("dashboard json");
    let mut wanted = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(
                !names.is_empty(),
                "panel {:?}: query names no skygate metric: {expr}",
                p["title"]
            );
            wanted.extend(names);
        }
    }
    let templ = dash["templating"]["list"].to_string();
    wanted.extend(metric_names(&templ));

    let (_root, data, cfg) = sim_rig("gw-grafana", 1, 20);
    let a = Agent::start_serving(&cfg, &data);
    let exported: std::collections::BTreeSet<String> = scrape(&data)
        .samples
        .into_iter()
        .map(|s| s.metric)
        .collect();
    assert_eq!(a.stop(), Some(0));
    for name in &wanted {
        assert!(
            exported.contains(name),
            "dashboard queries {name}, which the agent does not export; it exports {exported:?}"
        );
    }
}

#[test]
fn the_heartbeat_stream_reports_the_gateway_and_is_routed_like_any_stream() {
    let root = tempfile::tempdir().expect("tmp");
    let data = root.path().join("data");
    let bucket = root.path().join("bucket");
    let cfg = root.path().join("c.toml");
    let text = format!(
        "[gateway]\nid = \"gw-hb\"\n[health]\ninterval = \"1s\"\n{}",
        skygate_e2e::archive_sink(&bucket, "batch_max_age = \"200ms\"\n")
    );
    std::fs::write(&cfg, text).expect("config");
    let a = Agent::start(&cfg, &data);
    wait_until(
        Duration::from_secs(30),
        "two heartbeats in the bucket",
        || {
            read_bucket(&bucket)
                .records
                .iter()
                .filter(|r| r["channel"] == "cpu_percent")
                .count()
                >= 2
        },
    );
    assert_eq!(a.stop(), Some(0));
    let got = read_bucket(&bucket);
    let channels: std::collections::BTreeSet<&str> = got
        .records
        .iter()
        .filter_map(|r| r["channel"].as_str())
        .collect();
    for c in [
        "cpu_percent",
        "rss_bytes",
        "mem_available_bytes",
        "disk_free_bytes",
        "buffer_records",
        "buffer_degraded",
        "time_quality",
        "link.archive",
        "backlog.archive",
    ] {
        assert!(channels.contains(c), "missing {c}: {channels:?}");
    }
    for r in &got.records {
        assert_eq!(r["stream"], "gateway.health");
        assert_eq!(r["source"], "skygate");
    }
    let rss = got
        .records
        .iter()
        .find(|r| r["channel"] == "rss_bytes")
        .expect("rss");
    assert!(rss["value"].as_i64().expect("int") > 1_000_000, "{rss}");
}

#[test]
fn the_tcp_api_is_tls_only_wants_the_token_and_the_socket_follows_the_control_section() {
    let root = tempfile::tempdir().expect("tmp");
    let data = root.path().join("data");
    let tls = skygate_e2e::tls_files(root.path());
    let token = root.path().join("token");
    std::fs::write(&token, "5b1f0c2e9a7d4e63b8a1c0f2d9e8a7b6\n").expect("token");
    let wrong = root.path().join("wrong");
    std::fs::write(&wrong, "00000000000000000000000000000000\n").expect("token");
    let port = skygate_e2e::free_port();
    let cfg = root.path().join("c.toml");
    let text = skygate_e2e::sim_config(
        "gw-tcp",
        1,
        20,
        &format!(
            "[health]\nenabled = false\n[control]\nsocket = \"run/ctl.sock\"\nsocket_mode = \"0640\"\nsocket_group = \"nogroup\"\n\
             listen = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntoken_file = \"{}\"\n{}",
            tls.cert.display(),
            tls.key.display(),
            token.display(),
            skygate_e2e::archive_sink(&root.path().join("bucket"), "")
        ),
    );
    std::fs::write(&cfg, text).expect("config");
    let a = Agent::start(&cfg, &data);
    let sock = data.join("run/ctl.sock");
    wait_until(Duration::from_secs(20), "the control socket", || {
        sock.exists()
    });

    // The socket is where, and as restricted as, the [control] section says.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&sock).expect("socket");
    assert_eq!(meta.mode() & 0o777, 0o640);
    let nogroup: u32 = std::fs::read_to_string("/etc/group")
        .expect("/etc/group")
        .lines()
        .find_map(|l| l.strip_prefix("nogroup:")?.split(':').nth(1)?.parse().ok())
        .expect("nogroup");
    assert_eq!(meta.gid(), nogroup);
    // The CLI finds it from the config.
    let out = skygate(&[
        "status",
        "--json",
        "--config",
        cfg.to_str().expect("utf8"),
        "--data-dir",
        data.to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let url = format!("https://127.0.0.1:{port}");
    let remote = |token: &Path, ca: &Path, args: &[&str]| {
        let mut v = args.to_vec();
        v.extend([
            "--url",
            &url,
            "--token-file",
            token.to_str().expect("utf8"),
            "--ca-cert",
            ca.to_str().expect("utf8"),
        ]);
        skygate(&v)
    };
    let ok = remote(&token, &tls.ca, &["status", "--json"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("json");
    assert_eq!(v["gateway"], "gw-tcp");

    let denied = remote(&wrong, &tls.ca, &["sinks", "pause", "archive"]);
    assert_eq!(denied.status.code(), Some(1));
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(err.contains("401"), "{err}");
    let sinks = remote(&token, &tls.ca, &["sinks", "--json"]);
    let sinks: serde_json::Value = serde_json::from_slice(&sinks.stdout).expect("json");
    assert_eq!(sinks[0]["paused"], false, "a refused pause changed nothing");

    // A certificate from a CA the client does not trust: no connection at all.
    let untrusted = remote(&token, &tls.other_ca, &["status"]);
    assert_eq!(untrusted.status.code(), Some(1));
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(
        err.contains("cannot reach") && err.to_lowercase().contains("certificate"),
        "{err}"
    );

    // No token at all, and plaintext HTTP: refused by the server (curl as an outside client).
    let curl = |args: &[&str]| {
        std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .args(args)
            .output()
            .expect("curl")
    };
    let none = curl(&[
        "--cacert",
        tls.ca.to_str().expect("utf8"),
        &format!("{url}/v1/status"),
    ]);
    assert_eq!(String::from_utf8_lossy(&none.stdout), "401");
    let plain = curl(&[&format!("http://127.0.0.1:{port}/v1/status")]);
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200");

    // With the token, operator actions work and are audited with where they came from.
    let paused = remote(&token, &tls.ca, &["sinks", "pause", "archive"]);
    assert!(
        paused.status.success(),
        "{}",
        String::from_utf8_lossy(&paused.stderr)
    );
    let metrics = remote(&token, &tls.ca, &["errors", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&metrics.stdout).expect("json");
    assert!(
        v["active"]
            .as_array()
            .expect("active")
            .iter()
            .any(|x| x["component"] == "sink/archive"),
        "{v}"
    );
    assert_eq!(a.stop(), Some(0));
    let audit = skygate(&[
        "audit",
        "--json",
        "--data-dir",
        data.to_str().expect("utf8"),
    ]);
    let rows: serde_json::Value = serde_json::from_slice(&audit.stdout).expect("json");
    let rows = rows.as_array().expect("rows");
    assert!(
        rows.iter().any(|r| r["action"] == "sink.pause"
            && r["result"] == "ok"
            && r["actor"] == "token"
            && r["origin"]
                .as_str()
                .is_some_and(|o| o.starts_with("tcp:127.0.0.1:"))),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r["result"] == "rejected: bad or missing token"),
        "{rows:?}"
    );
}
