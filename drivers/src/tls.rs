//! TLS configurations from PEM files (rustls with ring, so cross-builds need no C
//! toolchain beyond the linker). Errors name the file and what was wrong with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The CA bundle of Debian and most distributions, used when no CA file is given.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn file_err(path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide rustls provider, for TLS clients that libraries build for
/// us (reqwest inside object_store). Idempotent; the first provider installed stays.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Every certificate in a PEM file (at least one).
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// A server configuration: certificate chain and private key (PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| file_err(key, format!("no usable private key: {e}")))?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| file_err(cert, format!("certificate and key do not fit: {e}")))?;
    Ok(Arc::new(cfg))
}

/// A client configuration trusting only the CAs in `ca` (or, without one, the system
/// bundle): for talking to one known peer.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    client_config_roots(&[ca.unwrap_or(Path::new(SYSTEM_CA_BUNDLE))])
}

/// A client configuration trusting the system bundle (where there is one) and a site CA.
pub fn client_config_site(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    client_config_roots(&site_bundles(ca))
}

/// The system bundle (where there is one) and a site CA.
fn site_bundles(ca: Option<&Path>) -> Vec<&Path> {
    let system = Path::new(SYSTEM_CA_BUNDLE);
    let mut bundles = Vec::new();
    if system.exists() {
        bundles.push(system);
    }
    bundles.extend(ca);
    bundles
}

/// A client configuration trusting every CA in the given PEM bundles (for a public feed:
/// the system bundle plus a site CA).
pub fn client_config_roots(bundles: &[&Path]) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(bundles)?)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Like [`client_config_site`], presenting a client certificate (mutual TLS).
pub fn client_config_mtls(
    ca: Option<&Path>,
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let chain = certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| file_err(key, format!("no usable private key: {e}")))?;
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(&site_bundles(ca))?)
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| file_err(cert, format!("client certificate and key do not fit: {e}")))?;
    Ok(Arc::new(cfg))
}

fn roots(bundles: &[&Path]) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for path in bundles {
        for c in certs(path)? {
            roots
                .add(c)
                .map_err(|e| file_err(path, format!("unusable CA certificate: {e}")))?;
        }
    }
    Ok(roots)
}
