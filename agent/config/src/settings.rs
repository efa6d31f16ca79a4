//! Validated settings: what the agent runs on. Built only by [`validate`], a pure function.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use skygate_drivers::files::FilesConfig;
use skygate_drivers::http::HttpConfig;
use skygate_drivers::modbus::ModbusConfig;
use skygate_drivers::mqtt::MqttConfig;
use skygate_drivers::serial::SerialConfig;
use skygate_drivers::sim::SimConfig;

use super::raw::{
    BrokerRaw, BufferMerged, ControlMerged, DriverKindRaw, DriverRaw, DurabilityRaw, HealthMerged,
    Located, Merged, RouteRaw, SinkKindRaw, SinkRaw,
};
use super::{ConfigError, ConfigSource, SourceFile};
use skygate_functions::{WorkflowFile, WorkflowSpec};

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where these settings were read from: what a reload reads again.
    pub source: ConfigSource,
    pub gateway: GatewaySettings,
    pub buffer: BufferSettings,
    pub health: HealthSettings,
    pub control: ControlSettings,
    /// The embedded MQTT broker, when configured.
    pub broker: Option<BrokerSettings>,
    pub drivers: BTreeMap<String, DriverSettings>,
    pub sinks: BTreeMap<String, SinkSettings>,
    pub routes: Vec<RouteSettings>,
    /// Workflow files as named, and what they hold once read ([`super::load_sources`]
    /// reads them after validation, which stays a pure function of the config text).
    pub workflow_files: Vec<WorkflowFile>,
    pub workflows: Vec<WorkflowSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySettings {
    /// Stable gateway id: the idempotency key every sink carries is `(id, seq)`.
    pub id: String,
    pub site: Option<String>,
    /// From the config; the `--data-dir` flag overrides it.
    pub data_dir: Option<PathBuf>,
    /// The board file named in the config (one of the shipped ones); `None`: chosen from
    /// the machine ([`skygate_bsp::board::select`]).
    pub board: Option<String>,
}

/// The heartbeat: the gateway's own state as readings on a stream, routed like any other,
/// so the fleet sees gateways through Kafka and buckets too.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSettings {
    pub enabled: bool,
    pub interval: Duration,
    pub stream: String,
    pub priority: u8,
}

pub use skygate_model::HEALTH_SOURCE;

#[derive(Debug, Clone, PartialEq)]
pub enum DriverKind {
    Sim(SimConfig),
    Modbus(ModbusConfig),
    Serial(SerialConfig),
    Http(HttpConfig),
    Mqtt(MqttConfig),
    Files(FilesConfig),
}

impl DriverKind {
    /// The `kind` as written in the config.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Sim(_) => "sim",
            Self::Modbus(_) => "modbus",
            Self::Serial(_) => "serial",
            Self::Http(_) => "http",
            Self::Mqtt(_) => "mqtt",
            Self::Files(_) => "files",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DriverSettings {
    pub name: String,
    pub stream: String,
    pub priority: u8,
    pub kind: DriverKind,
}

pub use skygate_broker::BrokerSettings;
pub use skygate_buffer::{BufferSettings, Durability};
pub use skygate_control::{ControlSettings, TcpControlSettings};
pub use skygate_sinks::bucket::BucketSinkSettings;
pub use skygate_sinks::{SinkCommon, SinkKind, SinkSettings};

#[derive(Debug, Clone, PartialEq)]
pub struct RouteSettings {
    pub streams: Vec<String>,
    pub sinks: Vec<String>,
}

impl Settings {
    /// Sinks a stream is routed to, in name order.
    pub fn sinks_for_stream(&self, stream: &str) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .routes
            .iter()
            .filter(|r| r.streams.iter().any(|p| glob_match(p, stream)))
            .flat_map(|r| r.sinks.iter().map(String::as_str))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Most sinks a gateway may have: each owns one bit of a record's pending mask.
pub const MAX_SINKS: usize = 62;

/// Pure validation of merged raw config into settings: each section in its own function
/// below, in the order the agent needs them (the broker before the drivers that use it,
/// the sinks before the routes that name them).
pub fn validate(m: Merged, files: &[SourceFile]) -> Result<Settings, ConfigError> {
    let gateway = gateway(&m, files)?;
    let buffer = buffer(m.buffer, files)?;
    let health = health(m.health, files)?;
    let control = control(m.control, files)?;
    let broker = m.broker.map(|b| broker(b, files)).transpose()?;
    let drivers = drivers(m.drivers, broker.is_some(), files)?;
    let sinks = sinks(&m.sinks, files)?;
    let routes = routes(m.routes, &m.sinks, &sinks, files)?;
    let workflow_files = workflow_files(m.workflows, files);
    Ok(Settings {
        source: ConfigSource::Inline,
        gateway,
        buffer,
        health,
        control,
        broker,
        drivers,
        sinks,
        routes,
        workflow_files,
        workflows: Vec::new(),
    })
}

/// An error at a span of one of the files.
fn at(
    files: &[SourceFile],
    file: usize,
    span: &std::ops::Range<usize>,
    msg: String,
) -> ConfigError {
    files[file].error_at(Some(span.clone()), msg)
}

/// An error about the merged config as a whole (reported against the last file read).
fn at_end(files: &[SourceFile], msg: impl Into<String>) -> ConfigError {
    files[files.len().saturating_sub(1)].error_at(None, msg)
}

/// `[gateway]` (and `gateway.board`, one of the shipped board files).
fn gateway(m: &Merged, files: &[SourceFile]) -> Result<GatewaySettings, ConfigError> {
    let at = |file: usize, span: &std::ops::Range<usize>, msg: String| at(files, file, span, msg);
    Ok(GatewaySettings {
        id: m
            .gateway_id
            .clone()
            .map(|l| l.value.0)
            .unwrap_or_else(default_gateway_id),
        site: m.site.clone(),
        data_dir: m.data_dir.clone().map(PathBuf::from),
        board: match m.board.clone() {
            Some(b) => {
                let known = skygate_bsp::board::names();
                if !known.contains(&b.value.as_str()) {
                    return Err(at(
                        b.file,
                        &b.span,
                        format!(
                            "gateway.board: unknown board {:?}; known boards: {}",
                            b.value,
                            known.join(", ")
                        ),
                    ));
                }
                Some(b.value)
            }
            None => None,
        },
    })
}

/// `[buffer]`, with the bounds the writer relies on.
fn buffer(b: BufferMerged, files: &[SourceFile]) -> Result<BufferSettings, ConfigError> {
    let at = |file: usize, span: &std::ops::Range<usize>, msg: String| at(files, file, span, msg);
    let d = BufferSettings::default();
    let buffer = BufferSettings {
        durability: match b.durability {
            Some(DurabilityRaw::Process) => Durability::Process,
            Some(DurabilityRaw::Power) | None => Durability::Power,
        },
        max_bytes: b.max_bytes.map_or(d.max_bytes, |v| v.0),
        min_free_disk: b.min_free_disk.map_or(d.min_free_disk, |v| v.0),
        commit_max_records: match b.commit_max_records {
            Some(Located { value, file, span }) => {
                if !(1..=100_000).contains(&value) {
                    return Err(at(
                        file,
                        &span,
                        format!("buffer.commit_max_records must be 1 to 100000, got {value}"),
                    ));
                }
                value
            }
            None => d.commit_max_records,
        },
        commit_max_delay: b.commit_max_delay.map_or(d.commit_max_delay, |v| v.0),
        blob_spool_threshold: b
            .blob_spool_threshold
            .map_or(d.blob_spool_threshold, |v| v.0),
    };
    if buffer.max_bytes < 1024 * 1024 {
        return Err(at_end(files, "buffer.max_bytes must be at least 1MiB"));
    }
    if buffer.commit_max_delay > Duration::from_secs(1) {
        return Err(at_end(files, "buffer.commit_max_delay must be at most 1s"));
    }
    Ok(buffer)
}

/// `[health]`: the heartbeat.
fn health(h: HealthMerged, files: &[SourceFile]) -> Result<HealthSettings, ConfigError> {
    let at = |file: usize, span: &std::ops::Range<usize>, msg: String| at(files, file, span, msg);
    Ok(HealthSettings {
        enabled: h.enabled.unwrap_or(true),
        interval: match h.interval {
            Some(Located { value, file, span }) => {
                if value.0 < Duration::from_secs(1) {
                    return Err(at(
                        file,
                        &span,
                        format!("health.interval must be at least 1s, got {value}"),
                    ));
                }
                value.0
            }
            None => Duration::from_secs(60),
        },
        stream: h
            .stream
            .map_or_else(|| "gateway.health".to_string(), |n| n.0),
        priority: h.priority.map_or(7, |p| p.0),
    })
}

/// The enabled drivers; `embedded_broker`: whether a `[broker]` section is there for the
/// MQTT drivers that name it.
fn drivers(
    raw: BTreeMap<String, Located<DriverRaw>>,
    embedded_broker: bool,
    files: &[SourceFile],
) -> Result<BTreeMap<String, DriverSettings>, ConfigError> {
    let at = |file: usize, span: &std::ops::Range<usize>, msg: String| at(files, file, span, msg);
    let mut drivers = BTreeMap::new();
    for (name, l) in raw {
        if name == HEALTH_SOURCE {
            return Err(at(
                l.file,
                &l.span,
                format!("driver name {HEALTH_SOURCE:?} is reserved for the agent's heartbeat"),
            ));
        }
        let c = &l.value.common;
        if c.enabled == Some(false) {
            continue;
        }
        let kind = match &l.value.kind {
            DriverKindRaw::Sim(cfg) => DriverKind::Sim((**cfg).clone()),
            DriverKindRaw::Modbus(cfg) => DriverKind::Modbus((**cfg).clone()),
            DriverKindRaw::Serial(cfg) => DriverKind::Serial((**cfg).clone()),
            DriverKindRaw::Http(cfg) => DriverKind::Http((**cfg).clone()),
            DriverKindRaw::Mqtt(cfg) => {
                if cfg.broker == skygate_drivers::mqtt::BrokerRef::Embedded && !embedded_broker {
                    return Err(at(
                        l.file,
                        &l.span,
                        format!(
                            "driver {name}: broker = \"embedded\" needs a [broker] section (listen, users)"
                        ),
                    ));
                }
                DriverKind::Mqtt((**cfg).clone())
            }
            DriverKindRaw::Files(cfg) => DriverKind::Files((**cfg).clone()),
        };
        drivers.insert(
            name.clone(),
            DriverSettings {
                stream: c.stream.clone().map_or_else(|| name.clone(), |n| n.0),
                priority: c.priority.map_or(5, |p| p.0),
                name,
                kind,
            },
        );
    }
    Ok(drivers)
}

/// One enabled sink: the settings every kind shares, checked, and its kind's own.
fn sink(
    name: &str,
    l: &Located<SinkRaw>,
    files: &[SourceFile],
) -> Result<SinkSettings, ConfigError> {
    let at = |file: usize, span: &std::ops::Range<usize>, msg: String| at(files, file, span, msg);
    let defaults = SinkCommon::default();
    let c = &l.value.common;
    let share = match &c.backfill_share {
        Some(s) => {
            let v = *s.get_ref();
            if !(0.0..=1.0).contains(&v) {
                return Err(at(
                    l.file,
                    &s.span(),
                    format!("sink {name}: backfill_share must be between 0.0 and 1.0, got {v}"),
                ));
            }
            v
        }
        None => defaults.backfill_share,
    };
    let backoff_initial = c.backoff_initial.map_or(defaults.backoff_initial, |v| v.0);
    let backoff_max = c.backoff_max.map_or(defaults.backoff_max, |v| v.0);
    if backoff_initial.is_zero() || backoff_max < backoff_initial {
        return Err(at(
            l.file,
            &l.span,
            format!("sink {name}: need 0 < backoff_initial <= backoff_max"),
        ));
    }
    let batch_max_records = match &c.batch_max_records {
        Some(v) if !(1..=100_000).contains(v.get_ref()) => {
            return Err(at(
                l.file,
                &v.span(),
                format!("sink {name}: batch_max_records must be 1 to 100000"),
            ));
        }
        Some(v) => *v.get_ref(),
        None => defaults.batch_max_records,
    };
    let common = SinkCommon {
        backfill_share: share,
        backoff_initial,
        backoff_max,
        batch_max_records,
        batch_max_bytes: c.batch_max_bytes.map_or(defaults.batch_max_bytes, |v| v.0),
        batch_max_age: c.batch_max_age.map_or(defaults.batch_max_age, |v| v.0),
        max_bytes_per_sec: match c.max_bytes_per_sec {
            Some(b) if b.0 < 1024 => {
                return Err(at(
                    l.file,
                    &l.span,
                    format!("sink {name}: max_bytes_per_sec must be at least 1KiB"),
                ));
            }
            b => b.map(|b| b.0),
        },
        dead_letter_stream: c
            .dead_letter_stream
            .clone()
            .map_or_else(|| defaults.dead_letter_stream.clone(), |n| n.0),
    };
    let kind = match &l.value.kind {
        SinkKindRaw::Bucket(b) => SinkKind::Bucket(b.clone()),
        SinkKindRaw::Mqtt(m) => SinkKind::Mqtt(m.clone()),
        #[cfg(feature = "kafka")]
        SinkKindRaw::Kafka(k) => SinkKind::Kafka(k.clone()),
    };
    Ok(SinkSettings {
        name: name.to_string(),
        common,
        kind,
    })
}

/// The enabled sinks, at most [`MAX_SINKS`].
fn sinks(
    raw: &BTreeMap<String, Located<SinkRaw>>,
    files: &[SourceFile],
) -> Result<BTreeMap<String, SinkSettings>, ConfigError> {
    let mut sinks = BTreeMap::new();
    for (name, l) in raw {
        if l.value.common.enabled == Some(false) {
            continue;
        }
        sinks.insert(name.clone(), sink(name, l, files)?);
    }
    if sinks.len() > MAX_SINKS {
        return Err(files[files.len().saturating_sub(1)].error_at(
            None,
            format!(
                "at most {MAX_SINKS} sinks are supported, found {}",
                sinks.len()
            ),
        ));
    }
    Ok(sinks)
}

/// Routes: stream patterns to enabled sinks (`raw_sinks`: every sink named, to tell a
/// disabled one from an unknown one).
fn routes(
    raw: Vec<Located<RouteRaw>>,
    raw_sinks: &BTreeMap<String, Located<SinkRaw>>,
    sinks: &BTreeMap<String, SinkSettings>,
    files: &[SourceFile],
) -> Result<Vec<RouteSettings>, ConfigError> {
    let at = |file: usize, span: &std::ops::Range<usize>, msg: String| at(files, file, span, msg);
    let mut routes = Vec::new();
    for r in raw {
        let mut route = RouteSettings {
            streams: Vec::new(),
            sinks: Vec::new(),
        };
        if r.value.streams.is_empty() || r.value.sinks.is_empty() {
            return Err(at(
                r.file,
                &r.span,
                "a route needs at least one stream and one sink".into(),
            ));
        }
        for s in r.value.streams {
            let pattern = s.get_ref();
            let literal: String = pattern
                .chars()
                .filter(|c| !matches!(c, '*' | '?'))
                .collect();
            if !literal.is_empty() {
                super::raw::validate_name(&literal)
                    .map_err(|e| at(r.file, &s.span(), format!("route stream pattern: {e}")))?;
            }
            route.streams.push(s.into_inner());
        }
        for s in r.value.sinks {
            if !sinks.contains_key(s.get_ref()) {
                let known: Vec<&str> = sinks.keys().map(String::as_str).collect();
                let msg = if raw_sinks.contains_key(s.get_ref()) {
                    format!("route refers to sink {:?}, which is disabled", s.get_ref())
                } else {
                    format!(
                        "route refers to unknown sink {:?}; defined sinks: {}",
                        s.get_ref(),
                        known.join(", ")
                    )
                };
                return Err(at(r.file, &s.span(), msg));
            }
            route.sinks.push(s.into_inner());
        }
        routes.push(route);
    }
    Ok(routes)
}

/// Workflow files as named, relative to the file that names them.
fn workflow_files(raw: Vec<Located<String>>, files: &[SourceFile]) -> Vec<WorkflowFile> {
    raw.into_iter()
        .map(|w| {
            let f = &files[w.file];
            let (line, col) = f.line_col(w.span.start);
            let base = f.path.parent().unwrap_or(std::path::Path::new(""));
            WorkflowFile {
                path: base.join(&w.value),
                named_at: (f.path.clone(), line, col),
            }
        })
        .collect()
}

fn broker(b: Located<BrokerRaw>, files: &[SourceFile]) -> Result<BrokerSettings, ConfigError> {
    let err = |msg: String| files[b.file].error_at(Some(b.span.clone()), msg);
    let r = b.value.clone();
    let addr = |field: &str, v: &Option<String>| -> Result<Option<SocketAddr>, ConfigError> {
        v.as_deref()
            .map(|s| {
                s.parse::<SocketAddr>().map_err(|e| {
                    err(format!(
                        "broker.{field} must be ADDRESS:PORT, got {s:?}: {e}"
                    ))
                })
            })
            .transpose()
    };
    let listen = addr("listen", &r.listen)?;
    let tls_listen = addr("tls_listen", &r.tls_listen)?;
    if listen.is_none() && tls_listen.is_none() {
        return Err(err("broker needs listen and/or tls_listen".into()));
    }
    if listen.is_some() && listen == tls_listen {
        return Err(err(
            "broker.listen and broker.tls_listen are the same address".into(),
        ));
    }
    match (&r.tls_listen, &r.tls_cert, &r.tls_key) {
        (Some(_), Some(_), Some(_)) | (None, None, None) => {}
        (Some(_), _, _) => return Err(err("broker.tls_listen needs tls_cert and tls_key".into())),
        (None, _, _) => return Err(err("broker.tls_cert and tls_key apply to tls_listen".into())),
    }
    let allow_anonymous = r.allow_anonymous.unwrap_or(false);
    if r.users.is_empty() && !allow_anonymous {
        return Err(err(
            "broker has no users: add [broker.users.NAME] password_file = \"...\", or set allow_anonymous = true for a closed instrument LAN".into(),
        ));
    }
    if !r.users.is_empty() && allow_anonymous {
        return Err(err(
            "broker: users and allow_anonymous = true contradict each other".into(),
        ));
    }
    if let Some(u) = r.users.keys().find(|u| u.is_empty() || u.len() > 256) {
        return Err(err(format!("broker.users: {u:?} is not a user name")));
    }
    let max_connections = r.max_connections.unwrap_or(64) as usize;
    if !(1..=10_000).contains(&max_connections) {
        return Err(err("broker.max_connections must be 1 to 10000".into()));
    }
    let max_payload = r.max_payload.map_or(1 << 20, |s| s.0);
    if !(16..=64 << 20).contains(&max_payload) {
        return Err(err("broker.max_payload must be 16 B to 64 MiB".into()));
    }
    Ok(BrokerSettings {
        listen,
        tls_listen,
        tls_cert: r.tls_cert.map(PathBuf::from),
        tls_key: r.tls_key.map(PathBuf::from),
        users: r
            .users
            .into_iter()
            .map(|(u, f)| (u, PathBuf::from(f.password_file)))
            .collect(),
        allow_anonymous,
        max_connections,
        max_payload: max_payload as usize,
    })
}

fn control(c: ControlMerged, files: &[SourceFile]) -> Result<ControlSettings, ConfigError> {
    let at = |l: &Located<String>, msg: String| files[l.file].error_at(Some(l.span.clone()), msg);
    let d = ControlSettings::default();
    let socket_mode = match &c.socket_mode {
        None => d.socket_mode,
        Some(l) => {
            let mode = u32::from_str_radix(l.value.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| {
                    at(l, format!("control.socket_mode must be octal permission bits like \"0660\", got {:?}", l.value))
                })?;
            if mode & 0o002 != 0 {
                return Err(at(
                    l,
                    format!(
                        "control.socket_mode {:o} lets any user control the agent; use 0660 and socket_group",
                        mode
                    ),
                ));
            }
            mode
        }
    };
    if let Some(g) = &c.socket_group
        && (g.value.is_empty() || g.value.contains(['/', ':', ' ']))
    {
        return Err(at(
            g,
            format!("control.socket_group {:?} is not a group name", g.value),
        ));
    }
    let tcp = match &c.listen {
        None => None,
        Some(l) => {
            let listen = l.value.parse::<std::net::SocketAddr>().map_err(|e| {
                at(
                    l,
                    format!(
                        "control.listen must be ADDRESS:PORT, got {:?}: {e}",
                        l.value
                    ),
                )
            })?;
            let (Some(cert), Some(key), Some(token)) = (&c.tls_cert, &c.tls_key, &c.token_file)
            else {
                return Err(at(
                    l,
                    "control.listen needs tls_cert, tls_key and token_file: the remote API is TLS-only and every request carries the bearer token".into(),
                ));
            };
            Some(TcpControlSettings {
                listen,
                tls_cert: PathBuf::from(cert),
                tls_key: PathBuf::from(key),
                token_file: PathBuf::from(token),
            })
        }
    };
    Ok(ControlSettings {
        socket: c.socket.map_or(d.socket, PathBuf::from),
        socket_mode,
        socket_group: c.socket_group.map(|g| g.value),
        tcp,
    })
}

/// The gateway id when the config gives none: from the machine id, else the host name.
fn default_gateway_id() -> String {
    use skygate_bsp::Board;
    let id = skygate_bsp::GenericLinux::default().identity();
    match id.machine_id {
        Some(m) => format!("gw-{}", &m[..m.len().min(12)]),
        None => "gw-unknown".into(),
    }
}

pub use skygate_util::glob::glob_match;
