//! Modbus RTU and TCP: one driver instance per line (a TCP endpoint or a serial port),
//! polling the devices configured on it.
//!
//! Invariants:
//! - Devices on one line are polled in turn by one task, never concurrently (an RS-485
//!   bus carries one conversation at a time); each device has its own poll interval.
//! - Each poll reads the device's points in as few requests as [`decode::plan`] allows.
//! - Every configured point yields a reading per poll: its value, or `quality = bad`
//!   with the reason (exception code, timeout, frame error, decode error). A device that
//!   does not answer is tried again with a backoff doubling up to `backoff_max`.
//! - An I/O error drops the connection (a USB adapter unplugged, a pty gone); the next
//!   poll opens it again, so an adapter that comes back is used without a restart.
//!   Consecutive timeouts on every device also reopen it.
//!
//! Readings are named `<device>.<point>`; the source is the driver's name.

pub mod config;
pub mod decode;
pub mod station;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::slave::{Slave, SlaveContext};

pub use config::{ModbusConfig, ModbusConfigRaw, Transport};

use crate::driver::{BoxFuture, Driver, DriverContext, DriverError, doubling_backoff};
use crate::reading::{Quality, Reading, Value};
use decode::{Request, Table};

/// Timeouts in a row, over all devices, after which the line is opened again.
const REOPEN_AFTER_TIMEOUTS: u32 = 3;

#[derive(Debug)]
pub struct ModbusDriver {
    name: Arc<str>,
    config: ModbusConfig,
}

impl ModbusDriver {
    pub fn new(name: &str, config: &ModbusConfig) -> Self {
        Self {
            name: Arc::from(name),
            config: config.clone(),
        }
    }
}

/// How one read ended.
#[derive(Debug)]
enum ReadError {
    Exception(tokio_modbus::ExceptionCode),
    Timeout,
    /// CRC or framing trouble, or an answer that does not match the request.
    Frame(String),
    /// The line itself failed: reopen it.
    Io(std::io::Error),
}

impl ReadError {
    fn reason(&self) -> String {
        match self {
            ReadError::Exception(e) => format!("exception {}: {e}", u8::from(*e)),
            ReadError::Timeout => "no answer (timeout)".into(),
            ReadError::Frame(m) => format!("bad frame: {m}"),
            ReadError::Io(e) => format!("line error: {e}"),
        }
    }

    fn counter(&self) -> &'static str {
        match self {
            ReadError::Exception(_) => "exceptions",
            ReadError::Timeout => "timeouts",
            ReadError::Frame(_) => "frame_errors",
            ReadError::Io(_) => "io_errors",
        }
    }
}

/// What a read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Words {
    Registers(Vec<u16>),
    Bits(Vec<bool>),
}

/// One read outside the poll loop, for `skygate probe modbus`: opens the line, reads
/// `count` registers or bits of `table` from `unit` at `address`, and says why not when
/// it cannot (exception, timeout, frame or line error).
pub async fn probe(
    t: &Transport,
    unit: u8,
    table: Table,
    address: u16,
    count: u16,
    timeout: Duration,
) -> Result<Words, String> {
    let mut ctx = open(t, timeout)
        .await
        .map_err(|e| format!("cannot open the line: {e}"))?;
    ctx.set_slave(Slave(unit));
    let r = Request {
        table,
        address,
        count,
        points: Vec::new(),
    };
    read_once(&mut ctx, &r, timeout)
        .await
        .map_err(|e| e.reason())
}

async fn open(t: &Transport, timeout: Duration) -> std::io::Result<Context> {
    let connect = async {
        match t {
            Transport::Simulator => Err(std::io::Error::other(
                "the simulator is started by the driver; it has no address of its own",
            )),
            Transport::Tcp { host, port } => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                Ok(tokio_modbus::client::tcp::attach(stream))
            }
            Transport::Rtu(line) => {
                let port = line.open()?;
                Ok(tokio_modbus::client::rtu::attach(port))
            }
        }
    };
    tokio::time::timeout(timeout.max(Duration::from_secs(1)), connect)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

async fn read_once(ctx: &mut Context, r: &Request, timeout: Duration) -> Result<Words, ReadError> {
    let call = async {
        match r.table {
            Table::Coil => ctx
                .read_coils(r.address, r.count)
                .await
                .map(|x| x.map(Words::Bits)),
            Table::Discrete => ctx
                .read_discrete_inputs(r.address, r.count)
                .await
                .map(|x| x.map(Words::Bits)),
            Table::Holding => ctx
                .read_holding_registers(r.address, r.count)
                .await
                .map(|x| x.map(Words::Registers)),
            Table::Input => ctx
                .read_input_registers(r.address, r.count)
                .await
                .map(|x| x.map(Words::Registers)),
        }
    };
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(ReadError::Timeout),
        Ok(Ok(Ok(w))) => Ok(w),
        Ok(Ok(Err(exception))) => Err(ReadError::Exception(exception)),
        Ok(Err(tokio_modbus::Error::Protocol(e))) => Err(ReadError::Frame(e.to_string())),
        Ok(Err(tokio_modbus::Error::Transport(e)))
            if e.kind() == std::io::ErrorKind::InvalidData =>
        {
            Err(ReadError::Frame(e.to_string()))
        }
        Ok(Err(tokio_modbus::Error::Transport(e))) => Err(ReadError::Io(e)),
    }
}

/// Per-device poll state.
#[derive(Debug)]
struct Schedule {
    next: Instant,
    failures: u32,
}

impl Driver for ModbusDriver {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<Result<(), DriverError>> {
        Box::pin(async move {
            // A simulated device: serve it on loopback and poll it like any TCP device.
            let mut config = self.config.clone();
            if config.transport == Transport::Simulator {
                let addr = station::spawn(ctx.cancel.child_token())
                    .await
                    .map_err(|e| DriverError::Fatal {
                        driver: self.name.to_string(),
                        message: format!("cannot start the simulated station: {e}"),
                    })?;
                config.transport = Transport::Tcp {
                    host: addr.ip().to_string(),
                    port: addr.port(),
                };
            }
            let cfg = &config;
            // Channel name (`<device>.<point>`) and unit of every point, made once.
            let names: Vec<Vec<PointName>> = cfg
                .devices
                .iter()
                .map(|d| {
                    d.points
                        .iter()
                        .map(|p| {
                            (
                                Arc::from(format!("{}.{}", d.name, p.channel)),
                                p.unit.as_deref().map(Arc::from),
                            )
                        })
                        .collect()
                })
                .collect();
            let start = Instant::now();
            let mut sched: Vec<Schedule> = cfg
                .devices
                .iter()
                .map(|_| Schedule {
                    next: start,
                    failures: 0,
                })
                .collect();
            let mut line: Option<Context> = None;
            let mut line_failures = 0u32;
            let mut timeouts_in_a_row = 0u32;
            loop {
                let (i, due) = sched
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.next)
                    .map(|(i, s)| (i, s.next))
                    .unwrap_or((0, Instant::now()));
                tokio::select! {
                    biased;
                    _ = ctx.cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep_until(due) => {}
                }
                let conn = match &mut line {
                    Some(c) => c,
                    None => match open(&cfg.transport, cfg.timeout).await {
                        Ok(c) => {
                            line_failures = 0;
                            tracing::info!(driver = %self.name, "modbus line open");
                            line.insert(c)
                        }
                        Err(e) => {
                            line_failures += 1;
                            ctx.health.error(format!("cannot open the line: {e}"));
                            ctx.health.count("open_failures", 1);
                            let wait =
                                doubling_backoff(cfg.timeout, line_failures, cfg.backoff_max);
                            for s in &mut sched {
                                s.next = s.next.max(Instant::now() + wait);
                            }
                            continue;
                        }
                    },
                };
                let dev = &cfg.devices[i];
                let now = ctx.clock.now();
                let poll = poll_device(conn, dev, cfg, &names[i], &ctx).await;
                timeouts_in_a_row =
                    poll.timeouts_since_data + if poll.got_data { 0 } else { timeouts_in_a_row };
                for (pi, v) in poll.values.into_iter().enumerate() {
                    let (value, quality) = match v {
                        Some(Ok(v)) => (v, Quality::Good),
                        Some(Err(reason)) => (Value::Number(f64::NAN), Quality::Bad(reason)),
                        None => (
                            Value::Number(f64::NAN),
                            Quality::Bad("not read: the line failed".into()),
                        ),
                    };
                    let (channel, unit) = &names[i][pi];
                    let reading = Reading {
                        quality,
                        ..Reading::good(
                            self.name.clone(),
                            channel.clone(),
                            now,
                            value,
                            unit.clone(),
                        )
                    };
                    if ctx.out.send(reading).await.is_err() {
                        return Ok(());
                    }
                }
                let s = &mut sched[i];
                if poll.answered {
                    s.failures = 0;
                    if !poll.line_failed {
                        ctx.health.ok();
                    }
                    // Keep the cadence; skip polls missed while the line was busy.
                    s.next += dev.poll;
                    if s.next < Instant::now() {
                        s.next = Instant::now() + dev.poll;
                    }
                } else {
                    s.failures += 1;
                    s.next =
                        Instant::now() + doubling_backoff(dev.poll, s.failures, cfg.backoff_max);
                }
                if poll.line_failed
                    || timeouts_in_a_row >= REOPEN_AFTER_TIMEOUTS * cfg.devices.len() as u32
                {
                    tracing::warn!(driver = %self.name, "modbus line dropped; reopening it");
                    line = None;
                    timeouts_in_a_row = 0;
                }
            }
        })
    }
}

/// A point's channel name (`<device>.<point>`) and unit.
type PointName = (Arc<str>, Option<Arc<str>>);

/// What one poll of one device gave.
#[derive(Debug)]
struct Poll {
    /// Per point: its value, why not, or `None` when the line failed before its read.
    values: Vec<Option<Result<Value, String>>>,
    /// The device said something (data or an exception).
    answered: bool,
    /// Some read returned data.
    got_data: bool,
    /// Reads that timed out (after their retries) since the last one that returned data.
    timeouts_since_data: u32,
    /// The line itself failed: reopen it.
    line_failed: bool,
}

/// Reads a device's requests in turn, retrying timeouts, and decodes its points.
async fn poll_device(
    conn: &mut Context,
    dev: &config::DeviceConfig,
    cfg: &ModbusConfig,
    names: &[PointName],
    ctx: &DriverContext,
) -> Poll {
    conn.set_slave(Slave(dev.unit));
    let mut poll = Poll {
        values: vec![None; dev.points.len()],
        answered: false,
        got_data: false,
        timeouts_since_data: 0,
        line_failed: false,
    };
    for r in &dev.requests {
        let mut attempt = 0;
        let res = loop {
            match read_once(conn, r, cfg.timeout).await {
                Err(ReadError::Timeout) if attempt < cfg.retries => {
                    // Every attempt that timed out is counted, retried or not.
                    ctx.health.count("timeouts", 1);
                    attempt += 1;
                }
                other => break other,
            }
        };
        let words = match res {
            Ok(words) => words,
            Err(e) => {
                // An exception is an answer, just not with data.
                poll.answered |= matches!(e, ReadError::Exception(_));
                poll.timeouts_since_data += u32::from(matches!(e, ReadError::Timeout));
                let reason = e.reason();
                ctx.health.count(e.counter(), 1);
                ctx.health.error(format!(
                    "{} unit {} {:?} {}+{}: {reason}",
                    dev.name, dev.unit, r.table, r.address, r.count
                ));
                for &pi in &r.points {
                    poll.values[pi] = Some(Err(reason.clone()));
                }
                if matches!(e, ReadError::Io(_)) {
                    poll.line_failed = true;
                    break;
                }
                continue;
            }
        };
        poll.answered = true;
        poll.got_data = true;
        poll.timeouts_since_data = 0;
        for &pi in &r.points {
            let p = &dev.points[pi];
            let off = usize::from(p.address - r.address);
            let v = match &words {
                Words::Bits(b) => b
                    .get(off)
                    .map(|x| Value::Bool(*x))
                    .ok_or_else(|| "short answer".to_string()),
                Words::Registers(w) => w
                    .get(off..off + usize::from(p.count()))
                    .ok_or_else(|| "short answer".to_string())
                    .and_then(|s| p.decode_words(s).map_err(|e| e.to_string())),
            };
            if let Err(e) = &v {
                ctx.health.count("decode_errors", 1);
                ctx.health.error(format!("{}: {e}", names[pi].0));
            }
            poll.values[pi] = Some(v);
        }
    }
    poll
}
