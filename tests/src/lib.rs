//! Harness for end-to-end tests and benchmarks: runs the real `skygate` binary, reads
//! what it wrote to a bucket directory, and waits on conditions with deadlines.
//!
//! Tests that need root (tmpfs mounts) fail with a clear message when they cannot run,
//! unless `SKYGATE_SKIP_ROOT_TESTS=1` says to skip them on purpose.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `skygate` binary built next to the test executable (or `SKYGATE_BIN`).
pub fn skygate_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SKYGATE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/skygate
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("skygate");
    assert!(
        bin.exists(),
        "{} not found: build it first (cargo build -p skygate-agent --bin skygate) or set SKYGATE_BIN",
        bin.display()
    );
    bin
}

/// Runs `skygate ARGS` to completion.
pub fn skygate(args: &[&str]) -> Output {
    Command::new(skygate_bin())
        .args(args)
        .output()
        .expect("run skygate")
}

/// A running agent process.
#[derive(Debug)]
pub struct Agent {
    pub child: Child,
    pub log: PathBuf,
}

impl Agent {
    /// `skygate run --config CONFIG --data-dir DATA`, logging (JSON) to `DATA/../agent-N.log`.
    pub fn start(config: &Path, data_dir: &Path) -> Agent {
        Self::spawn(Some(config), data_dir)
    }

    /// [`Agent::start`], then waits until its control socket is there (the API answers).
    pub fn start_serving(config: &Path, data_dir: &Path) -> Agent {
        Self::spawn(Some(config), data_dir).serving(data_dir)
    }

    /// [`Agent::start_default`], then waits for its control socket.
    pub fn start_default_serving(data_dir: &Path) -> Agent {
        Self::spawn(None, data_dir).serving(data_dir)
    }

    fn serving(self, data_dir: &Path) -> Agent {
        let sock = data_dir.join("skygate.sock");
        wait_until(Duration::from_secs(20), "the control socket", || {
            sock.exists()
        });
        self
    }

    /// `skygate run --data-dir DATA`: the embedded default, no config file.
    pub fn start_default(data_dir: &Path) -> Agent {
        Self::spawn(None, data_dir)
    }

    fn spawn(config: Option<&Path>, data_dir: &Path) -> Agent {
        let n = std::fs::read_dir(data_dir.parent().expect("parent"))
            .map(|r| r.count())
            .unwrap_or(0);
        let log = data_dir.with_file_name(format!("agent-{n}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(skygate_bin());
        cmd.args(["run", "--log-format", "json"]);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let child = cmd
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawn skygate");
        Agent { child, log }
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "agent did not stop within 30s of SIGTERM; log: {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A test that fails (panics) before `stop` must not leave its agent running: killed
/// here if it still runs. `stop` and `kill9` have reaped it by then.
impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An agent whose embedded broker (`127.0.0.1:port`, anonymous) feeds one JSON driver
/// (`burst/<client>` -> stream `burst`, channel `<client>.n`) into a bucket sink that
/// cannot deliver (its directory is a file): every record stays in the buffer to be read
/// or counted. Writes `dir/<name>.toml` and returns its path. The broker tests, the power
/// tests and the broker benchmark share it.
pub fn embedded_broker_rig(dir: &Path, name: &str, durability: &str, port: u16) -> PathBuf {
    let blocker = dir.join("not-a-dir");
    std::fs::write(&blocker, b"").expect("blocker");
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            r#"[gateway]
id = "gw-{name}"
[buffer]
durability = "{durability}"
max_bytes = "4GiB"
min_free_disk = "16MiB"
[health]
enabled = false
[broker]
listen = "127.0.0.1:{port}"
allow_anonymous = true
[drivers.inst]
kind = "mqtt"
broker = "embedded"
stream = "burst"
[[drivers.inst.topics]]
filter = "burst/+"
channel = "{{1}}"
decoder = "json"
fields = {{ n = "/n" }}
[sinks.archive]
kind = "bucket"
dir = "{blocker}"
[[routes]]
streams = ["*"]
sinks = ["archive"]
"#,
            blocker = blocker.display()
        ),
    )
    .expect("config");
    cfg
}

/// A benchmark's `--NAME N` argument, `default` when absent.
pub fn bench_arg(name: &str, default: usize) -> usize {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The `skygate` binary beside a benchmark's own (`target/release/`), or `SKYGATE_BIN`.
pub fn bench_skygate_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("SKYGATE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let bin = std::env::current_exe()?.with_file_name("skygate");
    anyhow::ensure!(
        bin.exists(),
        "{} not found: cargo build --release -p skygate-agent --bin skygate",
        bin.display()
    );
    Ok(bin)
}

/// A benchmark's measuring window: `--seconds S` on its command line, 5 by default.
pub fn bench_seconds() -> f64 {
    std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0)
}

/// Polls `cond` every 100 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `skygate buffer stats --json`, or `None` while it cannot answer yet (no database, or
/// one still being created). For polling only; [`stats`] fails on any error.
pub fn try_stats(data_dir: &Path) -> Option<serde_json::Value> {
    let out = Command::new(skygate_bin())
        .args(["buffer", "stats", "--json", "--data-dir"])
        .arg(data_dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The last seq issued, 0 before the buffer exists.
pub fn last_seq(data_dir: &Path) -> u64 {
    try_stats(data_dir)
        .and_then(|s| s["last_seq"].as_u64())
        .unwrap_or(0)
}

/// `skygate buffer stats --json`.
pub fn stats(data_dir: &Path) -> serde_json::Value {
    let out = Command::new(skygate_bin())
        .args(["buffer", "stats", "--json", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("stats");
    assert!(
        out.status.success(),
        "stats failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stats json")
}

/// Records pending for a sink, from `buffer stats`.
pub fn pending(data_dir: &Path, sink: &str) -> u64 {
    try_stats(data_dir)
        .map(|s| s["sinks"].clone())
        .unwrap_or_default()
        .as_array()
        .and_then(|s| s.iter().find(|x| x["sink"] == sink))
        .and_then(|x| x["pending_records"].as_u64())
        .unwrap_or(0)
}

/// What a bucket directory holds, decoded.
#[derive(Debug, Default)]
pub struct BucketContents {
    /// Every record line, in the order read (objects sorted by key).
    pub records: Vec<serde_json::Value>,
    pub gaps: Vec<serde_json::Value>,
    pub objects: usize,
    pub blob_objects: usize,
}

impl BucketContents {
    /// How many times each seq arrived.
    pub fn seq_counts(&self) -> BTreeMap<u64, u32> {
        let mut m = BTreeMap::new();
        for r in &self.records {
            *m.entry(r["seq"].as_u64().expect("seq")).or_insert(0) += 1;
        }
        m
    }
}

/// Reads every object under `dir`: `.ndjson.zst` record objects, `_gaps/*.ndjson` markers,
/// blob objects (counted). Temp files of interrupted writes (`#` in the name) are skipped.
pub fn read_bucket(dir: &Path) -> BucketContents {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut out = BucketContents::default();
    for f in files {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.contains('#') {
            continue;
        }
        out.objects += 1;
        if name.ends_with(".ndjson.zst") {
            let raw = std::fs::read(&f).expect("read object");
            let text = zstd::decode_all(&raw[..])
                .unwrap_or_else(|e| panic!("{}: not zstd: {e}", f.display()));
            for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                out.records.push(
                    serde_json::from_slice(line)
                        .unwrap_or_else(|e| panic!("{}: bad line: {e}", f.display())),
                );
            }
        } else if name.ends_with(".ndjson") && f.parent().is_some_and(|p| p.ends_with("_gaps")) {
            let text = std::fs::read(&f).expect("read gap");
            for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                out.gaps
                    .push(serde_json::from_slice(line).expect("gap json"));
            }
        } else {
            out.blob_objects += 1;
        }
    }
    out
}

/// Fails loudly when a root-only test cannot run, unless skipping was asked for.
pub fn require_root(test: &str) -> bool {
    if rustix_is_root() {
        return true;
    }
    if std::env::var("SKYGATE_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        eprintln!("{test}: skipped (not root, SKYGATE_SKIP_ROOT_TESTS=1)");
        return false;
    }
    panic!(
        "{test} needs root (tmpfs mounts); run as root or set SKYGATE_SKIP_ROOT_TESTS=1 to skip it knowingly"
    );
}

fn rustix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// A config for tests: simulated instruments at `rate_hz` per channel into a bucket.
pub fn sim_config(gateway: &str, channels: u32, rate_hz: u32, extra: &str) -> String {
    let mut s = format!(
        "[gateway]\nid = \"{gateway}\"\n\n[buffer]\ndurability = \"power\"\nmax_bytes = \"1GiB\"\nmin_free_disk = \"1MiB\"\n\n\
         [drivers.wx]\nkind = \"sim\"\nstream = \"weather\"\npriority = 5\ntick = \"5ms\"\n"
    );
    for c in 0..channels {
        s.push_str(&format!(
            "[drivers.wx.channels.c{c}]\nsignal = \"counter\"\nrate_hz = {rate_hz}\n"
        ));
    }
    s.push_str(extra);
    s
}

/// A bucket sink named `archive` writing to `dir`, with every stream routed to it.
/// `extra` adds keys to the sink's table.
pub fn archive_sink(dir: &Path, extra: &str) -> String {
    format!(
        "\n[sinks.archive]\nkind = \"bucket\"\ndir = \"{}\"\n{extra}\n[[routes]]\nstreams = [\"*\"]\nsinks = [\"archive\"]\n",
        dir.display()
    )
}

/// A scratch directory with a sim config (see [`sim_config`]) delivering to
/// `ROOT/bucket`: returns (root, data dir, config path).
pub fn sim_rig(
    gateway: &str,
    channels: u32,
    rate_hz: u32,
) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let root = tempfile::tempdir().expect("tmp");
    let data = root.path().join("data");
    let cfg = root.path().join("c.toml");
    let text = sim_config(
        gateway,
        channels,
        rate_hz,
        &archive_sink(&root.path().join("bucket"), ""),
    );
    std::fs::write(&cfg, text).expect("config");
    (root, data, cfg)
}

/// PEM files of a throwaway CA and a server certificate it signed for `localhost` and
/// `127.0.0.1` (real X.509, verified by rustls like any other).
#[derive(Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Another CA's certificate: trusting only this must fail the handshake.
    pub other_ca: PathBuf,
    /// A client certificate and key the CA signed (CN `skygate-gw`), for mutual TLS.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A client certificate from the other CA: a server trusting only `ca` refuses it.
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

pub fn tls_files(dir: &Path) -> TlsFiles {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        CertifiedIssuer::self_signed(p, KeyPair::generate().expect("key")).expect("ca")
    };
    let issuer = ca("skygate test CA");
    let other = ca("some other CA");
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("params");
    p.distinguished_name
        .push(DnType::CommonName, "skygate gateway");
    let cert = p.signed_by(&key, &issuer).expect("sign");
    let client = |issuer: &CertifiedIssuer<'_, KeyPair>, cert: &Path, key_path: &Path| {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, "skygate-gw");
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let c = p.signed_by(&key, issuer).expect("sign client");
        std::fs::write(cert, c.pem()).expect("client cert");
        std::fs::write(key_path, key.serialize_pem()).expect("client key");
    };
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        other_ca: dir.join("other-ca.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
        rogue_cert: dir.join("rogue.pem"),
        rogue_key: dir.join("rogue.key"),
    };
    client(&issuer, &files.client_cert, &files.client_key);
    client(&other, &files.rogue_cert, &files.rogue_key);
    std::fs::write(&files.ca, issuer.pem()).expect("ca");
    std::fs::write(&files.other_ca, other.pem()).expect("other ca");
    std::fs::write(&files.cert, cert.pem()).expect("cert");
    std::fs::write(&files.key, key.serialize_pem()).expect("key");
    files
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port()
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_port(port: u16, what: &str) {
    wait_until(Duration::from_secs(30), what, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// Mosquitto on 127.0.0.1:`port`: `listener` options (TLS files, `require_certificate`,
/// authentication) follow the listener line. Waits until it accepts connections.
pub fn mosquitto(dir: &Path, port: u16, listener: &str) -> Peer {
    let conf = dir.join(format!("mosquitto-{port}.conf"));
    std::fs::write(
        &conf,
        format!(
            "user root
persistence false
max_queued_messages 1000000
listener {port} 127.0.0.1
{listener}
"
        ),
    )
    .expect("mosquitto conf");
    let peer = Peer::start(
        "mosquitto",
        Path::new("mosquitto"),
        &["-c", conf.to_str().expect("utf8")],
        false,
    );
    wait_port(port, "mosquitto");
    peer
}

/// The Tansu binary `scripts/setup` builds.
pub fn tansu_bin() -> PathBuf {
    let p = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cache/skygate/tansu/bin/tansu");
    assert!(p.exists(), "{} missing: run scripts/setup", p.display());
    p
}

/// A Tansu broker listening on `port`, advertising `advertised` (`tcp://host:port`),
/// storing in SQLite in `dir` (users and topics survive its restart); `auth` requires
/// SASL. Waits until it accepts connections.
pub fn tansu_broker(dir: &Path, port: u16, advertised: &str, auth: bool) -> Peer {
    let listen = format!("tcp://127.0.0.1:{port}");
    // Tansu reads the database path relative to its working directory.
    let mut args = vec![
        "broker",
        "--listener-url",
        &listen,
        "--advertised-listener-url",
        advertised,
        "--storage-engine",
        "sqlite://tansu.db",
    ];
    if auth {
        args.push("--authentication");
    }
    let peer = Peer::start_in("tansu", &tansu_bin(), &args, false, dir);
    wait_port(port, "tansu");
    peer
}

/// Runs a `tansu` client command (topic or user management); panics on failure.
pub fn tansu_cmd(args: &[&str]) {
    let o = Command::new(tansu_bin())
        .args(args)
        .output()
        .expect("tansu");
    assert!(
        o.status.success(),
        "tansu {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Kafka messages read back by confluent-kafka (`tests/peers/kafka_consume.py`), in offset
/// order per partition; stops after `want` or 15 s without a new one. `extra`: librdkafka
/// `key=value` settings.
pub fn kafka_consume(
    bootstrap: &str,
    topics: &[&str],
    want: u64,
    extra: &[String],
) -> Vec<serde_json::Value> {
    let o = Command::new(peer_python())
        .arg(peers_dir().join("kafka_consume.py"))
        .args([bootstrap, &topics.join(","), &want.to_string()])
        .args(extra)
        .output()
        .expect("kafka_consume.py");
    assert!(
        o.status.success(),
        "kafka_consume.py: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// `skygate buffer export` of a stopped agent's data dir: every record still in the
/// buffer, as parsed NDJSON lines.
pub fn buffer_export(data_dir: &Path) -> Vec<serde_json::Value> {
    let out = skygate(&[
        "buffer",
        "export",
        "--data-dir",
        data_dir.to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON line"))
        .collect()
}

/// `skygate sinks --json` of a running agent: each sink's state, last error and counters.
pub fn sinks_json(data_dir: &Path) -> serde_json::Value {
    let out = skygate(&[
        "sinks",
        "--json",
        "--data-dir",
        data_dir.to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// One sink's entry in [`sinks_json`]; `Null` while the agent is not answering yet.
pub fn sink_status(data_dir: &Path, name: &str) -> serde_json::Value {
    let out = skygate(&[
        "sinks",
        "--json",
        "--data-dir",
        data_dir.to_str().expect("utf8"),
    ]);
    if !out.status.success() {
        return serde_json::Value::Null;
    }
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    all.as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no sink {name} in {all}"))
}

/// The Python that has the test peers' packages (pymodbus, ...): `SKYGATE_PYTHON`, or the
/// virtualenv `scripts/setup` makes under `~/.cache/skygate/py`.
pub fn peer_python() -> PathBuf {
    if let Some(p) = std::env::var_os("SKYGATE_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let p = home.join(".cache/skygate/py/bin/python");
    assert!(
        p.exists(),
        "{} not found: run scripts/setup (it installs the Python test peers)",
        p.display()
    );
    p
}

/// A test peer process, killed (with its children) on drop.
#[derive(Debug)]
pub struct Peer {
    pub child: Child,
    pub name: String,
}

impl Peer {
    /// Starts `program args`, waiting up to 20 s for `ready` on its stdout when asked.
    pub fn start(name: &str, program: &Path, args: &[&str], wait_ready: bool) -> Peer {
        Self::start_in(name, program, args, wait_ready, Path::new("."))
    }

    /// [`Peer::start`] in working directory `cwd`.
    pub fn start_in(
        name: &str,
        program: &Path,
        args: &[&str],
        wait_ready: bool,
        cwd: &Path,
    ) -> Peer {
        use std::io::BufRead;
        let mut child = Command::new(program)
            .current_dir(cwd)
            .args(args)
            .stdin(Stdio::null())
            .stdout(if wait_ready {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({}): {e}", program.display()));
        if wait_ready {
            let out = child.stdout.take().expect("stdout");
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut lines = std::io::BufReader::new(out).lines();
                let ready = lines.any(|l| l.is_ok_and(|l| l.trim() == "ready"));
                let _ = tx.send(ready);
                // Keep draining so the peer never blocks on a full pipe.
                for _ in lines {}
            });
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(true) => {}
                _ => {
                    let _ = child.kill();
                    panic!("{name} did not say ready");
                }
            }
        }
        Peer {
            child,
            name: name.to_string(),
        }
    }

    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The ingest benchmarks' config: 4 sim drivers x 4 random-walk channels at
/// `per_channel_hz`, into a bucket sink that cannot deliver (its directory is the file
/// `bucket_blocker`), so a run measures ingest into the buffer, not delivery.
pub fn ingest_bench_config(durability: &str, per_channel_hz: u64, bucket_blocker: &Path) -> String {
    let mut s = format!(
        "[gateway]\nid = \"bench\"\n[buffer]\ndurability = \"{durability}\"\nmax_bytes = \"4GiB\"\nmin_free_disk = \"64MiB\"\n"
    );
    // 4 drivers x 4 channels; numbers, like a weather mast's.
    for d in 0..4 {
        s.push_str(&format!(
            "[drivers.d{d}]\nkind = \"sim\"\nstream = \"s{d}\"\ntick = \"2ms\"\n"
        ));
        for c in 0..4 {
            s.push_str(&format!(
                "[drivers.d{d}.channels.c{c}]\nsignal = \"random_walk\"\nrate_hz = {per_channel_hz}\nstart = 10.0\nstep = 0.1\nunit = \"degC\"\n"
            ));
        }
    }
    // The sink's directory is a file: it fails and backs off, so the run measures ingest
    // into the buffer, not delivery.
    s.push_str(&format!(
        "[sinks.hold]\nkind = \"bucket\"\ndir = \"{}/x\"\nbackoff_initial = \"10s\"\nbackoff_max = \"60s\"\n[[routes]]\nstreams = [\"*\"]\nsinks = [\"hold\"]\n",
        bucket_blocker.display()
    ));
    s
}

/// The numeric value of each record of `stream` in `records` (NDJSON lines), by seq.
pub fn values_by_seq(records: &[serde_json::Value], stream: &str) -> BTreeMap<u64, f64> {
    records
        .iter()
        .filter(|r| r["stream"] == stream)
        .map(|r| {
            (
                r["seq"].as_u64().expect("seq"),
                r["value"].as_f64().expect("a number"),
            )
        })
        .collect()
}

/// The running agent's `/metrics` text, over its control socket.
pub fn metrics_text(data: &Path) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let ep = skygate_agent::control::client::Endpoint::Unix(data.join("skygate.sock"));
    String::from_utf8(rt.block_on(ep.request("GET", "/metrics")).expect("metrics")).expect("utf-8")
}

/// The example WASM functions (`examples/functions/`), built for wasm32-wasip1 once per
/// test binary into a target directory of their own (beside the main one, so the nested
/// cargo never waits on the outer one's lock). Returns the directory holding the `.wasm`.
pub fn example_functions() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/functions");
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .and_then(|t| t.parent().map(|p| p.join("wasm-target")))
                .unwrap_or_else(|| root.join("target"));
            let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args([
                    "build",
                    "--release",
                    "--target",
                    "wasm32-wasip1",
                    "--manifest-path",
                ])
                .arg(root.join("Cargo.toml"))
                .env("CARGO_TARGET_DIR", &target)
                .output()
                .expect("cargo");
            assert!(
                out.status.success(),
                "building the example functions: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            target.join("wasm32-wasip1/release")
        })
        .clone()
}

/// The repository's `tests/peers/` directory.
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// `socat` joining two fresh ptys, linked at `a` and `b`; waits until both links exist.
///
/// Links left by an earlier pair (a killed socat does not remove them) are removed first:
/// they point at pty numbers the kernel may have handed to another test by now, and
/// waiting on them would return before the new links exist.
pub fn pty_pair(a: &Path, b: &Path) -> Peer {
    let _ = std::fs::remove_file(a);
    let _ = std::fs::remove_file(b);
    let arg = |p: &Path| format!("pty,raw,echo=0,link={}", p.display());
    let peer = Peer::start("socat", Path::new("socat"), &[&arg(a), &arg(b)], false);
    wait_until(Duration::from_secs(10), "socat's ptys", || {
        a.exists() && b.exists()
    });
    peer
}

/// One driver of the running agent as `skygate drivers --json` shows it; `Null` while the
/// agent does not answer or has no such driver.
pub fn driver_status(data_dir: &Path, name: &str) -> serde_json::Value {
    let out = skygate(&[
        "drivers",
        "--json",
        "--data-dir",
        data_dir.to_str().expect("utf8"),
    ]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    all.as_array()
        .and_then(|d| d.iter().find(|x| x["name"] == name).cloned())
        .unwrap_or_default()
}

/// A TCP relay on 127.0.0.1 in front of a peer, which a test can cut like a failed link:
/// while it is down, connections made through it go silent (nothing is forwarded either
/// way, as when a firewall drops packets) and new ones hang after connecting; when it comes
/// back up, the silent connections are closed (as a long outage ends them) and new ones
/// are relayed again.
#[derive(Debug)]
pub struct FaultProxy {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Bumped at every restore: connections from an older epoch close.
    epoch: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FaultProxy {
    pub fn start(target: u16) -> FaultProxy {
        Self::start_on(free_port(), target)
    }

    /// On a given port (for peers that advertise their address, like Kafka brokers).
    pub fn start_on(port: u16, target: u16) -> FaultProxy {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("proxy bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let up = Arc::new(AtomicBool::new(true));
        let epoch = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (u, e, s) = (up.clone(), epoch.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                let (u, e, s) = (u.clone(), e.clone(), s.clone());
                std::thread::spawn(move || relay(client, target, &u, &e, &s));
            }
        });
        FaultProxy {
            port,
            up,
            epoch,
            stop,
        }
    }

    /// Cuts the link.
    pub fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Restores it; connections made before are closed.
    pub fn up(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Relays one connection until either side closes, the link is restored after a cut (the
/// connection is then closed) or the proxy stops. Down: nothing moves.
fn relay(
    client: std::net::TcpStream,
    target: u16,
    up: &std::sync::atomic::AtomicBool,
    epoch: &std::sync::atomic::AtomicU64,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::io::{ErrorKind, Read, Write};
    use std::sync::atomic::Ordering;
    let born = epoch.load(Ordering::SeqCst);
    let alive = || !stop.load(Ordering::Relaxed) && epoch.load(Ordering::SeqCst) == born;
    // A connection made while down hangs until the link is back (then it is closed).
    while !up.load(Ordering::SeqCst) {
        if !alive() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if !alive() {
        return;
    }
    let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    // One pump per direction; each checks the link state between reads.
    let pump = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
        let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if !alive() {
                let _ = from.shutdown(std::net::Shutdown::Both);
                let _ = to.shutdown(std::net::Shutdown::Both);
                return;
            }
            if !up.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            match from.read(&mut buf) {
                Ok(0) => {
                    let _ = to.shutdown(std::net::Shutdown::Write);
                    return;
                }
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        }
    };
    std::thread::scope(|sc| {
        sc.spawn(|| pump(client, server));
        sc.spawn(|| pump(s2, c2));
    });
}
