//! Simulated serial instruments for demos and the embedded default: a GPS receiver
//! speaking NMEA 0183 and a Unihedron SQM-LE sky-quality meter printing its `rx` answer.
//! Their bytes go through an in-memory pipe into the same line reader and parsers a
//! real port feeds, so the simulation exercises everything but the UART.
//!
//! The GPS sends GGA, RMC, GSA and ZDA once a second with the current UTC time near
//! Cerro Paranal; one cycle in a hundred carries a corrupted checksum, so the counters a
//! technician watches are not always zero. The SQM prints a reading every 2 seconds.

use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWriteExt};

use super::config::Protocol;

/// Starts the instrument for `protocol`; it stops when the returned reader is dropped.
pub fn spawn(protocol: Protocol) -> impl AsyncRead + Unpin + Send + 'static {
    let (mut w, r) = tokio::io::duplex(16 * 1024);
    tokio::spawn(async move {
        let period = match protocol {
            Protocol::Nmea => Duration::from_secs(1),
            _ => Duration::from_secs(2),
        };
        let mut tick = tokio::time::interval(period);
        for cycle in 0u64.. {
            tick.tick().await;
            let text = match protocol {
                Protocol::Nmea => gps_cycle(cycle, SystemTime::now()),
                _ => sqm_line(cycle),
            };
            // The driver dropped its end: the simulated instrument is switched off.
            if w.write_all(text.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    r
}

fn sentence(body: &str, corrupt: bool) -> String {
    let sum = super::nmea::checksum(body) ^ u8::from(corrupt);
    format!("${body}*{sum:02X}\r\n")
}

/// `ddmm.mmmm,H` for latitude (2 degree digits) or longitude (3).
fn coord(v: f64, deg_digits: usize, pos: char, neg: char) -> String {
    let a = v.abs();
    let deg = a.trunc();
    let min = (a - deg) * 60.0;
    format!(
        "{:0w$}{:07.4},{}",
        deg as u32,
        min,
        if v < 0.0 { neg } else { pos },
        w = deg_digits
    )
}

/// One second of a GPS receiver: GGA, RMC, GSA, ZDA for time `now`.
pub fn gps_cycle(cycle: u64, now: SystemTime) -> String {
    let t = chrono::DateTime::<chrono::Utc>::from(now);
    let hms = t.format("%H%M%S%.3f").to_string();
    let hms = &hms[..hms.len() - 1]; // hundredths, as receivers print them
    let wander = (cycle as f64 / 90.0).sin() * 0.000_02;
    let (lat, lon) = (-24.6272 + wander, -70.4048 - wander);
    let sats = 9 + (cycle / 30 % 4) as u8;
    let (lat, lon) = (coord(lat, 2, 'N', 'S'), coord(lon, 3, 'E', 'W'));
    let corrupt = cycle % 100 == 99;
    [
        sentence(
            &format!("GPGGA,{hms},{lat},{lon},1,{sats:02},0.9,2635.0,M,35.1,M,,"),
            corrupt,
        ),
        sentence(
            &format!("GPRMC,{hms},A,{lat},{lon},0.0,0.0,{},,", t.format("%d%m%y")),
            false,
        ),
        sentence("GPGSA,A,3,04,05,09,12,24,25,29,31,,,,,1.6,0.9,1.3", false),
        sentence(
            &format!("GPZDA,{hms},{},00,00", t.format("%d,%m,%Y")),
            false,
        ),
    ]
    .concat()
}

/// One SQM-LE `rx` answer: sky brightness (mag/arcsec²), frequency, counts, period,
/// sensor temperature.
pub fn sqm_line(cycle: u64) -> String {
    let mpsas = 21.2 + 0.3 * (cycle as f64 / 120.0).sin();
    let temp = 12.0 - 0.5 * (cycle as f64 / 600.0).sin();
    format!("r, {mpsas:05.2}m,0000000022Hz,0000000000c,0000000.000s, {temp:05.1}C\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serial::nmea::{Sentence, parse};

    #[test]
    fn the_simulated_gps_speaks_valid_nmea_with_the_time_it_was_asked() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_350_919_500);
        let text = gps_cycle(0, now);
        let parsed: Vec<Sentence> = text
            .lines()
            .map(|l| parse(l).expect("valid sentence"))
            .collect();
        assert_eq!(parsed.len(), 4);
        match &parsed[1] {
            Sentence::Rmc(r) => {
                assert!(r.valid);
                assert_eq!(r.date, Some((2026, 11, 22)));
                let t = r.time.expect("time");
                assert_eq!((t.hour, t.minute, t.second), (12, 35, 19.5));
                assert!((r.latitude.expect("lat") + 24.6272).abs() < 0.001);
                assert!((r.longitude.expect("lon") + 70.4048).abs() < 0.001);
            }
            other => panic!("not RMC: {other:?}"),
        }
        let bad = gps_cycle(99, now);
        assert!(
            parse(bad.lines().next().expect("line")).is_err(),
            "cycle 99 is corrupted"
        );
    }

    #[test]
    fn the_simulated_sqm_matches_the_documented_answer_format() {
        let line = sqm_line(0);
        let re = regex::Regex::new(
            r"^r,\s*(?P<mpsas>-?\d+\.\d+)m,\s*(?P<freq>\d+)Hz,\s*(?P<counts>\d+)c,\s*\d+\.\d+s,\s*(?P<temp>-?\d+\.\d+)C",
        )
        .expect("regex");
        let caps = re.captures(&line).expect("matches");
        assert_eq!(&caps["mpsas"], "21.20");
        assert_eq!(&caps["temp"], "012.0");
    }
}
