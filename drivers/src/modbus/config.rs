//! Configuration of a Modbus line (one TCP endpoint or one serial port): raw and validated.
//!
//! ```toml
//! [drivers.mast]
//! kind = "modbus"
//! transport = "rtu"            # or "tcp" with host ("10.0.0.5" or "10.0.0.5:1502"), port (502)
//! serial_port = "/dev/ttyUSB0"
//! baud = 19200                 # parity "none"|"even"|"odd", data_bits, stop_bits
//! timeout = "500ms"            # per request; retries before a point is bad
//! [drivers.mast.devices.wx]
//! unit = 3
//! poll = "1s"
//! [drivers.mast.devices.wx.points.temperature]
//! table = "input"              # coil, discrete, holding, input
//! address = 0
//! type = "i16"                 # bool, u16, i16, u32, i32, u64, i64, f32, f64, string, bits
//! scale = 0.1
//! offset = -40.0
//! unit = "degC"
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::decode::{DataType, Order, Point, Request, Table, plan};
use crate::config::{FieldError, duration_opt, field_err, refuse, split_host_port};
use crate::serial::port::{LineRaw, Parity, SerialSettings};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    Tcp,
    Rtu,
    /// A simulated device served by the driver itself over loopback TCP (demos, the
    /// embedded default).
    Simulator,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PointRaw {
    pub table: Table,
    pub address: u16,
    #[serde(rename = "type")]
    pub data_type: Option<DataType>,
    pub length: Option<u16>,
    pub bit: Option<u8>,
    pub bits: Option<u8>,
    pub word_order: Option<Order>,
    pub byte_order: Option<Order>,
    pub scale: Option<f64>,
    pub offset: Option<f64>,
    pub unit: Option<String>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceRaw {
    pub unit: u8,
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    #[schemars(with = "Option<crate::config::DurationText>")]
    pub poll: Option<Duration>,
    pub points: BTreeMap<String, PointRaw>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfigRaw {
    pub transport: TransportKind,
    /// With `transport = "simulator"`: which device (`weather_station`).
    pub simulator: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub serial_port: Option<String>,
    pub baud: Option<u32>,
    pub parity: Option<Parity>,
    pub data_bits: Option<u8>,
    pub stop_bits: Option<u8>,
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    #[schemars(with = "Option<crate::config::DurationText>")]
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    /// Longest wait between attempts at a device (or line) that does not answer.
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    #[schemars(with = "Option<crate::config::DurationText>")]
    pub backoff_max: Option<Duration>,
    pub max_registers_per_request: Option<u16>,
    pub max_bits_per_request: Option<u16>,
    pub devices: BTreeMap<String, DeviceRaw>,
}

/// Simulated devices a driver can serve itself.
pub const SIMULATORS: &[&str] = &["weather_station"];

#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    /// The simulated weather station (see [`super::station`]).
    Simulator,
    Tcp {
        host: String,
        port: u16,
    },
    Rtu(SerialSettings),
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    pub name: String,
    pub unit: u8,
    pub poll: Duration,
    pub points: Vec<Point>,
    /// The reads one poll makes.
    pub requests: Vec<Request>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModbusConfig {
    pub transport: Transport,
    pub timeout: Duration,
    pub retries: u32,
    pub backoff_max: Duration,
    pub devices: Vec<DeviceConfig>,
}

/// Spec limits: 125 registers and 2000 bits per read.
const SPEC_MAX_REGISTERS: u16 = 125;
const SPEC_MAX_BITS: u16 = 2000;

impl ModbusConfigRaw {
    pub fn validate(self) -> Result<ModbusConfig, FieldError> {
        if self.transport != TransportKind::Simulator {
            refuse(
                &[("simulator", self.simulator.is_some())],
                "applies to transport = \"simulator\" only",
            )?;
        }
        let transport = match self.transport {
            TransportKind::Simulator => {
                refuse(
                    &[
                        ("host", self.host.is_some()),
                        ("port", self.port.is_some()),
                        ("serial_port", self.serial_port.is_some()),
                        ("baud", self.baud.is_some()),
                    ],
                    "does not apply to transport = \"simulator\"",
                )?;
                match self.simulator.as_deref() {
                    Some("weather_station") => Transport::Simulator,
                    _ => {
                        return Err(FieldError {
                            path: "simulator".into(),
                            message: format!("must be one of {SIMULATORS:?}"),
                        });
                    }
                }
            }
            TransportKind::Tcp => {
                refuse(
                    &[
                        ("serial_port", self.serial_port.is_some()),
                        ("baud", self.baud.is_some()),
                        ("parity", self.parity.is_some()),
                        ("data_bits", self.data_bits.is_some()),
                        ("stop_bits", self.stop_bits.is_some()),
                    ],
                    "applies to transport = \"rtu\" only",
                )?;
                let written = self
                    .host
                    .ok_or_else(|| field_err("host", "transport = \"tcp\" needs a host"))?;
                // `host = "10.0.0.5:1502"` is how the probe and most tools write it.
                let (host, in_host) = split_host_port(&written)
                    .map_err(|why| field_err("host", &format!("{written:?}: {why}")))?;
                let port = match (in_host, self.port) {
                    (Some(a), Some(b)) if a != b => {
                        return Err(field_err(
                            "port",
                            &format!("{b} contradicts the port in host = {written:?}"),
                        ));
                    }
                    (Some(p), _) | (None, Some(p)) => p,
                    (None, None) => 502,
                };
                if port == 0 {
                    return Err(field_err("port", "0 is not a TCP port (1-65535)"));
                }
                Transport::Tcp {
                    host: host.to_string(),
                    port,
                }
            }
            TransportKind::Rtu => {
                refuse(
                    &[("host", self.host.is_some()), ("port", self.port.is_some())],
                    "applies to transport = \"tcp\" only",
                )?;
                // Modbus RTU's spec default is 19200 baud, even parity.
                Transport::Rtu(
                    LineRaw {
                        serial_port: self.serial_port,
                        baud: self.baud,
                        parity: self.parity,
                        data_bits: self.data_bits,
                        stop_bits: self.stop_bits,
                    }
                    .validate(19200, Parity::Even)?,
                )
            }
        };
        let timeout = self.timeout.unwrap_or(Duration::from_secs(1));
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            return Err(field_err("timeout", "must be between 1ms and 60s"));
        }
        let retries = self.retries.unwrap_or(2);
        if retries > 10 {
            return Err(field_err("retries", "must be at most 10"));
        }
        let max_regs = self.max_registers_per_request.unwrap_or(SPEC_MAX_REGISTERS);
        if !(1..=SPEC_MAX_REGISTERS).contains(&max_regs) {
            return Err(field_err(
                "max_registers_per_request",
                "must be 1 to 125 (the Modbus limit)",
            ));
        }
        let max_bits = self.max_bits_per_request.unwrap_or(SPEC_MAX_BITS);
        if !(1..=SPEC_MAX_BITS).contains(&max_bits) {
            return Err(field_err(
                "max_bits_per_request",
                "must be 1 to 2000 (the Modbus limit)",
            ));
        }
        if self.devices.is_empty() {
            return Err(field_err("devices", "at least one device is needed"));
        }
        let mut units = BTreeMap::new();
        let mut devices = Vec::new();
        for (name, d) in self.devices {
            let at = |f: &str| format!("devices.{name}.{f}");
            if let Some(other) = units.insert(d.unit, name.clone()) {
                return Err(FieldError {
                    path: at("unit"),
                    message: format!("unit {} is also device {other}", d.unit),
                });
            }
            if d.unit == 0 || d.unit > 247 {
                return Err(FieldError {
                    path: at("unit"),
                    message: "must be 1 to 247 (0 is broadcast)".into(),
                });
            }
            let poll = d.poll.unwrap_or(Duration::from_secs(1));
            if poll < Duration::from_millis(10) || poll > Duration::from_secs(86_400) {
                return Err(FieldError {
                    path: at("poll"),
                    message: "must be between 10ms and 24h".into(),
                });
            }
            if d.points.is_empty() {
                return Err(FieldError {
                    path: at("points"),
                    message: "at least one point is needed".into(),
                });
            }
            let mut points = Vec::new();
            for (pname, p) in d.points {
                points.push(point(
                    &format!("devices.{name}.points.{pname}"),
                    &pname,
                    p,
                    max_regs,
                )?);
            }
            let requests = plan(&points, max_regs, max_bits);
            devices.push(DeviceConfig {
                name,
                unit: d.unit,
                poll,
                points,
                requests,
            });
        }
        Ok(ModbusConfig {
            transport,
            timeout,
            retries,
            backoff_max: self
                .backoff_max
                .unwrap_or(Duration::from_secs(60))
                .max(timeout),
            devices,
        })
    }
}

fn point(path: &str, name: &str, p: PointRaw, max_regs: u16) -> Result<Point, FieldError> {
    let e = |f: &str, m: String| FieldError {
        path: format!("{path}.{f}"),
        message: m,
    };
    let data_type = p.data_type.unwrap_or(if p.table.is_bits() {
        DataType::Bool
    } else {
        DataType::U16
    });
    let (bit, bits) = (p.bit.unwrap_or(0), p.bits.unwrap_or(1));
    if data_type == DataType::Bits {
        if bit > 15 || bits == 0 || u16::from(bit) + u16::from(bits) > 16 {
            return Err(e(
                "bits",
                format!(
                    "bits {bit}..{} do not fit in a register",
                    u16::from(bit) + u16::from(bits)
                ),
            ));
        }
    } else if p.bit.is_some() || p.bits.is_some() {
        return Err(e("bit", "applies to type = \"bits\" only".into()));
    }
    let length = match (data_type, p.length) {
        (DataType::String, Some(n)) if (1..=max_regs).contains(&n) => n,
        (DataType::String, _) => {
            return Err(e(
                "length",
                format!("a string needs length = 1 to {max_regs} registers"),
            ));
        }
        (_, Some(_)) => return Err(e("length", "applies to type = \"string\" only".into())),
        (_, None) => 1,
    };
    let scale = p.scale.unwrap_or(1.0);
    let offset = p.offset.unwrap_or(0.0);
    if !scale.is_finite() || scale == 0.0 || !offset.is_finite() {
        return Err(e(
            "scale",
            "scale must be finite and not 0; offset finite".into(),
        ));
    }
    let point = Point {
        channel: name.to_string(),
        table: p.table,
        address: p.address,
        data_type,
        length,
        bit,
        bits,
        word_order: p.word_order.unwrap_or_default(),
        byte_order: p.byte_order.unwrap_or_default(),
        scale,
        offset,
        unit: p.unit,
    };
    if !point.type_fits_table() {
        return Err(e(
            "type",
            format!(
                "{data_type:?} cannot be read from {:?}: coils and discrete inputs are bool, registers are not",
                p.table
            )
            .to_lowercase(),
        ));
    }
    if u32::from(p.address) + u32::from(point.count()) > 65_536 {
        return Err(e("address", "the point runs past address 65535".into()));
    }
    Ok(point)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ModbusConfig, FieldError> {
        toml::from_str::<ModbusConfigRaw>(s)
            .expect("parse")
            .validate()
    }

    const RTU: &str = "transport = \"rtu\"\nserial_port = \"/dev/ttyUSB0\"\n";

    #[test]
    fn a_valid_line_plans_its_reads_and_defaults_sensibly() {
        let c = parse(&format!(
            "{RTU}[devices.wx]\nunit = 3\n[devices.wx.points.t]\ntable = \"input\"\naddress = 0\ntype = \"i16\"\nscale = 0.1\n\
             [devices.wx.points.p]\ntable = \"input\"\naddress = 1\ntype = \"f32\"\n[devices.wx.points.door]\ntable = \"discrete\"\naddress = 4\n"
        ))
        .expect("valid");
        assert_eq!(
            c.transport,
            Transport::Rtu(SerialSettings {
                path: "/dev/ttyUSB0".into(),
                baud: 19200,
                parity: Parity::Even,
                data_bits: 8,
                stop_bits: 1
            })
        );
        let d = &c.devices[0];
        assert_eq!((d.unit, d.poll), (3, Duration::from_secs(1)));
        // Input 0..3 in one read, the discrete input in another.
        assert_eq!(d.requests.len(), 2);
        assert!(
            d.points
                .iter()
                .any(|p| p.channel == "door" && p.data_type == DataType::Bool)
        );
    }

    #[test]
    fn a_tcp_host_may_carry_its_port_and_an_impossible_endpoint_is_refused_at_load() {
        let dev =
            "[devices.wx]\nunit = 3\n[devices.wx.points.t]\ntable = \"holding\"\naddress = 0\n";
        let tcp = |extra: &str| parse(&format!("transport = \"tcp\"\n{extra}{dev}"));
        let endpoint = |extra: &str| match tcp(extra).expect(extra).transport {
            Transport::Tcp { host, port } => (host, port),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            endpoint("host = \"10.0.0.5:1502\"\n"),
            ("10.0.0.5".into(), 1502)
        );
        assert_eq!(endpoint("host = \"10.0.0.5\"\n"), ("10.0.0.5".into(), 502));
        assert_eq!(
            endpoint("host = \"mast\"\nport = 1502\n"),
            ("mast".into(), 1502)
        );
        assert_eq!(
            endpoint("host = \"[fe80::7]:503\"\n"),
            ("fe80::7".into(), 503)
        );
        // Written twice alike is fine; differently is a contradiction, named at `port`.
        assert_eq!(
            endpoint("host = \"mast:1502\"\nport = 1502\n"),
            ("mast".into(), 1502)
        );
        let e = tcp("host = \"mast:1502\"\nport = 503\n").expect_err("two ports");
        assert_eq!(e.path, "port");
        assert!(e.message.contains("contradicts"), "{e}");
        for (host, why) in [
            ("mast:0", "not a TCP port"),
            ("mast:99999", "not a TCP port"),
            ("tcp://mast:502", "no scheme"),
            ("", "no host"),
        ] {
            let e = tcp(&format!("host = \"{host}\"\n")).expect_err(host);
            assert_eq!(e.path, "host", "{host}");
            assert!(e.message.contains(why), "{host}: {e}");
        }
        let e = tcp("host = \"mast\"\nport = 0\n").expect_err("port 0");
        assert_eq!(e.path, "port");
    }

    #[test]
    fn mistakes_are_named_by_their_path() {
        let dev =
            "[devices.wx]\nunit = 3\n[devices.wx.points.t]\ntable = \"holding\"\naddress = 0\n";
        let e = parse(&format!("transport = \"tcp\"\n{dev}")).expect_err("no host");
        assert_eq!(e.path, "host");
        let e = parse(&format!(
            "transport = \"tcp\"\nhost = \"h\"\nbaud = 9600\n{dev}"
        ))
        .expect_err("baud on tcp");
        assert_eq!(e.path, "baud");
        let e = parse(&format!("{RTU}{dev}type = \"bool\"\n")).expect_err("bool register");
        assert_eq!(e.path, "devices.wx.points.t.type");
        let e = parse(&format!("{RTU}{dev}type = \"string\"\n")).expect_err("no length");
        assert_eq!(e.path, "devices.wx.points.t.length");
        let e =
            parse(&format!("{RTU}{dev}type = \"bits\"\nbit = 14\nbits = 4\n")).expect_err("bits");
        assert_eq!(e.path, "devices.wx.points.t.bits");
        let e = parse(&format!("{RTU}{dev}[devices.other]\nunit = 3\n[devices.other.points.x]\ntable = \"coil\"\naddress = 1\n"))
            .expect_err("same unit");
        assert!(
            e.path.ends_with(".unit") && e.message.contains("also device"),
            "{e}"
        );
        let sim = "transport = \"simulator\"\nsimulator = \"weather_station\"\n";
        assert_eq!(
            parse(&format!("{sim}{dev}")).expect("valid").transport,
            Transport::Simulator
        );
        let e = parse(&format!("{sim}host = \"h\"\n{dev}")).expect_err("host on a simulator");
        assert_eq!(e.path, "host");
        let e = parse(&format!(
            "transport = \"simulator\"\nsimulator = \"toaster\"\n{dev}"
        ))
        .expect_err("unknown simulator");
        assert!(
            e.path == "simulator" && e.message.contains("weather_station"),
            "{e}"
        );
        let e = parse(&format!("{RTU}simulator = \"weather_station\"\n{dev}"))
            .expect_err("simulator on rtu");
        assert_eq!(e.path, "simulator");
        let e = parse(&format!("{RTU}max_registers_per_request = 200\n{dev}")).expect_err("limit");
        assert_eq!(e.path, "max_registers_per_request");
        let e = parse(&format!(
            "{RTU}[devices.wx]\nunit = 3\n[devices.wx.points.t]\ntable = \"holding\"\naddress = 65535\ntype = \"u32\"\n"
        ))
        .expect_err("past the end");
        assert_eq!(e.path, "devices.wx.points.t.address");
    }
}
