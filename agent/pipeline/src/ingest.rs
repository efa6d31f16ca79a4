//! Ingest: readings from drivers become records (stream, priority, ingest time, sinks) and
//! are handed to the buffer in batches. A reading whose stream has no route is counted and
//! dropped (a documented filter, not a loss: it never had a seq).
//!
//! Ingest owns the routes. They change only through [`IngestCmd::SetRoutes`], handled
//! between batches: every reading received before the command was routed by the old
//! table, every one after by the new (a reload relies on this to retire a driver's route
//! only after its last reading went through).
//!
//! A reading sent with a commit waiter ([`skygate_drivers::ReadingSender::send_committed`])
//! makes its whole batch an `append_durable`; the waiter hears `Stored` once the buffer has
//! committed it (and, the writer being ordered, everything before it), or `NotRouted`.
//!
//! Observers get, per batch and never per reading: per-source counts and the last value of
//! each channel ([`LiveValues`], one lock per batch), and — only while someone listens —
//! the batch itself on a broadcast channel for `skygate tail`. The broadcast keeps
//! [`TAIL_BATCHES`]; a listener that falls further behind loses the oldest batches and is
//! told how many (tail is a live view, not a delivery path).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use skygate_drivers::{Committed, Envelope, Reading, Timestamp};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{INGEST_BATCH, Route};
use skygate_buffer::{Buffer, BufferError, NewRecord, SeqRange};
use skygate_control::view::{self, IngestCounts, LastValue, SourceLive};
use skygate_functions::{Engine, WorkflowsView};
use skygate_model::{BlobPlacement, Record, value_json};

/// Batches a `skygate tail` listener may fall behind before it loses the oldest.
pub const TAIL_BATCHES: usize = 256;
/// How often time-bound workflow steps (windows) are told the time.
const WORKFLOW_TICK: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct IngestCounters {
    pub readings: AtomicU64,
    /// Records made by workflows.
    pub derived: AtomicU64,
    pub unrouted: AtomicU64,
    pub unknown_source: AtomicU64,
    /// True while the ingest task runs (it ends when every driver has stopped).
    pub running: AtomicBool,
}

/// Per-source counts and last values, updated once per batch.
#[derive(Debug, Default)]
pub struct LiveValues(Mutex<HashMap<Arc<str>, SourceLive>>);

impl LiveValues {
    pub fn get(&self, source: &str) -> Option<SourceLive> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(source)
            .cloned()
    }

    /// Runs of readings from the same source and channel cost one map update each: a
    /// driver sends a channel's readings together, so a batch has few runs.
    fn update(&self, readings: &[Reading]) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut run_start = 0;
        for (i, r) in readings.iter().enumerate() {
            let next = readings.get(i + 1);
            if next.is_some_and(|n| {
                Arc::ptr_eq(&n.source, &r.source) && Arc::ptr_eq(&n.channel, &r.channel)
            }) {
                continue;
            }
            let src = match map.get_mut(&r.source) {
                Some(s) => s,
                None => map.entry(r.source.clone()).or_default(),
            };
            src.readings += (i + 1 - run_start) as u64;
            src.last_ts = Some(src.last_ts.map_or(r.ts, |t| t.max(r.ts)));
            let last = LastValue {
                ts: r.ts,
                time_quality: r.time_quality.as_str(),
                value: value_json(&r.value, BlobPlacement::Omitted),
                unit: r.unit.as_deref().map(str::to_string),
                quality: r.quality.as_str(),
                quality_reason: r.quality.reason().map(str::to_string),
            };
            match src.channels.get_mut(&*r.channel) {
                Some(v) => *v = last,
                None => {
                    src.channels.insert(r.channel.to_string(), last);
                }
            }
            run_start = i + 1;
        }
    }
}

/// What ingest shares with observers (the control API, the heartbeat).
#[derive(Debug, Clone)]
pub struct IngestView {
    pub counters: Arc<IngestCounters>,
    pub live: Arc<LiveValues>,
    /// Each routed batch, as records not yet numbered (seq 0).
    pub tail: broadcast::Sender<Arc<[Record]>>,
    /// The installed workflows and their counters.
    pub workflows: WorkflowsView,
}

impl Default for IngestView {
    fn default() -> Self {
        Self {
            counters: Arc::default(),
            live: Arc::default(),
            tail: broadcast::channel(TAIL_BATCHES).0,
            workflows: WorkflowsView::default(),
        }
    }
}

/// What ingest routes by: per source, its stream, priority and sinks; and the workflows.
#[derive(Debug, Default)]
pub(crate) struct Routing {
    pub routes: HashMap<String, Route>,
    pub engine: Option<Engine>,
}

/// Orders for the ingest task.
#[derive(Debug)]
pub(crate) enum IngestCmd {
    /// Replace the routing table and the workflows; answered once installed.
    SetRoutes(Box<Routing>, oneshot::Sender<()>),
    /// Stop (true) or resume (false) taking readings from the drivers' channel; answered
    /// once ingest has handed its last batch to the buffer. While held, the channel fills
    /// and the drivers wait (the broker's clients wait for their PUBACKs).
    Hold(bool, oneshot::Sender<()>),
}

type SeqReply = oneshot::Receiver<Result<SeqRange, BufferError>>;

/// The seqs of ingest's appends, as the writer commits them: workflows name inputs of
/// earlier batches by seq.
#[derive(Default)]
struct Numbering {
    next_batch: u64,
    waiting: VecDeque<(u64, SeqReply)>,
}

impl Numbering {
    fn next(&mut self) -> u64 {
        self.next_batch += 1;
        self.next_batch
    }

    /// Hands the engine every number that has arrived, and waits for the ones the
    /// outputs of batch `no` need (only when they refer to an append not committed yet).
    async fn settle(&mut self, engine: &mut Engine, no: u64) {
        while let Some((b, rx)) = self.waiting.front_mut() {
            match rx.try_recv() {
                Ok(Ok(r)) => engine.numbered(*b, r.first),
                Err(oneshot::error::TryRecvError::Empty) => break,
                // Failed or abandoned: those records were not committed; nothing to name.
                _ => {}
            }
            self.waiting.pop_front();
        }
        while let Some(need) = engine.needs(no) {
            let Some((b, rx)) = self.waiting.pop_front() else {
                break;
            };
            if let Ok(Ok(r)) = rx.await {
                engine.numbered(b, r.first);
            }
            if b >= need && engine.needs(no).is_none() {
                break;
            }
        }
    }
}

/// Stamps lineage and appends one batch (ingest batch number `no`).
async fn append(
    buffer: &Buffer,
    engine: Option<&mut Engine>,
    numbering: &mut Numbering,
    mut batch: Vec<NewRecord>,
    no: u64,
    durable: bool,
) -> Result<(), BufferError> {
    let Some(engine) = engine else {
        return if batch.is_empty() {
            Ok(())
        } else if durable {
            buffer.append_durable(batch).await.map(|_| ())
        } else {
            buffer.append(batch).await
        };
    };
    numbering.settle(engine, no).await;
    engine.stamp(&mut batch, no);
    if batch.is_empty() {
        return Ok(());
    }
    if durable {
        let r = buffer.append_durable(batch).await?;
        engine.numbered(no, r.first);
    } else {
        let rx = buffer.append_numbered(batch).await?;
        numbering.waiting.push_back((no, rx));
    }
    Ok(())
}

pub(crate) async fn run(
    mut rx: mpsc::Receiver<Envelope>,
    mut cmds: mpsc::Receiver<IngestCmd>,
    buffer: Buffer,
    mut routing: Routing,
    view: IngestView,
) {
    let counters = &view.counters;
    counters.running.store(true, Ordering::Relaxed);
    let mut buf = Vec::with_capacity(INGEST_BATCH);
    let mut readings = Vec::with_capacity(INGEST_BATCH);
    let mut waiters = Vec::new();
    let mut numbering = Numbering::default();
    let mut held = false;
    let mut clock = tokio::time::interval(WORKFLOW_TICK);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let timers = routing.engine.as_ref().is_some_and(Engine::has_timers);
        tokio::select! {
            biased;
            Some(cmd) = cmds.recv() => match cmd {
                IngestCmd::SetRoutes(new, done) => {
                    let mut new = *new;
                    let old = routing.engine.take();
                    let mut flushed = Vec::new();
                    if old.is_some() {
                        let no = numbering.next();
                        let mut heir = new.engine.take().unwrap_or_else(|| Engine::empty(view.workflows.clone()));
                        heir.adopt(old, &mut flushed);
                        if let Err(e) = append(&buffer, Some(&mut heir), &mut numbering, flushed, no, false).await {
                            tracing::error!(error = %e, "reload: the retired workflows' last outputs could not be appended");
                        }
                        new.engine = (!heir.is_empty()).then_some(heir);
                    }
                    routing = new;
                    let _ = done.send(());
                    continue;
                }
                IngestCmd::Hold(hold, done) => {
                    held = hold;
                    let _ = done.send(());
                    continue;
                }
            },
            _ = clock.tick(), if timers && !held => {
                let Some(engine) = routing.engine.as_mut() else { continue };
                let mut batch = Vec::new();
                engine.tick(Timestamp::now(), &mut batch);
                if batch.is_empty() {
                    continue;
                }
                let no = numbering.next();
                counters.derived.fetch_add(batch.len() as u64, Ordering::Relaxed);
                publish_tail(&view, &batch);
                if let Err(e) = append(&buffer, Some(engine), &mut numbering, batch, no, false).await {
                    tracing::error!(error = %e, "workflow outputs could not be appended");
                    if matches!(e, BufferError::Closed) {
                        break;
                    }
                }
                continue;
            }
            n = rx.recv_many(&mut buf, INGEST_BATCH), if !held => if n == 0 { break },
            // Held, and nobody is left to release the hold: drain what the drivers sent.
            else => {
                held = false;
                continue;
            }
        }
        readings.extend(buf.drain(..).map(|e| {
            if let Some(w) = e.committed {
                waiters.push((e.reading.source.clone(), w));
            }
            e.reading
        }));
        view.live.update(&readings);
        let now = Timestamp::now();
        let mut batch = Vec::with_capacity(readings.len());
        let routes = &routing.routes;
        for reading in readings.drain(..) {
            let Some(route) = routes.get(&*reading.source) else {
                counters.unknown_source.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if !accepted(route, routing.engine.as_mut()) {
                counters.unrouted.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            batch.push(NewRecord {
                record: Record {
                    seq: 0,
                    stream: route.stream.clone(),
                    priority: route.priority,
                    ingest_ts: now,
                    reading,
                    lineage: None,
                },
                sinks: route.sinks,
            });
        }
        let inputs = batch.len();
        counters
            .readings
            .fetch_add(inputs as u64, Ordering::Relaxed);
        let no = numbering.next();
        if let Some(engine) = routing.engine.as_mut() {
            if engine.has_wasm() {
                // A WASM call may run up to its time limit.
                skygate_util::blocking_here(|| engine.process(&mut batch, no));
            } else {
                engine.process(&mut batch, no);
            }
            counters
                .derived
                .fetch_add((batch.len() - inputs) as u64, Ordering::Relaxed);
        }
        publish_tail(&view, &batch);
        let durable = !waiters.is_empty();
        match append(
            &buffer,
            routing.engine.as_mut(),
            &mut numbering,
            batch,
            no,
            durable,
        )
        .await
        {
            Ok(()) => {}
            Err(BufferError::Closed) => {
                // Waiters are dropped unanswered: their drivers learn the agent stopped.
                tracing::error!("buffer closed while readings were arriving");
                break;
            }
            Err(e) => {
                // Unanswered waiters make their drivers keep the data at the instrument.
                tracing::error!(error = %e, "a commit that drivers wait for failed");
                waiters.clear();
            }
        }
        for (source, w) in waiters.drain(..) {
            let routed = routing
                .routes
                .get(&*source)
                .is_some_and(|r| accepted(r, routing.engine.as_mut()));
            let _ = w.send(if routed {
                Committed::Stored
            } else {
                Committed::NotRouted
            });
        }
    }
    // Every driver has stopped: what workflows hold (open windows) comes out, marked as
    // cut short, rather than vanish with the process.
    if let Some(old) = routing.engine.take() {
        let mut heir = Engine::empty(view.workflows.clone());
        let mut flushed = Vec::new();
        heir.adopt(Some(old), &mut flushed);
        let no = numbering.next();
        if let Err(e) = append(&buffer, Some(&mut heir), &mut numbering, flushed, no, false).await {
            tracing::warn!(error = %e, "open workflow windows could not be kept at shutdown");
        }
    }
    counters.running.store(false, Ordering::Relaxed);
    tracing::debug!("ingest drained");
}

/// Whether a reading on `route` is appended: some sink wants it, or a workflow takes it.
fn accepted(route: &Route, engine: Option<&mut Engine>) -> bool {
    route.sinks != 0 || engine.is_some_and(|e| e.takes(&route.stream))
}

/// Shows a routed batch to `skygate tail` listeners, if there are any.
fn publish_tail(view: &IngestView, batch: &[NewRecord]) {
    if view.tail.receiver_count() > 0 && !batch.is_empty() {
        let records: Arc<[Record]> = batch.iter().map(|n| n.record.clone()).collect();
        // No receiver left between the check and the send is fine: nobody to tell.
        let _ = view.tail.send(records);
    }
}

impl view::Ingest for IngestView {
    fn counts(&self) -> IngestCounts {
        let c = &self.counters;
        IngestCounts {
            running: c.running.load(Ordering::Relaxed),
            readings: c.readings.load(Ordering::Relaxed),
            unrouted: c.unrouted.load(Ordering::Relaxed),
        }
    }

    fn live(&self, source: &str) -> Option<SourceLive> {
        self.live.get(source)
    }

    fn workflows(&self) -> Vec<skygate_functions::WorkflowStatus> {
        self.workflows.status()
    }

    fn tail(&self) -> broadcast::Receiver<Arc<[Record]>> {
        self.tail.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skygate_drivers::{Quality, TimeQuality, Value};

    fn reading(source: &Arc<str>, channel: &Arc<str>, ts: i64, v: f64) -> Reading {
        Reading {
            source: source.clone(),
            channel: channel.clone(),
            ts: Timestamp(ts),
            time_quality: TimeQuality::Ntp,
            value: Value::Number(v),
            unit: Some(Arc::from("degC")),
            quality: Quality::Good,
        }
    }

    #[test]
    fn a_committed_send_is_answered_once_the_buffer_has_it_or_at_once_when_unrouted() {
        use skygate_buffer::BufferOptions;
        use skygate_config::{BufferSettings, Durability};
        use skygate_drivers::ReadingSender;

        let d = tempfile::tempdir().expect("tmp");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            let (buffer, guard) = Buffer::open(
                BufferOptions {
                    events: None,
                    dir: d.path().to_path_buf(),
                    settings: BufferSettings {
                        durability: Durability::Process,
                        min_free_disk: 0,
                        ..BufferSettings::default()
                    },
                    gateway_id: "gw".into(),
                    sinks: vec!["a".into()],
                    routes: vec![(vec!["wx".into()], vec!["a".into()])],
                },
                Arc::new(skygate_bsp::GenericLinux::default()),
            )
            .expect("buffer");
            let (wx, quiet, ch): (Arc<str>, Arc<str>, Arc<str>) =
                (Arc::from("wx"), Arc::from("quiet"), Arc::from("t"));
            let route = |stream: &str, sinks| Route {
                stream: Arc::from(stream),
                priority: 5,
                sinks,
            };
            let routes = HashMap::from([
                ("wx".to_string(), route("wx", buffer.mask_for(["a"]))),
                ("quiet".to_string(), route("quiet", 0)),
            ]);
            let (tx, rx) = mpsc::channel(16);
            let (_cmds, cmd_rx) = mpsc::channel(1);
            let task = tokio::spawn(run(
                rx,
                cmd_rx,
                buffer.clone(),
                Routing {
                    routes,
                    engine: None,
                },
                IngestView::default(),
            ));
            let out = ReadingSender::new(tx);
            out.send(reading(&wx, &ch, 1, 1.0)).await.expect("send");
            let done = out
                .send_committed(reading(&wx, &ch, 2, 2.0))
                .await
                .expect("send");
            assert_eq!(done.await, Ok(Committed::Stored));
            assert_eq!(*buffer.head().borrow(), 2, "both readings committed first");
            let done = out
                .send_committed(reading(&quiet, &ch, 3, 3.0))
                .await
                .expect("send");
            assert_eq!(done.await, Ok(Committed::NotRouted));
            drop(out);
            task.await.expect("ingest ends");
            guard.close().await;
        });
    }

    #[test]
    fn live_values_count_every_reading_and_keep_each_channels_last() {
        let (wx, gps): (Arc<str>, Arc<str>) = (Arc::from("wx"), Arc::from("gps"));
        let (t, p, lat): (Arc<str>, Arc<str>, Arc<str>) =
            (Arc::from("temp"), Arc::from("pressure"), Arc::from("lat"));
        let live = LiveValues::default();
        let mut batch = vec![
            reading(&wx, &t, 1, 1.0),
            reading(&wx, &t, 2, 2.0),
            reading(&wx, &p, 3, 900.0),
            reading(&gps, &lat, 4, 52.1),
            reading(&wx, &t, 5, 3.0),
        ];
        // The same names from other allocations must land on the same entries.
        batch.push(reading(&Arc::from("wx"), &Arc::from("pressure"), 6, 901.0));
        live.update(&batch);
        live.update(&[reading(&wx, &t, 7, 4.0)]);
        let w = live.get("wx").expect("wx");
        assert_eq!(w.readings, 6);
        assert_eq!(w.last_ts, Some(Timestamp(7)));
        assert_eq!(w.channels["temp"].value, serde_json::json!(4.0));
        assert_eq!(w.channels["pressure"].value, serde_json::json!(901.0));
        assert_eq!(w.channels["temp"].unit.as_deref(), Some("degC"));
        let g = live.get("gps").expect("gps");
        assert_eq!((g.readings, g.channels.len()), (1, 1));
        assert!(live.get("nobody").is_none());
    }
}
