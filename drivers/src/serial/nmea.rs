//! NMEA 0183 sentences: framing, checksum, and the fields of GGA, RMC, ZDA and GSA.
//!
//! Pure: one line in, a [`Sentence`] or an [`NmeaError`] out. Any talker (`GP`, `GN`,
//! `GL`, ...) is accepted. Empty fields (a receiver without a fix sends many) are `None`,
//! never zero: a latitude of 0 is a place, an empty one is not.

/// Longest sentence accepted: the standard says 82 characters; receivers overrun it a little.
pub const MAX_SENTENCE: usize = 120;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NmeaError {
    #[error("no '$' or '!' at the start")]
    NoStart,
    #[error("longer than {MAX_SENTENCE} characters")]
    TooLong,
    #[error("no checksum")]
    NoChecksum,
    #[error("checksum {got:02X} where the data gives {want:02X}")]
    BadChecksum { want: u8, got: u8 },
    #[error("{sentence}: field {index} ({name}) {value:?} is not valid")]
    Field {
        sentence: &'static str,
        index: usize,
        name: &'static str,
        value: String,
    },
    #[error("not ASCII")]
    NotAscii,
}

/// UTC time of day from an `hhmmss.ss` field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeOfDay {
    pub hour: u8,
    pub minute: u8,
    pub second: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gga {
    pub time: Option<TimeOfDay>,
    /// Degrees, north positive.
    pub latitude: Option<f64>,
    /// Degrees, east positive.
    pub longitude: Option<f64>,
    /// 0 no fix, 1 GPS, 2 DGPS, 4 RTK fixed, 5 RTK float, 6 dead reckoning, ...
    pub fix_quality: u8,
    pub satellites: Option<u8>,
    pub hdop: Option<f64>,
    /// Metres above mean sea level.
    pub altitude: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rmc {
    pub time: Option<TimeOfDay>,
    /// `A`: the receiver vouches for the fix.
    pub valid: bool,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub speed_knots: Option<f64>,
    pub course_deg: Option<f64>,
    /// (year, month, day)
    pub date: Option<(u16, u8, u8)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Zda {
    pub time: Option<TimeOfDay>,
    pub date: Option<(u16, u8, u8)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gsa {
    /// 1 no fix, 2 2D, 3 3D.
    pub fix_type: u8,
    pub satellites_used: u8,
    pub pdop: Option<f64>,
    pub hdop: Option<f64>,
    pub vdop: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Sentence {
    Gga(Gga),
    Rmc(Rmc),
    Zda(Zda),
    Gsa(Gsa),
    /// A well-formed sentence of another type (GSV, VTG, ...): counted, not decoded.
    Other(String),
}

impl Sentence {
    pub fn kind(&self) -> &str {
        match self {
            Sentence::Gga(_) => "GGA",
            Sentence::Rmc(_) => "RMC",
            Sentence::Zda(_) => "ZDA",
            Sentence::Gsa(_) => "GSA",
            Sentence::Other(k) => k,
        }
    }
}

/// Parses one line (trailing `\r\n` allowed).
pub fn parse(line: &str) -> Result<Sentence, NmeaError> {
    let line = line.trim_end_matches(['\r', '\n']);
    if !line.is_ascii() {
        return Err(NmeaError::NotAscii);
    }
    if line.len() > MAX_SENTENCE {
        return Err(NmeaError::TooLong);
    }
    let body = line
        .strip_prefix('$')
        .or_else(|| line.strip_prefix('!'))
        .ok_or(NmeaError::NoStart)?;
    let (data, sum) = body.rsplit_once('*').ok_or(NmeaError::NoChecksum)?;
    let got = u8::from_str_radix(sum, 16).map_err(|_| NmeaError::NoChecksum)?;
    let want = checksum(data);
    if got != want || sum.len() != 2 {
        return Err(NmeaError::BadChecksum { want, got });
    }
    let f: Vec<&str> = data.split(',').collect();
    let address = f[0];
    // `GPGGA` -> `GGA`; proprietary `P...` sentences keep their whole address.
    let kind = if address.len() == 5 && !address.starts_with('P') {
        &address[2..]
    } else {
        address
    };
    let get = |i: usize| f.get(i).copied().unwrap_or("");
    Ok(match kind {
        "GGA" => {
            let s = "GGA";
            Sentence::Gga(Gga {
                time: time(s, 1, get(1))?,
                latitude: coord(s, 2, get(2), get(3), 'N', 'S')?,
                longitude: coord(s, 4, get(4), get(5), 'E', 'W')?,
                fix_quality: num(s, 6, "fix quality", get(6))?.unwrap_or(0),
                satellites: num(s, 7, "satellites", get(7))?,
                hdop: num(s, 8, "hdop", get(8))?,
                altitude: num(s, 9, "altitude", get(9))?,
            })
        }
        "RMC" => {
            let s = "RMC";
            Sentence::Rmc(Rmc {
                time: time(s, 1, get(1))?,
                valid: get(2) == "A",
                latitude: coord(s, 3, get(3), get(4), 'N', 'S')?,
                longitude: coord(s, 5, get(5), get(6), 'E', 'W')?,
                speed_knots: num(s, 7, "speed", get(7))?,
                course_deg: num(s, 8, "course", get(8))?,
                date: ddmmyy(s, 9, get(9))?,
            })
        }
        "ZDA" => {
            let s = "ZDA";
            let (d, m, y): (Option<u8>, Option<u8>, Option<u16>) = (
                num(s, 2, "day", get(2))?,
                num(s, 3, "month", get(3))?,
                num(s, 4, "year", get(4))?,
            );
            let date = match (y, m, d) {
                (Some(y), Some(m), Some(d)) if valid_date(y, m, d) => Some((y, m, d)),
                (None, None, None) => None,
                _ => {
                    return Err(field(
                        s,
                        2,
                        "date",
                        &format!("{}/{}/{}", get(2), get(3), get(4)),
                    ));
                }
            };
            Sentence::Zda(Zda {
                time: time(s, 1, get(1))?,
                date,
            })
        }
        "GSA" => {
            let s = "GSA";
            Sentence::Gsa(Gsa {
                fix_type: num(s, 2, "fix type", get(2))?.unwrap_or(1),
                satellites_used: (3..15).filter(|i| !get(*i).is_empty()).count() as u8,
                pdop: num(s, 15, "pdop", get(15))?,
                hdop: num(s, 16, "hdop", get(16))?,
                vdop: num(s, 17, "vdop", get(17))?,
            })
        }
        other => Sentence::Other(other.to_string()),
    })
}

fn field(sentence: &'static str, index: usize, name: &'static str, value: &str) -> NmeaError {
    NmeaError::Field {
        sentence,
        index,
        name,
        value: value.to_string(),
    }
}

fn num<T: std::str::FromStr>(
    s: &'static str,
    i: usize,
    name: &'static str,
    v: &str,
) -> Result<Option<T>, NmeaError> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| field(s, i, name, v))
}

fn time(s: &'static str, i: usize, v: &str) -> Result<Option<TimeOfDay>, NmeaError> {
    if v.is_empty() {
        return Ok(None);
    }
    let bad = || field(s, i, "time", v);
    if v.len() < 6 || !v.as_bytes()[..6].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let hour: u8 = v[0..2].parse().map_err(|_| bad())?;
    let minute: u8 = v[2..4].parse().map_err(|_| bad())?;
    let second: f64 = v[4..].parse().map_err(|_| bad())?;
    // 60 allows a leap second.
    if hour > 23 || minute > 59 || !(0.0..61.0).contains(&second) {
        return Err(bad());
    }
    Ok(Some(TimeOfDay {
        hour,
        minute,
        second,
    }))
}

/// `ddmm.mmmm` / `dddmm.mmmm` and a hemisphere into signed degrees.
fn coord(
    s: &'static str,
    i: usize,
    v: &str,
    hemi: &str,
    pos: char,
    neg: char,
) -> Result<Option<f64>, NmeaError> {
    if v.is_empty() && hemi.is_empty() {
        return Ok(None);
    }
    let bad = || field(s, i, "coordinate", &format!("{v},{hemi}"));
    let dot = v.find('.').unwrap_or(v.len());
    if dot < 3 {
        return Err(bad());
    }
    let deg: f64 = v[..dot - 2].parse().map_err(|_| bad())?;
    let min: f64 = v[dot - 2..].parse().map_err(|_| bad())?;
    let limit = if pos == 'N' { 90.0 } else { 180.0 };
    if !(0.0..60.0).contains(&min) || deg + min / 60.0 > limit {
        return Err(bad());
    }
    let value = deg + min / 60.0;
    match hemi.chars().next() {
        Some(c) if c == pos => Ok(Some(value)),
        Some(c) if c == neg => Ok(Some(-value)),
        _ => Err(bad()),
    }
}

fn valid_date(y: u16, m: u8, d: u8) -> bool {
    (1980..=2200).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d)
}

/// `ddmmyy`: years 80..99 are 1980s/90s, the rest 2000..2079 (GPS began in 1980).
fn ddmmyy(s: &'static str, i: usize, v: &str) -> Result<Option<(u16, u8, u8)>, NmeaError> {
    if v.is_empty() {
        return Ok(None);
    }
    let bad = || field(s, i, "date", v);
    if v.len() != 6 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let d: u8 = v[0..2].parse().map_err(|_| bad())?;
    let m: u8 = v[2..4].parse().map_err(|_| bad())?;
    let yy: u16 = v[4..6].parse().map_err(|_| bad())?;
    let y = if yy >= 80 { 1900 + yy } else { 2000 + yy };
    if !valid_date(y, m, d) {
        return Err(bad());
    }
    Ok(Some((y, m, d)))
}

/// The XOR of a sentence's bytes between `$` and `*`.
pub fn checksum(body: &str) -> u8 {
    body.bytes().fold(0u8, |a, b| a ^ b)
}

/// `$BODY*HH\r\n`: a sentence with its checksum, as a receiver sends it (simulators,
/// tests and benchmarks write these).
pub fn sentence(body: &str) -> String {
    format!("${body}*{:02X}\r\n", checksum(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Noise, and sentence-shaped text with a right checksum: parsed or refused.
        #[test]
        fn no_line_makes_the_nmea_parser_panic(
            noise in "\\PC{0,120}",
            talker in "(GP|GN|GL)(GGA|RMC|ZDA|GSA|GSV)",
            fields in proptest::collection::vec("[0-9A-Z.,+-]{0,12}", 0..20),
        ) {
            let _ = parse(&noise);
            let body = format!("{talker},{}", fields.join(","));
            let sum = body.bytes().fold(0u8, |a, b| a ^ b);
            let _ = parse(&format!("${body}*{sum:02X}"));
        }
    }

    /// Appends the right checksum.
    fn with_sum(data: &str) -> String {
        let sum = data.bytes().fold(0u8, |a, b| a ^ b);
        format!("${data}*{sum:02X}\r\n")
    }

    #[test]
    fn a_gga_fix_decodes_position_quality_and_satellites() {
        // The classic example from the NMEA reference.
        let s = parse("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n")
            .expect("valid");
        let Sentence::Gga(g) = s else { panic!("{s:?}") };
        assert!((g.latitude.expect("lat") - (48.0 + 7.038 / 60.0)).abs() < 1e-12);
        assert!((g.longitude.expect("lon") - (11.0 + 31.0 / 60.0)).abs() < 1e-12);
        assert_eq!(
            (g.fix_quality, g.satellites, g.hdop, g.altitude),
            (1, Some(8), Some(0.9), Some(545.4))
        );
        assert_eq!(
            g.time,
            Some(TimeOfDay {
                hour: 12,
                minute: 35,
                second: 19.0
            })
        );
        // Southern and western hemispheres are negative; no fix leaves fields empty.
        let Sentence::Gga(g) = parse(&with_sum(
            "GNGGA,000001.00,2437.6320,S,07024.2880,W,2,12,0.7,2635.0,M,,M,,",
        ))
        .expect("ok") else {
            panic!()
        };
        assert!(g.latitude.expect("lat") < -24.6 && g.longitude.expect("lon") < -70.4);
        let Sentence::Gga(g) = parse(&with_sum("GPGGA,,,,,,0,00,,,M,,M,,")).expect("ok") else {
            panic!()
        };
        assert_eq!(
            (g.latitude, g.fix_quality, g.satellites, g.time),
            (None, 0, Some(0), None)
        );
    }

    #[test]
    fn rmc_zda_and_gsa_give_date_time_validity_and_dop() {
        let Sentence::Rmc(r) =
            parse("$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A")
                .expect("valid")
        else {
            panic!()
        };
        assert!(r.valid);
        assert_eq!(r.date, Some((1994, 3, 23)));
        assert_eq!((r.speed_knots, r.course_deg), (Some(22.4), Some(84.4)));
        let Sentence::Zda(z) = parse(&with_sum("GPZDA,201530.00,04,07,2026,00,00")).expect("ok")
        else {
            panic!()
        };
        assert_eq!(z.date, Some((2026, 7, 4)));
        assert_eq!(z.time.map(|t| (t.hour, t.minute)), Some((20, 15)));
        let Sentence::Gsa(g) =
            parse(&with_sum("GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1")).expect("ok")
        else {
            panic!()
        };
        assert_eq!(
            (g.fix_type, g.satellites_used, g.pdop, g.hdop, g.vdop),
            (3, 5, Some(2.5), Some(1.3), Some(2.1))
        );
        assert_eq!(
            parse(&with_sum("GPGSV,1,1,01,04,77,045,42")).expect("ok"),
            Sentence::Other("GSV".into())
        );
    }

    #[test]
    fn broken_sentences_say_what_is_wrong() {
        assert_eq!(
            parse("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*48"),
            Err(NmeaError::BadChecksum {
                want: 0x47,
                got: 0x48
            })
        );
        assert_eq!(parse("GPGGA,1*00"), Err(NmeaError::NoStart));
        assert_eq!(parse("$GPGGA,123519"), Err(NmeaError::NoChecksum));
        assert_eq!(
            parse(&format!("${}*00", "A".repeat(200))),
            Err(NmeaError::TooLong)
        );
        assert_eq!(parse("$GPGGA,\u{e9}*00"), Err(NmeaError::NotAscii));
        let e = parse(&with_sum(
            "GPGGA,256000,4807.038,N,01131.000,E,1,08,0.9,545.4,M,,M,,",
        ))
        .expect_err("hour 25");
        assert!(matches!(e, NmeaError::Field { name: "time", .. }), "{e}");
        let e = parse(&with_sum(
            "GPGGA,123519,4807.038,X,01131.000,E,1,08,0.9,545.4,M,,M,,",
        ))
        .expect_err("hemisphere");
        assert!(e.to_string().contains("coordinate"), "{e}");
        let e = parse(&with_sum(
            "GPRMC,123519,A,4807.038,N,01131.000,E,0,0,320394,,",
        ))
        .expect_err("day 32");
        assert!(e.to_string().contains("date"), "{e}");
    }

    #[test]
    fn no_input_panics() {
        // A cheap stand-in until the fuzz target runs: every prefix and mutation of real
        // sentences parses or errs, never panics.
        let base = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A";
        for i in 0..base.len() {
            let _ = parse(&base[..i]);
            for c in [',', '*', '.', '$', '9', 'N', ' '] {
                let mut s = base.to_string();
                s.replace_range(i..=i, &c.to_string());
                let _ = parse(&s);
            }
        }
    }
}
