//! The command line against real files and a real agent run.

use std::time::Duration;

use skygate_e2e::{Agent, last_seq, sim_rig, skygate, stats, wait_until};

#[test]
fn check_config_accepts_the_shipped_configs_and_exits_78_with_file_line_col_on_a_bad_one() {
    let root = env!("CARGO_MANIFEST_DIR");
    for f in [
        "../config/default.toml",
        "../config/examples/site/skygate.toml",
    ] {
        let p = format!("{root}/{f}");
        let out = skygate(&["check-config", &p]);
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let d = tempfile::tempdir().expect("tmp");
    let bad = d.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[gateway]\nid = \"gw\"\n\n[buffer]\ndurabilty = \"power\"\n",
    )
    .expect("write");
    let out = skygate(&["check-config", bad.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("{}:5:1: ", bad.display())),
        "{err}"
    );
    assert!(err.contains("durabilty"), "{err}");

    let out = skygate(&["check-config", "/nonexistent.toml"]);
    assert_eq!(out.status.code(), Some(78));
    // `run` refuses the same way, so systemd's RestartPreventExitStatus=78 stops a loop.
    let out = skygate(&[
        "run",
        "--config",
        bad.to_str().expect("utf8"),
        "--data-dir",
        d.path().join("x").to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(78));
}

#[test]
fn buffer_commands_show_what_a_running_agent_stored() {
    let (_root, data, cfg) = sim_rig("gw-cli", 2, 50);
    let a = Agent::start(&cfg, &data);
    wait_until(Duration::from_secs(20), "records", || last_seq(&data) >= 20);
    let d = data.to_str().expect("utf8");

    let st = stats(&data);
    assert_eq!(st["gateway_id"], "gw-cli");
    assert_eq!(st["status"]["degraded"], false);
    let streams = st["streams"].to_string();
    assert!(streams.contains("\"weather\""), "{streams}");
    assert!(st["sinks"][0]["sink"] == "archive");

    let out = skygate(&["buffer", "stats", "--data-dir", d]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("gateway     gw-cli") && text.contains("archive"),
        "{text}"
    );

    assert_eq!(a.stop(), Some(0));
    let out = skygate(&[
        "buffer",
        "inspect",
        "--json",
        "--limit",
        "5",
        "--data-dir",
        d,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = rows.as_array().expect("array");
    // Delivered records are gone; what is left is listed with its fields.
    for r in rows {
        // The sim's counters, and the agent's own heartbeat.
        assert!(
            r["stream"] == "weather" || r["stream"] == "gateway.health",
            "{r}"
        );
        if r["stream"] == "weather" {
            assert_eq!(r["type"], "integer");
        }
        assert!(r["seq"].as_u64().is_some() && r["ts"].as_str().is_some());
    }

    let out = skygate(&["buffer", "export", "--data-dir", d]);
    assert!(out.status.success());
    for line in out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(line).expect("ndjson");
        assert_eq!(v["gateway"], "gw-cli");
    }
    let out = skygate(&["buffer", "fsck", "--data-dir", d]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = skygate(&["buffer", "replay", "--sink", "nope", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown sink"));
}

#[test]
fn the_embedded_default_runs_with_no_config_and_fills_the_local_bucket() {
    let root = tempfile::tempdir().expect("tmp");
    let data = root.path().join("data");
    let mut child = std::process::Command::new(skygate_e2e::skygate_bin())
        .args(["run", "--data-dir"])
        .arg(&data)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    wait_until(
        Duration::from_secs(30),
        "objects in the local bucket",
        || {
            let b = skygate_e2e::read_bucket(&data.join("bucket"));
            b.records.iter().any(|r| r["stream"] == "weather")
                && b.records
                    .iter()
                    .any(|r| r["stream"] == "gps" && r["channel"] == "fix_quality")
                && b.records.iter().any(|r| r["stream"] == "sky.quality")
                && b.records
                    .iter()
                    .any(|r| r["stream"] == "dome" && r["channel"] == "main.temperature")
                && b.records.iter().any(|r| {
                    r["stream"] == "camera.frames"
                        && r["value"]["meta"]["INSTRUME"] == "SKYGATE-SIM"
                })
                && b.blob_objects > 0
        },
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().expect("wait").success());
    let b = skygate_e2e::read_bucket(&data.join("bucket"));
    assert!(b.records.iter().all(|r| r["gateway"] == "demo-gateway"));
}

#[test]
fn systemd_hears_ready_then_watchdog_pings_and_status_while_the_pipeline_answers() {
    use std::os::unix::net::UnixDatagram;
    let d = tempfile::tempdir().expect("tmp");
    let sock = d.path().join("notify.sock");
    let rx = UnixDatagram::bind(&sock).expect("bind");
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut child = std::process::Command::new(skygate_e2e::skygate_bin())
        .args(["run", "--data-dir"])
        .arg(d.path().join("data"))
        .env("NOTIFY_SOCKET", &sock)
        .env("WATCHDOG_USEC", "1000000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut msgs = Vec::new();
    let mut buf = [0u8; 4096];
    let until = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < until {
        if let Ok(n) = rx.recv(&mut buf) {
            msgs.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < until && !msgs.iter().any(|m| m.contains("STOPPING=1")) {
        if let Ok(n) = rx.recv(&mut buf) {
            msgs.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert!(child.wait().expect("wait").success());
    assert!(msgs.iter().any(|m| m.contains("READY=1")), "{msgs:?}");
    // WATCHDOG_USEC=1s: pinged every half second while the buffer writer answers.
    let pings = msgs.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(pings >= 4, "{pings} pings in 4 s: {msgs:?}");
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("STATUS=ok;") && m.contains("readings/s")),
        "{msgs:?}"
    );
    assert!(msgs.iter().any(|m| m.contains("STOPPING=1")), "{msgs:?}");
}

#[test]
fn completions_and_the_man_page_are_generated_from_the_commands() {
    let out = skygate(&["completions", "bash"]);
    assert!(out.status.success());
    let bash = String::from_utf8_lossy(&out.stdout);
    for word in [
        "skygate",
        "buffer",
        "fsck",
        "sinks",
        "audit",
        "check-config",
    ] {
        assert!(bash.contains(word), "bash completion lacks {word}");
    }
    let out = skygate(&["man"]);
    assert!(out.status.success());
    let man = String::from_utf8_lossy(&out.stdout);
    assert!(
        man.starts_with(".ie") || man.contains(".TH skygate"),
        "{}",
        &man[..man.len().min(200)]
    );
    assert!(
        man.contains("check\\-config") || man.contains("check-config"),
        "man page lists the commands"
    );
}
