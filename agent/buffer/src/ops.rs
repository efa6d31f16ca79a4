//! Operator commands on a buffer directory: `stats`, `inspect`, `export`, `replay`, `fsck`.
//!
//! `stats`, `inspect`, `export` and `fsck` open the database read-only and work while the
//! agent runs (WAL readers do not disturb the writer). `replay` writes, so it takes the
//! buffer's lock and refuses while an agent holds it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use serde::Serialize;

use super::reader::gap_from_row;
use super::schema::{self, DB_FILE, ROW_COLUMNS};
use super::startup::{self, QUARANTINE_DIR, QuarantineReport, SPOOL_DIR};
use super::{BufferError, BufferStatus};
use skygate_model::{self as model, BlobPlacement, Gap};

#[derive(Debug, Serialize)]
pub struct Stats {
    pub dir: PathBuf,
    pub gateway_id: Option<String>,
    pub status: BufferStatus,
    pub db_bytes: u64,
    pub wal_bytes: u64,
    pub spool_files: u64,
    pub spool_bytes: u64,
    pub records: u64,
    pub record_bytes: u64,
    /// Lowest seq still stored.
    pub first_seq: Option<u64>,
    /// Last seq ever issued.
    pub last_seq: u64,
    pub oldest_ts: Option<String>,
    pub streams: Vec<StreamStats>,
    pub sinks: Vec<SinkStats>,
    pub gaps: GapStats,
    pub disk_available_bytes: Option<u64>,
    pub quarantined: usize,
}

#[derive(Debug, Serialize)]
pub struct StreamStats {
    pub stream: String,
    pub records: u64,
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

#[derive(Debug, Serialize)]
pub struct SinkStats {
    pub sink: String,
    pub pending_records: u64,
    pub pending_bytes: u64,
    pub oldest_pending_seq: Option<u64>,
    pub oldest_pending_ingest: Option<String>,
    pub gaps_pending: u64,
}

#[derive(Debug, Serialize)]
pub struct GapStats {
    pub total: u64,
    /// Records known lost (gaps with unknown counts not included).
    pub records_lost: u64,
    pub uncounted: u64,
    pub recent: Vec<Gap>,
}

/// A read-only connection inside one read transaction: every statement of a command sees
/// the same snapshot, so figures read one after the other agree with each other even
/// while the agent commits (WAL readers never block the writer). Dropped, it rolls back.
fn open_ro(dir: &Path) -> Result<Connection, BufferError> {
    let db = dir.join(DB_FILE);
    if !db.exists() {
        return Err(BufferError::Other(format!(
            "no buffer database at {}",
            db.display()
        )));
    }
    let conn = schema::open_readonly(&db)?;
    conn.execute_batch("BEGIN DEFERRED")
        .map_err(|e| BufferError::Other(format!("{}: cannot start a read: {e}", db.display())))?;
    Ok(conn)
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

pub fn stats(dir: &Path) -> Result<Stats, BufferError> {
    let conn = open_ro(dir)?;
    let (records, record_bytes, first_seq, oldest_ts): (i64, i64, Option<i64>, Option<i64>) = conn
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(seq), MIN(ts) FROM records",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
    let meta_last: u64 = schema::get_meta(&conn, "last_seq")?
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let status: BufferStatus = schema::get_meta(&conn, "status")?
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let streams = conn
        .prepare("SELECT stream, COUNT(*), SUM(size), MIN(seq), MAX(seq) FROM records GROUP BY stream ORDER BY stream")?
        .query_map([], |r| {
            Ok(StreamStats {
                stream: r.get(0)?,
                records: r.get::<_, i64>(1)? as u64,
                bytes: r.get::<_, i64>(2)? as u64,
                first_seq: r.get::<_, i64>(3)? as u64,
                last_seq: r.get::<_, i64>(4)? as u64,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let sink_bits: Vec<(String, i64)> = conn
        .prepare("SELECT name, bit FROM sinks ORDER BY name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut sinks = Vec::new();
    for (name, bit) in sink_bits {
        let mask = 1i64 << bit;
        let (n, b, oldest, oldest_ingest): (i64, i64, Option<i64>, Option<i64>) = conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(seq), MIN(ingest_ts) FROM records WHERE (pending & ?1) != 0",
            [mask],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        let gaps_pending: i64 = conn.query_row(
            "SELECT COUNT(*) FROM gaps WHERE (pending & ?1) != 0",
            [mask],
            |r| r.get(0),
        )?;
        sinks.push(SinkStats {
            sink: name,
            pending_records: n as u64,
            pending_bytes: b as u64,
            oldest_pending_seq: oldest.map(|s| s as u64),
            oldest_pending_ingest: oldest_ingest.map(model::rfc3339),
            gaps_pending: gaps_pending as u64,
        });
    }
    let (total, lost, uncounted): (i64, i64, i64) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(count), 0), COALESCE(SUM(count IS NULL), 0) FROM gaps",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let recent = conn
        .prepare("SELECT id, stream, first_seq, last_seq, count, first_ts, last_ts, reason, recorded_at FROM gaps ORDER BY id DESC LIMIT 10")?
        .query_map([], gap_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    let (spool_files, spool_bytes) = std::fs::read_dir(dir.join(SPOOL_DIR))
        .map(|rd| {
            rd.flatten().fold((0, 0), |(n, b), e| {
                (n + 1, b + e.metadata().map(|m| m.len()).unwrap_or(0))
            })
        })
        .unwrap_or((0, 0));
    use skygate_bsp::Board;
    let disk = skygate_bsp::GenericLinux::default()
        .disk_space(dir)
        .ok()
        .map(|d| d.available_bytes);
    Ok(Stats {
        dir: dir.to_path_buf(),
        gateway_id: schema::get_meta(&conn, "gateway_id")?,
        status,
        db_bytes: file_len(&dir.join(DB_FILE)),
        wal_bytes: file_len(&dir.join(format!("{DB_FILE}-wal"))),
        spool_files,
        spool_bytes,
        records: records as u64,
        record_bytes: record_bytes as u64,
        first_seq: first_seq.map(|s| s as u64),
        last_seq: meta_last,
        oldest_ts: oldest_ts.map(model::rfc3339),
        streams,
        sinks,
        gaps: GapStats {
            total: total as u64,
            records_lost: lost as u64,
            uncounted: uncounted as u64,
            recent,
        },
        disk_available_bytes: disk,
        quarantined: list_quarantines(dir).len(),
    })
}

/// Which records `inspect`, `export` and `replay` act on.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub stream: Option<String>,
    pub from_seq: Option<u64>,
    pub to_seq: Option<u64>,
    pub limit: Option<u64>,
}

impl Selection {
    /// A `WHERE ... ORDER BY seq [LIMIT n]` clause whose placeholders start at `?{first}`,
    /// and its arguments.
    fn sql(&self, first: usize) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value as V;
        let mut clauses = vec![format!("seq >= ?{first}"), format!("seq <= ?{}", first + 1)];
        let mut args = vec![
            V::Integer(self.from_seq.unwrap_or(0).min(i64::MAX as u64) as i64),
            V::Integer(self.to_seq.unwrap_or(u64::MAX).min(i64::MAX as u64) as i64),
        ];
        if let Some(s) = &self.stream {
            clauses.push(format!("stream = ?{}", first + args.len()));
            args.push(V::Text(s.clone()));
        }
        let limit = self
            .limit
            .map(|l| format!(" LIMIT {l}"))
            .unwrap_or_default();
        (
            format!("WHERE {} ORDER BY seq{limit}", clauses.join(" AND ")),
            args,
        )
    }
}

#[derive(Debug, Serialize)]
pub struct InspectRow {
    pub seq: u64,
    pub stream: String,
    pub ts: String,
    pub source: String,
    pub channel: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
    pub quality: String,
    pub size: u64,
    pub pending_sinks: Vec<String>,
    pub spooled: bool,
}

fn sink_names(conn: &Connection) -> Result<BTreeMap<i64, String>, BufferError> {
    Ok(conn
        .prepare("SELECT bit, name FROM sinks")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?)
}

pub fn inspect(dir: &Path, sel: &Selection) -> Result<Vec<InspectRow>, BufferError> {
    let conn = open_ro(dir)?;
    let names = sink_names(&conn)?;
    let (clause, args) = sel.sql(1);
    let mut stmt = conn.prepare(&format!(
        "SELECT {ROW_COLUMNS}, size, pending FROM records {clause}"
    ))?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let size = row.get::<_, i64>(6)? as u64;
        let pending = row.get::<_, i64>(7)?;
        let p = schema::row_parts(row)?;
        let spooled = p.blob.is_some();
        let reading = schema::decode_body(p.seq, &p.body)?;
        let value = match &reading.value {
            skygate_drivers::Value::Number(v) => v.to_string(),
            skygate_drivers::Value::Integer(v) => v.to_string(),
            skygate_drivers::Value::Bool(v) => v.to_string(),
            skygate_drivers::Value::Text(t) => format!("{t:?}"),
            skygate_drivers::Value::Bytes(b) => format!("{} bytes", b.len()),
            skygate_drivers::Value::Blob(b) => format!(
                "{} {} bytes",
                b.content_type,
                if spooled { size } else { b.data.len() as u64 }
            ),
        };
        out.push(InspectRow {
            seq: p.seq,
            stream: p.stream,
            ts: model::rfc3339(reading.ts.as_nanos()),
            source: reading.source.to_string(),
            channel: reading.channel.to_string(),
            kind: reading.value.kind().to_string(),
            value,
            quality: reading.quality.as_str().to_string(),
            size,
            pending_sinks: names
                .iter()
                .filter(|(b, _)| pending & (1 << **b) != 0)
                .map(|(_, n)| n.clone())
                .collect(),
            spooled,
        });
    }
    Ok(out)
}

/// Writes the selected records as NDJSON (schema in `model`), blobs inline. Returns the
/// number of records written.
pub fn export(dir: &Path, sel: &Selection, out: &mut dyn Write) -> Result<u64, BufferError> {
    let conn = open_ro(dir)?;
    let gateway = schema::get_meta(&conn, "gateway_id")?.unwrap_or_default();
    let spool = dir.join(SPOOL_DIR);
    let (clause, args) = sel.sql(1);
    let mut stmt = conn.prepare(&format!("SELECT {ROW_COLUMNS} FROM records {clause}"))?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    let mut n = 0;
    let mut line = Vec::with_capacity(512);
    while let Some(row) = rows.next()? {
        let rec = schema::into_record(schema::row_parts(row)?, &spool)?;
        line.clear();
        model::write_ndjson(&mut line, &gateway, &rec, BlobPlacement::Inline);
        out.write_all(&line)?;
        n += 1;
    }
    out.flush()?;
    Ok(n)
}

/// Marks the selected records pending again for `sink`, so it delivers them once more at
/// the next start. Only records still in the buffer can be replayed. Refuses while an
/// agent runs on the directory.
pub fn replay(dir: &Path, sink: &str, sel: &Selection) -> Result<u64, BufferError> {
    let _lock = startup::lock_dir(dir)?;
    let db = dir.join(DB_FILE);
    if !db.exists() {
        return Err(BufferError::Other(format!(
            "no buffer database at {}",
            db.display()
        )));
    }
    let conn = Connection::open(&db)?;
    conn.execute_batch("PRAGMA busy_timeout=5000;")?;
    let bit: i64 = conn
        .query_row("SELECT bit FROM sinks WHERE name = ?1", [sink], |r| {
            r.get(0)
        })
        .map_err(|_| BufferError::UnknownSink(sink.to_string()))?;
    // ?1 is the mask; the selection's placeholders follow. UPDATE takes no ORDER BY.
    let (clause, args) = Selection {
        limit: None,
        ..sel.clone()
    }
    .sql(2);
    let clause = clause.replace(" ORDER BY seq", "");
    let mut all = vec![rusqlite::types::Value::Integer(1i64 << bit)];
    all.extend(args);
    let n = conn.execute(
        &format!("UPDATE records SET pending = pending | ?1 {clause}"),
        rusqlite::params_from_iter(all),
    )?;
    Ok(n as u64)
}

#[derive(Debug, Serialize)]
pub struct FsckReport {
    pub dir: PathBuf,
    pub ok: bool,
    pub integrity: Vec<String>,
    pub problems: Vec<String>,
    pub quarantines: Vec<QuarantineEntry>,
}

#[derive(Debug, Serialize)]
pub struct QuarantineEntry {
    pub dir: PathBuf,
    pub report: Option<QuarantineReport>,
}

pub fn list_quarantines(dir: &Path) -> Vec<QuarantineEntry> {
    let mut out: Vec<QuarantineEntry> = std::fs::read_dir(dir.join(QUARANTINE_DIR))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| QuarantineEntry {
                    report: std::fs::read(e.path().join("report.json"))
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok()),
                    dir: e.path(),
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    out
}

/// A full check: SQLite integrity, seq bookkeeping, spool files, quarantined databases.
/// `ok` is false when anything needs an operator's attention.
pub fn fsck(dir: &Path) -> Result<FsckReport, BufferError> {
    let mut problems = Vec::new();
    let quarantines = list_quarantines(dir);
    for q in &quarantines {
        let why = q
            .report
            .as_ref()
            .map(|r| r.reason.as_str())
            .unwrap_or("no report.json");
        problems.push(format!(
            "quarantined database in {}: {why}",
            q.dir.display()
        ));
    }
    let conn = match open_ro(dir) {
        Ok(c) => c,
        Err(e) => {
            problems.push(format!("cannot open the database: {e}"));
            return Ok(FsckReport {
                dir: dir.to_path_buf(),
                ok: false,
                integrity: Vec::new(),
                problems,
                quarantines,
            });
        }
    };
    let integrity: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect())
        .unwrap_or_else(|e| vec![format!("integrity check could not run: {e}")]);
    if integrity != ["ok"] {
        problems.push(format!("integrity check: {}", integrity.join("; ")));
    }
    let meta_last: u64 = schema::get_meta(&conn, "last_seq")
        .ok()
        .flatten()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let max_seq: i64 = conn
        .query_row("SELECT COALESCE(MAX(seq), 0) FROM records", [], |r| {
            r.get(0)
        })
        .unwrap_or(0);
    if max_seq as u64 > meta_last {
        problems.push(format!(
            "meta.last_seq {meta_last} is below the highest stored seq {max_seq}"
        ));
    }
    let hwm = startup::read_hwm(dir);
    if hwm < meta_last {
        problems.push(format!(
            "seq ceiling {hwm} in {} is below last_seq {meta_last}",
            startup::HWM_FILE
        ));
    }
    let orphaned: i64 = conn
        .query_row("SELECT COUNT(*) FROM records WHERE pending = 0", [], |r| {
            r.get(0)
        })
        .unwrap_or(0);
    if orphaned > 0 {
        problems.push(format!(
            "{orphaned} records owe no sink yet were not deleted"
        ));
    }
    // Spool files and the records that point at them.
    let spool = dir.join(SPOOL_DIR);
    let mut referenced = std::collections::BTreeSet::new();
    let refs: rusqlite::Result<Vec<(i64, String)>> = conn
        .prepare("SELECT seq, blob FROM records WHERE blob IS NOT NULL")
        .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect());
    match refs {
        Ok(refs) => {
            for (seq, name) in refs {
                if !spool.join(&name).exists() {
                    problems.push(format!("record {seq}: spool file {name} is missing"));
                }
                referenced.insert(name);
            }
        }
        Err(e) => problems.push(format!("cannot list spooled blobs: {e}")),
    }
    if let Ok(rd) = std::fs::read_dir(&spool) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !referenced.contains(&name) {
                problems.push(format!(
                    "spool file {name} belongs to no record (removed at next start)"
                ));
            }
        }
    }
    Ok(FsckReport {
        dir: dir.to_path_buf(),
        ok: problems.is_empty(),
        integrity,
        problems,
        quarantines,
    })
}
