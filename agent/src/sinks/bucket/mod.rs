//! Object bucket sink, through `object_store`. This build has the local-directory backend
//! (`LocalFileSystem`); the cloud backends plug into the same code.
//!
//! Each batch is split per stream and UTC day of the record timestamp; each part becomes
//! one zstd-compressed NDJSON object (schema in `model`) under a deterministic key:
//!
//! ```text
//! <prefix>/<gateway>/<stream>/<yyyy>/<mm>/<dd>/<first_seq>-<last_seq>.ndjson.zst
//! <prefix>/<gateway>/<stream>/<yyyy>/<mm>/<dd>/blobs/<seq>.<ext>        (blob payloads)
//! <prefix>/<gateway>/_gaps/<first_seq>-<last_seq>-<stream>.ndjson        (gap markers)
//! ```
//! Seqs in keys are zero-padded to 20 digits so keys sort in seq order. A retried batch
//! produces the same keys and overwrites, never duplicates. Blob objects are written
//! before the NDJSON object that names them, so a reader never finds a dangling key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Datelike;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use skygate_drivers::Value;

use super::{Batch, Delivered, Sink, SinkError, SinkFuture};
use crate::config::BucketSinkSettings;
use crate::model::{self, BlobPlacement, Gap, Record};

/// Delivers to an object store. The store is opened on first use and again after a
/// failure to open, so a bucket that is not there yet (an unmounted disk, a directory not
/// yet created) makes the sink back off while ingest goes on, instead of keeping the
/// agent from starting.
#[derive(Debug)]
pub struct BucketSink {
    dir: PathBuf,
    store: Option<Arc<dyn ObjectStore>>,
    gateway: String,
    prefix: String,
    level: i32,
}

impl BucketSink {
    pub fn new(s: &BucketSinkSettings, gateway: &str, data_dir: &Path) -> Self {
        Self {
            dir: if s.dir.is_absolute() {
                s.dir.clone()
            } else {
                data_dir.join(&s.dir)
            },
            store: None,
            gateway: gateway.to_string(),
            prefix: s.prefix.clone(),
            level: s.compression_level,
        }
    }

    async fn open_store(&mut self) -> Result<Arc<dyn ObjectStore>, SinkError> {
        if let Some(s) = &self.store {
            return Ok(s.clone());
        }
        let dir = self.dir.clone();
        let store = tokio::task::spawn_blocking(move || -> Result<LocalFileSystem, String> {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create bucket directory {}: {e}", dir.display()))?;
            LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| format!("bucket directory {}: {e}", dir.display()))
        })
        .await
        .map_err(|e| SinkError::Transient(format!("open task: {e}")))?
        .map_err(SinkError::Transient)?;
        let store: Arc<dyn ObjectStore> = Arc::new(store);
        self.store = Some(store.clone());
        Ok(store)
    }

    fn base(&self) -> String {
        if self.prefix.is_empty() {
            self.gateway.clone()
        } else {
            format!("{}/{}", self.prefix, self.gateway)
        }
    }
}

/// One object to write.
struct Object {
    key: String,
    data: bytes::Bytes,
}

/// A UTC calendar day: (year, month, day).
type Day = (i32, u32, u32);

/// Blob objects first, then the NDJSON objects that name them.
fn encode_batch(
    batch: &[Record],
    base: &str,
    gateway: &str,
    level: i32,
) -> Result<Vec<Object>, SinkError> {
    let mut groups: BTreeMap<(&str, Day), Vec<&Record>> = BTreeMap::new();
    for r in batch {
        let day = chrono::DateTime::from_timestamp_nanos(r.reading.ts.as_nanos());
        groups
            .entry((&*r.stream, (day.year(), day.month(), day.day())))
            .or_default()
            .push(r);
    }
    let mut blobs = Vec::new();
    let mut docs = Vec::new();
    for ((stream, (y, m, d)), recs) in groups {
        let dir = format!("{base}/{stream}/{y:04}/{m:02}/{d:02}");
        let mut ndjson = Vec::with_capacity(recs.len() * 256);
        for r in &recs {
            match &r.reading.value {
                Value::Blob(b) => {
                    let key = format!("{dir}/blobs/{:020}.{}", r.seq, extension(&b.content_type));
                    model::write_ndjson(&mut ndjson, gateway, r, BlobPlacement::Key(&key));
                    blobs.push(Object {
                        key,
                        data: b.data.clone(),
                    });
                }
                _ => model::write_ndjson(&mut ndjson, gateway, r, BlobPlacement::Inline),
            }
        }
        let first = recs[0].seq;
        let last = recs[recs.len() - 1].seq;
        let data = zstd::bulk::compress(&ndjson, level)
            .map_err(|e| SinkError::Permanent(format!("zstd: {e}")))?;
        docs.push(Object {
            key: format!("{dir}/{first:020}-{last:020}.ndjson.zst"),
            data: data.into(),
        });
    }
    blobs.extend(docs);
    Ok(blobs)
}

fn extension(content_type: &str) -> &'static str {
    match content_type {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "application/fits" | "image/fits" => "fits",
        "text/csv" => "csv",
        "application/json" => "json",
        "text/plain" => "txt",
        _ => "bin",
    }
}

fn classify(e: object_store::Error) -> SinkError {
    match e {
        object_store::Error::InvalidPath { .. } | object_store::Error::NotSupported { .. } => {
            SinkError::Permanent(e.to_string())
        }
        other => SinkError::Transient(other.to_string()),
    }
}

impl Sink for BucketSink {
    fn deliver(&mut self, batch: Batch) -> SinkFuture<'_, Delivered> {
        Box::pin(async move {
            let store = self.open_store().await?;
            let base = self.base();
            let gateway = self.gateway.clone();
            let level = self.level;
            // Serialising and compressing a batch is CPU work: keep it off the runtime.
            let objects =
                tokio::task::spawn_blocking(move || encode_batch(&batch, &base, &gateway, level))
                    .await
                    .map_err(|e| SinkError::Transient(format!("encoder task: {e}")))??;
            let mut bytes = 0;
            for o in objects {
                let path = ObjectPath::parse(&o.key)
                    .map_err(|e| SinkError::Permanent(format!("key {}: {e}", o.key)))?;
                bytes += (o.data.len() + o.key.len()) as u64;
                if let Err(e) = store.put(&path, PutPayload::from(o.data)).await {
                    // Open afresh next time: the directory may have been replaced.
                    self.store = None;
                    return Err(classify(e));
                }
            }
            Ok(Delivered {
                bytes,
                rejected: Vec::new(),
            })
        })
    }

    fn deliver_gap<'a>(&'a mut self, gap: &'a Gap) -> SinkFuture<'a> {
        Box::pin(async move {
            let stream = if gap.stream == "*" {
                "all"
            } else {
                gap.stream.as_str()
            };
            let key = format!(
                "{}/_gaps/{:020}-{:020}-{stream}.ndjson",
                self.base(),
                gap.first_seq,
                gap.last_seq
            );
            let path = ObjectPath::parse(&key)
                .map_err(|e| SinkError::Permanent(format!("key {key}: {e}")))?;
            let line = model::gap_ndjson(&self.gateway, gap);
            let store = self.open_store().await?;
            if let Err(e) = store.put(&path, PutPayload::from(line)).await {
                self.store = None;
                return Err(classify(e));
            }
            Ok(())
        })
    }
}
