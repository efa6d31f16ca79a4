//! `skygate buffer ...`: human tables by default, `--json` for scripts.

use std::io::Write;

use super::{BufferCommand, CliError, SelectArgs, data_dir, print_json};
use skygate_buffer::buffer_dir;
use skygate_buffer::ops::{self, Selection};
use skygate_buffer::writer_human_bytes as human;

fn selection(s: &SelectArgs, limit: Option<u64>) -> Selection {
    Selection {
        stream: s.stream.clone(),
        from_seq: s.from_seq,
        to_seq: s.to_seq,
        limit,
    }
}

/// Runs a buffer command; returns the process exit code.
pub fn run(cmd: BufferCommand) -> Result<i32, CliError> {
    let mut out = std::io::stdout().lock();
    match cmd {
        BufferCommand::Stats { dir, json } => {
            let s = ops::stats(&buffer_dir(&data_dir(&dir)?))?;
            if json {
                print_json(&mut out, &s)?;
                return Ok(0);
            }
            writeln!(out, "buffer      {}", s.dir.display())?;
            writeln!(
                out,
                "gateway     {}",
                s.gateway_id.as_deref().unwrap_or("?")
            )?;
            if s.status.degraded {
                writeln!(out, "status      DEGRADED: {}", s.status.reasons.join("; "))?;
            } else {
                writeln!(out, "status      ok")?;
            }
            writeln!(out, "records     {} ({})", s.records, human(s.record_bytes))?;
            writeln!(
                out,
                "seq         {}..{} (last issued {})",
                s.first_seq.map_or("-".into(), |v| v.to_string()),
                s.streams
                    .iter()
                    .map(|x| x.last_seq)
                    .max()
                    .map_or("-".into(), |v| v.to_string()),
                s.last_seq
            )?;
            writeln!(out, "oldest      {}", s.oldest_ts.as_deref().unwrap_or("-"))?;
            writeln!(
                out,
                "files       db {}, wal {}, spool {} in {} files",
                human(s.db_bytes),
                human(s.wal_bytes),
                human(s.spool_bytes),
                s.spool_files
            )?;
            if let Some(d) = s.disk_available_bytes {
                writeln!(out, "disk free   {}", human(d))?;
            }
            writeln!(
                out,
                "gaps        {} ({} records lost, {} uncounted)",
                s.gaps.total, s.gaps.records_lost, s.gaps.uncounted
            )?;
            if s.quarantined > 0 {
                writeln!(
                    out,
                    "quarantine  {} database(s) set aside: run `skygate buffer fsck`",
                    s.quarantined
                )?;
            }
            writeln!(
                out,
                "\n{:<24} {:>10} {:>12} {:>12} {:<30}",
                "SINK", "PENDING", "BYTES", "OLDEST SEQ", "OLDEST INGEST"
            )?;
            for k in &s.sinks {
                writeln!(
                    out,
                    "{:<24} {:>10} {:>12} {:>12} {:<30}",
                    k.sink,
                    k.pending_records,
                    human(k.pending_bytes),
                    k.oldest_pending_seq.map_or("-".into(), |v| v.to_string()),
                    k.oldest_pending_ingest.as_deref().unwrap_or("-")
                )?;
            }
            writeln!(
                out,
                "\n{:<24} {:>10} {:>12} {:>12} {:>12}",
                "STREAM", "RECORDS", "BYTES", "FIRST SEQ", "LAST SEQ"
            )?;
            for st in &s.streams {
                writeln!(
                    out,
                    "{:<24} {:>10} {:>12} {:>12} {:>12}",
                    st.stream,
                    st.records,
                    human(st.bytes),
                    st.first_seq,
                    st.last_seq
                )?;
            }
            Ok(0)
        }
        BufferCommand::Inspect {
            dir,
            select,
            limit,
            json,
        } => {
            let rows = ops::inspect(
                &buffer_dir(&data_dir(&dir)?),
                &selection(&select, Some(limit)),
            )?;
            if json {
                print_json(&mut out, &rows)?;
                return Ok(0);
            }
            writeln!(
                out,
                "{:>10} {:<16} {:<32} {:<20} {:<24} {:<8} {:<16}",
                "SEQ", "STREAM", "TS", "CHANNEL", "VALUE", "QUALITY", "PENDING"
            )?;
            for r in rows {
                writeln!(
                    out,
                    "{:>10} {:<16} {:<32} {:<20} {:<24} {:<8} {:<16}",
                    r.seq,
                    r.stream,
                    r.ts,
                    r.channel,
                    r.value,
                    r.quality,
                    r.pending_sinks.join(",")
                )?;
            }
            Ok(0)
        }
        BufferCommand::Export {
            dir,
            select,
            output,
        } => {
            let d = buffer_dir(&data_dir(&dir)?);
            let sel = selection(&select, None);
            let n = match output {
                Some(p) => {
                    let mut f = std::io::BufWriter::new(std::fs::File::create(&p)?);
                    ops::export(&d, &sel, &mut f)?
                }
                None => ops::export(&d, &sel, &mut out)?,
            };
            eprintln!("exported {n} records");
            Ok(0)
        }
        BufferCommand::Replay { dir, select, sink } => {
            let n = ops::replay(
                &buffer_dir(&data_dir(&dir)?),
                &sink,
                &selection(&select, None),
            )?;
            writeln!(
                out,
                "{n} records marked pending for {sink}; they are sent when the agent starts"
            )?;
            Ok(0)
        }
        BufferCommand::Fsck { dir, json } => {
            let r = ops::fsck(&buffer_dir(&data_dir(&dir)?))?;
            if json {
                print_json(&mut out, &r)?;
            } else {
                writeln!(out, "buffer      {}", r.dir.display())?;
                writeln!(out, "integrity   {}", r.integrity.join("; "))?;
                for q in &r.quarantines {
                    match &q.report {
                        Some(rep) => writeln!(
                            out,
                            "quarantined {} at {}: {} (salvaged {} records, resumed at seq {})",
                            q.dir.display(),
                            rep.at,
                            rep.reason,
                            rep.salvaged_records,
                            rep.resumed_at_seq
                        )?,
                        None => writeln!(out, "quarantined {} (no report)", q.dir.display())?,
                    }
                }
                for p in &r.problems {
                    writeln!(out, "problem     {p}")?;
                }
                writeln!(
                    out,
                    "result      {}",
                    if r.ok { "clean" } else { "PROBLEMS FOUND" }
                )?;
            }
            Ok(if r.ok { 0 } else { 2 })
        }
    }
}
