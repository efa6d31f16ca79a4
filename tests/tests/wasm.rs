//! WASM functions built from `examples/functions/` with the Rust SDK for wasm32-wasip1:
//! results against hand computation (`skygate fn run` and in a running agent), a
//! misbehaving function contained while everything else goes on, and the compiled-module
//! cache used after a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use skygate_e2e::*;

/// `skygate fn run MODULE` over `lines`: (exit code, stdout records, stderr).
fn fn_run(module: &Path, args: &[&str], lines: &[Value]) -> (i32, Vec<Value>, String) {
    let mut child = Command::new(skygate_bin())
        .args(["fn", "run"])
        .arg(module)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("skygate fn run");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for l in lines {
            writeln!(stdin, "{l}").expect("write");
        }
    }
    let out = child.wait_with_output().expect("wait");
    let records = out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("ndjson"))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        records,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn reading(seq: u64, channel: &str, v: f64) -> Value {
    json!({"schema": 1, "seq": seq, "stream": "wx", "ts_ns": 1_000 + seq as i64,
           "source": "mast", "channel": channel, "type": "number", "value": v, "quality": "good"})
}

/// The sky-clear example's rule, by hand: the last ten readings all at least 20
/// mag/arcsec² and within 0.3 of each other.
fn sky_clear_by_hand(values: &[f64]) -> Vec<bool> {
    (0..values.len())
        .map(|i| {
            let h = &values[i.saturating_sub(9)..=i];
            let min = h.iter().copied().fold(f64::INFINITY, f64::min);
            let max = h.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            min >= 20.0 && max - min < 0.3
        })
        .collect()
}

#[test]
fn fn_run_gives_the_hand_computed_results_of_the_example_functions() {
    let dir = example_functions();
    // Median of the last five, across batches of 3 (state carries over between calls).
    let input: Vec<Value> = [1.0, 2.0, 100.0, 3.0, 4.0, 5.0, 6.0]
        .iter()
        .enumerate()
        .map(|(i, v)| reading(10 + i as u64, "wind", *v))
        .collect();
    let (code, out, err) = fn_run(&dir.join("median_filter.wasm"), &["--batch", "3"], &input);
    assert_eq!(code, 0, "{err}");
    let medians: Vec<f64> = out
        .iter()
        .map(|r| r["value"].as_f64().expect("v"))
        .collect();
    assert_eq!(
        medians,
        [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0],
        "the spike of 100 is gone"
    );
    let froms: Vec<u64> = out
        .iter()
        .map(|r| r["lineage"]["first_seq"].as_u64().expect("lineage"))
        .collect();
    assert_eq!(froms, [10, 11, 12, 13, 14, 15, 16]);
    assert_eq!(out[0]["lineage"]["workflow"], "fn run median_filter.wasm");

    // Sky clear: dark and steady, then a cloud brightens the sky and it takes ten
    // steady readings to call it clear again.
    let sky = [
        21.2, 21.3, 21.25, 19.2, 21.3, 21.3, 21.3, 21.3, 21.3, 21.3, 21.3, 21.3, 21.3, 21.3, 21.3,
    ];
    let input: Vec<Value> = sky
        .iter()
        .enumerate()
        .map(|(i, v)| reading(i as u64 + 1, "mpsas", *v))
        .collect();
    let (code, out, err) = fn_run(&dir.join("sky_clear.wasm"), &[], &input);
    assert_eq!(code, 0, "{err}");
    let got: Vec<bool> = out
        .iter()
        .map(|r| {
            assert_eq!(r["channel"], "sky_clear");
            assert_eq!(r["type"], "bool");
            r["value"].as_bool().expect("bool")
        })
        .collect();
    assert_eq!(got, sky_clear_by_hand(&sky));
    assert_eq!(&got[..4], [true, true, true, false]);
    assert!(
        got[13] && !got[12],
        "clear again once 19.2 leaves the last ten"
    );

    // A failing batch is reported and the next one runs on a fresh instance.
    let input: Vec<Value> = [0.0, 2.0, 0.0]
        .iter()
        .enumerate()
        .map(|(i, v)| reading(i as u64 + 1, "c", *v))
        .collect();
    let (code, out, err) = fn_run(&dir.join("misbehave.wasm"), &["--batch", "1"], &input);
    assert_eq!(code, 2);
    assert_eq!(out.len(), 2, "the two good batches");
    assert!(err.contains("misbehave: asked to panic"), "{err}");
}

const SKY: &str = "name: sky\ninput: [sky]\nsteps:\n  - wasm: {module: sky_clear.wasm, channels: [mpsas]}\noutput: {stream: sky.clear}\n";
const CHAOS: &str = "name: chaos\ninput: [chaos]\nsteps:\n  - wasm:\n      module: misbehave.wasm\n      timeout: 100ms\n      max_memory: 32MiB\n      max_output_per_input: 10\noutput: {stream: chaos.out}\n";

fn stream<'a>(records: &'a [Value], name: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["stream"] == name).collect()
}

#[test]
fn a_misbehaving_function_is_contained_while_the_rest_goes_on_and_modules_load_from_cache() {
    let dir = example_functions();
    let root = tempfile::tempdir().expect("tmp");
    for (name, text) in [("sky.yaml", SKY), ("chaos.yaml", CHAOS)] {
        std::fs::write(root.path().join(name), text).expect("workflow");
    }
    for m in ["sky_clear.wasm", "misbehave.wasm"] {
        std::fs::copy(dir.join(m), root.path().join(m)).expect("module");
    }
    let data = root.path().join("data");
    let cfg = root.path().join("c.toml");
    let bucket = root.path().join("bucket");
    std::fs::write(
        &cfg,
        format!(
            "workflows = [\"sky.yaml\", \"chaos.yaml\"]\n[gateway]\nid = \"gw-wasm\"\n\n[buffer]\ndurability = \"process\"\nmin_free_disk = \"1MiB\"\n\n\
             [drivers.sqm]\nkind = \"sim\"\nstream = \"sky\"\ntick = \"10ms\"\n[drivers.sqm.channels.mpsas]\nsignal = \"step\"\nrate_hz = 10\nlevels = [21.2, 21.3, 19.4, 21.3]\nevery = \"1s\"\n\n\
             [drivers.chaos]\nkind = \"sim\"\nstream = \"chaos\"\ntick = \"10ms\"\n[drivers.chaos.channels.mode]\nsignal = \"step\"\nrate_hz = 4\nlevels = [0, 1, 0, 2, 0, 3, 0, 4, 0]\nevery = \"1s\"\n{}",
            archive_sink(&bucket, "batch_max_age = \"300ms\"\n")
        ),
    )
    .expect("config");
    let a = Agent::start_serving(&cfg, &data);
    let reasons = [
        "ran past its time limit of 100ms",
        "panicked at",
        "ran out of memory (limit 32 MiB)",
        "records is over the limit",
    ];
    wait_until(
        Duration::from_secs(60),
        "a dead letter of every kind",
        || {
            let all = read_bucket(&bucket).records;
            let dead = stream(&all, "deadletter");
            reasons.iter().all(|r| {
                dead.iter()
                    .any(|d| d["quality_reason"].as_str().is_some_and(|q| q.contains(r)))
            })
        },
    );
    // Everything else went on: more sky judgements and echoes after the failures.
    let seen = read_bucket(&bucket).records;
    let (sky_before, echo_before) = (
        stream(&seen, "sky.clear").len(),
        stream(&seen, "chaos.out").len(),
    );
    wait_until(
        Duration::from_secs(30),
        "more output from both workflows",
        || {
            let all = read_bucket(&bucket).records;
            stream(&all, "sky.clear").len() > sky_before + 20
                && stream(&all, "chaos.out").len() > echo_before
        },
    );
    let listed = serde_json::from_slice::<Value>(
        &skygate(&[
            "workflows",
            "--json",
            "--data-dir",
            data.to_str().expect("utf-8"),
        ])
        .stdout,
    )
    .expect("workflows");
    let chaos = listed
        .as_array()
        .and_then(|l| l.iter().find(|w| w["name"] == "chaos"))
        .expect("chaos");
    assert!(chaos["dead_lettered"].as_u64() > Some(3), "{chaos}");
    let metrics = metrics_text(&data);
    assert!(
        metrics.lines().any(|l| l
            .starts_with("skygate_workflow_dead_lettered_records_total{workflow=\"chaos\"}")
            && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert_eq!(a.stop(), Some(0));
    assert!(
        a_log_says(&data, 0, "\"from_cache\":false"),
        "compiled at the first start"
    );

    let all = read_bucket(&bucket).records;
    // Nothing the chaos function was given is lost: each reading is echoed or is a dead
    // letter, and a dead letter came out within a bound of its reading.
    let raw: BTreeSet<u64> = stream(&all, "chaos")
        .iter()
        .map(|r| r["seq"].as_u64().expect("seq"))
        .collect();
    let mut accounted = BTreeSet::new();
    for r in stream(&all, "chaos.out")
        .into_iter()
        .chain(stream(&all, "deadletter"))
    {
        let l = &r["lineage"];
        for s in l["first_seq"].as_u64().expect("from")..=l["last_seq"].as_u64().expect("to") {
            accounted.insert(s);
        }
    }
    let delivered_raw: BTreeSet<u64> = raw
        .iter()
        .copied()
        .filter(|s| accounted.contains(s))
        .collect();
    assert!(
        raw.len() - delivered_raw.len() <= 8,
        "only the last moments before the stop may be missing from the bucket: {} of {}",
        raw.len() - delivered_raw.len(),
        raw.len()
    );
    for d in stream(&all, "deadletter") {
        assert_eq!(d["quality"], "bad");
        let lag = rfc3339_ns(&d["ingest_ts"]) - d["ts_ns"].as_i64().expect("ts");
        assert!(
            lag < 5_000_000_000,
            "dead-lettered {lag} ns after its reading: {d}"
        );
    }
    // The sky workflow's judgements match the rule by hand over the raw readings.
    let sky: BTreeMap<u64, f64> = values_by_seq(&all, "sky");
    let expected: BTreeMap<u64, bool> = sky
        .keys()
        .copied()
        .zip(sky_clear_by_hand(
            &sky.values().copied().collect::<Vec<_>>(),
        ))
        .collect();
    let judged = stream(&all, "sky.clear");
    assert!(judged.len() > 20);
    for j in judged {
        let from = j["lineage"]["first_seq"].as_u64().expect("from");
        assert_eq!(j["value"].as_bool(), expected.get(&from).copied(), "{j}");
    }

    // A restart loads both modules from the cache instead of compiling them.
    let a = Agent::start_serving(&cfg, &data);
    wait_until(Duration::from_secs(20), "the modules loaded", || {
        a.log_text().matches("wasm function loaded").count() >= 2
    });
    assert_eq!(a.stop(), Some(0));
    assert!(
        a_log_says(&data, 1, "\"from_cache\":true"),
        "loaded from the cache"
    );
    assert!(
        !a_log_says(&data, 1, "\"from_cache\":false"),
        "nothing compiled again"
    );
}

fn rfc3339_ns(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("ts"))
        .expect("rfc3339")
        .timestamp_nanos_opt()
        .expect("range")
}

/// Whether agent log number `n` (in start order) contains `text`.
fn a_log_says(data: &Path, n: usize, text: &str) -> bool {
    let mut logs: Vec<_> = std::fs::read_dir(data.parent().expect("parent"))
        .expect("ls")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("agent-"))
        })
        .collect();
    logs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.created()).ok());
    logs.get(n)
        .and_then(|p| std::fs::read_to_string(p).ok())
        .is_some_and(|t| t.contains(text))
}
