//! Driver overhead against real peers.
//!
//! **Modbus**, against the pymodbus 3.16.1 TCP station of the tests. Ceiling: a raw
//! tokio-modbus loop reading the station's 23 holding registers back to
//! back. Then the Modbus driver polling the same registers (all 12 points decoded) on two
//! units every 10 ms (its shortest poll), in the same process and run. Printed: requests
//! per second, CPU per request of this process (the device is another process), and the
//! ratios. A driver poll that costs little more CPU than the bare request is the goal:
//! on a gateway the instrument, not the agent, should be the limit.
//!
//! **Serial**: NMEA sentences pushed through a pty (socat) as fast as `yes` writes them,
//! decoded by the serial driver; the driver's CPU per line against the time the same line
//! takes on the wire at 115200 baud (8N1: 10 bits a byte). The target is under 1%.
//!
//!     cargo run --release -p skygate-e2e --bin skygate-bench-drivers [-- --seconds 5]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use skygate_drivers::modbus::{ModbusConfigRaw, ModbusDriver};
use skygate_drivers::serial::{SerialConfigRaw, SerialDriver};
use skygate_drivers::{Driver, DriverContext, ReadingSender, SystemClock};
use skygate_e2e::{Peer, free_port, peer_python, peers_dir, pty_pair};
use tokio_modbus::client::Reader;
use tokio_util::sync::CancellationToken;

/// This process's user + system CPU time, seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ")".
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime, stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks as f64 / rustix::param::clock_ticks_per_second() as f64
}

const POINTS: &str = r#"
points.u16 = { table = "holding", address = 0 }
points.i16 = { table = "holding", address = 1, type = "i16" }
points.u32 = { table = "holding", address = 2, type = "u32" }
points.i32 = { table = "holding", address = 4, type = "i32", word_order = "little" }
points.f32 = { table = "holding", address = 6, type = "f32", scale = 0.1 }
points.f32s = { table = "holding", address = 8, type = "f32", word_order = "little", byte_order = "little" }
points.f64 = { table = "holding", address = 10, type = "f64" }
points.u64 = { table = "holding", address = 14, type = "u64" }
points.model = { table = "holding", address = 18, type = "string", length = 4 }
points.low = { table = "holding", address = 22, type = "bits", bit = 0, bits = 4 }
points.b5 = { table = "holding", address = 22, type = "bits", bit = 5, bits = 1 }
points.b7 = { table = "holding", address = 22, type = "bits", bit = 7, bits = 1 }
"#;
const POINTS_PER_POLL: u64 = 12;

/// A driver running in this process, its readings counted by `count`.
struct Running {
    counted: Arc<AtomicU64>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), skygate_drivers::DriverError>>,
    consumer: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(
        driver: Box<dyn Driver>,
        count: impl Fn(&skygate_drivers::Reading) -> bool + Send + 'static,
    ) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<skygate_drivers::Envelope>(10_000);
        let counted = Arc::new(AtomicU64::new(0));
        let c = counted.clone();
        let consumer = tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if count(&e.reading) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let cancel = CancellationToken::new();
        let ctx = DriverContext {
            out: ReadingSender::new(tx),
            cancel: cancel.clone(),
            clock: Arc::new(SystemClock::default()),
            health: Default::default(),
        };
        let task = tokio::spawn(driver.run(ctx));
        Self {
            counted,
            cancel,
            task,
            consumer,
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
        self.consumer.abort();
    }
}

struct Phase {
    requests_per_s: f64,
    cpu_us_per_request: f64,
}

async fn raw_loop(port: u16, secs: f64) -> anyhow::Result<Phase> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let mut ctx = tokio_modbus::client::tcp::attach_slave(stream, tokio_modbus::Slave(1));
    let (t0, c0) = (Instant::now(), cpu_seconds());
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        let words = ctx.read_holding_registers(0, 23).await??;
        anyhow::ensure!(words.len() == 23, "short answer");
        n += 1;
    }
    let (dt, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
    Ok(Phase {
        requests_per_s: n as f64 / dt,
        cpu_us_per_request: cpu * 1e6 / n.max(1) as f64,
    })
}

async fn driver(port: u16, secs: f64) -> anyhow::Result<(Phase, f64)> {
    let cfg: ModbusConfigRaw = toml::from_str(&format!(
        "transport = \"tcp\"\nhost = \"127.0.0.1\"\nport = {port}\ntimeout = \"1s\"\n\
         [devices.a]\nunit = 1\npoll = \"10ms\"\n{}\n[devices.b]\nunit = 2\npoll = \"10ms\"\n{}",
        POINTS, POINTS
    ))
    .map_err(|e| anyhow::anyhow!("bench config: {e}"))?;
    let cfg = cfg
        .validate()
        .map_err(|e| anyhow::anyhow!("bench config: {e}"))?;
    let run = Running::start(Box::new(ModbusDriver::new("bench", &cfg)), |r| {
        r.quality.reason().is_none()
    });
    let readings = run.counted.clone();
    // Let it connect, then measure a window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (r0, t0, c0) = (
        readings.load(Ordering::Relaxed),
        Instant::now(),
        cpu_seconds(),
    );
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let (r1, dt, cpu) = (
        readings.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
        cpu_seconds() - c0,
    );
    run.stop().await;
    let polls = (r1 - r0) / POINTS_PER_POLL;
    Ok((
        Phase {
            requests_per_s: polls as f64 / dt,
            cpu_us_per_request: cpu * 1e6 / polls.max(1) as f64,
        },
        (r1 - r0) as f64 / dt,
    ))
}

/// An RMC sentence with its checksum (72 bytes with CRLF on the wire).
fn rmc() -> String {
    let body = "GPRMC,123519.00,A,2437.6320,S,07024.2880,W,0.0,0.0,221126,,";
    skygate_drivers::serial::nmea::sentence(body)
        .trim_end()
        .to_string()
}

struct SerialPhase {
    lines_per_s: f64,
    cpu_us_per_line: f64,
    wire_us_per_line: f64,
}

async fn serial(secs: f64) -> anyhow::Result<SerialPhase> {
    let dir = tempfile::tempdir()?;
    let (port, feed) = (dir.path().join("ttyGPS"), dir.path().join("ttyFEED"));
    let _socat = pty_pair(&port, &feed);
    let cfg: SerialConfigRaw = toml::from_str(&format!(
        "serial_port = \"{}\"\nbaud = 115200\nprotocol = \"nmea\"\ncounters_every = \"1h\"\n",
        port.display()
    ))?;
    let cfg = cfg
        .validate()
        .map_err(|e| anyhow::anyhow!("bench config: {e}"))?;
    // One `fix_valid` reading per decoded RMC line.
    let run = Running::start(Box::new(SerialDriver::new("gps", &cfg)), |r| {
        &*r.channel == "fix_valid"
    });
    let fixes = run.counted.clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // `yes` in its own process: its CPU is not counted as the driver's. It writes
    // `line\r\n` until killed.
    let line = rmc();
    let mut writer = std::process::Command::new("yes")
        .arg(format!("{line}\r"))
        .stdout(std::fs::OpenOptions::new().write(true).open(&feed)?)
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (n0, t0, c0) = (fixes.load(Ordering::Relaxed), Instant::now(), cpu_seconds());
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let (n1, dt, cpu) = (
        fixes.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
        cpu_seconds() - c0,
    );
    let _ = writer.kill();
    let _ = writer.wait();
    run.stop().await;
    let lines = (n1 - n0).max(1);
    Ok(SerialPhase {
        lines_per_s: lines as f64 / dt,
        cpu_us_per_line: cpu * 1e6 / lines as f64,
        wire_us_per_line: (line.len() + 2) as f64 * 10.0 / 115_200.0 * 1e6,
    })
}

fn main() -> anyhow::Result<()> {
    let secs = skygate_e2e::bench_seconds();
    let port = free_port();
    let device = peers_dir().join("modbus_device.py");
    let _peer = Peer::start(
        "pymodbus tcp",
        &peer_python(),
        &[
            device.to_str().unwrap_or_default(),
            "tcp",
            &port.to_string(),
        ],
        true,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!("skygate driver benchmark ({secs} s windows)");
    println!("\nModbus: pymodbus 3.16.1 station over loopback TCP");
    let raw = rt.block_on(raw_loop(port, secs))?;
    let (drv, readings_per_s) = rt.block_on(driver(port, secs))?;
    println!(
        "  {:<44} {:>12} {:>16}",
        "phase", "requests/s", "CPU us/request"
    );
    println!(
        "  {:<44} {:>12.0} {:>16.1}",
        "raw tokio-modbus loop (ceiling), back to back", raw.requests_per_s, raw.cpu_us_per_request
    );
    println!(
        "  {:<44} {:>12.0} {:>16.1}",
        "driver, 2 units x 10 ms poll, 12 points each", drv.requests_per_s, drv.cpu_us_per_request
    );
    println!("  driver readings/s (good quality)             {readings_per_s:>12.0}");
    println!(
        "  driver polls vs its 200/s schedule           {:>11.2}x",
        drv.requests_per_s / 200.0
    );
    println!(
        "  driver CPU per poll vs raw CPU per request   {:>11.2}x",
        drv.cpu_us_per_request / raw.cpu_us_per_request.max(f64::EPSILON)
    );

    let s = rt.block_on(serial(secs))?;
    println!("\nSerial: NMEA RMC lines through a pty, decoded by the serial driver");
    println!(
        "  lines/s decoded (as fast as the pty delivers) {:>11.0}",
        s.lines_per_s
    );
    println!(
        "  driver CPU per line                           {:>9.1} us",
        s.cpu_us_per_line
    );
    println!(
        "  the line's time on the wire at 115200 8N1     {:>9.1} us",
        s.wire_us_per_line
    );
    println!(
        "  driver CPU vs line time                       {:>10.2} %",
        100.0 * s.cpu_us_per_line / s.wire_us_per_line
    );
    Ok(())
}
