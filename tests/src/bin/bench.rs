//! Buffer benchmark: prints figures, asserts nothing about speed.
//!
//! In one run: the raw rusqlite ceiling (prepared inserts of ~200-byte rows, 1000 per
//! transaction, WAL, synchronous NORMAL and FULL), then Skygate's durable ingest from the
//! sim driver through the buffer in both durability modes: saturated throughput, then
//! p50/p99 ingest-to-durable latency at the goal rate, peak RSS of each phase, and the
//! ratio to the ceiling. Then power failures under saturated ingest: the time from the
//! power-fail input to intake stopped and the buffer on the disk, against the floor of a
//! 4 MiB write + fsync + syncfs measured alongside and the hold-up budget. Last, the idle
//! RSS of the real `skygate` binary.
//!
//!     cargo run --release -p skygate-e2e --bin skygate-bench [-- --seconds N]

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use skygate_agent::config::{SourceFile, load_sources};
use skygate_agent::pipeline;
use tokio_util::sync::CancellationToken;

fn rss_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets this process's peak RSS (Linux >= 4.0), so each phase reports its own peak.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn ceiling(dir: &Path, sync: &str, rows: u64) -> anyhow::Result<f64> {
    let path = dir.join(format!("ceiling-{sync}.db"));
    let conn = rusqlite::Connection::open(&path)?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync};
         CREATE TABLE r(seq INTEGER PRIMARY KEY, stream TEXT, priority INTEGER, ts INTEGER,
                        ingest_ts INTEGER, pending INTEGER, size INTEGER, body BLOB);"
    ))?;
    let body = vec![0x42u8; 140];
    let start = Instant::now();
    let mut seq = 0i64;
    while (seq as u64) < rows {
        let tx = conn.unchecked_transaction()?;
        {
            let mut st =
                tx.prepare_cached("INSERT INTO r VALUES(?1, 'weather', 5, ?2, ?2, 1, 200, ?3)")?;
            for _ in 0..1000 {
                seq += 1;
                st.execute(rusqlite::params![seq, seq * 1000, body])?;
            }
        }
        tx.commit()?;
    }
    Ok(rows as f64 / start.elapsed().as_secs_f64())
}

struct Phase {
    rate: f64,
    p50_us: u64,
    p99_us: u64,
    peak_rss_kib: u64,
}

async fn skygate_phase(
    dir: &Path,
    durability: &str,
    per_channel_hz: u64,
    secs: f64,
) -> anyhow::Result<Phase> {
    let data = dir.join(format!("data-{durability}-{per_channel_hz}"));
    let blocker = dir.join("blocker");
    std::fs::write(&blocker, b"file")?;
    let settings = load_sources(vec![SourceFile {
        path: "bench.toml".into(),
        text: skygate_e2e::ingest_bench_config(durability, per_channel_hz, &blocker),
    }])?;
    let stop = CancellationToken::new();
    reset_peak();
    let running = pipeline::start(settings, &data, stop.clone()).await?;
    let m = running.buffer.metrics().clone();
    // Warm up, then measure a clean window.
    tokio::time::sleep(Duration::from_secs(1)).await;
    m.ingest_to_durable_us.reset();
    let c0 = m.records_committed.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let committed = m.records_committed.load(Ordering::Relaxed) - c0;
    let elapsed = t0.elapsed().as_secs_f64();
    let phase = Phase {
        rate: committed as f64 / elapsed,
        p50_us: m.ingest_to_durable_us.quantile(0.50),
        p99_us: m.ingest_to_durable_us.quantile(0.99),
        peak_rss_kib: rss_kib("self", "VmHWM:"),
    };
    running.stop().await;
    let _ = std::fs::remove_dir_all(&data);
    Ok(phase)
}

/// The floor a seal cannot beat: a WAL's worth (4 MiB) written, fsynced, and the file
/// system synced. Median of `n`, in ms.
fn seal_floor(dir: &Path, n: usize) -> anyhow::Result<f64> {
    use std::io::Write;
    let block = vec![0x5au8; 4 << 20];
    let mut t = Vec::new();
    for i in 0..n {
        let p = dir.join(format!("floor-{i}"));
        let t0 = Instant::now();
        let mut f = std::fs::File::create(&p)?;
        f.write_all(&block)?;
        f.sync_all()?;
        rustix::fs::syncfs(&f)?;
        t.push(t0.elapsed().as_secs_f64() * 1e3);
        std::fs::remove_file(&p)?;
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// `n` power failures, 300 ms apart, while the sim driver saturates ingest (process
/// durability): each one's edge-to-intake-stopped and edge-to-sealed times in ms, sorted,
/// and the budget.
async fn power_phase(dir: &Path, n: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>, f64)> {
    use skygate_agent::pipeline::power::PowerState;
    let data = dir.join("data-power-fail");
    let blocker = dir.join("blocker");
    std::fs::write(&blocker, b"file")?;
    let settings = load_sources(vec![SourceFile {
        path: "bench.toml".into(),
        text: skygate_e2e::ingest_bench_config("process", 200_000, &blocker),
    }])?;
    let running = pipeline::start(settings, &data, CancellationToken::new()).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut status = running.power.status.clone();
    let mut sealed = Vec::new();
    let mut intake = Vec::new();
    let mut budget = 0.0;
    for _ in 0..n {
        running
            .power
            .inputs
            .send_modify(|i| i.operator = Some(PowerState::Failed));
        let m = status
            .wait_for(|s| s.failed.is_some())
            .await?
            .failed
            .clone();
        let m = m.context("failed")?;
        sealed.push(m.sealed_ms);
        intake.push(m.intake_stopped_ms);
        budget = m.budget_ms;
        running
            .power
            .inputs
            .send_modify(|i| i.operator = Some(PowerState::Ok));
        status.wait_for(|s| s.failed.is_none()).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    running.stop().await;
    let _ = std::fs::remove_dir_all(&data);
    sealed.sort_by(f64::total_cmp);
    intake.sort_by(f64::total_cmp);
    Ok((intake, sealed, budget))
}

fn idle_rss(dir: &Path) -> anyhow::Result<u64> {
    let bin = skygate_e2e::bench_skygate_bin()?;
    let mut child = std::process::Command::new(&bin)
        .args(["run", "--data-dir"])
        .arg(dir.join("idle"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    std::thread::sleep(Duration::from_secs(6));
    let rss = rss_kib(&child.id().to_string(), "VmRSS:");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    Ok(rss)
}

fn main() -> anyhow::Result<()> {
    let secs = skygate_e2e::bench_seconds();
    let dir = tempfile::tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| ".".into()))?;
    println!(
        "skygate buffer benchmark ({secs} s windows, {} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    reset_peak();
    let ceil_normal = ceiling(dir.path(), "NORMAL", 1_000_000)?;
    let ceil_full = ceiling(dir.path(), "FULL", 400_000)?;
    println!("\nraw rusqlite ceiling (1000 rows/tx, ~200 B rows, WAL)");
    println!("  synchronous=NORMAL  {:>10.0} rows/s", ceil_normal);
    println!("  synchronous=FULL    {:>10.0} rows/s", ceil_full);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!("\nskygate: sim driver -> ingest -> buffer (16 channels)");
    println!(
        "  {:<28} {:>12} {:>9} {:>9} {:>10} {:>8}",
        "phase", "readings/s", "p50 ms", "p99 ms", "peak RSS", "vs ceil"
    );
    for (mode, ceil, goal) in [
        ("process", ceil_normal, 300_000u64),
        ("power", ceil_full, 150_000u64),
    ] {
        // Saturated: offer far more than can be taken.
        let sat = rt.block_on(skygate_phase(dir.path(), mode, 200_000, secs))?;
        // At the goal rate: latency of a sustained load.
        let at = rt.block_on(skygate_phase(dir.path(), mode, goal / 16, secs))?;
        for (name, p) in [
            (format!("{mode}: saturated"), &sat),
            (format!("{mode}: at {}k/s offered", goal / 1000), &at),
        ] {
            println!(
                "  {:<28} {:>12.0} {:>9.2} {:>9.2} {:>7.1} MB {:>7.2}x",
                name,
                p.rate,
                p.p50_us as f64 / 1000.0,
                p.p99_us as f64 / 1000.0,
                p.peak_rss_kib as f64 / 1024.0,
                p.rate / ceil
            );
        }
    }
    let floor = seal_floor(dir.path(), 5)?;
    let (intake, sealed, budget) = rt.block_on(power_phase(dir.path(), 10))?;
    let (p50, max) = (sealed[sealed.len() / 2], sealed[sealed.len() - 1]);
    println!("\npower failure under saturated ingest (process mode, 10 events)");
    println!(
        "  edge -> intake stopped, buffer on disk: p50 {p50:.1} ms, max {max:.1} ms; floor (4 MiB write+fsync+syncfs) {floor:.1} ms: {:.2}x; budget {budget:.0} ms: {:.3} of it",
        p50 / floor,
        max / budget
    );
    println!(
        "  of which edge -> intake stopped: p50 {:.1} ms, max {:.1} ms",
        intake[intake.len() / 2],
        intake[intake.len() - 1]
    );
    match idle_rss(dir.path()) {
        Ok(kib) => println!(
            "\nidle RSS of `skygate run` (embedded default, after 6 s): {:.1} MB",
            kib as f64 / 1024.0
        ),
        Err(e) => println!("\nidle RSS: not measured ({e:#})"),
    }
    println!(
        "\ngoals: >=300k/s process, >=150k/s power; p99 <=10 ms / <=25 ms; RSS <=64 MB loaded, <=15 MB idle"
    );
    Ok(())
}
