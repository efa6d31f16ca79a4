//! Read-only views over the live agent: drivers with their last values, errors and
//! alarms, and the live reading stream (`skygate tail`).

use std::convert::Infallible;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use skygate_drivers::{DriverState, ErrorEvent, HealthSnapshot, TimeQuality, Timestamp};
use tokio::sync::broadcast::error::RecvError;

use super::server::ControlState;
use super::view::SourceLive;
use skygate_model::{BlobPlacement, rfc3339, write_ndjson};
use skygate_sinks::delivery::LinkState;
use skygate_util::glob::glob_match;

/// One driver as `/v1/drivers` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriverReply {
    pub name: String,
    pub kind: String,
    pub stream: String,
    pub priority: u8,
    pub state: String,
    pub errors: u64,
    pub last_error: Option<String>,
    pub last_ok: Option<String>,
    pub readings: u64,
    pub last_reading: Option<String>,
    pub counters: std::collections::BTreeMap<String, u64>,
    /// Channel -> last value (`value`, `unit`, `quality`, `ts`, ...).
    pub channels: serde_json::Value,
}

/// `GET /v1/workflows`: the installed workflows and their counters.
pub(super) async fn workflows(
    State(s): State<ControlState>,
) -> Json<Vec<skygate_functions::WorkflowStatus>> {
    Json(s.ingest.workflows())
}

pub(super) async fn drivers(State(s): State<ControlState>) -> Json<Vec<DriverReply>> {
    let out = s
        .drivers
        .list()
        .into_iter()
        .map(|d| {
            let h: HealthSnapshot = d.health.snapshot();
            let live: SourceLive = s.ingest.live(&d.name).unwrap_or_default();
            DriverReply {
                kind: d.kind.to_string(),
                stream: d.stream,
                priority: d.priority,
                state: h.state.as_str().to_string(),
                errors: h.errors,
                last_error: h.last_error().map(|e| e.message.clone()),
                last_ok: h.last_ok.map(|t| rfc3339(t.as_nanos())),
                readings: live.readings,
                last_reading: live.last_ts.map(|t| rfc3339(t.as_nanos())),
                counters: h.counters,
                channels: serde_json::to_value(&live.channels).unwrap_or_default(),
                name: d.name,
            }
        })
        .collect();
    Json(out)
}

/// Something wrong now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Alarm {
    pub severity: String,
    /// `driver/<name>`, `sink/<name>`, `buffer`, `clock`, `ingest`.
    pub component: String,
    pub message: String,
}

/// Something that went wrong recently (it may have recovered).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecentError {
    pub ts: String,
    pub component: String,
    pub message: String,
    /// Times seen in a row.
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorsReply {
    pub active: Vec<Alarm>,
    /// Newest first.
    pub recent: Vec<RecentError>,
}

/// Recent errors shown at most.
const RECENT_LIMIT: usize = 200;

pub(super) async fn errors(State(s): State<ControlState>) -> Json<ErrorsReply> {
    let mut active = Vec::new();
    let mut recent: Vec<(Timestamp, RecentError)> = Vec::new();
    let alarm = |severity: &str, component: String, message: String| Alarm {
        severity: severity.into(),
        component,
        message,
    };
    let mut push_recent = |component: &str, events: &mut dyn Iterator<Item = &ErrorEvent>| {
        for e in events {
            recent.push((
                e.ts,
                RecentError {
                    ts: rfc3339(e.ts.as_nanos()),
                    component: component.to_string(),
                    message: e.message.clone(),
                    count: e.count,
                },
            ));
        }
    };
    if !s.ingest.counts().running {
        active.push(alarm("error", "ingest".into(), "not ingesting".into()));
    }
    for reason in s.buffer.status().borrow().reasons.iter() {
        active.push(alarm("error", "buffer".into(), reason.clone()));
    }
    match s.clock.now().1 {
        TimeQuality::Unsynced => active.push(alarm(
            "warning",
            "clock".into(),
            "clock not synchronised: timestamps may be off".into(),
        )),
        TimeQuality::StepDetected => active.push(alarm(
            "warning",
            "clock".into(),
            "wall-clock step detected recently".into(),
        )),
        _ => {}
    }
    for d in s.drivers.list() {
        let h = d.health.snapshot();
        let component = format!("driver/{}", d.name);
        let last = h.last_error().map_or(String::new(), |e| e.message.clone());
        match h.state {
            DriverState::Failing => active.push(alarm("error", component.clone(), last)),
            DriverState::Failed => active.push(alarm(
                "error",
                component.clone(),
                format!("stopped: {last}"),
            )),
            _ => {}
        }
        push_recent(&component, &mut h.recent_errors.iter());
    }
    // Status and control only: the backlog figures (a buffer query) are not needed here.
    for (name, h) in &s.sinks {
        let component = format!("sink/{name}");
        let status = h.status.borrow().clone();
        if h.control.borrow().paused {
            active.push(alarm(
                "warning",
                component.clone(),
                "paused by an operator".into(),
            ));
        } else if matches!(status.state, LinkState::BackingOff | LinkState::Failing) {
            let msg = status.last_error.clone().unwrap_or_default();
            active.push(alarm(
                "error",
                component.clone(),
                format!("{msg} ({} failures in a row)", status.consecutive_failures),
            ));
        }
        push_recent(&component, &mut status.recent_errors.iter());
    }
    recent.sort_by_key(|e| std::cmp::Reverse(e.0));
    recent.truncate(RECENT_LIMIT);
    Json(ErrorsReply {
        active,
        recent: recent.into_iter().map(|(_, e)| e).collect(),
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct TailQuery {
    /// Stream name or glob (`weather.*`); all streams when absent.
    stream: Option<String>,
    /// Only this driver's readings.
    source: Option<String>,
}

/// `GET /v1/tail`: NDJSON lines (schema v1, no `seq`, blobs without bytes) as readings
/// are ingested, until the client goes away or the agent stops. A client too slow to
/// keep up gets `{"lagged_batches": N}` where batches were dropped for it.
pub(super) async fn tail(State(s): State<ControlState>, Query(q): Query<TailQuery>) -> Response {
    let rx = s.ingest.tail();
    let stop = s.shutdown.clone();
    let gateway = s.gateway.clone();
    let stream = futures::stream::unfold(rx, move |mut rx| {
        let (stop, gateway) = (stop.clone(), gateway.clone());
        let (want_stream, want_source) = (q.stream.clone(), q.source.clone());
        async move {
            loop {
                let batch = tokio::select! {
                    _ = stop.cancelled() => return None,
                    b = rx.recv() => b,
                };
                let records = match batch {
                    Ok(r) => r,
                    Err(RecvError::Lagged(n)) => {
                        let line = format!("{{\"lagged_batches\":{n}}}\n");
                        return Some((Ok::<_, Infallible>(Bytes::from(line)), rx));
                    }
                    Err(RecvError::Closed) => return None,
                };
                let mut out = Vec::new();
                for rec in records.iter().filter(|r| {
                    want_stream
                        .as_deref()
                        .is_none_or(|p| glob_match(p, &r.stream))
                        && want_source
                            .as_deref()
                            .is_none_or(|w| w == &*r.reading.source)
                }) {
                    write_ndjson(&mut out, &gateway, rec, BlobPlacement::Omitted);
                }
                if !out.is_empty() {
                    return Some((Ok(Bytes::from(out)), rx));
                }
            }
        }
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}
