use std::path::{Path, PathBuf};

use super::*;

fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(&p, text).expect("write");
    p
}

fn err(text: &str) -> ConfigError {
    let d = tempfile::tempdir().expect("tmp");
    let p = write(d.path(), "skygate.toml", text);
    let e = load(&p).expect_err("must be rejected");
    assert_eq!(e.file, p);
    e
}

const SINK: &str = "[sinks.archive]\nkind = \"bucket\"\n";

#[test]
fn an_unknown_key_is_reported_at_its_line_and_column() {
    let e = err(&format!(
        "{SINK}\n[buffer]\ndurability = \"power\"\n  max_byte = 5\n"
    ));
    assert_eq!((e.line, e.column), (6, 3), "{e}");
    assert!(e.message.contains("unknown field `max_byte`"), "{e}");
}

#[test]
fn an_unknown_key_inside_a_driver_channel_points_at_that_key() {
    let e = err(&format!(
        "{SINK}[drivers.wx]\nkind = \"sim\"\n[drivers.wx.channels.t]\nsignal = \"sine\"\nrate_hz = 1\nperiodd = \"1s\"\n"
    ));
    assert_eq!((e.line, e.column), (8, 1), "{e}");
    assert!(e.message.contains("unknown field `periodd`"), "{e}");
}

#[test]
fn a_wrong_type_is_reported_where_the_value_is() {
    let e = err(&format!(
        "{SINK}[drivers.wx]\nkind = \"sim\"\npriority = \"high\"\n[drivers.wx.channels.t]\nsignal = \"sine\"\nrate_hz = 1\n"
    ));
    assert_eq!((e.line, e.column), (5, 12), "{e}");
    assert!(e.message.contains("driver wx"), "{e}");
}

#[test]
fn a_bad_value_is_reported_where_the_value_is() {
    let e = err(&format!("{SINK}[buffer]\nmax_bytes = \"12 parsecs\"\n"));
    assert_eq!((e.line, e.column), (4, 13), "{e}");
    assert!(e.message.contains("invalid size unit"), "{e}");

    let e = err(&format!(
        "{SINK}[drivers.wx]\nkind = \"sim\"\n[drivers.wx.channels.t]\nsignal = \"sine\"\nrate_hz = -3\n"
    ));
    assert_eq!((e.line, e.column), (7, 11), "{e}");
    assert!(e.message.contains("rate_hz"), "{e}");

    let e = err(&format!("{SINK}[drivers.wx]\nkind = \"modbus-x\"\n"));
    assert_eq!((e.line, e.column), (4, 8), "{e}");
    assert!(e.message.contains("unknown kind"), "{e}");
}

#[test]
fn a_route_to_an_unknown_sink_names_it_and_the_defined_ones() {
    let e = err(&format!(
        "{SINK}[[routes]]\nstreams = [\"*\"]\nsinks = [\"archive\", \"kafka\"]\n"
    ));
    assert_eq!((e.line, e.column), (5, 21), "{e}");
    assert!(
        e.message.contains("unknown sink \"kafka\"") && e.message.contains("archive"),
        "{e}"
    );
}

#[test]
fn a_syntax_error_is_reported_with_its_position() {
    let e = err("[gateway\nid = 1\n");
    assert_eq!(e.line, 1, "{e}");
}

#[test]
fn a_missing_file_is_reported_by_name() {
    let e = load(Path::new("/nonexistent/skygate.toml")).expect_err("missing");
    assert_eq!(e.file, Path::new("/nonexistent/skygate.toml"));
    assert!(e.message.contains("cannot read config file"), "{e}");
    assert!(
        e.to_string().starts_with("/nonexistent/skygate.toml:0:0: "),
        "{e}"
    );
}

#[test]
fn an_error_in_a_drop_in_names_the_drop_in() {
    let d = tempfile::tempdir().expect("tmp");
    let main = write(d.path(), "skygate.toml", SINK);
    let bad = write(
        d.path(),
        "conf.d/20-bad.toml",
        "[gateway]\nid = \"no spaces allowed\"\n",
    );
    let e = load(&main).expect_err("bad drop-in");
    assert_eq!(e.file, bad);
    assert_eq!((e.line, e.column), (2, 6), "{e}");
}

#[test]
fn drop_ins_are_merged_in_name_order_over_the_main_file() {
    let d = tempfile::tempdir().expect("tmp");
    let main = write(
        d.path(),
        "skygate.toml",
        &format!(
            "{SINK}[gateway]\nid = \"main\"\nsite = \"a\"\n[buffer]\nmax_bytes = \"2MiB\"\n[[routes]]\nstreams = [\"x\"]\nsinks = [\"archive\"]\n"
        ),
    );
    write(
        d.path(),
        "conf.d/20-b.toml",
        "[gateway]\nid = \"twenty\"\n[[routes]]\nstreams = [\"y\"]\nsinks = [\"archive\"]\n",
    );
    write(
        d.path(),
        "conf.d/10-a.toml",
        "[gateway]\nid = \"ten\"\n[buffer]\ndurability = \"process\"\n",
    );
    write(d.path(), "conf.d/README", "not toml, ignored");
    let s = load(&main).expect("valid");
    assert_eq!(s.gateway.id, "twenty", "later file wins");
    assert_eq!(
        s.gateway.site.as_deref(),
        Some("a"),
        "unset keys keep earlier values"
    );
    assert_eq!(s.buffer.durability, Durability::Process);
    assert_eq!(s.buffer.max_bytes, 2 * 1024 * 1024);
    assert_eq!(s.routes.len(), 2, "routes accumulate");
}

#[test]
fn sizes_and_durations_accept_human_units() {
    assert_eq!(raw::ByteSize::parse("64MiB"), Ok(64 * 1024 * 1024));
    assert_eq!(raw::ByteSize::parse("1.5GB"), Ok(1_500_000_000));
    assert_eq!(raw::ByteSize::parse("512"), Ok(512));
    assert!(raw::ByteSize::parse("-1MiB").is_err());
}

/// Every config file shipped in `config/` parses and validates.
#[test]
fn every_shipped_config_file_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut mains = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("ls").flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "conf.d") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "toml") {
                mains.push(p);
            }
        }
    }
    assert!(mains.len() >= 2, "found {mains:?}");
    for p in mains {
        let s = load(&p).unwrap_or_else(|e| panic!("{e}"));
        assert!(!s.sinks.is_empty(), "{}: no sinks", p.display());
        for d in s.drivers.values() {
            assert!(
                !s.sinks_for_stream(&d.stream).is_empty(),
                "{}: driver {} is routed nowhere",
                p.display(),
                d.name
            );
        }
    }
    let embedded = load_embedded_default().expect("embedded default");
    assert_eq!(embedded.drivers.len(), 6);
}

#[test]
fn the_heartbeat_section_is_validated_and_its_source_name_is_reserved() {
    let e = err(&format!("{SINK}[health]\ninterval = \"100ms\"\n"));
    assert_eq!((e.line, e.column), (4, 12), "{e}");
    assert!(e.message.contains("at least 1s"), "{e}");
    let e = err(&format!(
        "{SINK}[drivers.skygate]\nkind = \"sim\"\n[drivers.skygate.channels.t]\nsignal = \"sine\"\nrate_hz = 1\n"
    ));
    assert!(e.message.contains("reserved"), "{e}");
    let d = tempfile::tempdir().expect("tmp");
    let p = write(
        d.path(),
        "s.toml",
        &format!("{SINK}[health]\nenabled = false\n"),
    );
    assert!(!load(&p).expect("valid").health.enabled);
    let p = write(d.path(), "t.toml", SINK);
    let h = load(&p).expect("valid").health;
    assert!(
        h.enabled
            && h.stream == "gateway.health"
            && h.interval == std::time::Duration::from_secs(60)
    );
}

#[test]
fn the_control_section_refuses_a_world_writable_socket_and_a_tcp_listener_without_tls() {
    let e = err(&format!("{SINK}[control]\nsocket_mode = \"0666\"\n"));
    assert_eq!((e.line, e.column), (4, 15), "{e}");
    assert!(e.message.contains("lets any user control the agent"), "{e}");
    let e = err(&format!("{SINK}[control]\nsocket_mode = \"rw\"\n"));
    assert!(e.message.contains("octal"), "{e}");
    let e = err(&format!(
        "{SINK}[control]\nlisten = \"0.0.0.0:8443\"\ntls_cert = \"/c.pem\"\n"
    ));
    assert_eq!((e.line, e.column), (4, 10), "{e}");
    assert!(e.message.contains("TLS-only"), "{e}");
    let e = err(&format!("{SINK}[control]\nlisten = \"gateway:8443\"\n"));
    assert!(e.message.contains("ADDRESS:PORT"), "{e}");

    let d = tempfile::tempdir().expect("tmp");
    let p = write(
        d.path(),
        "skygate.toml",
        &format!(
            "{SINK}[control]\nsocket = \"/run/skygate/ctl.sock\"\nsocket_mode = \"0600\"\nsocket_group = \"skygate\"\n\
             listen = \"0.0.0.0:8443\"\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\ntoken_file = \"/t\"\n"
        ),
    );
    let s = load(&p).expect("valid");
    assert_eq!(s.control.socket, PathBuf::from("/run/skygate/ctl.sock"));
    assert_eq!(s.control.socket_mode, 0o600);
    assert_eq!(s.control.socket_group.as_deref(), Some("skygate"));
    let tcp = s.control.tcp.expect("tcp");
    assert_eq!(tcp.listen.port(), 8443);
    assert_eq!(tcp.token_file, PathBuf::from("/t"));
    // Defaults: the socket in the data directory, owner and group only, no TCP.
    let s = load_sources(vec![SourceFile {
        path: "x.toml".into(),
        text: SINK.into(),
    }])
    .expect("valid");
    assert_eq!(s.control, ControlSettings::default());
    assert_eq!(s.control.socket_mode, 0o660);
}

#[test]
fn the_broker_section_needs_a_listener_and_users_and_embedded_mqtt_drivers_need_it() {
    let mqtt = "[drivers.dome]\nkind = \"mqtt\"\nbroker = \"embedded\"\n[[drivers.dome.topics]]\nfilter = \"dome/#\"\ndecoder = \"json\"\n";
    let e = err(&format!("{SINK}{mqtt}"));
    assert_eq!(e.line, 3, "{e}");
    assert!(e.message.contains("needs a [broker] section"), "{e}");
    let e = err(&format!("{SINK}[broker]\nlisten = \"127.0.0.1:1883\"\n"));
    assert_eq!(e.line, 3, "{e}");
    assert!(e.message.contains("no users"), "{e}");
    let e = err(&format!(
        "{SINK}[broker]\ntls_listen = \"127.0.0.1:8883\"\nallow_anonymous = true\n"
    ));
    assert!(e.message.contains("needs tls_cert and tls_key"), "{e}");
    let e = err(&format!("{SINK}[broker]\nallow_anonymous = true\n"));
    assert!(e.message.contains("listen"), "{e}");
    let e = err(&format!(
        "{SINK}[broker]\nlisten = \"lan:1883\"\nallow_anonymous = true\n"
    ));
    assert!(e.message.contains("ADDRESS:PORT"), "{e}");
    let e = err(&format!(
        "{SINK}[broker]\nlisten = \"127.0.0.1:1883\"\n[broker.users.dome]\npassword = \"in-the-config\"\n"
    ));
    assert!(e.message.contains("password"), "secrets stay in files: {e}");

    let d = tempfile::tempdir().expect("tmp");
    let p = write(
        d.path(),
        "skygate.toml",
        &format!(
            "{SINK}[broker]\nlisten = \"127.0.0.1:1883\"\nmax_payload = \"64KiB\"\n[broker.users.dome]\npassword_file = \"/etc/p\"\n{mqtt}"
        ),
    );
    let s = load(&p).expect("valid");
    let b = s.broker.expect("broker");
    assert_eq!(b.max_payload, 64 << 10);
    assert_eq!(b.users["dome"], PathBuf::from("/etc/p"));
    assert_eq!(s.drivers["dome"].kind.as_str(), "mqtt");
}
