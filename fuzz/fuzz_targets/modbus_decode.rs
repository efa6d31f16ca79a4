//! Modbus register decoding: any words, for every type, order and bit range.
#![no_main]

use skygate_drivers::modbus::decode::{DataType, Order, Point, Table};

const TYPES: [DataType; 11] = [
    DataType::Bool,
    DataType::U16,
    DataType::I16,
    DataType::U32,
    DataType::I32,
    DataType::U64,
    DataType::I64,
    DataType::F32,
    DataType::F64,
    DataType::String,
    DataType::Bits,
];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let order = |b: u8| {
        if b & 1 == 1 {
            Order::Little
        } else {
            Order::Big
        }
    };
    let p = Point {
        channel: "x".into(),
        table: Table::Holding,
        address: 0,
        data_type: TYPES[usize::from(head[0]) % TYPES.len()],
        length: u16::from(head[1] % 8),
        bit: head[2] % 20,
        bits: head[3] % 20,
        word_order: order(head[0] >> 4),
        byte_order: order(head[1] >> 4),
        scale: 1.0,
        offset: 0.0,
        unit: None,
    };
    let words: Vec<u16> = rest
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    let _ = p.decode_words(&words);
});
