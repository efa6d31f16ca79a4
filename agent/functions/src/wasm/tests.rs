//! Containment and the ABI, with small modules written as WebAssembly text: each failure
//! mode is exact, and none needs a toolchain. (The Rust SDK's modules are exercised end
//! to end in `tests/tests/wasm.rs`.)

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use skygate_drivers::{Quality, Value};

use super::*;
use crate::builtins::{Ref, Span};
use skygate_model::fixtures::record;

/// A module whose `skygate_process` body is `body` (params `$p`, `$l`; returns i64).
/// `skygate_alloc` hands out offset 1024 of a 2-page memory.
fn module(body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            (memory (export "memory") 2)
            (func (export "skygate_alloc") (param i32) (result i32) (i32.const 1024))
            (func (export "skygate_process") (param $p i32) (param $l i32) (result i64) {body}))"#
    ))
    .expect("wat")
}

/// Returns the input batch as the output: every reading passed on unchanged.
const ECHO: &str = "(i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32)) (i64.extend_i32_u (local.get $l)))";

fn items(n: usize) -> Vec<Item> {
    (0..n)
        .map(|i| {
            let mut rec = record("wx", Value::Number(i as f64));
            rec.reading.channel = Arc::from("wind");
            Item {
                rec,
                from: Span::one(Ref {
                    batch: 1,
                    idx: i as u32,
                }),
            }
        })
        .collect()
}

fn limits() -> WasmLimits {
    WasmLimits {
        timeout: Duration::from_millis(50),
        max_memory: 4 << 20,
        max_output_bytes: 1 << 20,
        max_output_per_input: 4,
    }
}

fn step(bytes: &[u8]) -> WasmStep {
    let rt = WasmRuntime::new(None).expect("runtime");
    let loaded = rt.load(bytes).expect("compile");
    WasmStep::new(
        rt,
        loaded,
        "t.wasm",
        Selector::default(),
        limits(),
        "deadletter",
    )
}

/// One batch through `s`: (outputs, dead letters, error reason).
fn run(s: &mut WasmStep, input: Vec<Item>) -> (Vec<Item>, Vec<Item>, Option<String>) {
    let mut input = input;
    let mut out = Vec::new();
    let mut errors = StepErrors::default();
    s.run(&mut input, &mut out, &mut errors);
    (out, errors.dead, errors.last)
}

#[test]
fn a_good_module_sees_the_batch_and_its_outputs_keep_lineage() {
    let mut s = step(&module(ECHO));
    let mut input = items(3);
    input.push({
        let mut t = items(1).remove(0);
        t.rec.reading.value = Value::Text("calm".into());
        t
    });
    let (out, dead, err) = run(&mut s, input);
    assert!(dead.is_empty() && err.is_none(), "{err:?}");
    let values: Vec<&Value> = out.iter().map(|i| &i.rec.reading.value).collect();
    // Text is not for functions: it passes first, then what the function returned.
    assert_eq!(
        values,
        [
            &Value::Text("calm".into()),
            &Value::Number(0.0),
            &Value::Number(1.0),
            &Value::Number(2.0)
        ]
    );
    assert_eq!(out[3].from, Span::one(Ref { batch: 1, idx: 2 }));
    assert_eq!(s.failures, 0);
}

#[test]
fn an_endless_loop_is_stopped_at_its_time_limit_and_the_batch_dead_lettered() {
    let mut s = step(&module("(loop $forever (br $forever)) (i64.const 0)"));
    let start = Instant::now();
    let (out, dead, err) = run(&mut s, items(5));
    let took = start.elapsed();
    assert!(out.is_empty());
    assert_eq!(dead.len(), 5, "the whole batch");
    let err = err.expect("reason");
    assert!(err.contains("ran past its time limit of 50ms"), "{err}");
    // Bounded: the limit plus the epoch tick, far below this generous ceiling.
    assert!(took < Duration::from_secs(5), "{took:?}");
    let d = &dead[0].rec;
    assert_eq!(&*d.stream, "deadletter");
    assert!(matches!(&d.reading.quality, Quality::Bad(r) if r.contains("t.wasm ran past")));
    assert_eq!(
        d.reading.value,
        Value::Number(0.0),
        "the record itself, unchanged"
    );
    // A fresh instance for the next batch: still looping, still contained.
    let (_, dead, _) = run(&mut s, items(2));
    assert_eq!((dead.len(), s.failures), (2, 2));
}

#[test]
fn a_trap_and_a_failed_allocation_are_contained() {
    let mut s = step(&module("unreachable"));
    let (_, dead, err) = run(&mut s, items(2));
    assert_eq!(dead.len(), 2);
    assert!(err.expect("reason").contains("trapped"));
    // 30,000 pages (~2 GB) is refused by the 4 MiB limit: memory.grow says -1.
    let mut s = step(&module(
        "(if (i32.eq (memory.grow (i32.const 30000)) (i32.const -1)) (then unreachable)) (i64.const 0)",
    ));
    let (_, dead, err) = run(&mut s, items(2));
    assert_eq!(dead.len(), 2);
    assert!(err.expect("reason").contains("trapped"));
}

#[test]
fn outputs_too_big_or_pointing_outside_memory_are_refused() {
    // 2 GiB claimed.
    let mut s = step(&module("(i64.const 0x7fffffff)"));
    let (_, dead, err) = run(&mut s, items(2));
    assert_eq!(dead.len(), 2);
    assert!(
        err.expect("reason")
            .contains("is over the limit of 1048576 bytes")
    );
    // Within the byte limit but past the end of memory.
    let mut s = step(&module("(i64.const 0x0010000000000100)"));
    let (_, _, err) = run(&mut s, items(1));
    assert!(err.expect("reason").contains("outside its memory"));
    // A header claiming ten million records for a batch of 2 (limit 2 * 4 + 1024).
    let mut s = step(&module(
        "(i32.store (i32.const 4096) (i32.const 0x31424753)) (i32.store (i32.const 4100) (i32.const 10000000)) (i64.const 0x0000100000000008)",
    ));
    let (_, _, err) = run(&mut s, items(2));
    assert!(
        err.expect("reason")
            .contains("10000000 records is over the limit of 1032")
    );
    // A well-formed record naming an input that does not exist.
    let mut s = step(&module(
        "(i32.store (i32.const 1048) (i32.const 7)) (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32)) (i64.extend_i32_u (local.get $l)))",
    ));
    let (_, _, err) = run(&mut s, items(1));
    assert!(
        err.expect("reason").contains("names inputs 7..=0"),
        "first set past last"
    );
}

#[test]
fn modules_that_cannot_work_are_refused_before_they_run() {
    assert!(
        check_module(b"not wasm")
            .unwrap_err()
            .contains("no \\0asm header")
    );
    let missing = wat::parse_str("(module (memory (export \"memory\") 1))").expect("wat");
    assert!(
        check_module(&missing)
            .unwrap_err()
            .contains("does not export `skygate_alloc`")
    );
    let net = wat::parse_str(
        "(module (import \"env\" \"connect\" (func)) (memory (export \"memory\") 1) (func (export \"skygate_alloc\") (param i32) (result i32) (i32.const 0)) (func (export \"skygate_process\") (param i32 i32) (result i64) (i64.const 0)))",
    )
    .expect("wat");
    assert!(
        check_module(&net)
            .unwrap_err()
            .contains("imports env::connect")
    );
    assert_eq!(
        check_module(&module(ECHO)).expect("fine").len(),
        64,
        "sha-256 hex"
    );
}

#[test]
fn a_compiled_module_is_cached_and_a_second_runtime_loads_it_without_compiling() {
    let d = tempfile::tempdir().expect("tmp");
    let bytes = module(ECHO);
    let first = WasmRuntime::new(Some(d.path().to_path_buf())).expect("runtime");
    assert!(!first.load(&bytes).expect("load").from_cache);
    assert_eq!(first.compiles.load(Ordering::Relaxed), 1);
    let again = WasmRuntime::new(Some(d.path().to_path_buf())).expect("runtime");
    let loaded = again.load(&bytes).expect("load");
    assert!(loaded.from_cache);
    assert_eq!(
        again.compiles.load(Ordering::Relaxed),
        0,
        "nothing compiled"
    );
    // A damaged cache file is compiled again, not trusted.
    let cached: Vec<_> = walk(d.path());
    assert_eq!(cached.len(), 1);
    std::fs::write(&cached[0], b"garbage").expect("damage");
    let third = WasmRuntime::new(Some(d.path().to_path_buf())).expect("runtime");
    assert!(!third.load(&bytes).expect("load").from_cache);
    // What was loaded from the cache before runs (it was read, not mapped).
    let mut s = WasmStep::new(again, loaded, "t.wasm", Selector::default(), limits(), "dl");
    assert_eq!(run(&mut s, items(2)).0.len(), 2, "the cached module runs");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("ls").flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn outputs_may_rename_share_an_input_and_keep_its_channel_when_they_name_none() {
    let given = items(2);
    let mut b = Vec::new();
    abi::begin_batch(&mut b, 3);
    let rec = |first, channel, value| abi::WireRecord {
        ts_ns: 7,
        value,
        first,
        last: first,
        kind: abi::Kind::Number,
        quality: abi::Quality::Good,
        channel,
    };
    for r in [rec(0, "wind_max", 9.0), rec(0, "", 8.0), rec(1, "", 1.5)] {
        abi::put_record(&mut b, &r);
    }
    check_output(&b, 2).expect("valid");
    let out = decode(&b, given, "t.wasm");
    let got: Vec<(&str, &Value, Span)> = out
        .iter()
        .map(|i| (&*i.rec.reading.channel, &i.rec.reading.value, i.from))
        .collect();
    let one = |idx| Span::one(Ref { batch: 1, idx });
    assert_eq!(
        got,
        [
            ("wind_max", &Value::Number(9.0), one(0)),
            ("wind", &Value::Number(8.0), one(0)),
            ("wind", &Value::Number(1.5), one(1)),
        ]
    );
    let mut bad = Vec::new();
    abi::begin_batch(&mut bad, 1);
    abi::put_record(&mut bad, &rec(0, "no spaces allowed", 1.0));
    assert!(
        check_output(&bad, 2)
            .unwrap_err()
            .contains("an output's channel")
    );
}
