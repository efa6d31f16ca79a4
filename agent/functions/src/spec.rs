//! Workflow files: YAML as written ([`WorkflowRaw`], every value kept with its location)
//! and the validated [`WorkflowSpec`] the engine is built from. Every error is a
//! [`ConfigError`]: `FILE:LINE:COL: message`.
//!
//! ```yaml
//! name: weather              # default: the file name without .yaml
//! input: [weather, "mast-*"] # streams (names or globs) the workflow takes
//! steps:                     # run in order; each is `function: {parameters}`
//!   - scale: {channels: [temperature], factor: 1.0, offset: -0.3}
//!   - derive: {channel: dew_point, unit: degC, expr: "..."}
//!   - window: {every: 1m, stats: [mean, min, max]}
//! output:
//!   stream: weather.1m       # the stream the results are filed under
//!   sinks: [archive]         # besides the config's routes for that stream
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::expr::Expr;
use super::units;
use skygate_util::glob::glob_match;
use skygate_util::names::validate_name;
use skygate_util::source::ConfigError;

/// Where something was written. Equal to every other position, so moving a line does not
/// make a workflow count as changed on reload.
#[derive(Debug, Clone, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl PartialEq for Pos {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> From<&Spanned<T>> for Pos {
    fn from(s: &Spanned<T>) -> Self {
        Pos {
            line: s.referenced.line() as usize,
            column: s.referenced.column() as usize,
        }
    }
}

/// A validated workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowSpec {
    pub name: String,
    pub file: PathBuf,
    /// Stream names or globs.
    pub input: Vec<String>,
    pub steps: Vec<StepSpec>,
    pub output_stream: String,
    pub output_at: Pos,
    /// Sinks named by the workflow, each with where it was written.
    pub sinks: Vec<(String, Pos)>,
}

impl WorkflowSpec {
    pub fn takes(&self, stream: &str) -> bool {
        self.input.iter().any(|p| glob_match(p, stream))
    }

    pub fn error(&self, at: &Pos, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: at.line,
            column: at.column,
            message: message.into(),
        }
    }
}

/// Which channels a step works on; the others pass it unchanged. Empty: all.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selector(pub Vec<String>);

impl Selector {
    pub fn matches(&self, channel: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|p| glob_match(p, channel))
    }
}

/// Window statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stat {
    Mean,
    Min,
    Max,
    Count,
    Stddev,
    Last,
}

impl Stat {
    pub fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Min => "min",
            Self::Max => "max",
            Self::Count => "count",
            Self::Stddev => "stddev",
            Self::Last => "last",
        }
    }
}

/// One step, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum StepSpec {
    Scale {
        channels: Selector,
        factor: f64,
        offset: f64,
        unit: Option<String>,
    },
    Convert {
        channels: Selector,
        from: Option<String>,
        to: String,
    },
    Rename {
        channel: String,
        to: String,
    },
    Tag {
        channels: Selector,
        unit: Option<String>,
        priority: Option<u8>,
        source: Option<String>,
    },
    Filter {
        channels: Selector,
        expr: String,
    },
    Derive {
        channel: String,
        expr: String,
        unit: Option<String>,
        /// Expression variable -> channel it reads.
        inputs: BTreeMap<String, String>,
    },
    Deadband {
        channels: Selector,
        abs: Option<f64>,
        pct: Option<f64>,
        max_silence: Option<Duration>,
    },
    Alarm {
        channels: Selector,
        above: Option<f64>,
        below: Option<f64>,
        hysteresis: f64,
        priority: u8,
    },
    Window {
        channels: Selector,
        every: Duration,
        stats: Vec<Stat>,
        grace: Duration,
    },
    Downsample {
        channels: Selector,
        every: Duration,
    },
    Wasm {
        channels: Selector,
        /// Resolved against the workflow file's directory.
        module: PathBuf,
        module_at: Pos,
        /// Of the module's bytes when the workflow loaded: a new module is a changed step.
        sha256: String,
        limits: WasmLimits,
        dead_letter_stream: String,
    },
}

/// Limits of one WASM call (one batch).
#[derive(Debug, Clone, PartialEq)]
pub struct WasmLimits {
    pub timeout: Duration,
    pub max_memory: u64,
    pub max_output_bytes: u64,
    /// Output records allowed per input record (plus 1024 per batch).
    pub max_output_per_input: u32,
}

impl Default for WasmLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(200),
            max_memory: 64 << 20,
            max_output_bytes: 16 << 20,
            max_output_per_input: 16,
        }
    }
}

impl StepSpec {
    pub fn function(&self) -> &'static str {
        match self {
            Self::Scale { .. } => "scale",
            Self::Convert { .. } => "convert",
            Self::Rename { .. } => "rename",
            Self::Tag { .. } => "tag",
            Self::Filter { .. } => "filter",
            Self::Derive { .. } => "derive",
            Self::Deadband { .. } => "deadband",
            Self::Alarm { .. } => "alarm",
            Self::Window { .. } => "window",
            Self::Downsample { .. } => "downsample",
            Self::Wasm { .. } => "wasm",
        }
    }
}

// ---- YAML as written -------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkflowRaw {
    name: Option<Spanned<String>>,
    #[allow(dead_code)]
    description: Option<String>,
    input: Spanned<Vec<Spanned<String>>>,
    steps: Vec<Spanned<StepRaw>>,
    output: Spanned<OutputRaw>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputRaw {
    stream: Spanned<String>,
    #[serde(default)]
    sinks: Vec<Spanned<String>>,
}

type Channels = Option<Vec<Spanned<String>>>;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum StepRaw {
    Scale(ScaleRaw),
    Convert(ConvertRaw),
    Rename(RenameRaw),
    Tag(TagRaw),
    Filter(FilterRaw),
    Derive(DeriveRaw),
    Deadband(DeadbandRaw),
    Alarm(AlarmRaw),
    Window(WindowRaw),
    Downsample(DownsampleRaw),
    Wasm(Box<WasmRaw>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WasmRaw {
    channels: Channels,
    module: Spanned<String>,
    timeout: Option<Spanned<String>>,
    max_memory: Option<Spanned<String>>,
    max_output: Option<Spanned<String>>,
    max_output_per_input: Option<Spanned<u32>>,
    dead_letter_stream: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleRaw {
    channels: Channels,
    factor: Option<Spanned<f64>>,
    offset: Option<f64>,
    unit: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConvertRaw {
    channels: Channels,
    from: Option<Spanned<String>>,
    to: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenameRaw {
    channel: Spanned<String>,
    to: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TagRaw {
    channels: Channels,
    unit: Option<String>,
    priority: Option<Spanned<i64>>,
    source: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterRaw {
    channels: Channels,
    expr: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeriveRaw {
    channel: Spanned<String>,
    expr: Spanned<String>,
    unit: Option<String>,
    #[serde(default)]
    inputs: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadbandRaw {
    channels: Channels,
    abs: Option<Spanned<f64>>,
    pct: Option<Spanned<f64>>,
    max_silence: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlarmRaw {
    channels: Channels,
    above: Option<f64>,
    below: Option<f64>,
    hysteresis: Option<Spanned<f64>>,
    priority: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowRaw {
    channels: Channels,
    every: Spanned<String>,
    stats: Option<Vec<Stat>>,
    grace: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DownsampleRaw {
    channels: Channels,
    every: Spanned<String>,
}

// ---- validation ------------------------------------------------------------------------

/// Parses and validates one workflow file's text. Sinks and cycles need the other
/// workflows and the config: see [`check_set`].
pub fn parse(file: &Path, text: &str) -> Result<WorkflowSpec, ConfigError> {
    let err = |at: Pos, message: String| ConfigError {
        file: file.to_path_buf(),
        line: at.line,
        column: at.column,
        message,
    };
    let raw: WorkflowRaw = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map_or((1, 1), |l| (l.line() as usize, l.column() as usize));
        let msg = e.without_snippet().to_string();
        // The location is ours to print, once, in front.
        let msg = msg
            .rsplit_once(" at line ")
            .map_or(msg.as_str(), |(m, _)| m)
            .to_string();
        err(Pos { line, column }, msg)
    })?;

    let name = match &raw.name {
        Some(n) => {
            validate_name(&n.value).map_err(|e| err(n.into(), format!("workflow name: {e}")))?;
            n.value.clone()
        }
        None => {
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            validate_name(&stem).map_err(|e| {
                err(
                    Pos { line: 1, column: 1 },
                    format!("no `name:`, and the file name is not a usable one: {e}"),
                )
            })?;
            stem
        }
    };
    if raw.input.value.is_empty() {
        return Err(err(
            (&raw.input).into(),
            "`input` needs at least one stream (a name or a glob)".into(),
        ));
    }
    let mut input = Vec::new();
    for s in &raw.input.value {
        let literal: String = s
            .value
            .chars()
            .filter(|c| !matches!(c, '*' | '?'))
            .collect();
        if !literal.is_empty() {
            validate_name(&literal).map_err(|e| err(s.into(), format!("input stream: {e}")))?;
        }
        input.push(s.value.clone());
    }
    let out = &raw.output.value;
    validate_name(&out.stream.value)
        .map_err(|e| err((&out.stream).into(), format!("output stream: {e}")))?;
    if raw.steps.is_empty() {
        return Err(err(
            Pos { line: 1, column: 1 },
            "`steps` is empty: a workflow needs at least one step".into(),
        ));
    }
    let mut steps = Vec::new();
    for s in raw.steps {
        let at: Pos = (&s).into();
        steps.push(step(s.value, &at).map_err(|(p, m)| err(p.unwrap_or(at), m))?);
    }
    Ok(WorkflowSpec {
        name,
        file: file.to_path_buf(),
        input,
        steps,
        output_stream: out.stream.value.clone(),
        output_at: (&out.stream).into(),
        sinks: out
            .sinks
            .iter()
            .map(|s| (s.value.clone(), s.into()))
            .collect(),
    })
}

type StepErr = (Option<Pos>, String);

fn at<T>(s: &Spanned<T>, m: impl Into<String>) -> StepErr {
    (Some(s.into()), m.into())
}

fn selector(c: Channels) -> Selector {
    Selector(c.unwrap_or_default().into_iter().map(|s| s.value).collect())
}

fn duration(s: &Spanned<String>, what: &str) -> Result<Duration, StepErr> {
    let d = humantime::parse_duration(&s.value).map_err(|e| {
        at(
            s,
            format!("{what} {:?}: {e} (e.g. 500ms, 10s, 1m)", s.value),
        )
    })?;
    if d.is_zero() {
        return Err(at(s, format!("{what} must be longer than zero")));
    }
    Ok(d)
}

fn priority(p: &Spanned<i64>) -> Result<u8, StepErr> {
    u8::try_from(p.value)
        .ok()
        .filter(|p| *p <= 9)
        .ok_or_else(|| at(p, format!("priority {} is out of range 0..=9", p.value)))
}

/// One step of a workflow, checked: each kind in its own function below.
fn step(raw: StepRaw, here: &Pos) -> Result<StepSpec, StepErr> {
    match raw {
        StepRaw::Scale(r) => step_scale(r),
        StepRaw::Convert(r) => step_convert(r),
        StepRaw::Rename(r) => step_rename(r),
        StepRaw::Tag(r) => step_tag(r, here),
        StepRaw::Filter(r) => step_filter(r),
        StepRaw::Derive(r) => step_derive(r),
        StepRaw::Deadband(r) => step_deadband(r, here),
        StepRaw::Alarm(r) => step_alarm(r, here),
        StepRaw::Window(r) => step_window(r, here),
        StepRaw::Downsample(r) => Ok(StepSpec::Downsample {
            channels: selector(r.channels),
            every: duration(&r.every, "every")?,
        }),
        StepRaw::Wasm(r) => step_wasm(r),
    }
}

/// `scale`: a finite factor.
fn step_scale(r: ScaleRaw) -> Result<StepSpec, StepErr> {
    if let Some(f) = &r.factor
        && !f.value.is_finite()
    {
        return Err(at(f, "factor must be a finite number"));
    }
    Ok(StepSpec::Scale {
        channels: selector(r.channels),
        factor: r.factor.map_or(1.0, |f| f.value),
        offset: r.offset.unwrap_or(0.0),
        unit: r.unit,
    })
}

/// `convert`: units the table knows, and a conversion between them.
fn step_convert(r: ConvertRaw) -> Result<StepSpec, StepErr> {
    if let Some(from) = &r.from {
        units::conversion(&from.value, &r.to.value).map_err(|e| at(from, e))?;
    } else if !units::is_known(&r.to.value) {
        return Err(at(
            &r.to,
            units::conversion(&r.to.value, &r.to.value).unwrap_err(),
        ));
    }
    Ok(StepSpec::Convert {
        channels: selector(r.channels),
        from: r.from.map(|f| f.value),
        to: r.to.value,
    })
}

/// `rename`: a valid channel name.
fn step_rename(r: RenameRaw) -> Result<StepSpec, StepErr> {
    validate_name(&r.to.value).map_err(|e| at(&r.to, format!("new channel name: {e}")))?;
    Ok(StepSpec::Rename {
        channel: r.channel.value,
        to: r.to.value,
    })
}

/// `tag`: sets at least one thing, a valid source.
fn step_tag(r: TagRaw, here: &Pos) -> Result<StepSpec, StepErr> {
    let whole = |m: String| (Some(here.clone()), m);
    if r.unit.is_none() && r.priority.is_none() && r.source.is_none() {
        return Err(whole(
            "tag sets nothing: give unit, priority or source".into(),
        ));
    }
    if let Some(s) = &r.source {
        validate_name(&s.value).map_err(|e| at(s, format!("source: {e}")))?;
    }
    Ok(StepSpec::Tag {
        channels: selector(r.channels),
        unit: r.unit,
        priority: r.priority.as_ref().map(priority).transpose()?,
        source: r.source.map(|s| s.value),
    })
}

/// `filter`: an expression over the record variables only.
fn step_filter(r: FilterRaw) -> Result<StepSpec, StepErr> {
    let e = Expr::compile(&r.expr.value).map_err(|e| at(&r.expr, e))?;
    if let Some(v) = e
        .vars()
        .iter()
        .find(|v| !super::builtins::RECORD_VARS.contains(&v.as_str()))
    {
        return Err(at(
            &r.expr,
            format!(
                "filter expression reads {v:?}; it can read {}",
                super::builtins::RECORD_VARS.join(", ")
            ),
        ));
    }
    Ok(StepSpec::Filter {
        channels: selector(r.channels),
        expr: r.expr.value,
    })
}

/// `derive`: an expression that reads channels, every named input used.
fn step_derive(r: DeriveRaw) -> Result<StepSpec, StepErr> {
    validate_name(&r.channel.value)
        .map_err(|e| at(&r.channel, format!("derived channel name: {e}")))?;
    let e = Expr::compile(&r.expr.value).map_err(|e| at(&r.expr, e))?;
    if e.vars().is_empty() {
        return Err(at(&r.expr, "the expression reads no channel"));
    }
    for (var, ch) in &r.inputs {
        if !e.vars().contains(var) {
            return Err(at(
                ch,
                format!("input {var:?} is not used by the expression"),
            ));
        }
    }
    let inputs = e
        .vars()
        .iter()
        .map(|v| {
            let ch = r.inputs.get(v).map_or(v.clone(), |c| c.value.clone());
            (v.clone(), ch)
        })
        .collect();
    Ok(StepSpec::Derive {
        channel: r.channel.value,
        expr: r.expr.value,
        unit: r.unit,
        inputs,
    })
}

/// `deadband`: abs and/or pct, neither negative.
fn step_deadband(r: DeadbandRaw, here: &Pos) -> Result<StepSpec, StepErr> {
    let whole = |m: String| (Some(here.clone()), m);
    for v in [&r.abs, &r.pct].into_iter().flatten() {
        if !(v.value.is_finite() && v.value >= 0.0) {
            return Err(at(v, "must be a number of zero or more"));
        }
    }
    if r.abs.is_none() && r.pct.is_none() {
        return Err(whole("deadband needs abs or pct (or both)".into()));
    }
    Ok(StepSpec::Deadband {
        channels: selector(r.channels),
        abs: r.abs.map(|v| v.value),
        pct: r.pct.map(|v| v.value),
        max_silence: r
            .max_silence
            .as_ref()
            .map(|d| duration(d, "max_silence"))
            .transpose()?,
    })
}

/// `alarm`: a threshold, hysteresis that keeps the two apart.
fn step_alarm(r: AlarmRaw, here: &Pos) -> Result<StepSpec, StepErr> {
    let whole = |m: String| (Some(here.clone()), m);
    if r.above.is_none() && r.below.is_none() {
        return Err(whole("alarm needs above or below (or both)".into()));
    }
    let hysteresis = r.hysteresis.as_ref().map_or(0.0, |h| h.value);
    if let Some(h) = &r.hysteresis
        && !(h.value.is_finite() && h.value >= 0.0)
    {
        return Err(at(h, "hysteresis must be zero or more"));
    }
    if let (Some(a), Some(b)) = (r.above, r.below)
        && b + hysteresis >= a - hysteresis
    {
        return Err(whole(format!(
            "below ({b}) plus hysteresis must stay under above ({a}) minus hysteresis"
        )));
    }
    Ok(StepSpec::Alarm {
        channels: selector(r.channels),
        above: r.above,
        below: r.below,
        hysteresis,
        priority: r.priority.as_ref().map(priority).transpose()?.unwrap_or(9),
    })
}

/// `window`: a period, at least one statistic, a grace period.
fn step_window(r: WindowRaw, here: &Pos) -> Result<StepSpec, StepErr> {
    let whole = |m: String| (Some(here.clone()), m);
    let every = duration(&r.every, "every")?;
    let stats = r
        .stats
        .unwrap_or_else(|| vec![Stat::Mean, Stat::Min, Stat::Max, Stat::Count]);
    if stats.is_empty() {
        return Err(whole("stats is empty".into()));
    }
    Ok(StepSpec::Window {
        channels: selector(r.channels),
        every,
        stats,
        grace: match &r.grace {
            Some(g) => humantime::parse_duration(&g.value)
                .map_err(|e| at(g, format!("grace {:?}: {e}", g.value)))?,
            None => Duration::from_secs(2),
        },
    })
}

/// `wasm`: the module, its limits and its dead-letter stream.
fn step_wasm(r: Box<WasmRaw>) -> Result<StepSpec, StepErr> {
    let r = *r;
    let d = WasmLimits::default();
    let bytes = |v: &Option<Spanned<String>>, default: u64, what: &str| -> Result<u64, StepErr> {
        match v {
            None => Ok(default),
            Some(s) => skygate_drivers::config::ByteSize::parse(&s.value)
                .map_err(|e| at(s, format!("{what}: {e}")))
                .and_then(|b| {
                    if b == 0 {
                        Err(at(s, format!("{what} must be more than zero")))
                    } else {
                        Ok(b)
                    }
                }),
        }
    };
    let dead = r
        .dead_letter_stream
        .as_ref()
        .map_or("deadletter".to_string(), |s| s.value.clone());
    if let Some(s) = &r.dead_letter_stream {
        validate_name(&s.value).map_err(|e| at(s, format!("dead_letter_stream: {e}")))?;
    }
    let limits = WasmLimits {
        timeout: r
            .timeout
            .as_ref()
            .map(|t| duration(t, "timeout"))
            .transpose()?
            .unwrap_or(d.timeout),
        max_memory: bytes(&r.max_memory, d.max_memory, "max_memory")?,
        max_output_bytes: bytes(&r.max_output, d.max_output_bytes, "max_output")?,
        max_output_per_input: r
            .max_output_per_input
            .as_ref()
            .map_or(d.max_output_per_input, |v| v.value),
    };
    Ok(StepSpec::Wasm {
        channels: selector(r.channels),
        module: PathBuf::from(&r.module.value),
        module_at: (&r.module).into(),
        // Filled in when the module file is read (`functions::load`).
        sha256: String::new(),
        limits,
        dead_letter_stream: dead,
    })
}

/// Checks a set of workflows against each other and the configured sinks: names are
/// unique, every named sink exists, and no workflow's output feeds back into itself
/// through any chain of workflows.
pub fn check_set<'a>(
    specs: &[WorkflowSpec],
    sinks: impl IntoIterator<Item = &'a str> + Clone,
) -> Result<(), ConfigError> {
    for (i, w) in specs.iter().enumerate() {
        if let Some(other) = specs[..i].iter().find(|o| o.name == w.name) {
            return Err(w.error(
                &Pos { line: 1, column: 1 },
                format!(
                    "workflow name {:?} is also used by {}",
                    w.name,
                    other.file.display()
                ),
            ));
        }
        for (s, at) in &w.sinks {
            if !sinks.clone().into_iter().any(|k| k == s) {
                let known: Vec<&str> = sinks.clone().into_iter().collect();
                return Err(w.error(
                    at,
                    format!(
                        "unknown sink {s:?}; defined sinks: {}",
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
        }
    }
    if let Some(cycle) = find_cycle(specs) {
        let w = &specs[cycle[0]];
        let path: Vec<&str> = cycle.iter().map(|&i| specs[i].name.as_str()).collect();
        return Err(w.error(
            &w.output_at,
            format!(
                "workflow cycle: {} -> {} (output stream {:?} feeds back)",
                path.join(" -> "),
                path[0],
                w.output_stream
            ),
        ));
    }
    Ok(())
}

/// Workflow `a` feeds `b` when `a`'s output stream is one of `b`'s inputs.
pub fn feeds(a: &WorkflowSpec, b: &WorkflowSpec) -> bool {
    b.takes(&a.output_stream)
}

/// A cycle of workflows (indices, in feeding order), if there is one.
fn find_cycle(specs: &[WorkflowSpec]) -> Option<Vec<usize>> {
    // Depth-first search with colours: 0 new, 1 on the stack, 2 done.
    fn visit(
        i: usize,
        specs: &[WorkflowSpec],
        colour: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        colour[i] = 1;
        stack.push(i);
        for j in 0..specs.len() {
            if !feeds(&specs[i], &specs[j]) {
                continue;
            }
            if colour[j] == 1 {
                let from = stack.iter().position(|&k| k == j).unwrap_or(0);
                return Some(stack[from..].to_vec());
            }
            if colour[j] == 0
                && let Some(c) = visit(j, specs, colour, stack)
            {
                return Some(c);
            }
        }
        stack.pop();
        colour[i] = 2;
        None
    }
    let mut colour = vec![0u8; specs.len()];
    for i in 0..specs.len() {
        if colour[i] == 0
            && let Some(c) = visit(i, specs, &mut colour, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

/// Workflow indices so that every workflow comes after the ones that feed it (the set
/// has no cycle: [`check_set`] passed).
pub fn feeding_order(specs: &[WorkflowSpec]) -> Vec<usize> {
    let mut order = Vec::with_capacity(specs.len());
    let mut placed = vec![false; specs.len()];
    while order.len() < specs.len() {
        let before = order.len();
        for j in 0..specs.len() {
            if !placed[j]
                && (0..specs.len()).all(|i| placed[i] || i == j || !feeds(&specs[i], &specs[j]))
            {
                placed[j] = true;
                order.push(j);
            }
        }
        if order.len() == before {
            // Only with a cycle; keep the rest in file order rather than loop.
            order.extend((0..specs.len()).filter(|&j| !placed[j]));
            break;
        }
    }
    order
}

#[cfg(test)]
mod tests;
