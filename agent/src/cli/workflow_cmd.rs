//! `skygate workflow check`: validate a workflow file without an agent.

use std::collections::BTreeSet;

use super::WorkflowCommand;
use skygate_config::{self as config, ConfigError, EXIT_CONFIG};
use skygate_functions::spec;

/// Runs a `workflow` subcommand; returns the exit code.
pub fn run(cmd: WorkflowCommand) -> i32 {
    match cmd {
        WorkflowCommand::Check { file, config } => match check(&file, config.as_deref()) {
            Ok(summary) => {
                println!("{}: ok ({summary})", file.display());
                0
            }
            Err(e) => {
                eprintln!("{e}");
                EXIT_CONFIG
            }
        },
    }
}

fn check(file: &std::path::Path, config: Option<&std::path::Path>) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        line: 0,
        column: 0,
        message: format!("cannot read workflow file: {e}"),
    })?;
    let w = spec::parse(file, &text)?;
    let summary = format!(
        "workflow {}: {} -> {} -> {}",
        w.name,
        w.input.join(","),
        w.steps
            .iter()
            .map(spec::StepSpec::function)
            .collect::<Vec<_>>()
            .join(" -> "),
        w.output_stream
    );
    match config {
        None => {
            if !w.sinks.is_empty() {
                // Without a config the sinks cannot be checked: say so rather than pass them.
                return Ok(format!("{summary}; sinks not checked: no --config"));
            }
            Ok(summary)
        }
        Some(c) => {
            let settings = config::load(c)?;
            // The config's workflows with this file in place of its older self, if named.
            let same = |p: &std::path::Path| {
                std::fs::canonicalize(p).ok() == std::fs::canonicalize(file).ok()
            };
            let mut set: Vec<_> = settings
                .workflows
                .into_iter()
                .filter(|o| !same(&o.file))
                .collect();
            set.push(w);
            let sinks: BTreeSet<&str> = settings.sinks.keys().map(String::as_str).collect();
            spec::check_set(&set, sinks.iter().copied())?;
            Ok(format!(
                "{summary}; sinks and cycles checked against {}",
                c.display()
            ))
        }
    }
}
