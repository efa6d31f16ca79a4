//! HTTP feeds: a URL polled on an interval; each new document becomes a blob reading.
//!
//! Invariants:
//! - Conditional requests: the `ETag` and `Last-Modified` of the last document stored are
//!   sent back (`If-None-Match`, `If-Modified-Since`); a `304` stores nothing.
//! - Only a complete `200` body of at most `max_bytes` is stored; anything else (another
//!   status, a timeout, a body cut short or too large) is an error, retried with a
//!   doubling backoff from 5 s up to the interval.
//! - TLS is rustls; the system bundle is trusted, and `ca_cert` as well when given.
//! - Redirects are not followed: a `3xx` is reported with its `Location`, so an operator
//!   updates the URL on purpose rather than the feed moving silently.

pub mod config;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header;
use hyper_util::rt::TokioIo;

pub use config::{HttpConfig, HttpConfigRaw};

use crate::driver::{BoxFuture, Driver, DriverContext, DriverError, doubling_backoff};
use crate::reading::{Blob, Reading, Value};

const FIRST_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct HttpDriver {
    name: Arc<str>,
    config: HttpConfig,
}

impl HttpDriver {
    pub fn new(name: &str, config: &HttpConfig) -> Self {
        Self {
            name: Arc::from(name),
            config: config.clone(),
        }
    }
}

/// The validators of the last stored document.
#[derive(Debug, Default, Clone)]
struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
}

#[derive(Debug)]
enum Fetched {
    Document {
        body: Bytes,
        content_type: Option<String>,
        validators: Validators,
    },
    NotModified,
}

async fn fetch(
    cfg: &HttpConfig,
    tls: Option<&Arc<rustls::ClientConfig>>,
    known: &Validators,
) -> Result<Fetched, String> {
    let tcp = tokio::net::TcpStream::connect((cfg.host.as_str(), cfg.port))
        .await
        .map_err(|e| format!("connect {}:{}: {e}", cfg.host, cfg.port))?;
    let path = cfg
        .url
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let mut req = hyper::Request::get(path)
        .header(
            header::HOST,
            cfg.url
                .authority()
                .map_or(cfg.host.as_str(), |a| a.as_str()),
        )
        .header(
            header::USER_AGENT,
            concat!("skygate/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(e) = &known.etag {
        req = req.header(header::IF_NONE_MATCH, e.as_str());
    }
    if let Some(m) = &known.last_modified {
        req = req.header(header::IF_MODIFIED_SINCE, m.as_str());
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let res = match tls {
        Some(tls) => {
            let name = rustls::pki_types::ServerName::try_from(cfg.host.clone())
                .map_err(|e| format!("server name {}: {e}", cfg.host))?;
            let stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {}: {e}", cfg.host))?;
            send(stream, req).await?
        }
        None => send(tcp, req).await?,
    };
    let status = res.status();
    let header_str = |h: header::HeaderName| {
        res.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    match status.as_u16() {
        200 => {
            let content_type = header_str(header::CONTENT_TYPE);
            let validators = Validators {
                etag: header_str(header::ETAG),
                last_modified: header_str(header::LAST_MODIFIED),
            };
            let body = Limited::new(res.into_body(), cfg.max_bytes)
                .collect()
                .await
                .map_err(|e| format!("body: {e} (max_bytes {})", cfg.max_bytes))?
                .to_bytes();
            Ok(Fetched::Document {
                body,
                content_type,
                validators,
            })
        }
        304 => Ok(Fetched::NotModified),
        301 | 302 | 303 | 307 | 308 => Err(format!(
            "HTTP {status}: moved to {} (redirects are not followed; update the url)",
            header_str(header::LOCATION).unwrap_or_default()
        )),
        _ => Err(format!("HTTP {status}")),
    }
}

async fn send<T>(
    io: T,
    req: hyper::Request<Empty<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP: {e}"))
}

/// The last path segment of the URL, for the blob's name.
fn file_name(cfg: &HttpConfig) -> String {
    cfg.url
        .path()
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or(cfg.host.as_str())
        .to_string()
}

impl Driver for HttpDriver {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<Result<(), DriverError>> {
        Box::pin(async move {
            let cfg = &self.config;
            let tls = if cfg.https {
                Some(
                    crate::tls::client_config_site(cfg.ca_cert.as_deref()).map_err(|e| {
                        DriverError::Config {
                            driver: self.name.to_string(),
                            message: e.to_string(),
                        }
                    })?,
                )
            } else {
                None
            };
            let mut known = Validators::default();
            let mut failures = 0u32;
            let name = file_name(cfg);
            loop {
                let result = tokio::select! {
                    _ = ctx.cancel.cancelled() => return Ok(()),
                    r = tokio::time::timeout(cfg.timeout, fetch(cfg, tls.as_ref(), &known)) => r,
                };
                let wait = match result {
                    Ok(Ok(Fetched::Document {
                        body,
                        content_type,
                        validators,
                    })) => {
                        failures = 0;
                        ctx.health.ok();
                        ctx.health.count("documents", 1);
                        let (ts, tq) = ctx.clock.now();
                        let content_type = cfg
                            .content_type
                            .clone()
                            .or(content_type)
                            .unwrap_or_else(|| "application/octet-stream".into());
                        let reading = Reading::good(
                            self.name.clone(),
                            Arc::from("document"),
                            (ts, tq),
                            Value::Blob(Blob::new(content_type, Some(name.clone()), body)),
                            None,
                        );
                        if ctx.out.send(reading).await.is_err() {
                            return Ok(());
                        }
                        // Remembered only once the document is handed on: a stop in
                        // between fetches it again rather than skipping it.
                        known = validators;
                        cfg.interval
                    }
                    Ok(Ok(Fetched::NotModified)) => {
                        failures = 0;
                        ctx.health.ok();
                        ctx.health.count("not_modified", 1);
                        cfg.interval
                    }
                    Ok(Err(e)) => {
                        failures += 1;
                        ctx.health.count("errors", 1);
                        ctx.health.error(e);
                        doubling_backoff(FIRST_RETRY, failures, cfg.interval)
                    }
                    Err(_) => {
                        failures += 1;
                        ctx.health.count("timeouts", 1);
                        ctx.health
                            .error(format!("no complete answer within {:?}", cfg.timeout));
                        doubling_backoff(FIRST_RETRY, failures, cfg.interval)
                    }
                };
                tokio::select! {
                    _ = ctx.cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        })
    }
}
