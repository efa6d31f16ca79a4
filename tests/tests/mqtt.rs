//! MQTT ingest against real peers: `mosquitto_pub` as the instrument publishing to the
//! agent's embedded broker (password auth, a TLS listener with a test CA), and a real
//! Mosquitto 2 broker the agent subscribes to with a persistent QoS 1 session.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use skygate_e2e::{
    Agent, Peer, archive_sink, driver_status, free_port, mosquitto, pending, read_bucket,
    tls_files, wait_until,
};

fn publish(args: &[&str]) -> Output {
    Command::new("mosquitto_pub")
        .args(args)
        .output()
        .expect("mosquitto_pub (Debian mosquitto-clients; scripts/setup installs it)")
}

fn channel(data: &Path, driver: &str, ch: &str) -> Value {
    driver_status(data, driver)["channels"][ch].clone()
}

#[test]
fn instruments_publish_to_the_embedded_broker_with_passwords_and_tls_and_bad_payloads_are_counted()
{
    let root = tempfile::tempdir().expect("tmp");
    let data = root.path().join("data");
    let tls = tls_files(root.path());
    let pass = root.path().join("dome.pass");
    std::fs::write(&pass, "dome-s3cret\n").expect("password");
    let (plain, secure) = (free_port(), free_port());
    let cfg = root.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[gateway]
id = "gw-mqtt"
[health]
enabled = false
[broker]
listen = "127.0.0.1:{plain}"
tls_listen = "127.0.0.1:{secure}"
tls_cert = "{cert}"
tls_key = "{key}"
max_payload = "64KiB"
[broker.users.dome]
password_file = "{pass}"

[drivers.dome]
kind = "mqtt"
broker = "embedded"
[[drivers.dome.topics]]
filter = "dome/+/env"
channel = "{{1}}"
decoder = "json"
fields = {{ t = "/env/t", rh = "/rh" }}
timestamp = "/time"
[drivers.dome.topics.channels.t]
unit = "degC"
[[drivers.dome.topics]]
filter = "wx/csv"
channel = "wx"
decoder = "csv"
columns = ["t", "", "p"]
[[drivers.dome.topics]]
filter = "ups/+/load"
channel = "ups.{{1}}"
decoder = "number"
unit = "%"
[[drivers.dome.topics]]
filter = "cam/snap"
channel = "snap"
decoder = "raw"
content_type = "image/jpeg"
{sink}"#,
            cert = tls.cert.display(),
            key = tls.key.display(),
            pass = pass.display(),
            sink = archive_sink(&root.path().join("bucket"), "batch_max_age = \"100ms\"\n"),
        ),
    )
    .expect("config");
    let mut agent = Agent::start(&cfg, &data);
    let port = plain.to_string();
    let login = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-u",
        "dome",
        "-P",
        "dome-s3cret",
    ];
    let send = |extra: &[&str]| {
        let args: Vec<&str> = login.iter().chain(extra).copied().collect();
        publish(&args)
    };
    wait_until(Duration::from_secs(20), "the embedded broker", || {
        send(&[
            "-q",
            "1",
            "-t",
            "dome/east/env",
            "-m",
            r#"{"env":{"t":21.5},"rh":40,"time":"2026-11-22T10:00:00Z"}"#,
        ])
        .status
        .success()
    });
    assert!(
        send(&["-q", "1", "-t", "wx/csv", "-m", "12.5,x,1013.2"])
            .status
            .success()
    );
    assert!(send(&["-t", "ups/a/load", "-m", "42"]).status.success());
    assert!(
        send(&["-t", "cam/snap", "-m", "\u{ff}\u{d8}jpeg"])
            .status
            .success()
    );
    // Malformed: not JSON, not a number, a CSV line too short, a field that does not convert.
    assert!(
        send(&["-t", "dome/west/env", "-m", "{\"env\":"])
            .status
            .success()
    );
    assert!(
        send(&["-t", "ups/b/load", "-m", "overload"])
            .status
            .success()
    );
    assert!(send(&["-t", "wx/csv", "-m", "12.5"]).status.success());
    assert!(
        send(&[
            "-t",
            "dome/north/env",
            "-m",
            r#"{"env":{"t":"--"},"rh":41,"time":"2026-11-22T10:00:01Z"}"#
        ])
        .status
        .success()
    );

    wait_until(Duration::from_secs(20), "readings from every topic", || {
        channel(&data, "dome", "east.t")["value"] == 21.5
            && channel(&data, "dome", "wx.p")["value"] == 1013.2
            && channel(&data, "dome", "ups.a")["value"] == 42.0
            && !channel(&data, "dome", "snap").is_null()
            && channel(&data, "dome", "north.rh")["value"] == 41.0
    });
    let st = driver_status(&data, "dome");
    assert_eq!(st["channels"]["east.t"]["unit"], "degC", "{st}");
    assert_eq!(st["channels"]["ups.a"]["unit"], "%", "{st}");
    assert_eq!(st["channels"]["north.t"]["quality"], "bad", "{st}");
    assert_eq!(st["channels"]["ups.b"]["quality"], "bad", "{st}");
    assert_eq!(
        st["counters"]["decode_errors"], 2,
        "not JSON, short CSV: {st}"
    );
    let last = st["last_error"].as_str().unwrap_or_default();
    assert!(
        last.contains("wx/csv") && last.contains("CSV line 1"),
        "{st}"
    );

    // The wrong password is refused, and so is no login at all.
    let wrong = publish(&[
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-u",
        "dome",
        "-P",
        "guess",
        "-t",
        "ups/a/load",
        "-m",
        "1",
    ]);
    assert!(!wrong.status.success(), "wrong password accepted");
    let anon = publish(&[
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "ups/a/load",
        "-m",
        "1",
    ]);
    assert!(!anon.status.success(), "anonymous accepted");

    // TLS: trusted with the test CA, refused by a client trusting another CA.
    let sport = secure.to_string();
    let tls_pub = |ca: &Path, value: &str| {
        publish(&[
            "-h",
            "127.0.0.1",
            "-p",
            &sport,
            "--cafile",
            ca.to_str().expect("utf8"),
            "-u",
            "dome",
            "-P",
            "dome-s3cret",
            "-t",
            "ups/tls/load",
            "-m",
            value,
        ])
    };
    let ok = tls_pub(&tls.ca, "77");
    assert!(
        ok.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&ok.stderr),
        agent.log_text()
    );
    assert!(
        !tls_pub(&tls.other_ca, "78").status.success(),
        "untrusted CA accepted"
    );
    wait_until(Duration::from_secs(10), "the TLS reading", || {
        channel(&data, "dome", "ups.tls")["value"] == 77.0
    });

    // The instrument's own timestamp is kept, and everything reaches the sink.
    wait_until(Duration::from_secs(20), "delivery", || {
        pending(&data, "archive") == 0
    });
    assert!(agent.is_running(), "{}", agent.log_text());
    assert_eq!(agent.stop(), Some(0));
    let got = read_bucket(&root.path().join("bucket"));
    let east = got
        .records
        .iter()
        .find(|r| r["channel"] == "east.t")
        .expect("east.t delivered");
    assert_eq!(east["ts_ns"], 1_795_341_600_000_000_000i64, "{east}");
    assert_eq!(got.blob_objects, 1, "the raw payload is one blob");
}

/// Mosquitto with a password file, on a free port, as root (no privilege drop).
fn mosquitto_with_user(dir: &Path, port: u16) -> Peer {
    let passwd = dir.join("mosquitto.passwd");
    let st = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwd)
        .args(["gateway", "lab-pass-1"])
        .status()
        .expect("mosquitto_passwd");
    assert!(st.success());
    mosquitto(
        dir,
        port,
        &format!("allow_anonymous false\npassword_file {}", passwd.display()),
    )
}

#[test]
fn a_persistent_qos1_session_on_mosquitto_gets_what_was_published_while_the_agent_was_down() {
    let root = tempfile::tempdir().expect("tmp");
    let data = root.path().join("data");
    let port = free_port();
    let _broker = mosquitto_with_user(root.path(), port);
    let pass = root.path().join("gw.pass");
    std::fs::write(&pass, "lab-pass-1\n").expect("pass");
    let bad = root.path().join("bad.pass");
    std::fs::write(&bad, "nope\n").expect("pass");
    let bucket = root.path().join("bucket");
    let cfg = root.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[gateway]
id = "gw-ext"
[health]
enabled = false
[drivers.lab]
kind = "mqtt"
url = "mqtt://127.0.0.1:{port}"
username = "gateway"
password_file = "{pass}"
qos = 1
[[drivers.lab.topics]]
filter = "lab/#"
decoder = "json"
[drivers.intruder]
kind = "mqtt"
url = "mqtt://127.0.0.1:{port}"
username = "gateway"
password_file = "{bad}"
[[drivers.intruder.topics]]
filter = "lab/#"
decoder = "number"
{sink}"#,
            pass = pass.display(),
            bad = bad.display(),
            sink = archive_sink(&bucket, "batch_max_age = \"100ms\"\n"),
        ),
    )
    .expect("config");
    let sport = port.to_string();
    let send = |i: u32| {
        let body = format!("{{\"n\":{i}}}");
        let out = publish(&[
            "-h",
            "127.0.0.1",
            "-p",
            &sport,
            "-u",
            "gateway",
            "-P",
            "lab-pass-1",
            "-q",
            "1",
            "-t",
            "lab/counter",
            "-m",
            &body,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    let agent = Agent::start(&cfg, &data);
    wait_until(Duration::from_secs(20), "the subscription", || {
        send(0);
        driver_status(&data, "lab")["channels"]["lab.counter.n"]["value"] == 0.0
    });
    let intruder = driver_status(&data, "intruder");
    assert_eq!(intruder["state"], "failing", "{intruder}");
    assert!(
        intruder["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("refused")),
        "{intruder}"
    );
    assert_eq!(agent.stop(), Some(0));

    // The agent is away: the broker keeps these for its persistent session.
    for i in 1..=50 {
        send(i);
    }
    let agent = Agent::start(&cfg, &data);
    wait_until(Duration::from_secs(30), "the queued messages", || {
        driver_status(&data, "lab")["channels"]["lab.counter.n"]["value"] == 50.0
    });
    wait_until(Duration::from_secs(20), "delivery", || {
        pending(&data, "archive") == 0
    });
    assert_eq!(agent.stop(), Some(0));
    let got = read_bucket(&bucket);
    let mut seen: Vec<i64> = got
        .records
        .iter()
        .filter(|r| r["channel"] == "lab.counter.n")
        .filter_map(|r| r["value"].as_f64().map(|v| v as i64))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen,
        (0..=50).collect::<Vec<_>>(),
        "every message, none lost"
    );
}
