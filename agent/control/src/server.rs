//! The HTTP server on the Unix socket and its handlers.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use axum::{Json, Router};
use serde::Serialize;
use skygate_bsp::Board;
use skygate_drivers::{Clock, Timestamp};
use tokio_util::sync::CancellationToken;

use super::tcp::TokenCheck;
use super::view::{self, ReloadError};
use super::views;
use crate::settings::{ControlSettings, TcpControlSettings};
use skygate_audit::{self as audit, Audit, AuditEvent};
use skygate_buffer::{Buffer, BufferMetrics, buffer_dir, ops};
use skygate_security::TlsListener;
use skygate_security::secret::Secret;
use skygate_sinks::delivery::{SinkHandle, SinkStatus};

/// What the handlers read from. Cheap clones of the components' handles.
#[derive(Debug, Clone)]
pub struct ControlState {
    pub gateway: String,
    pub site: Option<String>,
    pub data_dir: PathBuf,
    pub started: Instant,
    pub buffer: Buffer,
    pub sinks: BTreeMap<String, SinkHandle>,
    pub ingest: Arc<dyn view::Ingest>,
    pub drivers: Arc<dyn view::Drivers>,
    pub reload: Arc<dyn view::Reload>,
    /// Cancelled when the agent stops: long-lived answers (tail) end on it.
    pub shutdown: CancellationToken,
    pub board: Arc<dyn Board>,
    pub clock: Arc<dyn Clock>,
    pub audit: Audit,
    pub rates: super::rates::Rates,
    /// The embedded MQTT broker's counters, when it runs.
    pub broker: Option<std::sync::Arc<skygate_broker::BrokerMetrics>>,
    /// The power-fail component: its status, and the operator's input (UPS daemons).
    pub power: Arc<dyn view::Power>,
}

/// Who is on the other end: on the Unix socket the kernel says which user
/// (SO_PEERCRED); on TCP only the address is known (the token says they may).
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    Unix(Option<u32>),
    Tcp(std::net::SocketAddr),
}

impl Connected<IncomingStream<'_, tokio::net::UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::UnixListener>) -> Self {
        Peer::Unix(stream.io().peer_cred().ok().map(|c| c.uid()))
    }
}

impl Peer {
    /// `uid:1000(obs)`, the name from /etc/passwd where there is one; `token` on TCP.
    /// The file is read off the async runtime.
    pub async fn actor(self) -> String {
        let uid = match self {
            Peer::Unix(Some(uid)) => uid,
            Peer::Unix(None) => return "unknown".into(),
            Peer::Tcp(_) => return "token".into(),
        };
        let name = tokio::task::spawn_blocking(move || {
            let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
            passwd.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.get(2) == Some(&uid.to_string().as_str())).then(|| f[0].to_string())
            })
        })
        .await
        .ok()
        .flatten();
        match name {
            Some(n) => format!("uid:{uid}({n})"),
            None => format!("uid:{uid}"),
        }
    }

    /// `unix-socket` or `tcp:ADDR:PORT`.
    pub fn origin(self) -> String {
        match self {
            Peer::Unix(_) => "unix-socket".into(),
            Peer::Tcp(a) => format!("tcp:{a}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control.socket_group {0:?}: no such group in /etc/group")]
    UnknownGroup(String),
    #[error("control API on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("control API TLS: {0}")]
    Tls(#[from] skygate_util::tls::TlsError),
    #[error("control API token: {0}")]
    Token(#[from] skygate_security::secret::SecretError),
}

/// The gid of a group, from /etc/group.
fn group_id(name: &str) -> Option<u32> {
    std::fs::read_to_string("/etc/group")
        .ok()?
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next()? == name).then_some(())?;
            f.nth(1)?.parse().ok()
        })
}

/// Binds the Unix socket (and the TLS listener when configured) and serves until `stop`
/// is cancelled. The socket path is relative to the data directory unless absolute.
pub async fn serve(
    state: ControlState,
    settings: &ControlSettings,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, ControlError> {
    let socket = state.data_dir.join(&settings.socket);
    let err = |source| ControlError::Socket {
        path: socket.clone(),
        source,
    };
    // A socket file left by a previous run; the buffer lock already guarantees no other
    // agent owns this data directory.
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let listener = tokio::net::UnixListener::bind(&socket).map_err(err)?;
    std::fs::set_permissions(
        &socket,
        std::fs::Permissions::from_mode(settings.socket_mode),
    )
    .map_err(err)?;
    if let Some(g) = &settings.socket_group {
        let gid = group_id(g).ok_or_else(|| ControlError::UnknownGroup(g.clone()))?;
        rustix::fs::chown(&socket, None, Some(rustix::fs::Gid::from_raw(gid)))
            .map_err(|e| err(e.into()))?;
    }
    let tcp = match &settings.tcp {
        Some(t) => Some(bind_tcp(t, &state, stop.clone()).await?),
        None => None,
    };
    let sampler = state
        .rates
        .spawn(state.ingest.clone(), state.sinks.clone(), stop.clone());
    let app = router(state.clone());
    tracing::info!(socket = %socket.display(), mode = format!("{:o}", settings.socket_mode), "control API listening");
    let unix_stop = stop.clone();
    let unix = async move {
        let res = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
            .with_graceful_shutdown(async move { unix_stop.cancelled().await })
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "control API stopped");
        }
        let _ = std::fs::remove_file(&socket);
    };
    Ok(tokio::spawn(async move {
        match tcp {
            Some(tcp) => {
                tokio::join!(unix, tcp);
            }
            None => unix.await,
        }
        let _ = sampler.await;
    }))
}

/// Binds the TLS listener; the returned future serves it until `stop`.
async fn bind_tcp(
    t: &TcpControlSettings,
    state: &ControlState,
    stop: CancellationToken,
) -> Result<impl std::future::Future<Output = ()> + use<>, ControlError> {
    let (cert, key, token_file) = (t.tls_cert.clone(), t.tls_key.clone(), t.token_file.clone());
    let (tls, token) = tokio::task::spawn_blocking(move || {
        Ok::<_, ControlError>((
            skygate_util::tls::server_config(&cert, &key)?,
            Secret::from_token_file(&token_file)?,
        ))
    })
    .await
    .map_err(|e| ControlError::Socket {
        path: t.token_file.clone(),
        source: std::io::Error::other(e),
    })??;
    let tcp = tokio::net::TcpListener::bind(t.listen)
        .await
        .map_err(|source| ControlError::Listen {
            addr: t.listen,
            source,
        })?;
    let listener = TlsListener::spawn(
        tcp,
        tokio_rustls::TlsAcceptor::from(tls),
        stop.clone(),
        "control API",
        super::tcp::MAX_CONNECTIONS,
    );
    let check = TokenCheck {
        token: Arc::new(token),
        audit: state.audit.clone(),
    };
    let app = router(state.clone()).layer(axum::middleware::from_fn_with_state(
        check,
        super::tcp::require_token,
    ));
    tracing::info!(listen = %t.listen, "control API listening on TCP (TLS, bearer token)");
    Ok(async move {
        let res = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "control API (TCP) stopped");
        }
    })
}

pub fn router(state: ControlState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/sinks", get(sinks))
        .route("/v1/sinks/{name}/{action}", post(sink_action))
        .route("/v1/buffer", get(buffer_stats))
        .route("/v1/audit", get(audit_list))
        .route("/v1/drivers", get(views::drivers))
        .route("/v1/workflows", get(views::workflows))
        .route("/v1/errors", get(views::errors))
        .route("/v1/tail", get(views::tail))
        .route("/v1/reload", post(reload))
        .route("/v1/power", get(power_status))
        .route("/v1/power/{state}", post(power_set))
        .with_state(state)
}

/// A short error for the client; the detail stays in the log.
fn error(code: StatusCode, msg: &str) -> Response {
    (code, Json(serde_json::json!({ "error": msg }))).into_response()
}

async fn readyz(State(s): State<ControlState>) -> Response {
    let mut why = Vec::new();
    if !s.ingest.counts().running {
        why.push("not ingesting".to_string());
    }
    if let Some(by) = s.power.failed_by() {
        why.push(format!("input power failed ({by}): intake stopped"));
    }
    match tokio::time::timeout(Duration::from_secs(2), s.buffer.sync()).await {
        Ok(Ok(())) => {}
        _ => why.push("buffer writer not answering".into()),
    }
    let st = s.buffer.status().borrow().clone();
    why.extend(
        st.reasons
            .into_iter()
            .filter(|r| r.starts_with("write failed") || r.starts_with("disk full")),
    );
    if why.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", why.join("; ")),
        )
            .into_response()
    }
}

async fn metrics(State(s): State<ControlState>) -> Response {
    let text = super::metrics::render(&s).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[derive(Serialize)]
struct StatusReply {
    version: &'static str,
    gateway: String,
    site: Option<String>,
    uptime_s: u64,
    board: skygate_bsp::Identity,
    time_quality: &'static str,
    /// Free space on the data directory's filesystem.
    disk_free_bytes: Option<u64>,
    /// Readings accepted per second over the last 10 s.
    ingest_rate_per_s: Option<f64>,
    buffer: BufferReply,
    ingest: IngestReply,
}

#[derive(Serialize)]
struct BufferReply {
    degraded: bool,
    reasons: Vec<String>,
    records: u64,
    bytes: u64,
    last_seq: u64,
    records_evicted: u64,
    gaps: u64,
}

#[derive(Serialize)]
struct IngestReply {
    running: bool,
    readings: u64,
    unrouted: u64,
}

async fn status(State(s): State<ControlState>) -> Json<StatusReply> {
    let m = s.buffer.metrics();
    let st = s.buffer.status().borrow().clone();
    let (board, dir) = (s.board.clone(), s.data_dir.clone());
    let disk_free_bytes = tokio::task::spawn_blocking(move || board.disk_space(&dir))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|d| d.available_bytes);
    Json(StatusReply {
        disk_free_bytes,
        ingest_rate_per_s: s.rates.ingest(),
        version: env!("CARGO_PKG_VERSION"),
        gateway: s.gateway.clone(),
        site: s.site.clone(),
        uptime_s: s.started.elapsed().as_secs(),
        board: s.board.identity(),
        time_quality: s.clock.now().1.as_str(),
        buffer: BufferReply {
            degraded: st.degraded,
            reasons: st.reasons,
            records: BufferMetrics::get(&m.records_stored),
            bytes: BufferMetrics::get(&m.bytes_stored),
            last_seq: *s.buffer.head().borrow(),
            records_evicted: BufferMetrics::get(&m.records_evicted),
            gaps: BufferMetrics::get(&m.gaps_recorded),
        },
        ingest: {
            let c = s.ingest.counts();
            IngestReply {
                running: c.running,
                readings: c.readings,
                unrouted: c.unrouted,
            }
        },
    })
}

/// One sink as the API shows it.
#[derive(Debug, Serialize)]
pub struct SinkReply {
    pub name: String,
    #[serde(flatten)]
    pub status: SinkStatus,
    pub paused: bool,
    pub backlog_records: u64,
    pub backlog_bytes: u64,
    /// Seconds since the oldest record still owed was ingested.
    pub oldest_unsent_age_s: Option<f64>,
    /// Records the peer confirmed per second, over the last 10 s.
    pub drain_rate_per_s: Option<f64>,
}

pub(super) async fn sink_replies(s: &ControlState) -> Vec<SinkReply> {
    let mut out = Vec::new();
    let now = Timestamp::now().as_nanos();
    for (name, h) in &s.sinks {
        let (backlog_records, backlog_bytes) = s.buffer.backlog(h.id);
        let oldest = if backlog_records > 0 {
            s.buffer.oldest_pending(h.id).await.ok().flatten()
        } else {
            None
        };
        out.push(SinkReply {
            name: name.clone(),
            status: h.status.borrow().clone(),
            paused: h.control.borrow().paused,
            backlog_records,
            backlog_bytes,
            oldest_unsent_age_s: oldest.map(|t| (now - t).max(0) as f64 / 1e9),
            drain_rate_per_s: s.rates.sink(name),
        });
    }
    out
}

async fn sinks(State(s): State<ControlState>) -> Json<Vec<SinkReply>> {
    Json(sink_replies(&s).await)
}

async fn sink_action(
    State(s): State<ControlState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    UrlPath((name, action)): UrlPath<(String, String)>,
) -> Response {
    let actor = peer.actor().await;
    let event = |result: &str| AuditEvent {
        actor: actor.clone(),
        origin: peer.origin(),
        action: format!("sink.{action}"),
        target: name.clone(),
        result: result.into(),
        detail: String::new(),
    };
    let Some(h) = s.sinks.get(&name) else {
        s.audit.record(event("rejected: unknown sink")).await;
        return error(StatusCode::NOT_FOUND, "unknown sink");
    };
    match action.as_str() {
        "pause" => h.control.send_modify(|c| c.paused = true),
        "resume" => h.control.send_modify(|c| c.paused = false),
        "flush" => h.control.send_modify(|c| c.flush += 1),
        _ => {
            s.audit.record(event("rejected: unknown action")).await;
            return error(
                StatusCode::NOT_FOUND,
                "unknown action; use pause, resume or flush",
            );
        }
    }
    s.audit.record(event("ok")).await;
    tracing::info!(sink = %name, %action, %actor, "operator action");
    Json(serde_json::json!({ "sink": name, "action": action, "ok": true })).into_response()
}

#[derive(serde::Deserialize)]
struct Limit {
    limit: Option<u64>,
}

async fn audit_list(
    State(s): State<ControlState>,
    axum::extract::Query(q): axum::extract::Query<Limit>,
) -> Response {
    let dir = s.data_dir.clone();
    let limit = q.limit.unwrap_or(100).min(10_000);
    match tokio::task::spawn_blocking(move || audit::list(&dir, limit)).await {
        Ok(Ok(rows)) => Json(rows).into_response(),
        other => {
            tracing::error!(error = ?other.map(|r| r.map(|_| ())), "audit list failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "audit log unavailable")
        }
    }
}

async fn buffer_stats(State(s): State<ControlState>) -> Response {
    let dir = buffer_dir(&s.data_dir);
    match tokio::task::spawn_blocking(move || ops::stats(&dir)).await {
        Ok(Ok(stats)) => Json(stats).into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "buffer stats failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "buffer stats failed")
        }
        Err(e) => {
            tracing::error!(error = %e, "buffer stats task failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "buffer stats failed")
        }
    }
}

/// `GET /v1/power`: the power-fail inputs, a failure in progress, the last one reported.
async fn power_status(State(s): State<ControlState>) -> Response {
    Json(s.power.status()).into_response()
}

/// `POST /v1/power/{fail|ok}`: the operator's power-fail input, for UPS daemons (NUT's
/// `NOTIFYCMD`, apcupsd's `onbattery`) on gateways without a power-fail line. Answers once
/// the agent has acted on it (sealed, or resumed), with the status.
async fn power_set(
    State(s): State<ControlState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    UrlPath(state): UrlPath<String>,
) -> Response {
    use skygate_bsp::power::PowerState;
    let want = match state.as_str() {
        "fail" => PowerState::Failed,
        "ok" => PowerState::Ok,
        _ => return error(StatusCode::NOT_FOUND, "unknown power state; use fail or ok"),
    };
    s.audit
        .record(AuditEvent {
            actor: peer.actor().await,
            origin: peer.origin(),
            action: format!("power.{state}"),
            target: "operator".into(),
            result: "ok".into(),
            detail: String::new(),
        })
        .await;
    match tokio::time::timeout(Duration::from_secs(30), s.power.set_operator(want)).await {
        Ok(Some(st)) => Json(st).into_response(),
        Ok(None) => error(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping"),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "the power component did not act within 30 s",
        ),
    }
}

/// `POST /v1/reload`: read the configuration again and apply what can change live. 422
/// with the configuration error (file, line, column: the operator's own file) when the
/// new configuration does not validate; nothing changes then.
async fn reload(State(s): State<ControlState>, ConnectInfo(peer): ConnectInfo<Peer>) -> Response {
    let answer = s.reload.reload(peer.actor().await, peer.origin());
    match tokio::time::timeout(Duration::from_secs(60), answer).await {
        Ok(Some(Ok(report))) => Json(report).into_response(),
        Ok(Some(Err(e @ ReloadError::Config(_)))) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string())
        }
        Ok(Some(Err(e))) => error(StatusCode::CONFLICT, &e.to_string()),
        Ok(None) => error(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping"),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "reload did not finish within 60 s",
        ),
    }
}
