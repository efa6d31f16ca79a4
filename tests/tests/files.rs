//! Instrument files against real writers: FITS frames written by astropy (one in a single
//! write, one slowly in pieces by separate appends), a CSV log, a file kept in place
//! across a restart, and a directory whose stream no sink takes.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use skygate_e2e::{Agent, driver_status, peer_python, peers_dir, pending, read_bucket, wait_until};

fn write_fits(out: &Path, args: &[&str]) -> std::process::Child {
    Command::new(peer_python())
        .arg(peers_dir().join("write_fits.py"))
        .arg(out)
        .args(args)
        .spawn()
        .expect("python with astropy (scripts/setup installs it)")
}

#[test]
fn finished_files_become_one_record_each_and_are_moved_deleted_or_kept_only_after_commit() {
    let root = tempfile::tempdir().expect("tmp");
    let data = root.path().join("data");
    let dirs = ["frames", "done", "logs", "notes", "unrouted"].map(|d| {
        let p = root.path().join(d);
        std::fs::create_dir_all(&p).expect("mkdir");
        p
    });
    let [frames, done, logs, notes, unrouted] = &dirs;
    let bucket = root.path().join("bucket");
    let cfg = root.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[gateway]
id = "gw-files"
[health]
enabled = false
[drivers.camera]
kind = "files"
stream = "frames"
dir = "{frames}"
pattern = "*.fits"
format = "fits"
after = "move"
move_to = "{done}"
settle = "3s"
fits_keys = ["CCD-TEMP"]
[drivers.weather_log]
kind = "files"
stream = "frames"
dir = "{logs}"
pattern = "*.csv"
format = "csv"
after = "delete"
settle = "300ms"
header = true
columns = ["time", "temperature", "humidity"]
time_column = "time"
[drivers.weather_log.channels.temperature]
unit = "degC"
[drivers.notes]
kind = "files"
stream = "frames"
dir = "{notes}"
format = "blob"
content_type = "text/plain"
settle = "300ms"
[drivers.nowhere]
kind = "files"
stream = "not.routed"
dir = "{unrouted}"
format = "blob"
after = "delete"
settle = "300ms"
[sinks.archive]
kind = "bucket"
dir = "{bucket}"
batch_max_age = "100ms"
[[routes]]
streams = ["frames"]
sinks = ["archive"]
"#,
            frames = frames.display(),
            done = done.display(),
            logs = logs.display(),
            notes = notes.display(),
            unrouted = unrouted.display(),
            bucket = bucket.display(),
        ),
    )
    .expect("config");
    let agent = Agent::start(&cfg, &data);
    wait_until(Duration::from_secs(20), "the watchers", || {
        driver_status(&data, "camera")["state"] == "running"
    });

    // One frame written at once, one appended a 2880-byte block at a time a second apart:
    // each piece its own open and close, so inotify reports a close after every piece, and
    // every partial file is a whole number of FITS blocks. Only the length the header
    // announces tells it is not finished.
    let mut whole = write_fits(&frames.join("m42.fits"), &["M 42"]);
    let mut slow = write_fits(
        &frames.join("ngc2070.fits"),
        &["NGC 2070", "--pieces", "2880", "--pause", "1.0"],
    );
    assert!(whole.wait().expect("astropy").success());
    std::fs::write(
        logs.join("wx.csv"),
        "time,temperature,humidity\n2026-11-22T03:00:00Z,11.5,40\n2026-11-22T03:01:00Z,11.25,41\n2026-11-22T03:02:00Z,--,42\n",
    )
    .expect("csv");
    std::fs::write(notes.join("night.txt"), "clear, seeing 0.8\"").expect("note");
    std::fs::write(unrouted.join("keep-me.bin"), b"\x00\x01").expect("unrouted");
    assert!(slow.wait().expect("astropy").success());

    wait_until(Duration::from_secs(30), "both frames moved", || {
        done.join("m42.fits").exists() && done.join("ngc2070.fits").exists()
    });
    wait_until(Duration::from_secs(20), "the CSV deleted", || {
        !logs.join("wx.csv").exists()
    });
    wait_until(Duration::from_secs(20), "the note stored", || {
        driver_status(&data, "notes")["counters"]["files"] == 1
    });
    wait_until(Duration::from_secs(20), "the unrouted file seen", || {
        driver_status(&data, "nowhere")["counters"]["not_routed"] == 1
    });
    assert!(
        unrouted.join("keep-me.bin").exists(),
        "a file that was not stored is not deleted"
    );
    assert!(!frames.join("m42.fits").exists() && !frames.join("ngc2070.fits").exists());
    wait_until(Duration::from_secs(20), "delivery", || {
        pending(&data, "archive") == 0
    });
    assert_eq!(agent.stop(), Some(0));

    // The kept note is not read again after a restart; a new one is.
    let agent = Agent::start(&cfg, &data);
    std::fs::write(notes.join("second.txt"), "cloudy").expect("note");
    wait_until(Duration::from_secs(20), "the second note", || {
        driver_status(&data, "notes")["counters"]["files"] == 1
    });
    std::thread::sleep(Duration::from_secs(1));
    wait_until(Duration::from_secs(20), "delivery", || {
        pending(&data, "archive") == 0
    });
    assert_eq!(agent.stop(), Some(0));

    let got = read_bucket(&bucket);
    let frames: Vec<&serde_json::Value> = got
        .records
        .iter()
        .filter(|r| r["source"] == "camera")
        .collect();
    assert_eq!(
        frames.len(),
        2,
        "one record per frame, no partial one: {frames:?}"
    );
    let slow = frames
        .iter()
        .find(|r| r["value"]["name"] == "ngc2070.fits")
        .expect("the slow frame");
    let meta = &slow["value"]["meta"];
    assert_eq!(meta["OBJECT"], "NGC 2070", "{slow}");
    assert_eq!(meta["EXPTIME"], 120.5, "{slow}");
    assert_eq!(meta["NAXIS"], 2, "{slow}");
    assert_eq!(
        (meta["NAXIS1"].clone(), meta["NAXIS2"].clone()),
        (64.into(), 48.into())
    );
    assert_eq!(meta["CCD-TEMP"], -25.25, "the configured extra key: {slow}");
    assert_eq!(meta["DATE-OBS"], "2026-11-22T03:14:15.900");
    assert_eq!(
        slow["ts"], "2026-11-22T03:14:15.900000000Z",
        "DATE-OBS is the time"
    );
    assert_eq!(slow["quality"], "good", "{slow}");
    // The whole file: astropy's frame is 14,400 bytes (3 header blocks, 2 data blocks).
    assert_eq!(slow["value"]["size"], 14_400, "{slow}");
    assert_eq!(
        std::fs::metadata(done.join("ngc2070.fits"))
            .expect("moved")
            .len(),
        14_400
    );

    let temps: Vec<&serde_json::Value> = got
        .records
        .iter()
        .filter(|r| r["source"] == "weather_log" && r["channel"] == "temperature")
        .collect();
    assert_eq!(temps.len(), 3, "{temps:?}");
    assert_eq!(temps[0]["value"], 11.5);
    assert_eq!(temps[0]["unit"], "degC");
    assert_eq!(temps[0]["ts"], "2026-11-22T03:00:00.000000000Z");
    assert_eq!(temps[2]["quality"], "bad", "{}", temps[2]);
    let notes: Vec<&serde_json::Value> = got
        .records
        .iter()
        .filter(|r| r["source"] == "notes")
        .collect();
    assert_eq!(
        notes.len(),
        2,
        "the kept note once, the new one once: {notes:?}"
    );
}
