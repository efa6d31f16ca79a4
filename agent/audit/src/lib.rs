//! The audit trail: who did what, from where, when, and with what result.
//!
//! Stored in `<data-dir>/audit.db`, apart from the buffer so retention never evicts it.
//! Each row carries `prev_hash` and `hash = SHA-256(prev_hash ‖ id ‖ ts ‖ actor ‖ origin ‖
//! action ‖ target ‖ result ‖ detail)` (integers little-endian, strings length-prefixed),
//! the first row chaining from 32 zero bytes. `audit.head` holds the last id and hash,
//! written atomically after every append, so `verify` detects an edited row, a deleted
//! row and a cut-off tail alike.
//!
//! One appender thread owns the connection (`synchronous=FULL`); events reach it through
//! a bounded queue. Async callers wait for room; the buffer's writer (which must never
//! block on the audit) uses `try_record`, which counts what it had to drop.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, OpenFlags, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use skygate_model::rfc3339;
use skygate_util::fs::write_atomic;

pub const AUDIT_DB: &str = "audit.db";
pub const AUDIT_HEAD: &str = "audit.head";
const QUEUE: usize = 256;

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// `uid:0(root)` for a local operator, `skygate` for the agent itself.
    pub actor: String,
    /// `unix-socket`, `tcp:ADDR`, `local`.
    pub origin: String,
    /// Dotted verb: `sink.pause`, `buffer.evict`, `agent.start`, ...
    pub action: String,
    pub target: String,
    pub result: String,
    pub detail: String,
}

impl AuditEvent {
    /// An event the agent records about itself.
    pub fn agent(action: &str, target: &str, result: &str, detail: impl Into<String>) -> Self {
        Self {
            actor: "skygate".into(),
            origin: "local".into(),
            action: action.into(),
            target: target.into(),
            result: result.into(),
            detail: detail.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub ts: String,
    #[serde(flatten)]
    pub event: AuditEvent,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("audit log: {0}")]
    Io(#[from] std::io::Error),
}

/// Handle for recording events; cheap to clone.
#[derive(Debug, Clone)]
pub struct Audit {
    tx: mpsc::Sender<AuditEvent>,
    dropped: Arc<AtomicU64>,
}

/// Owns the appender thread; `close` writes what is queued and stops it.
#[derive(Debug)]
pub struct AuditGuard {
    thread: Option<std::thread::JoinHandle<()>>,
}

fn db_err(path: &Path) -> impl Fn(rusqlite::Error) -> AuditError + '_ {
    move |source| AuditError::Db {
        path: path.to_path_buf(),
        source,
    }
}

const DDL: &str = "CREATE TABLE IF NOT EXISTS audit(
    id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, actor TEXT NOT NULL, origin TEXT NOT NULL,
    action TEXT NOT NULL, target TEXT NOT NULL, result TEXT NOT NULL, detail TEXT NOT NULL,
    prev_hash BLOB NOT NULL, hash BLOB NOT NULL)";

fn chain_hash(prev: &[u8], id: i64, ts: i64, e: &AuditEvent) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(id.to_le_bytes());
    h.update(ts.to_le_bytes());
    for f in [
        &e.actor, &e.origin, &e.action, &e.target, &e.result, &e.detail,
    ] {
        h.update((f.len() as u64).to_le_bytes());
        h.update(f.as_bytes());
    }
    h.finalize().to_vec()
}

impl Audit {
    /// Opens (creating) the audit log and starts the appender.
    pub fn open(data_dir: &Path) -> Result<(Audit, AuditGuard), AuditError> {
        let path = data_dir.join(AUDIT_DB);
        let conn = Connection::open(&path).map_err(db_err(&path))?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
            .and_then(|_| conn.execute_batch(DDL))
            .map_err(db_err(&path))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let head = data_dir.join(AUDIT_HEAD);
        let thread = std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || append_loop(conn, head, rx))?;
        Ok((
            Audit {
                tx,
                dropped: Arc::default(),
            },
            AuditGuard {
                thread: Some(thread),
            },
        ))
    }

    /// Records an event, waiting for room in the queue.
    pub async fn record(&self, e: AuditEvent) {
        if self.tx.send(e).await.is_err() {
            tracing::error!("audit log closed; event lost");
        }
    }

    /// Records without waiting; a full queue drops the event and counts it.
    pub fn try_record(&self, e: AuditEvent) {
        if self.tx.try_send(e).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("audit queue full; event dropped (counted)");
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl AuditGuard {
    /// Stops the appender once every handle is dropped and the queue is written.
    pub async fn close(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

fn append_loop(conn: Connection, head: PathBuf, mut rx: mpsc::Receiver<AuditEvent>) {
    let last = conn
        .query_row(
            "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
        )
        .ok();
    let (mut id, mut prev) = last.unwrap_or((0, vec![0u8; 32]));
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(e) = rx.try_recv() {
            batch.push(e);
        }
        let res = (|| -> rusqlite::Result<(i64, Vec<u8>)> {
            let tx = conn.unchecked_transaction()?;
            let (mut i, mut p) = (id, prev.clone());
            for e in &batch {
                i += 1;
                let ts = skygate_drivers::Timestamp::now().as_nanos();
                let hash = chain_hash(&p, i, ts, e);
                tx.execute(
                    "INSERT INTO audit(id, ts, actor, origin, action, target, result, detail, prev_hash, hash)
                     VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![i, ts, e.actor, e.origin, e.action, e.target, e.result, e.detail, p, hash],
                )?;
                p = hash;
            }
            tx.commit()?;
            Ok((i, p))
        })();
        match res {
            Ok((i, p)) => {
                (id, prev) = (i, p);
                if let Err(e) = write_atomic(&head, format!("{id} {}\n", hex(&prev)).as_bytes()) {
                    tracing::error!(error = %e, "cannot write audit head");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = batch.len(), "cannot append to the audit log")
            }
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn open_ro(data_dir: &Path) -> Result<Connection, AuditError> {
    let path = data_dir.join(AUDIT_DB);
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(db_err(&path))?;
    conn.execute_batch("PRAGMA busy_timeout=5000; BEGIN DEFERRED;")
        .map_err(db_err(&path))?;
    Ok(conn)
}

/// The newest `limit` events, oldest first.
pub fn list(data_dir: &Path, limit: u64) -> Result<Vec<AuditRow>, AuditError> {
    let conn = open_ro(data_dir)?;
    let path = data_dir.join(AUDIT_DB);
    let mut rows: Vec<AuditRow> = conn
        .prepare(&format!(
            "SELECT {STORED_COLUMNS} FROM audit ORDER BY id DESC LIMIT ?1"
        ))
        .and_then(|mut st| {
            st.query_map([limit as i64], StoredRow::from_row)?
                .map(|r| {
                    r.map(|s| AuditRow {
                        id: s.id,
                        ts: rfc3339(s.ts),
                        event: s.event,
                    })
                })
                .collect()
        })
        .map_err(db_err(&path))?;
    rows.reverse();
    Ok(rows)
}

const STORED_COLUMNS: &str =
    "id, ts, actor, origin, action, target, result, detail, prev_hash, hash";

/// A row as stored (columns in [`STORED_COLUMNS`] order).
struct StoredRow {
    id: i64,
    ts: i64,
    event: AuditEvent,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

impl StoredRow {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            ts: r.get(1)?,
            event: AuditEvent {
                actor: r.get(2)?,
                origin: r.get(3)?,
                action: r.get(4)?,
                target: r.get(5)?,
                result: r.get(6)?,
                detail: r.get(7)?,
            },
            prev_hash: r.get(8)?,
            hash: r.get(9)?,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub rows: u64,
    /// The first row that breaks the chain, and why.
    pub problem: Option<String>,
}

/// Walks the chain and compares its end with `audit.head`.
pub fn verify(data_dir: &Path) -> Result<VerifyReport, AuditError> {
    // The head first, the rows after: the writer commits a row before it writes the head,
    // so the rows read next include the row the head names. Read the other way round, a
    // row committed in between made a running agent's intact log look truncated.
    let head = std::fs::read_to_string(data_dir.join(AUDIT_HEAD)).unwrap_or_default();
    let head = head.trim().to_string();
    let mut head_seen = head.is_empty();
    let conn = open_ro(data_dir)?;
    let path = data_dir.join(AUDIT_DB);
    let mut stmt = conn
        .prepare(&format!("SELECT {STORED_COLUMNS} FROM audit ORDER BY id"))
        .map_err(db_err(&path))?;
    let mut rows = stmt.query([]).map_err(db_err(&path))?;
    let (mut expect_id, mut prev) = (1i64, vec![0u8; 32]);
    let mut count = 0u64;
    let bad = |problem: String, rows: u64| {
        Ok(VerifyReport {
            ok: false,
            rows,
            problem: Some(problem),
        })
    };
    while let Some(r) = rows.next().map_err(db_err(&path))? {
        let StoredRow {
            id,
            ts,
            event: e,
            prev_hash,
            hash,
        } = StoredRow::from_row(r).map_err(db_err(&path))?;
        count += 1;
        if id != expect_id {
            return bad(format!("row {expect_id} is missing (next is {id})"), count);
        }
        if prev_hash != prev {
            return bad(
                format!("row {id} does not chain from row {}", id - 1),
                count,
            );
        }
        if chain_hash(&prev, id, ts, &e) != hash {
            return bad(
                format!("row {id} was altered: its content does not match its hash"),
                count,
            );
        }
        prev = hash;
        head_seen |= head == format!("{id} {}", hex(&prev));
        expect_id += 1;
    }
    if !head_seen {
        let last_id = expect_id - 1;
        return bad(
            format!("the log ends at row {last_id}, but audit.head says {head}"),
            count,
        );
    }
    Ok(VerifyReport {
        ok: true,
        rows: count,
        problem: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn write_three(dir: &Path) {
        let (audit, guard) = Audit::open(dir).expect("open");
        for i in 0..3 {
            audit
                .record(AuditEvent::agent("sink.pause", &format!("s{i}"), "ok", ""))
                .await;
        }
        drop(audit);
        guard.close().await;
    }

    #[tokio::test]
    async fn an_untouched_log_verifies_and_lists_in_order() {
        let d = tempfile::tempdir().expect("tmp");
        write_three(d.path()).await;
        write_three(d.path()).await; // reopening continues the chain
        let r = verify(d.path()).expect("verify");
        assert!(r.ok, "{r:?}");
        assert_eq!(r.rows, 6);
        let rows = list(d.path(), 2).expect("list");
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), vec![5, 6]);
    }

    #[tokio::test]
    async fn editing_deleting_or_cutting_off_rows_is_detected() {
        for (sql, expect) in [
            (
                "UPDATE audit SET result = 'denied' WHERE id = 2",
                "row 2 was altered",
            ),
            ("DELETE FROM audit WHERE id = 2", "row 2 is missing"),
            ("DELETE FROM audit WHERE id = 3", "audit.head says"),
        ] {
            let d = tempfile::tempdir().expect("tmp");
            write_three(d.path()).await;
            Connection::open(d.path().join(AUDIT_DB))
                .expect("open")
                .execute(sql, [])
                .expect("tamper");
            let r = verify(d.path()).expect("verify");
            assert!(!r.ok, "{sql}");
            assert!(
                r.problem.as_deref().unwrap_or_default().contains(expect),
                "{sql}: {r:?}"
            );
        }
    }
}
