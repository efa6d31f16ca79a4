//! The optional remote control API: TLS over TCP, every request with the bearer token.
//!
//! Invariants: nothing is served in plaintext; a request without the right
//! `Authorization: Bearer <token>` gets 401 before any handler runs (rejected writes are
//! audited); handshakes run in their own tasks under [`HANDSHAKE_TIMEOUT`], so a slow
//! or hostile client cannot stall others; at most [`MAX_CONNECTIONS`] connections are
//! open, and further ones are closed at once (logged) rather than queued.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::audit::{Audit, AuditEvent};
use super::server::Peer;
use crate::util::secret::Secret;

pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_CONNECTIONS: usize = 32;

/// A TLS stream that holds one of the connection slots until it closes.
#[derive(Debug)]
pub struct Conn {
    tls: TlsStream<TcpStream>,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
}

/// Connections that finished their TLS handshake, for `axum::serve`.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(Conn, SocketAddr)>,
    local: SocketAddr,
}

impl Listener for TlsListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The acceptor stopped (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Peer::Tcp(*stream.remote_addr())
    }
}

impl TlsListener {
    /// Accepts TCP connections until `stop`, handshaking each in its own task; at most
    /// `max` open at once. `what` names the service in logs.
    pub fn spawn(
        listener: TcpListener,
        acceptor: TlsAcceptor,
        stop: CancellationToken,
        what: &'static str,
        max: usize,
    ) -> Self {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(max);
        let slots = Arc::new(Semaphore::new(max));
        tokio::spawn(async move {
            loop {
                let (tcp, remote) = tokio::select! {
                    _ = stop.cancelled() => break,
                    r = listener.accept() => match r {
                        Ok(c) => c,
                        Err(e) => {
                            // Out of file descriptors and the like: wait instead of spinning.
                            tracing::warn!(error = %e, "{what}: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(%remote, "{what}: {max} connections open; refused one");
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((Conn { tls, _slot: slot }, remote)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::info!(%remote, error = %e, "{what}: TLS handshake failed")
                        }
                        Err(_) => tracing::info!(%remote, "{what}: TLS handshake timed out"),
                    }
                });
            }
        });
        Self { ready, local }
    }
}

/// What the token check needs.
#[derive(Debug, Clone)]
pub struct TokenCheck {
    pub token: Arc<Secret>,
    pub audit: Audit,
}

/// Middleware: 401 unless `Authorization: Bearer <token>`.
pub async fn require_token(State(check): State<TokenCheck>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|t| check.token.matches(t));
    if ok {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<Peer>>()
        .map(|c| c.0);
    let origin = peer.map_or_else(|| "tcp".to_string(), Peer::origin);
    tracing::warn!(%origin, path = %req.uri().path(), "control API: request without a valid token refused");
    if req.method() != Method::GET {
        check
            .audit
            .record(AuditEvent {
                actor: "unauthenticated".into(),
                origin,
                action: format!("{} {}", req.method(), req.uri().path()),
                target: String::new(),
                result: "rejected: bad or missing token".into(),
                detail: String::new(),
            })
            .await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(serde_json::json!({ "error": "a valid bearer token is required" })),
    )
        .into_response()
}
