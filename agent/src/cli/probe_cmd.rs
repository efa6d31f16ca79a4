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

pub fn run(cmd: ProbeCommand) -> Result<i32, CliError> {
    let ProbeCommand::Modbus {
        host,
        port,
        baud,
        parity,
        unit,
        read,
        timeout,
    } = cmd;
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
            parity: match parity.as_str() {
                "none" => Parity::None,
                "odd" => Parity::Odd,
                "even" => Parity::Even,
                other => {
                    return Err(CliError::Usage(format!(
                        "--parity {other:?}: none, even or odd"
                    )));
                }
            },
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
}
