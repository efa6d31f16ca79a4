//! The `skygate` binary. `anyhow` lives only here; every layer below has its own errors.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use skygate_agent::cli::{self, Cli, Command};
use skygate_agent::config::{self, EXIT_CONFIG};
use skygate_agent::logging;
use skygate_agent::pipeline::ReloadRequest;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    // One TLS provider (ring) for every client, ours and the libraries'.
    skygate_agent::util::tls::install_default_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Workflow { command } => ExitCode::from(cli::run_workflow(command) as u8),
        Command::Fn { command } => ExitCode::from(cli::run_fn(command) as u8),
        Command::CheckConfig { file } => match config::load(&file) {
            Ok(s) => {
                println!(
                    "{}: ok ({} drivers, {} sinks, {} routes, {} workflows)",
                    file.display(),
                    s.drivers.len(),
                    s.sinks.len(),
                    s.routes.len(),
                    s.workflows.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_CONFIG as u8)
            }
        },
        cmd @ (Command::Status { .. }
        | Command::Sinks { .. }
        | Command::Drivers { .. }
        | Command::Workflows { .. }
        | Command::Tail { .. }
        | Command::Errors { .. }
        | Command::Reload { .. }
        | Command::Power { .. }
        | Command::Audit { .. }) => match cli::run_control(cmd) {
            Ok(code) => ExitCode::from(code as u8),
            Err(e) => {
                eprintln!("skygate: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Probe { command } => match cli::run_probe(command) {
            Ok(code) => ExitCode::from(code as u8),
            Err(e) => {
                eprintln!("skygate probe: {e}");
                ExitCode::from(2)
            }
        },
        Command::Board { config, json, root } => {
            match cli::run_board(config.as_deref(), json, &root) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("skygate board: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Tui { api, ascii } => match cli::run_tui(&api, ascii) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("skygate tui: {e}");
                ExitCode::FAILURE
            }
        },
        cmd @ (Command::Completions { .. } | Command::Man | Command::ConfigSchema) => {
            match cli::print_docs(&cmd) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("skygate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Buffer { command } => match cli::run_buffer(command) {
            Ok(code) => ExitCode::from(code as u8),
            Err(e) => {
                eprintln!("skygate buffer: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config: config_path,
            data_dir,
            log_format,
        } => {
            logging::init(log_format);
            let settings = match &config_path {
                Some(p) => config::load(p),
                None => config::load_embedded_default(),
            };
            let settings = match settings {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    tracing::error!(error = %e, "invalid configuration");
                    return ExitCode::from(EXIT_CONFIG as u8);
                }
            };
            let data_dir = data_dir
                .or_else(|| settings.gateway.data_dir.clone())
                .unwrap_or_else(|| PathBuf::from(cli::DEFAULT_DATA_DIR));
            match run(settings, data_dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "skygate failed");
                    eprintln!("skygate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run(settings: config::Settings, data_dir: PathBuf) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("skygate")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        // Handlers first: a SIGTERM that arrives while the buffer opens is held and
        // answered with an orderly stop once start-up is done, instead of killing the
        // process half-started.
        let signals = Signals::install().context("cannot install signal handlers")?;
        let stop = CancellationToken::new();
        let running = skygate_agent::pipeline::start(settings, &data_dir, stop.clone())
            .await
            .with_context(|| format!("cannot start on data directory {}", data_dir.display()))?;
        signals.wait(&running.reload).await;
        running.stop().await;
        Ok(())
    })
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Returns on SIGTERM or SIGINT; SIGHUP asks for a configuration reload.
    async fn wait(mut self, reload: &tokio::sync::mpsc::Sender<ReloadRequest>) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return tracing::info!("SIGTERM: stopping"),
                _ = self.int.recv() => return tracing::info!("SIGINT: stopping"),
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let req = ReloadRequest {
                        actor: "signal".into(),
                        origin: "SIGHUP".into(),
                        reply: None,
                    };
                    if reload.try_send(req).is_err() {
                        tracing::warn!("SIGHUP: reloads already queued; this one is dropped");
                    }
                }
            }
        }
    }
}
