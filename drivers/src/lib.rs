//! What instruments say, and the drivers that read them.
//!
//! A driver owns its connection and its loop. It turns what the instrument says into
//! [`Reading`]s and hands them to the agent through a bounded [`ReadingSender`], awaiting
//! room when the agent is busy: it never queues on its own and never blocks the async
//! runtime (serial, file and other blocking I/O goes to `spawn_blocking` or a thread).
//!
//! This crate knows nothing of the agent: streams, priorities, the buffer and the sinks are
//! the agent's business. Each driver kind lives in its own module (`sim/`, `modbus/`,
//! `serial/`, `http/`, `mqtt/`, `files/`, and in later work `camera/`),
//! with a `config.rs` holding its raw, `deny_unknown_fields` configuration and a pure
//! validation step returning a [`FieldError`]. A driver reports its instrument's state
//! through [`DriverHealth`].

#![forbid(unsafe_code)]

pub mod channels;
pub mod clock;
pub mod config;
pub mod driver;
pub mod files;
pub mod fs;
pub mod health;
pub mod http;
pub mod modbus;
pub mod mqtt;
pub mod reading;
pub mod serial;
pub mod sim;
pub mod tls;

pub use clock::{Clock, SystemClock};
pub use config::FieldError;
pub use driver::{
    BoxFuture, Committed, Driver, DriverContext, DriverError, Envelope, ReadingSender, SendError,
};
pub use health::{DriverHealth, DriverState, ErrorEvent, ErrorRing, HealthSnapshot};
pub use reading::{Blob, MetaValue, Quality, Reading, TimeQuality, Timestamp, Value};
