//! Skygate: the edge gateway agent, the `skygate` binary (CLI, TUI, `main`) over the
//! component crates next to this one (`agent/README.md` draws how they depend on each
//! other).
//!
//! ```text
//! instrument -> driver task -> Reading -> [bounded channel] -> ingest (stream, priority)
//!   -> buffer (group commit, seq) -> per-sink delivery (live first, backfill) -> ack
//! ```
//!
//! - [`config`]: TOML + drop-ins -> validated [`config::Settings`].
//! - [`model`]: [`model::Record`] and the NDJSON schema.
//! - [`broker`]: the embedded MQTT broker for the instrument LAN.
//! - [`buffer`]: the durable store-and-forward log and its invariants.
//! - [`functions`]: workflows (YAML function chains, sandboxed WASM).
//! - [`pipeline`]: wiring and orderly shutdown.
//! - [`sinks`]: delivery loop and sink kinds.
//! - [`control`]: the control API (Unix socket, TLS), metrics and health.
//! - [`audit`], [`security`], [`util`]: the audit trail; secrets and the TLS listener;
//!   small shared pieces (durable writes, backoff, globs, names, source-positioned errors).
//! - [`cli`]: the `skygate` command line; [`tui`]: the service terminal UI; [`logging`]:
//!   human (colour on a terminal only) or JSON log lines.
//!
//! The components are re-exported under their old module paths, so the end-to-end tests,
//! the benchmarks and the fuzz targets name one crate.

#![forbid(unsafe_code)]

pub use skygate_audit as audit;
pub use skygate_broker as broker;
pub use skygate_buffer as buffer;
pub use skygate_config as config;
pub use skygate_control as control;
pub use skygate_functions as functions;
pub use skygate_model as model;
pub use skygate_pipeline as pipeline;
pub use skygate_security as security;
pub use skygate_sinks as sinks;
pub use skygate_util as util;

pub mod cli;
pub mod logging;
pub mod tui;
