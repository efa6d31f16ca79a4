//! The operator commands that talk to the running agent over its control API: `status`,
//! `sinks`, `drivers`, `tail`, `errors`, `reload`, `power`, and `audit` (which reads the audit
//! database directly, so it works with the agent stopped too).

use std::io::Write;

use serde_json::Value;
use skygate_model::value_text;

use super::{CliError, Command, PowerAction, SinkAction, data_dir, endpoint, print_json};
use skygate_audit as audit;
use skygate_buffer::writer_human_bytes as human;
use skygate_control::client::Endpoint;
use skygate_control::views::{DriverReply, ErrorsReply};

/// Runs one operator command; returns the exit code.
pub fn run(cmd: Command) -> Result<i32, CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = std::io::stdout().lock();
    let get = |ep: &Endpoint, path: &str| -> Result<Vec<u8>, CliError> {
        Ok(rt.block_on(ep.request("GET", path))?)
    };
    match cmd {
        Command::Status { api, json } => {
            let v: Value = serde_json::from_slice(&get(&endpoint(&api)?, "/v1/status")?)?;
            if json {
                print_json(&mut out, &v)?;
            } else {
                print_status(&mut out, &v)?;
            }
            Ok(0)
        }
        Command::Sinks { action, api, json } => {
            let ep = endpoint(&api)?;
            if let Some(action) = action {
                let (verb, name) = match &action {
                    SinkAction::Pause { name } => ("pause", name),
                    SinkAction::Resume { name } => ("resume", name),
                    SinkAction::Flush { name } => ("flush", name),
                };
                rt.block_on(ep.request("POST", &format!("/v1/sinks/{name}/{verb}")))?;
                writeln!(out, "{name}: {verb} requested")?;
                return Ok(0);
            }
            let v: Value = serde_json::from_slice(&get(&ep, "/v1/sinks")?)?;
            if json {
                print_json(&mut out, &v)?;
            } else {
                print_sinks(&mut out, &v)?;
            }
            Ok(0)
        }
        Command::Drivers { api, json } => {
            let body = get(&endpoint(&api)?, "/v1/drivers")?;
            if json {
                print_json(&mut out, &serde_json::from_slice::<Value>(&body)?)?;
            } else {
                let drivers: Vec<DriverReply> = serde_json::from_slice(&body)?;
                print_drivers(&mut out, &drivers)?;
            }
            Ok(0)
        }
        Command::Workflows { api, json } => {
            let body = get(&endpoint(&api)?, "/v1/workflows")?;
            let v: Value = serde_json::from_slice(&body)?;
            if json {
                print_json(&mut out, &v)?;
            } else {
                print_workflows(&mut out, &v)?;
            }
            Ok(0)
        }
        Command::Errors { api, json } => {
            let body = get(&endpoint(&api)?, "/v1/errors")?;
            let reply: ErrorsReply = serde_json::from_slice(&body)?;
            if json {
                print_json(&mut out, &reply)?;
            } else {
                print_errors(&mut out, &reply)?;
            }
            // Scripts can tell a healthy gateway from one with alarms.
            Ok(if reply.active.iter().any(|a| a.severity == "error") {
                3
            } else {
                0
            })
        }
        Command::Power { action, api, json } => {
            let ep = endpoint(&api)?;
            let v: Value = match action {
                None => serde_json::from_slice(&get(&ep, "/v1/power")?)?,
                Some(a) => {
                    let verb = match a {
                        PowerAction::Fail => "fail",
                        PowerAction::Ok => "ok",
                    };
                    serde_json::from_slice(
                        &rt.block_on(ep.request("POST", &format!("/v1/power/{verb}")))?,
                    )?
                }
            };
            if json {
                print_json(&mut out, &v)?;
            } else {
                print_power(&mut out, &v)?;
            }
            Ok(0)
        }
        Command::Reload { api, json } => {
            let v: Value = serde_json::from_slice(
                &rt.block_on(endpoint(&api)?.request("POST", "/v1/reload"))?,
            )?;
            if json {
                print_json(&mut out, &v)?;
            } else {
                print_reload(&mut out, &v)?;
            }
            Ok(0)
        }
        Command::Tail {
            stream,
            source,
            api,
            json,
            count,
        } => {
            let mut q = Vec::new();
            if let Some(s) = &stream {
                q.push(format!("stream={}", url_escape(s)));
            }
            if let Some(s) = &source {
                q.push(format!("source={}", url_escape(s)));
            }
            let path = format!("/v1/tail?{}", q.join("&"));
            let mut printed = 0u64;
            let mut pending = Vec::new();
            let mut io_error = None;
            rt.block_on(endpoint(&api)?.stream(&path, |chunk| {
                pending.extend_from_slice(chunk);
                while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=nl).collect();
                    let res = if json {
                        out.write_all(&line)
                    } else {
                        writeln!(out, "{}", tail_line(&line))
                    };
                    if let Err(e) = res.and_then(|_| out.flush()) {
                        // A closed pipe (`skygate tail | head`) ends the tail quietly.
                        io_error = Some(e);
                        return false;
                    }
                    printed += 1;
                    if count.is_some_and(|c| printed >= c) {
                        return false;
                    }
                }
                true
            }))?;
            match io_error {
                Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(0),
            }
        }
        Command::Audit {
            dir,
            verify,
            limit,
            json,
        } => audit_cmd(&mut out, &data_dir(&dir)?, verify, limit, json),
        _ => Ok(1),
    }
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'*' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `TIME STREAM SOURCE/CHANNEL = VALUE UNIT [quality]` from an NDJSON line.
fn tail_line(line: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(line) else {
        return String::from_utf8_lossy(line).trim_end().to_string();
    };
    if let Some(n) = v.get("lagged_batches") {
        return format!("... {n} batches skipped: this terminal fell behind ...");
    }
    let quality = match (v["quality"].as_str(), v["quality_reason"].as_str()) {
        (Some("good") | None, _) => String::new(),
        (Some(q), Some(r)) => format!(" [{q}: {r}]"),
        (Some(q), None) => format!(" [{q}]"),
    };
    format!(
        "{} {} {}/{} = {}{}",
        v["ts"].as_str().unwrap_or("?"),
        v["stream"].as_str().unwrap_or("?"),
        v["source"].as_str().unwrap_or("?"),
        v["channel"].as_str().unwrap_or("?"),
        value_text(&v),
        quality
    )
}

fn print_status(out: &mut impl Write, v: &Value) -> Result<(), CliError> {
    let b = &v["buffer"];
    writeln!(
        out,
        "gateway       {} (site {})",
        v["gateway"].as_str().unwrap_or("?"),
        v["site"].as_str().unwrap_or("-")
    )?;
    writeln!(
        out,
        "version       {}   uptime {}s",
        v["version"].as_str().unwrap_or("?"),
        v["uptime_s"]
    )?;
    writeln!(
        out,
        "time quality  {}",
        v["time_quality"].as_str().unwrap_or("?")
    )?;
    if b["degraded"] == true {
        let reasons: Vec<&str> = b["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        writeln!(out, "buffer        DEGRADED: {}", reasons.join("; "))?;
    } else {
        writeln!(out, "buffer        ok")?;
    }
    writeln!(
        out,
        "stored        {} records, {}; last seq {}; {} evicted in {} gaps",
        b["records"],
        human(b["bytes"].as_u64().unwrap_or(0)),
        b["last_seq"],
        b["records_evicted"],
        b["gaps"]
    )?;
    let i = &v["ingest"];
    writeln!(
        out,
        "ingest        {} ({} readings, {} unrouted)",
        if i["running"] == true {
            "running"
        } else {
            "STOPPED"
        },
        i["readings"],
        i["unrouted"]
    )?;
    Ok(())
}

fn print_sinks(out: &mut impl Write, v: &Value) -> Result<(), CliError> {
    writeln!(
        out,
        "{:<20} {:<12} {:>10} {:>10} {:>12} {:>10} {:>10} {:>6}  LAST ERROR",
        "SINK", "STATE", "BACKLOG", "BYTES", "OLDEST (s)", "RATE/s", "DELIVERED", "DEAD"
    )?;
    for s in v.as_array().into_iter().flatten() {
        writeln!(
            out,
            "{:<20} {:<12} {:>10} {:>10} {:>12} {:>10} {:>10} {:>6}  {}",
            s["name"].as_str().unwrap_or("?"),
            if s["paused"] == true {
                "paused"
            } else {
                s["state"].as_str().unwrap_or("?")
            },
            // Display of a JSON value ignores widths: format numbers as strings.
            s["backlog_records"].to_string(),
            human(s["backlog_bytes"].as_u64().unwrap_or(0)),
            s["oldest_unsent_age_s"]
                .as_f64()
                .map_or("-".into(), |a| format!("{a:.1}")),
            s["drain_rate_per_s"]
                .as_f64()
                .map_or("-".into(), |r| format!("{r:.1}")),
            s["delivered_records"].to_string(),
            s["dead_lettered"].as_u64().unwrap_or(0),
            s["last_error"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}

fn print_workflows(out: &mut impl Write, list: &Value) -> Result<(), CliError> {
    writeln!(
        out,
        "{:<16} {:<20} {:<20} {:>10} {:>10} {:>7}  STEPS",
        "WORKFLOW", "INPUT", "OUTPUT", "IN", "OUT", "ERRORS"
    )?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let join = |v: &Value| {
        v.as_array()
            .map(|a| a.iter().map(text).collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    };
    for w in list.as_array().into_iter().flatten() {
        writeln!(
            out,
            "{:<16} {:<20} {:<20} {:>10} {:>10} {:>7}  {}",
            text(&w["name"]),
            join(&w["input"]),
            text(&w["output_stream"]),
            w["records_in"].as_u64().unwrap_or(0),
            w["records_out"].as_u64().unwrap_or(0),
            w["errors"].as_u64().unwrap_or(0),
            join(&w["steps"]).replace(',', " -> "),
        )?;
        if let Some(e) = w["last_error"].as_str() {
            writeln!(out, "    last error: {e}")?;
        }
    }
    Ok(())
}

fn print_drivers(out: &mut impl Write, drivers: &[DriverReply]) -> Result<(), CliError> {
    writeln!(
        out,
        "{:<16} {:<7} {:<16} {:<9} {:>10} {:>7}  LAST ERROR",
        "DRIVER", "KIND", "STREAM", "STATE", "READINGS", "ERRORS"
    )?;
    for d in drivers {
        writeln!(
            out,
            "{:<16} {:<7} {:<16} {:<9} {:>10} {:>7}  {}",
            d.name,
            d.kind,
            d.stream,
            d.state,
            d.readings,
            d.errors,
            d.last_error.as_deref().unwrap_or("")
        )?;
        for (ch, v) in d.channels.as_object().into_iter().flatten() {
            let q = v["quality"].as_str().unwrap_or("?");
            let q = match v["quality_reason"].as_str() {
                Some(r) => format!("{q}: {r}"),
                None => q.to_string(),
            };
            writeln!(
                out,
                "    {:<26} {:<24} {:<10} {}",
                ch,
                value_text(v),
                q,
                v["time_quality"].as_str().unwrap_or("")
            )?;
        }
        for (k, n) in &d.counters {
            writeln!(out, "    counter {k} = {n}")?;
        }
    }
    Ok(())
}

fn print_errors(out: &mut impl Write, r: &ErrorsReply) -> Result<(), CliError> {
    if r.active.is_empty() {
        writeln!(out, "no active alarms")?;
    } else {
        writeln!(out, "ACTIVE")?;
        for a in &r.active {
            writeln!(
                out,
                "  {:<8} {:<22} {}",
                a.severity.to_uppercase(),
                a.component,
                a.message
            )?;
        }
    }
    if !r.recent.is_empty() {
        writeln!(out, "RECENT (newest first)")?;
        for e in &r.recent {
            let times = if e.count > 1 {
                format!(" (x{})", e.count)
            } else {
                String::new()
            };
            writeln!(out, "  {} {:<22} {}{}", e.ts, e.component, e.message, times)?;
        }
    }
    Ok(())
}

fn print_reload(out: &mut impl Write, v: &Value) -> Result<(), CliError> {
    writeln!(out, "reloaded {}", v["source"].as_str().unwrap_or("?"))?;
    for (key, label) in [
        ("drivers_started", "started"),
        ("drivers_stopped", "stopped"),
        ("drivers_restarted", "restarted"),
    ] {
        let names: Vec<&str> = v[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !names.is_empty() {
            writeln!(out, "  drivers {label}: {}", names.join(", "))?;
        }
    }
    if v["routes_changed"] == true {
        writeln!(out, "  routes changed")?;
    }
    if v["health_changed"] == true {
        writeln!(out, "  heartbeat changed")?;
    }
    let pending: Vec<&str> = v["restart_required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !pending.is_empty() {
        writeln!(
            out,
            "  changed but applied only at the next restart: {}",
            pending.join(", ")
        )?;
    }
    Ok(())
}

fn audit_cmd(
    out: &mut impl Write,
    dir: &std::path::Path,
    verify: bool,
    limit: u64,
    json: bool,
) -> Result<i32, CliError> {
    if verify {
        let r = audit::verify(dir)?;
        if json {
            print_json(out, &r)?;
        } else if r.ok {
            writeln!(
                out,
                "audit log intact: {} entries, hash chain and head verified",
                r.rows
            )?;
        } else {
            writeln!(
                out,
                "AUDIT LOG TAMPERED: {}",
                r.problem.as_deref().unwrap_or("?")
            )?;
        }
        return Ok(if r.ok { 0 } else { 2 });
    }
    let rows = audit::list(dir, limit)?;
    if json {
        print_json(out, &rows)?;
        return Ok(0);
    }
    writeln!(
        out,
        "{:>6} {:<30} {:<16} {:<16} {:<20} {:<24} DETAIL",
        "ID", "TIME", "ACTOR", "ACTION", "TARGET", "RESULT"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:>6} {:<30} {:<16} {:<16} {:<20} {:<24} {}",
            r.id,
            r.ts,
            r.event.actor,
            r.event.action,
            r.event.target,
            r.event.result,
            r.event.detail
        )?;
    }
    Ok(0)
}

fn print_power(out: &mut impl Write, v: &Value) -> std::io::Result<()> {
    let input = |k: &str| v["inputs"][k].as_str().unwrap_or("none").to_string();
    writeln!(
        out,
        "inputs: gpio {}, operator {}",
        input("gpio"),
        input("operator")
    )?;
    match v.get("failed").filter(|f| !f.is_null()) {
        Some(f) => writeln!(
            out,
            "POWER FAILED (input {}): intake stopped in {:.1} ms, buffer on the disk in {:.1} ms (hold-up budget {:.0} ms), up to seq {}",
            f["input"].as_str().unwrap_or("?"),
            f["intake_stopped_ms"].as_f64().unwrap_or(0.0),
            f["sealed_ms"].as_f64().unwrap_or(0.0),
            f["budget_ms"].as_f64().unwrap_or(0.0),
            f["last_seq"]
        )?,
        None => writeln!(out, "power: ok")?,
    }
    if let Some(e) = v.get("last_event").filter(|e| !e.is_null()) {
        writeln!(
            out,
            "last failure: {} to {} ({:.1} s{}), sealed in {:.1} ms",
            e["failed_at"].as_str().unwrap_or("?"),
            e["restored_at"].as_str().unwrap_or("?"),
            e["outage_s"].as_f64().unwrap_or(0.0),
            if e["went_down"].as_bool() == Some(true) {
                ", the gateway went down"
            } else {
                ""
            },
            e["sealed_ms"].as_f64().unwrap_or(0.0)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sinks_table_shows_state_dead_letters_and_the_last_error() {
        let v = serde_json::json!([
            {"name": "pipeline", "paused": false, "state": "failing", "backlog_records": 1200,
             "backlog_bytes": 2_000_000, "oldest_unsent_age_s": 75.5, "drain_rate_per_s": null,
             "delivered_records": 880, "dead_lettered": 3,
             "last_error": "Kafka: Local: Message timed out"},
            {"name": "archive", "paused": true, "state": "connected", "backlog_records": 0,
             "backlog_bytes": 0, "oldest_unsent_age_s": null, "drain_rate_per_s": 12.0,
             "delivered_records": 5000, "dead_lettered": 0, "last_error": null}
        ]);
        let mut out = Vec::new();
        print_sinks(&mut out, &v).expect("print");
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].contains("DEAD") && lines[0].ends_with("LAST ERROR"),
            "{text}"
        );
        let at = |col: &str| lines[0].find(col).expect("column") + col.len();
        // Right-aligned under their headings.
        assert_eq!(
            &lines[1][at("DELIVERED") - 3..at("DELIVERED")],
            "880",
            "{text}"
        );
        assert_eq!(&lines[1][at("DEAD") - 1..at("DEAD")], "3", "{text}");
        assert!(
            lines[1].starts_with("pipeline             failing "),
            "{text}"
        );
        assert!(
            lines[1].ends_with("Kafka: Local: Message timed out"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("archive") && lines[2].contains("paused"),
            "{text}"
        );
    }
}
