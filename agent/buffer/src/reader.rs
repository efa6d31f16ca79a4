//! The reader thread: range reads for sinks on a connection of its own, so reads never
//! wait behind a commit (WAL readers see the last committed state) and never block the
//! async runtime.

use std::path::PathBuf;

use rusqlite::{Connection, params};
use tokio::sync::mpsc;

use super::schema::{self, ROW_COLUMNS};
use super::{BufferError, ReadCmd, ReadQuery, SinkId};
use skygate_model::{Gap, Record};

pub(crate) fn run(conn: Connection, spool: PathBuf, mut rx: mpsc::Receiver<ReadCmd>) {
    while let Some(cmd) = rx.blocking_recv() {
        match cmd {
            ReadCmd::Records(q, reply) => {
                let _ = reply.send(read_records(&conn, &spool, q));
            }
            ReadCmd::Gaps(sink, reply) => {
                let _ = reply.send(read_gaps(&conn, sink));
            }
            ReadCmd::OldestPending(sink, reply) => {
                let _ = reply.send(oldest_pending(&conn, sink));
            }
            ReadCmd::Shutdown => break,
        }
    }
}

pub(crate) fn read_records(
    conn: &Connection,
    spool: &std::path::Path,
    q: ReadQuery,
) -> Result<Vec<Record>, BufferError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ROW_COLUMNS}, size FROM records
         WHERE seq > ?1 AND seq <= ?2 AND (pending & ?3) != 0 ORDER BY seq LIMIT ?4"
    ))?;
    let mut rows = stmt.query(params![
        q.after.min(i64::MAX as u64) as i64,
        q.upto.min(i64::MAX as u64) as i64,
        q.sink.mask() as i64,
        q.max_records as i64
    ])?;
    let mut out = Vec::new();
    let mut bytes = 0u64;
    while let Some(row) = rows.next()? {
        let size = row.get::<_, i64>(6)? as u64;
        // Always at least one record, so a single huge blob still moves.
        if !out.is_empty() && bytes + size > q.max_bytes {
            break;
        }
        bytes += size;
        let parts = schema::row_parts(row)?;
        out.push(schema::into_record(parts, spool)?);
    }
    Ok(out)
}

pub(crate) fn read_gaps(conn: &Connection, sink: SinkId) -> Result<Vec<Gap>, BufferError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, stream, first_seq, last_seq, count, first_ts, last_ts, reason, recorded_at
         FROM gaps WHERE (pending & ?1) != 0 ORDER BY id LIMIT 1000",
    )?;
    let rows = stmt.query_map([sink.mask() as i64], gap_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn gap_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Gap> {
    Ok(Gap {
        id: r.get(0)?,
        stream: r.get(1)?,
        first_seq: r.get::<_, i64>(2)? as u64,
        last_seq: r.get::<_, i64>(3)? as u64,
        count: r.get::<_, Option<i64>>(4)?.map(|c| c as u64),
        first_ts: r.get(5)?,
        last_ts: r.get(6)?,
        reason: r.get(7)?,
        recorded_at: r.get(8)?,
    })
}

/// Rowid order finds the first match without scanning the rest.
fn oldest_pending(conn: &Connection, sink: SinkId) -> Result<Option<i64>, BufferError> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .prepare_cached(
            "SELECT ingest_ts FROM records WHERE (pending & ?1) != 0 ORDER BY seq LIMIT 1",
        )?
        .query_row([sink.mask() as i64], |r| r.get(0))
        .optional()?)
}
