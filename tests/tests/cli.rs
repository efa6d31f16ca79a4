//! The command line against real files and a real agent run.

use std::time::Duration;

use skygate_e2e::{Agent, last_seq, sim_rig, skygate, stats, wait_until};

/// The embedded default and every main file of every example (`config/examples/*/*.toml`;
/// `conf.d/` drop-ins are read with their main file).
fn shipped_configs() -> Vec<std::path::PathBuf> {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut out = vec![config.join("default.toml")];
    for dir in std::fs::read_dir(config.join("examples")).expect("config/examples") {
        let dir = dir.expect("entry").path();
        for f in std::fs::read_dir(&dir).into_iter().flatten() {
            let f = f.expect("entry").path();
            if f.extension().is_some_and(|e| e == "toml") {
                out.push(f);
            }
        }
    }
    out.sort();
    // The site example and the three bucket backends at least.
    assert!(out.len() >= 5, "{out:?}");
    out
}

/// Every config file shipped: the main files and their `conf.d/` drop-ins.
fn shipped_config_files() -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for main in shipped_configs() {
        let dropins = main.parent().expect("dir").join("conf.d");
        let mut d: Vec<_> = std::fs::read_dir(dropins)
            .into_iter()
            .flatten()
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        d.sort();
        out.push(main);
        out.extend(d);
    }
    out
}

#[test]
fn every_shipped_config_file_validates_against_the_json_schema_and_a_wrong_one_does_not() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let schema = root.join("config/skygate.schema.json");
    let validate = |files: &[std::path::PathBuf]| {
        std::process::Command::new(skygate_e2e::peer_python())
            .arg(skygate_e2e::peers_dir().join("validate_schema.py"))
            .arg(&schema)
            .args(files)
            .output()
            .expect("python")
    };
    let files = shipped_config_files();
    assert!(files.len() > 8, "{files:?}");
    let out = validate(&files);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The schema does check: an unknown key, a key of another kind, a bad type and an
    // unknown kind are each reported where they are.
    let d = tempfile::tempdir().expect("tmp");
    let bad = d.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[buffer]\ndurabilty = \"power\"\n\
         [drivers.m]\nkind = \"modbus\"\ntransport = \"tcp\"\nurl = \"x\"\ndevices = {}\n\
         [drivers.s]\nkind = \"sim\"\npriority = 12\nchannels = {}\n\
         [sinks.k]\nkind = \"kafak\"\n",
    )
    .expect("write");
    let out = validate(std::slice::from_ref(&bad));
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "buffer:",
        "drivers.m:",
        "drivers.s.priority:",
        "sinks.k.kind:",
    ] {
        assert!(text.contains(want), "no error at {want}: {text}");
    }
}

#[test]
fn check_config_accepts_the_shipped_configs_and_exits_78_with_file_line_col_on_a_bad_one() {
    for p in shipped_configs() {
        let out = skygate(&["check-config", p.to_str().expect("utf8")]);
        assert!(
            out.status.success(),
            "{}: {}",
            p.display(),
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
    let log = root.path().join("agent.log");
    let mut child = std::process::Command::new(skygate_e2e::skygate_bin())
        .args(["run", "--data-dir"])
        .arg(&data)
        .stderr(std::fs::File::create(&log).expect("log file"))
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
    // Human log lines in a file carry no colour codes.
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains(" INFO "), "no human log lines: {text}");
    assert!(
        !text.contains('\x1b'),
        "escape codes in a log file: {text:?}"
    );
}

#[test]
fn human_logs_are_coloured_on_a_terminal() {
    // util-linux `script` runs the agent on a pseudo-terminal; it stops after 3 s.
    let root = tempfile::tempdir().expect("tmp");
    let cmd = format!(
        "timeout -s TERM 3 {} run --data-dir {}",
        skygate_e2e::skygate_bin().display(),
        root.path().join("data").display()
    );
    let out = std::process::Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env_remove("NO_COLOR")
        .output()
        .expect("script (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("INFO"),
        "no log lines on the terminal: {text}"
    );
    assert!(text.contains("\x1b["), "no colour on a terminal: {text:?}");
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

#[test]
fn skygate_board_names_the_board_from_a_device_tree_fixture_and_what_of_it_is_present() {
    let root = tempfile::tempdir().expect("tmp");
    let r = root.path();
    std::fs::create_dir_all(r.join("proc/device-tree")).expect("mkdir");
    std::fs::write(
        r.join("proc/device-tree/compatible"),
        b"raspberrypi,4-compute-module\0brcm,bcm2711\0",
    )
    .expect("write");
    std::fs::create_dir_all(r.join("dev/skygate")).expect("mkdir");
    std::fs::write(r.join("dev/skygate/gps"), "").expect("touch");
    let root_arg = r.to_str().expect("utf8");
    let out = skygate(&["board", "--json", "--root", root_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    // The device tree decides only on the board's own architecture.
    if std::env::consts::ARCH == "aarch64" {
        assert_eq!(v["board"]["name"], "rpi4");
        assert_eq!(v["chosen_by"]["value"], "raspberrypi,4-compute-module");
    } else {
        assert_eq!(v["board"]["name"], "generic-linux");
    }
    // The config's gateway.board wins, and the found/missing devices are reported.
    let cfg = r.join("skygate.toml");
    std::fs::write(
        &cfg,
        "[gateway]\nid = \"gw\"\nboard = \"rpi4\"\n\
         [sinks.a]\nkind = \"bucket\"\n[[routes]]\nstreams = [\"*\"]\nsinks = [\"a\"]\n",
    )
    .expect("write");
    let cfg_arg = cfg.to_str().expect("utf8");
    let out = skygate(&["board", "--config", cfg_arg, "--root", root_arg]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("board:       rpi4"), "{text}");
    assert!(text.contains("gateway.board in the config"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("found") && l.contains("/dev/skygate/gps")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("MISSING") && l.contains("/dev/skygate/rs485-0")),
        "{text}"
    );
    // An unknown board is a config error at load, with the known names.
    std::fs::write(&cfg, "[gateway]\nboard = \"rpi9\"\n").expect("write");
    let out = skygate(&["check-config", cfg_arg]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":2:") && err.contains("rpi4"), "{err}");
}
