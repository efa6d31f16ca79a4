//! Secrets and TLS serving: secrets that never print, and the TLS listener the control
//! API and the embedded broker accept connections on. (TLS client and server
//! configurations from PEM files live with the drivers, `skygate_drivers::tls`, which need
//! them too.)

#![forbid(unsafe_code)]

pub mod listener;
pub mod secret;

pub use listener::{HANDSHAKE_TIMEOUT, TlsListener};
