//! Skygate: the edge gateway agent.
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
//! - [`pipeline`]: wiring and orderly shutdown.
//! - [`sinks`]: delivery loop and sink kinds.
//! - [`control`]: the control API (Unix socket), metrics and health.
//! - [`cli`]: the `skygate` command line.

// Denied rather than forbidden: loading a cached compiled WASM module is one unsafe call
// (functions/wasm.rs), allowed there alone, with its reasoning.
#![deny(unsafe_code)]

pub mod audit;
pub mod broker;
pub mod buffer;
pub mod cli;
pub mod config;
pub mod control;
pub mod functions;
pub mod logging;
pub mod model;
pub mod pipeline;
pub mod security;
pub mod sinks;
pub mod tui;
pub mod util;
