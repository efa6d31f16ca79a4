//! The delivery loop every sink runs: live first, then backfill; retry with backoff; ack.
//!
//! Two lanes split the sink's pending records at a boundary seq `B`:
//! - the **live** lane sends records with `seq > B` in seq order, as they arrive;
//! - the **backfill** lane sends the backlog, `seq <= B`, in seq order.
//!
//! `B` is the head when the loop starts and again whenever the sink recovers from a
//! failure, so after an outage operators see current data at once while the backlog
//! drains behind it. While both lanes have work, backfill gets `backfill_share` of the
//! batches; when the live lane is idle, backfill takes everything. Order per stream holds
//! within each lane.
//!
//! Invariants: a batch is acked (its lane's range `(cursor, last]` for this sink) only
//! after the sink returned `Ok`, i.e. the peer confirmed it; a failed batch is retried
//! as the same batch, so deterministic sinks overwrite rather than duplicate; the loop
//! never spins: an empty read waits for a new commit, a failure waits its backoff.
//!
//! Records the peer refused for good ([`Delivered::rejected`]) are set aside before the
//! batch is acked: appended to the buffer as *dead letters* — the record unchanged but for
//! its stream (the sink's `dead_letter_stream`) and a bad quality naming the sink, the
//! original stream and seq, and the reason — routed like any record, except never back to
//! the sink that refused it. When no other sink takes the dead-letter stream, or a dead
//! letter is itself refused, the record goes to `<data-dir>/deadletter/<sink>.ndjson`
//! (appended and fsynced) instead. Either way it is kept and counted, never dropped.
//!
//! The bandwidth cap charges each delivered batch's bytes to a token bucket and waits
//! off the overdraft before the next batch.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use serde::Serialize;
use skygate_drivers::{ErrorRing, Timestamp};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::SinkCommon;
use super::{Batch, Delivered, Rejected, Sink, SinkError};
use skygate_buffer::{Buffer, ReadQuery, SinkId};
use skygate_util::backoff::Backoff;
use skygate_util::throttle::Throttle;

/// Consecutive failures after which a backing-off link is reported as failing.
pub const FAILING_AFTER: u32 = 5;

/// What a sink is doing, for status, health and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    #[default]
    Starting,
    Connected,
    BackingOff,
    /// Backing off after [`FAILING_AFTER`] or more failures in a row, or the peer refuses
    /// whole batches (credentials, missing bucket): needs attention.
    Failing,
    /// Paused by an operator: the in-flight batch finished, nothing more is read.
    Paused,
    Stopped,
}

/// What an operator wants of a sink. Observed by the delivery loop at the top of each
/// round and while it waits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkControl {
    pub paused: bool,
    /// Bumped by each "flush now": the live lane sends what it has without waiting for a
    /// fuller batch.
    pub flush: u64,
}

/// The control side of a running sink.
#[derive(Debug, Clone)]
pub struct SinkHandle {
    pub id: SinkId,
    pub dead_letter: DeadLetter,
    pub status: watch::Receiver<SinkStatus>,
    pub control: watch::Sender<SinkControl>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkStatus {
    pub state: LinkState,
    pub last_error: Option<String>,
    /// The newest distinct errors, for `skygate errors` and the TUI.
    pub recent_errors: ErrorRing,
    pub consecutive_failures: u32,
    pub delivered_records: u64,
    pub delivered_batches: u64,
    pub gaps_delivered: u64,
    /// Bytes the sink sent for delivered batches.
    pub bytes_sent: u64,
    /// Records the peer refused for good, set aside as dead letters.
    pub dead_lettered: u64,
    /// Whether records at or below `backfill_boundary` are still being sent.
    pub backfilling: bool,
    /// Seqs up to this belong to the backfill lane; newer ones to the live lane.
    pub backfill_boundary: u64,
}

#[derive(Debug)]
pub struct DeliveryTask {
    pub name: String,
    pub sink: Box<dyn Sink>,
    pub id: SinkId,
    pub buffer: Buffer,
    pub common: SinkCommon,
    pub cancel: CancellationToken,
    pub status: watch::Sender<SinkStatus>,
    pub control: watch::Receiver<SinkControl>,
    pub dead_letter: DeadLetter,
}

/// Where this sink's refused records go.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub stream: std::sync::Arc<str>,
    /// The sinks the dead-letter stream is routed to, without this one. Shared with the
    /// sink's handle, so a reload that changes the routes changes it too.
    pub mask: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The file of last resort.
    pub file: std::path::PathBuf,
    pub gateway: std::sync::Arc<str>,
}

/// A read started ahead of time: records in `(after, upto]`.
#[derive(Debug)]
struct Prefetch {
    after: u64,
    upto: u64,
    read: tokio::task::JoinHandle<Result<Vec<skygate_model::Record>, skygate_buffer::BufferError>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Live,
    Backfill,
}

/// The two lanes' cursors. The live lane reads above `live_cursor` (records committed
/// after the boundary); the backfill lane reads `(backfill_cursor, boundary]`, the backlog.
/// A cursor only moves past records the peer confirmed and the buffer acked.
#[derive(Debug)]
struct Lanes {
    boundary: u64,
    backfill_cursor: u64,
    live_cursor: u64,
    backfill_done: bool,
    /// Records sent per lane, for `backfill_share`.
    sent_live: u64,
    sent_backfill: u64,
}

impl Lanes {
    fn new(head: u64) -> Self {
        Self {
            boundary: head,
            backfill_cursor: 0,
            live_cursor: head,
            backfill_done: false,
            sent_live: 0,
            sent_backfill: 0,
        }
    }

    /// The range a lane reads next: `(after, upto]`.
    fn range(&self, lane: Lane) -> (u64, u64) {
        match lane {
            Lane::Live => (self.live_cursor, u64::MAX),
            Lane::Backfill => (self.backfill_cursor, self.boundary),
        }
    }

    /// `n` records up to `last` delivered and acked in `lane`.
    fn advance(&mut self, lane: Lane, last: u64, n: u64) {
        match lane {
            Lane::Live => {
                self.live_cursor = last;
                self.sent_live += n;
            }
            Lane::Backfill => {
                self.backfill_cursor = last;
                self.sent_backfill += n;
            }
        }
    }

    /// After an outage: everything committed up to `head` becomes backlog, behind the live
    /// lane that starts above it.
    fn reopen_backfill(&mut self, head: u64) {
        self.boundary = head.max(self.boundary);
        self.live_cursor = self.live_cursor.max(self.boundary);
        self.backfill_done = false;
    }
}

/// How sending one batch ended.
#[derive(Debug)]
enum Sent {
    /// The peer confirmed it; `failed`: after at least one failed try (the link recovered).
    Delivered { delivered: Delivered, failed: bool },
    /// An operator paused the failing link: the batch stays pending.
    Abandoned,
    /// The task is stopping: the batch stays pending.
    Stopping,
}

impl DeliveryTask {
    pub async fn run(mut self) {
        let mut head_rx = self.buffer.head();
        let mut lanes = Lanes::new(*head_rx.borrow_and_update());
        let mut backoff = Backoff::new(self.common.backoff_initial, self.common.backoff_max);
        let mut gaps_seen = u64::MAX;
        let mut live_ready_at: Option<Instant> = None;
        let mut flushed = self.control.borrow().flush;
        let share = self.common.backfill_share;
        let mut throttle = self.common.max_bytes_per_sec.map(Throttle::new);
        let mut prefetched: Option<Prefetch> = None;
        let boundary = lanes.boundary;
        self.status.send_modify(|s| s.backfill_boundary = boundary);
        tracing::info!(sink = %self.name, boundary, "delivery started");

        while !self.cancel.is_cancelled() {
            if self.control.borrow_and_update().paused {
                self.status.send_modify(|s| s.state = LinkState::Paused);
                tracing::info!(sink = %self.name, "paused");
                tokio::select! {
                    _ = self.cancel.cancelled() => break,
                    _ = self.control.wait_for(|c| !c.paused) => {}
                }
                tracing::info!(sink = %self.name, "resumed");
                self.status.send_modify(|s| s.state = LinkState::Starting);
                continue;
            }
            // Gap markers first: consumers should learn of a loss before the data after it.
            let gaps_now = self.buffer.metrics().gaps_recorded.load(Ordering::Relaxed);
            if gaps_now != gaps_seen {
                match self.deliver_gaps(&mut backoff).await {
                    Some(()) => gaps_seen = gaps_now,
                    None => break,
                }
            }

            let head = *head_rx.borrow_and_update();
            let live_ready = live_ready_at.is_none_or(|t| Instant::now() >= t);
            let lane = if lanes.backfill_done {
                // Only the live lane has work: let its young batch fill up first.
                if let Some(t) = live_ready_at.filter(|_| !live_ready) {
                    tokio::select! {
                        _ = self.cancel.cancelled() => break,
                        _ = tokio::time::sleep_until(t) => {}
                        _ = self.control.changed() => { live_ready_at = None; continue; }
                    }
                }
                Lane::Live
            } else if head > lanes.live_cursor
                && live_ready
                && !backfill_turn(lanes.sent_backfill, lanes.sent_live, share)
            {
                Lane::Live
            } else {
                Lane::Backfill
            };
            let (after, upto) = lanes.range(lane);
            let q = ReadQuery {
                sink: self.id,
                after,
                upto,
                max_records: self.common.batch_max_records,
                max_bytes: self.common.batch_max_bytes,
            };
            // The backfill lane's next batch may already be read (see below).
            let read = match prefetched.take() {
                Some(p) if p.after == after && p.upto == upto => p
                    .read
                    .await
                    .unwrap_or(Err(skygate_buffer::BufferError::Closed)),
                _ => self.buffer.read(q).await,
            };
            let batch = match read {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(sink = %self.name, error = %e, "buffer read failed");
                    if !self.sleep(backoff.next_delay()).await {
                        break;
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                match lane {
                    Lane::Backfill => {
                        lanes.backfill_done = true;
                        self.status.send_modify(|s| s.backfilling = false);
                        tracing::info!(sink = %self.name, "backfill complete");
                    }
                    Lane::Live => {
                        // Nothing pending for this sink up to `head` (what is there was
                        // routed elsewhere): move on and wait for the next commit.
                        lanes.live_cursor = lanes.live_cursor.max(head);
                        tokio::select! {
                            _ = self.cancel.cancelled() => break,
                            changed = head_rx.changed() => if changed.is_err() { break },
                            _ = self.control.changed() => {}
                        }
                    }
                }
                continue;
            }
            // In the live lane, let a small batch fill up to `batch_max_age`: fewer, larger
            // objects. Backfill uses the wait.
            let flush = self.control.borrow().flush;
            if lane == Lane::Live
                && flush == flushed
                && batch.len() < self.common.batch_max_records as usize
            {
                let age = Duration::from_nanos(
                    (Timestamp::now().as_nanos() - batch[0].ingest_ts.as_nanos()).max(0) as u64,
                );
                if age < self.common.batch_max_age {
                    live_ready_at = Some(Instant::now() + (self.common.batch_max_age - age));
                    continue;
                }
            }
            live_ready_at = None;
            flushed = flush;

            let batch: Batch = batch.into();
            let first = batch[0].seq;
            let last = batch[batch.len() - 1].seq;
            // Draining a backlog: read the next batch while this one is on its way, so the
            // buffer read overlaps the peer's round trip. Used only if the next round asks
            // for exactly that range (a failure moves the boundary, and it is dropped).
            if lane == Lane::Backfill && last < lanes.boundary {
                let (buffer, q) = (self.buffer.clone(), ReadQuery { after: last, ..q });
                prefetched = Some(Prefetch {
                    after: last,
                    upto,
                    read: tokio::spawn(async move { buffer.read(q).await }),
                });
            }
            let (delivered, failed) = match self.send(&batch, &mut backoff).await {
                Sent::Delivered { delivered, failed } => (delivered, failed),
                Sent::Abandoned => continue,
                Sent::Stopping => {
                    // The batch stays pending for the next start.
                    self.status.send_modify(|s| s.state = LinkState::Stopped);
                    return;
                }
            };
            if !delivered.rejected.is_empty()
                && let Err(e) = self.set_aside(&batch, &delivered.rejected).await
            {
                // Not acked: the batch is sent again, and set aside again, later.
                tracing::error!(sink = %self.name, error = %e, "cannot set refused records aside");
                self.note_failure(&SinkError::transient_msg(e), &backoff);
                if !self.sleep(backoff.next_delay()).await {
                    break;
                }
                continue;
            }
            if let Err(e) = self.buffer.ack(self.id, after + 1, last).await {
                tracing::error!(sink = %self.name, error = %e, "cannot ack; stopping delivery");
                break;
            }
            tracing::debug!(sink = %self.name, ?lane, first, last, records = batch.len(), "delivered");
            lanes.advance(lane, last, batch.len() as u64);
            backoff.reset();
            self.note_delivered(batch.len() as u64, &delivered);
            if let Some(t) = throttle.as_mut() {
                let wait = t.charge(delivered.bytes);
                if !wait.is_zero() && !self.sleep(wait).await {
                    break;
                }
            }
            if failed {
                // The peer is back: what piled up during the outage becomes backfill and
                // fresh data goes first from here. The widened backfill range may cover
                // records the live lane just acked: let those acks commit before reading
                // it, or they would be sent twice.
                if self.buffer.sync().await.is_err() {
                    break;
                }
                lanes.reopen_backfill(*self.buffer.head().borrow());
                let boundary = lanes.boundary;
                self.status.send_modify(|s| {
                    s.backfilling = true;
                    s.backfill_boundary = boundary;
                });
                tracing::info!(sink = %self.name, boundary, "link recovered; live data first, backlog behind it");
            }
        }
        self.status.send_modify(|s| s.state = LinkState::Stopped);
        tracing::info!(sink = %self.name, "delivery stopped");
    }

    /// Sends one batch until the peer takes it, backing off between tries; gives up when
    /// stopping, or when an operator pauses a failing link (the batch stays pending:
    /// its cursor has not moved, so it is read again).
    async fn send(&mut self, batch: &Batch, backoff: &mut Backoff) -> Sent {
        let mut failed = false;
        loop {
            match self.sink.deliver(batch.clone()).await {
                Ok(delivered) => return Sent::Delivered { delivered, failed },
                Err(e) => {
                    failed = true;
                    self.note_failure(&e, backoff);
                    let woke = tokio::select! {
                        _ = self.cancel.cancelled() => false,
                        _ = tokio::time::sleep(backoff.next_delay()) => true,
                        _ = self.control.changed() => true,
                    };
                    if !woke {
                        return Sent::Stopping;
                    }
                    if self.control.borrow().paused {
                        return Sent::Abandoned;
                    }
                }
            }
        }
    }

    /// A batch of `n` records confirmed (some of them perhaps refused and set aside).
    fn note_delivered(&self, n: u64, delivered: &Delivered) {
        let dead = delivered.rejected.len() as u64;
        self.status.send_modify(|s| {
            s.state = LinkState::Connected;
            s.consecutive_failures = 0;
            s.delivered_records += n - dead;
            s.delivered_batches += 1;
            s.bytes_sent += delivered.bytes;
            s.dead_lettered += dead;
        });
    }

    /// Delivers pending gap markers; `None` when cancelled.
    async fn deliver_gaps(&mut self, backoff: &mut Backoff) -> Option<()> {
        let gaps = loop {
            match self.buffer.pending_gaps(self.id).await {
                Ok(g) => break g,
                Err(e) => {
                    tracing::error!(sink = %self.name, error = %e, "cannot read gaps");
                    if !self.sleep(backoff.next_delay()).await {
                        return None;
                    }
                }
            }
        };
        for gap in &gaps {
            loop {
                match self.sink.deliver_gap(gap).await {
                    Ok(()) => break,
                    Err(e) => {
                        self.note_failure(&e, backoff);
                        if !self.sleep(backoff.next_delay()).await {
                            return None;
                        }
                    }
                }
            }
            if self.buffer.ack_gap(self.id, gap.id).await.is_err() {
                return None;
            }
            self.status.send_modify(|s| s.gaps_delivered += 1);
        }
        Some(())
    }

    fn note_failure(&self, e: &SinkError, backoff: &Backoff) {
        let failures = backoff.failures() + 1;
        if failures == 1 || failures.is_power_of_two() {
            tracing::warn!(sink = %self.name, error = %e, failures, "delivery failed; backing off");
        }
        let msg = e.to_string();
        let state = if failures >= FAILING_AFTER || e.is_permanent() {
            LinkState::Failing
        } else {
            LinkState::BackingOff
        };
        self.status.send_modify(|s| {
            s.state = state;
            s.recent_errors.push(msg.clone());
            s.last_error = Some(msg);
            s.consecutive_failures = failures;
        });
    }

    /// Sets refused records aside (see the module doc); `Err` when they could not be kept,
    /// in which case the batch must not be acked.
    async fn set_aside(&self, batch: &Batch, rejected: &[Rejected]) -> Result<(), String> {
        let dl = &self.dead_letter;
        let mut to_buffer = Vec::new();
        let mut to_file = Vec::new();
        for rj in rejected {
            // A batch is in seq order.
            let Ok(i) = batch.binary_search_by_key(&rj.seq, |r| r.seq) else {
                continue;
            };
            let r = &batch[i];
            tracing::warn!(sink = %self.name, seq = r.seq, stream = %r.stream, reason = %rj.reason, "peer refused a record for good; setting it aside");
            let mut letter = r.clone();
            letter.reading.quality = skygate_drivers::Quality::Bad(format!(
                "refused by sink {} (stream {}, seq {}): {}",
                self.name, r.stream, r.seq, rj.reason
            ));
            // A refused dead letter is not offered to the sinks again: it could go round.
            let mask = dl.mask.load(Ordering::Relaxed);
            if mask != 0 && *r.stream != *dl.stream {
                letter.stream = dl.stream.clone();
                to_buffer.push(skygate_buffer::NewRecord {
                    record: letter,
                    sinks: mask,
                });
            } else {
                to_file.push(letter);
            }
        }
        if !to_file.is_empty() {
            let (file, gateway) = (dl.file.clone(), dl.gateway.clone());
            tokio::task::spawn_blocking(move || append_dead_letters(&file, &gateway, &to_file))
                .await
                .map_err(|e| format!("dead-letter task: {e}"))??;
        }
        if !to_buffer.is_empty() {
            self.buffer
                .append_durable(to_buffer)
                .await
                .map_err(|e| format!("cannot append dead letters: {e}"))?;
        }
        Ok(())
    }

    /// Sleeps unless cancelled first; false when cancelled.
    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

/// Whether backfill should take the next batch while live data also waits: backfill gets
/// `share` of the batches (0: only when live is idle; 1: always first).
fn backfill_turn(sent_backfill: u64, sent_live: u64, share: f64) -> bool {
    share >= 1.0
        || (share > 0.0 && (sent_backfill as f64) * (1.0 - share) <= (sent_live as f64) * share)
}

/// Appends records to the dead-letter file as NDJSON (blobs inline) and fsyncs it.
fn append_dead_letters(
    file: &std::path::Path,
    gateway: &str,
    records: &[skygate_model::Record],
) -> Result<(), String> {
    use std::io::Write;
    let mut out = Vec::new();
    for r in records {
        skygate_model::write_ndjson(&mut out, gateway, r, skygate_model::BlobPlacement::Inline);
    }
    let err = |e: std::io::Error| format!("dead-letter file {}: {e}", file.display());
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(err)?;
    f.write_all(&out).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Everything a delivery loop needs.
#[derive(Debug)]
pub struct SinkSpec {
    pub name: String,
    pub sink: Box<dyn Sink>,
    pub id: SinkId,
    pub buffer: Buffer,
    pub common: SinkCommon,
    pub dead_letter: DeadLetter,
    pub cancel: CancellationToken,
}

/// Spawns a sink's delivery loop; returns its handle.
pub fn spawn(tracker: &tokio_util::task::TaskTracker, spec: SinkSpec) -> SinkHandle {
    let (status_tx, status) = watch::channel(SinkStatus {
        backfilling: true,
        ..SinkStatus::default()
    });
    let (control, control_rx) = watch::channel(SinkControl::default());
    let id = spec.id;
    let dead_letter = spec.dead_letter.clone();
    let task = DeliveryTask {
        name: spec.name,
        sink: spec.sink,
        id,
        buffer: spec.buffer,
        common: spec.common,
        cancel: spec.cancel,
        status: status_tx,
        control: control_rx,
        dead_letter: spec.dead_letter,
    };
    tracker.spawn(task.run());
    SinkHandle {
        id,
        dead_letter,
        status,
        control,
    }
}

#[cfg(test)]
mod tests {
    use super::backfill_turn;

    #[test]
    fn backfill_gets_its_configured_share_of_batches_while_live_data_waits() {
        for share in [0.25, 0.5, 0.75] {
            let (mut b, mut l) = (0u64, 0u64);
            for _ in 0..1000 {
                if backfill_turn(b, l, share) {
                    b += 1;
                } else {
                    l += 1;
                }
            }
            let got = b as f64 / 1000.0;
            assert!((got - share).abs() < 0.01, "share {share}: got {got}");
        }
        assert!(!backfill_turn(0, 0, 0.0), "share 0: live always first");
        assert!(backfill_turn(100, 0, 1.0), "share 1: backfill always first");
    }
}

#[cfg(test)]
mod lane_tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};

    use skygate_drivers::Value;

    use super::*;
    use crate::{Sink, SinkFuture};
    use skygate_buffer::{BufferOptions, NewRecord};
    use skygate_buffer::{BufferSettings, Durability};
    use skygate_model::{Gap, Record};

    /// Records the seqs it is given, in order; refuses everything while `down`, and the
    /// records of stream `refuse` one by one.
    #[derive(Debug, Default)]
    struct RecordingSink {
        down: Arc<AtomicBool>,
        seen: Arc<Mutex<Vec<u64>>>,
        refuse: Option<&'static str>,
    }

    impl Sink for RecordingSink {
        fn deliver(&mut self, batch: Batch) -> SinkFuture<'_, Delivered> {
            Box::pin(async move {
                if self.down.load(Ordering::Relaxed) {
                    return Err(SinkError::transient_msg("peer unreachable"));
                }
                let mut d = Delivered {
                    bytes: 100 * batch.len() as u64,
                    rejected: Vec::new(),
                };
                for r in batch.iter() {
                    if self.refuse.is_some_and(|s| *r.stream == *s) {
                        d.rejected.push(Rejected {
                            seq: r.seq,
                            reason: "too large".into(),
                        });
                    } else {
                        self.seen.lock().expect("lock").push(r.seq);
                    }
                }
                Ok(d)
            })
        }
        fn deliver_gap<'a>(&'a mut self, _: &'a Gap) -> SinkFuture<'a> {
            Box::pin(async { Ok(()) })
        }
    }

    /// A buffer with one sink, `k`, owed every stream.
    fn open_buffer(dir: &std::path::Path) -> (Buffer, skygate_buffer::BufferGuard) {
        Buffer::open(
            BufferOptions {
                events: None,
                dir: dir.to_path_buf(),
                settings: BufferSettings {
                    durability: Durability::Process,
                    ..BufferSettings::default()
                },
                gateway_id: "gw".into(),
                sinks: vec!["k".into(), "b".into()],
                routes: vec![(vec!["*".into()], vec!["k".into()])],
            },
            Arc::new(skygate_bsp::GenericLinux::default()),
        )
        .expect("open")
    }

    fn spec(
        dir: &std::path::Path,
        sink: Box<dyn Sink>,
        id: SinkId,
        buffer: &Buffer,
        common: SinkCommon,
        cancel: &CancellationToken,
    ) -> SinkSpec {
        SinkSpec {
            name: "k".into(),
            sink,
            id,
            buffer: buffer.clone(),
            common,
            dead_letter: DeadLetter {
                stream: Arc::from("deadletter"),
                mask: Arc::default(),
                file: dir.join("deadletter/k.ndjson"),
                gateway: Arc::from("gw"),
            },
            cancel: cancel.clone(),
        }
    }

    fn record(n: i64) -> Record {
        skygate_model::fixtures::record("wx", Value::Integer(n))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_an_outage_fresh_records_go_out_before_the_backlog_finishes_and_nothing_is_missed()
     {
        let dir = tempfile::tempdir().expect("tmp");
        let (buffer, guard) = open_buffer(dir.path());
        let id = buffer.sink_id("k").expect("id");
        let append = |n: i64| {
            let b = buffer.clone();
            async move {
                b.append_durable(
                    (0..n)
                        .map(|i| NewRecord {
                            record: record(i),
                            sinks: id.mask(),
                        })
                        .collect(),
                )
                .await
                .expect("append")
            }
        };
        // A backlog from before this start.
        append(20_000).await;

        let sink = RecordingSink::default();
        let (down, seen) = (sink.down.clone(), sink.seen.clone());
        down.store(true, Ordering::Relaxed);
        let tracker = tokio_util::task::TaskTracker::new();
        let cancel = CancellationToken::new();
        let common = SinkCommon {
            backfill_share: 0.5,
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(50),
            batch_max_records: 500,
            batch_max_bytes: 1 << 30,
            batch_max_age: Duration::from_millis(1),
            ..SinkCommon::default()
        };
        let handle = spawn(
            &tracker,
            spec(dir.path(), Box::new(sink), id, &buffer, common, &cancel),
        );
        let mut status = handle.status.clone();
        // The first (backfill) batch fails; then more piles up behind the failing sink.
        tokio::time::timeout(
            Duration::from_secs(10),
            status.wait_for(|s| s.state == LinkState::BackingOff),
        )
        .await
        .expect("the sink backs off")
        .expect("status");
        append(5_000).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(seen.lock().expect("lock").is_empty());

        // The peer returns; fresh data keeps arriving.
        down.store(false, Ordering::Relaxed);
        let backlog_end = *buffer.head().borrow();
        let mut fresh = Vec::new();
        for _ in 0..20 {
            let r = append(100).await;
            fresh.push((r.first, r.last));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let last = fresh.last().expect("fresh").1;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while seen.lock().expect("lock").len() < last as usize {
            assert!(
                tokio::time::Instant::now() < deadline,
                "delivery stalled at {}",
                seen.lock().expect("lock").len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
        tracker.close();
        tracker.wait().await;

        let seen = seen.lock().expect("lock").clone();
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (1..=last).collect::<Vec<_>>(),
            "every record delivered exactly once"
        );
        // The loop moved its boundary to the head when the peer came back (a few fresh
        // records may have made it in before that).
        let boundary = status.borrow().backfill_boundary;
        assert!(
            boundary >= backlog_end && boundary < last,
            "boundary {boundary}"
        );
        // Live first: records ingested after recovery went out before the backlog ended.
        let pos = |s: u64| seen.iter().position(|x| *x == s).expect("delivered");
        let backlog_done_at = pos(boundary);
        let first_live_at = pos(boundary + 1);
        assert!(
            first_live_at < backlog_done_at,
            "live seq {} went out at {first_live_at}, after the backlog ended at {backlog_done_at}",
            boundary + 1
        );
        // Each lane in seq order.
        let backlog: Vec<u64> = seen.iter().copied().filter(|s| *s <= boundary).collect();
        let live: Vec<u64> = seen.iter().copied().filter(|s| *s > boundary).collect();
        assert!(backlog.windows(2).all(|w| w[0] < w[1]), "backfill in order");
        assert!(live.windows(2).all(|w| w[0] < w[1]), "live in order");
        guard.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pausing_a_failing_sink_stops_its_retries_and_resume_delivers_everything() {
        let dir = tempfile::tempdir().expect("tmp");
        let (buffer, guard) = open_buffer(dir.path());
        let id = buffer.sink_id("k").expect("id");
        let recs = (0..300)
            .map(|i| NewRecord {
                record: record(i),
                sinks: id.mask(),
            })
            .collect();
        buffer.append_durable(recs).await.expect("append");
        let sink = RecordingSink::default();
        let (down, seen) = (sink.down.clone(), sink.seen.clone());
        down.store(true, Ordering::Relaxed);
        let common = SinkCommon {
            backfill_share: 0.5,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            batch_max_records: 100,
            batch_max_bytes: 1 << 30,
            batch_max_age: Duration::from_millis(1),
            ..SinkCommon::default()
        };
        let tracker = tokio_util::task::TaskTracker::new();
        let cancel = CancellationToken::new();
        let h = spawn(
            &tracker,
            spec(dir.path(), Box::new(sink), id, &buffer, common, &cancel),
        );
        let mut status = h.status.clone();
        let wait = |st: LinkState| {
            let mut status = status.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| s.state == st))
                    .await
                    .unwrap_or_else(|_| panic!("never reached {st:?}"))
                    .map(|_| ())
                    .expect("status");
            }
        };
        wait(LinkState::BackingOff).await;
        h.control.send_modify(|c| c.paused = true);
        wait(LinkState::Paused).await;
        down.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            seen.lock().expect("lock").is_empty(),
            "nothing goes out while paused"
        );
        h.control.send_modify(|c| c.paused = false);
        tokio::time::timeout(
            Duration::from_secs(10),
            status.wait_for(|s| s.delivered_records == 300),
        )
        .await
        .expect("all delivered after resume")
        .expect("status");
        let mut got = seen.lock().expect("lock").clone();
        got.sort_unstable();
        assert_eq!(got, (1..=300).collect::<Vec<_>>());
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
        guard.close().await;
    }

    fn records(stream: &str, n: i64, mask: u64) -> Vec<NewRecord> {
        (0..n)
            .map(|i| {
                let mut r = record(i);
                r.stream = Arc::from(stream);
                NewRecord {
                    record: r,
                    sinks: mask,
                }
            })
            .collect()
    }

    /// Up to 100 records still pending for `sink`.
    /// What is still pending for `sink`, once every ack queued so far is committed (an ack
    /// returns when the writer has it, not when it is applied).
    async fn pending_for(buffer: &Buffer, sink: SinkId) -> Vec<Record> {
        buffer.sync().await.expect("sync");
        buffer
            .read(ReadQuery {
                sink,
                after: 0,
                upto: u64::MAX,
                max_records: 100,
                max_bytes: 1 << 30,
            })
            .await
            .expect("read")
    }

    fn common() -> SinkCommon {
        SinkCommon {
            backfill_share: 0.5,
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(50),
            batch_max_records: 50,
            batch_max_bytes: 1 << 30,
            batch_max_age: Duration::from_millis(1),
            ..SinkCommon::default()
        }
    }

    async fn run_until(
        h: &SinkHandle,
        done: impl Fn(&SinkStatus) -> bool,
        cancel: CancellationToken,
        tracker: tokio_util::task::TaskTracker,
    ) {
        let mut status = h.status.clone();
        tokio::time::timeout(Duration::from_secs(20), status.wait_for(|s| done(s)))
            .await
            .expect("delivery finished in time")
            .expect("status");
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_records_become_dead_letters_for_the_other_sinks_and_the_rest_is_delivered() {
        let dir = tempfile::tempdir().expect("tmp");
        let (buffer, guard) = open_buffer(dir.path());
        let (k, b) = (
            buffer.sink_id("k").expect("k"),
            buffer.sink_id("b").expect("b"),
        );
        buffer
            .append_durable(records("wx", 40, k.mask()))
            .await
            .expect("append");
        buffer
            .append_durable(records("big", 10, k.mask()))
            .await
            .expect("append");
        let sink = RecordingSink {
            refuse: Some("big"),
            ..RecordingSink::default()
        };
        let seen = sink.seen.clone();
        let tracker = tokio_util::task::TaskTracker::new();
        let cancel = CancellationToken::new();
        let spec = spec(dir.path(), Box::new(sink), k, &buffer, common(), &cancel);
        spec.dead_letter.mask.store(b.mask(), Ordering::Relaxed);
        let h = spawn(&tracker, spec);
        run_until(
            &h,
            |s| s.dead_lettered == 10 && s.delivered_records == 40,
            cancel,
            tracker,
        )
        .await;
        assert_eq!(*seen.lock().expect("lock"), (1..=40).collect::<Vec<_>>());
        // The refused records wait for sink b, in the dead-letter stream, saying why.
        let letters = pending_for(&buffer, b).await;
        assert_eq!(letters.len(), 10);
        for (i, l) in letters.iter().enumerate() {
            assert_eq!(&*l.stream, "deadletter");
            assert_eq!(
                l.reading.value,
                Value::Integer(i as i64),
                "the record itself is kept"
            );
            let skygate_drivers::Quality::Bad(why) = &l.reading.quality else {
                panic!("quality {:?}", l.reading.quality);
            };
            assert_eq!(
                why,
                &format!("refused by sink k (stream big, seq {}): too large", 41 + i)
            );
        }
        // Nothing is left pending for k.
        let left = pending_for(&buffer, k).await;
        assert!(left.is_empty(), "{} left for k", left.len());
        guard.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_no_other_sink_for_dead_letters_they_are_kept_in_the_dead_letter_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let (buffer, guard) = open_buffer(dir.path());
        let k = buffer.sink_id("k").expect("k");
        buffer
            .append_durable(records("big", 3, k.mask()))
            .await
            .expect("append");
        let sink = RecordingSink {
            refuse: Some("big"),
            ..RecordingSink::default()
        };
        let tracker = tokio_util::task::TaskTracker::new();
        let cancel = CancellationToken::new();
        let h = spawn(
            &tracker,
            spec(dir.path(), Box::new(sink), k, &buffer, common(), &cancel),
        );
        run_until(&h, |s| s.dead_lettered == 3, cancel, tracker).await;
        let text = std::fs::read_to_string(dir.path().join("deadletter/k.ndjson")).expect("file");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 3);
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(l["seq"], 1 + i as u64);
            assert_eq!(l["stream"], "big");
            assert_eq!(l["quality"], "bad");
            assert!(
                l["quality_reason"]
                    .as_str()
                    .expect("reason")
                    .contains("too large")
            );
        }
        guard.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_bandwidth_cap_holds_the_average_rate_down() {
        let dir = tempfile::tempdir().expect("tmp");
        let (buffer, guard) = open_buffer(dir.path());
        let k = buffer.sink_id("k").expect("k");
        // 300 records x 100 bytes = 30 kB at 10 kB/s, in 6 batches of 5 kB: the first
        // second's 10 kB go at once and the wait for the last batch comes after it, so the
        // 15 kB between take at least 1.5 s (without the cap: milliseconds).
        buffer
            .append_durable(records("wx", 300, k.mask()))
            .await
            .expect("append");
        let tracker = tokio_util::task::TaskTracker::new();
        let cancel = CancellationToken::new();
        let mut c = common();
        c.max_bytes_per_sec = Some(10_000);
        let started = tokio::time::Instant::now();
        let h = spawn(
            &tracker,
            spec(
                dir.path(),
                Box::new(RecordingSink::default()),
                k,
                &buffer,
                c,
                &cancel,
            ),
        );
        run_until(&h, |s| s.delivered_records == 300, cancel, tracker).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1450),
            "30 kB at 10 kB/s took only {took:?}"
        );
        assert_eq!(h.status.borrow().bytes_sent, 30_000);
        guard.close().await;
    }
}
