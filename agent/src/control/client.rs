//! A minimal HTTP/1 client for the control API, for the CLI and the TUI: over the Unix
//! socket (the default), or over TCP with TLS and a bearer token.

use std::path::PathBuf;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;

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
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "{}", p.display()),
        }
    }
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
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "skygate");
        let (mut sender, conn) = match self {
            Self::Unix(p) => {
                let stream = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(connect_err)?;
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?
            }
        };
        tokio::spawn(async move {
            let _ = conn.await;
        });
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

/// The agent's `{"error": "..."}`, or the body as text.
fn error_text(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}
