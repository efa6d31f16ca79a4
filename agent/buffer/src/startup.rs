//! Opening the buffer: lock, check, quarantine and salvage, sink bits, spool clean-up.
//!
//! Never deletes a database and never fails because of one: a database that cannot be
//! opened or fails its check is moved aside and the agent continues on a fresh one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use serde::Serialize;

use super::schema::{self, DB_FILE, SCHEMA_VERSION};
use super::{BufferError, BufferOptions, SinkId};
use skygate_util::fs::{fsync_dir, write_atomic};
use skygate_util::glob::glob_match;

/// Seqs are reserved in steps of this many in `seq.hwm`.
pub const HWM_RESERVE: u64 = 1 << 20;
pub const HWM_FILE: &str = "seq.hwm";
pub const SPOOL_DIR: &str = "spool";
pub const QUARANTINE_DIR: &str = "quarantine";
pub const LOCK_FILE: &str = "LOCK";

/// An exclusive `flock` on `<buffer>/LOCK`, released when dropped (or the process dies).
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

/// Takes the buffer directory's lock, so two agents (or an agent and an offline command
/// that writes) never share a buffer.
pub fn lock_dir(dir: &Path) -> Result<DirLock, BufferError> {
    std::fs::create_dir_all(dir).map_err(|source| BufferError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| BufferError::Dir {
            path: path.clone(),
            source,
        })?;
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        let holder = std::fs::read_to_string(&path)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        return Err(BufferError::Locked {
            path: dir.to_path_buf(),
            holder,
        });
    }
    file.set_len(0)?;
    writeln!(file, "{}", std::process::id())?;
    Ok(DirLock { _file: file })
}

/// What start-up found and did, for logs and `buffer fsck`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StartupReport {
    pub quarantined: Option<QuarantineReport>,
    pub orphan_spool_files_removed: usize,
    /// Sinks no longer configured whose pending records were released: (name, records).
    pub released_sinks: Vec<(String, u64)>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct QuarantineReport {
    pub dir: PathBuf,
    pub reason: String,
    pub at: String,
    pub salvaged_records: u64,
    pub salvaged_gaps: u64,
    /// First seq the fresh database issues.
    pub resumed_at_seq: u64,
}

pub(crate) struct Opened {
    pub conn: Connection,
    pub db_path: PathBuf,
    pub spool_dir: PathBuf,
    pub last_seq: u64,
    pub hwm: u64,
    pub sinks: BTreeMap<String, SinkId>,
    pub lock: DirLock,
    pub report: StartupReport,
}

pub fn read_hwm(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join(HWM_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

pub fn write_hwm(dir: &Path, value: u64) -> std::io::Result<()> {
    write_atomic(&dir.join(HWM_FILE), format!("{value}\n").as_bytes())
}

pub(crate) fn open(opts: &BufferOptions) -> Result<Opened, BufferError> {
    let dir = &opts.dir;
    let lock = lock_dir(dir)?;
    let spool_dir = dir.join(SPOOL_DIR);
    std::fs::create_dir_all(&spool_dir).map_err(|source| BufferError::Dir {
        path: spool_dir.clone(),
        source,
    })?;
    let db_path = dir.join(DB_FILE);
    let mut report = StartupReport::default();
    let mut hwm = read_hwm(dir);

    // A range of seqs that may have been issued and lost, to record as a gap once the
    // sinks have their bits.
    let mut unknown_loss: Option<(u64, u64, String)> = None;
    let (conn, last_seq) = if !db_path.exists() {
        let conn = create(&db_path, opts)?;
        if hwm > 0 {
            // The ceiling survives but the database does not: it was removed by hand. The
            // last seq it issued lies within one reserve step below the ceiling.
            tracing::error!(db = %db_path.display(), ceiling = hwm, "buffer database missing but a seq ceiling exists; numbering continues above it");
            unknown_loss = Some((
                hwm.saturating_sub(HWM_RESERVE) + 1,
                hwm,
                "buffer database was missing at start".into(),
            ));
        }
        // Persist at once: a stop before the first append must not restart numbering.
        schema::set_meta(&conn, "last_seq", &hwm.to_string())?;
        (conn, hwm)
    } else {
        match check(&db_path, opts) {
            Ok(checked) => checked,
            Err(reason) => {
                tracing::error!(db = %db_path.display(), %reason, "buffer database failed its start-up check; quarantining it");
                let (conn, q) = quarantine_and_salvage(dir, &db_path, &reason, hwm, opts)?;
                let resumed = q.resumed_at_seq;
                report.quarantined = Some(q);
                (conn, resumed - 1)
            }
        }
    };
    if hwm <= last_seq {
        hwm = last_seq + HWM_RESERVE;
        write_hwm(dir, hwm)?;
    }
    let sinks = register_sinks(&conn, &opts.sinks, &mut report)?;
    if let Some((first, last, reason)) = unknown_loss {
        insert_unknown_gap(&conn, first, last, &reason, all_sinks_mask(&sinks))?;
    }
    schema::set_meta(&conn, "gateway_id", &opts.gateway_id)?;
    report.orphan_spool_files_removed = remove_orphan_spool_files(&conn, &spool_dir)?;
    if report.orphan_spool_files_removed > 0 {
        tracing::info!(
            count = report.orphan_spool_files_removed,
            "removed spool files of records that never committed"
        );
    }
    Ok(Opened {
        conn,
        db_path,
        spool_dir,
        last_seq,
        hwm,
        sinks,
        lock,
        report,
    })
}

fn all_sinks_mask(sinks: &BTreeMap<String, SinkId>) -> u64 {
    sinks.values().fold(0u64, |m, s| m | s.mask())
}

/// Records seqs that may have been issued and lost without knowing their stream or count.
fn insert_unknown_gap(
    conn: &Connection,
    first: u64,
    last: u64,
    reason: &str,
    pending: u64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO gaps(stream, first_seq, last_seq, count, first_ts, last_ts, reason, recorded_at, pending)
         VALUES('*', ?1, ?2, NULL, NULL, NULL, ?3, ?4, ?5)",
        rusqlite::params![first as i64, last as i64, reason, skygate_drivers::Timestamp::now().as_nanos(), pending as i64],
    )?;
    Ok(())
}

fn create(db_path: &Path, opts: &BufferOptions) -> Result<Connection, BufferError> {
    let conn = schema::open_writer(db_path, opts.settings.durability)?;
    conn.execute_batch(schema::DDL)?;
    schema::set_meta(&conn, "schema_version", &SCHEMA_VERSION.to_string())?;
    Ok(conn)
}

/// Opens and checks an existing database; `Err` carries why it must be quarantined.
fn check(db_path: &Path, opts: &BufferOptions) -> Result<(Connection, u64), String> {
    let conn = schema::open_writer(db_path, opts.settings.durability).map_err(|e| e.to_string())?;
    let rows: Vec<String> = conn
        .prepare("PRAGMA quick_check")
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect())
        .map_err(|e| format!("integrity check failed to run: {e}"))?;
    if rows != ["ok"] {
        return Err(format!("integrity check: {}", rows.join("; ")));
    }
    conn.execute_batch(schema::DDL)
        .map_err(|e| format!("schema: {e}"))?;
    let version = schema::get_meta(&conn, "schema_version").map_err(|e| format!("meta: {e}"))?;
    match version.as_deref().map(str::parse::<i64>) {
        None => schema::set_meta(&conn, "schema_version", &SCHEMA_VERSION.to_string())
            .map_err(|e| e.to_string())?,
        Some(Ok(SCHEMA_VERSION)) => {}
        Some(other) => {
            return Err(format!(
                "schema version {other:?} is not {SCHEMA_VERSION}, which this agent writes"
            ));
        }
    }
    let meta_last: u64 = schema::get_meta(&conn, "last_seq")
        .map_err(|e| format!("meta: {e}"))?
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let max_seq: i64 = conn
        .query_row("SELECT COALESCE(MAX(seq), 0) FROM records", [], |r| {
            r.get(0)
        })
        .map_err(|e| format!("records: {e}"))?;
    Ok((conn, meta_last.max(max_seq as u64)))
}

fn quarantine_and_salvage(
    dir: &Path,
    db_path: &Path,
    reason: &str,
    hwm: u64,
    opts: &BufferOptions,
) -> Result<(Connection, QuarantineReport), BufferError> {
    let at = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let qdir = dir.join(QUARANTINE_DIR).join(&at);
    std::fs::create_dir_all(&qdir).map_err(|source| BufferError::Dir {
        path: qdir.clone(),
        source,
    })?;
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", db_path.display()));
        if from.exists() {
            let to = qdir.join(format!("{DB_FILE}{suffix}"));
            std::fs::rename(&from, &to)?;
        }
    }
    fsync_dir(dir)?;
    fsync_dir(&qdir)?;

    let conn = create(db_path, opts)?;
    // Salvaged records are routed by today's routes; sinks get bits before salvage.
    let mut scratch = StartupReport::default();
    let sinks = register_sinks(&conn, &opts.sinks, &mut scratch)?;
    let all_sinks = all_sinks_mask(&sinks);
    let route_mask = |stream: &str| -> u64 {
        opts.routes
            .iter()
            .filter(|(streams, _)| streams.iter().any(|p| glob_match(p, stream)))
            .flat_map(|(_, ss)| ss.iter())
            .filter_map(|s| sinks.get(s))
            .fold(0, |m, id| m | id.mask())
    };
    let s = salvage(&qdir.join(DB_FILE), &conn, &route_mask, all_sinks);
    let known_last = s.old_last_seq.unwrap_or(0).max(s.max_seq);
    // If meta was unreadable, numbering resumes above the ceiling: seqs between what we
    // salvaged and the ceiling may have been issued, so they are never issued again.
    let resume_after = if s.old_last_seq.is_some() {
        known_last
    } else {
        known_last.max(hwm)
    };
    let tx = conn.unchecked_transaction()?;
    let mut lost_ranges = s.skipped;
    if resume_after > s.max_seq {
        lost_ranges.push((s.max_seq + 1, resume_after));
    }
    for (first, last) in &lost_ranges {
        insert_unknown_gap(
            &tx,
            *first,
            *last,
            &format!("quarantine: {reason}"),
            all_sinks,
        )?;
    }
    schema::set_meta(&tx, "last_seq", &resume_after.to_string())?;
    tx.commit()?;

    let report = QuarantineReport {
        dir: qdir.clone(),
        reason: reason.to_string(),
        at,
        salvaged_records: s.records,
        salvaged_gaps: s.gaps,
        resumed_at_seq: resume_after + 1,
    };
    let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
    write_atomic(&qdir.join("report.json"), &json)?;
    tracing::error!(
        quarantine = %qdir.display(),
        salvaged_records = s.records,
        lost_ranges = lost_ranges.len(),
        resumed_at_seq = resume_after + 1,
        "buffer quarantined; continuing on a fresh database"
    );
    Ok((conn, report))
}

struct Salvaged {
    records: u64,
    gaps: u64,
    max_seq: u64,
    old_last_seq: Option<u64>,
    /// Seq ranges skipped over unreadable pages.
    skipped: Vec<(u64, u64)>,
}

/// Copies what can be read from a damaged database. Bounded: gives up after a number of
/// read errors, skipping ahead further after each.
fn salvage(
    old: &Path,
    new: &Connection,
    route_mask: &dyn Fn(&str) -> u64,
    all_sinks: u64,
) -> Salvaged {
    let mut out = Salvaged {
        records: 0,
        gaps: 0,
        max_seq: 0,
        old_last_seq: None,
        skipped: Vec::new(),
    };
    let Ok(old) = Connection::open_with_flags(old, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
    else {
        return out;
    };
    out.old_last_seq = schema::get_meta(&old, "last_seq")
        .ok()
        .flatten()
        .and_then(|s| s.parse().ok());
    let Ok(tx) = new.unchecked_transaction() else {
        return out;
    };
    let mut after: u64 = 0;
    let mut failures = 0u32;
    'outer: loop {
        let Ok(mut stmt) = old.prepare(
            "SELECT seq, stream, priority, ts, ingest_ts, size, body, blob FROM records WHERE seq > ?1 ORDER BY seq",
        ) else {
            break;
        };
        let Ok(mut rows) = stmt.query([after as i64]) else {
            break;
        };
        loop {
            match rows.next() {
                Ok(Some(row)) => {
                    let parsed = (|| -> rusqlite::Result<_> {
                        Ok((
                            row.get::<_, i64>(0)? as u64,
                            row.get::<_, String>(1)?,
                            row.get::<_, i64>(2)?,
                            row.get::<_, i64>(3)?,
                            row.get::<_, i64>(4)?,
                            row.get::<_, i64>(5)?,
                            row.get::<_, Vec<u8>>(6)?,
                            row.get::<_, Option<String>>(7)?,
                        ))
                    })();
                    let Ok((seq, stream, prio, ts, its, size, body, blob)) = parsed else {
                        continue;
                    };
                    after = seq;
                    out.max_seq = out.max_seq.max(seq);
                    let mask = route_mask(&stream);
                    if mask == 0 || schema::decode_body(seq, &body).is_err() {
                        continue;
                    }
                    if tx
                        .execute(
                            "INSERT OR IGNORE INTO records(seq, stream, priority, ts, ingest_ts, pending, size, body, blob)
                             VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                            rusqlite::params![seq as i64, stream, prio, ts, its, mask as i64, size, body, blob],
                        )
                        .is_ok()
                    {
                        out.records += 1;
                    }
                }
                Ok(None) => break 'outer,
                Err(_) => {
                    failures += 1;
                    if failures > 12 {
                        break 'outer;
                    }
                    let skip_to = after + (1u64 << (2 * failures));
                    out.skipped.push((after + 1, skip_to));
                    after = skip_to;
                    continue 'outer;
                }
            }
        }
    }
    // Gaps recorded before the damage still explain holes: keep what is readable.
    type GapRow = (
        String,
        i64,
        i64,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        String,
        i64,
    );
    let old_gaps: Vec<GapRow> = old
        .prepare("SELECT stream, first_seq, last_seq, count, first_ts, last_ts, reason, recorded_at FROM gaps")
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)))?
                .filter_map(Result::ok)
                .map(Ok)
                .collect()
        })
        .unwrap_or_default();
    for g in old_gaps {
        let inserted = tx.execute(
            "INSERT INTO gaps(stream, first_seq, last_seq, count, first_ts, last_ts, reason, recorded_at, pending)
             VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            rusqlite::params![g.0, g.1, g.2, g.3, g.4, g.5, g.6, g.7, all_sinks as i64],
        );
        if inserted.is_ok() {
            out.gaps += 1;
        }
    }
    if tx.commit().is_err() {
        out.records = 0;
        out.gaps = 0;
    }
    out
}

/// Gives each configured sink a bit (keeping bits already assigned) and releases the bits
/// of sinks no longer configured.
fn register_sinks(
    conn: &Connection,
    configured: &[String],
    report: &mut StartupReport,
) -> Result<BTreeMap<String, SinkId>, BufferError> {
    let existing: Vec<(String, i64)> = conn
        .prepare("SELECT name, bit FROM sinks")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let tx = conn.unchecked_transaction()?;
    let mut out = BTreeMap::new();
    for (name, bit) in &existing {
        if configured.contains(name) {
            out.insert(name.clone(), SinkId(*bit as u8));
        } else {
            let mask = 1i64 << bit;
            let released = tx.execute(
                "UPDATE records SET pending = pending & ~?1 WHERE pending & ?1",
                [mask],
            )? as u64;
            tx.execute(
                "UPDATE gaps SET pending = pending & ~?1 WHERE pending & ?1",
                [mask],
            )?;
            tx.execute("DELETE FROM sinks WHERE name = ?1", [name])?;
            tracing::warn!(sink = %name, records = released, "sink is no longer configured; released its pending records");
            report.released_sinks.push((name.clone(), released));
        }
    }
    let mut used: Vec<u8> = out.values().map(|s| s.0).collect();
    for name in configured {
        if out.contains_key(name) {
            continue;
        }
        let bit = (0u8..62)
            .find(|b| !used.contains(b))
            .ok_or_else(|| BufferError::Other("more than 62 sinks".into()))?;
        used.push(bit);
        tx.execute(
            "INSERT INTO sinks(name, bit) VALUES(?1, ?2)",
            rusqlite::params![name, bit],
        )?;
        out.insert(name.clone(), SinkId(bit));
    }
    // Records that no longer owe anything to anyone (their only sinks were released);
    // their spool files go with the orphan sweep that follows.
    tx.execute("DELETE FROM records WHERE pending = 0", [])?;
    tx.commit()?;
    Ok(out)
}

/// Removes spool files no record points to, and returns how many.
fn remove_orphan_spool_files(conn: &Connection, spool: &Path) -> Result<usize, BufferError> {
    let mut removed = 0;
    let mut stmt = conn.prepare("SELECT 1 FROM records WHERE seq = ?1 AND blob = ?2")?;
    for entry in std::fs::read_dir(spool)?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let seq = spool_seq(name).unwrap_or(-1);
        if !stmt.exists(rusqlite::params![seq, name])? {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Spool files are named `<seq>.blob`.
pub fn spool_name(seq: u64) -> String {
    format!("{seq}.blob")
}

pub fn spool_seq(name: &str) -> Option<i64> {
    name.strip_suffix(".blob")?.parse().ok()
}
