//! Serial-line instruments: a port read line by line and decoded by a protocol (NMEA 0183,
//! or the configurable ASCII line parser in [`lines`]), or captured raw as blobs.
//!
//! Invariants:
//! - A line is at most [`MAX_LINE`] bytes; a longer run without a newline is a framing
//!   error and is skipped to the next newline, so a babbling device cannot grow memory.
//! - Every line that does not decode is counted by kind (`checksum_errors`,
//!   `framing_errors`, `field_errors`) and kept in the driver's recent errors; the counts
//!   are also sent as readings every `counters_every`, so they reach the fleet.
//! - A read error or end of file (an unplugged adapter, a vanished pty) closes the port;
//!   it is opened again with a doubling backoff, without restarting the agent.
//! - No bytes for `silence` marks the driver failing until data arrives again.

pub mod config;
pub mod lines;
pub mod nmea;
pub mod port;
pub mod sim;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

pub use config::{CaptureSettings, Protocol, SerialConfig, SerialConfigRaw};

use crate::driver::{BoxFuture, Driver, DriverContext, DriverError, doubling_backoff};
use crate::reading::{Quality, Reading, TimeQuality, Timestamp, Value};
use nmea::{NmeaError, Sentence};

/// Longest line kept.
pub const MAX_LINE: usize = 1024;
const REOPEN_FIRST: Duration = Duration::from_millis(250);
const REOPEN_MAX: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct SerialDriver {
    name: Arc<str>,
    config: SerialConfig,
}

impl SerialDriver {
    pub fn new(name: &str, config: &SerialConfig) -> Self {
        Self {
            name: Arc::from(name),
            config: config.clone(),
        }
    }
}

/// Counts of what came over the line, sent as readings.
#[derive(Debug, Default)]
struct Counts {
    decoded: u64,
    checksum_errors: u64,
    framing_errors: u64,
    field_errors: u64,
}

/// The UTC instant an RMC or ZDA sentence names.
fn gps_instant(date: Option<(u16, u8, u8)>, time: Option<nmea::TimeOfDay>) -> Option<Timestamp> {
    let ((y, mo, d), t) = (date?, time?);
    let whole = t.second.trunc();
    let nanos = ((t.second - whole) * 1e9).round() as u32;
    chrono::NaiveDate::from_ymd_opt(i32::from(y), u32::from(mo), u32::from(d))?
        .and_hms_nano_opt(
            u32::from(t.hour),
            u32::from(t.minute),
            whole as u32,
            nanos.min(999_999_999),
        )?
        .and_utc()
        .timestamp_nanos_opt()
        .map(Timestamp)
}

/// Readings from one decoded NMEA sentence, read at `now`.
///
/// `clock_offset` (RMC with a valid fix, ZDA) is the gateway's clock minus the time the
/// receiver names, in seconds: it includes the sentence's serial latency (typically
/// 0.1-1 s after the second it names), so it shows a clock that is off by seconds, not
/// milliseconds; PPS is the way to the latter.
fn nmea_readings(s: &Sentence, now: Timestamp) -> Vec<(&'static str, Value, Option<&'static str>)> {
    let mut out = Vec::new();
    let mut num = |ch: &'static str, v: Option<f64>, unit: Option<&'static str>| {
        if let Some(v) = v {
            out.push((ch, Value::Number(v), unit));
        }
    };
    match s {
        Sentence::Gga(g) => {
            num("latitude", g.latitude, Some("deg"));
            num("longitude", g.longitude, Some("deg"));
            num("altitude", g.altitude, Some("m"));
            num("hdop", g.hdop, None);
            out.push((
                "fix_quality",
                Value::Integer(i64::from(g.fix_quality)),
                None,
            ));
            if let Some(n) = g.satellites {
                out.push(("satellites", Value::Integer(i64::from(n)), None));
            }
        }
        Sentence::Rmc(r) => {
            num("speed", r.speed_knots, Some("kn"));
            num("course", r.course_deg, Some("deg"));
            if r.valid {
                let offset = gps_instant(r.date, r.time).map(|g| (now.0 - g.0) as f64 / 1e9);
                num("clock_offset", offset, Some("s"));
            }
            out.push(("fix_valid", Value::Bool(r.valid), None));
        }
        Sentence::Gsa(g) => {
            num("pdop", g.pdop, None);
            num("vdop", g.vdop, None);
            out.push(("fix_type", Value::Integer(i64::from(g.fix_type)), None));
            out.push((
                "satellites_used",
                Value::Integer(i64::from(g.satellites_used)),
                None,
            ));
        }
        Sentence::Zda(z) => {
            let offset = gps_instant(z.date, z.time).map(|g| (now.0 - g.0) as f64 / 1e9);
            num("clock_offset", offset, Some("s"));
        }
        Sentence::Other(_) => {}
    }
    out
}

impl SerialDriver {
    fn reading(
        &self,
        channel: &str,
        value: Value,
        unit: Option<&str>,
        now: (Timestamp, TimeQuality),
    ) -> Reading {
        Reading::good(
            self.name.clone(),
            Arc::from(channel),
            now,
            value,
            unit.map(Arc::from),
        )
    }

    /// Counts a line that gave nothing, and keeps why.
    fn reject(
        &self,
        counter: &'static str,
        n: &mut u64,
        why: String,
        text: &str,
        ctx: &DriverContext,
    ) {
        *n += 1;
        ctx.health.count(counter, 1);
        let shown: String = text.chars().take(60).collect();
        ctx.health.error(format!("{why}: {shown:?}"));
    }

    /// Decodes one line; the readings it gives, after counting what went wrong.
    fn decode(&self, line: &[u8], counts: &mut Counts, ctx: &DriverContext) -> Vec<Reading> {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            return Vec::new();
        }
        let now = ctx.clock.now();
        if let Some(parser) = &self.config.lines {
            return match parser.parse(text) {
                Ok(values) => {
                    counts.decoded += 1;
                    values
                        .into_iter()
                        .map(|(ch, v)| {
                            let unit = parser.channels[ch].unit.as_deref();
                            match v {
                                Ok(v) => self.reading(ch, v, unit, now),
                                Err(why) => {
                                    counts.field_errors += 1;
                                    ctx.health.count("field_errors", 1);
                                    Reading {
                                        quality: Quality::Bad(why),
                                        ..self.reading(ch, Value::Number(f64::NAN), unit, now)
                                    }
                                }
                            }
                        })
                        .collect()
                }
                Err(e) => {
                    self.reject(
                        "framing_errors",
                        &mut counts.framing_errors,
                        e.to_string(),
                        text,
                        ctx,
                    );
                    Vec::new()
                }
            };
        }
        match nmea::parse(text) {
            Ok(s) => {
                counts.decoded += 1;
                nmea_readings(&s, now.0)
                    .into_iter()
                    .map(|(ch, v, unit)| self.reading(ch, v, unit, now))
                    .collect()
            }
            Err(e) => {
                let (counter, n) = match e {
                    NmeaError::BadChecksum { .. } => {
                        ("checksum_errors", &mut counts.checksum_errors)
                    }
                    NmeaError::Field { .. } => ("field_errors", &mut counts.field_errors),
                    _ => ("framing_errors", &mut counts.framing_errors),
                };
                self.reject(counter, n, e.to_string(), text, ctx);
                Vec::new()
            }
        }
    }

    fn count_readings(&self, c: &Counts, now: (Timestamp, TimeQuality)) -> Vec<Reading> {
        [
            ("decoded", c.decoded),
            ("checksum_errors", c.checksum_errors),
            ("framing_errors", c.framing_errors),
            ("field_errors", c.field_errors),
        ]
        .into_iter()
        .map(|(ch, n)| self.reading(ch, Value::Integer(n as i64), None, now))
        .collect()
    }
}

impl Driver for SerialDriver {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<Result<(), DriverError>> {
        Box::pin(async move {
            let cfg = &self.config;
            let mut counts = Counts::default();
            let mut failures = 0u32;
            let mut counters_tick = tokio::time::interval(cfg.counters_every);
            counters_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let opened = if cfg.simulate {
                    Ok(Box::new(sim::spawn(cfg.protocol)) as Port)
                } else {
                    cfg.line.open().map(|p| Box::new(p) as Port)
                };
                let port = match opened {
                    Ok(p) => p,
                    Err(e) => {
                        failures += 1;
                        ctx.health.count("open_failures", 1);
                        ctx.health.error(format!("cannot open the port: {e}"));
                        let wait = doubling_backoff(REOPEN_FIRST, failures + 1, REOPEN_MAX);
                        tokio::select! {
                            _ = ctx.cancel.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(wait) => continue,
                        }
                    }
                };
                tracing::info!(driver = %self.name, port = %cfg.line.path, "serial port open");
                failures = 0;
                let flow = match &cfg.capture {
                    Some(c) => self.capture(port, c, &ctx).await,
                    None => {
                        self.read_lines(port, &ctx, &mut counts, &mut counters_tick)
                            .await
                    }
                };
                if flow == Flow::Stop {
                    return Ok(());
                }
                // Let a vanished device settle before opening it again.
                tokio::select! {
                    _ = ctx.cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        })
    }
}

/// Where bytes come from: a serial port, or a simulated instrument.
type Port = Box<dyn tokio::io::AsyncRead + Unpin + Send>;

/// How a read loop ended.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    /// Cancelled, or the agent stopped taking readings.
    Stop,
    /// The port failed: open it again.
    Reopen,
}

impl SerialDriver {
    /// Reads lines and decodes them until the port fails or the driver stops.
    async fn read_lines(
        &self,
        port: Port,
        ctx: &DriverContext,
        counts: &mut Counts,
        counters_tick: &mut tokio::time::Interval,
    ) -> Flow {
        let cfg = &self.config;
        let mut reader = BufReader::new(port);
        let mut line = Vec::with_capacity(256);
        let mut skipping = false;
        loop {
            // A read cut short by the counters tick leaves its bytes in `line`
            // (read_until is cancel safe that way): only a finished line clears it.
            let room = (MAX_LINE - line.len().min(MAX_LINE)) as u64;
            let mut limited = (&mut reader).take(room);
            let got = tokio::select! {
                _ = ctx.cancel.cancelled() => return Flow::Stop,
                _ = counters_tick.tick() => {
                    for r in self.count_readings(counts, ctx.clock.now()) {
                        if ctx.out.send(r).await.is_err() {
                            return Flow::Stop;
                        }
                    }
                    continue;
                }
                r = tokio::time::timeout(cfg.silence, limited.read_until(b'\n', &mut line)) => r,
            };
            match got {
                Err(_) => {
                    ctx.health.error(format!("no data for {:?}", cfg.silence));
                    continue;
                }
                Ok(Err(e)) => {
                    ctx.health.count("io_errors", 1);
                    ctx.health
                        .error(format!("read failed: {e}; reopening the port"));
                    return Flow::Reopen;
                }
                Ok(Ok(0)) => {
                    ctx.health.error("the port closed; reopening it");
                    return Flow::Reopen;
                }
                Ok(Ok(_)) => {}
            }
            let complete = line.ends_with(b"\n");
            if skipping {
                // The tail of an overlong line: dropped, already counted.
                skipping = !complete;
                line.clear();
                continue;
            }
            if !complete {
                if line.len() >= MAX_LINE {
                    counts.framing_errors += 1;
                    ctx.health.count("framing_errors", 1);
                    ctx.health
                        .error(format!("a line longer than {MAX_LINE} bytes"));
                    skipping = true;
                    line.clear();
                }
                continue;
            }
            let readings = self.decode(&line, counts, ctx);
            line.clear();
            if !readings.is_empty() {
                ctx.health.ok();
            }
            for r in readings {
                if ctx.out.send(r).await.is_err() {
                    return Flow::Stop;
                }
            }
        }
    }

    /// Raw capture: the byte stream as blobs of at most `chunk_bytes`, each sent when full
    /// or `chunk_age` after its first byte, and whatever is held when the port fails or
    /// the driver stops, so no captured byte is dropped.
    async fn capture(&self, mut port: Port, c: &CaptureSettings, ctx: &DriverContext) -> Flow {
        let mut held: Vec<u8> = Vec::new();
        let mut first: Option<(Timestamp, TimeQuality)> = None;
        let mut due = tokio::time::Instant::now();
        let mut chunk = vec![0u8; 4096];
        loop {
            let flow = tokio::select! {
                _ = ctx.cancel.cancelled() => Some(Flow::Stop),
                _ = tokio::time::sleep_until(due), if !held.is_empty() => None,
                // Never read past the chunk size: a blob is at most `chunk_bytes`.
                r = port.read(&mut chunk[..(c.chunk_bytes - held.len()).min(4096)]) => match r {
                    Ok(0) => {
                        ctx.health.error("the port closed; reopening it");
                        Some(Flow::Reopen)
                    }
                    Ok(n) => {
                        if held.is_empty() {
                            first = Some(ctx.clock.now());
                            due = tokio::time::Instant::now() + c.chunk_age;
                        }
                        held.extend_from_slice(&chunk[..n]);
                        ctx.health.count("bytes", n as u64);
                        ctx.health.ok();
                        if held.len() < c.chunk_bytes {
                            continue;
                        }
                        None
                    }
                    Err(e) => {
                        ctx.health.count("io_errors", 1);
                        ctx.health.error(format!("read failed: {e}; reopening the port"));
                        Some(Flow::Reopen)
                    }
                },
            };
            if let Some(now) = first.take()
                && !held.is_empty()
            {
                let data = bytes::Bytes::from(std::mem::take(&mut held));
                let name = format!("{}-{}.bin", self.name, now.0.as_nanos());
                let blob = Value::Blob(crate::reading::Blob::new(
                    "application/octet-stream",
                    Some(name),
                    data,
                ));
                if ctx
                    .out
                    .send(self.reading("capture", blob, None, now))
                    .await
                    .is_err()
                {
                    return Flow::Stop;
                }
            }
            if let Some(f) = flow {
                return f;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_rmc_and_a_zda_give_the_clock_offset_against_the_receiver() {
        let sentence =
            |body: &str| nmea::parse(nmea::sentence(body).trim_end()).expect("valid sentence");
        let rmc = sentence("GPRMC,123519.50,A,2437.6320,S,07024.2880,W,0.0,0.0,221126,,");
        // 2026-11-22T12:35:19.5Z, and a gateway clock 0.25 s ahead of it.
        let gps = Timestamp(1_795_350_919_500_000_000);
        let now = Timestamp(gps.0 + 250_000_000);
        let values = nmea_readings(&rmc, now);
        let offset = values
            .iter()
            .find(|(ch, _, _)| *ch == "clock_offset")
            .expect("clock_offset");
        assert_eq!(offset.1, Value::Number(0.25));
        assert_eq!(offset.2, Some("s"));
        let no_fix = sentence("GPRMC,123519.50,V,,,,,,,221126,,");
        assert!(
            !nmea_readings(&no_fix, now)
                .iter()
                .any(|(ch, _, _)| *ch == "clock_offset"),
            "no offset without a valid fix"
        );
    }
}
