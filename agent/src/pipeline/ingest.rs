//! Ingest: readings from drivers become records (stream, priority, ingest time, sinks) and
//! are handed to the buffer in batches. A reading whose stream has no route is counted and
//! dropped (a documented filter, not a loss: it never had a seq).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use skygate_drivers::{Reading, Timestamp};
use tokio::sync::mpsc;

use super::{INGEST_BATCH, Route};
use crate::buffer::{Buffer, NewRecord};
use crate::model::Record;

#[derive(Debug, Default)]
pub struct IngestCounters {
    pub readings: AtomicU64,
    pub unrouted: AtomicU64,
    pub unknown_source: AtomicU64,
    /// True while the ingest task runs (it ends when every driver has stopped).
    pub running: std::sync::atomic::AtomicBool,
}

pub(crate) async fn run(
    mut rx: mpsc::Receiver<Reading>,
    buffer: Buffer,
    routes: HashMap<String, Route>,
    counters: std::sync::Arc<IngestCounters>,
) {
    counters.running.store(true, Ordering::Relaxed);
    let mut buf = Vec::with_capacity(INGEST_BATCH);
    while rx.recv_many(&mut buf, INGEST_BATCH).await > 0 {
        let now = Timestamp::now();
        let mut batch = Vec::with_capacity(buf.len());
        for reading in buf.drain(..) {
            let Some(route) = routes.get(&*reading.source) else {
                counters.unknown_source.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if route.sinks == 0 {
                counters.unrouted.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            batch.push(NewRecord {
                record: Record {
                    seq: 0,
                    stream: route.stream.clone(),
                    priority: route.priority,
                    ingest_ts: now,
                    reading,
                },
                sinks: route.sinks,
            });
        }
        counters
            .readings
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if !batch.is_empty() && buffer.append(batch).await.is_err() {
            tracing::error!("buffer closed while readings were arriving");
            break;
        }
    }
    counters.running.store(false, Ordering::Relaxed);
    tracing::debug!("ingest drained");
}
