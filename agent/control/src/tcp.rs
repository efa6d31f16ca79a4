//! The optional remote control API: TLS over TCP, every request with the bearer token.
//!
//! Invariants: nothing is served in plaintext; a request without the right
//! `Authorization: Bearer <token>` gets 401 before any handler runs (rejected writes are
//! audited); the listener ([`skygate_security::TlsListener`]) bounds handshakes and open
//! connections.

use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;

use super::server::Peer;
use skygate_audit::{Audit, AuditEvent};
use skygate_security::TlsListener;
use skygate_security::secret::Secret;

/// Open remote control connections at most.
pub const MAX_CONNECTIONS: usize = 32;

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Peer::Tcp(*stream.remote_addr())
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
