//! Operator commands against a running agent: drivers, tail, errors, reload (command and
//! SIGHUP), each with its `--json` shape.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use skygate_e2e::{Agent, read_bucket, sim_rig, skygate, wait_until};

fn cli(args: &[&str], data: &Path) -> Output {
    let mut a = args.to_vec();
    a.extend(["--data-dir", data.to_str().expect("utf8")]);
    skygate(&a)
}

fn json(args: &[&str], data: &Path) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = cli(&a, data);
    assert!(
        out.status.success(),
        "skygate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "skygate {args:?}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn driver<'a>(drivers: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    drivers.as_array()?.iter().find(|d| d["name"] == name)
}

const EXTRA_DRIVER: &str = "[drivers.extra]\nkind = \"sim\"\nstream = \"extra\"\ntick = \"10ms\"\n\
    [drivers.extra.channels.level]\nsignal = \"counter\"\nrate_hz = 50\nunit = \"m\"\n";

#[test]
fn drivers_show_live_values_and_tail_streams_readings() {
    let (_root, data, cfg) = sim_rig("gw-ops", 2, 50);
    let a = Agent::start(&cfg, &data);
    wait_until(Duration::from_secs(20), "wx readings", || {
        data.join("skygate.sock").exists()
            && json(&["drivers"], &data).as_array().is_some_and(|d| {
                d.iter()
                    .any(|x| x["name"] == "wx" && x["readings"].as_u64() > Some(20))
            })
    });
    let drivers = json(&["drivers"], &data);
    let wx = driver(&drivers, "wx").expect("wx listed");
    assert_eq!(wx["kind"], "sim");
    assert_eq!(wx["stream"], "weather");
    assert_eq!(wx["state"], "running");
    assert_eq!(wx["errors"], 0);
    // A counter's last value is close to the number of readings it produced.
    let c0 = &wx["channels"]["c0"];
    assert_eq!(c0["quality"], "good");
    assert!(c0["value"].as_i64().expect("integer") > 5, "{c0}");
    assert!(
        driver(&drivers, "skygate").is_some(),
        "heartbeat listed: {drivers}"
    );

    let human = cli(&["drivers"], &data);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.starts_with("DRIVER"), "{text}");
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("c1")),
        "{text}"
    );

    // Tail: N lines of schema-v1 NDJSON for the stream asked, then exit 0.
    let out = cli(&["tail", "weather", "-n", "25", "--json"], &data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("ndjson"))
        .collect();
    assert_eq!(lines.len(), 25);
    for l in &lines {
        assert_eq!(l["schema"], 1);
        assert_eq!(l["stream"], "weather");
        assert_eq!(l["gateway"], "gw-ops");
        assert!(
            l.get("seq").is_none(),
            "tail lines are not numbered yet: {l}"
        );
    }
    // Counters in a stream only go up, per channel.
    let mut last = std::collections::HashMap::new();
    for l in &lines {
        let v = l["value"].as_i64().expect("int");
        let prev = last.insert(l["channel"].as_str().expect("ch").to_string(), v);
        assert!(prev.is_none_or(|p| p < v), "{l}");
    }
    let human = cli(&["tail", "--source", "wx", "-n", "3"], &data);
    let text = String::from_utf8_lossy(&human.stdout);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.lines().all(|l| l.contains(" weather wx/c")), "{text}");
    assert_eq!(a.stop(), Some(0));
}

#[test]
fn errors_show_a_failing_sink_as_an_active_alarm_and_exit_3() {
    let root = tempfile::tempdir().expect("tmp");
    let data = root.path().join("data");
    // The bucket directory's parent is a regular file: every write fails.
    let blocker = root.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").expect("file");
    let cfg = root.path().join("c.toml");
    let text = skygate_e2e::sim_config(
        "gw-err",
        1,
        20,
        &format!(
            "[health]\nenabled = false\n{}",
            skygate_e2e::archive_sink(
                &blocker.join("bucket"),
                "batch_max_age = \"50ms\"\nbackoff_initial = \"50ms\"\nbackoff_max = \"200ms\"\n"
            )
        ),
    );
    std::fs::write(&cfg, text).expect("config");
    let a = Agent::start(&cfg, &data);
    wait_until(Duration::from_secs(20), "the sink to fail", || {
        data.join("skygate.sock").exists() && cli(&["errors"], &data).status.code() == Some(3)
    });
    let e = cli(&["errors", "--json"], &data);
    assert_eq!(e.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&e.stdout).expect("json");
    let alarm = v["active"]
        .as_array()
        .expect("active")
        .iter()
        .find(|x| x["component"] == "sink/archive")
        .unwrap_or_else(|| panic!("no sink alarm: {v}"));
    assert_eq!(alarm["severity"], "error");
    let recent = v["recent"].as_array().expect("recent");
    assert!(
        recent
            .iter()
            .any(|r| r["component"] == "sink/archive" && r["count"].as_u64() >= Some(1)),
        "{v}"
    );
    let text = String::from_utf8_lossy(&cli(&["errors"], &data).stdout).to_string();
    assert!(
        text.contains("ACTIVE") && text.contains("sink/archive"),
        "{text}"
    );
    assert_eq!(a.stop(), Some(0));
}

#[test]
fn reload_applies_a_changed_config_rejects_an_invalid_one_and_sighup_reloads_too() {
    let (root, data, cfg) = sim_rig("gw-reload", 1, 20);
    let bucket = root.path().join("bucket");
    let conf_d = root.path().join("conf.d");
    std::fs::create_dir_all(&conf_d).expect("conf.d");
    let a = Agent::start_serving(&cfg, &data);
    assert!(driver(&json(&["drivers"], &data), "extra").is_none());

    // A new driver in a drop-in: started by reload, routed, delivered.
    std::fs::write(conf_d.join("50-extra.toml"), EXTRA_DRIVER).expect("drop-in");
    let r = json(&["reload"], &data);
    assert_eq!(r["drivers_started"], serde_json::json!(["extra"]), "{r}");
    assert_eq!(r["drivers_stopped"], serde_json::json!([]), "{r}");
    assert_eq!(r["restart_required"], serde_json::json!([]), "{r}");
    wait_until(
        Duration::from_secs(30),
        "extra's readings in the bucket",
        || {
            read_bucket(&bucket)
                .records
                .iter()
                .any(|x| x["source"] == "extra" && x["stream"] == "extra")
        },
    );
    let extra = json(&["drivers"], &data);
    assert_eq!(driver(&extra, "extra").expect("extra")["state"], "running");

    // An invalid config changes nothing and says where it is wrong.
    std::fs::write(
        conf_d.join("60-bad.toml"),
        "[drivers.broken]\nkind = \"sim\"\nstream = 5\n",
    )
    .expect("bad drop-in");
    let bad = cli(&["reload"], &data);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("60-bad.toml:3:"), "{err}");
    assert!(driver(&json(&["drivers"], &data), "extra").is_some());
    std::fs::remove_file(conf_d.join("60-bad.toml")).expect("rm");

    // A changed sink applies only at the next start: reported, not applied.
    let text = std::fs::read_to_string(&cfg).expect("cfg");
    std::fs::write(
        &cfg,
        text.replace(
            "kind = \"bucket\"",
            "kind = \"bucket\"\nbatch_max_records = 7",
        ),
    )
    .expect("cfg");
    // SIGHUP removes the drop-in's driver.
    std::fs::remove_file(conf_d.join("50-extra.toml")).expect("rm");
    let pid = a.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill")
            .success()
    );
    wait_until(Duration::from_secs(20), "extra to be stopped", || {
        driver(&json(&["drivers"], &data), "extra").is_none()
    });
    let audit = json(&["audit", "--limit", "20"], &data);
    let reloads: Vec<&serde_json::Value> = audit
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["action"] == "config.reload")
        .collect();
    assert_eq!(reloads.len(), 3, "{audit}");
    assert!(
        reloads.iter().any(|r| r["result"] == "rejected: invalid"),
        "{audit}"
    );
    assert!(
        reloads.iter().any(|r| r["actor"] == "signal"
            && r["detail"].as_str().is_some_and(
                |d| d.contains("stopped extra") && d.contains("restart required: sinks")
            )),
        "{audit}"
    );
    assert_eq!(a.stop(), Some(0));
    // Nothing the removed driver produced went missing: its seqs have no holes.
    let got = read_bucket(&bucket);
    let counts = got.seq_counts();
    let (first, last) = (
        *counts.keys().next().expect("records"),
        *counts.keys().last().expect("records"),
    );
    assert_eq!(counts.len() as u64, last - first + 1, "holes in the seqs");
}

/// The keys a `--json` object must have.
fn has_keys(v: &serde_json::Value, keys: &[&str], what: &str) {
    for k in keys {
        assert!(v.get(k).is_some(), "{what}: no {k:?} in {v}");
    }
}

#[test]
fn every_command_answers_against_the_embedded_default_with_its_json_shape() {
    let root = tempfile::tempdir().expect("tmp");
    let data = root.path().join("data");
    let a = Agent::start_default_serving(&data);
    // Rates need two samples a second apart.
    wait_until(Duration::from_secs(20), "rates", || {
        json(&["status"], &data)["ingest_rate_per_s"].is_number()
    });

    let st = json(&["status"], &data);
    has_keys(
        &st,
        &[
            "version",
            "gateway",
            "uptime_s",
            "board",
            "time_quality",
            "disk_free_bytes",
            "ingest_rate_per_s",
            "buffer",
            "ingest",
        ],
        "status",
    );
    has_keys(
        &st["buffer"],
        &[
            "degraded",
            "records",
            "bytes",
            "last_seq",
            "records_evicted",
            "gaps",
        ],
        "status.buffer",
    );
    assert_eq!(st["gateway"], "demo-gateway");

    let sinks = json(&["sinks"], &data);
    let archive = &sinks.as_array().expect("array")[0];
    has_keys(
        archive,
        &[
            "name",
            "state",
            "paused",
            "last_error",
            "recent_errors",
            "backlog_records",
            "backlog_bytes",
            "oldest_unsent_age_s",
            "drain_rate_per_s",
            "delivered_records",
        ],
        "sinks[0]",
    );
    assert_eq!(archive["name"], "archive");

    let drivers = json(&["drivers"], &data);
    let names: Vec<&str> = drivers
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "allsky", "camera", "dome", "gps", "skygate", "sqm", "weather"
        ]
    );
    has_keys(
        &drivers[0],
        &[
            "name",
            "kind",
            "stream",
            "priority",
            "state",
            "errors",
            "last_error",
            "last_ok",
            "readings",
            "last_reading",
            "counters",
            "channels",
        ],
        "drivers[0]",
    );

    // The weather mast is the Modbus driver polling its simulated station over TCP.
    wait_until(
        Duration::from_secs(20),
        "the simulated Modbus station's readings",
        || {
            driver(&json(&["drivers"], &data), "weather")
                .is_some_and(|w| w["channels"]["mast.model"]["value"] == "SKYWX-1")
        },
    );
    let drivers = json(&["drivers"], &data);
    let weather = driver(&drivers, "weather").expect("weather");
    assert_eq!(weather["kind"], "modbus");
    assert_eq!(weather["state"], "running", "{weather}");
    let t = &weather["channels"]["mast.temperature"];
    assert_eq!(
        (t["quality"].as_str(), t["unit"].as_str()),
        (Some("good"), Some("degC"))
    );
    assert!(
        (3.9..=12.1).contains(&t["value"].as_f64().expect("number")),
        "{t}"
    );
    let p = weather["channels"]["mast.pressure"]["value"]
        .as_f64()
        .expect("number");
    assert!((1000.0..1030.0).contains(&p), "{p}");

    let errors = json(&["errors"], &data);
    has_keys(&errors, &["active", "recent"], "errors");

    let out = cli(&["tail", "-n", "4", "--json"], &data);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("ndjson"))
        .collect();
    assert_eq!(lines.len(), 4);
    for l in &lines {
        has_keys(
            l,
            &[
                "schema", "gateway", "stream", "ts", "source", "channel", "type", "value",
                "quality",
            ],
            "tail",
        );
    }

    // The embedded default reloads to itself: nothing changes.
    let r = json(&["reload"], &data);
    has_keys(
        &r,
        &[
            "source",
            "drivers_started",
            "drivers_stopped",
            "drivers_restarted",
            "routes_changed",
            "health_changed",
            "restart_required",
        ],
        "reload",
    );
    assert_eq!(r["source"], "<embedded default.toml>");
    assert_eq!(r["drivers_restarted"], serde_json::json!([]));
    assert_eq!(r["routes_changed"], false);

    let p = cli(&["sinks", "flush", "archive"], &data);
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    let unknown = cli(&["sinks", "pause", "nope"], &data);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown sink"));

    let audit = json(&["audit"], &data);
    let rows = audit.as_array().expect("rows");
    has_keys(
        &rows[0],
        &[
            "id", "ts", "actor", "origin", "action", "target", "result", "detail",
        ],
        "audit[0]",
    );
    for action in ["agent.start", "config.reload", "sink.flush"] {
        assert!(
            rows.iter().any(|r| r["action"] == action),
            "{action} not audited: {audit}"
        );
    }
    let v = json(&["audit", "--verify"], &data);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(a.stop(), Some(0));
}
