//! A minimal HTTP/1 client for the control API, for the CLI and the TUI: over the Unix
//! socket (the default), or over TCP with TLS and a bearer token.

use std::path::PathBuf;
use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;

use skygate_security::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the agent at {at}: {source} (is it running, and may this user use it?)")]
    Connect { at: String, source: std::io::Error },
    #[error("control API: {0}")]
    Http(#[from] hyper::Error),
    #[error("control API: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("control API answered {status}: {body}")]
    Status { status: u16, body: String },
}

/// Where the agent's control API is.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `https://HOST:PORT` with `tls` (built once: the TUI asks every second), sending
    /// `token`.
    Tls {
        host: String,
        port: u16,
        tls: Arc<rustls::ClientConfig>,
        token: Secret,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "{}", p.display()),
            Self::Tls { host, port, .. } if host.contains(':') => {
                write!(f, "https://[{host}]:{port}")
            }
            Self::Tls { host, port, .. } => write!(f, "https://{host}:{port}"),
        }
    }
}

/// Why a URL cannot name a control API.
#[derive(Debug, thiserror::Error)]
#[error("control URL {url:?}: {why}")]
pub struct UrlError {
    url: String,
    why: &'static str,
}

/// `https://HOST:PORT` (IPv6 in brackets) into host and port.
pub fn parse_url(url: &str) -> Result<(String, u16), UrlError> {
    let bad = |why| UrlError {
        url: url.to_string(),
        why,
    };
    let rest = url.strip_prefix("https://").ok_or_else(|| {
        bad(if url.starts_with("http://") {
            "the remote control API is TLS only: use https://"
        } else {
            "expected https://HOST:PORT"
        })
    })?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6
            .split_once("]:")
            .ok_or_else(|| bad("expected https://[ADDR]:PORT"))?;
        (h, p)
    } else {
        authority
            .rsplit_once(':')
            .ok_or_else(|| bad("the port is missing"))?
    };
    if host.is_empty() {
        return Err(bad("the host is missing"));
    }
    let port = port.parse().map_err(|_| bad("the port is not a number"))?;
    Ok((host.to_string(), port))
}

impl Endpoint {
    async fn send(
        &self,
        method: &str,
        path: &str,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let connect_err = |source| ClientError::Connect {
            at: self.to_string(),
            source,
        };
        let req = hyper::Request::builder().method(method).uri(path);
        let mut sender = match self {
            Self::Unix(p) => {
                let stream = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(connect_err)?;
                handshake(stream).await?
            }
            Self::Tls {
                host, port, tls, ..
            } => {
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| connect_err(std::io::Error::other(e)))?;
                let tcp = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(connect_err)?;
                let stream = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(connect_err)?;
                handshake(stream).await?
            }
        };
        let req = match self {
            Self::Unix(_) => req.header("host", "skygate"),
            Self::Tls { host, token, .. } => req
                .header("host", host.as_str())
                .header("authorization", format!("Bearer {}", token.expose())),
        };
        let res = sender
            .send_request(req.body(Empty::<Bytes>::new())?)
            .await?;
        let status = res.status();
        if !status.is_success() {
            let body = res.into_body().collect().await?.to_bytes();
            return Err(ClientError::Status {
                status: status.as_u16(),
                body: error_text(&body),
            });
        }
        Ok(res)
    }

    /// Sends one request and returns the body of a 2xx answer.
    pub async fn request(&self, method: &str, path: &str) -> Result<Vec<u8>, ClientError> {
        let res = self.send(method, path).await?;
        Ok(res.into_body().collect().await?.to_bytes().to_vec())
    }

    /// Sends a GET and hands each chunk of a streamed 2xx answer to `each` until the
    /// agent ends it or `each` returns false.
    pub async fn stream(
        &self,
        path: &str,
        mut each: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), ClientError> {
        let mut body = self.send("GET", path).await?.into_body();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data()
                && !each(&data)
            {
                break;
            }
        }
        Ok(())
    }
}

/// An HTTP/1 connection over `io`, driven by its own task.
async fn handshake<T>(
    io: T,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, ClientError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// The agent's `{"error": "..."}`, or the body as text.
fn error_text(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_host_and_port_and_refuse_plaintext() {
        assert_eq!(
            parse_url("https://gw-7.example:8443").expect("ok"),
            ("gw-7.example".to_string(), 8443)
        );
        assert_eq!(
            parse_url("https://[::1]:9443/").expect("ok"),
            ("::1".to_string(), 9443)
        );
        let e = parse_url("http://10.0.0.2:8443")
            .expect_err("plaintext")
            .to_string();
        assert!(e.contains("TLS only"), "{e}");
        assert!(parse_url("https://host").is_err());
        assert!(parse_url("https://:80").is_err());
        assert!(parse_url("https://h:port").is_err());
    }
}
