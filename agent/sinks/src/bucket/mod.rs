//! Object bucket sink, through `object_store`: S3 (and S3-compatible stores), Google Cloud
//! Storage, Azure Blob and a local directory, one implementation with the backend chosen
//! by the URL (see [`config`]).
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
//!
//! In cloud buckets every object carries its content type (a blob's own, e.g.
//! `application/fits`; `application/zstd` for NDJSON) and metadata: `skygate_gateway`,
//! `skygate_stream`, `skygate_seq` (a blob's) or `skygate_seqs` (`first-last`), and
//! `skygate_schema` (underscores: Azure allows only identifier-like metadata names). Objects above `multipart_threshold` go up as multipart uploads of
//! `part_size` parts; the object appears only when the upload completes, which is when
//! the batch counts as delivered.
//!
//! The object store's own retries are kept short (2 retries within 30 s): the delivery
//! loop's backoff is the retry policy, and it shows the link state while it waits.

pub mod config;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Datelike;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, ClientOptions, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    RetryConfig, WriteMultipart,
};
use skygate_drivers::Value;

use super::{Batch, Delivered, Sink, SinkError, SinkFuture};
pub use config::{BucketSinkRaw, BucketSinkSettings, BucketTarget, Cloud, CloudBucket};
use skygate_model::{self as model, BlobPlacement, Gap, NDJSON_SCHEMA_VERSION, Record};

/// Delivers to an object store. The store is opened on first use and again after a
/// failure, so a bucket that is not there yet (an unmounted disk, a network that is still
/// down, credentials not yet provisioned) makes the sink back off while ingest goes on,
/// instead of keeping the agent from starting.
#[derive(Debug)]
pub struct BucketSink {
    target: BucketTarget,
    store: Option<Arc<dyn ObjectStore>>,
    gateway: String,
    prefix: String,
    level: i32,
    multipart_threshold: u64,
    part_size: usize,
}

impl BucketSink {
    pub fn new(s: &BucketSinkSettings, gateway: &str, data_dir: &Path) -> Self {
        Self {
            target: match &s.target {
                BucketTarget::Dir(d) if d.is_relative() => BucketTarget::Dir(data_dir.join(d)),
                t => t.clone(),
            },
            store: None,
            gateway: gateway.to_string(),
            prefix: s.prefix.clone(),
            level: s.compression_level,
            multipart_threshold: s.multipart_threshold,
            part_size: s.part_size as usize,
        }
    }

    /// Where this sink writes, for messages.
    fn location(&self) -> String {
        match &self.target {
            BucketTarget::Dir(d) => d.display().to_string(),
            BucketTarget::Cloud(c) => c.url.clone(),
        }
    }

    async fn open_store(&mut self) -> Result<Arc<dyn ObjectStore>, SinkError> {
        if let Some(s) = &self.store {
            return Ok(s.clone());
        }
        let store: Arc<dyn ObjectStore> = match &self.target {
            BucketTarget::Dir(dir) => {
                let dir = dir.clone();
                let fs = tokio::task::spawn_blocking(move || -> Result<LocalFileSystem, String> {
                    std::fs::create_dir_all(&dir).map_err(|e| {
                        format!("cannot create bucket directory {}: {e}", dir.display())
                    })?;
                    LocalFileSystem::new_with_prefix(&dir)
                        .map_err(|e| format!("bucket directory {}: {e}", dir.display()))
                })
                .await
                .map_err(|e| SinkError::transient("open task", e))?
                .map_err(SinkError::transient_msg)?;
                Arc::new(fs)
            }
            BucketTarget::Cloud(c) => open_cloud(c).await?,
        };
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

    fn cloud(&self) -> bool {
        matches!(self.target, BucketTarget::Cloud(_))
    }

    /// Writes one object: in one request, or as a multipart upload when it is large.
    async fn put(&mut self, store: &Arc<dyn ObjectStore>, o: Object) -> Result<(), SinkError> {
        let path = ObjectPath::parse(&o.key)
            .map_err(|e| SinkError::permanent(format!("key {}", o.key), e))?;
        // The local directory cannot keep attributes; cloud stores can.
        let attributes = if self.cloud() {
            o.attributes
        } else {
            Attributes::new()
        };
        let result = if o.data.len() as u64 > self.multipart_threshold {
            let opts = PutMultipartOptions {
                attributes,
                ..PutMultipartOptions::default()
            };
            // On failure `finish` aborts the upload; parts it could not remove are the
            // store's to expire (a lifecycle rule), never visible as an object.
            async {
                let upload = store.put_multipart_opts(&path, opts).await?;
                let mut w = WriteMultipart::new_with_chunk_size(upload, self.part_size);
                w.put(o.data);
                w.finish().await
            }
            .await
            .map(|_| ())
        } else {
            let opts = PutOptions {
                attributes,
                ..PutOptions::default()
            };
            store
                .put_opts(&path, PutPayload::from(o.data), opts)
                .await
                .map(|_| ())
        };
        result.map_err(|e| {
            // Open afresh next time: credentials may have been rotated, a directory replaced.
            self.store = None;
            classify(&self.location(), e)
        })
    }
}

/// Builds a cloud store from the environment, the credentials file and the settings.
async fn open_cloud(c: &CloudBucket) -> Result<Arc<dyn ObjectStore>, SinkError> {
    skygate_util::tls::install_default_provider();
    let mut options = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(Duration::from_secs(120));
    if c.endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"))
    {
        options = options.with_allow_http(true);
    }
    if let Some(ca) = &c.ca_cert {
        let pem = tokio::fs::read(ca)
            .await
            .map_err(|e| SinkError::permanent(format!("ca_cert {}", ca.display()), e))?;
        let certs = object_store::Certificate::from_pem_bundle(&pem)
            .map_err(|e| SinkError::permanent(format!("ca_cert {}", ca.display()), e))?;
        for cert in certs {
            options = options.with_root_certificate(cert);
        }
    }
    let credentials = match &c.credentials_file {
        Some(p) => read_credentials(p).await?,
        None => Vec::new(),
    };
    let retry = RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(30),
        ..RetryConfig::default()
    };
    let built = match c.cloud {
        Cloud::S3 => {
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_url(&c.url)
                .with_client_options(options)
                .with_retry(retry);
            if let Some(e) = &c.endpoint {
                // S3-compatible stores address buckets by path, not by host name.
                b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
            }
            if let Some(r) = &c.region {
                b = b.with_region(r);
            }
            with_credentials(b, &credentials, |b, k, v| b.with_config(k, v))?
                .build()
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        Cloud::Gcs => {
            let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(&c.url)
                .with_client_options(options)
                .with_retry(retry);
            if let Some(e) = &c.endpoint {
                b = b.with_config(object_store::gcp::GoogleConfigKey::BaseUrl, e);
            }
            with_credentials(b, &credentials, |b, k, v| b.with_config(k, v))?
                .build()
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        Cloud::Azure => {
            let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(&c.url)
                .with_client_options(options)
                .with_retry(retry);
            if let Some(e) = &c.endpoint {
                b = b.with_endpoint(e.clone());
            }
            with_credentials(b, &credentials, |b, k, v| b.with_config(k, v))?
                .build()
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
    };
    built.map_err(|e| SinkError::permanent(format!("bucket {}", c.url), e))
}

/// Applies the credentials file's settings to a store builder; an unknown key is an error
/// naming it (never its value).
fn with_credentials<B, K>(
    mut builder: B,
    credentials: &[(String, String)],
    set: impl Fn(B, K, &str) -> B,
) -> Result<B, SinkError>
where
    K: std::str::FromStr<Err = object_store::Error>,
{
    for (k, v) in credentials {
        let key = k
            .parse()
            .map_err(|e| SinkError::permanent(format!("credentials file: unknown key {k:?}"), e))?;
        builder = set(builder, key, v);
    }
    Ok(builder)
}

/// `key = value` lines (blank lines and `#` comments skipped; values may be quoted).
/// Errors name the file and line, never a value.
async fn read_credentials(path: &Path) -> Result<Vec<(String, String)>, SinkError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| SinkError::permanent(format!("credentials file {}", path.display()), e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(SinkError::permanent_msg(format!(
                "credentials file {}: line {} is not `key = value`",
                path.display(),
                i + 1
            )));
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        out.push((k.trim().to_ascii_lowercase(), v.to_string()));
    }
    Ok(out)
}

/// One object to write.
struct Object {
    key: String,
    data: bytes::Bytes,
    attributes: Attributes,
}

fn attributes(content_type: &str, meta: &[(&'static str, String)]) -> Attributes {
    let mut a = Attributes::new();
    a.insert(Attribute::ContentType, content_type.to_string().into());
    for (k, v) in meta {
        a.insert(Attribute::Metadata((*k).into()), v.clone().into());
    }
    a
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
                    let attributes = attributes(
                        &b.content_type,
                        &[
                            ("skygate_gateway", gateway.to_string()),
                            ("skygate_stream", stream.to_string()),
                            ("skygate_seq", r.seq.to_string()),
                            ("skygate_schema", NDJSON_SCHEMA_VERSION.to_string()),
                        ],
                    );
                    blobs.push(Object {
                        key,
                        data: b.data.clone(),
                        attributes,
                    });
                }
                _ => model::write_ndjson(&mut ndjson, gateway, r, BlobPlacement::Inline),
            }
        }
        let first = recs[0].seq;
        let last = recs[recs.len() - 1].seq;
        let data =
            zstd::bulk::compress(&ndjson, level).map_err(|e| SinkError::permanent("zstd", e))?;
        docs.push(Object {
            key: format!("{dir}/{first:020}-{last:020}.ndjson.zst"),
            data: data.into(),
            attributes: attributes(
                "application/zstd",
                &[
                    ("skygate_gateway", gateway.to_string()),
                    ("skygate_stream", stream.to_string()),
                    ("skygate_seqs", format!("{first}-{last}")),
                    ("skygate_schema", NDJSON_SCHEMA_VERSION.to_string()),
                ],
            ),
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

/// Refusals an operator must fix (credentials, a missing bucket, a bad key) are permanent:
/// still retried, but the link shows as failing at once.
fn classify(location: &str, e: object_store::Error) -> SinkError {
    use object_store::Error as E;
    let context = format!("bucket {location}");
    match e {
        E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::NotFound { .. } => SinkError::permanent(context, e),
        _ => SinkError::transient(context, e),
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
                    .map_err(|e| SinkError::transient("encoder task", e))??;
            let mut bytes = 0;
            for o in objects {
                bytes += (o.data.len() + o.key.len()) as u64;
                self.put(&store, o).await?;
            }
            Ok(Delivered {
                bytes,
                rejected: Vec::new(),
            })
        })
    }

    fn deliver_gap<'a>(&'a mut self, gap: &'a Gap) -> SinkFuture<'a> {
        Box::pin(async move {
            let stream = gap.stream_name("all");
            let key = format!(
                "{}/_gaps/{:020}-{:020}-{stream}.ndjson",
                self.base(),
                gap.first_seq,
                gap.last_seq
            );
            let line = model::gap_ndjson(&self.gateway, gap);
            let store = self.open_store().await?;
            let object = Object {
                key,
                data: line.into(),
                attributes: attributes(
                    "application/x-ndjson",
                    &[
                        ("skygate_gateway", self.gateway.clone()),
                        ("skygate_type", "gap".to_string()),
                    ],
                ),
            };
            self.put(&store, object).await
        })
    }
}
