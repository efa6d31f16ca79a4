//! The control API: HTTP/JSON on a Unix socket (and, when `control.listen` is set, on
//! TCP with TLS and a bearer token), for the CLI, the TUI and scrapers.
//!
//! Owns nothing but the socket: every answer is read from the components' own handles
//! (buffer metrics and status, sink status and control channels, ingest counters) at
//! request time, so a slow or crashed client cannot disturb data collection.
//!
//! Invariants: the socket is created with `control.socket_mode` (default 0660, never
//! writable by others) at `control.socket` (default `<data-dir>/skygate.sock`); nothing
//! is served on TCP without TLS and the token; error replies are short JSON (`{"error": "..."}`) with no
//! internals, details go to the log; `/healthz` answers while the process runs,
//! `/readyz` only while ingest runs and the buffer writer commits.
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/healthz`, `/readyz` | liveness, readiness |
//! | GET | `/metrics` | Prometheus text format |
//! | GET | `/v1/status` | version, uptime, gateway, board, time quality, buffer, ingest |
//! | GET | `/v1/sinks` | per sink: state, last error, backlog, oldest unsent age |
//! | POST | `/v1/sinks/{name}/pause`, `/resume`, `/flush` | operator actions |
//! | GET | `/v1/buffer` | `buffer stats` of the running agent |
//! | GET | `/v1/drivers` | per driver: state, errors, counters, readings, last value per channel |
//! | GET | `/v1/errors` | active alarms and recent errors of drivers, sinks, buffer, clock |
//! | GET | `/v1/tail?stream=GLOB&source=NAME` | live readings as NDJSON, until the client leaves |
//! | POST | `/v1/reload` | read the configuration again; apply what can change live |
//! | GET | `/v1/power` | power-fail inputs, a failure in progress, the last one reported |
//! | POST | `/v1/power/{fail,ok}` | the operator's power-fail input (UPS daemons); answers once acted on |
//! | GET | `/v1/audit?limit=N` | the newest audit rows |

#![forbid(unsafe_code)]

pub mod client;
mod metrics;
pub mod rates;
mod server;
mod settings;
pub(crate) mod tcp;
pub mod view;
pub mod views;

pub use server::{ControlError, ControlState, Peer, serve};
pub use settings::{ControlSettings, TcpControlSettings};

/// File name of the socket in the data directory.
pub const SOCKET_NAME: &str = "skygate.sock";
