//! `skygate probe`: talk to an instrument directly, before writing its config, to check
//! wiring, addresses and unit ids. Never touches the running agent or its buffer.

use std::io::Write;
use std::time::Duration;

use skygate_drivers::modbus::decode::Table;
use skygate_drivers::modbus::{Transport, Words, probe};
use skygate_drivers::serial::port::{Parity, SerialSettings};

use super::{CliError, ProbeCommand};

/// `TABLE:START..END` (END exclusive) or `TABLE:ADDR`.
pub(crate) fn parse_read(s: &str) -> Result<(Table, u16, u16), String> {
    let bad = || {
        format!(
            "--read {s:?}: expected TABLE:START..END or TABLE:ADDRESS, TABLE one of coil, discrete, holding, input"
        )
    };
    let (t, range) = s.split_once(':').ok_or_else(bad)?;
    let table = match t {
        "coil" | "coils" => Table::Coil,
        "discrete" => Table::Discrete,
        "holding" => Table::Holding,
        "input" => Table::Input,
        _ => return Err(bad()),
    };
    let (start, end) = match range.split_once("..") {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u32>().map_err(|_| bad())?,
        ),
        None => {
            let a = range.parse::<u16>().map_err(|_| bad())?;
            (a, u32::from(a) + 1)
        }
    };
    let count = end
        .checked_sub(u32::from(start))
        .filter(|c| *c >= 1)
        .ok_or_else(|| format!("--read {s:?}: END must be above START"))?;
    let max = if table.is_bits() { 2000 } else { 125 };
    if count > max {
        return Err(format!("--read {s:?}: at most {max} per read"));
    }
    Ok((table, start, count as u16))
}

fn parse_parity(p: &str) -> Result<Parity, CliError> {
    match p {
        "none" => Ok(Parity::None),
        "odd" => Ok(Parity::Odd),
        "even" => Ok(Parity::Even),
        other => Err(CliError::Usage(format!(
            "--parity {other:?}: none, even or odd"
        ))),
    }
}

pub fn run(cmd: ProbeCommand) -> Result<i32, CliError> {
    let (host, port, baud, parity, unit, read, timeout) = match cmd {
        ProbeCommand::Serial {
            port,
            baud,
            parity,
            seconds,
        } => {
            let line = SerialSettings {
                path: port,
                baud,
                parity: parse_parity(&parity)?,
                data_bits: 8,
                stop_bits: 1,
            };
            return serial(&line, Duration::from_secs_f64(seconds.clamp(0.1, 3600.0)));
        }
        ProbeCommand::Modbus {
            host,
            port,
            baud,
            parity,
            unit,
            read,
            timeout,
        } => (host, port, baud, parity, unit, read, timeout),
    };
    let (table, address, count) = parse_read(&read).map_err(CliError::Usage)?;
    let transport = match (host, port) {
        (Some(h), None) => {
            let (host, tcp_port) = match h.rsplit_once(':') {
                Some((a, p)) if !a.contains(':') || a.starts_with('[') => (
                    a.trim_matches(['[', ']']).to_string(),
                    p.parse()
                        .map_err(|_| CliError::Usage(format!("--host {h:?}: bad port")))?,
                ),
                _ => (h.clone(), 502),
            };
            Transport::Tcp {
                host,
                port: tcp_port,
            }
        }
        (None, Some(path)) => Transport::Rtu(SerialSettings {
            path,
            baud,
            parity: parse_parity(&parity)?,
            data_bits: 8,
            stop_bits: 1,
        }),
        _ => {
            return Err(CliError::Usage(
                "give either --host HOST[:PORT] (Modbus TCP) or --port DEVICE (Modbus RTU)".into(),
            ));
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let timeout = Duration::from_millis(timeout);
    let mut out = std::io::stdout().lock();
    let table_name = format!("{table:?}").to_lowercase();
    match rt.block_on(probe(&transport, unit, table, address, count, timeout)) {
        Ok(Words::Registers(words)) => {
            writeln!(
                out,
                "{:<8} {:>5} {:>6} {:>7} {:>6}  CHARS",
                "TABLE", "ADDR", "U16", "I16", "HEX"
            )?;
            for (i, w) in words.iter().enumerate() {
                let chars: String = w
                    .to_be_bytes()
                    .iter()
                    .map(|b| {
                        if b.is_ascii_graphic() || *b == b' ' {
                            char::from(*b)
                        } else {
                            '.'
                        }
                    })
                    .collect();
                writeln!(
                    out,
                    "{:<8} {:>5} {:>6} {:>7} {:>#6x}  {chars}",
                    table_name,
                    usize::from(address) + i,
                    w,
                    *w as i16,
                    w
                )?;
            }
            Ok(0)
        }
        Ok(Words::Bits(bits)) => {
            for (i, b) in bits.iter().take(usize::from(count)).enumerate() {
                writeln!(
                    out,
                    "{table_name:<8} {:>5} {}",
                    usize::from(address) + i,
                    u8::from(*b)
                )?;
            }
            Ok(0)
        }
        Err(why) => {
            writeln!(out, "unit {unit} {table_name} {address}+{count}: {why}")?;
            Ok(1)
        }
    }
}

/// What arrived on a serial line, summed up for a technician.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct LineReport {
    pub bytes: usize,
    pub lines: usize,
    pub crlf: usize,
    pub longest: usize,
    pub nmea_ok: usize,
    pub nmea_bad_checksum: usize,
    /// Bytes outside printable ASCII, tab, CR and LF: many of them mean a wrong baud rate
    /// or parity (or a binary protocol).
    pub odd_bytes: usize,
}

pub(crate) fn report(data: &[u8]) -> LineReport {
    let mut r = LineReport {
        bytes: data.len(),
        odd_bytes: data
            .iter()
            .filter(|b| !(b.is_ascii_graphic() || matches!(b, b' ' | b'\t' | b'\r' | b'\n')))
            .count(),
        ..LineReport::default()
    };
    for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        r.lines += 1;
        r.crlf += usize::from(line.ends_with(b"\r"));
        r.longest = r.longest.max(line.len());
        let text = String::from_utf8_lossy(line);
        if text.starts_with('$') || text.starts_with('!') {
            match skygate_drivers::serial::nmea::parse(&text) {
                Err(skygate_drivers::serial::nmea::NmeaError::BadChecksum { .. }) => {
                    r.nmea_bad_checksum += 1
                }
                Err(skygate_drivers::serial::nmea::NmeaError::NoChecksum) => {}
                _ => r.nmea_ok += 1,
            }
        }
    }
    r
}

/// Control and non-ASCII bytes as `\xNN`, so a terminal shows exactly what came.
fn escaped(data: &[u8]) -> String {
    data.iter()
        .map(|b| match b {
            b'\n' => "\\n\n".to_string(),
            b'\r' => "\\r".to_string(),
            b if b.is_ascii_graphic() || *b == b' ' => char::from(*b).to_string(),
            b => format!("\\x{b:02x}"),
        })
        .collect()
}

fn serial(line: &SerialSettings, listen: Duration) -> Result<i32, CliError> {
    use tokio::io::AsyncReadExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = std::io::stdout().lock();
    let data = rt.block_on(async {
        let mut port = line.open()?;
        let mut data = Vec::new();
        let mut chunk = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + listen;
        // Bounded: a babbling device at 4 Mbaud for an hour still fits.
        while data.len() < 64 * 1024 * 1024 {
            match tokio::time::timeout_at(deadline, port.read(&mut chunk)).await {
                Err(_) | Ok(Ok(0)) => break,
                Ok(Ok(n)) => data.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(e),
            }
        }
        Ok::<_, std::io::Error>(data)
    })?;
    write!(out, "{}", escaped(&data))?;
    let r = report(&data);
    writeln!(
        out,
        "\n--- {} at {} baud, {:.1} s",
        line.path,
        line.baud,
        listen.as_secs_f64()
    )?;
    writeln!(
        out,
        "{} bytes, {} lines ({} ending CRLF), longest {} bytes",
        r.bytes, r.lines, r.crlf, r.longest
    )?;
    if r.nmea_ok + r.nmea_bad_checksum > 0 {
        writeln!(
            out,
            "NMEA: {} sentences with a good checksum, {} with a bad one",
            r.nmea_ok, r.nmea_bad_checksum
        )?;
    }
    if r.bytes > 0 && r.odd_bytes * 10 > r.bytes {
        writeln!(
            out,
            "{} of {} bytes are not text: a wrong baud rate or parity, or a binary protocol",
            r.odd_bytes, r.bytes
        )?;
    }
    if r.bytes == 0 {
        writeln!(
            out,
            "nothing arrived: check wiring, power and the baud rate"
        )?;
        return Ok(1);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_specs_name_a_table_and_a_range() {
        assert_eq!(parse_read("holding:0..10"), Ok((Table::Holding, 0, 10)));
        assert_eq!(parse_read("coil:7"), Ok((Table::Coil, 7, 1)));
        assert_eq!(
            parse_read("input:65535..65536"),
            Ok((Table::Input, 65535, 1))
        );
        assert!(parse_read("holding:5..5").is_err());
        assert!(parse_read("holding:0..200").is_err());
        assert!(parse_read("registers:0..2").is_err());
        assert!(parse_read("holding").is_err());
    }

    #[test]
    fn a_line_report_counts_lines_endings_checksums_and_noise() {
        let data = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n\
                     $GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*48\r\n\
                     21.4,655\n\xff\xfe";
        let r = report(data);
        assert_eq!(
            (r.lines, r.crlf, r.nmea_ok, r.nmea_bad_checksum, r.odd_bytes),
            (4, 2, 1, 1, 2)
        );
        assert_eq!(escaped(b"a\r\n\x01"), "a\\r\\n\n\\x01");
    }
}
