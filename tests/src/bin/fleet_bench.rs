//! A fleet on one box: many agents (real `skygate` processes, own data dirs) delivering
//! to one Tansu (memory engine) and one S3 peer (s3s-fs), as a site's gateways would.
//!
//! Each agent runs a weather station (sim driver, 10 channels at 1 Hz) and its heartbeat,
//! routed to Kafka and to the bucket. Phases:
//! 1. idle: 20 s after the last start, each agent's RSS, threads and open fds, and the
//!    fleet's CPU over a 10 s window;
//! 2. loaded: every agent reloaded (SIGHUP) to 50 Hz per channel (500 readings/s each),
//!    the same figures over a 10 s window;
//! 3. back to 1 Hz, sinks drained, agents stopped: every agent's seqs `1..=last_seq` are
//!    read back from Kafka (confluent-kafka) and from the bucket's files, holes and
//!    duplicates counted.
//!
//! Printed: per-agent RSS (median and max) idle and loaded, fleet CPU in cores, threads
//! and fds, delivery completeness. Goal: <= 15 MB RSS idle per agent.
//!
//!     cargo run --release -p skygate-e2e --bin skygate-bench-fleet [-- --agents 50]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use skygate_e2e::{
    Peer, bench_arg, bench_skygate_bin, free_port, kafka_consume, read_bucket, tansu_bin,
    tansu_cmd, wait_port,
};

const CHANNELS: u32 = 10;
const WINDOW: Duration = Duration::from_secs(10);
const TOPICS: [&str; 2] = ["skygate.weather", "skygate.gateway.health"];

struct Member {
    id: String,
    cfg: PathBuf,
    data: PathBuf,
    child: Child,
}

fn config(id: &str, rate_hz: u32, kafka: u16, s3: u16, creds: &Path) -> String {
    let mut s = format!(
        "[gateway]\nid = \"{id}\"\n[buffer]\ndurability = \"process\"\nmax_bytes = \"256MiB\"\nmin_free_disk = \"64MiB\"\n\
         [drivers.wx]\nkind = \"sim\"\nstream = \"weather\"\n"
    );
    for c in 0..CHANNELS {
        s.push_str(&format!(
            "[drivers.wx.channels.c{c}]\nsignal = \"counter\"\nrate_hz = {rate_hz}\n"
        ));
    }
    s.push_str(&format!(
        "[sinks.kafka]\nkind = \"kafka\"\nbrokers = [\"127.0.0.1:{kafka}\"]\nbatch_max_age = \"500ms\"\n\
         [sinks.s3]\nkind = \"bucket\"\nurl = \"s3://fleet\"\nendpoint = \"http://127.0.0.1:{s3}\"\nregion = \"us-east-1\"\n\
         credentials_file = \"{}\"\nbatch_max_age = \"2s\"\n\
         [[routes]]\nstreams = [\"*\"]\nsinks = [\"kafka\", \"s3\"]\n",
        creds.display()
    ));
    s
}

/// (VmRSS KiB, threads, open fds, utime+stime ticks) of a process.
fn usage(pid: u32) -> (u64, u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the
    // 12th and 13th after ')'.
    let ticks = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        })
        .unwrap_or(0);
    (field("VmRSS:"), field("Threads:"), fds, ticks)
}

struct Sample {
    rss_kib: Vec<u64>,
    threads: Vec<u64>,
    fds: Vec<u64>,
    cores: f64,
}

/// Figures over one window: CPU as the fleet's ticks per wall second, the rest at its end.
fn sample(fleet: &[Member]) -> Sample {
    let tick = rustix::param::clock_ticks_per_second() as f64;
    let t0 = Instant::now();
    let before: u64 = fleet.iter().map(|m| usage(m.child.id()).3).sum();
    std::thread::sleep(WINDOW);
    let u: Vec<_> = fleet.iter().map(|m| usage(m.child.id())).collect();
    let after: u64 = u.iter().map(|x| x.3).sum();
    Sample {
        rss_kib: u.iter().map(|x| x.0).collect(),
        threads: u.iter().map(|x| x.1).collect(),
        fds: u.iter().map(|x| x.2).collect(),
        cores: (after - before) as f64 / tick / t0.elapsed().as_secs_f64(),
    }
}

fn med_max(v: &[u64]) -> (u64, u64) {
    let mut s = v.to_vec();
    s.sort();
    (s[s.len() / 2], s[s.len() - 1])
}

fn reload(fleet: &[Member], rate: u32, kafka: u16, s3: u16, creds: &Path) -> anyhow::Result<()> {
    for m in fleet {
        std::fs::write(&m.cfg, config(&m.id, rate, kafka, s3, creds))?;
        Command::new("kill")
            .args(["-HUP", &m.child.id().to_string()])
            .status()?;
    }
    Ok(())
}

fn stats(bin: &Path, data: &Path) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(bin)
        .args(["buffer", "stats", "--json", "--data-dir"])
        .arg(data)
        .output()?;
    serde_json::from_slice(&out.stdout).context("buffer stats")
}

/// Records still owed to any sink, from `buffer stats`.
fn backlog(bin: &Path, data: &Path) -> u64 {
    stats(bin, data).map_or(u64::MAX, |s| {
        s["sinks"].as_array().map_or(u64::MAX, |a| {
            a.iter().filter_map(|x| x["pending_records"].as_u64()).sum()
        })
    })
}

/// Per gateway: (seqs of 1..=last neither delivered nor still in its buffer, duplicates).
fn coverage(
    seqs: &BTreeMap<String, Vec<u64>>,
    kept: &BTreeMap<String, Vec<u64>>,
    last: &BTreeMap<String, u64>,
) -> BTreeMap<String, (u64, u64)> {
    last.iter()
        .map(|(gw, &l)| {
            let mut v = seqs.get(gw).cloned().unwrap_or_default();
            v.sort();
            let n = v.len() as u64;
            v.dedup();
            let held: std::collections::BTreeSet<u64> = v
                .iter()
                .chain(kept.get(gw).into_iter().flatten())
                .copied()
                .filter(|s| (1..=l).contains(s))
                .collect();
            (gw.clone(), (l - held.len() as u64, n - v.len() as u64))
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let agents = bench_arg("--agents", 50);
    let bin = bench_skygate_bin()?;
    let root = tempfile::tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| ".".into()))?;
    println!(
        "fleet on one box: {agents} agents, {CHANNELS} channels at 1 Hz each (50 Hz loaded), Kafka (Tansu) + S3 (s3s-fs), {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let kafka = free_port();
    let b = format!("127.0.0.1:{kafka}");
    // Tansu's memory engine: its SQLite engine (what the Kafka tests use) never answers a
    // fetch from a partition holding thousands of records (0.6.0, seen here).
    let listen = format!("tcp://{b}");
    let mut tansu = Peer::start(
        "tansu",
        &tansu_bin(),
        &[
            "broker",
            "--listener-url",
            &listen,
            "--advertised-listener-url",
            &listen,
            "--storage-engine",
            "memory://tansu/",
        ],
        false,
    );
    wait_port(kafka, "tansu");
    for t in TOPICS {
        tansu_cmd(&[
            "topic",
            "create",
            t,
            "--broker",
            &format!("tcp://{b}"),
            "--partitions",
            "3",
        ]);
    }
    let s3 = free_port();
    let store = root.path().join("s3");
    std::fs::create_dir_all(store.join("fleet"))?;
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let s3s = Peer::start(
        "s3s-fs",
        &home.join(".cache/skygate/s3s-fs/bin/s3s-fs"),
        &[
            "--host",
            "127.0.0.1",
            "--port",
            &s3.to_string(),
            "--access-key",
            "fleet-key",
            "--secret-key",
            "fleet-secret",
            store.to_str().context("utf8")?,
        ],
        false,
    );
    wait_port(s3, "s3s-fs");
    let creds = root.path().join("s3.creds");
    std::fs::write(
        &creds,
        "aws_access_key_id = \"fleet-key\"\naws_secret_access_key = \"fleet-secret\"\n",
    )?;

    let t_start = Instant::now();
    let mut fleet = Vec::new();
    for i in 0..agents {
        let id = format!("fleet-{i:03}");
        let dir = root.path().join(&id);
        std::fs::create_dir_all(&dir)?;
        let cfg = dir.join("skygate.toml");
        std::fs::write(&cfg, config(&id, 1, kafka, s3, &creds))?;
        let data = dir.join("data");
        let child = Command::new(&bin)
            .args(["run", "--config"])
            .arg(&cfg)
            .arg("--data-dir")
            .arg(&data)
            .stderr(std::fs::File::create(dir.join("agent.log"))?)
            .stdout(Stdio::null())
            .spawn()
            .context("start skygate")?;
        fleet.push(Member {
            id,
            cfg,
            data,
            child,
        });
    }
    for m in &fleet {
        let sock = m.data.join("skygate.sock");
        let until = Instant::now() + Duration::from_secs(120);
        while !sock.exists() {
            if Instant::now() > until {
                bail!("{} did not start (see its agent.log)", m.id);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!(
        "  all {agents} serving after {:.1} s",
        t_start.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(20));
    let idle = sample(&fleet);
    println!("  idle sampled");

    reload(&fleet, 50, kafka, s3, &creds)?;
    std::thread::sleep(Duration::from_secs(5));
    let loaded = sample(&fleet);
    println!("  loaded sampled");

    reload(&fleet, 1, kafka, s3, &creds)?;
    let t_drain = Instant::now();
    let until = Instant::now() + Duration::from_secs(300);
    for m in &fleet {
        while backlog(&bin, &m.data) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let drained = t_drain.elapsed();

    println!("  drained in {:.1} s", drained.as_secs_f64());
    if let Ok(Some(st)) = tansu.child.try_wait() {
        bail!("tansu exited during the run: {st}");
    }
    let mut exits = Vec::new();
    for m in &mut fleet {
        let _ = Command::new("kill")
            .args(["-TERM", &m.child.id().to_string()])
            .status();
    }
    for m in &mut fleet {
        exits.push(m.child.wait()?.code());
    }
    let mut last = BTreeMap::new();
    for m in &fleet {
        last.insert(
            m.id.clone(),
            stats(&bin, &m.data)?["last_seq"].as_u64().unwrap_or(0),
        );
    }
    let want: u64 = last.values().sum();
    // What the agents still hold (delivered by their next start, not lost).
    let mut kept: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in &fleet {
        let out = Command::new(&bin)
            .args(["buffer", "export", "--data-dir"])
            .arg(&m.data)
            .output()?;
        let seqs = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["seq"].as_u64())
            .collect();
        kept.insert(m.id.clone(), seqs);
    }
    let kept_n: usize = kept.values().map(Vec::len).sum();

    let msgs = kafka_consume(&b, &TOPICS, want, &[]);
    let mut kseqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in &msgs {
        let gw = m["headers"]["skygate-gateway"].as_str();
        if let (Some(gw), Some(seq)) = (gw, m["value"]["seq"].as_u64()) {
            kseqs.entry(gw.to_string()).or_default().push(seq);
        }
    }
    let bucket = read_bucket(&store.join("fleet"));
    let mut bseqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in &bucket.records {
        if let (Some(gw), Some(seq)) = (r["gateway"].as_str(), r["seq"].as_u64()) {
            bseqs.entry(gw.to_string()).or_default().push(seq);
        }
    }
    tansu.stop();
    s3s.stop();

    let mb = |k: u64| k as f64 / 1024.0;
    println!(
        "\n  {:<8} {:>14} {:>14} {:>12} {:>10} {:>8}",
        "phase", "RSS p50 MB", "RSS max MB", "fleet cores", "threads", "fds"
    );
    for (name, s) in [("idle", &idle), ("loaded", &loaded)] {
        let (rm, rx) = med_max(&s.rss_kib);
        println!(
            "  {:<8} {:>14.1} {:>14.1} {:>12.2} {:>10} {:>8}",
            name,
            mb(rm),
            mb(rx),
            s.cores,
            med_max(&s.threads).1,
            med_max(&s.fds).1
        );
    }
    println!(
        "  loaded offered: {} readings/s in all",
        agents as u64 * 50 * CHANNELS as u64
    );
    for (sink, seqs) in [("kafka", &kseqs), ("s3", &bseqs)] {
        let cov = coverage(seqs, &kept, &last);
        let missing: u64 = cov.values().map(|c| c.0).sum();
        let dupes: u64 = cov.values().map(|c| c.1).sum();
        let short: Vec<&String> = cov
            .iter()
            .filter(|(_, c)| c.0 > 0)
            .map(|(g, _)| g)
            .collect();
        println!(
            "  {sink:<5}: {want} seqs owed, {missing} lost (neither delivered nor kept), {dupes} duplicates{}",
            if short.is_empty() {
                String::new()
            } else {
                format!("; agents short: {short:?}")
            }
        );
    }
    println!(
        "  {kept_n} records still in the agents' buffers at the stop (sent at their next start)"
    );
    let clean = exits.iter().filter(|c| **c == Some(0)).count();
    println!("  {clean} of {agents} agents exited 0 on SIGTERM");
    println!("\ngoal: <= 15 MB RSS idle per agent; every seq at every sink");
    Ok(())
}
