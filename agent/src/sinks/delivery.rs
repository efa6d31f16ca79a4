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

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use serde::Serialize;
use skygate_drivers::{ErrorRing, Timestamp};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Batch, Sink, SinkError};
use crate::buffer::{Buffer, ReadQuery, SinkId};
use crate::config::SinkCommon;
use crate::util::backoff::Backoff;

/// What a sink is doing, for status, health and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    #[default]
    Starting,
    Connected,
    BackingOff,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Live,
    Backfill,
}

impl DeliveryTask {
    pub async fn run(mut self) {
        let mut head_rx = self.buffer.head();
        let mut boundary = *head_rx.borrow_and_update();
        let mut backfill_cursor = 0u64;
        let mut live_cursor = boundary;
        let mut backfill_done = false;
        let (mut sent_live, mut sent_backfill) = (0u64, 0u64);
        let mut backoff = Backoff::new(self.common.backoff_initial, self.common.backoff_max);
        let mut gaps_seen = u64::MAX;
        let mut live_ready_at: Option<Instant> = None;
        let mut flushed = self.control.borrow().flush;
        let share = self.common.backfill_share;
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
            let lane = if backfill_done {
                // Only the live lane has work: let its young batch fill up first.
                if let Some(t) = live_ready_at.filter(|_| !live_ready) {
                    tokio::select! {
                        _ = self.cancel.cancelled() => break,
                        _ = tokio::time::sleep_until(t) => {}
                        _ = self.control.changed() => { live_ready_at = None; continue; }
                    }
                }
                Lane::Live
            } else if head > live_cursor
                && live_ready
                && !backfill_turn(sent_backfill, sent_live, share)
            {
                Lane::Live
            } else {
                Lane::Backfill
            };
            let (after, upto) = match lane {
                Lane::Live => (live_cursor, u64::MAX),
                Lane::Backfill => (backfill_cursor, boundary),
            };
            let q = ReadQuery {
                sink: self.id,
                after,
                upto,
                max_records: self.common.batch_max_records,
                max_bytes: self.common.batch_max_bytes,
            };
            let batch = match self.buffer.read(q).await {
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
                        backfill_done = true;
                        self.status.send_modify(|s| s.backfilling = false);
                        tracing::info!(sink = %self.name, "backfill complete");
                    }
                    Lane::Live => {
                        // Nothing pending for this sink up to `head` (what is there was
                        // routed elsewhere): move on and wait for the next commit.
                        live_cursor = live_cursor.max(head);
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
            let mut failed = false;
            let mut abandoned = false;
            loop {
                match self.sink.deliver(batch.clone()).await {
                    Ok(()) => break,
                    Err(e) => {
                        failed = true;
                        self.note_failure(&e, &backoff);
                        let woke = tokio::select! {
                            _ = self.cancel.cancelled() => None,
                            _ = tokio::time::sleep(backoff.next_delay()) => Some(()),
                            _ = self.control.changed() => Some(()),
                        };
                        if woke.is_none() {
                            // Stopping: the batch stays pending for the next start.
                            self.status.send_modify(|s| s.state = LinkState::Stopped);
                            return;
                        }
                        if self.control.borrow().paused {
                            // An operator paused a failing link: stop retrying. The batch
                            // stays pending (cursor unchanged) and is read again on resume.
                            abandoned = true;
                            break;
                        }
                    }
                }
            }
            if abandoned {
                continue;
            }
            if let Err(e) = self.buffer.ack(self.id, after + 1, last).await {
                tracing::error!(sink = %self.name, error = %e, "cannot ack; stopping delivery");
                break;
            }
            tracing::debug!(sink = %self.name, ?lane, first, last, records = batch.len(), "delivered");
            match lane {
                Lane::Live => {
                    live_cursor = last;
                    sent_live += batch.len() as u64;
                }
                Lane::Backfill => {
                    backfill_cursor = last;
                    sent_backfill += batch.len() as u64;
                }
            }
            backoff.reset();
            let n = batch.len() as u64;
            self.status.send_modify(|s| {
                s.state = LinkState::Connected;
                s.consecutive_failures = 0;
                s.delivered_records += n;
                s.delivered_batches += 1;
            });
            if failed {
                // The peer is back: what piled up during the outage becomes backfill and
                // fresh data goes first from here. The widened backfill range may cover
                // records the live lane just acked: let those acks commit before reading
                // it, or they would be sent twice.
                if self.buffer.sync().await.is_err() {
                    break;
                }
                boundary = self.buffer.head().borrow().to_owned().max(boundary);
                live_cursor = live_cursor.max(boundary);
                backfill_done = false;
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
        self.status.send_modify(|s| {
            s.state = LinkState::BackingOff;
            s.recent_errors.push(msg.clone());
            s.last_error = Some(msg);
            s.consecutive_failures = failures;
        });
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

/// Spawns a sink's delivery loop; returns its handle.
pub fn spawn(
    tracker: &tokio_util::task::TaskTracker,
    name: String,
    sink: Box<dyn Sink>,
    id: SinkId,
    buffer: Buffer,
    common: SinkCommon,
    cancel: CancellationToken,
) -> SinkHandle {
    let (status_tx, status) = watch::channel(SinkStatus {
        backfilling: true,
        ..SinkStatus::default()
    });
    let (control, control_rx) = watch::channel(SinkControl::default());
    let task = DeliveryTask {
        name,
        sink,
        id,
        buffer,
        common,
        cancel,
        status: status_tx,
        control: control_rx,
    };
    tracker.spawn(task.run());
    SinkHandle {
        id,
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

    use skygate_drivers::{Quality, Reading, TimeQuality, Value};

    use super::*;
    use crate::buffer::{BufferOptions, NewRecord};
    use crate::config::{BufferSettings, Durability};
    use crate::model::{Gap, Record};
    use crate::sinks::{Sink, SinkFuture};

    /// Records the seqs it is given, in order; refuses everything while `down`.
    #[derive(Debug, Default)]
    struct RecordingSink {
        down: Arc<AtomicBool>,
        seen: Arc<Mutex<Vec<u64>>>,
    }

    impl Sink for RecordingSink {
        fn deliver(&mut self, batch: Batch) -> SinkFuture<'_> {
            Box::pin(async move {
                if self.down.load(Ordering::Relaxed) {
                    return Err(SinkError::Transient("peer unreachable".into()));
                }
                self.seen
                    .lock()
                    .expect("lock")
                    .extend(batch.iter().map(|r| r.seq));
                Ok(())
            })
        }
        fn deliver_gap<'a>(&'a mut self, _: &'a Gap) -> SinkFuture<'a> {
            Box::pin(async { Ok(()) })
        }
    }

    /// A buffer with one sink, `k`, owed every stream.
    fn open_buffer(dir: &std::path::Path) -> (Buffer, crate::buffer::BufferGuard) {
        Buffer::open(
            BufferOptions {
                events: None,
                dir: dir.to_path_buf(),
                settings: BufferSettings {
                    durability: Durability::Process,
                    ..BufferSettings::default()
                },
                gateway_id: "gw".into(),
                sinks: vec!["k".into()],
                routes: vec![(vec!["*".into()], vec!["k".into()])],
            },
            Arc::new(skygate_bsp::GenericLinux::default()),
        )
        .expect("open")
    }

    fn record(n: i64) -> Record {
        Record {
            seq: 0,
            stream: Arc::from("wx"),
            priority: 5,
            ingest_ts: Timestamp::now(),
            reading: Reading {
                source: Arc::from("sim"),
                channel: Arc::from("t"),
                ts: Timestamp::now(),
                time_quality: TimeQuality::Ntp,
                value: Value::Integer(n),
                unit: None,
                quality: Quality::Good,
            },
        }
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
        };
        let handle = spawn(
            &tracker,
            "k".into(),
            Box::new(sink),
            id,
            buffer.clone(),
            common,
            cancel.clone(),
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
        };
        let tracker = tokio_util::task::TaskTracker::new();
        let cancel = CancellationToken::new();
        let h = spawn(
            &tracker,
            "k".into(),
            Box::new(sink),
            id,
            buffer.clone(),
            common,
            cancel.clone(),
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
}
