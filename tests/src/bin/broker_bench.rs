//! The embedded broker's acknowledged throughput against Mosquitto's, in the same run.
//!
//! A burst from 4 clients (`mosquitto_pub -q 1 -l -M 64`: QoS 1, 64 messages in flight
//! each, short JSON lines) is published to Mosquitto (Debian, no persistence: it
//! acknowledges on receipt) and to the real `skygate` binary's embedded broker, which
//! acknowledges only once the readings are committed, in `process` and `power` mode.
//! Rounds alternate between the three so that the machine's noise hits all alike; the
//! median round of each is reported. Every message Skygate acknowledged is counted in
//! its buffer afterwards.
//!
//! Printed: messages/s acknowledged for each, the ratio Skygate/Mosquitto (goal >= 0.5),
//! and whether Skygate stored all of them.
//!
//!     cargo run --release -p skygate-e2e --bin skygate-bench-broker [-- --messages 20000 --rounds 3]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use skygate_e2e::{
    bench_arg, bench_skygate_bin, embedded_broker_rig, free_port, mosquitto, wait_port,
};

const CLIENTS: usize = 4;
const INFLIGHT: &str = "64";

/// Publishes `lines` from each client at once; returns when every publisher has had
/// every PUBACK (mosquitto_pub exits 0 only then), with the elapsed time.
fn burst(port: u16, lines: &Path, round: usize) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let children = (0..CLIENTS)
        .map(|c| {
            Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-l"])
                .args(["-M", INFLIGHT, "-i", &format!("r{round}c{c}")])
                .args(["-t", &format!("burst/r{round}c{c}")])
                .stdin(std::fs::File::open(lines)?)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("mosquitto_pub (Debian mosquitto-clients)")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for child in children {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("mosquitto_pub: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(t0.elapsed())
}

/// One round against a fresh agent: the burst's time and how many records it stored.
fn skygate_round(
    bin: &Path,
    dir: &Path,
    durability: &str,
    lines: &Path,
    round: usize,
) -> anyhow::Result<(Duration, u64)> {
    let port = free_port();
    let cfg = embedded_broker_rig(dir, &format!("bench-{durability}"), durability, port);
    let data = dir.join(format!("data-{durability}-{round}"));
    let mut child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&data)
        .stderr(Stdio::null())
        .spawn()
        .context("start skygate")?;
    wait_port(port, "the embedded broker");
    let took = burst(port, lines, round);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait()?;
    let took = took?;
    let out = Command::new(bin)
        .args(["buffer", "stats", "--json", "--data-dir"])
        .arg(&data)
        .output()?;
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).context("stats")?;
    let stored = stats["records"].as_u64().unwrap_or(0);
    let _ = std::fs::remove_dir_all(&data);
    Ok((took, stored))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let messages = bench_arg("--messages", 20_000);
    let rounds = bench_arg("--rounds", 3).max(1);
    let bin = bench_skygate_bin()?;
    let dir = tempfile::tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| ".".into()))?;
    let lines = dir.path().join("burst.jsonl");
    let text: String = (1..=messages)
        .map(|i| format!("{{\"n\":{i},\"t\":21.5}}\n"))
        .collect();
    std::fs::write(&lines, text)?;
    let total = (messages * CLIENTS) as f64;
    println!(
        "embedded broker vs Mosquitto: {CLIENTS} clients x {messages} QoS 1 messages, {INFLIGHT} in flight each, {rounds} rounds, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let port = free_port();
    let peer = mosquitto(dir.path(), port, "allow_anonymous true");
    wait_port(port, "mosquitto");
    let (mut mosq, mut process, mut power) = (Vec::new(), Vec::new(), Vec::new());
    let mut short = Vec::new();
    for round in 0..rounds {
        mosq.push(burst(port, &lines, round)?);
        for (mode, times) in [("process", &mut process), ("power", &mut power)] {
            let (took, stored) = skygate_round(&bin, dir.path(), mode, &lines, round)?;
            times.push(took);
            if stored < total as u64 {
                short.push(format!("{mode} round {round}: {stored} of {total} stored"));
            }
        }
    }
    peer.stop();

    let rate = |d: Duration| total / d.as_secs_f64();
    let m = rate(median(mosq));
    println!(
        "\n  {:<34} {:>12} {:>10}",
        "broker", "acked msg/s", "vs mosq"
    );
    println!(
        "  {:<34} {:>12.0} {:>9.2}x",
        "mosquitto (no persistence)", m, 1.0
    );
    for (name, times) in [
        ("skygate, process (ack = committed)", process),
        ("skygate, power (ack = fsynced)", power),
    ] {
        let r = rate(median(times));
        println!("  {name:<34} {r:>12.0} {:>9.2}x", r / m);
    }
    if short.is_empty() {
        println!("\n  every acknowledged message was in Skygate's buffer");
    } else {
        println!("\n  MISSING: {}", short.join("; "));
    }
    println!("\ngoal: skygate >= 0.5x mosquitto's acknowledged rate");
    Ok(())
}
