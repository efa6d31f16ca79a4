//! Schema, connection settings and the record body codec. See the module doc of `buffer`.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use rusqlite::{Connection, OpenFlags};
use std::borrow::Cow;

use skygate_drivers::{Blob, MetaValue, Quality, Reading, TimeQuality, Timestamp, Value};

use super::BufferError;
use super::Durability;
use skygate_model::{Lineage, Record, SeqRef};

pub const SCHEMA_VERSION: i64 = 1;
pub const DB_FILE: &str = "skygate.db";

pub const DDL: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sinks(name TEXT PRIMARY KEY, bit INTEGER NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS records(
    seq INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    priority INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    ingest_ts INTEGER NOT NULL,
    pending INTEGER NOT NULL,
    size INTEGER NOT NULL,
    body BLOB NOT NULL,
    blob TEXT
);
CREATE TABLE IF NOT EXISTS gaps(
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    count INTEGER,
    first_ts INTEGER,
    last_ts INTEGER,
    reason TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    pending INTEGER NOT NULL
);
";

/// Fixed per-row overhead added to a record's accounted size (rowid, columns, b-tree cell).
pub const ROW_OVERHEAD: u64 = 48;

fn db_err(path: &Path) -> impl Fn(rusqlite::Error) -> BufferError + '_ {
    move |source| BufferError::Db {
        path: path.to_path_buf(),
        source,
    }
}

/// WAL size at which the maintenance thread checkpoints.
pub const WAL_CHECKPOINT_BYTES: u64 = 4 * 1024 * 1024;

/// The writer's connection: WAL, synchronous per durability, no checkpoints in commits
/// (the maintenance thread runs them, so a commit never waits for one).
pub fn open_writer(path: &Path, durability: Durability) -> Result<Connection, BufferError> {
    let conn = Connection::open(path).map_err(db_err(path))?;
    let sync = match durability {
        Durability::Power => "FULL",
        Durability::Process => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous={sync};
         PRAGMA journal_size_limit={};
         PRAGMA cache_size=-8192;
         PRAGMA temp_store=MEMORY;
         PRAGMA wal_autocheckpoint=0;
         PRAGMA busy_timeout=5000;",
        WAL_CHECKPOINT_BYTES
    ))
    .map_err(db_err(path))?;
    Ok(conn)
}

/// A connection for reads alongside the writer (WAL readers do not block it).
pub fn open_reader(path: &Path) -> Result<Connection, BufferError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err(path))?;
    conn.execute_batch("PRAGMA query_only=ON; PRAGMA busy_timeout=5000; PRAGMA cache_size=-4096;")
        .map_err(db_err(path))?;
    Ok(conn)
}

/// The maintenance thread's connection: checkpoints only.
pub fn open_checkpointer(path: &Path) -> Result<Connection, BufferError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err(path))?;
    conn.execute_batch("PRAGMA busy_timeout=10000;")
        .map_err(db_err(path))?;
    Ok(conn)
}

/// A read-only connection for operator commands; works while the agent runs.
pub fn open_readonly(path: &Path) -> Result<Connection, BufferError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err(path))?;
    conn.execute_batch("PRAGMA busy_timeout=5000;")
        .map_err(db_err(path))?;
    Ok(conn)
}

/// The `body` column, format v1: a postcard encoding of this struct. Kept apart from the
/// model's serde attributes so the stored format changes only on purpose.
#[derive(serde::Serialize, serde::Deserialize)]
struct BodyV1<'a> {
    source: Cow<'a, str>,
    channel: Cow<'a, str>,
    ts: i64,
    time_quality: u8,
    value: ValueV1<'a>,
    unit: Option<Cow<'a, str>>,
    /// 0 good, 1 uncertain, 2 bad.
    quality: u8,
    reason: Option<Cow<'a, str>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
enum ValueV1<'a> {
    Number(f64),
    Integer(i64),
    Bool(bool),
    Text(Cow<'a, str>),
    Bytes(Bytes),
    Blob {
        content_type: Cow<'a, str>,
        name: Option<Cow<'a, str>>,
        data: Bytes,
    },
    /// A blob with metadata. Appended after v1's variants (postcard numbers variants in
    /// order), so every body written before it still decodes; bodies of blobs without
    /// metadata are written exactly as before.
    BlobMeta {
        content_type: Cow<'a, str>,
        name: Option<Cow<'a, str>>,
        data: Bytes,
        meta: Vec<(Cow<'a, str>, MetaV1<'a>)>,
    },
}

#[derive(serde::Serialize, serde::Deserialize)]
enum MetaV1<'a> {
    Bool(bool),
    Integer(i64),
    Number(f64),
    Text(Cow<'a, str>),
}

/// A derived record's lineage, appended after the body (postcard leaves the rest of the
/// bytes alone, so bodies without it, written before lineage existed, decode as before).
#[derive(serde::Serialize, serde::Deserialize)]
struct LineageV1<'a> {
    workflow: Cow<'a, str>,
    first: SeqRefV1,
    last: SeqRefV1,
    count: u32,
}

#[derive(serde::Serialize, serde::Deserialize)]
enum SeqRefV1 {
    Seq(u64),
    Back(u64),
}

impl From<SeqRef> for SeqRefV1 {
    fn from(r: SeqRef) -> Self {
        match r {
            SeqRef::Seq(s) => Self::Seq(s),
            SeqRef::Back(d) => Self::Back(d),
        }
    }
}

/// Encodes a reading (and a derived record's lineage) for the `body` column. When
/// `spooled`, a blob's bytes are left out (they live in the spool file).
pub fn encode_body(r: &Reading, lineage: Option<&Lineage>, spooled: bool) -> Vec<u8> {
    let value = match &r.value {
        Value::Number(v) => ValueV1::Number(*v),
        Value::Integer(v) => ValueV1::Integer(*v),
        Value::Bool(v) => ValueV1::Bool(*v),
        Value::Text(t) => ValueV1::Text(Cow::Borrowed(t)),
        Value::Bytes(b) => ValueV1::Bytes(b.clone()),
        Value::Blob(b) => {
            let content_type = Cow::Borrowed(b.content_type.as_str());
            let name = b.name.as_deref().map(Cow::Borrowed);
            let data = if spooled {
                Bytes::new()
            } else {
                b.data.clone()
            };
            if b.meta.is_empty() {
                ValueV1::Blob {
                    content_type,
                    name,
                    data,
                }
            } else {
                let meta = b
                    .meta
                    .iter()
                    .map(|(k, v)| {
                        let v = match v {
                            MetaValue::Bool(x) => MetaV1::Bool(*x),
                            MetaValue::Integer(x) => MetaV1::Integer(*x),
                            MetaValue::Number(x) => MetaV1::Number(*x),
                            MetaValue::Text(x) => MetaV1::Text(Cow::Borrowed(x)),
                        };
                        (Cow::Borrowed(k.as_str()), v)
                    })
                    .collect();
                ValueV1::BlobMeta {
                    content_type,
                    name,
                    data,
                    meta,
                }
            }
        }
    };
    let (quality, reason) = match &r.quality {
        Quality::Good => (0, None),
        Quality::Uncertain(why) => (1, Some(Cow::Borrowed(why.as_str()))),
        Quality::Bad(why) => (2, Some(Cow::Borrowed(why.as_str()))),
    };
    let body = BodyV1 {
        source: Cow::Borrowed(&r.source),
        channel: Cow::Borrowed(&r.channel),
        ts: r.ts.as_nanos(),
        time_quality: r.time_quality.to_code(),
        value,
        unit: r.unit.as_deref().map(Cow::Borrowed),
        quality,
        reason,
    };
    // Plain structs, strings and byte buffers: postcard cannot fail on them.
    let mut out = postcard::to_stdvec(&body).unwrap_or_default();
    if let Some(l) = lineage {
        let l = LineageV1 {
            workflow: Cow::Borrowed(&l.workflow),
            first: l.first.into(),
            last: l.last.into(),
            count: l.count,
        };
        out.extend(postcard::to_stdvec(&l).unwrap_or_default());
    }
    out
}

pub fn decode_body(seq: u64, body: &[u8]) -> Result<Reading, BufferError> {
    decode_body_lineage(seq, body).map(|(r, _)| r)
}

/// The reading and, for a derived record, its lineage with both ends absolute.
pub fn decode_body_lineage(
    seq: u64,
    body: &[u8],
) -> Result<(Reading, Option<Lineage>), BufferError> {
    let err = |e: postcard::Error| BufferError::Decode {
        seq,
        message: e.to_string(),
    };
    let (b, rest): (BodyV1<'_>, &[u8]) = postcard::take_from_bytes(body).map_err(err)?;
    let lineage = if rest.is_empty() {
        None
    } else {
        let l: LineageV1<'_> = postcard::from_bytes(rest).map_err(err)?;
        let abs = |r: SeqRefV1| match r {
            SeqRefV1::Seq(s) => SeqRef::Seq(s),
            SeqRefV1::Back(d) => SeqRef::Back(d),
        };
        Some(
            Lineage {
                workflow: Arc::from(&*l.workflow),
                first: abs(l.first),
                last: abs(l.last),
                count: l.count,
            }
            .resolved(seq),
        )
    };
    Ok((decode_reading(b), lineage))
}

fn decode_reading(b: BodyV1<'_>) -> Reading {
    let reason = || b.reason.as_deref().unwrap_or_default().to_string();
    Reading {
        source: Arc::from(&*b.source),
        channel: Arc::from(&*b.channel),
        ts: Timestamp(b.ts),
        time_quality: TimeQuality::from_code(b.time_quality).unwrap_or(TimeQuality::Unsynced),
        value: match b.value {
            ValueV1::Number(v) => Value::Number(v),
            ValueV1::Integer(v) => Value::Integer(v),
            ValueV1::Bool(v) => Value::Bool(v),
            ValueV1::Text(t) => Value::Text(t.into_owned()),
            ValueV1::Bytes(v) => Value::Bytes(v),
            ValueV1::Blob {
                content_type,
                name,
                data,
            } => Value::Blob(Blob::new(content_type, name.map(Cow::into_owned), data)),
            ValueV1::BlobMeta {
                content_type,
                name,
                data,
                meta,
            } => {
                let mut blob = Blob::new(content_type, name.map(Cow::into_owned), data);
                blob.meta = meta
                    .into_iter()
                    .map(|(k, v)| {
                        let v = match v {
                            MetaV1::Bool(x) => MetaValue::Bool(x),
                            MetaV1::Integer(x) => MetaValue::Integer(x),
                            MetaV1::Number(x) => MetaValue::Number(x),
                            MetaV1::Text(x) => MetaValue::Text(x.into_owned()),
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                Value::Blob(blob)
            }
        },
        unit: b.unit.as_deref().map(Arc::from),
        quality: match b.quality {
            0 => Quality::Good,
            1 => Quality::Uncertain(reason()),
            _ => Quality::Bad(reason()),
        },
    }
}

/// What a row that cannot be decoded is delivered as: its raw bytes, marked bad, so a
/// damaged row is seen downstream instead of blocking its sink or vanishing.
fn undecodable(seq: u64, body: Vec<u8>, err: &BufferError) -> Reading {
    tracing::error!(seq, error = %err, "stored record cannot be decoded; delivering it raw with bad quality");
    Reading {
        source: Arc::from("?"),
        channel: Arc::from("?"),
        ts: Timestamp(0),
        time_quality: TimeQuality::Unsynced,
        value: Value::Bytes(Bytes::from(body)),
        unit: None,
        quality: Quality::Bad(format!("stored record could not be decoded: {err}")),
    }
}

/// Row values as read back, before the blob file is joined in.
#[derive(Debug)]
pub struct RowParts {
    pub seq: u64,
    pub stream: String,
    pub priority: u8,
    pub ingest_ts: i64,
    pub body: Vec<u8>,
    pub blob: Option<String>,
}

pub const ROW_COLUMNS: &str = "seq, stream, priority, ingest_ts, body, blob";

pub fn row_parts(row: &rusqlite::Row<'_>) -> rusqlite::Result<RowParts> {
    Ok(RowParts {
        seq: row.get::<_, i64>(0)? as u64,
        stream: row.get(1)?,
        priority: row.get::<_, i64>(2)?.clamp(0, 9) as u8,
        ingest_ts: row.get(3)?,
        body: row.get(4)?,
        blob: row.get(5)?,
    })
}

/// Rebuilds a record, reading a spooled blob from `spool_dir`. A missing or unreadable
/// spool file does not stop delivery: the record goes out with bad quality saying so.
pub fn into_record(p: RowParts, spool_dir: &Path) -> Result<Record, BufferError> {
    let (mut reading, lineage) = match decode_body_lineage(p.seq, &p.body) {
        Ok(r) => r,
        Err(e) => (undecodable(p.seq, p.body, &e), None),
    };
    if let Some(file) = &p.blob {
        match std::fs::read(spool_dir.join(file)) {
            Ok(data) => {
                if let Value::Blob(b) = &mut reading.value {
                    b.data = Bytes::from(data);
                }
            }
            Err(e) => {
                tracing::error!(seq = p.seq, file, error = %e, "spooled blob is missing");
                reading.quality = Quality::Bad(format!("spooled blob lost: {e}"));
            }
        }
    }
    Ok(Record {
        seq: p.seq,
        stream: Arc::from(p.stream.as_str()),
        priority: p.priority,
        ingest_ts: Timestamp(p.ingest_ts),
        reading,
        lineage,
    })
}

pub fn get_meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    use rusqlite::OptionalExtension;
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

pub fn set_meta(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(value: Value, quality: Quality) -> Reading {
        Reading {
            source: Arc::from("mast"),
            channel: Arc::from("wind"),
            ts: Timestamp(1_700_000_000_000_000_001),
            time_quality: TimeQuality::Gps,
            value,
            unit: Some(Arc::from("m/s")),
            quality,
        }
    }

    #[test]
    fn a_lineage_rides_after_the_body_and_comes_back_absolute() {
        let r = reading(Value::Number(2.5), Quality::Good);
        let lineage = Lineage {
            workflow: Arc::from("wx"),
            first: SeqRef::Seq(7),
            last: SeqRef::Back(2),
            count: 3,
        };
        let plain = encode_body(&r, None, false);
        let body = encode_body(&r, Some(&lineage), false);
        assert!(
            body.starts_with(&plain),
            "the body is unchanged, the lineage follows"
        );
        let (back, l) = decode_body_lineage(10, &body).expect("decode");
        assert_eq!(back, r);
        let l = l.expect("lineage");
        assert_eq!(
            (l.first, l.last, l.count),
            (SeqRef::Seq(7), SeqRef::Seq(8), 3)
        );
        assert_eq!(&*l.workflow, "wx");
        assert_eq!(decode_body_lineage(10, &plain).expect("decode").1, None);
        assert!(
            decode_body_lineage(10, &[plain.as_slice(), &[0xff]].concat()).is_err(),
            "a damaged trailer is an error, not a silent drop"
        );
    }

    #[test]
    fn every_value_kind_and_quality_survives_the_body_codec() {
        let blob = Value::Blob(Blob::new(
            "image/jpeg",
            Some("f.jpg".into()),
            Bytes::from_static(b"\xff\xd8jpeg"),
        ));
        let mut fits = Blob::new("application/fits", None, Bytes::from_static(b"SIMPLE"));
        fits.meta = [
            ("OBJECT", MetaValue::Text("M31".into())),
            ("EXPTIME", MetaValue::Number(30.5)),
            ("NAXIS", MetaValue::Integer(2)),
            ("SIMPLE", MetaValue::Bool(true)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (v, q) in [
            (Value::Number(-1.5), Quality::Good),
            (Value::Integer(i64::MIN), Quality::Uncertain("stale".into())),
            (Value::Bool(true), Quality::Bad("exception 2".into())),
            (Value::Text("3d".into()), Quality::Good),
            (
                Value::Bytes(Bytes::from_static(&[0, 1, 255])),
                Quality::Good,
            ),
            (blob, Quality::Good),
            (Value::Blob(fits), Quality::Good),
        ] {
            let r = reading(v, q);
            assert_eq!(
                decode_body(1, &encode_body(&r, None, false)).expect("decode"),
                r
            );
        }
    }

    #[test]
    fn a_spooled_blob_keeps_its_metadata_but_not_its_bytes_in_the_body() {
        let r = reading(
            Value::Blob(Blob::new(
                "application/fits",
                None,
                Bytes::from(vec![7u8; 100_000]),
            )),
            Quality::Good,
        );
        let body = encode_body(&r, None, true);
        assert!(body.len() < 200, "body is {} bytes", body.len());
        match decode_body(1, &body).expect("decode").value {
            Value::Blob(b) => {
                assert_eq!(b.content_type, "application/fits");
                assert!(b.data.is_empty());
            }
            other => panic!("not a blob: {other:?}"),
        }
    }
}
