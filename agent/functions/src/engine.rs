//! The running workflows: one [`Engine`] per agent, owned by the ingest task and run on
//! each batch before it goes to the buffer.
//!
//! # A batch through the engine
//! Ingest builds the append: the readings as routed records (a workflow's input whose own
//! stream goes to no sink is still appended, with no sinks: the buffer numbers it without
//! storing it, so lineage can name it). Then each workflow, in feeding order, takes the
//! records of its input streams — readings, and outputs of workflows before it — runs its
//! steps over them, and appends what comes out, filed under its output stream and routed
//! to its sinks. One append, one commit: inputs and outputs are durable together.
//!
//! # Lineage
//! Every item carries the [`Ref`]s (batch number, index in that batch's append) of the
//! inputs it came from. The buffer numbers an append contiguously, so a reference into the
//! same append is stored relative (`SeqRef::Back`), and one into an earlier append becomes
//! absolute once ingest has heard that append's first seq ([`Engine::numbered`]). Numbers
//! are kept only as long as some step still holds a reference into that batch.
//!
//! # Reload
//! [`Engine::adopt`] takes over the state of an old engine: a workflow whose definition is
//! unchanged keeps its steps (open windows, deadband memory, alarms) as they are; a
//! changed or removed one is flushed (open windows come out marked as cut short). The swap
//! happens between two batches, so every record goes through exactly one of the two.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use skygate_drivers::Timestamp;

use super::builtins::{self, BuildCx, Item, Ref, Span, Step, StepErrors};
use super::spec::{StepSpec, WorkflowSpec, feeding_order};
use skygate_buffer::NewRecord;
use skygate_model::{Lineage, SeqRef};

/// Most workflows one agent runs (a stream's workflows are a bit set).
pub const MAX_WORKFLOWS: usize = 64;

/// Counters of one workflow, shared with the control API and metrics.
#[derive(Debug, Default)]
pub struct WorkflowStats {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub errors: AtomicU64,
    /// Records a failed step (a WASM call) sent to dead letters.
    pub dead_lettered: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

/// What the control API shows of a workflow.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowStatus {
    pub name: String,
    pub file: String,
    pub input: Vec<String>,
    pub steps: Vec<&'static str>,
    pub output_stream: String,
    pub sinks: Vec<String>,
    pub records_in: u64,
    pub records_out: u64,
    pub errors: u64,
    pub dead_lettered: u64,
    pub last_error: Option<String>,
}

/// The installed workflows, as observers see them.
#[derive(Debug, Default, Clone)]
pub struct WorkflowsView(Arc<Mutex<Vec<Installed>>>);

/// A workflow as installed: its spec and its counters.
type Installed = (Arc<WorkflowSpec>, Arc<WorkflowStats>);

impl WorkflowsView {
    pub fn status(&self) -> Vec<WorkflowStatus> {
        let list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        list.iter()
            .map(|(spec, st)| WorkflowStatus {
                name: spec.name.clone(),
                file: spec.file.display().to_string(),
                input: spec.input.clone(),
                steps: spec.steps.iter().map(|s| s.function()).collect(),
                output_stream: spec.output_stream.clone(),
                sinks: spec.sinks.iter().map(|(s, _)| s.clone()).collect(),
                records_in: st.records_in.load(Ordering::Relaxed),
                records_out: st.records_out.load(Ordering::Relaxed),
                errors: st.errors.load(Ordering::Relaxed),
                dead_lettered: st.dead_lettered.load(Ordering::Relaxed),
                last_error: st
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            })
            .collect()
    }

    fn set(&self, list: Vec<Installed>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = list;
    }
}

/// A workflow ready to run.
struct Running {
    spec: Arc<WorkflowSpec>,
    name: Arc<str>,
    stream: Arc<str>,
    steps: Vec<Box<dyn Step>>,
    /// Sinks its outputs go to: its own and the config's routes for its output stream.
    sinks: u64,
    stats: Arc<WorkflowStats>,
}

impl Running {
    /// Runs `items` through steps `from..`, appending the results to `out` and what a
    /// step gave up on to `dead`.
    fn run_from(
        &mut self,
        from: usize,
        mut items: Vec<Item>,
        out: &mut Vec<Item>,
        dead: &mut Vec<Item>,
    ) {
        let mut errors = StepErrors::default();
        let mut next = Vec::with_capacity(items.len());
        for step in &mut self.steps[from..] {
            step.run(&mut items, &mut next, &mut errors);
            std::mem::swap(&mut items, &mut next);
        }
        out.append(&mut items);
        if !errors.dead.is_empty() {
            self.stats
                .dead_lettered
                .fetch_add(errors.dead.len() as u64, Ordering::Relaxed);
            dead.append(&mut errors.dead);
        }
        if errors.count > 0 {
            self.stats.errors.fetch_add(errors.count, Ordering::Relaxed);
            if let Some(e) = errors.last {
                tracing::debug!(workflow = %self.name, error = %e, "workflow step error");
                *self
                    .stats
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(e);
            }
        }
    }

    fn oldest_ref(&self) -> Option<Ref> {
        self.steps.iter().filter_map(|s| s.oldest_ref()).min()
    }
}

/// An output waiting for its lineage: index in the append, the workflow, its inputs.
struct Pending {
    idx: usize,
    workflow: Arc<str>,
    from: Span,
}

/// The workflows of one agent.
pub struct Engine {
    /// In feeding order: a workflow comes after every workflow that feeds it.
    flows: Vec<Running>,
    /// Per stream name: the workflows (bits of `flows` indices) that take it.
    takers: HashMap<Arc<str>, u64>,
    /// First seq of each numbered batch still referenced by some step.
    numbers: BTreeMap<u64, u64>,
    pending: Vec<Pending>,
    view: WorkflowsView,
    has_timers: bool,
    has_wasm: bool,
    /// Sinks of each dead-letter stream WASM steps use (the config's routes for it).
    dead_sinks: HashMap<Arc<str>, u64>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field(
                "workflows",
                &self.flows.iter().map(|w| &w.spec.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Engine {
    /// Builds the engine for validated workflows; `sinks_for(spec)` is the sink mask of a
    /// workflow's outputs. `None` when there are no workflows (ingest's fast path).
    pub fn build(
        specs: &[WorkflowSpec],
        sinks_for: impl Fn(&WorkflowSpec) -> u64,
        dead_letters_for: impl Fn(&str) -> u64,
        cx: &BuildCx,
        view: WorkflowsView,
    ) -> Option<Self> {
        if specs.is_empty() {
            view.set(Vec::new());
            return None;
        }
        let flows: Vec<Running> = feeding_order(specs)
            .into_iter()
            .take(MAX_WORKFLOWS)
            .map(|i| {
                let spec = &specs[i];
                Running {
                    spec: Arc::new(spec.clone()),
                    name: Arc::from(spec.name.as_str()),
                    stream: Arc::from(spec.output_stream.as_str()),
                    steps: spec.steps.iter().map(|s| builtins::build(s, cx)).collect(),
                    sinks: sinks_for(spec),
                    stats: Arc::default(),
                }
            })
            .collect();
        let has = |f: &str| {
            specs
                .iter()
                .any(|s| s.steps.iter().any(|st| st.function() == f))
        };
        let has_timers = has("window");
        let has_wasm = has("wasm");
        let mut dead_sinks = HashMap::new();
        for s in specs.iter().flat_map(|w| &w.steps) {
            if let StepSpec::Wasm {
                dead_letter_stream, ..
            } = s
            {
                dead_sinks
                    .entry(Arc::<str>::from(dead_letter_stream.as_str()))
                    .or_insert_with(|| dead_letters_for(dead_letter_stream));
            }
        }
        let mut engine = Self::empty(view);
        engine.flows = flows;
        engine.has_timers = has_timers;
        engine.has_wasm = has_wasm;
        engine.dead_sinks = dead_sinks;
        engine.publish();
        Some(engine)
    }

    /// An engine without workflows: what retires the last workflows when a reload removes
    /// them all.
    pub fn empty(view: WorkflowsView) -> Self {
        Self {
            flows: Vec::new(),
            takers: HashMap::new(),
            numbers: BTreeMap::new(),
            pending: Vec::new(),
            view,
            has_timers: false,
            has_wasm: false,
            dead_sinks: HashMap::new(),
        }
    }

    /// Whether some step runs a WASM function (calls that may take up to their time
    /// limit: ingest runs such an engine where blocking is allowed).
    pub fn has_wasm(&self) -> bool {
        self.has_wasm
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    fn publish(&self) {
        self.view.set(
            self.flows
                .iter()
                .map(|w| (w.spec.clone(), w.stats.clone()))
                .collect(),
        );
    }

    /// Whether some step closes on time (ingest then ticks the engine every second).
    pub fn has_timers(&self) -> bool {
        self.has_timers
    }

    /// Takes over what `old` holds: unchanged workflows keep their state and counters;
    /// the others are flushed into `out`, an append of its own, whose lineage is then
    /// stamped like any batch's ([`Engine::needs`], [`Engine::stamp`]).
    pub fn adopt(&mut self, old: Option<Engine>, out: &mut Vec<NewRecord>) {
        let Some(mut old) = old else { return };
        for w in &mut self.flows {
            if let Some(pos) = old.flows.iter().position(|o| o.spec == w.spec) {
                let o = old.flows.remove(pos);
                w.steps = o.steps;
                w.stats = o.stats;
            }
        }
        // What the old engine still has to say, by its own routing.
        let (mut flushed, mut dead) = (Vec::new(), Vec::new());
        for i in 0..old.flows.len() {
            let w = &mut old.flows[i];
            for s in 0..w.steps.len() {
                let mut items = Vec::new();
                w.steps[s].flush(&mut items);
                if !items.is_empty() {
                    w.run_from(s + 1, items, &mut flushed, &mut dead);
                }
            }
            old.emit(i, &mut flushed, &mut dead, out);
        }
        // References into batches the old engine learnt numbers for stay resolvable.
        self.pending.append(&mut old.pending);
        self.numbers.append(&mut old.numbers);
        self.publish();
    }

    /// The workflows (bits) that take `stream`.
    fn takers(&mut self, stream: &Arc<str>) -> u64 {
        if let Some(&m) = self.takers.get(stream) {
            return m;
        }
        let m = self
            .flows
            .iter()
            .enumerate()
            .filter(|(_, w)| w.spec.takes(stream))
            .fold(0u64, |m, (i, _)| m | (1 << i));
        self.takers.insert(stream.clone(), m);
        m
    }

    /// Whether some workflow takes `stream` (its readings must be appended even when
    /// their own route reaches no sink).
    pub fn takes(&mut self, stream: &Arc<str>) -> bool {
        self.takers(stream) != 0
    }

    /// Runs the workflows over the records of `batch` (ingest's batch number `no`),
    /// appending their outputs to it. Lineage is stamped by [`Engine::stamp`], once the
    /// numbers it needs are known ([`Engine::needs`]).
    pub fn process(&mut self, batch: &mut Vec<NewRecord>, no: u64) {
        for i in 0..self.flows.len() {
            let bit = 1u64 << i;
            let mut items = Vec::new();
            // Readings of one stream come in runs: look the stream up once per run.
            let mut last: Option<(Arc<str>, u64)> = None;
            for (idx, n) in batch.iter().enumerate() {
                let s = &n.record.stream;
                let takers = match &last {
                    Some((l, m)) if Arc::ptr_eq(l, s) => *m,
                    _ => {
                        let m = self.takers(s);
                        last = Some((s.clone(), m));
                        m
                    }
                };
                if takers & bit != 0 {
                    items.push(Item {
                        rec: n.record.clone(),
                        from: Span::one(Ref {
                            batch: no,
                            idx: idx as u32,
                        }),
                    });
                }
            }
            if items.is_empty() {
                continue;
            }
            let w = &mut self.flows[i];
            w.stats
                .records_in
                .fetch_add(items.len() as u64, Ordering::Relaxed);
            let (mut out, mut dead) = (Vec::with_capacity(items.len()), Vec::new());
            w.run_from(0, items, &mut out, &mut dead);
            self.emit(i, &mut out, &mut dead, batch);
        }
    }

    /// Time passes: windows whose time is up close. Their outputs go into `batch`.
    pub fn tick(&mut self, now: Timestamp, batch: &mut Vec<NewRecord>) {
        for i in 0..self.flows.len() {
            let (mut out, mut dead) = (Vec::new(), Vec::new());
            let w = &mut self.flows[i];
            for s in 0..w.steps.len() {
                let mut items = Vec::new();
                w.steps[s].tick(now, &mut items);
                if !items.is_empty() {
                    w.run_from(s + 1, items, &mut out, &mut dead);
                }
            }
            if !out.is_empty() || !dead.is_empty() {
                self.emit(i, &mut out, &mut dead, batch);
            }
        }
    }

    /// Files workflow `i`'s outputs under its stream and its dead letters under theirs,
    /// and appends them to `batch`.
    fn emit(
        &mut self,
        i: usize,
        out: &mut Vec<Item>,
        dead: &mut Vec<Item>,
        batch: &mut Vec<NewRecord>,
    ) {
        let w = &self.flows[i];
        w.stats
            .records_out
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        // Made now, whatever its inputs' ingest time (a window's first reading is older).
        let now = Timestamp::now();
        let outputs = out.drain(..).map(|mut it| {
            it.rec.stream = w.stream.clone();
            (it, w.sinks)
        });
        // A dead letter goes where the config routes its stream; with no route there, to
        // the workflow's own sinks rather than nowhere.
        let dead = dead.drain(..).map(|it| {
            let routed = self.dead_sinks.get(&it.rec.stream).copied().unwrap_or(0);
            (it, if routed != 0 { routed } else { w.sinks })
        });
        for (it, sinks) in outputs.chain(dead) {
            let mut record = it.rec;
            record.ingest_ts = now;
            self.pending.push(Pending {
                idx: batch.len(),
                workflow: w.name.clone(),
                from: it.from,
            });
            batch.push(NewRecord { record, sinks });
        }
    }

    /// The newest earlier batch whose first seq the pending outputs need and ingest has
    /// not told yet (`no` is the batch being built).
    pub fn needs(&self, no: u64) -> Option<u64> {
        self.pending
            .iter()
            .flat_map(|p| [p.from.first.batch, p.from.last.batch])
            .filter(|&b| b != no && !self.numbers.contains_key(&b))
            .max()
    }

    /// Ingest heard batch `no`'s first seq.
    pub fn numbered(&mut self, no: u64, first_seq: u64) {
        self.numbers.insert(no, first_seq);
    }

    /// Sets the lineage of the outputs appended to `batch` (batch number `no`), and
    /// forgets numbers no step refers to any more.
    pub fn stamp(&mut self, batch: &mut [NewRecord], no: u64) {
        for p in self.pending.drain(..) {
            let at = |r: Ref| {
                if r.batch == no {
                    SeqRef::Back((p.idx - r.idx as usize) as u64)
                } else {
                    // Unknown only if ingest stamped without waiting: then say so with 0
                    // rather than name a wrong record.
                    SeqRef::Seq(self.numbers.get(&r.batch).map_or(0, |f| f + r.idx as u64))
                }
            };
            if let Some(n) = batch.get_mut(p.idx) {
                n.record.lineage = Some(Lineage {
                    workflow: p.workflow,
                    first: at(p.from.first),
                    last: at(p.from.last),
                    count: p.from.count,
                });
            }
        }
        let oldest = self.flows.iter().filter_map(Running::oldest_ref).min();
        match oldest {
            Some(r) => self.numbers.retain(|&b, _| b >= r.batch),
            None => self.numbers.clear(),
        }
    }
}

#[cfg(test)]
mod tests;
