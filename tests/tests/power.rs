//! Power failing, through the operator's power-fail input (`skygate power fail|ok`, what a
//! UPS daemon calls; the board's GPIO line feeds the same component, see
//! `bsp/src/power.rs`): intake stops, the buffer is committed, checkpointed and flushed,
//! a marker is written; the event is reported when power returns or, after the gateway
//! went down (SIGKILL here), at the next start. Real publishers (`mosquitto_pub -q 1`)
//! against the embedded broker of the real binary.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use skygate_e2e::{Agent, buffer_export, embedded_broker_rig, free_port, skygate, wait_until};

const BURST: usize = 50_000;

/// Publishers killed when dropped: a failing assertion must not leave them running.
struct Publishers(Vec<std::process::Child>);

impl Drop for Publishers {
    fn drop(&mut self) {
        for p in &mut self.0 {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

fn publisher(port: u16, client: &str, lines: &Path) -> std::process::Child {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-l"])
        .args(["-i", client, "-t", &format!("burst/{client}")])
        .stdin(std::fs::File::open(lines).expect("lines"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_pub (Debian mosquitto-clients)")
}

/// One QoS 1 message; true when acknowledged within `timeout_s` (mosquitto_pub exits 0
/// only after the PUBACK; Debian's has no timeout option, coreutils' `timeout` is one).
fn publish_one(port: u16, timeout_s: u32) -> bool {
    Command::new("timeout")
        .arg(timeout_s.to_string())
        .args([
            "mosquitto_pub",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
        ])
        .args(["-t", "burst/one", "-m", r#"{"n":1}"#])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `skygate power ARGS --json`: Err(stderr) when it fails.
fn try_power(data: &Path, args: &[&str]) -> Result<serde_json::Value, String> {
    let d = data.to_str().expect("utf8");
    let mut a = vec!["power"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--json", "--data-dir", d]);
    let out = skygate(&a);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).expect("power json"))
}

fn power(data: &Path, args: &[&str]) -> serde_json::Value {
    try_power(data, args).unwrap_or_else(|e| panic!("skygate power {args:?}: {e}"))
}

/// The power-fail reports in the buffer (the agent stopped), parsed.
fn reports(data: &Path) -> Vec<serde_json::Value> {
    buffer_export(data)
        .into_iter()
        .filter(|r| r["channel"] == "power.event")
        .map(|r| serde_json::from_str(r["value"].as_str().expect("text")).expect("report"))
        .collect()
}

fn audit_actions(data: &Path) -> Vec<String> {
    let out = skygate(&[
        "audit",
        "--json",
        "--data-dir",
        data.to_str().expect("utf8"),
    ]);
    assert!(out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    rows.as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["action"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_power_failure_under_a_burst_seals_what_was_accepted_and_is_reported_after_the_gateway_went_down()
 {
    let root = tempfile::tempdir().expect("tmp");
    let data = root.path().join("data");
    let port = free_port();
    let cfg = embedded_broker_rig(root.path(), "power", "process", port);
    let lines = root.path().join("burst.jsonl");
    let text: String = (1..=BURST).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    std::fs::write(&lines, text).expect("burst");
    let agent = Agent::start_serving(&cfg, &data);
    wait_until(Duration::from_secs(20), "the embedded broker", || {
        publish_one(port, 5)
    });

    // Two publishers mid-burst when the power fails.
    let mut pubs = Publishers(vec![
        publisher(port, "a", &lines),
        publisher(port, "b", &lines),
    ]);
    wait_until(Duration::from_secs(60), "records flowing", || {
        skygate_e2e::last_seq(&data) > 2_000
    });
    let st = power(&data, &["fail"]);
    let failed = &st["failed"];
    let sealed_ms = failed["sealed_ms"].as_f64().expect("sealed_ms");
    let last_seq = failed["last_seq"].as_u64().expect("last_seq");
    println!(
        "power fail under a 2-client QoS 1 burst: intake stopped in {:.1} ms, sealed in {sealed_ms:.1} ms (budget {} ms), at seq {last_seq}",
        failed["intake_stopped_ms"].as_f64().unwrap_or(0.0),
        failed["budget_ms"]
    );
    assert!(last_seq > 2_000, "the seal covers what was committed: {st}");
    assert_eq!(failed["input"], "operator");
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("power-fail.json")).expect("marker"))
            .expect("marker json");
    assert_eq!(marker["last_seq"].as_u64(), Some(last_seq));
    // Checkpointed: the WAL was folded into the database and truncated (nothing commits
    // while held: the sink cannot deliver, so there are no acks either).
    let wal = std::fs::metadata(data.join("buffer/skygate.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the WAL is empty after the seal");

    // Held: nothing more is committed, publishers are not acknowledged.
    std::thread::sleep(Duration::from_millis(1500));
    let status = power(&data, &[]);
    assert_eq!(status["failed"]["last_seq"].as_u64(), Some(last_seq));
    assert!(
        pubs.0
            .iter_mut()
            .all(|p| p.try_wait().expect("wait").is_none()),
        "publishers still wait for PUBACKs"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let ep = skygate_agent::control::client::Endpoint::Unix(data.join("skygate.sock"));
    let ready = rt.block_on(ep.request("GET", "/readyz"));
    assert!(
        matches!(&ready, Err(e) if e.to_string().contains("input power failed")),
        "/readyz while power is failed: {ready:?}"
    );
    let metrics = skygate_e2e::metrics_text(&data);
    assert!(metrics.contains("skygate_power_failed 1"), "{metrics}");

    // The power goes: no orderly stop.
    agent.kill9();
    drop(pubs);
    let burst: Vec<(u64, String, u64)> = buffer_export(&data)
        .into_iter()
        .filter(|r| r["stream"] == "burst" && r["channel"] != "one.n")
        .map(|r| {
            (
                r["seq"].as_u64().expect("seq"),
                r["channel"].as_str().expect("ch").to_string(),
                r["value"].as_f64().expect("n") as u64,
            )
        })
        .collect();
    let max_seq = burst.iter().map(|r| r.0).max().unwrap_or(0);
    assert!(
        max_seq <= last_seq,
        "nothing was committed after the seal: seq {max_seq} > {last_seq}"
    );
    for client in ["a.n", "b.n"] {
        let mut v: Vec<u64> = burst
            .iter()
            .filter(|r| r.1 == client)
            .map(|r| r.2)
            .collect();
        v.sort();
        let want: Vec<u64> = (1..=v.len() as u64).collect();
        assert_eq!(v, want, "client {client}: stored values are 1..=n, no hole");
    }

    // Power is back, the gateway boots: the event is reported from the marker.
    let agent = Agent::start_serving(&cfg, &data);
    // (The killed agent's socket file is still there: wait for an answer, not the file.)
    wait_until(Duration::from_secs(30), "the report", || {
        try_power(&data, &[]).is_ok_and(|s| !s["last_event"].is_null())
    });
    assert!(!data.join("power-fail.json").exists(), "marker removed");
    assert_eq!(agent.stop(), Some(0));
    let r = reports(&data);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["went_down"], true);
    assert_eq!(r[0]["last_seq"].as_u64(), Some(last_seq));
    assert_eq!(r[0]["event"], "power_fail");
    let actions = audit_actions(&data);
    for a in ["power.fail", "power.restored"] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }
}

#[test]
fn intake_resumes_when_power_returns_and_the_outage_is_reported_at_once() {
    let root = tempfile::tempdir().expect("tmp");
    let data = root.path().join("data");
    let port = free_port();
    let cfg = embedded_broker_rig(root.path(), "power", "process", port);
    let agent = Agent::start_serving(&cfg, &data);
    wait_until(Duration::from_secs(20), "the embedded broker", || {
        publish_one(port, 5)
    });
    let st = power(&data, &["fail"]);
    assert!(!st["failed"].is_null(), "{st}");
    assert!(
        !publish_one(port, 2),
        "a QoS 1 publish is not acknowledged while power is failed"
    );
    // A publisher waiting when power returns is acknowledged then.
    let lines = root.path().join("one.jsonl");
    std::fs::write(&lines, "{\"n\":1}\n{\"n\":2}\n").expect("lines");
    let mut late = Publishers(vec![publisher(port, "late", &lines)]);
    let waiting = &mut late.0[0];
    std::thread::sleep(Duration::from_millis(500));
    let st = power(&data, &["ok"]);
    assert!(st["failed"].is_null(), "{st}");
    let ev = &st["last_event"];
    assert_eq!(ev["went_down"], false, "{st}");
    assert!(ev["outage_s"].as_f64().expect("outage") >= 2.0, "{st}");
    let done = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        waiting.try_wait().expect("wait").is_some()
    });
    assert!(
        done,
        "the waiting publisher was acknowledged after power returned"
    );
    assert!(waiting.wait().expect("wait").success());
    assert!(!data.join("power-fail.json").exists());
    assert_eq!(agent.stop(), Some(0));
    let late: Vec<_> = buffer_export(&data)
        .into_iter()
        .filter(|r| r["channel"] == "late.n")
        .collect();
    assert_eq!(late.len(), 2, "both messages stored");
    let r = reports(&data);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["went_down"], false);
}
