//! `skygate board`: which board file this machine is (and why), and which of the devices
//! it names are present. Reads the machine only (the agent need not run).

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use skygate_bsp::board::{self, BoardSpec, MachineFacts, Presence, Reason};

use super::{CliError, print_json};
use skygate_config as config;

#[derive(Debug, Serialize)]
struct Report {
    board: BoardSpec,
    chosen_by: Reason,
    machine: MachineFacts,
    found: Vec<Presence>,
}

/// `root` is `/` but for tests, which point it at a fixture tree.
pub fn run(config_file: Option<&Path>, json: bool, root: &Path) -> Result<u8, CliError> {
    let configured = match config_file {
        Some(f) => config::load(f)?.gateway.board,
        None => None,
    };
    let (board, chosen_by, facts) = board::this_machine(root, configured.as_deref())
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let found = board::probe(root, &board);
    let r = Report {
        board,
        chosen_by,
        machine: facts,
        found,
    };
    let mut out = std::io::stdout().lock();
    if json {
        print_json(&mut out, &r)?;
        return Ok(0);
    }
    let b = &r.board;
    writeln!(out, "board:       {} ({})", b.name, b.description)?;
    writeln!(out, "chosen by:   {}", r.chosen_by)?;
    writeln!(
        out,
        "arch:        {}   bootloader: {}",
        b.arch, b.bootloader
    )?;
    if let Some(w) = &b.watchdog {
        writeln!(
            out,
            "watchdog:    fed by {}{}",
            w.owner,
            w.timeout
                .as_deref()
                .map(|t| format!(", timeout {t}"))
                .unwrap_or_default()
        )?;
    }
    if let Some(p) = &b.power_fail {
        let level = if p.active_low { "low" } else { "high" };
        writeln!(
            out,
            "power-fail:  {} line {} (active {level})",
            p.chip, p.line
        )?;
    }
    if let Some(rauc) = &b.rauc {
        writeln!(
            out,
            "rauc:        compatible {}, {} bootloader, slots {}",
            rauc.compatible,
            rauc.bootloader,
            rauc.slots
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    if !r.found.is_empty() {
        writeln!(out, "devices:")?;
        for p in &r.found {
            let mark = if p.present { "found  " } else { "MISSING" };
            writeln!(out, "  {mark}  {:<32} {}", p.what, p.path.display())?;
        }
    }
    Ok(0)
}
