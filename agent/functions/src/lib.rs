//! Local functions: workflows defined in YAML, chaining built-in and WASM functions, run
//! on the data path between ingest and the buffer's writer.
//!
//! - [`spec`]: workflow files, parsed and validated with `FILE:LINE:COL` errors.
//! - [`builtins`]: the functions (scale, convert, rename, tag, filter, derive, deadband,
//!   alarm, window, downsample), on [`expr`] (evalexpr) and [`units`].
//! - `wasm` (cargo feature `wasm`): user functions on wasmtime, fenced by time, memory
//!   and output limits; the ABI lives in the `skygate-fn` crate (`sdk/`).
//! - [`engine`]: the running set, owned by the ingest task; lineage; reload hand-over.
//!
//! Invariants:
//! - A workflow never replaces data: its inputs are appended as they came (stored if their
//!   own stream is routed anywhere, numbered in any case) and its outputs are new records
//!   on the workflow's output stream, in the same append, so both commit together.
//! - Every output names its inputs (`Record::lineage`).
//! - A step that cannot use a value passes the record on and counts an error; a WASM call
//!   that fails sends its batch to dead letters with the reason; no function error drops
//!   data.
//! - Workflows are loaded with the configuration: a reload (SIGHUP, `skygate reload`, or a
//!   workflow file changing on disk) that does not validate changes nothing.

pub mod builtins;
pub mod engine;
pub mod expr;
pub mod spec;
pub mod units;
#[cfg(feature = "wasm")]
pub mod wasm;

use std::path::{Path, PathBuf};

pub use engine::{Engine, WorkflowStatus, WorkflowsView};
pub use spec::WorkflowSpec;

use skygate_util::source::ConfigError;

/// Resolves each WASM step's module against the workflow file's directory, reads it and
/// checks it (valid WebAssembly with the ABI's exports), recording its SHA-256.
fn resolve_modules(w: &mut WorkflowSpec) -> Result<(), ConfigError> {
    let base = w.file.parent().map(Path::to_path_buf).unwrap_or_default();
    let file = w.file.clone();
    for step in &mut w.steps {
        if let spec::StepSpec::Wasm {
            module,
            module_at,
            sha256,
            ..
        } = step
        {
            let err = |m: String| ConfigError {
                file: file.clone(),
                line: module_at.line,
                column: module_at.column,
                message: m,
            };
            *module = base.join(&*module);
            let bytes = std::fs::read(&*module)
                .map_err(|e| err(format!("cannot read wasm module {}: {e}", module.display())))?;
            #[cfg(feature = "wasm")]
            {
                *sha256 = wasm::check_module(&bytes)
                    .map_err(|e| err(format!("wasm module {}: {e}", module.display())))?;
            }
            #[cfg(not(feature = "wasm"))]
            {
                let _ = (bytes, sha256);
                return Err(err(
                    "this build of skygate has no WASM runtime (cargo feature `wasm`)".into(),
                ));
            }
        }
    }
    Ok(())
}

/// Files a running agent watches for changes: workflow files and their WASM modules.
pub fn watched_files(files: &[WorkflowFile], specs: &[WorkflowSpec]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    for w in specs {
        for s in &w.steps {
            if let spec::StepSpec::Wasm { module, .. } = s {
                out.push(module.clone());
            }
        }
    }
    out
}

/// A workflow file as the configuration names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowFile {
    /// Resolved against the directory of the config file that names it.
    pub path: PathBuf,
    /// Where the config names it, for errors reading it.
    pub named_at: (PathBuf, usize, usize),
}

/// Reads and validates the named workflow files, then checks them as a set against the
/// configured sinks. `read` reads a file (the embedded demo reads from the binary).
pub fn load<'a>(
    files: &[WorkflowFile],
    sinks: impl IntoIterator<Item = &'a str> + Clone,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Vec<WorkflowSpec>, ConfigError> {
    let mut specs = Vec::with_capacity(files.len());
    for f in files {
        let text = read(&f.path).map_err(|e| ConfigError {
            file: f.named_at.0.clone(),
            line: f.named_at.1,
            column: f.named_at.2,
            message: format!("cannot read workflow file {}: {e}", f.path.display()),
        })?;
        let mut w = spec::parse(&f.path, &text)?;
        resolve_modules(&mut w)?;
        specs.push(w);
    }
    if specs.len() > engine::MAX_WORKFLOWS {
        let f = &files[engine::MAX_WORKFLOWS];
        return Err(ConfigError {
            file: f.named_at.0.clone(),
            line: f.named_at.1,
            column: f.named_at.2,
            message: format!("at most {} workflows", engine::MAX_WORKFLOWS),
        });
    }
    spec::check_set(&specs, sinks)?;
    Ok(specs)
}
