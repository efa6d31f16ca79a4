//! Disk full, for real: the buffer on a small tmpfs, a sink that cannot deliver, so the
//! backlog grows until the disk runs low. The agent keeps running, evicts by policy,
//! records gaps, says it is degraded (log and `buffer stats`), corrupts nothing, and
//! recovers when space returns. Every seq issued is then either delivered or inside a
//! gap marker.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use skygate_e2e::{
    Agent, archive_sink, pending, read_bucket, require_root, skygate, stats, try_stats, wait_until,
};

struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mkdir");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount");
        assert!(st.success(), "mount tmpfs at {} failed", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_degrades_evicts_into_gaps_and_recovers_without_losing_track_of_anything() {
    if !require_root("disk_full") {
        return;
    }
    let root = tempfile::tempdir().expect("tmp");
    let fs = Tmpfs::mount(&root.path().join("mnt"), "40m");
    let data = fs.0.join("data");
    let bucket = root.path().join("bucket");
    // ~1.6 MB/s of 400-byte text readings against a 40 MiB disk with a 12 MiB watermark.
    let mut cfg = String::from(
        "[gateway]\nid = \"gw-full\"\n[buffer]\ndurability = \"process\"\nmax_bytes = \"1GiB\"\nmin_free_disk = \"12MiB\"\n\
         [drivers.wx]\nkind = \"sim\"\nstream = \"weather\"\npriority = 5\n",
    );
    for c in 0..4 {
        cfg.push_str(&format!(
            "[drivers.wx.channels.c{c}]\nsignal = \"text\"\nrate_hz = 1000\nvalues = [\"{}\"]\n",
            "t".repeat(400)
        ));
    }
    cfg.push_str(&archive_sink(
        &bucket,
        "batch_max_age = \"100ms\"\nbackoff_initial = \"100ms\"\nbackoff_max = \"500ms\"\n",
    ));
    let cfg_path = root.path().join("c.toml");
    std::fs::write(&cfg_path, cfg).expect("config");

    // The peer is away from the start: the bucket path is a file, every put fails.
    std::fs::write(&bucket, b"not a directory").expect("block bucket");
    let mut agent = Agent::start(&cfg_path, &data);
    wait_until(Duration::from_secs(10), "the agent to start", || {
        try_stats(&data).is_some()
    });
    // Something else on the gateway takes space too.
    std::fs::write(fs.0.join("filler"), vec![0u8; 10 << 20]).expect("filler");

    wait_until(
        Duration::from_secs(60),
        "eviction under a full disk",
        || {
            try_stats(&data)
                .and_then(|s| s["gaps"]["total"].as_u64())
                .unwrap_or(0)
                > 0
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        agent.is_running(),
        "the agent survives a full disk: {}",
        agent.log_text()
    );
    let st = stats(&data);
    assert_eq!(st["status"]["degraded"], true, "{st}");
    let reasons = st["status"]["reasons"].to_string();
    assert!(reasons.contains("free disk"), "{reasons}");
    assert!(agent.log_text().contains("evicted records; recorded a gap"));
    // Nothing corrupt while full.
    let fsck = skygate(&["buffer", "fsck", "--data-dir", data.to_str().expect("utf8")]);
    assert_eq!(
        fsck.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );

    // Space returns and the peer comes back.
    std::fs::remove_file(fs.0.join("filler")).expect("rm filler");
    std::fs::remove_file(&bucket).expect("unblock");
    std::fs::create_dir_all(&bucket).expect("bucket dir");
    wait_until(Duration::from_secs(60), "the status to recover", || {
        !stats(&data)["status"]["reasons"]
            .to_string()
            .contains("free disk")
    });
    wait_until(Duration::from_secs(60), "delivery to catch up", || {
        pending(&data, "archive") < 5_000
    });
    assert!(agent.is_running());
    assert_eq!(agent.stop(), Some(0));
    // Deliver what remains (no more ingest) so the bucket can be checked against seqs.
    // Same watermark: the default (256 MiB) is more than this disk, so a drain agent on
    // it would evict at its first commit, and could stop before delivering that gap.
    let drain = root.path().join("drain.toml");
    let drain_cfg = format!(
        "[gateway]\nid = \"gw-full\"\n[buffer]\nmin_free_disk = \"12MiB\"\n[health]\nenabled = false\n{}",
        archive_sink(&bucket, "batch_max_age = \"100ms\"\n")
    );
    std::fs::write(&drain, drain_cfg).expect("drain config");
    let a = Agent::start(&drain, &data);
    wait_until(Duration::from_secs(60), "the backlog to drain", || {
        pending(&data, "archive") == 0
    });
    assert_eq!(a.stop(), Some(0));

    let last = stats(&data)["last_seq"].as_u64().expect("last");
    let got = read_bucket(&bucket);
    assert!(!got.gaps.is_empty(), "gap markers were delivered");
    let counts = got.seq_counts();
    let in_gap = |s: u64| {
        got.gaps.iter().any(|g| {
            g["first_seq"].as_u64().unwrap_or(u64::MAX) <= s
                && s <= g["last_seq"].as_u64().unwrap_or(0)
        })
    };
    let unexplained: Vec<u64> = (1..=last)
        .filter(|s| !counts.contains_key(s) && !in_gap(*s))
        .collect();
    let lost: u64 = got.gaps.iter().filter_map(|g| g["count"].as_u64()).sum();
    println!(
        "disk full: {last} issued, {} delivered, {lost} evicted in {} gaps, {} unexplained",
        counts.len(),
        got.gaps.len(),
        unexplained.len()
    );
    // Every eviction is in the audit trail too.
    let out = skygate(&[
        "audit",
        "--json",
        "--limit",
        "10000",
        "--data-dir",
        data.to_str().expect("utf8"),
    ]);
    let audit: serde_json::Value = serde_json::from_slice(&out.stdout).expect("audit json");
    let evictions = audit
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["action"] == "buffer.evict")
        .count();
    assert!(
        evictions > 0 && evictions <= got.gaps.len(),
        "{evictions} evictions audited for {} gaps",
        got.gaps.len()
    );
    assert!(
        unexplained.is_empty(),
        "holes without a gap marker: {:?}",
        &unexplained[..unexplained.len().min(10)]
    );
}
