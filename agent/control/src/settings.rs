//! Where the control API listens (`[control]`).

use std::path::PathBuf;

/// Where the control API listens.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlSettings {
    /// The Unix socket; relative paths are under the data directory.
    pub socket: PathBuf,
    /// Permission bits of the socket; never writable by others.
    pub socket_mode: u32,
    /// Group given the socket (the service group whose members may operate the agent).
    pub socket_group: Option<String>,
    /// The optional remote API: TLS only, every request with the bearer token.
    pub tcp: Option<TcpControlSettings>,
}

impl Default for ControlSettings {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(super::SOCKET_NAME),
            socket_mode: 0o660,
            socket_group: None,
            tcp: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TcpControlSettings {
    pub listen: std::net::SocketAddr,
    /// PEM certificate chain and private key of the listener.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// File holding the bearer token (the token itself never sits in the config).
    pub token_file: PathBuf,
}
