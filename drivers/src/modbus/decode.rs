//! Register maps: what a point is (table, address, type, order, scale), how points are
//! grouped into as few requests as the device allows, and how the words a device returned
//! become values. Pure functions; the poll loop and the tests share them.
//!
//! Conventions: addresses are the 0-based protocol addresses (register 40001 in a vendor
//! manual is holding address 0). Multi-register values are big-endian words and bytes
//! unless the point says otherwise (`word_order = "little"`: low word first, common on
//! PLCs; `byte_order = "little"`: bytes swapped in each register).

use serde::Deserialize;

use crate::reading::Value;

/// Which Modbus table a point lives in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Coil,
    Discrete,
    Holding,
    Input,
}

impl Table {
    /// Coils and discrete inputs are bits; the others 16-bit registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }
}

/// How a point's registers are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// A coil or discrete input.
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// `length` registers of ASCII, two characters each, NULs and trailing spaces cut.
    String,
    /// Bits `bit .. bit + bits` of one register, as an unsigned integer (1 bit: bool).
    Bits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    #[default]
    Big,
    Little,
}

/// One value of a device, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub channel: String,
    pub table: Table,
    pub address: u16,
    pub data_type: DataType,
    /// Registers for `String` (bits for bit tables are always 1).
    pub length: u16,
    pub bit: u8,
    pub bits: u8,
    pub word_order: Order,
    pub byte_order: Order,
    pub scale: f64,
    pub offset: f64,
    pub unit: Option<String>,
}

impl Point {
    /// Registers (or bits) the point spans.
    pub fn count(&self) -> u16 {
        match self.data_type {
            DataType::Bool | DataType::U16 | DataType::I16 | DataType::Bits => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String => self.length,
        }
    }

    /// Whether the type fits the table (bits only as `bool`, registers never as `bool`).
    pub fn type_fits_table(&self) -> bool {
        self.table.is_bits() == (self.data_type == DataType::Bool)
    }

    fn scaled(&self, raw: f64, integer: Option<i128>) -> Value {
        // Unscaled integers stay integers (counters, status words); anything scaled or
        // offset is a measurement.
        match integer {
            Some(i) if self.scale == 1.0 && self.offset == 0.0 => match i64::try_from(i) {
                Ok(v) => Value::Integer(v),
                Err(_) => Value::Number(i as f64),
            },
            _ => Value::Number(raw * self.scale + self.offset),
        }
    }

    /// The point's value from the words of its span (`words.len() == count()`).
    pub fn decode_words(&self, words: &[u16]) -> Result<Value, DecodeError> {
        if words.len() != usize::from(self.count()) {
            return Err(DecodeError::Length {
                want: self.count(),
                got: words.len(),
            });
        }
        let mut w: Vec<u16> = words
            .iter()
            .map(|x| match self.byte_order {
                Order::Big => *x,
                Order::Little => x.swap_bytes(),
            })
            .collect();
        if self.word_order == Order::Little && self.data_type != DataType::String {
            w.reverse();
        }
        let wide = w.iter().fold(0u64, |acc, x| (acc << 16) | u64::from(*x));
        Ok(match self.data_type {
            DataType::Bool => return Err(DecodeError::NotRegisters),
            DataType::U16 => self.scaled(f64::from(w[0]), Some(i128::from(w[0]))),
            DataType::I16 => {
                let v = w[0] as i16;
                self.scaled(f64::from(v), Some(i128::from(v)))
            }
            DataType::U32 => self.scaled(wide as f64, Some(i128::from(wide))),
            DataType::I32 => {
                let v = wide as u32 as i32;
                self.scaled(f64::from(v), Some(i128::from(v)))
            }
            DataType::U64 => self.scaled(wide as f64, Some(i128::from(wide))),
            DataType::I64 => {
                let v = wide as i64;
                self.scaled(v as f64, Some(i128::from(v)))
            }
            DataType::F32 => {
                let v = f32::from_bits(wide as u32);
                if !v.is_finite() {
                    return Err(DecodeError::NotFinite);
                }
                self.scaled(f64::from(v), None)
            }
            DataType::F64 => {
                let v = f64::from_bits(wide);
                if !v.is_finite() {
                    return Err(DecodeError::NotFinite);
                }
                self.scaled(v, None)
            }
            DataType::String => {
                let bytes: Vec<u8> = w.iter().flat_map(|x| x.to_be_bytes()).collect();
                let text: String = bytes
                    .iter()
                    .take_while(|b| **b != 0)
                    .map(|b| if b.is_ascii() { char::from(*b) } else { '?' })
                    .collect();
                Value::Text(text.trim_end().to_string())
            }
            DataType::Bits => {
                // Validated config keeps bits within the register; checked again here so
                // decoding stays total for any Point.
                if self.bits == 0 || u32::from(self.bit) + u32::from(self.bits) > 16 {
                    return Err(DecodeError::BitRange {
                        bit: self.bit,
                        bits: self.bits,
                    });
                }
                let v = (w[0] >> self.bit) & (((1u32 << self.bits) - 1) as u16);
                if self.bits == 1 {
                    Value::Bool(v == 1)
                } else {
                    self.scaled(f64::from(v), Some(i128::from(v)))
                }
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("expected {want} registers, got {got}")]
    Length { want: u16, got: usize },
    #[error("a bool point reads coils or discrete inputs, not registers")]
    NotRegisters,
    #[error("not a finite number (NaN or infinity)")]
    NotFinite,
    #[error("bits {bit}..{end} do not fit a 16-bit register", end = u16::from(*bit) + u16::from(*bits))]
    BitRange { bit: u8, bits: u8 },
}

/// One read request: a contiguous span of one table on one unit, covering some points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub table: Table,
    pub address: u16,
    pub count: u16,
    /// Indexes into the device's point list.
    pub points: Vec<usize>,
}

/// Groups points into requests: same table, sorted by address, merged while the span stays
/// contiguous (or overlapping) and within `max` registers or bits per request.
pub fn plan(points: &[Point], max_registers: u16, max_bits: u16) -> Vec<Request> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| (points[i].table, points[i].address, points[i].count()));
    let mut out: Vec<Request> = Vec::new();
    for i in order {
        let p = &points[i];
        let max = if p.table.is_bits() {
            max_bits
        } else {
            max_registers
        };
        let end = u32::from(p.address) + u32::from(p.count());
        if let Some(r) = out.last_mut()
            && r.table == p.table
            && u32::from(p.address) <= u32::from(r.address) + u32::from(r.count)
        {
            let new_end = end.max(u32::from(r.address) + u32::from(r.count));
            let new_count = new_end - u32::from(r.address);
            if new_count <= u32::from(max) {
                r.count = new_count as u16;
                r.points.push(i);
                continue;
            }
        }
        out.push(Request {
            table: p.table,
            address: p.address,
            count: p.count(),
            points: vec![i],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any words (of any length) for any type, order, bit range and string length:
        /// a value or an error, never a panic.
        #[test]
        fn no_register_contents_make_decoding_panic(
            words in proptest::collection::vec(proptest::num::u16::ANY, 0..8),
            ty in 0usize..11,
            little_words: bool,
            little_bytes: bool,
            bit in 0u8..20,
            bits in 0u8..20,
            length in 0u16..6,
        ) {
            let types = [
                DataType::Bool, DataType::U16, DataType::I16, DataType::U32, DataType::I32,
                DataType::U64, DataType::I64, DataType::F32, DataType::F64, DataType::String,
                DataType::Bits,
            ];
            let order = |little| if little { Order::Little } else { Order::Big };
            let p = Point {
                word_order: order(little_words),
                byte_order: order(little_bytes),
                bit,
                bits,
                length,
                ..point(types[ty])
            };
            let _ = p.decode_words(&words);
        }
    }

    fn point(data_type: DataType) -> Point {
        Point {
            channel: "x".into(),
            table: Table::Holding,
            address: 0,
            data_type,
            length: 4,
            bit: 0,
            bits: 1,
            word_order: Order::Big,
            byte_order: Order::Big,
            scale: 1.0,
            offset: 0.0,
            unit: None,
        }
    }

    #[test]
    fn every_type_and_order_decodes() {
        let p = point(DataType::U16);
        assert_eq!(p.decode_words(&[65535]), Ok(Value::Integer(65535)));
        assert_eq!(
            point(DataType::I16).decode_words(&[0xFFFE]),
            Ok(Value::Integer(-2))
        );
        // 0x0001_0002 big-endian words.
        assert_eq!(
            point(DataType::U32).decode_words(&[1, 2]),
            Ok(Value::Integer(65538))
        );
        let mut le = point(DataType::U32);
        le.word_order = Order::Little;
        assert_eq!(le.decode_words(&[2, 1]), Ok(Value::Integer(65538)));
        assert_eq!(
            point(DataType::I32).decode_words(&[0xFFFF, 0xFFFF]),
            Ok(Value::Integer(-1))
        );
        assert_eq!(
            point(DataType::U64).decode_words(&[0, 0, 1, 0]),
            Ok(Value::Integer(65536))
        );
        assert_eq!(
            point(DataType::I64).decode_words(&[0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE]),
            Ok(Value::Integer(-2))
        );
        // 12.5f32 = 0x4148_0000.
        assert_eq!(
            point(DataType::F32).decode_words(&[0x4148, 0]),
            Ok(Value::Number(12.5))
        );
        let mut swapped = point(DataType::F32);
        swapped.byte_order = Order::Little;
        swapped.word_order = Order::Little;
        assert_eq!(swapped.decode_words(&[0, 0x4841]), Ok(Value::Number(12.5)));
        // -1.25f64 = 0xBFF4_0000_0000_0000.
        assert_eq!(
            point(DataType::F64).decode_words(&[0xBFF4, 0, 0, 0]),
            Ok(Value::Number(-1.25))
        );
        assert_eq!(
            point(DataType::F32).decode_words(&[0x7FC0, 0]),
            Err(DecodeError::NotFinite)
        );
        let mut s = point(DataType::String);
        s.length = 4;
        assert_eq!(
            s.decode_words(&[0x5753, 0x2D31, 0x2000, 0]),
            Ok(Value::Text("WS-1".into()))
        );
        let mut b = point(DataType::Bits);
        b.bit = 4;
        b.bits = 3;
        assert_eq!(b.decode_words(&[0b0101_0000]), Ok(Value::Integer(5)));
        b.bits = 1;
        assert_eq!(b.decode_words(&[0b0001_0000]), Ok(Value::Bool(true)));
    }

    #[test]
    fn scale_and_offset_make_a_measurement() {
        let mut p = point(DataType::I16);
        p.scale = 0.1;
        p.offset = -40.0;
        // 652 * 0.1 - 40 = 25.2
        match p.decode_words(&[652]) {
            Ok(Value::Number(v)) => assert!((v - 25.2).abs() < 1e-9, "{v}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p.decode_words(&[1, 2]),
            Err(DecodeError::Length { want: 1, got: 2 })
        );
    }

    #[test]
    fn contiguous_points_share_a_request_up_to_the_limit() {
        let at = |table, address, t| Point {
            table,
            address,
            ..point(t)
        };
        let points = vec![
            at(Table::Holding, 10, DataType::F32), // 10..12
            at(Table::Holding, 0, DataType::U16),  // 0
            at(Table::Holding, 1, DataType::U32),  // 1..3
            at(Table::Holding, 3, DataType::U16),  // 3
            at(Table::Input, 3, DataType::U16),
            at(Table::Coil, 0, DataType::Bool),
            at(Table::Coil, 1, DataType::Bool),
            at(Table::Holding, 12, DataType::U16), // 12: contiguous with 10..12
        ];
        let plan = plan(&points, 3, 2000);
        let spans: Vec<(Table, u16, u16)> =
            plan.iter().map(|r| (r.table, r.address, r.count)).collect();
        assert_eq!(
            spans,
            [
                (Table::Coil, 0, 2),
                (Table::Holding, 0, 3),
                (Table::Holding, 3, 1),
                (Table::Holding, 10, 3),
                (Table::Input, 3, 1),
            ]
        );
        // Every point is in exactly one request.
        let mut all: Vec<usize> = plan.iter().flat_map(|r| r.points.clone()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..points.len()).collect::<Vec<_>>());
    }
}
