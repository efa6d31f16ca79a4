//! The embedded broker's promise: a PUBACK means committed. Real publishers against the
//! real binary: `mosquitto_pub -q 1 -l` bursts (one client, and four at once) and
//! paho-mqtt instruments that retry until PUBACK while the agent is killed with SIGKILL.
//! Every message a publisher was told is accepted must be in the buffer, in each
//! client's order. (The rumqttd-based broker acknowledged such bursts and then stored
//! between 4% and 92% of them; these tests are what showed it.)

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use skygate_e2e::{
    Agent, Peer, buffer_export, embedded_broker_rig, free_port, peer_python, peers_dir, wait_until,
};

const BURST: usize = 20_000;

/// Every record of stream `burst` in the buffer (the agent stopped), as
/// channel -> values in seq order.
fn stored(data: &Path) -> BTreeMap<String, Vec<u64>> {
    let mut rows: Vec<(u64, String, u64)> = buffer_export(data)
        .into_iter()
        .filter(|r| r["stream"] == "burst")
        .map(|r| {
            (
                r["seq"].as_u64().expect("seq"),
                r["channel"].as_str().expect("channel").to_string(),
                r["value"].as_f64().expect("number") as u64,
            )
        })
        .collect();
    rows.sort();
    let mut by_channel: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (_, ch, v) in rows {
        by_channel.entry(ch).or_default().push(v);
    }
    by_channel
}

fn burst_file(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("burst.jsonl");
    let text: String = (1..=BURST).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    std::fs::write(&p, text).expect("burst lines");
    p
}

/// `mosquitto_pub -q 1 -l` of the burst file from each client at once; each must exit 0
/// (it waits for the PUBACK of every message before it does).
fn publish_burst(port: u16, lines: &Path, clients: &[String]) {
    let port = port.to_string();
    let children: Vec<_> = clients
        .iter()
        .map(|c| {
            Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-l"])
                .args(["-i", c, "-t", &format!("burst/{c}")])
                .stdin(std::fs::File::open(lines).expect("lines"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("mosquitto_pub (Debian mosquitto-clients)")
        })
        .collect();
    for (c, child) in clients.iter().zip(children) {
        let out = child.wait_with_output().expect("mosquitto_pub");
        assert!(
            out.status.success(),
            "mosquitto_pub {c}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Five rounds of one client and then four at once, `BURST` messages each; the agent is
/// killed with SIGKILL at the end, so only what was committed can be read back.
fn bursts_are_stored_whole(durability: &str) {
    let root = tempfile::tempdir().expect("tmp");
    let data = root.path().join("data");
    let port = free_port();
    let cfg = embedded_broker_rig(root.path(), "burst", durability, port);
    let lines = burst_file(root.path());
    let agent = Agent::start(&cfg, &data);
    let probe = port.to_string();
    wait_until(Duration::from_secs(20), "the embedded broker", || {
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &probe, "-q", "1"])
            .args(["-t", "probe", "-m", "x"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    let mut clients_seen = Vec::new();
    for round in 0..5 {
        let one = vec![format!("r{round}solo")];
        publish_burst(port, &lines, &one);
        let four: Vec<String> = (0..4).map(|c| format!("r{round}c{c}")).collect();
        publish_burst(port, &lines, &four);
        clients_seen.extend(one.into_iter().chain(four));
    }
    agent.kill9();
    let got = stored(&data);
    let want: Vec<u64> = (1..=BURST as u64).collect();
    for c in &clients_seen {
        let values = got.get(&format!("{c}.n")).map(Vec::as_slice).unwrap_or(&[]);
        assert_eq!(
            values.len(),
            BURST,
            "{durability} mode: client {c}: {} of {BURST} acknowledged messages stored",
            values.len()
        );
        assert!(
            values == want.as_slice(),
            "{durability} mode: client {c}: stored out of order"
        );
    }
}

/// The tests here saturate both cores; run one at a time, so the kill -9 test's wait for
/// acknowledgements after a restart measures the agent, not the bursts running beside it.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn qos1_bursts_from_one_and_four_clients_are_stored_whole_in_process_mode() {
    let _serial = one_at_a_time();
    bursts_are_stored_whole("process");
}

#[test]
fn qos1_bursts_from_one_and_four_clients_are_stored_whole_in_power_mode() {
    let _serial = one_at_a_time();
    bursts_are_stored_whole("power");
}

/// Reads a peer's file of acknowledged message numbers.
fn acked(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn every_puback_survives_twenty_kill9s_under_retrying_instruments() {
    let _serial = one_at_a_time();
    const KILLS: usize = 20;
    let root = tempfile::tempdir().expect("tmp");
    let data = root.path().join("data");
    let port = free_port();
    let cfg = embedded_broker_rig(root.path(), "burst", "process", port);
    let mut agent = Agent::start(&cfg, &data);
    let python = peer_python();
    let script = peers_dir().join("mqtt_instrument.py");
    let instruments: Vec<(String, std::path::PathBuf, Peer)> = (0..2)
        .map(|i| {
            let name = format!("inst{i}");
            let file = root.path().join(format!("{name}.acked"));
            let peer = Peer::start(
                &name,
                &python,
                &[
                    script.to_str().expect("utf-8"),
                    "127.0.0.1",
                    &port.to_string(),
                    &name,
                    &format!("burst/{name}"),
                    "100000000",
                    file.to_str().expect("utf-8"),
                ],
                true,
            );
            (name, file, peer)
        })
        .collect();
    // Kill at moments spread over the publishing, restart at once: the instruments retry.
    let mut slowest = Duration::ZERO;
    let mut stalls = 0;
    for k in 0..KILLS {
        let before: usize = instruments.iter().map(|(_, f, _)| acked(f).len()).sum();
        std::thread::sleep(Duration::from_millis(300 + (k as u64 * 137) % 700));
        agent.kill9();
        agent = Agent::start(&cfg, &data);
        // Progress between kills is what this waits for, not a speed figure: on a busy
        // machine a restart has once taken over 30 s to acknowledge ten messages (seen
        // in CI and a cold run; not understood yet), so the slowest is printed.
        let t0 = std::time::Instant::now();
        let progressed = || {
            instruments
                .iter()
                .map(|(_, f, _)| acked(f).len())
                .sum::<usize>()
                > before + 10
        };
        while !progressed() && t0.elapsed() < Duration::from_secs(90) {
            std::thread::sleep(Duration::from_millis(100));
        }
        if !progressed() {
            // Known, not yet understood: reported, and the loss check below still runs.
            stalls += 1;
            println!("restart {k}: no ten acknowledgements within 90 s");
        }
        slowest = slowest.max(t0.elapsed());
    }
    println!(
        "slowest restart to ten more acknowledgements: {slowest:?}; stalls over 90 s: {stalls}"
    );
    agent.kill9();
    let got = stored(&data);
    let mut total = 0;
    for (name, file, _) in &instruments {
        let acks = acked(file);
        total += acks.len();
        let values = got.get(&format!("{name}.n")).cloned().unwrap_or_default();
        // Stored in order, each acknowledged message at least once (a message stored
        // but killed before its PUBACK comes again: a duplicate, never a hole).
        let mut dedup = values.clone();
        dedup.dedup();
        let max_acked = acks.iter().copied().max().unwrap_or(0);
        let missing: Vec<u64> = acks
            .iter()
            .copied()
            .filter(|n| dedup.binary_search(n).is_err())
            .take(10)
            .collect();
        assert!(
            missing.is_empty(),
            "{name}: acknowledged but not stored (first 10): {missing:?} of {} acknowledged",
            acks.len()
        );
        assert!(
            dedup.windows(2).all(|w| w[0] < w[1]),
            "{name}: stored out of order"
        );
        assert!(max_acked > 100, "{name}: only {max_acked} acknowledged");
    }
    eprintln!("{KILLS} kills, {total} acknowledged messages, all stored");
}
