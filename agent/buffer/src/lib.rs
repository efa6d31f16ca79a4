//! The durable store-and-forward buffer: one log, many cursors.
//!
//! # Invariants
//! 1. A record counts as ingested only once its transaction commits (SQLite, WAL). Commits
//!    are grouped: the single writer thread takes everything queued (up to
//!    `commit_max_records`, optionally lingering `commit_max_delay`) into one transaction.
//!    `durability = "power"` runs `synchronous=FULL` (the WAL is fsynced at every commit);
//!    `"process"` runs `synchronous=NORMAL` (survives a killed process, not a power cut).
//! 2. Each record is stored once. Its `pending` column is a bit mask of the sinks it was
//!    routed to that have not yet acknowledged it. An ack clears the sink's bit; the row
//!    is deleted in the same statement when the last bit clears.
//! 3. Acks come only from sinks, and sinks ack only what their peer confirmed.
//! 4. Bounded by `max_bytes` (sum of accounted record sizes, spooled blobs included) and a
//!    free-disk watermark (`min_free_disk`, counting free database pages as free). When
//!    either is crossed the writer evicts, lowest priority first, then oldest, and records
//!    each eviction as a gap (stream, seq range, time range, count) in the `gaps` table,
//!    which sinks deliver as gap markers; the status turns degraded and it is logged.
//! 5. Live first, then backfill: see `sinks::delivery`; the buffer serves range reads per
//!    sink (`seq > after AND seq <= upto AND pending & bit`) in seq order.
//! 6. Blob payloads above `blob_spool_threshold` are written to `spool/<seq>.blob` and
//!    fsynced (file and directory, in `power` mode) before the transaction that points at
//!    them commits; they are deleted only after the transaction that deletes their record.
//!    Spool files no record points to (a crash between file and commit) are removed at
//!    start.
//! 7. At start the database is checked (`PRAGMA quick_check`, schema version, meta). A
//!    database that fails is moved to `quarantine/<time>/` with a `report.json`, its
//!    readable rows are salvaged into a fresh database with their original seqs, and the
//!    agent goes on. Write errors (disk full, read-only, I/O) roll the transaction back,
//!    mark the buffer degraded and are retried with backoff; they never kill the agent.
//! 8. `skygate buffer stats | inspect | export | replay | fsck` ([`ops`]).
//!
//! # Checkpoints
//! Commits never run a WAL checkpoint (`wal_autocheckpoint=0`): a checkpoint inside a
//! commit stalls every reading queued behind it. The maintenance thread runs a PASSIVE
//! checkpoint on its own connection once the WAL passes 4 MiB (copying without blocking
//! the writer), then asks the writer to `RESTART` the log between two groups, which only
//! has the frames committed meanwhile left to copy. The WAL stays near 4 MiB under load.
//!
//! # Sequence numbers
//! `seq` is the rowid, assigned by the writer in commit order from 1. `meta.last_seq` is
//! written in every transaction that appends, so seqs are never reused even after every
//! record was delivered and deleted. A rolled-back transaction gives its seqs back (they
//! were never visible). `seq.hwm` holds a ceiling every issued seq is below, advanced in
//! steps of [`startup::HWM_RESERVE`] (write temp, fsync, rename, fsync dir) before a commit
//! crosses it: if a corrupt database loses `meta`, numbering resumes above the ceiling and
//! the unknown range is recorded as a gap, so a seq is never issued twice.
//!
//! # On-disk layout (`<data-dir>/buffer/`)
//! ```text
//! skygate.db, -wal, -shm   SQLite database (schema below), WAL mode
//! spool/<seq>.blob         large blob payloads
//! seq.hwm                  decimal seq ceiling
//! LOCK                     flock'd by the running agent (holds its pid)
//! quarantine/<UTC time>/   databases that failed the start-up check, with report.json
//! ```
//!
//! # Schema (version 1)
//! ```sql
//! meta(key TEXT PRIMARY KEY, value TEXT)      -- schema_version, gateway_id, last_seq, status
//! sinks(name TEXT PRIMARY KEY, bit INTEGER UNIQUE)
//! records(seq INTEGER PRIMARY KEY,            -- rowid
//!         stream TEXT, priority INTEGER, ts INTEGER, ingest_ts INTEGER,
//!         pending INTEGER,                    -- bit mask of sinks still owed
//!         size INTEGER,                       -- accounted bytes (row + spool file)
//!         body BLOB,                          -- postcard-encoded Reading (v1, plus a
//!                                             -- later BlobMeta variant that only blobs
//!                                             -- with metadata use); a spooled blob's
//!                                             -- data is left empty here
//!         blob TEXT)                          -- spool file name, or NULL
//! gaps(id INTEGER PRIMARY KEY, stream TEXT, first_seq INTEGER, last_seq INTEGER,
//!      count INTEGER, first_ts INTEGER, last_ts INTEGER, reason TEXT,
//!      recorded_at INTEGER, pending INTEGER)
//! ```

#![forbid(unsafe_code)]

pub mod ops;
mod reader;
mod schema;
mod settings;
pub mod startup;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use skygate_bsp::Board;
use tokio::sync::{mpsc, oneshot, watch};

use skygate_model::{Gap, Record};
use skygate_util::histogram::Histogram;

pub use settings::{BufferSettings, Durability};
pub use startup::StartupReport;
pub use writer::human_bytes as writer_human_bytes;

/// A sink's bit in the `pending` mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SinkId(pub u8);

impl SinkId {
    pub fn mask(self) -> u64 {
        1u64 << self.0
    }
}

/// A record to append, with the sinks it is routed to. With no sinks it is numbered (it
/// takes a seq) but not stored: a workflow's input whose own stream goes nowhere.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub record: Record,
    pub sinks: u64,
}

/// Inclusive seq range of an append, once committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqRange {
    pub first: u64,
    pub last: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("buffer directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("buffer in {path} is in use by another process{}", .holder.as_ref().map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked {
        path: PathBuf,
        holder: Option<String>,
    },
    #[error("buffer database {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("buffer: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("buffer: {0}")]
    Io(#[from] std::io::Error),
    #[error("buffer record {seq}: cannot decode: {message}")]
    Decode { seq: u64, message: String },
    #[error("buffer: unknown sink {0:?}")]
    UnknownSink(String),
    #[error("buffer is closed")]
    Closed,
    #[error("buffer: {0}")]
    Other(String),
}

/// Whether the buffer is working as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
pub struct BufferStatus {
    pub degraded: bool,
    /// Why not ok; empty when ok.
    pub reasons: Vec<String>,
}

/// Counters and the ingest-to-durable latency, shared with metrics and the benchmark.
/// Written only by the writer thread; read by anyone.
#[derive(Debug, Default)]
pub struct BufferMetrics {
    pub records_committed: AtomicU64,
    pub commits: AtomicU64,
    pub records_acked: AtomicU64,
    pub records_evicted: AtomicU64,
    pub gaps_recorded: AtomicU64,
    pub write_errors: AtomicU64,
    pub records_stored: AtomicU64,
    pub bytes_stored: AtomicU64,
    /// Microseconds from a reading's timestamp to the commit that made it durable.
    pub ingest_to_durable_us: Histogram,
    /// Per sink bit: records and bytes still owed to that sink.
    pub pending_records: PerSinkGauge,
    pub pending_bytes: PerSinkGauge,
}

/// One gauge per sink bit.
#[derive(Debug)]
pub struct PerSinkGauge(pub [AtomicU64; 64]);

impl Default for PerSinkGauge {
    fn default() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl std::ops::Index<usize> for PerSinkGauge {
    type Output = AtomicU64;
    fn index(&self, i: usize) -> &AtomicU64 {
        &self.0[i]
    }
}

impl BufferMetrics {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// A range read for one sink.
#[derive(Debug, Clone, Copy)]
pub struct ReadQuery {
    pub sink: SinkId,
    /// Exclusive lower bound.
    pub after: u64,
    /// Inclusive upper bound.
    pub upto: u64,
    pub max_records: u32,
    pub max_bytes: u64,
}

pub(crate) enum WriterCmd {
    Append {
        records: Vec<NewRecord>,
        reply: Option<oneshot::Sender<Result<SeqRange, BufferError>>>,
    },
    Ack {
        sink: SinkId,
        first: u64,
        last: u64,
    },
    AckGap {
        sink: SinkId,
        id: i64,
    },
    /// Replies once everything queued before it is committed.
    Sync(oneshot::Sender<()>),
    /// Re-checks disk space and status (sent by the maintenance thread).
    Tick,
    /// The log was just checkpointed by the maintenance thread: copy the rest and start
    /// the log over (`wal_checkpoint(RESTART)` on the writer's own connection).
    RestartWal,
    /// Commit what is queued, fold the WAL into the database and flush the file system
    /// (power failing): answered when all of it is on the disk.
    Seal(oneshot::Sender<Result<SealReport, BufferError>>),
    Shutdown,
}

/// What [`Buffer::seal`] made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SealReport {
    /// The highest seq committed (0 when none ever was).
    pub last_seq: u64,
    /// WAL frames folded into the database by the checkpoint.
    pub wal_frames: i64,
}

pub(crate) enum ReadCmd {
    Records(ReadQuery, oneshot::Sender<Result<Vec<Record>, BufferError>>),
    Gaps(SinkId, oneshot::Sender<Result<Vec<Gap>, BufferError>>),
    OldestPending(SinkId, oneshot::Sender<Result<Option<i64>, BufferError>>),
    Shutdown,
}

/// Something the buffer did that operators must be told of (audit trail).
#[derive(Debug, Clone)]
pub enum BufferEvent {
    /// Records were evicted; the gap describes them. Sent after the eviction committed.
    Evicted(Gap),
}

/// What the buffer needs to open.
#[derive(Debug, Clone)]
pub struct BufferOptions {
    /// Where to report evictions. Bounded; the writer never waits on it (a full queue
    /// drops the event, the gap itself is still recorded in the database).
    pub events: Option<mpsc::Sender<BufferEvent>>,
    /// `<data-dir>/buffer`.
    pub dir: PathBuf,
    pub settings: BufferSettings,
    pub gateway_id: String,
    /// Names of the configured sinks; each gets a bit of the pending mask.
    pub sinks: Vec<String>,
    /// The sinks each stream goes to, by sink name; used to re-route salvaged records.
    pub routes: Vec<(Vec<String>, Vec<String>)>,
}

/// A handle to the buffer: cheap to clone, usable from any task.
#[derive(Debug, Clone)]
pub struct Buffer {
    writer: mpsc::Sender<WriterCmd>,
    reader: mpsc::Sender<ReadCmd>,
    head: watch::Receiver<u64>,
    status: watch::Receiver<BufferStatus>,
    sinks: Arc<BTreeMap<String, SinkId>>,
    metrics: Arc<BufferMetrics>,
}

/// Owns the buffer's threads and its lock; [`BufferGuard::close`] stops them in order.
#[derive(Debug)]
pub struct BufferGuard {
    writer_tx: mpsc::Sender<WriterCmd>,
    reader_tx: mpsc::Sender<ReadCmd>,
    writer: Option<std::thread::JoinHandle<()>>,
    reader: Option<std::thread::JoinHandle<()>>,
    _lock: startup::DirLock,
    pub report: StartupReport,
}

/// Queue depth of the writer, in commands (each append carries a batch of records).
const WRITER_QUEUE: usize = 64;
const READER_QUEUE: usize = 64;

impl Buffer {
    /// Opens (checking, quarantining and salvaging as needed) and starts the threads.
    /// Blocking: call from `spawn_blocking` or before the runtime's hot path.
    pub fn open(
        opts: BufferOptions,
        board: Arc<dyn Board>,
    ) -> Result<(Buffer, BufferGuard), BufferError> {
        let opened = startup::open(&opts)?;
        if let Ok(disk) = board.disk_space(&opts.dir)
            && opts.settings.min_free_disk >= disk.total_bytes
        {
            // Not refused (the disk may be resized later) but said plainly: every commit
            // would evict whatever the sinks have not taken yet.
            tracing::warn!(
                min_free_disk = opts.settings.min_free_disk,
                filesystem_bytes = disk.total_bytes,
                dir = %opts.dir.display(),
                "buffer.min_free_disk is larger than the filesystem holding the buffer: \
                 the buffer will evict on every commit; set it below the disk size"
            );
        }
        let metrics = Arc::new(BufferMetrics::default());
        let (writer_tx, writer_rx) = mpsc::channel(WRITER_QUEUE);
        let (reader_tx, reader_rx) = mpsc::channel(READER_QUEUE);
        let (head_tx, head_rx) = watch::channel(opened.last_seq);
        let (status_tx, status_rx) = watch::channel(BufferStatus::default());
        let sinks = Arc::new(opened.sinks.clone());

        let reader_conn = schema::open_reader(&opened.db_path)?;
        let spool = opened.spool_dir.clone();
        let reader = std::thread::Builder::new()
            .name("buffer-reader".into())
            .spawn(move || reader::run(reader_conn, spool, reader_rx))?;

        let w = writer::Writer::new(
            opened.conn,
            writer::WriterParts {
                dir: opts.dir.clone(),
                spool_dir: opened.spool_dir,
                settings: opts.settings.clone(),
                next_seq: opened.last_seq + 1,
                hwm: opened.hwm,
                head_tx,
                status_tx,
                metrics: metrics.clone(),
                board,
                events: opts.events.clone(),
            },
        )?;
        let writer = std::thread::Builder::new()
            .name("buffer-writer".into())
            .spawn(move || w.run(writer_rx))?;
        let checkpointer = schema::open_checkpointer(&opened.db_path)?;
        let tick_tx = writer_tx.clone();
        let wal = PathBuf::from(format!("{}-wal", opened.db_path.display()));
        std::thread::Builder::new()
            .name("buffer-maintenance".into())
            .spawn(move || maintenance(checkpointer, wal, tick_tx))?;

        let buffer = Buffer {
            writer: writer_tx.clone(),
            reader: reader_tx.clone(),
            head: head_rx,
            status: status_rx,
            sinks,
            metrics,
        };
        let guard = BufferGuard {
            writer_tx,
            reader_tx,
            writer: Some(writer),
            reader: Some(reader),
            _lock: opened.lock,
            report: opened.report,
        };
        Ok((buffer, guard))
    }

    pub fn sink_id(&self, name: &str) -> Option<SinkId> {
        self.sinks.get(name).copied()
    }

    /// The pending mask for a set of sink names (unknown names are ignored).
    pub fn mask_for<'a>(&self, sinks: impl IntoIterator<Item = &'a str>) -> u64 {
        sinks
            .into_iter()
            .filter_map(|s| self.sink_id(s))
            .fold(0, |m, id| m | id.mask())
    }

    /// Queues records for the next group commit. Returns when queued, not when durable;
    /// waits while the writer's queue is full.
    pub async fn append(&self, records: Vec<NewRecord>) -> Result<(), BufferError> {
        self.writer
            .send(WriterCmd::Append {
                records,
                reply: None,
            })
            .await
            .map_err(|_| BufferError::Closed)
    }

    /// Queues records like [`Buffer::append`] and returns at once with a receiver for the
    /// seqs they get when committed (workflows use them to name their inputs).
    pub async fn append_numbered(
        &self,
        records: Vec<NewRecord>,
    ) -> Result<oneshot::Receiver<Result<SeqRange, BufferError>>, BufferError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriterCmd::Append {
                records,
                reply: Some(tx),
            })
            .await
            .map_err(|_| BufferError::Closed)?;
        Ok(rx)
    }

    /// Appends and waits until the records are committed; returns their seqs.
    pub async fn append_durable(&self, records: Vec<NewRecord>) -> Result<SeqRange, BufferError> {
        let rx = self.append_numbered(records).await?;
        rx.await.map_err(|_| BufferError::Closed)?
    }

    /// Records `seq` in `first..=last` pending for `sink` were confirmed by its peer.
    pub async fn ack(&self, sink: SinkId, first: u64, last: u64) -> Result<(), BufferError> {
        self.writer
            .send(WriterCmd::Ack { sink, first, last })
            .await
            .map_err(|_| BufferError::Closed)
    }

    pub async fn ack_gap(&self, sink: SinkId, id: i64) -> Result<(), BufferError> {
        self.writer
            .send(WriterCmd::AckGap { sink, id })
            .await
            .map_err(|_| BufferError::Closed)
    }

    /// Waits until everything queued so far (appends, acks) is committed.
    pub async fn sync(&self) -> Result<(), BufferError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriterCmd::Sync(tx))
            .await
            .map_err(|_| BufferError::Closed)?;
        rx.await.map_err(|_| BufferError::Closed)
    }

    /// Commits everything queued so far, checkpoints the WAL (`TRUNCATE`: database file
    /// fsynced, log emptied) and `syncfs`es the data file system, so that what the buffer
    /// accepted survives the power going. Appends queued afterwards commit as usual; the
    /// caller stops intake first.
    pub async fn seal(&self) -> Result<SealReport, BufferError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriterCmd::Seal(tx))
            .await
            .map_err(|_| BufferError::Closed)?;
        rx.await.map_err(|_| BufferError::Closed)?
    }

    /// Records pending for a sink in a seq range, in seq order.
    pub async fn read(&self, q: ReadQuery) -> Result<Vec<Record>, BufferError> {
        let (tx, rx) = oneshot::channel();
        self.reader
            .send(ReadCmd::Records(q, tx))
            .await
            .map_err(|_| BufferError::Closed)?;
        rx.await.map_err(|_| BufferError::Closed)?
    }

    /// Gap markers a sink has not yet delivered.
    pub async fn pending_gaps(&self, sink: SinkId) -> Result<Vec<Gap>, BufferError> {
        let (tx, rx) = oneshot::channel();
        self.reader
            .send(ReadCmd::Gaps(sink, tx))
            .await
            .map_err(|_| BufferError::Closed)?;
        rx.await.map_err(|_| BufferError::Closed)?
    }

    /// Ingest time (ns) of the oldest record still owed to `sink`.
    pub async fn oldest_pending(&self, sink: SinkId) -> Result<Option<i64>, BufferError> {
        let (tx, rx) = oneshot::channel();
        self.reader
            .send(ReadCmd::OldestPending(sink, tx))
            .await
            .map_err(|_| BufferError::Closed)?;
        rx.await.map_err(|_| BufferError::Closed)?
    }

    /// Records and bytes still owed to `sink`.
    pub fn backlog(&self, sink: SinkId) -> (u64, u64) {
        let i = sink.0 as usize;
        (
            self.metrics.pending_records[i].load(Ordering::Relaxed),
            self.metrics.pending_bytes[i].load(Ordering::Relaxed),
        )
    }

    /// Sink names and their ids.
    pub fn sinks(&self) -> impl Iterator<Item = (&str, SinkId)> {
        self.sinks.iter().map(|(n, id)| (n.as_str(), *id))
    }

    /// The last committed seq; changes after every commit that appended.
    pub fn head(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }

    pub fn status(&self) -> watch::Receiver<BufferStatus> {
        self.status.clone()
    }

    pub fn metrics(&self) -> &Arc<BufferMetrics> {
        &self.metrics
    }
}

impl BufferGuard {
    /// Commits what is queued, checkpoints the WAL and stops the threads. Every `Buffer`
    /// handle fails with [`BufferError::Closed`] afterwards.
    pub async fn close(mut self) {
        let _ = self.writer_tx.send(WriterCmd::Shutdown).await;
        let _ = self.reader_tx.send(ReadCmd::Shutdown).await;
        let writer = self.writer.take();
        let reader = self.reader.take();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(w) = writer {
                let _ = w.join();
            }
            if let Some(r) = reader {
                let _ = r.join();
            }
        })
        .await;
    }

    /// The same, for callers without a runtime (tests, CLI).
    pub fn close_blocking(mut self) {
        let _ = self.writer_tx.blocking_send(WriterCmd::Shutdown);
        let _ = self.reader_tx.blocking_send(ReadCmd::Shutdown);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Checkpoints the WAL off the writer's path and ticks the writer once a second so it
/// notices disk space changing while no data flows. Ends when the writer is gone.
fn maintenance(conn: rusqlite::Connection, wal: PathBuf, tick: mpsc::Sender<WriterCmd>) {
    let step = std::time::Duration::from_millis(100);
    let mut since_tick = std::time::Duration::ZERO;
    loop {
        #[allow(clippy::disallowed_methods, reason = "the buffer's maintenance thread")]
        std::thread::sleep(step);
        since_tick += step;
        if since_tick >= std::time::Duration::from_secs(1) {
            since_tick = std::time::Duration::ZERO;
            if tick.blocking_send(WriterCmd::Tick).is_err() {
                return;
            }
        } else if tick.is_closed() {
            return;
        }
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        if size < schema::WAL_CHECKPOINT_BYTES {
            continue;
        }
        // PASSIVE copies the log into the database without holding up the writer; the
        // writer then restarts the log itself between two commits, with only the frames
        // committed meanwhile left to copy (see `WriterCmd::RestartWal`).
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0)) {
            Ok(_) => {
                if tick.blocking_send(WriterCmd::RestartWal).is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        }
    }
}

/// `<data-dir>/buffer`.
pub fn buffer_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("buffer")
}
