//! Configuration: a main TOML file plus sorted `conf.d/*.toml` drop-ins.
//!
//! Two stages. [`raw`] holds serde structs exactly as written (`deny_unknown_fields`,
//! every value that can be wrong kept with its span); [`settings::validate`] is a pure
//! function from those to [`Settings`], which the rest of the agent trusts. Every error
//! names file, line and column ([`ConfigError`] displays as `FILE:LINE:COL: message`).
//!
//! Merging drop-ins: files are read in order (main file, then `conf.d/*.toml` sorted by
//! name). Scalar settings in `[gateway]` and `[buffer]` are overridden by later files;
//! a driver or sink defined again under the same name is replaced whole by the later file;
//! `[[routes]]` accumulate.
//!
//! Driver and sink tables are dispatched on their `kind` by hand rather than through a
//! serde-tagged enum: tagged enums buffer their content and lose the spans that make
//! errors point at the right line.

#![forbid(unsafe_code)]

pub mod raw;
pub mod schema;
pub mod settings;

use std::fmt;
use std::path::{Path, PathBuf};

pub use settings::{
    BrokerSettings, BucketSinkSettings, BufferSettings, ControlSettings, DriverKind,
    DriverSettings, Durability, GatewaySettings, HEALTH_SOURCE, HealthSettings, RouteSettings,
    Settings, SinkCommon, SinkKind, SinkSettings, TcpControlSettings,
};

/// Exit code for a configuration that is not valid (`EX_CONFIG` from sysexits.h). The
/// systemd unit lists it in `RestartPreventExitStatus`.
pub const EXIT_CONFIG: i32 = 78;

/// The config the agent runs on when given none: the embedded demo.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../config/default.toml");
pub const EMBEDDED_DEFAULT_NAME: &str = "<embedded default.toml>";

pub use skygate_util::source::{ConfigError, SourceFile};

/// Where the running configuration came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ConfigSource {
    /// A main file (and its `conf.d/`): a reload reads them again.
    File(PathBuf),
    /// The embedded demo.
    Embedded,
    /// Given as text (tests, benchmarks): nothing to read again.
    #[default]
    Inline,
}

impl ConfigSource {
    /// Reads and validates the configuration again; `None` for inline settings.
    pub fn load(&self) -> Option<Result<Settings, ConfigError>> {
        match self {
            Self::File(p) => Some(load(p)),
            Self::Embedded => Some(load_embedded_default()),
            Self::Inline => None,
        }
    }
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Embedded => f.write_str(EMBEDDED_DEFAULT_NAME),
            Self::Inline => f.write_str("<inline>"),
        }
    }
}

/// Reads the main file and its drop-ins, and validates them into [`Settings`].
pub fn load(main: &Path) -> Result<Settings, ConfigError> {
    let mut s = load_files(main)?;
    s.source = ConfigSource::File(main.to_path_buf());
    Ok(s)
}

fn load_files(main: &Path) -> Result<Settings, ConfigError> {
    let mut files = Vec::new();
    let text = std::fs::read_to_string(main).map_err(|e| ConfigError {
        file: main.to_path_buf(),
        line: 0,
        column: 0,
        message: format!("cannot read config file: {e}"),
    })?;
    files.push(SourceFile {
        path: main.to_path_buf(),
        text,
    });
    for path in drop_ins(main)? {
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            file: path.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read drop-in: {e}"),
        })?;
        files.push(SourceFile { path, text });
    }
    load_sources(files)
}

/// The embedded default (no file on disk).
pub fn load_embedded_default() -> Result<Settings, ConfigError> {
    let read = |p: &Path| {
        EMBEDDED_WORKFLOWS
            .iter()
            .find(|(name, _)| Path::new(name) == p)
            .map(|(_, text)| text.to_string())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    };
    let mut s = load_sources_with(
        vec![SourceFile {
            path: PathBuf::from(EMBEDDED_DEFAULT_NAME),
            text: EMBEDDED_DEFAULT.to_string(),
        }],
        &read,
    )?;
    s.source = ConfigSource::Embedded;
    Ok(s)
}

/// Parses and validates already-read sources, in merge order, then reads the workflow
/// files they name from disk.
pub fn load_sources(files: Vec<SourceFile>) -> Result<Settings, ConfigError> {
    load_sources_with(files, &|p| std::fs::read_to_string(p))
}

/// [`load_sources`], reading workflow files with `read`.
pub fn load_sources_with(
    files: Vec<SourceFile>,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Settings, ConfigError> {
    let mut merged = raw::Merged::default();
    for (idx, file) in files.iter().enumerate() {
        let parsed = raw::parse_file(file)?;
        merged.merge(idx, parsed);
    }
    let mut s = settings::validate(merged, &files)?;
    s.workflows =
        skygate_functions::load(&s.workflow_files, s.sinks.keys().map(String::as_str), read)?;
    Ok(s)
}

/// Workflow files the embedded demo names, built into the binary.
pub const EMBEDDED_WORKFLOWS: &[(&str, &str)] = &[(
    "workflows/weather.yaml",
    include_str!("../../../config/workflows/weather.yaml"),
)];

/// `conf.d/*.toml` beside the main file, sorted by file name.
fn drop_ins(main: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let dir = main.parent().unwrap_or(Path::new(".")).join("conf.d");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ConfigError {
                file: dir,
                line: 0,
                column: 0,
                message: format!("cannot list drop-in directory: {e}"),
            });
        }
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests;
