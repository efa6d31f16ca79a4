//! `skygate fn run FILE.wasm < records.jsonl`: a function outside the agent, with the
//! same ABI, limits and decoding as a workflow step.

use std::io::{BufRead, Write};
use std::sync::Arc;

use skygate_drivers::{Quality, Reading, TimeQuality, Timestamp, Value};

use super::FnCommand;
use skygate_model::{BlobPlacement, Record};

/// Runs an `fn` subcommand; returns the exit code.
pub fn run(cmd: FnCommand) -> i32 {
    match cmd {
        FnCommand::Run {
            file,
            batch,
            timeout,
            max_memory,
            max_output,
            stats,
        } => match run_file(
            &file,
            batch,
            timeout.into(),
            &max_memory,
            &max_output,
            stats,
        ) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("skygate fn run: {e}");
                1
            }
        },
    }
}

/// One NDJSON input line as a record; `line` (1-based) stands in for a missing seq.
fn parse_line(text: &str, line: u64) -> Result<Record, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("line {line}: not JSON: {e}"))?;
    let s = |k: &str| v[k].as_str().map(str::to_string);
    let value = match (v["type"].as_str(), &v["value"]) {
        (Some("integer"), x) if x.is_i64() => Value::Integer(x.as_i64().unwrap_or_default()),
        (_, x) if x.is_boolean() => Value::Bool(x.as_bool().unwrap_or_default()),
        (_, x) if x.is_number() => Value::Number(x.as_f64().unwrap_or_default()),
        (_, serde_json::Value::String(t)) => Value::Text(t.clone()),
        (_, other) => {
            return Err(format!(
                "line {line}: `value` {other} is not a number, boolean or text"
            ));
        }
    };
    let ts = match (v["ts_ns"].as_i64(), s("ts")) {
        (Some(ns), _) => ns,
        (None, Some(t)) => chrono::DateTime::parse_from_rfc3339(&t)
            .map_err(|e| format!("line {line}: ts {t:?}: {e}"))?
            .timestamp_nanos_opt()
            .ok_or_else(|| format!("line {line}: ts {t:?} is out of range"))?,
        (None, None) => return Err(format!("line {line}: no `ts_ns` or `ts`")),
    };
    let channel = s("channel").ok_or_else(|| format!("line {line}: no `channel`"))?;
    let reason = s("quality_reason").unwrap_or_default();
    Ok(Record {
        seq: v["seq"].as_u64().unwrap_or(line),
        stream: Arc::from(s("stream").unwrap_or_else(|| "stdin".into()).as_str()),
        priority: v["priority"].as_u64().map_or(5, |p| p.min(9) as u8),
        ingest_ts: Timestamp::now(),
        reading: Reading {
            source: Arc::from(s("source").unwrap_or_else(|| "stdin".into()).as_str()),
            channel: Arc::from(channel.as_str()),
            ts: Timestamp(ts),
            time_quality: TimeQuality::Unsynced,
            value,
            unit: s("unit").map(|u| Arc::from(u.as_str())),
            quality: match v["quality"].as_str() {
                Some("uncertain") => Quality::Uncertain(reason),
                Some("bad") => Quality::Bad(reason),
                _ => Quality::Good,
            },
        },
        lineage: None,
    })
}

#[cfg(feature = "wasm")]
fn run_file(
    file: &std::path::Path,
    batch: usize,
    timeout: std::time::Duration,
    max_memory: &str,
    max_output: &str,
    stats: bool,
) -> Result<i32, String> {
    use skygate_drivers::config::ByteSize;
    use skygate_functions::builtins::{Item, Ref, Span};
    use skygate_functions::spec::WasmLimits;
    use skygate_functions::wasm;
    use skygate_model::{Lineage, SeqRef};

    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    wasm::check_module(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    let limits = WasmLimits {
        timeout,
        max_memory: ByteSize::parse(max_memory).map_err(|e| format!("--max-memory: {e}"))?,
        max_output_bytes: ByteSize::parse(max_output).map_err(|e| format!("--max-output: {e}"))?,
        ..WasmLimits::default()
    };
    let rt = wasm::WasmRuntime::new(None)?;
    let label = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut step = wasm::WasmStep::new(
        rt.clone(),
        rt.load(&bytes)?,
        &label,
        Default::default(),
        limits,
        "deadletter",
    );
    let workflow: Arc<str> = Arc::from(format!("fn run {label}").as_str());
    let stdin = std::io::stdin();
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut lines = stdin.lock().lines();
    let (mut line_no, mut failed, mut calls, mut records) = (0u64, 0u64, 0u64, 0u64);
    let mut busy = std::time::Duration::ZERO;
    let mut buf = Vec::new();
    loop {
        let mut input: Vec<Item> = Vec::with_capacity(batch);
        for l in lines.by_ref() {
            let l = l.map_err(|e| format!("reading stdin: {e}"))?;
            line_no += 1;
            if l.trim().is_empty() {
                continue;
            }
            let rec = parse_line(&l, line_no)?;
            let idx = input.len() as u32;
            input.push(Item {
                rec,
                from: Span::one(Ref { batch: 0, idx }),
            });
            if input.len() >= batch.max(1) {
                break;
            }
        }
        if input.is_empty() {
            break;
        }
        let seqs: Vec<u64> = input.iter().map(|i| i.rec.seq).collect();
        let n = input.len();
        let (mut out, mut errors) = (
            Vec::new(),
            skygate_functions::builtins::StepErrors::default(),
        );
        let start = tokio::time::Instant::now();
        skygate_functions::builtins::Step::run(&mut step, &mut input, &mut out, &mut errors);
        busy += start.elapsed();
        calls += 1;
        records += n as u64;
        if let Some(reason) = errors.last.filter(|_| !errors.dead.is_empty()) {
            failed += 1;
            eprintln!(
                "skygate fn run: a batch of {} records (lines up to {line_no}) failed: {reason}",
                errors.dead.len()
            );
        }
        for mut it in out {
            let (a, b) = (it.from.first.idx as usize, it.from.last.idx as usize);
            it.rec.lineage = Some(Lineage {
                workflow: workflow.clone(),
                first: SeqRef::Seq(seqs[a]),
                last: SeqRef::Seq(seqs[b]),
                count: it.from.count,
            });
            // Outputs are not numbered: seq 0 leaves the field out.
            it.rec.seq = 0;
            buf.clear();
            skygate_model::write_ndjson(&mut buf, "local", &it.rec, BlobPlacement::Inline);
            stdout
                .write_all(&buf)
                .map_err(|e| format!("writing stdout: {e}"))?;
        }
    }
    stdout.flush().map_err(|e| format!("writing stdout: {e}"))?;
    if stats {
        let per = busy.as_nanos() as f64 / records.max(1) as f64;
        eprintln!(
            "skygate fn run: {calls} calls, {records} records, {per:.0} ns per record in calls, {failed} failed"
        );
    }
    Ok(if failed > 0 { 2 } else { 0 })
}

#[cfg(not(feature = "wasm"))]
fn run_file(
    _file: &std::path::Path,
    _batch: usize,
    _timeout: std::time::Duration,
    _max_memory: &str,
    _max_output: &str,
    _stats: bool,
) -> Result<i32, String> {
    Err("this build of skygate has no WASM runtime (cargo feature `wasm`)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_lines_become_records_and_bad_lines_say_which() {
        let r = parse_line(
            r#"{"schema":1,"seq":41,"stream":"sky","ts_ns":5,"source":"sqm","channel":"mpsas","type":"number","value":21.3,"unit":"mag/arcsec2","quality":"good"}"#,
            1,
        )
        .expect("record");
        assert_eq!(
            (r.seq, &*r.stream, &*r.reading.channel),
            (41, "sky", "mpsas")
        );
        assert_eq!(r.reading.value, Value::Number(21.3));
        let r = parse_line(
            r#"{"ts":"2026-01-01T00:00:00Z","channel":"n","type":"integer","value":3}"#,
            7,
        )
        .expect("record");
        assert_eq!(
            (r.seq, r.reading.value),
            (7, Value::Integer(3)),
            "line number for seq"
        );
        assert!(
            parse_line("{", 3)
                .unwrap_err()
                .starts_with("line 3: not JSON")
        );
        assert!(
            parse_line(r#"{"ts_ns":1,"value":1}"#, 4)
                .unwrap_err()
                .contains("no `channel`")
        );
        assert!(
            parse_line(r#"{"ts_ns":1,"channel":"c","value":[1]}"#, 5)
                .unwrap_err()
                .contains("line 5: `value`")
        );
    }
}
