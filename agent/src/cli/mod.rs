//! The `skygate` command line.
//!
//! Exit codes: 0 success; 1 failure; 2 `buffer fsck` found problems or `audit --verify`
//! found tampering; 3 `errors` shows an active error alarm; 78 (`EX_CONFIG`) invalid
//! configuration.

mod buffer_cmd;
mod control_cmd;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::buffer::BufferError;
use crate::config;
use crate::logging::LogFormat;

pub use buffer_cmd::run as run_buffer;
pub use control_cmd::run as run_control;

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
        dir: DirArgs,
        #[arg(long)]
        json: bool,
    },
    /// Sinks of the running agent: state, backlog, oldest unsent; pause, resume, flush.
    Sinks {
        #[command(subcommand)]
        action: Option<SinkAction>,
        #[command(flatten)]
        dir: DirArgs,
        #[arg(long)]
        json: bool,
    },
    /// Drivers of the running agent: state, readings, errors, and each channel's last value.
    Drivers {
        #[command(flatten)]
        dir: DirArgs,
        #[arg(long)]
        json: bool,
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
        dir: DirArgs,
        /// NDJSON lines (schema v1, without seq) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Active alarms and recent errors of drivers, sinks, buffer and clock. Exit 3 when an
    /// error alarm is active.
    Errors {
        #[command(flatten)]
        dir: DirArgs,
        #[arg(long)]
        json: bool,
    },
    /// Read the configuration again and apply what can change while running (drivers,
    /// routes, heartbeat); like SIGHUP. An invalid configuration changes nothing.
    Reload {
        #[command(flatten)]
        dir: DirArgs,
        #[arg(long)]
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) to standard output.
    Man,
    /// Inspect and repair the buffer.
    Buffer {
        #[command(subcommand)]
        command: BufferCommand,
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
pub enum SinkAction {
    /// Stop delivering after the batch in flight; the backlog waits in the buffer.
    Pause { name: String },
    /// Deliver again.
    Resume { name: String },
    /// Send what the live lane holds now, without waiting for a fuller batch.
    Flush { name: String },
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

/// `skygate completions SHELL` and `skygate man`: generated from the command definitions,
/// so they never drift from what the binary accepts.
pub fn print_docs(cmd: &Command) -> std::io::Result<()> {
    use clap::CommandFactory;
    let mut app = Cli::command();
    let mut out = std::io::stdout().lock();
    match cmd {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut app, "skygate", &mut out);
            Ok(())
        }
        _ => clap_mangen::Man::new(app).render(&mut out),
    }
}

/// Errors of the operator commands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] crate::control::client::ClientError),
    #[error(transparent)]
    Audit(#[from] crate::control::audit::AuditError),
    #[error("unexpected answer from the agent: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Buffer(#[from] BufferError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Where the running agent's control API is: its socket in the data directory.
pub(crate) fn endpoint(d: &DirArgs) -> Result<crate::control::client::Endpoint, CliError> {
    Ok(crate::control::client::Endpoint::Unix(
        crate::control::socket_path(&data_dir(d)?),
    ))
}

/// The agent's data directory: `--data-dir`, else the config's `data_dir`, else the default.
pub(crate) fn data_dir(d: &DirArgs) -> Result<PathBuf, CliError> {
    if let Some(p) = &d.data_dir {
        return Ok(p.clone());
    }
    if let Some(c) = &d.config {
        let s = config::load(c)?;
        if let Some(p) = s.gateway.data_dir {
            return Ok(p);
        }
    }
    Ok(PathBuf::from(DEFAULT_DATA_DIR))
}

pub(crate) fn print_json(
    out: &mut impl Write,
    value: &impl serde::Serialize,
) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}
