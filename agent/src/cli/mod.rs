//! The `skygate` command line.
//!
//! Exit codes: 0 success; 1 failure; 2 `buffer fsck` found problems or `audit --verify`
//! found tampering; 3 `errors` shows an active error alarm; 78 (`EX_CONFIG`) invalid
//! configuration.

mod board_cmd;
mod buffer_cmd;
mod control_cmd;
mod fn_cmd;
mod probe_cmd;
mod workflow_cmd;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::logging::LogFormat;
use skygate_buffer::BufferError;
use skygate_config as config;
use skygate_control::client::Endpoint;
use skygate_security::secret::Secret;

pub use board_cmd::run as run_board;
pub use buffer_cmd::run as run_buffer;
pub use control_cmd::run as run_control;

pub use fn_cmd::run as run_fn;
pub use probe_cmd::run as run_probe;
pub use workflow_cmd::run as run_workflow;

/// Default data directory when neither `--data-dir` nor the config names one.
pub const DEFAULT_DATA_DIR: &str = "./skygate-data";

#[derive(Debug, Parser)]
#[command(
    name = "skygate",
    version,
    about = "Skygate edge gateway agent: instruments in, durable buffer, Kafka and buckets out"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent. Without --config it runs the embedded demo: simulated instruments,
    /// local buffer, local bucket directory, no outside service.
    Run {
        /// Main config file; drop-ins are read from conf.d/*.toml beside it.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Data directory (buffer in DIR/buffer, default bucket in DIR/bucket).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "human")]
        log_format: LogFormat,
    },
    /// Validate a config file (and its conf.d drop-ins). Exit 0 when valid, 78 when not,
    /// with FILE:LINE:COL: message on stderr.
    CheckConfig { file: PathBuf },
    /// What the running agent is doing: gateway, uptime, time quality, buffer, ingest.
    Status {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        json: bool,
    },
    /// Sinks of the running agent: state, backlog, oldest unsent; pause, resume, flush.
    Sinks {
        #[command(subcommand)]
        action: Option<SinkAction>,
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        json: bool,
    },
    /// Drivers of the running agent: state, readings, errors, and each channel's last value.
    Drivers {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        json: bool,
    },
    /// Workflows of the running agent: inputs, steps, output, records in and out, errors.
    Workflows {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        json: bool,
    },
    /// Work with workflow files without an agent.
    Workflow {
        #[command(subcommand)]
        command: WorkflowCommand,
    },
    /// Run WASM functions without an agent.
    Fn {
        #[command(subcommand)]
        command: FnCommand,
    },
    /// Live readings as they are ingested (Ctrl-C to stop).
    Tail {
        /// Stream name or glob (`weather*`); all streams when absent.
        stream: Option<String>,
        /// Only this driver's readings.
        #[arg(long)]
        source: Option<String>,
        /// Stop after this many readings.
        #[arg(long, short = 'n')]
        count: Option<u64>,
        #[command(flatten)]
        api: ApiArgs,
        /// NDJSON lines (schema v1, without seq) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Active alarms and recent errors of drivers, sinks, buffer and clock. Exit 3 when an
    /// error alarm is active.
    Errors {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        json: bool,
    },
    /// Read the configuration again and apply what can change while running (drivers,
    /// routes, workflows, heartbeat); like SIGHUP. An invalid configuration changes
    /// nothing.
    Reload {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        json: bool,
    },
    /// Input power as the agent sees it (power-fail line, operator input, a failure in
    /// progress, the last one reported). `fail` and `ok` are the operator's power-fail
    /// input, for UPS daemons on gateways without a power-fail line (NUT `NOTIFYCMD`,
    /// apcupsd `onbattery`/`offbattery`): `fail` returns once intake is stopped and the
    /// buffer is on the disk.
    Power {
        #[command(subcommand)]
        action: Option<PowerAction>,
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long, global = true)]
        json: bool,
    },
    /// The audit trail: operator and agent actions. `--verify` checks the hash chain
    /// (exit 2 when it is broken).
    Audit {
        #[command(flatten)]
        dir: DirArgs,
        #[arg(long)]
        verify: bool,
        #[arg(long, default_value_t = 50)]
        limit: u64,
        #[arg(long)]
        json: bool,
    },
    /// The maintenance screen: links, instruments, buffer and gaps, errors, audit,
    /// workflows; pause, resume, flush and reload with confirmation. Talks only to the
    /// control API.
    Tui {
        #[command(flatten)]
        api: ApiArgs,
        /// Plain ASCII borders, for serial consoles without line-drawing characters.
        #[arg(long)]
        ascii: bool,
    },
    /// Talk to an instrument directly (the agent need not run): check wiring, addresses
    /// and unit ids before writing the config.
    Probe {
        #[command(subcommand)]
        command: ProbeCommand,
    },
    /// Which board this machine is (from the device tree's compatible list, DMI, the CPU
    /// or `gateway.board` in --config), why, and which of the serial ports, watchdog,
    /// LEDs, power-fail input and boot slots its board file names are present.
    Board {
        /// Take `gateway.board` from this config.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        /// Read the machine below this directory instead of `/` (fixtures, images).
        #[arg(long, default_value = "/", hide = true)]
        root: PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) to standard output.
    Man,
    /// Print the config file's JSON Schema (the same as config/skygate.schema.json), for
    /// editors that validate and complete TOML against one.
    ConfigSchema,
    /// Inspect and repair the buffer.
    Buffer {
        #[command(subcommand)]
        command: BufferCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum FnCommand {
    /// Run a function module over NDJSON records (schema 1, as `skygate buffer export` or
    /// `skygate tail --json` write them) from standard input; print what it returns as
    /// NDJSON, each output's lineage naming the input seqs (line numbers for inputs
    /// without a seq). The same ABI and limits as a workflow step. Exit 0; 2 when a batch
    /// failed (reason on stderr; the next batch gets a fresh instance).
    Run {
        file: PathBuf,
        /// Records per call (a function's state carries over between calls).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Time limit per call.
        #[arg(long, default_value = "200ms")]
        timeout: humantime::Duration,
        /// Memory limit (e.g. 64MiB).
        #[arg(long, default_value = "64MiB")]
        max_memory: String,
        /// Output limit per call (e.g. 16MiB).
        #[arg(long, default_value = "16MiB")]
        max_output: String,
        /// Print calls, records and time per record on stderr.
        #[arg(long)]
        stats: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Validate a workflow file: functions, parameters, expressions, units. With
    /// --config, also its sinks and cycles with the config's other workflows. Exit 0 when
    /// valid, 78 when not, with FILE:LINE:COL: message on stderr.
    Check {
        file: PathBuf,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
pub struct DirArgs {
    /// Data directory of the agent (the buffer is DIR/buffer, the control socket
    /// DIR/skygate.sock).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Find the data directory from this config instead.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
}

/// How to reach the running agent: its socket (found like the data directory), or a
/// remote agent's TLS API.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    /// A remote agent's control API, `https://HOST:PORT` (its `control.listen`).
    #[arg(long, env = "SKYGATE_URL", global = true)]
    pub url: Option<String>,
    /// File holding the bearer token for --url.
    #[arg(long, env = "SKYGATE_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) the remote agent's certificate must chain to; default: the
    /// system bundle.
    #[arg(long, env = "SKYGATE_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct SelectArgs {
    #[arg(long)]
    pub stream: Option<String>,
    #[arg(long)]
    pub from_seq: Option<u64>,
    #[arg(long)]
    pub to_seq: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum PowerAction {
    /// Input power is lost: stop intake, commit, checkpoint and flush the buffer.
    Fail,
    /// Input power is back: resume intake and report the outage.
    Ok,
}

#[derive(Debug, Subcommand)]
pub enum SinkAction {
    /// Stop delivering after the batch in flight; the backlog waits in the buffer.
    Pause { name: String },
    /// Deliver again.
    Resume { name: String },
    /// Send what the live lane holds now, without waiting for a fuller batch.
    Flush { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ProbeCommand {
    /// Print what arrives on a serial port for a while (control bytes escaped), then what
    /// it looks like: lines, line endings, NMEA checksums, bytes that suggest a wrong
    /// baud rate. Exit 1 when nothing arrived.
    Serial {
        /// The serial device, e.g. /dev/ttyUSB0.
        #[arg(long)]
        port: String,
        #[arg(long, default_value_t = 9600)]
        baud: u32,
        /// none, even or odd.
        #[arg(long, default_value = "none")]
        parity: String,
        /// How long to listen.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Read registers or bits of one Modbus unit and print them (u16, i16, hex, chars).
    /// Exit 1 with the reason when the device answers an exception or not at all.
    Modbus {
        /// Modbus TCP: HOST or HOST:PORT (default port 502).
        #[arg(long, conflicts_with = "port")]
        host: Option<String>,
        /// Modbus RTU: the serial device, e.g. /dev/ttyUSB0.
        #[arg(long)]
        port: Option<String>,
        #[arg(long, default_value_t = 19200)]
        baud: u32,
        /// none, even or odd.
        #[arg(long, default_value = "even")]
        parity: String,
        #[arg(long, default_value_t = 1)]
        unit: u8,
        /// TABLE:START..END (END exclusive) or TABLE:ADDRESS; TABLE is coil, discrete,
        /// holding or input.
        #[arg(long)]
        read: String,
        /// Milliseconds to wait for the answer.
        #[arg(long, default_value_t = 1000)]
        timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum BufferCommand {
    /// Sizes, seqs, per-stream and per-sink backlog, gaps, status.
    Stats {
        #[command(flatten)]
        dir: DirArgs,
        #[arg(long)]
        json: bool,
    },
    /// List records.
    Inspect {
        #[command(flatten)]
        dir: DirArgs,
        #[command(flatten)]
        select: SelectArgs,
        #[arg(long, default_value_t = 20)]
        limit: u64,
        #[arg(long)]
        json: bool,
    },
    /// Write records as NDJSON (documented schema), blobs inline as base64.
    Export {
        #[command(flatten)]
        dir: DirArgs,
        #[command(flatten)]
        select: SelectArgs,
        /// Output file (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Mark records pending again for a sink, so it sends them once more. The agent must
    /// be stopped.
    Replay {
        #[command(flatten)]
        dir: DirArgs,
        #[command(flatten)]
        select: SelectArgs,
        #[arg(long)]
        sink: String,
    },
    /// Check integrity, seq bookkeeping, spool files and quarantined databases.
    Fsck {
        #[command(flatten)]
        dir: DirArgs,
        #[arg(long)]
        json: bool,
    },
}

/// `skygate completions SHELL`, `skygate man` and `skygate config-schema`: generated from
/// the command and config definitions, so they never drift from what the binary accepts.
pub fn print_docs(cmd: &Command) -> std::io::Result<()> {
    use clap::CommandFactory;
    let mut app = Cli::command();
    let mut out = std::io::stdout().lock();
    match cmd {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut app, "skygate", &mut out);
            Ok(())
        }
        Command::ConfigSchema => {
            let text = serde_json::to_string_pretty(&config::schema::schema())?;
            writeln!(out, "{text}")
        }
        _ => clap_mangen::Man::new(app).render(&mut out),
    }
}

/// Errors of the operator commands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] skygate_control::client::ClientError),
    #[error(transparent)]
    Audit(#[from] skygate_audit::AuditError),
    #[error("unexpected answer from the agent: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Buffer(#[from] BufferError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Url(#[from] skygate_control::client::UrlError),
    #[error("{0}")]
    Usage(String),
    #[error(
        "--url needs --token-file (or SKYGATE_TOKEN_FILE): the remote API wants a bearer token"
    )]
    NoToken,
    #[error(transparent)]
    Secret(#[from] skygate_security::secret::SecretError),
    #[error(transparent)]
    Tls(#[from] skygate_util::tls::TlsError),
}

/// Where the running agent's control API is: `--url`, else its socket (the config's
/// `control.socket`, relative to the data directory, by default `skygate.sock` there).
pub(crate) fn endpoint(a: &ApiArgs) -> Result<Endpoint, CliError> {
    if let Some(url) = &a.url {
        let (host, port) = skygate_control::client::parse_url(url)?;
        let token_file = a.token_file.as_deref().ok_or(CliError::NoToken)?;
        return Ok(Endpoint::Tls {
            host,
            port,
            tls: skygate_util::tls::client_config(a.ca_cert.as_deref())?,
            token: Secret::from_token_file(token_file)?,
        });
    }
    let settings = a.dir.config.as_deref().map(config::load).transpose()?;
    let dir = data_dir_of(&a.dir, settings.as_ref());
    let socket = settings.map_or_else(
        || PathBuf::from(skygate_control::SOCKET_NAME),
        |s| s.control.socket,
    );
    Ok(Endpoint::Unix(dir.join(socket)))
}

/// `skygate tui`.
pub fn run_tui(api: &ApiArgs, ascii: bool) -> Result<(), CliError> {
    crate::tui::run(endpoint(api)?, ascii)?;
    Ok(())
}

/// The agent's data directory: `--data-dir`, else the config's `data_dir`, else the default.
pub(crate) fn data_dir(d: &DirArgs) -> Result<PathBuf, CliError> {
    let settings = match (&d.data_dir, &d.config) {
        (None, Some(c)) => Some(config::load(c)?),
        _ => None,
    };
    Ok(data_dir_of(d, settings.as_ref()))
}

fn data_dir_of(d: &DirArgs, settings: Option<&config::Settings>) -> PathBuf {
    d.data_dir
        .clone()
        .or_else(|| settings.and_then(|s| s.gateway.data_dir.clone()))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}

pub(crate) fn print_json(
    out: &mut impl Write,
    value: &impl serde::Serialize,
) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}
