//! The built-in functions, as [`Step`]s over batches of [`Item`]s.
//!
//! Rules every step keeps:
//! - A step works on the records its `channels` selector picks; the others pass it
//!   unchanged and in order.
//! - A record passed on keeps its lineage ([`Span`]); a record made from several (derive,
//!   window) spans all of them.
//! - Per-instrument state is keyed by (source, channel) and lives in the step; state is
//!   only ever touched by the ingest task that owns the workflow.
//! - A value a step cannot use (text where a number is needed, an expression error) never
//!   costs the record: it passes unchanged and the step counts an error with its reason.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use skygate_drivers::{Quality, Timestamp, Value};

use super::expr::{EValue, Expr, Vars, to_evalue};
use super::spec::{Selector, Stat, StepSpec};
use super::units::{self, Conversion};
use skygate_model::Record;

/// Variables a `filter` expression can read.
pub const RECORD_VARS: &[&str] = &[
    "value", "channel", "source", "stream", "unit", "priority", "quality", "ts",
];

/// A record's place in the append that carries it: ingest's batch number and the index
/// in that batch. The buffer numbers an append's records contiguously in order, so a
/// `Ref` becomes a seq once the append's first seq is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ref {
    pub batch: u64,
    pub idx: u32,
}

/// The inputs a record came from: `count` records from `first` to `last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub first: Ref,
    pub last: Ref,
    pub count: u32,
}

impl Span {
    pub fn one(r: Ref) -> Self {
        Self {
            first: r,
            last: r,
            count: 1,
        }
    }

    pub fn join(self, o: Span) -> Self {
        Self {
            first: self.first.min(o.first),
            last: self.last.max(o.last),
            count: self.count.saturating_add(o.count),
        }
    }
}

/// A record on its way through a workflow.
#[derive(Debug, Clone)]
pub struct Item {
    pub rec: Record,
    pub from: Span,
}

/// What went wrong in a step, counted per workflow.
#[derive(Debug, Default)]
pub struct StepErrors {
    pub count: u64,
    pub last: Option<String>,
    /// Records a step gave up on (a failed WASM call): already moved to their dead-letter
    /// stream and marked bad; they skip the rest of the chain.
    pub dead: Vec<Item>,
}

impl StepErrors {
    /// Gives up on `it`: moved to the dead-letter `stream`, marked bad with `reason`.
    pub fn dead_letter(&mut self, mut it: Item, stream: &Arc<str>, reason: &str) {
        it.rec.stream = stream.clone();
        it.rec.reading.quality = Quality::Bad(reason.to_string());
        self.dead.push(it);
    }

    pub fn add(&mut self, why: impl FnOnce() -> String) {
        self.count += 1;
        // The reason of the first error of a run is kept; formatting every one would cost
        // more than the step on a stream that is wrong throughout.
        if self.last.is_none() || self.count.is_power_of_two() {
            self.last = Some(why());
        }
    }
}

/// One function in a chain.
pub trait Step: Send {
    /// Takes `input` (left empty) and appends what comes out to `out`.
    fn run(&mut self, input: &mut Vec<Item>, out: &mut Vec<Item>, errors: &mut StepErrors);
    /// Time passes without input (once a second): windows whose time is up close.
    fn tick(&mut self, _now: Timestamp, _out: &mut Vec<Item>) {}
    /// The workflow is being replaced: emit what is held (windows cut short).
    fn flush(&mut self, _out: &mut Vec<Item>) {}
    /// The oldest input the step still holds a reference to.
    fn oldest_ref(&self) -> Option<Ref> {
        None
    }
}

type Key = (Arc<str>, Arc<str>);

fn key(r: &Record) -> Key {
    (r.reading.source.clone(), r.reading.channel.clone())
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(x) => Some(*x),
        Value::Integer(x) => Some(*x as f64),
        _ => None,
    }
}

/// What building steps needs besides their spec: the WASM runtime, started on first
/// use (an agent without WASM steps runs no epoch ticker) and shared by every reload.
#[derive(Debug, Clone, Default)]
pub struct BuildCx {
    /// Where compiled modules are cached; none: compile at every start.
    pub wasm_cache: Option<std::path::PathBuf>,
    #[cfg(feature = "wasm")]
    wasm: Arc<std::sync::OnceLock<Result<Arc<super::wasm::WasmRuntime>, String>>>,
}

impl BuildCx {
    pub fn new(wasm_cache: Option<std::path::PathBuf>) -> Self {
        Self {
            wasm_cache,
            ..Self::default()
        }
    }

    #[cfg(feature = "wasm")]
    pub fn wasm(&self) -> Result<Arc<super::wasm::WasmRuntime>, String> {
        self.wasm
            .get_or_init(|| super::wasm::WasmRuntime::new(self.wasm_cache.clone()))
            .clone()
    }
}

/// A record a numeric step works on, with its value; `None` once the record has been
/// passed on unchanged (not selected; or not a number, which is counted).
fn numeric(
    it: Item,
    channels: &Selector,
    step: &str,
    out: &mut Vec<Item>,
    errors: &mut StepErrors,
) -> Option<(Item, f64)> {
    let r = &it.rec.reading;
    if !channels.matches(&r.channel) {
        out.push(it);
        return None;
    }
    match number(&r.value) {
        Some(x) => Some((it, x)),
        None => {
            errors.add(|| format!("{step}: {} is not a number", r.channel));
            out.push(it);
            None
        }
    }
}

/// Builds the step a spec describes.
pub fn build(spec: &StepSpec, cx: &BuildCx) -> Box<dyn Step> {
    match spec.clone() {
        StepSpec::Wasm {
            module,
            channels,
            limits,
            dead_letter_stream,
            ..
        } => wasm_step(&module, channels, limits, &dead_letter_stream, cx),
        StepSpec::Scale {
            channels,
            factor,
            offset,
            unit,
        } => Box::new(Map {
            channels,
            f: MapFn::Linear(
                Conversion { factor, offset },
                unit.map(|u| Arc::from(u.as_str())),
            ),
        }),
        StepSpec::Convert { channels, from, to } => Box::new(Map {
            channels,
            f: MapFn::Convert {
                from,
                to: Arc::from(to.as_str()),
                cache: HashMap::new(),
            },
        }),
        StepSpec::Rename { channel, to } => Box::new(Map {
            channels: Selector(vec![channel]),
            f: MapFn::Rename(Arc::from(to.as_str())),
        }),
        StepSpec::Tag {
            channels,
            unit,
            priority,
            source,
        } => Box::new(Map {
            channels,
            f: MapFn::Tag {
                unit: unit.map(|u| Arc::from(u.as_str())),
                priority,
                source: source.map(|s| Arc::from(s.as_str())),
            },
        }),
        StepSpec::Filter { channels, expr } => {
            // Validated when the workflow loaded.
            let expr = Expr::compile(&expr).unwrap_or_else(|_| unreachable_expr());
            Box::new(Filter {
                channels,
                vars: Vars::for_expr(&expr),
                expr,
            })
        }
        StepSpec::Derive {
            channel,
            expr,
            unit,
            inputs,
        } => {
            let expr = Expr::compile(&expr).unwrap_or_else(|_| unreachable_expr());
            Box::new(Derive::new(channel, expr, unit, inputs))
        }
        StepSpec::Deadband {
            channels,
            abs,
            pct,
            max_silence,
        } => Box::new(Deadband {
            channels,
            abs,
            pct,
            max_silence: max_silence.map(|d| d.as_nanos() as i64),
            last: HashMap::new(),
        }),
        StepSpec::Alarm {
            channels,
            above,
            below,
            hysteresis,
            priority,
        } => Box::new(Alarm {
            channels,
            above,
            below,
            hysteresis,
            priority,
            active: HashMap::new(),
        }),
        StepSpec::Window {
            channels,
            every,
            stats,
            grace,
        } => Box::new(Window {
            channels,
            every: every.as_nanos().max(1) as i64,
            stats,
            grace: grace.as_nanos() as i64,
            open: BTreeMap::new(),
        }),
        StepSpec::Downsample { channels, every } => Box::new(Downsample {
            channels,
            every: every.as_nanos() as i64,
            last: HashMap::new(),
        }),
    }
}

/// A WASM step; if its module cannot be compiled now (changed since it was checked, no
/// runtime), a step that dead-letters every batch with the reason, so nothing it was
/// meant to see is lost silently.
fn wasm_step(
    module: &std::path::Path,
    channels: Selector,
    limits: super::spec::WasmLimits,
    dead: &str,
    cx: &BuildCx,
) -> Box<dyn Step> {
    let label = module
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    #[cfg(feature = "wasm")]
    {
        let loaded = cx.wasm().and_then(|rt| {
                let bytes = std::fs::read(module)
                    .map_err(|e| format!("cannot read {}: {e}", module.display()))?;
                let loaded = rt.load(&bytes)?;
                tracing::info!(module = %module.display(), sha256 = %loaded.sha256, from_cache = loaded.from_cache, "wasm function loaded");
                Ok((rt, loaded))
            });
        match loaded {
            Ok((rt, loaded)) => Box::new(super::wasm::WasmStep::new(
                rt, loaded, &label, channels, limits, dead,
            )),
            Err(e) => Box::new(Broken {
                why: format!("wasm function {label}: {e}"),
                channels,
                dead: Arc::from(dead),
            }),
        }
    }
    #[cfg(not(feature = "wasm"))]
    {
        let _ = (limits, cx);
        Box::new(Broken {
            why: format!("wasm function {label}: this build has no WASM runtime"),
            channels,
            dead: Arc::from(dead),
        })
    }
}

/// A step that could not be built: what it would have taken goes to dead letters.
struct Broken {
    why: String,
    channels: Selector,
    dead: Arc<str>,
}

impl Step for Broken {
    fn run(&mut self, input: &mut Vec<Item>, out: &mut Vec<Item>, errors: &mut StepErrors) {
        for it in input.drain(..) {
            if !self.channels.matches(&it.rec.reading.channel) {
                out.push(it);
                continue;
            }
            errors.dead_letter(it, &self.dead, &self.why);
        }
        if !errors.dead.is_empty() {
            errors.add(|| self.why.clone());
        }
    }
}

/// An expression that failed to compile after it compiled at load: cannot happen, and if
/// it did, a filter that lets everything through loses nothing.
fn unreachable_expr() -> Expr {
    Expr::compile("true").unwrap_or_else(|e| panic!("the constant `true` must compile: {e}"))
}

// ---- record by record ------------------------------------------------------------------

enum MapFn {
    Linear(Conversion, Option<Arc<str>>),
    Convert {
        from: Option<String>,
        to: Arc<str>,
        /// Conversions from units seen so far (`None`: not convertible).
        cache: HashMap<Arc<str>, Option<Conversion>>,
    },
    Rename(Arc<str>),
    Tag {
        unit: Option<Arc<str>>,
        priority: Option<u8>,
        source: Option<Arc<str>>,
    },
}

/// The one-record-in, one-record-out functions: scale, convert, rename, tag.
struct Map {
    channels: Selector,
    f: MapFn,
}

impl Step for Map {
    fn run(&mut self, input: &mut Vec<Item>, out: &mut Vec<Item>, errors: &mut StepErrors) {
        for mut it in input.drain(..) {
            if self.channels.matches(&it.rec.reading.channel) {
                self.apply(&mut it.rec, errors);
            }
            out.push(it);
        }
    }
}

impl Map {
    fn apply(&mut self, rec: &mut Record, errors: &mut StepErrors) {
        let r = &mut rec.reading;
        match &mut self.f {
            MapFn::Linear(c, unit) => match number(&r.value) {
                Some(x) => {
                    r.value = Value::Number(c.apply(x));
                    if let Some(u) = unit {
                        r.unit = Some(u.clone());
                    }
                }
                None => errors.add(|| format!("scale: {} is not a number", r.channel)),
            },
            MapFn::Convert { from, to, cache } => {
                let Some(x) = number(&r.value) else {
                    errors.add(|| format!("convert: {} is not a number", r.channel));
                    return;
                };
                let unit: Arc<str> = match (from.as_deref(), &r.unit) {
                    (_, Some(u)) => u.clone(),
                    (Some(f), None) => Arc::from(f),
                    (None, None) => {
                        errors
                            .add(|| format!("convert: {} has no unit to convert from", r.channel));
                        return;
                    }
                };
                if from.as_deref().is_some_and(|f| f != &*unit) {
                    // Another unit than the one the step is for: left alone.
                    errors.add(|| {
                        format!(
                            "convert: {} is in {unit}, not {}",
                            r.channel,
                            from.as_deref().unwrap_or_default()
                        )
                    });
                    return;
                }
                let c = *cache
                    .entry(unit.clone())
                    .or_insert_with(|| units::conversion(&unit, to).ok());
                match c {
                    Some(c) => {
                        r.value = Value::Number(c.apply(x));
                        r.unit = Some(to.clone());
                    }
                    None => errors.add(|| format!("convert: cannot convert {unit} to {to}")),
                }
            }
            MapFn::Rename(to) => r.channel = to.clone(),
            MapFn::Tag {
                unit,
                priority,
                source,
            } => {
                if let Some(u) = unit {
                    r.unit = Some(u.clone());
                }
                if let Some(s) = source {
                    r.source = s.clone();
                }
                if let Some(p) = priority {
                    rec.priority = *p;
                }
            }
        }
    }
}

/// Keeps the selected records for which the expression is true.
struct Filter {
    channels: Selector,
    expr: Expr,
    vars: Vars,
}

/// Fills `vars` (names from [`RECORD_VARS`]) from a record.
fn record_vars(vars: &mut Vars, rec: &Record) {
    for i in 0..vars.names().len() {
        let r = &rec.reading;
        let v = match vars.names()[i].as_str() {
            "value" => to_evalue(&r.value),
            "channel" => EValue::String(r.channel.to_string()),
            "source" => EValue::String(r.source.to_string()),
            "stream" => EValue::String(rec.stream.to_string()),
            "unit" => EValue::String(r.unit.as_deref().unwrap_or_default().to_string()),
            "priority" => EValue::Int(rec.priority as i64),
            "quality" => EValue::String(r.quality.as_str().to_string()),
            "ts" => EValue::Float(r.ts.as_nanos() as f64 / 1e9),
            _ => EValue::Empty,
        };
        vars.set(i, v);
    }
}

impl Step for Filter {
    fn run(&mut self, input: &mut Vec<Item>, out: &mut Vec<Item>, errors: &mut StepErrors) {
        for it in input.drain(..) {
            if !self.channels.matches(&it.rec.reading.channel) {
                out.push(it);
                continue;
            }
            record_vars(&mut self.vars, &it.rec);
            match self.expr.eval_bool(&self.vars) {
                Ok(true) => out.push(it),
                Ok(false) => {}
                Err(e) => {
                    // Kept: a filter that cannot decide must not drop data.
                    errors.add(|| format!("filter on {}: {e}", it.rec.reading.channel));
                    out.push(it);
                }
            }
        }
    }
}

// ---- derive ----------------------------------------------------------------------------

/// Computes a new channel from channels of the same instant (same source and timestamp).
/// The inputs pass on unchanged; the derived record follows the input that completed it.
struct Derive {
    channel: Arc<str>,
    unit: Option<Arc<str>>,
    expr: Expr,
    vars: Vars,
    /// Channel -> the expression slots it fills.
    slots: HashMap<Arc<str>, Vec<usize>>,
    /// Per source: the instant being gathered.
    pending: HashMap<Arc<str>, Instant>,
}

struct Instant {
    ts: Timestamp,
    values: Vec<Option<(EValue, Span)>>,
    done: bool,
}

impl Derive {
    fn new(
        channel: String,
        expr: Expr,
        unit: Option<String>,
        inputs: BTreeMap<String, String>,
    ) -> Self {
        let vars = Vars::for_expr(&expr);
        let mut slots: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
        for (i, v) in vars.names().iter().enumerate() {
            let ch = inputs.get(v).cloned().unwrap_or_else(|| v.clone());
            slots.entry(Arc::from(ch.as_str())).or_default().push(i);
        }
        Self {
            channel: Arc::from(channel.as_str()),
            unit: unit.map(|u| Arc::from(u.as_str())),
            expr,
            vars,
            slots,
            pending: HashMap::new(),
        }
    }
}

impl Step for Derive {
    fn run(&mut self, input: &mut Vec<Item>, out: &mut Vec<Item>, errors: &mut StepErrors) {
        let n = self.vars.names().len();
        for it in input.drain(..) {
            let r = &it.rec.reading;
            let Some(slots) = self.slots.get(&r.channel) else {
                out.push(it);
                continue;
            };
            let inst = self
                .pending
                .entry(r.source.clone())
                .or_insert_with(|| Instant {
                    ts: r.ts,
                    values: vec![None; n],
                    done: false,
                });
            if inst.ts != r.ts {
                // A new instant: whatever the old one lacked will not come.
                *inst = Instant {
                    ts: r.ts,
                    values: vec![None; n],
                    done: false,
                };
            }
            let v = to_evalue(&r.value);
            for &s in slots {
                inst.values[s] = Some((v.clone(), it.from));
            }
            let complete = !inst.done && inst.values.iter().all(Option::is_some);
            let mut derived = None;
            if complete {
                inst.done = true;
                let mut from: Option<Span> = None;
                for (i, slot) in inst.values.iter().enumerate() {
                    if let Some((v, span)) = slot {
                        self.vars.set(i, v.clone());
                        from = Some(from.map_or(*span, |f| f.join(*span)));
                    }
                }
                match self.expr.eval_number(&self.vars) {
                    Ok(x) if x.is_finite() => {
                        let mut rec = it.rec.clone();
                        rec.reading.channel = self.channel.clone();
                        rec.reading.value = Value::Number(x);
                        rec.reading.unit = self.unit.clone();
                        derived = Some(Item {
                            rec,
                            from: from.unwrap_or(it.from),
                        });
                    }
                    Ok(x) => {
                        errors.add(|| format!("derive {}: result {x} is not finite", self.channel))
                    }
                    Err(e) => errors.add(|| format!("derive {}: {e}", self.channel)),
                }
            }
            out.push(it);
            out.extend(derived);
        }
    }

    fn oldest_ref(&self) -> Option<Ref> {
        self.pending
            .values()
            .flat_map(|i| i.values.iter().flatten().map(|(_, s)| s.first))
            .min()
    }
}

// ---- report by exception ---------------------------------------------------------------

/// Passes a reading only when it moved at least `abs` (or `pct` percent) from the last
/// one passed, or when `max_silence` has gone by since (by instrument time).
struct Deadband {
    channels: Selector,
    abs: Option<f64>,
    pct: Option<f64>,
    max_silence: Option<i64>,
    /// Last value passed and its timestamp.
    last: HashMap<Key, (f64, i64)>,
}

impl Step for Deadband {
    fn run(&mut self, input: &mut Vec<Item>, out: &mut Vec<Item>, errors: &mut StepErrors) {
        for it in input.drain(..) {
            let Some((it, x)) = numeric(it, &self.channels, "deadband", out, errors) else {
                continue;
            };
            let r = &it.rec.reading;
            let ts = r.ts.as_nanos();
            let pass = match self.last.get(&key(&it.rec)) {
                None => true,
                Some(&(prev, at)) => {
                    let d = (x - prev).abs();
                    self.abs.is_some_and(|a| d >= a)
                        || self.pct.is_some_and(|p| d >= prev.abs() * p / 100.0)
                        || self.max_silence.is_some_and(|s| ts - at >= s)
                }
            };
            if pass {
                self.last.insert(key(&it.rec), (x, ts));
                out.push(it);
            }
        }
    }
}

/// At most one reading per `every` per channel (by instrument time): the first of each.
struct Downsample {
    channels: Selector,
    every: i64,
    last: HashMap<Key, i64>,
}

impl Step for Downsample {
    fn run(&mut self, input: &mut Vec<Item>, out: &mut Vec<Item>, _errors: &mut StepErrors) {
        for it in input.drain(..) {
            if !self.channels.matches(&it.rec.reading.channel) {
                out.push(it);
                continue;
            }
            let ts = it.rec.reading.ts.as_nanos();
            let k = key(&it.rec);
            match self.last.get(&k) {
                Some(&at) if ts - at < self.every && ts >= at => {}
                _ => {
                    self.last.insert(k, ts);
                    out.push(it);
                }
            }
        }
    }
}

// ---- alarm -----------------------------------------------------------------------------

/// Raises an alarm when a value goes above `above` (or below `below`) and clears it only
/// once the value is back inside by `hysteresis`. While raised, the channel's records
/// carry at least the alarm's priority (delivered first, evicted last); each raise and
/// clear is also a record of its own, channel `<channel>_alarm`, true or false.
struct Alarm {
    channels: Selector,
    above: Option<f64>,
    below: Option<f64>,
    hysteresis: f64,
    priority: u8,
    active: HashMap<Key, bool>,
}

impl Step for Alarm {
    fn run(&mut self, input: &mut Vec<Item>, out: &mut Vec<Item>, errors: &mut StepErrors) {
        for it in input.drain(..) {
            let Some((mut it, x)) = numeric(it, &self.channels, "alarm", out, errors) else {
                continue;
            };
            let k = key(&it.rec);
            let was = self.active.get(&k).copied().unwrap_or(false);
            let h = self.hysteresis;
            let now = if was {
                self.above.is_some_and(|a| x > a - h) || self.below.is_some_and(|b| x < b + h)
            } else {
                self.above.is_some_and(|a| x > a) || self.below.is_some_and(|b| x < b)
            };
            self.active.insert(k, now);
            if now {
                it.rec.priority = it.rec.priority.max(self.priority);
            }
            let event = (now != was).then(|| {
                let mut rec = it.rec.clone();
                rec.reading.channel = Arc::from(format!("{}_alarm", rec.reading.channel));
                rec.reading.value = Value::Bool(now);
                rec.reading.unit = None;
                rec.priority = rec.priority.max(self.priority);
                Item { rec, from: it.from }
            });
            out.push(it);
            out.extend(event);
        }
    }
}

// ---- windows ---------------------------------------------------------------------------

/// Tumbling windows of `every`, aligned to the epoch, by instrument time. The selected
/// readings are consumed; when a window closes, one record per statistic comes out
/// (channel `<channel>_<stat>`, timestamp the window's start). A window closes when a
/// reading of a later window arrives, or when the clock is `grace` past its end. A
/// reading older than its channel's open window is late: counted, not aggregated.
struct Window {
    channels: Selector,
    every: i64,
    stats: Vec<Stat>,
    grace: i64,
    open: BTreeMap<Key, Acc>,
}

struct Acc {
    start: i64,
    n: u64,
    /// Welford's running mean and sum of squared deviations.
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    last: f64,
    not_good: u64,
    template: Record,
    from: Span,
}

impl Acc {
    fn new(start: i64, x: f64, it: &Item) -> Self {
        let mut a = Acc {
            start,
            n: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last: x,
            not_good: 0,
            template: it.rec.clone(),
            from: it.from,
        };
        a.add(x, it, false);
        a
    }

    fn add(&mut self, x: f64, it: &Item, join: bool) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        self.last = x;
        if it.rec.reading.quality != Quality::Good {
            self.not_good += 1;
        }
        if join {
            self.from = self.from.join(it.from);
            self.template.priority = self.template.priority.max(it.rec.priority);
        }
    }

    fn emit(self, stats: &[Stat], out: &mut Vec<Item>, cut_short: bool) {
        let quality = if cut_short {
            Quality::Uncertain(format!(
                "window cut short by a workflow reload after {} readings",
                self.n
            ))
        } else if self.not_good > 0 {
            Quality::Uncertain(format!(
                "{} of {} readings were not good",
                self.not_good, self.n
            ))
        } else {
            Quality::Good
        };
        for s in stats {
            let mut rec = self.template.clone();
            let r = &mut rec.reading;
            r.channel = Arc::from(format!("{}_{}", r.channel, s.name()));
            r.ts = Timestamp(self.start);
            r.quality = quality.clone();
            r.value = match s {
                Stat::Mean => Value::Number(self.mean),
                Stat::Min => Value::Number(self.min),
                Stat::Max => Value::Number(self.max),
                Stat::Last => Value::Number(self.last),
                // Population standard deviation (divides by n).
                Stat::Stddev => Value::Number((self.m2 / self.n as f64).sqrt()),
                Stat::Count => Value::Integer(self.n as i64),
            };
            if *s == Stat::Count {
                r.unit = None;
            }
            out.push(Item {
                rec,
                from: self.from,
            });
        }
    }
}

impl Step for Window {
    fn run(&mut self, input: &mut Vec<Item>, out: &mut Vec<Item>, errors: &mut StepErrors) {
        for it in input.drain(..) {
            let Some((it, x)) = numeric(it, &self.channels, "window", out, errors) else {
                continue;
            };
            let r = &it.rec.reading;
            let ts = r.ts.as_nanos();
            let start = ts.div_euclid(self.every) * self.every;
            let k = key(&it.rec);
            match self.open.get_mut(&k) {
                Some(acc) if acc.start == start => acc.add(x, &it, true),
                Some(acc) if start < acc.start => {
                    errors.add(|| {
                        format!(
                            "window: late reading of {} dropped from the aggregate",
                            r.channel
                        )
                    });
                }
                Some(_) => {
                    let done = self.open.insert(k, Acc::new(start, x, &it));
                    if let Some(done) = done {
                        done.emit(&self.stats, out, false);
                    }
                }
                None => {
                    self.open.insert(k, Acc::new(start, x, &it));
                }
            }
        }
    }

    fn tick(&mut self, now: Timestamp, out: &mut Vec<Item>) {
        let now = now.as_nanos();
        let due: Vec<Key> = self
            .open
            .iter()
            .filter(|(_, a)| a.start + self.every + self.grace <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            if let Some(a) = self.open.remove(&k) {
                a.emit(&self.stats, out, false);
            }
        }
    }

    fn flush(&mut self, out: &mut Vec<Item>) {
        for (_, a) in std::mem::take(&mut self.open) {
            a.emit(&self.stats, out, true);
        }
    }

    fn oldest_ref(&self) -> Option<Ref> {
        self.open.values().map(|a| a.from.first).min()
    }
}

#[cfg(test)]
mod tests;
