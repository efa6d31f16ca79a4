//! The serial-line driver over a real pty pair (socat): NMEA sentences written by the
//! test as a GPS receiver would, broken ones counted, and a line that vanishes and comes
//! back reopened.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use skygate_e2e::{Agent, driver_status, pty_pair, skygate, wait_until};

fn gps(data: &Path) -> Value {
    let out = skygate(&[
        "drivers",
        "--json",
        "--data-dir",
        data.to_str().expect("utf8"),
    ]);
    if !out.status.success() {
        return Value::Null;
    }
    let all: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    all.as_array()
        .and_then(|d| d.iter().find(|x| x["name"] == "gps").cloned())
        .unwrap_or(Value::Null)
}

/// `$DATA*HH\r\n` with the right checksum.
fn sentence(data: &str) -> String {
    skygate_drivers::serial::nmea::sentence(data)
}

fn send(dev: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(dev)
        .expect("open pty");
    f.write_all(text.as_bytes()).expect("write pty");
}

#[test]
fn nmea_over_a_pty_gives_fixes_counts_broken_lines_and_survives_the_port_vanishing() {
    let root = tempfile::tempdir().expect("tmp");
    let data = root.path().join("data");
    let (port, receiver) = (root.path().join("ttyGPS"), root.path().join("ttyRX"));
    let socat = pty_pair(&port, &receiver);
    let cfg = root.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw-serial\"\n[health]\nenabled = false\n\
             [drivers.gps]\nkind = \"serial\"\nprotocol = \"nmea\"\nserial_port = \"{}\"\nbaud = 9600\ncounters_every = \"300ms\"\nsilence = \"2s\"\n{}",
            port.display(),
            skygate_e2e::archive_sink(&root.path().join("bucket"), "batch_max_age = \"100ms\"\n")
        ),
    )
    .expect("config");
    let mut a = Agent::start(&cfg, &data);
    wait_until(
        Duration::from_secs(20),
        "the driver to open the port",
        || gps(&data)["state"] == "running" || gps(&data)["state"] == "starting",
    );

    let good = [
        sentence("GPGGA,123519.00,2437.6320,S,07024.2880,W,1,09,0.9,2635.0,M,,M,,"),
        sentence("GPRMC,123519.00,A,2437.6320,S,07024.2880,W,0.0,0.0,221126,,"),
        sentence("GPGSA,A,3,04,05,09,12,24,,,,,,,,2.5,1.3,2.1"),
        sentence("GPGSV,1,1,01,04,77,045,42"),
    ];
    let mut bad_sum = sentence("GPGGA,123520.00,2437.6320,S,07024.2880,W,1,09,0.9,2635.0,M,,M,,");
    bad_sum.replace_range(bad_sum.len() - 4..bad_sum.len() - 2, "00");
    let noise = "\u{1}\u{2}garbage without a start\r\n";
    let overlong = format!("${}\r\n", "X".repeat(3000));
    let field = sentence("GPGGA,993519.00,2437.6320,S,07024.2880,W,1,09,0.9,2635.0,M,,M,,");
    wait_until(Duration::from_secs(20), "the fix over the pty", || {
        send(&receiver, &good.concat());
        gps(&data)["channels"]["latitude"]["value"].is_number()
    });
    // The valid RMC names a time: the gateway clock's offset from it is a reading.
    wait_until(Duration::from_secs(10), "the clock offset", || {
        let offset = gps(&data)["channels"]["clock_offset"].clone();
        offset["value"].is_number() && offset["unit"] == "s"
    });
    send(&receiver, &format!("{bad_sum}{noise}{overlong}{field}"));
    // A good sentence after the junk still decodes: the overlong line did not swallow it.
    wait_until(Duration::from_secs(20), "the counters", || {
        send(&receiver, &good[0]);
        let c = &gps(&data)["counters"];
        c["checksum_errors"] == 1 && c["framing_errors"] == 2 && c["field_errors"] == 1
    });
    let g = gps(&data);
    let ch = &g["channels"];
    let lat = ch["latitude"]["value"].as_f64().expect("lat");
    assert!((lat - -(24.0 + 37.632 / 60.0)).abs() < 1e-9, "{lat}");
    assert_eq!(ch["longitude"]["unit"], "deg");
    assert_eq!(ch["satellites"]["value"], json!(9));
    assert_eq!(ch["fix_quality"]["value"], json!(1));
    assert_eq!(ch["fix_valid"]["value"], json!(true));
    assert_eq!(ch["fix_type"]["value"], json!(3));
    assert_eq!(ch["altitude"]["value"], json!(2635.0));
    assert_eq!(g["state"], "running", "{g}");
    // The counts are readings too, for the fleet.
    wait_until(
        Duration::from_secs(10),
        "checksum_errors as a reading",
        || gps(&data)["channels"]["checksum_errors"]["value"] == json!(1),
    );
    assert!(g["last_error"].as_str().is_some());

    // The adapter goes away and comes back: the driver opens the new pty by itself.
    socat.stop();
    wait_until(Duration::from_secs(20), "the driver to notice", || {
        gps(&data)["counters"]["open_failures"].as_u64() > Some(0)
            || gps(&data)["counters"]["io_errors"].as_u64() > Some(0)
    });
    let _socat = pty_pair(&port, &receiver);
    wait_until(
        Duration::from_secs(30),
        "a new fix after the port came back",
        || {
            send(
                &receiver,
                &sentence("GPGGA,123600.00,2437.7000,S,07024.2880,W,2,11,0.8,2635.0,M,,M,,"),
            );
            gps(&data)["channels"]["satellites"]["value"] == json!(11)
        },
    );
    assert!(a.is_running());
    let bucket = root.path().join("bucket");
    wait_until(Duration::from_secs(20), "the fixes in the bucket", || {
        skygate_e2e::read_bucket(&bucket)
            .records
            .iter()
            .any(|r| r["source"] == "gps" && r["channel"] == "latitude")
    });
    assert_eq!(a.stop(), Some(0));
}

#[test]
fn ascii_lines_from_a_meter_and_a_weather_station_become_channels_with_units() {
    let root = tempfile::tempdir().expect("tmp");
    let data = root.path().join("data");
    let (sqm_port, sqm_dev) = (root.path().join("ttySQM"), root.path().join("ttySQMd"));
    let (wx_port, wx_dev) = (root.path().join("ttyWX"), root.path().join("ttyWXd"));
    let _a = pty_pair(&sqm_port, &sqm_dev);
    let _b = pty_pair(&wx_port, &wx_dev);
    let cfg = root.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[gateway]
id = "gw-lines"
[health]
enabled = false
[drivers.sqm]
kind = "serial"
protocol = "lines"
serial_port = "{}"
baud = 115200
regex = '^r,\s*(?P<mpsas>-?\d+\.\d+)m,\s*(?P<freq>\d+)Hz,\s*\d+c,\s*[\d.]+s,\s*(?P<temp>-?\d+\.\d+)C'
[drivers.sqm.channels.mpsas]
unit = "mag/arcsec2"
[drivers.sqm.channels.freq]
type = "integer"
unit = "Hz"
[drivers.sqm.channels.temp]
unit = "degC"
[drivers.wx]
kind = "serial"
protocol = "lines"
serial_port = "{}"
delimiter = ";"
fields = ["", "temperature", "humidity", "status"]
[drivers.wx.channels.humidity]
unit = "%"
scale = 0.1
[drivers.wx.channels.status]
type = "text"
{}"#,
            sqm_port.display(),
            wx_port.display(),
            skygate_e2e::archive_sink(&root.path().join("bucket"), "")
        ),
    )
    .expect("config");
    let a = Agent::start(&cfg, &data);
    wait_until(Duration::from_secs(20), "both meters read", || {
        send(
            &sqm_dev,
            "r, 21.43m,0000000022Hz,0000000000c,0000000.000s, 014.2C\r\n",
        );
        send(&wx_dev, "WX1;12.5;655;OK\r\n");
        driver_status(&data, "sqm")["channels"]["mpsas"]["value"].is_number()
            && driver_status(&data, "wx")["channels"]["status"]["value"] == "OK"
    });
    let sqm = driver_status(&data, "sqm");
    assert_eq!(sqm["channels"]["mpsas"]["value"], json!(21.43));
    assert_eq!(sqm["channels"]["mpsas"]["unit"], "mag/arcsec2");
    assert_eq!(sqm["channels"]["freq"]["value"], json!(22));
    assert_eq!(sqm["channels"]["temp"]["value"], json!(14.2));
    let wx = driver_status(&data, "wx");
    assert_eq!(wx["channels"]["humidity"]["value"], json!(65.5));
    assert_eq!(wx["channels"]["temperature"]["value"], json!(12.5));

    // A line that is not the meter's format is counted; a dropout value is a bad reading
    // while the rest of its line stays good.
    send(&sqm_dev, "hello there\r\n");
    send(&wx_dev, "WX1;--.-;640;SENSOR\r\n");
    wait_until(Duration::from_secs(20), "the rejects", || {
        driver_status(&data, "sqm")["counters"]["framing_errors"] == 1
            && driver_status(&data, "wx")["channels"]["temperature"]["quality"] == "bad"
    });
    let wx = driver_status(&data, "wx");
    let t = &wx["channels"]["temperature"];
    assert!(
        t["quality_reason"]
            .as_str()
            .is_some_and(|r| r.contains("--.-")),
        "{t}"
    );
    assert_eq!(wx["channels"]["humidity"]["value"], json!(64.0));
    assert_eq!(wx["channels"]["humidity"]["quality"], "good");
    assert_eq!(wx["channels"]["status"]["value"], "SENSOR");
    assert_eq!(wx["counters"]["field_errors"], 1);
    assert_eq!(a.stop(), Some(0));
}

#[test]
fn raw_capture_keeps_every_byte_in_blobs_of_bounded_size() {
    let root = tempfile::tempdir().expect("tmp");
    let data = root.path().join("data");
    let bucket = root.path().join("bucket");
    let (port, dev) = (root.path().join("ttyRAW"), root.path().join("ttyRAWd"));
    let _pty = pty_pair(&port, &dev);
    let cfg = root.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw-raw\"\n[health]\nenabled = false\n\
             [drivers.seismo]\nkind = \"serial\"\nprotocol = \"raw\"\nserial_port = \"{}\"\nchunk_bytes = 64\nchunk_age = \"300ms\"\n{}",
            port.display(),
            skygate_e2e::archive_sink(&bucket, "batch_max_age = \"100ms\"\n")
        ),
    )
    .expect("config");
    let a = Agent::start(&cfg, &data);
    wait_until(Duration::from_secs(20), "the port open", || {
        driver_status(&data, "seismo")["state"] == "starting"
    });
    // Every byte value, binary as a digitizer sends it; 300 bytes = 4 full chunks + 44.
    let sent: Vec<u8> = (0..300u32).map(|i| (i * 7 % 256) as u8).collect();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&dev)
            .expect("pty");
        f.write_all(&sent).expect("write");
    }
    let blobs = || -> Vec<(u64, Vec<u8>)> {
        let mut v: Vec<(u64, Vec<u8>)> = skygate_e2e::read_bucket(&bucket)
            .records
            .iter()
            .filter(|r| r["source"] == "seismo" && r["channel"] == "capture")
            .filter_map(|r| {
                let key = r["value"]["key"].as_str()?;
                Some((r["seq"].as_u64()?, std::fs::read(bucket.join(key)).ok()?))
            })
            .collect();
        v.sort();
        v
    };
    wait_until(Duration::from_secs(20), "every byte in the bucket", || {
        blobs().iter().map(|(_, b)| b.len()).sum::<usize>() >= sent.len()
    });
    let got = blobs();
    assert!(
        got.iter().all(|(_, b)| b.len() <= 64),
        "{:?}",
        got.iter().map(|(_, b)| b.len()).collect::<Vec<_>>()
    );
    let joined: Vec<u8> = got.into_iter().flat_map(|(_, b)| b).collect();
    assert_eq!(
        joined, sent,
        "the capture, in seq order, is the byte stream"
    );
    let s = driver_status(&data, "seismo");
    assert_eq!(s["counters"]["bytes"], json!(300));
    assert_eq!(a.stop(), Some(0));
}

#[test]
fn probe_serial_shows_what_arrives_and_what_it_looks_like() {
    let root = tempfile::tempdir().expect("tmp");
    let (port, dev) = (root.path().join("ttyP"), root.path().join("ttyPd"));
    let _pty = pty_pair(&port, &dev);
    // The probe listens for 2 s; write while it does.
    let writer = {
        let dev = dev.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            send(
                &dev,
                &sentence("GPGGA,123519.00,2437.6320,S,07024.2880,W,1,09,0.9,2635.0,M,,M,,"),
            );
            send(&dev, "$GPGGA,1*00\r\n");
            send(&dev, "\u{1}noise\r\n");
        })
    };
    let out = std::process::Command::new(skygate_e2e::skygate_bin())
        .args([
            "probe",
            "serial",
            "--port",
            port.to_str().expect("utf8"),
            "--seconds",
            "2",
        ])
        .output()
        .expect("probe");
    writer.join().expect("writer");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("GPGGA,123519.00"), "{text}");
    assert!(text.contains("\\x01noise"), "control bytes escaped: {text}");
    assert!(text.contains("3 lines (3 ending CRLF)"), "{text}");
    assert!(
        text.contains("1 sentences with a good checksum, 1 with a bad one"),
        "{text}"
    );
    // Nothing at all: exit 1 with a hint.
    let silent = skygate(&[
        "probe",
        "serial",
        "--port",
        port.to_str().expect("utf8"),
        "--seconds",
        "0.5",
    ]);
    assert_eq!(silent.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&silent.stdout).contains("nothing arrived"));
}
