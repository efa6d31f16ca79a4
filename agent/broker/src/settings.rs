//! The embedded broker's settings (`[broker]`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The embedded MQTT broker's listeners, users and limits.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerSettings {
    /// Plain MQTT (instrument LANs where TLS is not possible).
    pub listen: Option<SocketAddr>,
    /// MQTT over TLS, with `tls_cert` and `tls_key`.
    pub tls_listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// User name -> file holding the password (read at start, never logged).
    pub users: BTreeMap<String, PathBuf>,
    pub allow_anonymous: bool,
    pub max_connections: usize,
    pub max_payload: usize,
}
