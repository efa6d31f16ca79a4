//! Skygate workflow functions in Rust, and the batch ABI the agent and functions share.
//!
//! A function is a WebAssembly module (`wasm32-wasip1`, `crate-type = ["cdylib"]`) that a
//! workflow step runs over batches of readings:
//!
//! ```ignore
//! use skygate_fn::{Function, Output, Reading};
//!
//! #[derive(Default)]
//! struct Double;
//!
//! impl Function for Double {
//!     fn process(&mut self, batch: &[Reading<'_>], out: &mut Vec<Output>) {
//!         for r in batch {
//!             out.push(Output::from(r).value(r.value * 2.0));
//!         }
//!     }
//! }
//!
//! skygate_fn::export_function!(Double);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip1` and name the `.wasm` in a
//! workflow step (`- wasm: {module: double.wasm}`), or try it with
//! `skygate fn run double.wasm < records.jsonl`.
//!
//! # The ABI (version 1)
//! Any language can implement it. The module exports its `memory` and:
//! - `skygate_alloc(len: i32) -> i32`: a buffer of `len` bytes the host writes a batch to;
//! - `skygate_process(ptr: i32, len: i32) -> i64`: processes the batch at `ptr`; returns
//!   `(out_ptr << 32) | out_len`, the output batch, which stays valid until the next call.
//!
//! A batch, input and output alike, little-endian, no padding:
//!
//! ```text
//! batch  = magic u32 (0x31424753, "SGB1") | count u32 | record * count
//! record = ts_ns i64 | value f64 | first u32 | last u32 | kind u8 | quality u8
//!          | channel_len u16 | channel (UTF-8, channel_len bytes)
//! ```
//!
//! - `kind`: 0 number, 1 integer (carried as f64), 2 boolean (0.0 or 1.0).
//! - `quality`: 0 good, 1 uncertain, 2 bad.
//! - Input records have `first == last ==` their index in the batch. An output names the
//!   inputs it came from with `first..=last` (indices into the input batch); the agent
//!   copies source, unit and priority from input `first` and records the lineage.
//! - An output with an empty channel (`channel_len` 0) keeps the channel of input `first`
//!   (what most outputs do; it saves writing and checking the name).
//! - Only numeric and boolean readings are given to functions; the others pass the step
//!   unchanged. A function's state (filters, history) lives in its memory between calls
//!   and is lost if the function fails (trap, time or memory limit), when the agent
//!   starts it afresh.
//!
//! The module runs without WASI capabilities: no files, sockets or environment. Writes to
//! stdout/stderr are kept (bounded) to explain a failure; clocks and random numbers work.

use std::fmt;

/// `"SGB1"` read as a little-endian u32.
pub const MAGIC: u32 = 0x3142_4753;
/// Bytes of a record before its channel name.
pub const RECORD_HEADER: usize = 28;
/// Bytes of a batch before its first record.
pub const BATCH_HEADER: usize = 8;

/// What a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Number,
    Integer,
    Bool,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Self::Number => 0,
            Self::Integer => 1,
            Self::Bool => 2,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => Self::Number,
            1 => Self::Integer,
            2 => Self::Bool,
            _ => return None,
        })
    }
}

/// A reading's quality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    Good,
    Uncertain,
    Bad,
}

impl Quality {
    fn code(self) -> u8 {
        match self {
            Self::Good => 0,
            Self::Uncertain => 1,
            Self::Bad => 2,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => Self::Good,
            1 => Self::Uncertain,
            2 => Self::Bad,
            _ => return None,
        })
    }
}

/// One reading of an input batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading<'a> {
    /// Position in the batch: what an output names in `first`/`last`.
    pub index: u32,
    /// Nanoseconds since the Unix epoch, as the instrument observed it.
    pub ts_ns: i64,
    pub value: f64,
    pub kind: Kind,
    pub quality: Quality,
    pub channel: &'a str,
}

/// One record a function emits.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub ts_ns: i64,
    pub value: f64,
    pub kind: Kind,
    pub quality: Quality,
    /// `None`: the channel of input `first`.
    pub channel: Option<String>,
    /// Input indices this record came from: `first..=last`.
    pub first: u32,
    pub last: u32,
}

impl From<&Reading<'_>> for Output {
    /// The reading passed on as it is (change it with the builder methods).
    fn from(r: &Reading<'_>) -> Self {
        Self {
            ts_ns: r.ts_ns,
            value: r.value,
            kind: r.kind,
            quality: r.quality,
            channel: None,
            first: r.index,
            last: r.index,
        }
    }
}

impl Output {
    pub fn value(mut self, v: f64) -> Self {
        self.value = v;
        if self.kind == Kind::Bool {
            self.kind = Kind::Number;
        }
        self
    }

    pub fn flag(mut self, on: bool) -> Self {
        self.value = if on { 1.0 } else { 0.0 };
        self.kind = Kind::Bool;
        self
    }

    pub fn channel(mut self, name: impl Into<String>) -> Self {
        self.channel = Some(name.into());
        self
    }

    pub fn quality(mut self, q: Quality) -> Self {
        self.quality = q;
        self
    }

    /// Came from inputs `first..=last`.
    pub fn from_range(mut self, first: u32, last: u32) -> Self {
        self.first = first.min(last);
        self.last = last.max(first);
        self
    }
}

/// A function: called once per batch, with its state kept between calls.
pub trait Function {
    fn process(&mut self, batch: &[Reading<'_>], out: &mut Vec<Output>);
}

/// Why a batch could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbiError(pub String);

impl fmt::Display for AbiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AbiError {}

/// A record as the wire carries it (both directions).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WireRecord<'a> {
    pub ts_ns: i64,
    pub value: f64,
    pub first: u32,
    pub last: u32,
    pub kind: Kind,
    pub quality: Quality,
    pub channel: &'a str,
}

/// Writes a batch header for `count` records.
pub fn begin_batch(out: &mut Vec<u8>, count: u32) {
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
}

/// Appends one record. A channel name longer than 65,535 bytes is cut (at a character
/// boundary): names are short; this only keeps the length field honest.
pub fn put_record(out: &mut Vec<u8>, r: &WireRecord<'_>) {
    let mut end = r.channel.len().min(u16::MAX as usize);
    while !r.channel.is_char_boundary(end) {
        end -= 1;
    }
    let ch = &r.channel.as_bytes()[..end];
    out.extend_from_slice(&r.ts_ns.to_le_bytes());
    out.extend_from_slice(&r.value.to_le_bytes());
    out.extend_from_slice(&r.first.to_le_bytes());
    out.extend_from_slice(&r.last.to_le_bytes());
    out.push(r.kind.code());
    out.push(r.quality.code());
    out.extend_from_slice(&(ch.len() as u16).to_le_bytes());
    out.extend_from_slice(ch);
}

fn take<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

/// Decodes a batch, checking every length and code; `f` sees each record in order.
pub fn read_batch<'a>(
    b: &'a [u8],
    mut f: impl FnMut(WireRecord<'a>) -> Result<(), AbiError>,
) -> Result<u32, AbiError> {
    if b.len() < BATCH_HEADER {
        return Err(AbiError(format!(
            "batch of {} bytes is shorter than its header",
            b.len()
        )));
    }
    let magic = u32::from_le_bytes(take(b, 0));
    if magic != MAGIC {
        return Err(AbiError(format!(
            "batch starts with {magic:#010x}, not the SGB1 magic"
        )));
    }
    let count = u32::from_le_bytes(take(b, 4));
    let mut at = BATCH_HEADER;
    for i in 0..count {
        if b.len() < at + RECORD_HEADER {
            return Err(AbiError(format!(
                "record {i} of {count} runs past the end of the batch"
            )));
        }
        let kind = Kind::from_code(b[at + 24])
            .ok_or_else(|| AbiError(format!("record {i}: unknown kind {}", b[at + 24])))?;
        let quality = Quality::from_code(b[at + 25])
            .ok_or_else(|| AbiError(format!("record {i}: unknown quality {}", b[at + 25])))?;
        let len = u16::from_le_bytes(take(b, at + 26)) as usize;
        let name_at = at + RECORD_HEADER;
        let name = b
            .get(name_at..name_at + len)
            .ok_or_else(|| AbiError(format!("record {i}: channel name runs past the end")))?;
        let channel = std::str::from_utf8(name)
            .map_err(|e| AbiError(format!("record {i}: channel name is not UTF-8: {e}")))?;
        f(WireRecord {
            ts_ns: i64::from_le_bytes(take(b, at)),
            value: f64::from_le_bytes(take(b, at + 8)),
            first: u32::from_le_bytes(take(b, at + 16)),
            last: u32::from_le_bytes(take(b, at + 20)),
            kind,
            quality,
            channel,
        })?;
        at = name_at + len;
    }
    if at != b.len() {
        return Err(AbiError(format!(
            "{} bytes left over after {count} records",
            b.len() - at
        )));
    }
    Ok(count)
}

/// The guest side of one call: decode `input`, run `f`, encode into `out`.
pub fn guest_call(
    f: &mut dyn Function,
    input: &[u8],
    outputs: &mut Vec<Output>,
    out: &mut Vec<u8>,
) {
    outputs.clear();
    out.clear();
    let mut batch: Vec<Reading<'_>> = Vec::new();
    // A batch the host wrote cannot be malformed; if it were, the function sees nothing.
    let _ = read_batch(input, |r| {
        batch.push(Reading {
            index: r.first,
            ts_ns: r.ts_ns,
            value: r.value,
            kind: r.kind,
            quality: r.quality,
            channel: r.channel,
        });
        Ok(())
    });
    f.process(&batch, outputs);
    begin_batch(out, outputs.len() as u32);
    for o in outputs.iter() {
        put_record(
            out,
            &WireRecord {
                ts_ns: o.ts_ns,
                value: o.value,
                first: o.first,
                last: o.last,
                kind: o.kind,
                quality: o.quality,
                channel: o.channel.as_deref().unwrap_or_default(),
            },
        );
    }
}

/// Exports a [`Function`] (a type with `Default`) as a Skygate function module.
#[macro_export]
macro_rules! export_function {
    ($ty:ty) => {
        struct __SkygateState {
            f: $ty,
            input: Vec<u8>,
            outputs: Vec<$crate::Output>,
            out: Vec<u8>,
        }

        thread_local! {
            static __SKYGATE: ::std::cell::RefCell<Option<__SkygateState>> =
                const { ::std::cell::RefCell::new(None) };
        }

        /// A buffer for the host's next batch (reused between calls).
        #[unsafe(no_mangle)]
        pub extern "C" fn skygate_alloc(len: i32) -> i32 {
            __SKYGATE.with(|s| {
                let mut s = s.borrow_mut();
                let st = s.get_or_insert_with(|| __SkygateState {
                    f: <$ty as Default>::default(),
                    input: Vec::new(),
                    outputs: Vec::new(),
                    out: Vec::new(),
                });
                st.input.clear();
                st.input.resize(len.max(0) as usize, 0);
                st.input.as_mut_ptr() as i32
            })
        }

        /// Processes the batch written to the last `skygate_alloc` buffer.
        #[unsafe(no_mangle)]
        pub extern "C" fn skygate_process(_ptr: i32, _len: i32) -> i64 {
            __SKYGATE.with(|s| {
                let mut s = s.borrow_mut();
                let Some(st) = s.as_mut() else { return 0 };
                $crate::guest_call(&mut st.f, &st.input, &mut st.outputs, &mut st.out);
                ((st.out.as_ptr() as i64) << 32) | st.out.len() as i64
            })
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Sum;

    impl Function for Sum {
        fn process(&mut self, batch: &[Reading<'_>], out: &mut Vec<Output>) {
            let total: f64 = batch.iter().map(|r| r.value).sum();
            if let (Some(a), Some(b)) = (batch.first(), batch.last()) {
                out.push(
                    Output::from(a)
                        .channel("total")
                        .value(total)
                        .from_range(a.index, b.index),
                );
            }
        }
    }

    fn input() -> Vec<u8> {
        let mut b = Vec::new();
        begin_batch(&mut b, 2);
        for (i, v) in [1.5, 2.5].into_iter().enumerate() {
            put_record(
                &mut b,
                &WireRecord {
                    ts_ns: 10 + i as i64,
                    value: v,
                    first: i as u32,
                    last: i as u32,
                    kind: Kind::Number,
                    quality: Quality::Good,
                    channel: "wind",
                },
            );
        }
        b
    }

    #[test]
    fn a_batch_round_trips_and_a_function_sees_indices_and_names() {
        let b = input();
        assert_eq!(b.len(), BATCH_HEADER + 2 * (RECORD_HEADER + 4));
        let mut out = Vec::new();
        guest_call(&mut Sum, &b, &mut Vec::new(), &mut out);
        let mut seen = Vec::new();
        read_batch(&out, |r| {
            seen.push((r.channel.to_string(), r.value, r.first, r.last, r.ts_ns));
            Ok(())
        })
        .expect("decode");
        assert_eq!(seen, [("total".to_string(), 4.0, 0, 1, 10)]);
    }

    #[test]
    fn malformed_batches_are_refused_with_the_reason() {
        let b = input();
        let err = |b: &[u8]| read_batch(b, |_| Ok(())).unwrap_err().0;
        assert!(err(&b[..5]).contains("shorter than its header"));
        assert!(err(&b[..b.len() - 1]).contains("runs past the end"));
        let mut bad = b.clone();
        bad[0] = 0;
        assert!(err(&bad).contains("not the SGB1 magic"));
        let mut bad = b.clone();
        bad[BATCH_HEADER + 24] = 9;
        assert!(err(&bad).contains("unknown kind 9"));
        let mut long = b.clone();
        long.push(0);
        assert!(err(&long).contains("1 bytes left over"));
    }
}
