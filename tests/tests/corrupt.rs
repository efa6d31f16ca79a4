//! A corrupt buffer database at start is quarantined; the agent runs on a fresh one and
//! `buffer fsck` reports it.

use std::time::Duration;

use skygate_e2e::{Agent, last_seq, sim_rig, skygate, stats, wait_until};

#[test]
fn a_corrupt_database_is_quarantined_and_the_agent_runs_on_and_fsck_reports_it() {
    let (_root, data, cfg) = sim_rig("gw-q", 1, 200);
    let a = Agent::start(&cfg, &data);
    wait_until(Duration::from_secs(20), "first records", || {
        last_seq(&data) > 100
    });
    assert_eq!(a.stop(), Some(0));
    let before = stats(&data)["last_seq"].as_u64().expect("last_seq");

    // Scribble over the database, header included.
    let db = data.join("buffer/skygate.db");
    let len = std::fs::metadata(&db).expect("db").len() as usize;
    std::fs::write(&db, vec![0xA5u8; len.max(4096)]).expect("corrupt");

    let mut a = Agent::start(&cfg, &data);
    wait_until(
        Duration::from_secs(20),
        "records on the fresh buffer",
        || last_seq(&data) > before,
    );
    assert!(a.is_running(), "no crash loop");
    let log = a.log_text();
    assert!(
        log.contains("quarantin"),
        "the log says what happened: {log}"
    );
    assert_eq!(a.stop(), Some(0));

    let qdirs: Vec<_> = std::fs::read_dir(data.join("buffer/quarantine"))
        .expect("quarantine dir")
        .flatten()
        .collect();
    assert_eq!(qdirs.len(), 1);
    assert!(
        qdirs[0].path().join("skygate.db").exists(),
        "the damaged file is kept, not deleted"
    );

    let out = skygate(&[
        "audit",
        "--json",
        "--data-dir",
        data.to_str().expect("utf8"),
    ]);
    let audit = String::from_utf8_lossy(&out.stdout);
    assert!(audit.contains("buffer.quarantine"), "{audit}");

    let out = skygate(&["buffer", "fsck", "--data-dir", data.to_str().expect("utf8")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "fsck flags it: {text}");
    assert!(text.contains("quarantined"), "{text}");
    assert!(
        text.contains("integrity   ok"),
        "the fresh database itself is sound: {text}"
    );
}
