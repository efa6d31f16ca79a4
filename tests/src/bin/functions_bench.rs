//! Workflow benchmark: prints figures, asserts nothing about speed.
//!
//! In one run, so the figures share the machine's mood:
//! 1. the ceiling: saturated ingest without functions (sim drivers -> ingest -> buffer),
//!    as nanoseconds per reading;
//! 2. the same with a 3-step built-in chain (scale -> convert -> filter) on every stream;
//! 3. the engine alone over batches of 2048 readings: the 3-step chain, and a WASM
//!    function (the median-filter example, built for wasm32-wasip1) per record amortised.
//!
//!     cargo run --release -p skygate-e2e --bin skygate-bench-functions [-- --seconds N]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use skygate_agent::buffer::NewRecord;
use skygate_agent::config::{SourceFile, load_sources};
use skygate_agent::functions::builtins::BuildCx;
use skygate_agent::functions::{Engine, WorkflowsView, spec};
use skygate_agent::model::Record;
use skygate_agent::pipeline;
use skygate_drivers::{Quality, Reading, TimeQuality, Timestamp, Value};
use tokio_util::sync::CancellationToken;

const CHAIN: &str = "name: fx\ninput: [\"s*\"]\nsteps:\n  - scale: {factor: 1.8, offset: 32}\n  - convert: {from: degF, to: degC}\n  - filter: {expr: \"value > -50 && value < 60\"}\noutput: {stream: fx}\n";
const TAG: &str =
    "name: tag\ninput: [\"s*\"]\nsteps:\n  - tag: {priority: 5}\noutput: {stream: tag}\n";
/// The misbehave example echoes readings whose value is not 1 to 4: the ABI's own cost.
const ECHO: &str = "name: echo\ninput: [\"s*\"]\nsteps:\n  - wasm: {module: misbehave.wasm}\noutput: {stream: echo}\n";
const MEDIAN: &str = "name: med\ninput: [\"s*\"]\nsteps:\n  - wasm: {module: median_filter.wasm}\noutput: {stream: med}\n";

fn config(workflow: bool, blocker: &Path) -> String {
    let top = if workflow {
        "workflows = [\"fx.yaml\"]\n"
    } else {
        ""
    };
    format!(
        "{top}{}",
        skygate_e2e::ingest_bench_config("process", 200_000, blocker)
    )
}

/// Saturated ingest: readings taken per second.
async fn ingest(dir: &Path, workflow: bool, secs: f64) -> anyhow::Result<f64> {
    let data = dir.join(format!("data-{workflow}"));
    let blocker = dir.join("blocker");
    std::fs::write(&blocker, b"file")?;
    std::fs::write(dir.join("fx.yaml"), CHAIN)?;
    let settings = load_sources(vec![SourceFile {
        path: dir.join("bench.toml"),
        text: config(workflow, &blocker),
    }])?;
    let running = pipeline::start(settings, &data, CancellationToken::new()).await?;
    let c = running.ingest.counters.clone();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r0 = c.readings.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let rate = (c.readings.load(Ordering::Relaxed) - r0) as f64 / t0.elapsed().as_secs_f64();
    running.stop().await;
    let _ = std::fs::remove_dir_all(&data);
    Ok(rate)
}

fn batch(n: usize, round: u64) -> Vec<NewRecord> {
    let (src, unit): (Arc<str>, Arc<str>) = (Arc::from("d0"), Arc::from("degC"));
    let channels: Vec<Arc<str>> = (0..4).map(|c| Arc::from(format!("c{c}"))).collect();
    let stream: Arc<str> = Arc::from("s0");
    (0..n)
        .map(|i| NewRecord {
            record: Record {
                seq: 0,
                stream: stream.clone(),
                priority: 5,
                ingest_ts: Timestamp::now(),
                reading: Reading {
                    source: src.clone(),
                    channel: channels[i % 4].clone(),
                    ts: Timestamp((round * n as u64 + i as u64) as i64 * 1_000_000),
                    time_quality: TimeQuality::Ntp,
                    value: Value::Number(10.0 + (i % 50) as f64 / 10.0),
                    unit: Some(unit.clone()),
                    quality: Quality::Good,
                },
                lineage: None,
            },
            sinks: 1,
        })
        .collect()
}

/// The engine alone: nanoseconds per input record over batches of `n`.
fn engine_ns(dir: &Path, yaml: &str, n: usize, secs: f64) -> anyhow::Result<(f64, u64)> {
    let file = dir.join("bench-workflow.yaml");
    std::fs::write(&file, yaml)?;
    let mut w = spec::parse(&file, yaml)?;
    // Resolve the module path as the config loader does.
    for s in &mut w.steps {
        if let spec::StepSpec::Wasm { module, .. } = s {
            *module = dir.join(&*module);
        }
    }
    let cx = BuildCx::new(None);
    let mut engine = Engine::build(&[w], |_| 1, |_| 1, &cx, WorkflowsView::default())
        .ok_or_else(|| anyhow::anyhow!("no engine"))?;
    let (mut records, mut round) = (0u64, 0u64);
    let mut busy = Duration::ZERO;
    let mut outputs = 0u64;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < deadline {
        let mut b = batch(n, round);
        round += 1;
        let t = Instant::now();
        engine.process(&mut b, round);
        engine.stamp(&mut b, round);
        busy += t.elapsed();
        engine.numbered(round, round * 10_000);
        records += n as u64;
        outputs += (b.len() - n) as u64;
    }
    Ok((busy.as_nanos() as f64 / records as f64, outputs))
}

fn main() -> anyhow::Result<()> {
    let secs = skygate_e2e::bench_seconds();
    let dir = tempfile::tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| ".".into()))?;
    println!(
        "skygate workflow benchmark ({secs} s windows, {} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let plain = rt.block_on(ingest(dir.path(), false, secs))?;
    let chained = rt.block_on(ingest(dir.path(), true, secs))?;
    let ceiling_ns = 1e9 / plain;
    println!("\nsaturated ingest, 16 sim channels -> buffer (durability process)");
    println!(
        "  without functions      {plain:>10.0} readings/s  {ceiling_ns:>7.0} ns/reading (the ceiling)"
    );
    println!(
        "  with the 3-step chain  {chained:>10.0} readings/s  {:>7.0} ns/reading (each also writes its output)",
        1e9 / chained
    );

    let modules = skygate_e2e::example_functions();
    for m in ["median_filter.wasm", "misbehave.wasm"] {
        std::fs::copy(modules.join(m), dir.path().join(m))?;
    }
    println!("\nengine alone, batches of 2048 readings");
    let (tag_ns, tag_out) = engine_ns(dir.path(), TAG, 2048, secs)?;
    let (chain_ns, chain_out) = engine_ns(dir.path(), CHAIN, 2048, secs)?;
    let (echo_ns, echo_out) = engine_ns(dir.path(), ECHO, 2048, secs)?;
    let (wasm_ns, wasm_out) = engine_ns(dir.path(), MEDIAN, 2048, secs)?;
    for (name, ns, out) in [
        ("1 trivial step (the engine's own cost)", tag_ns, tag_out),
        ("3-step chain (scale, convert, filter)", chain_ns, chain_out),
        ("wasm echo (whole step)", echo_ns, echo_out),
        ("wasm median filter (whole step)", wasm_ns, wasm_out),
    ] {
        println!(
            "  {name:<38} {ns:>7.0} ns/reading  {:>5.2}x the ingest cost per reading  ({out} outputs)",
            ns / ceiling_ns
        );
    }
    println!(
        "  wasm call alone (whole step minus the engine's own cost): echo {:.0}, median filter {:.0} ns/reading",
        echo_ns - tag_ns,
        wasm_ns - tag_ns
    );
    println!(
        "\ngoals: 3-step chain < 1000 ns per record; WASM < 100 ns per record amortised in batches"
    );
    Ok(())
}
