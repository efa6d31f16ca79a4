//! The Modbus driver against a real Modbus stack (pymodbus 3.16.1): TCP on loopback, and
//! RTU over a socat pty pair, including a line that disappears and comes back.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use skygate_e2e::{
    Agent, Peer, driver_status, free_port, peer_python, peers_dir, pty_pair, skygate, wait_until,
};

/// The pymodbus station on a free loopback port.
fn tcp_device() -> (Peer, u16) {
    let port = free_port();
    let device = peers_dir().join("modbus_device.py");
    let peer = Peer::start(
        "pymodbus tcp",
        &peer_python(),
        &[device.to_str().expect("utf8"), "tcp", &port.to_string()],
        true,
    );
    (peer, port)
}

fn channels(data: &Path, driver: &str) -> Value {
    driver_status(data, driver)["channels"].clone()
}

fn driver_field(data: &Path, driver: &str, field: &str) -> Value {
    driver_status(data, driver)[field].clone()
}

/// Points of the test device (see tests/peers/modbus_device.py for the words behind them).
const STATION: &str = r#"
[POINTS.u16]
table = "holding"
address = 0
[POINTS.i16]
table = "holding"
address = 1
type = "i16"
[POINTS.u32]
table = "holding"
address = 2
type = "u32"
[POINTS.i32_lw]
table = "holding"
address = 4
type = "i32"
word_order = "little"
[POINTS.f32]
table = "holding"
address = 6
type = "f32"
[POINTS.f32_swapped]
table = "holding"
address = 8
type = "f32"
word_order = "little"
byte_order = "little"
[POINTS.f64]
table = "holding"
address = 10
type = "f64"
[POINTS.u64]
table = "holding"
address = 14
type = "u64"
[POINTS.model]
table = "holding"
address = 18
type = "string"
length = 4
[POINTS.status_low]
table = "holding"
address = 22
type = "bits"
bit = 0
bits = 4
[POINTS.status_b5]
table = "holding"
address = 22
type = "bits"
bit = 5
[POINTS.temperature]
table = "input"
address = 0
type = "i16"
scale = 0.1
offset = -40.0
unit = "degC"
[POINTS.wind]
table = "input"
address = 1
unit = "m/s"
[POINTS.coil3]
table = "coil"
address = 3
[POINTS.coil4]
table = "coil"
address = 4
[POINTS.door]
table = "discrete"
address = 1
"#;

fn config(root: &Path, line: &str, extra_devices: &str) -> std::path::PathBuf {
    let station = STATION.replace("POINTS", "drivers.plc.devices.st1.points");
    let text = format!(
        "[gateway]\nid = \"gw-modbus\"\n[health]\nenabled = false\n\
         [drivers.plc]\nkind = \"modbus\"\nstream = \"plc\"\n{line}\ntimeout = \"300ms\"\nretries = 0\nbackoff_max = \"1s\"\n\
         [drivers.plc.devices.st1]\nunit = 1\npoll = \"200ms\"\n{station}\n\
         [drivers.plc.devices.st2]\nunit = 2\npoll = \"200ms\"\n[drivers.plc.devices.st2.points.id]\ntable = \"holding\"\naddress = 0\n\
         {extra_devices}{}",
        skygate_e2e::archive_sink(&root.join("bucket"), "batch_max_age = \"100ms\"\n")
    );
    let p = root.join("c.toml");
    std::fs::write(&p, text).expect("config");
    p
}

fn assert_station_values(ch: &Value) {
    let v = |name: &str| ch[format!("st1.{name}")]["value"].clone();
    assert_eq!(v("u16"), json!(1001), "{ch}");
    assert_eq!(v("i16"), json!(-42));
    assert_eq!(v("u32"), json!(70000));
    assert_eq!(v("i32_lw"), json!(-70000));
    assert_eq!(v("f32"), json!(12.5));
    assert_eq!(v("f32_swapped"), json!(-3.25));
    assert_eq!(v("f64"), json!(1013.25));
    assert_eq!(v("u64"), json!(1_099_511_627_783u64));
    assert_eq!(v("model"), json!("WS-7"));
    assert_eq!(v("status_low"), json!(5));
    assert_eq!(v("status_b5"), json!(true));
    let t = v("temperature").as_f64().expect("number");
    assert!((t - 25.2).abs() < 1e-9, "{t}");
    assert_eq!(ch["st1.temperature"]["unit"], "degC");
    assert_eq!(v("wind"), json!(37));
    assert_eq!(v("coil3"), json!(true));
    assert_eq!(v("coil4"), json!(false));
    assert_eq!(v("door"), json!(true));
    assert_eq!(
        ch["st2.id"]["value"],
        json!(1002),
        "the second unit on the line"
    );
    for (name, c) in ch.as_object().expect("channels") {
        if name.starts_with("st1.") || name == "st2.id" {
            assert_eq!(c["quality"], "good", "{name}: {c}");
        }
    }
}

#[test]
fn modbus_tcp_register_maps_decode_and_exceptions_become_bad_readings() {
    let root = tempfile::tempdir().expect("tmp");
    let data = root.path().join("data");
    let (_peer, port) = tcp_device();
    let cfg = config(
        root.path(),
        &format!("transport = \"tcp\"\nhost = \"127.0.0.1\"\nport = {port}"),
        "[drivers.plc.devices.st2.points.missing]\ntable = \"holding\"\naddress = 100\n\
         [drivers.plc.devices.ghost]\nunit = 9\npoll = \"200ms\"\n[drivers.plc.devices.ghost.points.x]\ntable = \"holding\"\naddress = 0\n",
    );
    // A device that accepts the connection and never says a word.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mute_port = mute.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in mute.incoming().flatten() {
            held.push(c);
        }
    });
    let mut text = std::fs::read_to_string(&cfg).expect("cfg");
    text.push_str(&format!(
        "\n[drivers.mute]\nkind = \"modbus\"\nstream = \"plc\"\ntransport = \"tcp\"\nhost = \"127.0.0.1\"\nport = {mute_port}\n\
         timeout = \"200ms\"\nretries = 1\n[drivers.mute.devices.m]\nunit = 1\npoll = \"300ms\"\n[drivers.mute.devices.m.points.x]\ntable = \"input\"\naddress = 0\n"
    ));
    std::fs::write(&cfg, text).expect("cfg");
    let a = Agent::start(&cfg, &data);
    wait_until(Duration::from_secs(30), "every point read", || {
        let ch = channels(&data, "plc");
        ch["st2.id"]["quality"] == "good"
            && ch["st1.door"]["quality"] == "good"
            && ch["ghost.x"].is_object()
            && channels(&data, "mute")["m.x"].is_object()
    });
    let ch = channels(&data, "plc");
    assert_station_values(&ch);
    // An undefined address: the device answers exception 2; the point is bad, with why.
    assert_eq!(ch["st2.missing"]["quality"], "bad", "{ch}");
    let why = ch["st2.missing"]["quality_reason"]
        .as_str()
        .expect("reason");
    assert!(why.contains("exception 2"), "{why}");
    // A unit the server does not have: pymodbus answers exception 4 over TCP.
    assert_eq!(ch["ghost.x"]["quality"], "bad");
    // The silent one: a timeout after the retries, as a bad reading; the driver says failing.
    let m = channels(&data, "mute");
    assert_eq!(m["m.x"]["quality"], "bad", "{m}");
    assert!(
        m["m.x"]["quality_reason"]
            .as_str()
            .is_some_and(|r| r.contains("timeout")),
        "{m}"
    );
    assert_eq!(driver_field(&data, "mute", "state"), "failing");
    assert!(driver_field(&data, "mute", "counters")["timeouts"].as_u64() >= Some(2));
    let counters = driver_field(&data, "plc", "counters");
    assert!(counters["exceptions"].as_u64() > Some(0), "{counters}");
    assert!(driver_field(&data, "plc", "errors").as_u64() > Some(0));
    // The readings go through the buffer to the bucket, bad ones with their reason.
    let bucket = root.path().join("bucket");
    wait_until(Duration::from_secs(30), "readings in the bucket", || {
        skygate_e2e::read_bucket(&bucket)
            .records
            .iter()
            .any(|r| r["channel"] == "st2.missing")
    });
    assert_eq!(a.stop(), Some(0));
    let got = skygate_e2e::read_bucket(&bucket);
    assert!(
        got.records
            .iter()
            .any(|r| r["channel"] == "st1.f64" && r["value"] == json!(1013.25))
    );
    assert!(got.records.iter().any(|r| {
        r["channel"] == "st2.missing"
            && r["quality"] == "bad"
            && r["quality_reason"]
                .as_str()
                .is_some_and(|q| q.contains("exception 2"))
    }));
}

#[test]
fn modbus_rtu_polls_two_units_in_turn_times_out_a_silent_one_and_reopens_a_vanished_line() {
    let root = tempfile::tempdir().expect("tmp");
    let data = root.path().join("data");
    let (dev, srv) = (root.path().join("ttyGW"), root.path().join("ttyDEV"));
    let device = peers_dir().join("modbus_device.py");
    let start_line = || {
        let socat = pty_pair(&dev, &srv);
        let peer = Peer::start(
            "pymodbus rtu",
            &peer_python(),
            &[
                device.to_str().expect("utf8"),
                "rtu",
                srv.to_str().expect("utf8"),
                "19200",
            ],
            true,
        );
        (socat, peer)
    };
    let line = start_line();
    let cfg = config(
        root.path(),
        &format!(
            "transport = \"rtu\"\nserial_port = \"{}\"\nbaud = 19200\nparity = \"none\"",
            dev.display()
        ),
        "[drivers.plc.devices.ghost]\nunit = 9\npoll = \"500ms\"\n[drivers.plc.devices.ghost.points.x]\ntable = \"holding\"\naddress = 0\n",
    );
    let mut a = Agent::start(&cfg, &data);
    wait_until(Duration::from_secs(30), "every point read over RTU", || {
        let ch = channels(&data, "plc");
        ch["st2.id"]["quality"] == "good"
            && ch["st1.door"]["quality"] == "good"
            && ch["ghost.x"].is_object()
    });
    let ch = channels(&data, "plc");
    assert_station_values(&ch);
    // pymodbus answers a unit it does not have with exception 4 (server device failure).
    assert_eq!(ch["ghost.x"]["quality"], "bad");
    assert!(
        ch["ghost.x"]["quality_reason"]
            .as_str()
            .is_some_and(|r| r.contains("exception 4")),
        "{ch}"
    );

    // The adapter goes away (socat and the device stop; the pty link disappears)...
    let (socat, peer) = line;
    peer.stop();
    socat.stop();
    wait_until(Duration::from_secs(30), "the driver to notice", || {
        channels(&data, "plc")["st1.u16"]["quality"] == "bad"
    });
    let before = driver_field(&data, "plc", "readings").as_u64().unwrap_or(0);
    // ... and comes back: the driver opens it again by itself.
    let _line = start_line();
    wait_until(
        Duration::from_secs(30),
        "good readings again after the line came back",
        || {
            let ch = channels(&data, "plc");
            ch["st1.u16"]["quality"] == "good" && ch["st2.id"]["quality"] == "good"
        },
    );
    assert!(driver_field(&data, "plc", "readings").as_u64().unwrap_or(0) > before);
    assert!(a.is_running());
    assert_eq!(a.stop(), Some(0));
}

#[test]
fn probe_reads_registers_and_bits_and_says_why_when_the_device_refuses() {
    let (_peer, port) = tcp_device();
    let host = format!("127.0.0.1:{port}");
    let probe = |host: &str, unit: &str, read: &str| {
        skygate(&[
            "probe", "modbus", "--host", host, "--unit", unit, "--read", read,
        ])
    };
    let out = probe(&host, "2", "holding:0..2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    // Unit 2's id register, then the i16 -42 (0xffd6).
    assert_eq!(
        &rows[0][..5],
        ["holding", "0", "1002", "1002", "0x3ea"],
        "{text}"
    );
    assert_eq!(
        &rows[1][..5],
        ["holding", "1", "65494", "-42", "0xffd6"],
        "{text}"
    );
    let out = probe(&host, "1", "holding:18..20");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("WS") && text.contains("-7"),
        "the string register's chars: {text}"
    );
    let out = probe(&host, "1", "coil:0..4");
    let bits: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().last().unwrap_or("").to_string())
        .collect();
    assert_eq!(bits, ["1", "0", "1", "1"]);
    let out = probe(&host, "1", "holding:100..102");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("exception 2"));
    let out = skygate(&["probe", "modbus", "--read", "holding:0..2"]);
    assert_eq!(out.status.code(), Some(2), "neither --host nor --port");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--host"));
    // Nobody listening: a clear error, not a hang.
    let out = probe(&format!("127.0.0.1:{}", free_port()), "1", "input:0");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cannot open the line"));
}
