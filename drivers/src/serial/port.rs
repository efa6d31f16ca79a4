//! Serial port settings shared by the drivers that use a serial line (Modbus RTU, NMEA,
//! ASCII lines): validation with field names, and opening the port for tokio.

use serde::Deserialize;
use tokio_serial::{SerialPortBuilderExt, SerialStream};

use crate::config::{FieldError, field_err};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    None,
    Even,
    Odd,
}

/// A validated serial line.
#[derive(Debug, Clone, PartialEq)]
pub struct SerialSettings {
    pub path: String,
    pub baud: u32,
    pub parity: Parity,
    pub data_bits: u8,
    pub stop_bits: u8,
}

/// The line fields as written (`serial_port`, `baud`, `parity`, `data_bits`, `stop_bits`).
#[derive(Debug, Clone, Default)]
pub struct LineRaw {
    pub serial_port: Option<String>,
    pub baud: Option<u32>,
    pub parity: Option<Parity>,
    pub data_bits: Option<u8>,
    pub stop_bits: Option<u8>,
}

impl LineRaw {
    /// Validates, filling in `default_baud` and `default_parity` (Modbus RTU wants even
    /// parity at 19200 by its spec; NMEA receivers talk 4800 or 9600 without parity).
    pub fn validate(
        self,
        default_baud: u32,
        default_parity: Parity,
    ) -> Result<SerialSettings, FieldError> {
        let baud = self.baud.unwrap_or(default_baud);
        if !(300..=4_000_000).contains(&baud) {
            return Err(field_err("baud", "must be 300 to 4000000"));
        }
        let data_bits = self.data_bits.unwrap_or(8);
        if !(5..=8).contains(&data_bits) {
            return Err(field_err("data_bits", "must be 5 to 8"));
        }
        let stop_bits = self.stop_bits.unwrap_or(1);
        if !(1..=2).contains(&stop_bits) {
            return Err(field_err("stop_bits", "must be 1 or 2"));
        }
        Ok(SerialSettings {
            path: self
                .serial_port
                .filter(|p| !p.is_empty())
                .ok_or_else(|| field_err("serial_port", "a serial_port is needed"))?,
            baud,
            parity: self.parity.unwrap_or(default_parity),
            data_bits,
            stop_bits,
        })
    }
}

impl SerialSettings {
    /// Opens the port (non-blocking, for tokio). A missing device is an `io::Error`
    /// naming the path, so an unplugged adapter reads as such in the driver's errors.
    pub fn open(&self) -> std::io::Result<SerialStream> {
        tokio_serial::new(&self.path, self.baud)
            .parity(match self.parity {
                Parity::None => tokio_serial::Parity::None,
                Parity::Even => tokio_serial::Parity::Even,
                Parity::Odd => tokio_serial::Parity::Odd,
            })
            .data_bits(match self.data_bits {
                5 => tokio_serial::DataBits::Five,
                6 => tokio_serial::DataBits::Six,
                7 => tokio_serial::DataBits::Seven,
                _ => tokio_serial::DataBits::Eight,
            })
            .stop_bits(if self.stop_bits == 2 {
                tokio_serial::StopBits::Two
            } else {
                tokio_serial::StopBits::One
            })
            .open_native_async()
            .map_err(|e| std::io::Error::other(format!("{}: {e}", self.path)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_limits() {
        let s = LineRaw {
            serial_port: Some("/dev/ttyS1".into()),
            ..LineRaw::default()
        }
        .validate(9600, Parity::None)
        .expect("valid");
        assert_eq!(
            (s.baud, s.parity, s.data_bits, s.stop_bits),
            (9600, Parity::None, 8, 1)
        );
        let e = LineRaw::default()
            .validate(9600, Parity::None)
            .expect_err("no port");
        assert_eq!(e.path, "serial_port");
        let e = LineRaw {
            serial_port: Some("/dev/x".into()),
            stop_bits: Some(3),
            ..LineRaw::default()
        }
        .validate(9600, Parity::None)
        .expect_err("stop bits");
        assert_eq!(e.path, "stop_bits");
    }
}
