//! Configuration exactly as written, one file at a time, with spans.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{ConfigError, SourceFile};

/// A value and where it was written: which file (index in merge order) and which bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    pub file: usize,
    pub span: Range<usize>,
    pub value: T,
}

#[derive(Debug, Default, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopRaw {
    pub gateway: Option<GatewayRaw>,
    pub buffer: Option<BufferRaw>,
    pub health: Option<HealthRaw>,
    pub control: Option<ControlRaw>,
    #[schemars(with = "Option<BrokerRaw>")]
    pub broker: Option<Spanned<BrokerRaw>>,
    #[serde(default)]
    #[schemars(with = "Vec<RouteRaw>")]
    pub routes: Vec<Spanned<RouteRaw>>,
    /// Workflow files (YAML), relative to the directory of the file naming them.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub workflows: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayRaw {
    #[schemars(with = "Option<Name>")]
    pub id: Option<Spanned<Name>>,
    pub site: Option<String>,
    pub data_dir: Option<String>,
    /// A board file's name (`skygate board` lists them); unset: found from the machine.
    #[schemars(with = "Option<String>")]
    pub board: Option<Spanned<String>>,
}

#[derive(Debug, Default, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BufferRaw {
    pub durability: Option<DurabilityRaw>,
    pub max_bytes: Option<ByteSize>,
    pub min_free_disk: Option<ByteSize>,
    #[schemars(with = "Option<u32>")]
    pub commit_max_records: Option<Spanned<u32>>,
    pub commit_max_delay: Option<HumanDuration>,
    pub blob_spool_threshold: Option<ByteSize>,
}

/// The `gateway.health` heartbeat.
#[derive(Debug, Default, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthRaw {
    pub enabled: Option<bool>,
    #[schemars(with = "Option<HumanDuration>")]
    pub interval: Option<Spanned<HumanDuration>>,
    pub stream: Option<Name>,
    pub priority: Option<Priority>,
}

/// The control API: its Unix socket, and the optional TLS listener.
#[derive(Debug, Default, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlRaw {
    pub socket: Option<String>,
    #[schemars(with = "Option<String>")]
    pub socket_mode: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub socket_group: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub listen: Option<Spanned<String>>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub token_file: Option<String>,
}

/// The embedded MQTT broker for the instrument LAN. A file that has `[broker]` replaces
/// the whole section of earlier files (its users and listeners belong together).
#[derive(Debug, Default, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BrokerRaw {
    pub listen: Option<String>,
    pub tls_listen: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// User name -> `{ password_file = "..." }`.
    #[serde(default)]
    pub users: BTreeMap<String, BrokerUserRaw>,
    pub allow_anonymous: Option<bool>,
    pub max_connections: Option<u32>,
    pub max_payload: Option<ByteSize>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BrokerUserRaw {
    pub password_file: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityRaw {
    Power,
    Process,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteRaw {
    /// Stream names or globs (`*` any run of characters, `?` one character).
    #[schemars(with = "Vec<String>")]
    pub streams: Vec<Spanned<String>>,
    #[schemars(with = "Vec<String>")]
    pub sinks: Vec<Spanned<String>>,
}

/// Keys every driver takes, whatever its kind.
#[derive(Debug, Default, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DriverCommonRaw {
    pub stream: Option<Name>,
    pub priority: Option<Priority>,
    pub enabled: Option<bool>,
}

/// Keys every sink takes, whatever its kind.
#[derive(Debug, Default, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SinkCommonRaw {
    pub enabled: Option<bool>,
    #[schemars(with = "Option<f64>")]
    pub backfill_share: Option<Spanned<f64>>,
    pub backoff_initial: Option<HumanDuration>,
    pub backoff_max: Option<HumanDuration>,
    #[schemars(with = "Option<u32>")]
    pub batch_max_records: Option<Spanned<u32>>,
    pub batch_max_bytes: Option<ByteSize>,
    pub batch_max_age: Option<HumanDuration>,
    /// Bandwidth cap for thin links, bytes per second.
    pub max_bytes_per_sec: Option<ByteSize>,
    /// Where records the peer refuses for good are set aside.
    pub dead_letter_stream: Option<Name>,
}

/// A driver's kind-specific settings, already validated by the driver crate (which is
/// done while the file's spans are at hand, so errors point at the offending key).
#[derive(Debug, Clone)]
pub enum DriverKindRaw {
    Sim(Box<skygate_drivers::sim::SimConfig>),
    Modbus(Box<skygate_drivers::modbus::ModbusConfig>),
    Serial(Box<skygate_drivers::serial::SerialConfig>),
    Http(Box<skygate_drivers::http::HttpConfig>),
    Mqtt(Box<skygate_drivers::mqtt::MqttConfig>),
    Files(Box<skygate_drivers::files::FilesConfig>),
}

#[derive(Debug, Clone)]
pub enum SinkKindRaw {
    Bucket(Box<skygate_sinks::bucket::BucketSinkSettings>),
    Mqtt(Box<skygate_sinks::mqtt::MqttSinkSettings>),
    #[cfg(feature = "kafka")]
    Kafka(Box<skygate_sinks::kafka::KafkaSinkSettings>),
}

#[derive(Debug, Clone)]
pub struct DriverRaw {
    pub common: DriverCommonRaw,
    pub kind: DriverKindRaw,
}

#[derive(Debug, Clone)]
pub struct SinkRaw {
    pub common: SinkCommonRaw,
    pub kind: SinkKindRaw,
}

/// One parsed file.
#[derive(Debug, Default)]
pub struct ParsedFile {
    pub top: TopRaw,
    pub drivers: Vec<(Spanned<String>, DriverRaw)>,
    pub sinks: Vec<(Spanned<String>, SinkRaw)>,
}

/// All files, merged per the rules in the module doc.
#[derive(Debug, Default)]
pub struct Merged {
    pub gateway_id: Option<Located<Name>>,
    pub site: Option<String>,
    pub data_dir: Option<String>,
    pub board: Option<Located<String>>,
    pub buffer: BufferMerged,
    pub health: HealthMerged,
    pub control: ControlMerged,
    pub broker: Option<Located<BrokerRaw>>,
    pub drivers: BTreeMap<String, Located<DriverRaw>>,
    pub sinks: BTreeMap<String, Located<SinkRaw>>,
    pub routes: Vec<Located<RouteRaw>>,
    /// Accumulate across files, like routes.
    pub workflows: Vec<Located<String>>,
}

#[derive(Debug, Default)]
pub struct HealthMerged {
    pub enabled: Option<bool>,
    pub interval: Option<Located<HumanDuration>>,
    pub stream: Option<Name>,
    pub priority: Option<Priority>,
}

#[derive(Debug, Default)]
pub struct ControlMerged {
    pub socket: Option<String>,
    pub socket_mode: Option<Located<String>>,
    pub socket_group: Option<Located<String>>,
    pub listen: Option<Located<String>>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub token_file: Option<String>,
}

#[derive(Debug, Default)]
pub struct BufferMerged {
    pub durability: Option<DurabilityRaw>,
    pub max_bytes: Option<ByteSize>,
    pub min_free_disk: Option<ByteSize>,
    pub commit_max_records: Option<Located<u32>>,
    pub commit_max_delay: Option<HumanDuration>,
    pub blob_spool_threshold: Option<ByteSize>,
}

impl Merged {
    pub fn merge(&mut self, file: usize, parsed: ParsedFile) {
        let ParsedFile {
            top,
            drivers,
            sinks,
        } = parsed;
        if let Some(g) = top.gateway {
            if let Some(id) = g.id {
                self.gateway_id = Some(located(file, id));
            }
            self.site = g.site.or(self.site.take());
            self.data_dir = g.data_dir.or(self.data_dir.take());
            if let Some(b) = g.board {
                self.board = Some(located(file, b));
            }
        }
        if let Some(b) = top.buffer {
            let m = &mut self.buffer;
            m.durability = b.durability.or(m.durability);
            m.max_bytes = b.max_bytes.or(m.max_bytes);
            m.min_free_disk = b.min_free_disk.or(m.min_free_disk);
            if let Some(v) = b.commit_max_records {
                m.commit_max_records = Some(located(file, v));
            }
            m.commit_max_delay = b.commit_max_delay.or(m.commit_max_delay);
            m.blob_spool_threshold = b.blob_spool_threshold.or(m.blob_spool_threshold);
        }
        if let Some(h) = top.health {
            let m = &mut self.health;
            m.enabled = h.enabled.or(m.enabled);
            if let Some(i) = h.interval {
                m.interval = Some(located(file, i));
            }
            m.stream = h.stream.or(m.stream.take());
            m.priority = h.priority.or(m.priority);
        }
        if let Some(c) = top.control {
            let m = &mut self.control;
            m.socket = c.socket.or(m.socket.take());
            let loc = |v: Option<Spanned<String>>, old: &mut Option<Located<String>>| {
                if let Some(v) = v {
                    *old = Some(located(file, v));
                }
            };
            loc(c.socket_mode, &mut m.socket_mode);
            loc(c.socket_group, &mut m.socket_group);
            loc(c.listen, &mut m.listen);
            m.tls_cert = c.tls_cert.or(m.tls_cert.take());
            m.tls_key = c.tls_key.or(m.tls_key.take());
            m.token_file = c.token_file.or(m.token_file.take());
        }
        if let Some(b) = top.broker {
            self.broker = Some(located(file, b));
        }
        for (name, d) in drivers {
            let l = located(file, name);
            self.drivers.insert(
                l.value.clone(),
                Located {
                    file,
                    span: l.span,
                    value: d,
                },
            );
        }
        for (name, s) in sinks {
            let l = located(file, name);
            self.sinks.insert(
                l.value.clone(),
                Located {
                    file,
                    span: l.span,
                    value: s,
                },
            );
        }
        self.routes
            .extend(top.routes.into_iter().map(|r| located(file, r)));
        self.workflows
            .extend(top.workflows.into_iter().map(|w| located(file, w)));
    }
}

fn located<T>(file: usize, s: Spanned<T>) -> Located<T> {
    Located {
        file,
        span: s.span(),
        value: s.into_inner(),
    }
}

/// A driver kind's own table: deserialised by the driver crate's raw struct, validated by
/// its pure `validate`, errors pointed at the field they name.
fn driver_config<R: serde::de::DeserializeOwned, C>(
    file: &SourceFile,
    name: &Spanned<String>,
    rest: Spanned<DeValue<'_>>,
    validate: impl FnOnce(R) -> Result<C, skygate_drivers::FieldError>,
) -> Result<C, ConfigError> {
    kind_config(file, "driver", name, rest, validate)
}

/// A driver's or sink's kind-specific table, deserialised and validated; errors point at
/// the offending key.
fn kind_config<R: serde::de::DeserializeOwned, C>(
    file: &SourceFile,
    what: &str,
    name: &Spanned<String>,
    rest: Spanned<DeValue<'_>>,
    validate: impl FnOnce(R) -> Result<C, skygate_drivers::FieldError>,
) -> Result<C, ConfigError> {
    let at = rest.clone();
    let raw: R = Deserialize::deserialize(toml::de::ValueDeserializer::from(rest))
        .map_err(|e| file.error_at(e.span(), e.message().to_string()))?;
    validate(raw).map_err(|e| {
        file.error_at(
            Some(span_of_path(&at, &e.path)),
            format!("{what} {}: {}: {}", name.get_ref(), e.path, e.message),
        )
    })
}

/// Parses one file's text into its raw parts.
pub fn parse_file(file: &SourceFile) -> Result<ParsedFile, ConfigError> {
    let de_err = |e: toml::de::Error| file.error_at(e.span(), e.message().to_string());
    let mut root = DeTable::parse(&file.text).map_err(de_err)?;
    let drivers = root.get_mut().remove("drivers");
    let sinks = root.get_mut().remove("sinks");
    let top = TopRaw::deserialize(toml::de::Deserializer::from(root)).map_err(de_err)?;

    let mut parsed = ParsedFile {
        top,
        ..ParsedFile::default()
    };
    for (name, table) in named_tables(file, drivers, "drivers")? {
        let (kind, common, rest) = split_kind::<DriverCommonRaw>(file, &name, table, "driver")?;
        let kind = match kind.get_ref().as_str() {
            "sim" => DriverKindRaw::Sim(Box::new(driver_config(
                file,
                &name,
                rest,
                skygate_drivers::sim::SimConfigRaw::validate,
            )?)),
            "modbus" => DriverKindRaw::Modbus(Box::new(driver_config(
                file,
                &name,
                rest,
                skygate_drivers::modbus::ModbusConfigRaw::validate,
            )?)),
            "serial" => DriverKindRaw::Serial(Box::new(driver_config(
                file,
                &name,
                rest,
                skygate_drivers::serial::SerialConfigRaw::validate,
            )?)),
            "http" => DriverKindRaw::Http(Box::new(driver_config(
                file,
                &name,
                rest,
                skygate_drivers::http::HttpConfigRaw::validate,
            )?)),
            "mqtt" => DriverKindRaw::Mqtt(Box::new(driver_config(
                file,
                &name,
                rest,
                |raw: skygate_drivers::mqtt::MqttConfigRaw| raw.validate(name.get_ref()),
            )?)),
            "files" => DriverKindRaw::Files(Box::new(driver_config(
                file,
                &name,
                rest,
                skygate_drivers::files::FilesConfigRaw::validate,
            )?)),
            _ => return Err(unknown_kind(file, &kind, "driver", &name, DRIVER_KINDS)),
        };
        parsed.drivers.push((name, DriverRaw { common, kind }));
    }
    for (name, table) in named_tables(file, sinks, "sinks")? {
        let (kind, common, rest) = split_kind::<SinkCommonRaw>(file, &name, table, "sink")?;
        let kind = match kind.get_ref().as_str() {
            "bucket" => SinkKindRaw::Bucket(Box::new(kind_config(
                file,
                "sink",
                &name,
                rest,
                skygate_sinks::bucket::BucketSinkRaw::validate,
            )?)),
            "mqtt" => SinkKindRaw::Mqtt(Box::new(kind_config(
                file,
                "sink",
                &name,
                rest,
                skygate_sinks::mqtt::MqttSinkRaw::validate,
            )?)),
            #[cfg(feature = "kafka")]
            "kafka" => SinkKindRaw::Kafka(Box::new(kind_config(
                file,
                "sink",
                &name,
                rest,
                skygate_sinks::kafka::KafkaSinkRaw::validate,
            )?)),
            _ => return Err(unknown_kind(file, &kind, "sink", &name, SINK_KINDS)),
        };
        parsed.sinks.push((name, SinkRaw { common, kind }));
    }
    Ok(parsed)
}

/// Driver kinds this build knows.
pub const DRIVER_KINDS: &[&str] = &["sim", "modbus", "serial", "http", "mqtt", "files"];
/// Sink kinds this build knows.
pub const SINK_KINDS: &[&str] = &[
    "bucket",
    "mqtt",
    #[cfg(feature = "kafka")]
    "kafka",
];

fn unknown_kind(
    file: &SourceFile,
    kind: &Spanned<String>,
    what: &str,
    name: &Spanned<String>,
    known: &[&str],
) -> ConfigError {
    file.error_at(
        Some(kind.span()),
        format!(
            "{what} {}: unknown kind {:?}; known kinds: {}",
            name.get_ref(),
            kind.get_ref(),
            known.join(", ")
        ),
    )
}

/// Named sub-tables, each with its name's span.
type NamedTables<'i> = Vec<(Spanned<String>, Spanned<DeValue<'i>>)>;

/// The sub-tables of `[drivers]` or `[sinks]`, by name, in file order.
fn named_tables<'i>(
    file: &SourceFile,
    section: Option<Spanned<DeValue<'i>>>,
    what: &str,
) -> Result<NamedTables<'i>, ConfigError> {
    let Some(section) = section else {
        return Ok(Vec::new());
    };
    let span = section.span();
    let DeValue::Table(table) = section.into_inner() else {
        return Err(file.error_at(
            Some(span),
            format!("`{what}` must be a table of named {what}"),
        ));
    };
    let mut out = Vec::new();
    for (name, value) in table {
        let name_span = name.span();
        let name_str = name.into_inner().into_owned();
        if !value.get_ref().is_table() {
            return Err(file.error_at(
                Some(value.span()),
                format!("{what}.{name_str} must be a table"),
            ));
        }
        validate_name(&name_str).map_err(|m| {
            file.error_at(Some(name_span.clone()), format!("{what}.{name_str}: {m}"))
        })?;
        out.push((Spanned::new(name_span, name_str), value));
    }
    out.sort_by_key(|(n, _)| n.span().start);
    Ok(out)
}

/// Splits a driver or sink table into its `kind`, the keys common to all kinds, and the
/// rest (the kind's own keys), keeping every span.
fn split_kind<'i, C>(
    file: &SourceFile,
    name: &Spanned<String>,
    table: Spanned<DeValue<'i>>,
    what: &str,
) -> Result<(Spanned<String>, C, Spanned<DeValue<'i>>), ConfigError>
where
    C: serde::de::DeserializeOwned + Default,
{
    let span = table.span();
    let DeValue::Table(mut t) = table.into_inner() else {
        return Err(file.error_at(
            Some(span),
            format!("{what} {} must be a table", name.get_ref()),
        ));
    };
    let kind = match t.remove("kind") {
        Some(k) => {
            let ks = k.span();
            match k.into_inner() {
                DeValue::String(s) => Spanned::new(ks, s.into_owned()),
                _ => {
                    return Err(file.error_at(
                        Some(ks),
                        format!("{what} {}: `kind` must be a string", name.get_ref()),
                    ));
                }
            }
        }
        None => {
            return Err(file.error_at(
                Some(name.span()),
                format!("{what} {}: missing `kind`", name.get_ref()),
            ));
        }
    };
    let common_keys: &[&str] = if what == "driver" {
        &["stream", "priority", "enabled"]
    } else {
        &[
            "enabled",
            "backfill_share",
            "backoff_initial",
            "backoff_max",
            "batch_max_records",
            "batch_max_bytes",
            "batch_max_age",
            "max_bytes_per_sec",
            "dead_letter_stream",
        ]
    };
    let mut common_table = DeTable::new();
    for key in common_keys {
        if let Some((k, v)) = t.remove_entry(*key) {
            common_table.insert(k, v);
        }
    }
    let common = C::deserialize(toml::de::ValueDeserializer::from(Spanned::new(
        span.clone(),
        DeValue::Table(common_table),
    )))
    .map_err(|e| {
        file.error_at(
            e.span(),
            format!("{what} {}: {}", name.get_ref(), e.message()),
        )
    })?;
    Ok((kind, common, Spanned::new(span, DeValue::Table(t))))
}

/// The span of a dotted path (`channels.t.rate_hz`) inside a table, or of the deepest part
/// of it that exists.
fn span_of_path(v: &Spanned<DeValue<'_>>, path: &str) -> Range<usize> {
    let mut cur = v;
    for part in path.split('.') {
        match cur.get_ref().as_table().and_then(|t| t.get(part)) {
            Some(next) => cur = next,
            None => break,
        }
    }
    cur.span()
}

pub use skygate_util::names::validate_name;

/// A validated name (see [`validate_name`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(pub String);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        validate_name(&s).map_err(serde::de::Error::custom)?;
        Ok(Name(s))
    }
}

impl schemars::JsonSchema for Name {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Name".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A name: letters, digits, '-', '_' and '.', not starting with '.', 1 to 128 characters",
            "type": "string",
            "pattern": "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"
        })
    }
}

/// Priority 0 (lowest, evicted first) to 9 (highest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority(pub u8);

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        u8::try_from(v)
            .ok()
            .filter(|p| *p <= 9)
            .map(Priority)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "priority must be 0 (lowest) to 9 (highest), got {v}"
                ))
            })
    }
}

impl schemars::JsonSchema for Priority {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Priority".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Priority 0 (lowest, evicted first when the buffer is full) to 9 (highest)",
            "type": "integer",
            "minimum": 0,
            "maximum": 9
        })
    }
}

pub use skygate_drivers::config::ByteSize;

/// A duration written as a string: `"10ms"`, `"5s"`, `"2m"`, `"1h 30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl schemars::JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        skygate_drivers::config::DurationText::schema_name()
    }

    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        skygate_drivers::config::DurationText::json_schema(g)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {s:?}: {e} (write e.g. \"500ms\", \"10s\", \"5m\")"
                ))
            })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}
