//! Workflows end to end: a chain from the sim driver to the local bucket checked against
//! the raw readings it came from; hot reload under steady traffic; `skygate workflow
//! check`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use skygate_e2e::*;

/// Writes `text` to `path` the way deployment tools do: a temp file renamed over it.
fn deploy(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn cli(args: &[&str], data: &Path) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend(["--data-dir", data.to_str().expect("utf-8")]);
    skygate(&all)
}

fn json(args: &[&str], data: &Path) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = cli(&all, data);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// A sim counter on `weather`/`c0` at `rate_hz`, everything routed to the bucket, and the
/// workflow file `wf.yaml` beside the config.
fn rig(
    gateway: &str,
    rate_hz: u32,
    workflow: &str,
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let root = tempfile::tempdir().expect("tmp");
    let data = root.path().join("data");
    let cfg = root.path().join("c.toml");
    deploy(&root.path().join("wf.yaml"), workflow);
    let text = format!(
        "workflows = [\"wf.yaml\"]\n{}",
        sim_config(
            gateway,
            1,
            rate_hz,
            &archive_sink(&root.path().join("bucket"), "batch_max_age = \"300ms\"\n"),
        )
    );
    std::fs::write(&cfg, text).expect("config");
    (root, data, cfg)
}

/// After the agent stopped: what reached the bucket and what still waits in the buffer
/// (sinks stop without draining), once per seq.
fn bucket_and_buffer(bucket: &Path, data: &Path) -> Vec<Value> {
    let out = cli(&["buffer", "export"], data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut by_seq: BTreeMap<u64, Value> = BTreeMap::new();
    let exported = out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice::<Value>(l).expect("export line"));
    for r in read_bucket(bucket).records.into_iter().chain(exported) {
        by_seq.insert(r["seq"].as_u64().expect("seq"), r);
    }
    by_seq.into_values().collect()
}

fn stream<'a>(records: &'a [Value], name: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["stream"] == name).collect()
}

#[test]
fn a_chain_from_the_sim_driver_reaches_the_bucket_matching_the_raw_readings_it_came_from() {
    let (root, data, cfg) = rig(
        "gw-wf-chain",
        50,
        "name: second\ninput: [weather]\nsteps:\n  - scale: {factor: 0.5, offset: 10, unit: V}\n  - filter: {expr: \"value >= 10\"}\n  - window: {every: 1s, stats: [count, mean, min, max]}\noutput:\n  stream: weather.1s\n  sinks: [archive]\n",
    );
    let bucket = root.path().join("bucket");
    let a = Agent::start_serving(&cfg, &data);
    wait_until(Duration::from_secs(30), "four closed windows", || {
        stream(&read_bucket(&bucket).records, "weather.1s").len() >= 16
    });
    let listed = json(&["workflows"], &data);
    assert_eq!(listed[0]["name"], "second", "{listed}");
    assert_eq!(
        listed[0]["steps"],
        serde_json::json!(["scale", "filter", "window"])
    );
    assert!(listed[0]["records_in"].as_u64() > Some(100), "{listed}");
    let metrics = metrics_text(&data);
    let line = metrics
        .lines()
        .find(|l| l.starts_with("skygate_workflow_input_records_total{workflow=\"second\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    let n: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("value");
    assert!(n > 100.0, "{line}");
    assert!(
        metrics.contains("skygate_workflow_errors_total{workflow=\"second\"} 0"),
        "{metrics}"
    );
    assert_eq!(a.stop(), Some(0));

    let all = bucket_and_buffer(&bucket, &data);
    let raw = stream(&all, "weather");
    // Per window start (ns): (seqs, scaled values) of the raw readings.
    let mut windows: BTreeMap<i64, (Vec<u64>, Vec<f64>)> = BTreeMap::new();
    for r in &raw {
        let ts = r["ts_ns"].as_i64().expect("ts");
        let start = ts.div_euclid(1_000_000_000) * 1_000_000_000;
        let w = windows.entry(start).or_default();
        w.0.push(r["seq"].as_u64().expect("seq"));
        w.1.push(r["value"].as_f64().expect("counter") * 0.5 + 10.0);
    }
    let mut outputs: BTreeMap<i64, BTreeMap<String, &Value>> = BTreeMap::new();
    for o in stream(&all, "weather.1s") {
        outputs
            .entry(o["ts_ns"].as_i64().expect("ts"))
            .or_default()
            .insert(o["channel"].as_str().expect("channel").to_string(), o);
    }
    assert_eq!(
        outputs.keys().collect::<Vec<_>>(),
        windows.keys().collect::<Vec<_>>(),
        "one aggregate per second of raw readings, the last cut short at the stop"
    );
    let mut counted = 0;
    for (start, (seqs, values)) in &windows {
        let o = &outputs[start];
        let n = values.len() as i64;
        let mean = values.iter().sum::<f64>() / n as f64;
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(o["c0_count"]["value"], n, "window {start}");
        assert!((o["c0_mean"]["value"].as_f64().expect("mean") - mean).abs() < 1e-9);
        assert_eq!(o["c0_min"]["value"].as_f64(), Some(min));
        assert_eq!(o["c0_max"]["value"].as_f64(), Some(max));
        assert_eq!(o["c0_mean"]["unit"], "V");
        let l = &o["c0_mean"]["lineage"];
        assert_eq!(l["workflow"], "second");
        assert_eq!(l["count"], n);
        assert_eq!(l["first_seq"].as_u64(), seqs.iter().min().copied(), "{l}");
        assert_eq!(l["last_seq"].as_u64(), seqs.iter().max().copied(), "{l}");
        counted += n;
    }
    assert_eq!(
        counted,
        raw.len() as i64,
        "every raw reading in exactly one window"
    );
    let last = outputs.values().last().expect("outputs");
    assert_eq!(
        last["c0_count"]["quality"], "uncertain",
        "cut short by the stop"
    );
    let earlier = outputs.values().next().expect("outputs");
    assert_eq!(earlier["c0_count"]["quality"], "good");
}

const SCALE: &str = "name: x\ninput: [weather]\nsteps:\n  - scale: {factor: FACTOR}\noutput:\n  stream: weather.x\n  sinks: [archive]\n";

#[test]
fn hot_reload_under_traffic_switches_chains_between_readings_and_a_broken_file_changes_nothing() {
    let (root, data, cfg) = rig("gw-wf-reload", 100, &SCALE.replace("FACTOR", "2"));
    let wf = root.path().join("wf.yaml");
    let bucket = root.path().join("bucket");
    let a = Agent::start_serving(&cfg, &data);
    let outputs_with = |k: f64| {
        let all = read_bucket(&bucket).records;
        let raw: BTreeMap<u64, f64> = values_by_seq(&all, "weather");
        stream(&all, "weather.x")
            .iter()
            .filter(|o| {
                let from = o["lineage"]["first_seq"].as_u64().expect("lineage");
                raw.get(&from)
                    .is_some_and(|v| *v != 0.0 && o["value"].as_f64() == Some(v * k))
            })
            .count()
    };
    wait_until(Duration::from_secs(30), "outputs scaled by 2", || {
        outputs_with(2.0) > 100
    });

    // A file change is picked up on its own.
    deploy(&wf, &SCALE.replace("FACTOR", "3"));
    wait_until(Duration::from_secs(30), "outputs scaled by 3", || {
        outputs_with(3.0) > 100
    });

    // A broken file: rejected with its line and column, the running chain keeps going.
    deploy(
        &wf,
        "name: x\ninput: [weather]\nsteps:\n  - scale: {factor: 4\noutput: {stream: weather.x}\n",
    );
    wait_until(Duration::from_secs(30), "the broken file rejected", || {
        let audit = json(&["audit"], &data);
        audit.as_array().into_iter().flatten().any(|r| {
            r["action"] == "config.reload"
                && r["result"] == "rejected: invalid"
                && r["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("wf.yaml:4:"))
        })
    });
    let before = outputs_with(3.0);
    wait_until(Duration::from_secs(30), "the old chain runs on", || {
        outputs_with(3.0) > before + 100
    });
    assert_eq!(outputs_with(4.0), 0);

    // Fixed, and reloaded by command as well: applied once, whoever asks.
    deploy(&wf, &SCALE.replace("FACTOR", "4"));
    let r = json(&["reload"], &data);
    assert!(r["workflows_changed"].is_boolean(), "{r}");
    wait_until(Duration::from_secs(30), "outputs scaled by 4", || {
        outputs_with(4.0) > 100
    });
    assert_eq!(a.stop(), Some(0));

    // Every raw reading went through exactly one chain, in order: 2s, then 3s, then 4s.
    let all = bucket_and_buffer(&bucket, &data);
    let raw: BTreeMap<u64, f64> = values_by_seq(&all, "weather");
    let mut factor_of: BTreeMap<u64, Vec<Option<f64>>> = BTreeMap::new();
    for o in stream(&all, "weather.x") {
        let l = &o["lineage"];
        assert_eq!(l["first_seq"], l["last_seq"]);
        assert_eq!(l["count"], 1);
        let from = l["first_seq"].as_u64().expect("from");
        let v = raw[&from];
        // The counter's first reading is 0 whatever the factor: no factor to tell.
        let k = (v != 0.0).then(|| o["value"].as_f64().expect("value") / v);
        factor_of.entry(from).or_default().push(k);
    }
    assert_eq!(
        factor_of.keys().collect::<Vec<_>>(),
        raw.keys().collect::<Vec<_>>(),
        "every raw reading has an output, and no output names anything else"
    );
    assert!(
        factor_of.values().all(|ks| ks.len() == 1),
        "nothing processed twice"
    );
    let ks: Vec<f64> = factor_of.values().filter_map(|k| k[0]).collect();
    assert!(
        ks.windows(2).all(|w| w[0] <= w[1]),
        "the switches are clean cuts"
    );
    for k in [2.0, 3.0, 4.0] {
        assert!(ks.contains(&k), "factor {k} was used");
    }
}

/// `skygate workflow check FILE [--config CFG]`: (exit code, stdout, stderr).
fn check(file: &Path, config: Option<&Path>) -> (Option<i32>, String, String) {
    let mut args = vec!["workflow", "check", file.to_str().expect("utf-8")];
    if let Some(c) = config {
        args.extend(["--config", c.to_str().expect("utf-8")]);
    }
    let out = skygate(&args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn workflow_check_validates_a_file_and_points_at_the_mistake() {
    let root = tempfile::tempdir().expect("tmp");
    let good = root.path().join("good.yaml");
    std::fs::write(&good, SCALE.replace("FACTOR", "2")).expect("write");
    let (code, text, err) = check(&good, None);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        text.contains("ok (workflow x: weather -> scale -> weather.x"),
        "{text}"
    );
    assert!(text.contains("sinks not checked"), "{text}");

    let bad = root.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "input: [weather]\nsteps:\n  - scael: {factor: 2}\noutput: {stream: y}\n",
    )
    .expect("write");
    let (code, _, err) = check(&bad, None);
    assert_eq!(code, Some(78));
    assert!(
        err.starts_with(&format!("{}:3:5: unknown variant `scael`", bad.display())),
        "{err}"
    );

    // With the config: its sinks are known, and a cycle through its workflows is found.
    let cfg = root.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "workflows = [\"good.yaml\"]\n{}",
            sim_config("gw-check", 1, 1, &archive_sink(&root.path().join("b"), ""))
        ),
    )
    .expect("config");
    let (code, _, err) = check(&good, Some(&cfg));
    assert_eq!(code, Some(0), "{err}");
    let back = root.path().join("back.yaml");
    let back_to = |sink: &str| {
        format!(
            "input: [weather.x]\nsteps: [{{tag: {{priority: 1}}}}]\noutput:\n  stream: weather\n  sinks: [{sink}]\n"
        )
    };
    std::fs::write(&back, back_to("kafka")).expect("write");
    let (code, _, err) = check(&back, Some(&cfg));
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("back.yaml:5:11: unknown sink \"kafka\"; defined sinks: archive"),
        "{err}"
    );
    std::fs::write(&back, back_to("archive")).expect("write");
    let (code, _, err) = check(&back, Some(&cfg));
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("workflow cycle"), "{err}");
    // The config itself refuses a workflow that does not load.
    std::fs::write(&good, "input: [weather]\nsteps: []\noutput: {stream: y}\n").expect("write");
    let out = skygate(&["check-config", cfg.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("good.yaml:1:1: `steps` is empty"));
}
