//! `skygate status` and `skygate sinks`: the running agent, over its control socket.

use std::io::Write;

use serde_json::Value;

use super::{CliError, data_dir, print_json};
use super::{Command, SinkAction};
use crate::buffer::writer_human_bytes as human;
use crate::control::{audit, client, socket_path};

/// Runs `status` or `sinks`; returns the exit code.
pub fn run(cmd: Command) -> Result<i32, CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = std::io::stdout().lock();
    match cmd {
        Command::Status { dir, json } => {
            let sock = socket_path(&data_dir(&dir)?);
            let v: Value = serde_json::from_slice(&rt.block_on(client::request(
                &sock,
                "GET",
                "/v1/status",
            ))?)?;
            if json {
                print_json(&mut out, &v)?;
                return Ok(0);
            }
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
                writeln!(
                    out,
                    "buffer        DEGRADED: {}",
                    b["reasons"]
                        .as_array()
                        .map(|r| r
                            .iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join("; "))
                        .unwrap_or_default()
                )?;
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
            Ok(0)
        }
        Command::Sinks { action, dir, json } => {
            let sock = socket_path(&data_dir(&dir)?);
            if let Some(action) = action {
                let (verb, name) = match &action {
                    SinkAction::Pause { name } => ("pause", name),
                    SinkAction::Resume { name } => ("resume", name),
                    SinkAction::Flush { name } => ("flush", name),
                };
                rt.block_on(client::request(
                    &sock,
                    "POST",
                    &format!("/v1/sinks/{name}/{verb}"),
                ))?;
                writeln!(out, "{name}: {verb} requested")?;
                return Ok(0);
            }
            let v: Value = serde_json::from_slice(&rt.block_on(client::request(
                &sock,
                "GET",
                "/v1/sinks",
            ))?)?;
            if json {
                print_json(&mut out, &v)?;
                return Ok(0);
            }
            writeln!(
                out,
                "{:<20} {:<12} {:>10} {:>10} {:>12} {:>10}  LAST ERROR",
                "SINK", "STATE", "BACKLOG", "BYTES", "OLDEST (s)", "DELIVERED"
            )?;
            for s in v.as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "{:<20} {:<12} {:>10} {:>10} {:>12} {:>10}  {}",
                    s["name"].as_str().unwrap_or("?"),
                    s["state"].as_str().unwrap_or("?"),
                    s["backlog_records"],
                    human(s["backlog_bytes"].as_u64().unwrap_or(0)),
                    s["oldest_unsent_age_s"]
                        .as_f64()
                        .map_or("-".into(), |a| format!("{a:.1}")),
                    s["delivered_records"],
                    s["last_error"].as_str().unwrap_or("")
                )?;
            }
            Ok(0)
        }
        Command::Audit {
            dir,
            verify,
            limit,
            json,
        } => {
            let d = data_dir(&dir)?;
            if verify {
                let r = audit::verify(&d)?;
                if json {
                    print_json(&mut out, &r)?;
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
            let rows = audit::list(&d, limit)?;
            if json {
                print_json(&mut out, &rows)?;
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
        _ => Ok(1),
    }
}
