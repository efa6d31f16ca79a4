//! The single writer: group commit, acks, eviction, spool files, status.
//!
//! Runs on its own thread and owns the write connection and all accounting. Nothing it
//! counts changes until its transaction commits: work is gathered into a [`Delta`] and
//! applied after `COMMIT`, so a rolled-back transaction leaves counters, seqs and status
//! exactly as they were.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use rusqlite::{Connection, params};
use skygate_bsp::Board;
use skygate_drivers::{Timestamp, Value};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot, watch};

use super::schema::{self, ROW_OVERHEAD};
use super::startup::{self, HWM_RESERVE};
use super::{BufferError, BufferMetrics, BufferStatus, NewRecord, SeqRange, SinkId, WriterCmd};
use super::{BufferSettings, Durability};
use skygate_util::backoff::Backoff;
use skygate_util::fs::fsync_dir;

pub(crate) struct WriterParts {
    pub dir: PathBuf,
    pub spool_dir: PathBuf,
    pub settings: BufferSettings,
    pub next_seq: u64,
    pub hwm: u64,
    pub head_tx: watch::Sender<u64>,
    pub status_tx: watch::Sender<BufferStatus>,
    pub metrics: Arc<BufferMetrics>,
    pub board: Arc<dyn Board>,
    pub events: Option<mpsc::Sender<super::BufferEvent>>,
}

/// How often free disk space is measured while records flow.
const DISK_CHECK_EVERY: Duration = Duration::from_millis(200);
/// The buffer reports itself degraded for this long after evicting at the byte cap.
const CAP_EVICTION_REPORTED_FOR: Duration = Duration::from_secs(60);
/// Eviction reads victims in chunks of this many rows.
const EVICT_CHUNK: usize = 256;

/// The writer thread: the write connection and the state it keeps in step with it.
pub(crate) struct Writer {
    conn: Connection,
    st: State,
}

/// Everything the writer knows besides its connection. Methods that work inside a
/// transaction take the connection as an argument, so the transaction's borrow of the
/// connection and the state's own borrow stay apart.
struct State {
    p: WriterParts,
    /// Per priority: (records, bytes).
    prio: [(u64, u64); 10],
    /// Per sink: (records, bytes) still owed.
    owed: PerSink,
    page_size: u64,
    last_disk_check: Option<Instant>,
    disk_low: Option<String>,
    cap_evicted_at: Option<Instant>,
    write_error: Option<String>,
    force_evict: u64,
    status_dirty: bool,
}

/// A record ready for insertion.
struct Encoded {
    stream: Arc<str>,
    priority: u8,
    ts: i64,
    ingest_ts: i64,
    pending: u64,
    body: Vec<u8>,
    spool: Option<Bytes>,
    size: u64,
}

type AppendReply = oneshot::Sender<Result<SeqRange, BufferError>>;

#[derive(Default)]
struct Group {
    appends: Vec<(Vec<Encoded>, Option<AppendReply>)>,
    acks: Vec<(SinkId, u64, u64)>,
    gap_acks: Vec<(SinkId, i64)>,
    syncs: Vec<oneshot::Sender<()>>,
    seals: Vec<oneshot::Sender<Result<super::SealReport, BufferError>>>,
    /// Restart the WAL after this group's commit.
    restart_wal: bool,
    records: usize,
    incoming_bytes: u64,
}

/// Per sink bit: (records, bytes).
#[derive(Clone, Copy)]
struct PerSink([(u64, u64); 64]);

impl Default for PerSink {
    fn default() -> Self {
        Self([(0, 0); 64])
    }
}

impl PerSink {
    /// One record of `size` bytes owed to every sink in `mask`.
    fn add(&mut self, mask: u64, size: u64) {
        self.add_n(mask, 1, size);
    }

    fn add_n(&mut self, mask: u64, records: u64, bytes: u64) {
        for bit in 0..64 {
            if mask & (1 << bit) != 0 {
                self.0[bit].0 += records;
                self.0[bit].1 += bytes;
            }
        }
    }
}

/// (value, records, bytes) for each distinct value of `column` in `records`.
fn totals_by(conn: &Connection, column: &str) -> rusqlite::Result<Vec<(i64, u64, u64)>> {
    conn.prepare(&format!(
        "SELECT {column}, COUNT(*), COALESCE(SUM(size), 0) FROM records GROUP BY {column}"
    ))?
    .query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get::<_, i64>(1)? as u64,
            r.get::<_, i64>(2)? as u64,
        ))
    })?
    .collect()
}

/// Changes a transaction makes, applied to the writer's state only after it commits.
#[derive(Default)]
struct Delta {
    sink_added: PerSink,
    sink_removed: PerSink,
    removed: [(u64, u64); 10],
    added: [(u64, u64); 10],
    acked: u64,
    evicted: u64,
    gaps: u64,
    cap_evicted: bool,
    blobs_to_delete: Vec<String>,
    new_gaps: Vec<skygate_model::Gap>,
    appended: Option<(u64, u64)>,
    new_hwm: Option<u64>,
}

impl Group {
    /// Adds a command; returns true for `Shutdown`.
    fn add(&mut self, cmd: WriterCmd, threshold: u64) -> bool {
        match cmd {
            WriterCmd::Append { records, reply } => {
                // A record routed to no sink is numbered but not stored: a workflow's input
                // that only its outputs leave the gateway for keeps a seq they can name.
                let enc: Vec<Encoded> = records.into_iter().map(|r| encode(r, threshold)).collect();
                self.records += enc.iter().filter(|e| e.pending != 0).count();
                self.incoming_bytes += enc.iter().map(|e| e.size).sum::<u64>();
                self.appends.push((enc, reply));
            }
            WriterCmd::Ack { sink, first, last } => {
                self.acks.push((sink, first, last));
                self.records += 1;
            }
            WriterCmd::AckGap { sink, id } => self.gap_acks.push((sink, id)),
            WriterCmd::Sync(tx) => self.syncs.push(tx),
            WriterCmd::Tick => {}
            WriterCmd::RestartWal => self.restart_wal = true,
            WriterCmd::Seal(tx) => self.seals.push(tx),
            WriterCmd::Shutdown => return true,
        }
        false
    }
}

fn encode(r: NewRecord, threshold: u64) -> Encoded {
    let rec = r.record;
    if r.sinks == 0 {
        return Encoded {
            priority: 0,
            ts: rec.reading.ts.as_nanos(),
            ingest_ts: 0,
            stream: rec.stream,
            pending: 0,
            body: Vec::new(),
            spool: None,
            size: 0,
        };
    }
    let spool = match &rec.reading.value {
        Value::Blob(b) if b.data.len() as u64 > threshold => Some(b.data.clone()),
        _ => None,
    };
    let body = schema::encode_body(&rec.reading, rec.lineage.as_ref(), spool.is_some());
    let size = body.len() as u64
        + rec.stream.len() as u64
        + ROW_OVERHEAD
        + spool.as_ref().map_or(0, |b| b.len() as u64);
    Encoded {
        priority: rec.priority.min(9),
        ts: rec.reading.ts.as_nanos(),
        ingest_ts: rec.ingest_ts.as_nanos(),
        stream: rec.stream,
        pending: r.sinks,
        body,
        spool,
        size,
    }
}

fn is_disk_full(e: &BufferError) -> bool {
    match e {
        BufferError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
            f.code == rusqlite::ErrorCode::DiskFull
        }
        BufferError::Io(io) => io.raw_os_error() == Some(28),
        _ => false,
    }
}

impl Writer {
    pub(crate) fn new(conn: Connection, p: WriterParts) -> Result<Self, BufferError> {
        let mut prio = [(0u64, 0u64); 10];
        for (pr, n, b) in totals_by(&conn, "priority")? {
            let slot = &mut prio[pr.clamp(0, 9) as usize];
            slot.0 += n;
            slot.1 += b;
        }
        // Few distinct masks (one per routing combination): cheap to group by.
        let mut owed = PerSink::default();
        for (mask, n, b) in totals_by(&conn, "pending")? {
            owed.add_n(mask as u64, n, b);
        }
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let st = State {
            p,
            prio,
            owed,
            page_size: page_size as u64,
            last_disk_check: None,
            disk_low: None,
            cap_evicted_at: None,
            write_error: None,
            force_evict: 0,
            status_dirty: true,
        };
        st.publish_counts();
        Ok(Writer { conn, st })
    }

    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<WriterCmd>) {
        let max = self.st.p.settings.commit_max_records as usize;
        let linger = self.st.p.settings.commit_max_delay;
        let threshold = self.st.p.settings.blob_spool_threshold;
        loop {
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            let mut group = Group::default();
            let mut shutdown = group.add(first, threshold);
            let deadline = Instant::now() + linger;
            while !shutdown && group.records < max {
                match rx.try_recv() {
                    Ok(cmd) => shutdown = group.add(cmd, threshold),
                    Err(TryRecvError::Empty) => {
                        if linger.is_zero() || Instant::now() >= deadline {
                            break;
                        }
                        #[allow(
                            clippy::disallowed_methods,
                            reason = "the buffer writer's own thread, lingering for a group commit"
                        )]
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    Err(TryRecvError::Disconnected) => {
                        shutdown = true;
                        break;
                    }
                }
            }
            let restart_wal = group.restart_wal;
            let seals = std::mem::take(&mut group.seals);
            self.st.commit_with_retry(&self.conn, group, shutdown);
            if !seals.is_empty() {
                let r = self
                    .seal()
                    .map_err(|e| format!("seal of {}: {e}", self.st.p.spool_dir.display()));
                for tx in seals {
                    let _ = tx.send(r.clone().map_err(BufferError::Other));
                }
            }
            if restart_wal
                && let Err(e) = self
                    .conn
                    .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0))
            {
                tracing::warn!(error = %e, "WAL restart failed");
            }
            if shutdown {
                break;
            }
        }
        // Fold the WAL into the database so the next start (or an operator copying the
        // directory) sees one file.
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::warn!(error = %e, "final WAL checkpoint failed");
        }
        tracing::debug!("buffer writer stopped");
    }

    /// After a commit: fold the log into the database and flush the whole file system
    /// (spool files and the audit trail live on it too; in `process` durability nothing
    /// of them was fsynced yet).
    fn seal(&self) -> Result<super::SealReport, BufferError> {
        let (_busy, frames, _done): (i64, i64, i64) =
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
        let dir = std::fs::File::open(&self.st.p.spool_dir)?;
        rustix::fs::syncfs(&dir).map_err(std::io::Error::from)?;
        Ok(super::SealReport {
            last_seq: self.st.p.next_seq.saturating_sub(1),
            wal_frames: frames,
        })
    }
}

impl State {
    fn totals(&self) -> (u64, u64) {
        self.prio
            .iter()
            .fold((0, 0), |(n, b), (pn, pb)| (n + pn, b + pb))
    }

    fn publish_counts(&self) {
        let (n, b) = self.totals();
        let m = &self.p.metrics;
        m.records_stored.store(n, Ordering::Relaxed);
        m.bytes_stored.store(b, Ordering::Relaxed);
        for (i, (n, b)) in self.owed.0.iter().enumerate() {
            m.pending_records[i].store(*n, Ordering::Relaxed);
            m.pending_bytes[i].store(*b, Ordering::Relaxed);
        }
    }

    fn commit_with_retry(&mut self, conn: &Connection, mut group: Group, shutdown: bool) {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            match self.commit(conn, &group) {
                Ok(delta) => {
                    if self.write_error.take().is_some() {
                        tracing::info!("buffer writes succeed again");
                        self.status_dirty = true;
                    }
                    self.apply(delta, group);
                    return;
                }
                Err(e) => {
                    self.p.metrics.write_errors.fetch_add(1, Ordering::Relaxed);
                    let full = is_disk_full(&e);
                    if full {
                        // Make real room next time: at least what is coming, at least 1 MiB,
                        // doubling while the disk stays full.
                        self.force_evict = (self.force_evict * 2)
                            .max(group.incoming_bytes)
                            .max(1 << 20);
                        self.last_disk_check = None;
                    }
                    let msg = format!(
                        "{}{e}",
                        if full {
                            "disk full: "
                        } else {
                            "write failed: "
                        }
                    );
                    if self.write_error.as_deref() != Some(msg.as_str()) {
                        tracing::error!(error = %e, attempt = backoff.failures() + 1, "buffer commit failed; retrying (records stay queued, nothing accepted is lost)");
                    }
                    self.write_error = Some(msg);
                    self.status_dirty = true;
                    self.update_status();
                    if shutdown && backoff.failures() >= 5 {
                        for (_, reply) in group.appends.drain(..) {
                            if let Some(tx) = reply {
                                let _ = tx.send(Err(BufferError::Other(
                                    "shutting down with the buffer unwritable".into(),
                                )));
                            }
                        }
                        return;
                    }
                    // Acks free space: if the group as a whole cannot commit, get them in
                    // on their own first so delivery keeps draining.
                    if !group.acks.is_empty() && !group.appends.is_empty() {
                        let acks_only = Group {
                            acks: std::mem::take(&mut group.acks),
                            gap_acks: std::mem::take(&mut group.gap_acks),
                            ..Group::default()
                        };
                        match self.commit(conn, &acks_only) {
                            Ok(delta) => self.apply(delta, acks_only),
                            Err(_) => {
                                group.acks = acks_only.acks;
                                group.gap_acks = acks_only.gap_acks;
                            }
                        }
                    }
                    #[allow(
                        clippy::disallowed_methods,
                        reason = "the buffer writer's own thread, backing off a failed commit"
                    )]
                    std::thread::sleep(backoff.next_delay());
                }
            }
        }
    }

    fn commit(&mut self, conn: &Connection, g: &Group) -> Result<Delta, BufferError> {
        let mut d = Delta::default();
        let tx = conn.unchecked_transaction()?;
        for &(sink, first, last) in &g.acks {
            let bit = sink.mask() as i64;
            {
                let mut del = tx.prepare_cached(
                    "DELETE FROM records WHERE seq BETWEEN ?1 AND ?2 AND pending = ?3 RETURNING priority, size, blob",
                )?;
                let mut rows = del.query(params![first as i64, last as i64, bit])?;
                while let Some(r) = rows.next()? {
                    let pr = r.get::<_, i64>(0)?.clamp(0, 9) as usize;
                    let size = r.get::<_, i64>(1)? as u64;
                    d.removed[pr].0 += 1;
                    d.removed[pr].1 += size;
                    d.sink_removed.add(sink.mask(), size);
                    d.acked += 1;
                    if let Some(b) = r.get::<_, Option<String>>(2)? {
                        d.blobs_to_delete.push(b);
                    }
                }
            }
            {
                let mut upd = tx.prepare_cached(
                    "UPDATE records SET pending = pending & ~?3 WHERE seq BETWEEN ?1 AND ?2 AND (pending & ?3) != 0 RETURNING size",
                )?;
                let mut rows = upd.query(params![first as i64, last as i64, bit])?;
                while let Some(r) = rows.next()? {
                    d.sink_removed.add(sink.mask(), r.get::<_, i64>(0)? as u64);
                    d.acked += 1;
                }
            }
        }
        for &(sink, id) in &g.gap_acks {
            tx.prepare_cached("UPDATE gaps SET pending = pending & ~?1 WHERE id = ?2")?
                .execute(params![sink.mask() as i64, id])?;
        }

        let need = self.room_needed(&tx, g.incoming_bytes, &d)?;
        if need > 0 {
            self.evict(&tx, need, &mut d)?;
        }

        if g.appends.iter().any(|(recs, _)| !recs.is_empty()) {
            let first = self.p.next_seq;
            let mut seq = first;
            let mut spooled = false;
            let power = self.p.settings.durability == Durability::Power;
            {
                let mut ins = tx.prepare_cached(
                    "INSERT INTO records(seq, stream, priority, ts, ingest_ts, pending, size, body, blob)
                     VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                for (recs, _) in &g.appends {
                    for e in recs {
                        if e.pending == 0 {
                            seq += 1;
                            continue;
                        }
                        let blob_name = match &e.spool {
                            Some(data) => {
                                let name = startup::spool_name(seq);
                                write_spool(&self.p.spool_dir.join(&name), data, power)?;
                                spooled = true;
                                Some(name)
                            }
                            None => None,
                        };
                        ins.execute(params![
                            seq as i64,
                            &*e.stream,
                            e.priority,
                            e.ts,
                            e.ingest_ts,
                            e.pending as i64,
                            e.size as i64,
                            e.body,
                            blob_name
                        ])?;
                        d.added[e.priority as usize].0 += 1;
                        d.added[e.priority as usize].1 += e.size;
                        d.sink_added.add(e.pending, e.size);
                        seq += 1;
                    }
                }
            }
            if seq > first {
                let last = seq - 1;
                if spooled && power {
                    fsync_dir(&self.p.spool_dir)?;
                }
                if last > self.p.hwm {
                    let new_hwm = last + HWM_RESERVE;
                    startup::write_hwm(&self.p.dir, new_hwm)?;
                    d.new_hwm = Some(new_hwm);
                }
                schema::set_meta(&tx, "last_seq", &last.to_string())?;
                d.appended = Some((first, last));
            }
        }
        if self.status_dirty {
            let st = self.compute_status(&d);
            schema::set_meta(
                &tx,
                "status",
                &serde_json::to_string(&st).unwrap_or_default(),
            )?;
        }
        tx.commit()?;
        Ok(d)
    }

    /// Bytes to evict before `incoming` bytes fit under the cap and the disk watermark.
    fn room_needed(
        &mut self,
        tx: &Connection,
        incoming: u64,
        d: &Delta,
    ) -> Result<u64, BufferError> {
        let s = &self.p.settings;
        let removed: u64 = d.removed.iter().map(|r| r.1).sum();
        let stored = self.totals().1.saturating_sub(removed);
        let mut need = 0u64;
        if stored + incoming > s.max_bytes {
            // Evict down to 95% so the next commits do not evict again at once.
            need = stored + incoming - s.max_bytes * 95 / 100;
        }
        let due = self
            .last_disk_check
            .is_none_or(|t| t.elapsed() >= DISK_CHECK_EVERY)
            || incoming > (1 << 20);
        if due {
            self.last_disk_check = Some(Instant::now());
            match self.p.board.disk_space(&self.p.dir) {
                Ok(space) => {
                    let free_pages: i64 =
                        tx.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
                    let effective = space.available_bytes + free_pages as u64 * self.page_size;
                    let hysteresis = s.min_free_disk / 10;
                    if effective < s.min_free_disk + incoming {
                        need = need.max(s.min_free_disk + incoming + hysteresis - effective);
                        let reason = format!(
                            "free disk {} below the watermark {}: evicting",
                            human_bytes(effective),
                            human_bytes(s.min_free_disk)
                        );
                        if self.disk_low.is_none() {
                            tracing::warn!(%reason, "buffer disk low");
                        }
                        self.disk_low = Some(reason);
                        self.status_dirty = true;
                    } else if effective >= s.min_free_disk + hysteresis
                        && self.disk_low.take().is_some()
                    {
                        tracing::info!(free = %human_bytes(effective), "buffer disk space recovered");
                        self.status_dirty = true;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot measure free disk space"),
            }
        }
        Ok(need.max(std::mem::take(&mut self.force_evict)))
    }

    /// Deletes the lowest-priority, then oldest, records until `need` bytes are freed,
    /// recording one gap per stream.
    fn evict(&mut self, tx: &Connection, need: u64, d: &mut Delta) -> Result<(), BufferError> {
        #[derive(Default)]
        struct Agg {
            first: u64,
            last: u64,
            count: u64,
            first_ts: i64,
            last_ts: i64,
            pending: u64,
        }
        let mut freed = 0u64;
        // One gap per (stream, priority): victims of one priority are that stream's oldest
        // records of that priority, so each gap is a contiguous run in its own order.
        let mut per_stream: BTreeMap<(String, usize), Agg> = BTreeMap::new();
        'prio: for pr in 0..10usize {
            if self.prio[pr].0 <= d.removed[pr].0 {
                continue;
            }
            let mut after = 0i64;
            loop {
                let rows: Vec<(i64, String, i64, i64, Option<String>, i64)> = tx
                    .prepare_cached(
                        "SELECT seq, stream, ts, size, blob, pending FROM records
                         WHERE priority = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                    )?
                    .query_map(params![pr as i64, after, EVICT_CHUNK as i64], |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                        ))
                    })?
                    .collect::<Result<_, _>>()?;
                let full_chunk = rows.len() == EVICT_CHUNK;
                let mut last_victim = None;
                for (seq, stream, ts, size, blob, pending) in rows {
                    let a = per_stream.entry((stream, pr)).or_insert_with(|| Agg {
                        first: seq as u64,
                        first_ts: ts,
                        ..Agg::default()
                    });
                    // Rows come in seq order within a priority.
                    a.last = seq as u64;
                    a.last_ts = ts;
                    a.count += 1;
                    a.pending |= pending as u64;
                    d.removed[pr].0 += 1;
                    d.removed[pr].1 += size as u64;
                    d.sink_removed.add(pending as u64, size as u64);
                    if let Some(b) = blob {
                        d.blobs_to_delete.push(b);
                    }
                    freed += size as u64;
                    last_victim = Some(seq);
                    if freed >= need {
                        break;
                    }
                }
                let Some(last) = last_victim else { break };
                tx.prepare_cached(
                    "DELETE FROM records WHERE priority = ?1 AND seq > ?2 AND seq <= ?3",
                )?
                .execute(params![pr as i64, after, last])?;
                after = last;
                if freed >= need {
                    break 'prio;
                }
                if !full_chunk {
                    break;
                }
            }
        }
        let now = Timestamp::now().as_nanos();
        let reason = if self.disk_low.is_some() {
            "evicted: free disk below watermark"
        } else {
            "evicted: buffer at max_bytes"
        };
        for ((stream, _), a) in &per_stream {
            tx.prepare_cached(
                "INSERT INTO gaps(stream, first_seq, last_seq, count, first_ts, last_ts, reason, recorded_at, pending)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![stream, a.first as i64, a.last as i64, a.count as i64, a.first_ts, a.last_ts, reason, now, a.pending as i64])?;
            d.gaps += 1;
            d.evicted += a.count;
            d.new_gaps.push(skygate_model::Gap {
                id: tx.last_insert_rowid(),
                stream: stream.clone(),
                first_seq: a.first,
                last_seq: a.last,
                count: Some(a.count),
                first_ts: Some(a.first_ts),
                last_ts: Some(a.last_ts),
                reason: reason.to_string(),
                recorded_at: now,
            });
            tracing::warn!(
                stream = %stream, first_seq = a.first, last_seq = a.last, count = a.count,
                %reason, "evicted records; recorded a gap"
            );
        }
        if self.disk_low.is_none() && d.evicted > 0 {
            d.cap_evicted = true;
        }
        if freed < need {
            tracing::warn!(
                need,
                freed,
                "eviction could not free enough: the buffer holds nothing more to evict"
            );
        }
        Ok(())
    }

    fn apply(&mut self, d: Delta, g: Group) {
        for pr in 0..10 {
            self.prio[pr].0 = (self.prio[pr].0 + d.added[pr].0).saturating_sub(d.removed[pr].0);
            self.prio[pr].1 = (self.prio[pr].1 + d.added[pr].1).saturating_sub(d.removed[pr].1);
        }
        for (bit, owed) in self.owed.0.iter_mut().enumerate() {
            let (add, rem) = (d.sink_added.0[bit], d.sink_removed.0[bit]);
            owed.0 = (owed.0 + add.0).saturating_sub(rem.0);
            owed.1 = (owed.1 + add.1).saturating_sub(rem.1);
        }
        self.publish_counts();
        let m = self.p.metrics.clone();
        m.commits.fetch_add(1, Ordering::Relaxed);
        m.records_acked.fetch_add(d.acked, Ordering::Relaxed);
        m.records_evicted.fetch_add(d.evicted, Ordering::Relaxed);
        m.gaps_recorded.fetch_add(d.gaps, Ordering::Relaxed);
        if d.cap_evicted {
            self.cap_evicted_at = Some(Instant::now());
            self.status_dirty = true;
        }
        if let Some(h) = d.new_hwm {
            self.p.hwm = h;
        }
        if let Some(events) = &self.p.events {
            for gap in d.new_gaps {
                if events.try_send(super::BufferEvent::Evicted(gap)).is_err() {
                    tracing::warn!(
                        "buffer event queue full; eviction not reported to the audit log (the gap is recorded)"
                    );
                }
            }
        }
        for b in &d.blobs_to_delete {
            if let Err(e) = std::fs::remove_file(self.p.spool_dir.join(b))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(file = %b, error = %e, "cannot delete spool file; fsck will list it");
            }
        }
        // Publish the state this commit produced before anyone hears it committed.
        self.update_status();
        if let Some((first, last)) = d.appended {
            self.p.next_seq = last + 1;
            // Head first: whoever hears their append committed must see it in the head.
            self.p.head_tx.send_replace(last);
            m.records_committed
                .fetch_add(last - first + 1, Ordering::Relaxed);
            let now = Timestamp::now().as_nanos();
            let mut seq = first;
            for (recs, reply) in g.appends {
                let start = seq;
                for e in recs.iter().filter(|e| e.pending != 0) {
                    m.ingest_to_durable_us
                        .record(((now - e.ts).max(0) / 1000) as u64);
                }
                seq += recs.len() as u64;
                if let Some(tx) = reply {
                    let _ = tx.send(Ok(SeqRange {
                        first: start,
                        last: seq - 1,
                    }));
                }
            }
        } else {
            for (_, reply) in g.appends {
                if let Some(tx) = reply {
                    // An empty append: nothing to number.
                    let _ = tx.send(Ok(SeqRange { first: 0, last: 0 }));
                }
            }
        }
        for s in g.syncs {
            let _ = s.send(());
        }
    }

    fn compute_status(&self, d: &Delta) -> BufferStatus {
        let mut reasons = Vec::new();
        if let Some(e) = &self.write_error {
            reasons.push(e.clone());
        }
        if let Some(r) = &self.disk_low {
            reasons.push(r.clone());
        }
        let cap_recent = d.cap_evicted
            || self
                .cap_evicted_at
                .is_some_and(|t| t.elapsed() < CAP_EVICTION_REPORTED_FOR);
        if cap_recent {
            reasons.push(format!(
                "buffer at max_bytes {}: evicting lowest priority, oldest first",
                human_bytes(self.p.settings.max_bytes)
            ));
        }
        BufferStatus {
            degraded: !reasons.is_empty(),
            reasons,
        }
    }

    fn update_status(&mut self) {
        let st = self.compute_status(&Delta::default());
        let changed = self.p.status_tx.send_if_modified(|cur| {
            if *cur != st {
                *cur = st.clone();
                true
            } else {
                false
            }
        });
        // Keep the persisted copy current for `buffer stats`, including the return to ok.
        if changed {
            self.status_dirty = true;
        } else if self.write_error.is_none() {
            self.status_dirty = false;
        }
    }
}

fn write_spool(path: &std::path::Path, data: &[u8], fsync: bool) -> Result<(), BufferError> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    if fsync {
        f.sync_all()?;
    }
    Ok(())
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}
