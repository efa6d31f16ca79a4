//! Instrument files: a watched directory whose finished files become records — a FITS
//! frame or any file as one blob record (FITS primary-header keywords as its metadata),
//! a CSV file as one reading per column per row.
//!
//! Invariants:
//! - A file is read only once complete: unchanged (size and modification time) for
//!   `settle`, or closed after writing (inotify `IN_CLOSE_WRITE`) or renamed into the
//!   directory (`IN_MOVED_TO`, the write-then-rename convention) and unchanged for
//!   [`QUIET_AFTER_CLOSE`] since. A FITS file is trusted to a close only when it is as
//!   long as its primary header says (header, plus BITPIX x NAXISn data in 2880-byte
//!   blocks); otherwise it waits the full `settle`, and a file still short then is stored
//!   with `uncertain` quality (truncated?) rather than dropped.
//! - The policy (`keep`, `move`, `delete`) is applied only after the file's last reading
//!   is committed to the buffer. If the stream is routed nowhere, or the agent stops
//!   before the commit, the file is left untouched (and read again on the next start).
//! - `keep` remembers ingested files by name, size and modification time in a ledger in
//!   the driver's state directory, so a restart does not ingest them again; a file
//!   rewritten in place is ingested again. Ledger lines of files that are gone are
//!   dropped at start.
//! - inotify is the fast path, not the only one: the directory is also listed at start,
//!   when the event queue overflowed, and every [`RESCAN_EVERY`], so a missed event
//!   delays a file, never loses it. A missing directory is reported and waited for.
//! - A file that cannot be read, is larger than `max_bytes`, or is not valid for its
//!   format (CSV that is not text) is reported and left alone until it changes.
//! - Blocking filesystem work runs on the blocking pool, never on the runtime.

pub mod config;
pub mod fits;
pub mod sim;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

pub use config::{After, FileFormat, FilesConfig, FilesConfigRaw};

use crate::driver::{BoxFuture, Committed, Driver, DriverContext, DriverError, SendError};
use crate::reading::{Blob, MetaValue, Quality, Reading, TimeQuality, Timestamp, Value};

/// How long a file closed after writing must stay unchanged before it is read.
pub const QUIET_AFTER_CLOSE: Duration = Duration::from_millis(500);
/// A full listing of the directory at least this often.
pub const RESCAN_EVERY: Duration = Duration::from_secs(30);
/// inotify events queued before the driver falls back to listing the directory.
const EVENT_QUEUE: usize = 1024;
/// How long a stopping driver still waits for a file's commit.
const COMMIT_GRACE: Duration = Duration::from_secs(2);
const LEDGER: &str = "ingested";

#[derive(Debug)]
pub struct FilesDriver {
    name: Arc<str>,
    config: FilesConfig,
    /// Where the driver keeps its ledger (`<data-dir>/drivers/<name>`).
    state_dir: PathBuf,
}

impl FilesDriver {
    pub fn new(name: &str, config: &FilesConfig, state_dir: PathBuf) -> Self {
        Self {
            name: Arc::from(name),
            config: config.clone(),
            state_dir,
        }
    }
}

/// A file seen but not yet complete.
#[derive(Debug, Clone)]
struct Candidate {
    size: u64,
    mtime: SystemTime,
    changed_at: Instant,
    closed_at: Option<Instant>,
}

/// What a file is known by: a rewritten file is a new one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FileId {
    name: String,
    size: u64,
    mtime_ns: i64,
}

impl FileId {
    fn of(path: &Path, size: u64, mtime: SystemTime) -> Self {
        Self {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            size,
            mtime_ns: Timestamp::from_system_time(mtime).as_nanos(),
        }
    }
}

enum Outcome {
    Stored,
    NotRouted,
    Failed(String),
    Stopped,
}

impl Driver for FilesDriver {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<Result<(), DriverError>> {
        Box::pin(async move { self.watch(&ctx).await })
    }
}

impl FilesDriver {
    async fn watch(&self, ctx: &DriverContext) -> Result<(), DriverError> {
        let cfg = &self.config;
        if let Some(every) = cfg.simulate_every {
            // The simulated camera's directory is ours to make (a real one is the site's).
            let _ = tokio::fs::create_dir_all(&cfg.dir).await;
            tokio::spawn(sim::camera(
                cfg.dir.clone(),
                every,
                ctx.cancel.child_token(),
            ));
        }
        let ledger_path = self.state_dir.join(LEDGER);
        // Files done in this run (any policy) or, for `keep`, in earlier runs.
        let mut done: HashSet<FileId> = match cfg.after {
            After::Keep => load_ledger(&ledger_path, &cfg.dir).await,
            _ => HashSet::new(),
        };
        // Files that failed, left alone until they change.
        let mut failed: HashSet<FileId> = HashSet::new();
        let mut pending: HashMap<PathBuf, Candidate> = HashMap::new();
        let overflow = Arc::new(AtomicBool::new(true));
        let (tx, mut events) = mpsc::channel::<notify::Event>(EVENT_QUEUE);
        let mut watcher: Option<notify::RecommendedWatcher> = None;
        let tick = (cfg.settle / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_scan: Option<Instant> = None;
        let mut dir_missing_reported = false;
        loop {
            tokio::select! {
                _ = ctx.cancel.cancelled() => return Ok(()),
                ev = events.recv() => {
                    if let Some(ev) = ev {
                        self.on_event(ev, &mut pending).await;
                    }
                    continue;
                }
                _ = ticker.tick() => {}
            }
            if watcher.is_none() {
                match self.start_watcher(tx.clone(), overflow.clone()) {
                    Ok(w) => {
                        watcher = Some(w);
                        overflow.store(true, Ordering::Relaxed);
                        dir_missing_reported = false;
                        tracing::info!(driver = %self.name, dir = %cfg.dir.display(), "watching");
                    }
                    Err(e) => {
                        if !dir_missing_reported {
                            ctx.health.error(format!("{}: {e}", cfg.dir.display()));
                            tracing::warn!(driver = %self.name, dir = %cfg.dir.display(), error = %e, "cannot watch the directory; waiting for it");
                            dir_missing_reported = true;
                        }
                        continue;
                    }
                }
            }
            let rescan = overflow.swap(false, Ordering::Relaxed)
                || last_scan.is_none_or(|t| t.elapsed() >= RESCAN_EVERY);
            if rescan {
                last_scan = Some(Instant::now());
                match list_dir(cfg.dir.clone(), cfg.pattern.clone()).await {
                    Ok(files) => {
                        ctx.health.ok();
                        for (path, size, mtime) in files {
                            observe(&mut pending, path, (size, mtime), false);
                        }
                    }
                    Err(e) => {
                        // The directory went away: watch again once it is back.
                        ctx.health.error(format!("{}: {e}", cfg.dir.display()));
                        watcher = None;
                        continue;
                    }
                }
            }
            let ready = self.complete_files(&mut pending).await;
            for (path, c) in ready {
                let id = FileId::of(&path, c.size, c.mtime);
                if done.contains(&id) || failed.contains(&id) {
                    continue;
                }
                match self.ingest(ctx, &path, &c).await {
                    Outcome::Stored => {
                        ctx.health.ok();
                        ctx.health.count("files", 1);
                        match self.after(&path, &id, &ledger_path).await {
                            Ok(()) => {}
                            Err(e) => {
                                ctx.health
                                    .error(format!("{}: stored, but {e}", path.display()));
                                tracing::warn!(driver = %self.name, file = %path.display(), error = %e, "file stored; its after-policy failed");
                            }
                        }
                        done.insert(id);
                    }
                    Outcome::NotRouted => {
                        ctx.health.count("not_routed", 1);
                        tracing::warn!(driver = %self.name, file = %path.display(), "no sink takes this driver's stream: the file is left as it is");
                        done.insert(id);
                    }
                    Outcome::Failed(why) => {
                        ctx.health.count("failed", 1);
                        ctx.health.error(format!("{}: {why}", path.display()));
                        tracing::warn!(driver = %self.name, file = %path.display(), error = %why, "file not ingested; left alone until it changes");
                        failed.insert(id);
                    }
                    Outcome::Stopped => return Ok(()),
                }
            }
        }
    }

    fn start_watcher(
        &self,
        tx: mpsc::Sender<notify::Event>,
        overflow: Arc<AtomicBool>,
    ) -> Result<notify::RecommendedWatcher, String> {
        if !self.config.dir.is_dir() {
            return Err("no such directory".into());
        }
        let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            match res {
                // A full queue is not a loss: the next tick lists the directory.
                Ok(ev) => {
                    if tx.try_send(ev).is_err() {
                        overflow.store(true, Ordering::Relaxed);
                    }
                }
                Err(_) => overflow.store(true, Ordering::Relaxed),
            }
        })
        .map_err(|e| e.to_string())?;
        w.watch(&self.config.dir, RecursiveMode::NonRecursive)
            .map_err(|e| e.to_string())?;
        Ok(w)
    }

    async fn on_event(&self, ev: notify::Event, pending: &mut HashMap<PathBuf, Candidate>) {
        for path in ev.paths {
            let ours = path.parent() == Some(self.config.dir.as_path())
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| config::name_matches(&self.config.pattern, n));
            if !ours {
                continue;
            }
            match ev.kind {
                EventKind::Remove(_) => {
                    pending.remove(&path);
                }
                // Closed after writing, or renamed into place (acquisition software writes
                // under a temporary name, then renames): finished, once quiet.
                EventKind::Access(notify::event::AccessKind::Close(
                    notify::event::AccessMode::Write,
                ))
                | EventKind::Modify(notify::event::ModifyKind::Name(
                    notify::event::RenameMode::To,
                )) => {
                    if let Some(seen) = stat(&path).await {
                        observe(pending, path, seen, true);
                    }
                }
                EventKind::Create(_) | EventKind::Modify(_) => match stat(&path).await {
                    Some(seen) => observe(pending, path, seen, false),
                    // Renamed away.
                    None => {
                        pending.remove(&path);
                    }
                },
                _ => {}
            }
        }
    }

    /// Takes the files that are complete out of `pending`, oldest change first.
    async fn complete_files(
        &self,
        pending: &mut HashMap<PathBuf, Candidate>,
    ) -> Vec<(PathBuf, Candidate)> {
        let settle = self.config.settle;
        let quiet = QUIET_AFTER_CLOSE.min(settle);
        let fits = self.config.format == FileFormat::Fits;
        let mut ready = Vec::new();
        let paths: Vec<PathBuf> = pending.keys().cloned().collect();
        for path in paths {
            let Some((size, mtime)) = stat(&path).await else {
                pending.remove(&path);
                continue;
            };
            let Some(c) = pending.get_mut(&path) else {
                continue;
            };
            if (c.size, c.mtime) != (size, mtime) {
                (c.size, c.mtime, c.changed_at) = (size, mtime, Instant::now());
                c.closed_at = None;
                continue;
            }
            let closed_quiet = c.closed_at.is_some() && c.changed_at.elapsed() >= quiet;
            // A FITS file says how long it is: trust a close only once it is all there.
            let whole = !fits || (closed_quiet && fits_whole(&path, size).await);
            if ((closed_quiet && whole) || c.changed_at.elapsed() >= settle)
                && let Some(c) = pending.remove(&path)
            {
                ready.push((path, c));
            }
        }
        ready.sort_by_key(|(_, c)| c.changed_at);
        ready
    }

    async fn ingest(&self, ctx: &DriverContext, path: &Path, c: &Candidate) -> Outcome {
        let cfg = &self.config;
        if c.size > cfg.max_bytes {
            return Outcome::Failed(format!(
                "{} bytes is over max_bytes ({})",
                c.size, cfg.max_bytes
            ));
        }
        let data = match tokio::fs::read(path).await {
            Ok(d) => Bytes::from(d),
            Err(e) => return Outcome::Failed(format!("cannot read: {e}")),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (_, tq) = ctx.clock.now();
        let mtime = Timestamp::from_system_time(c.mtime);
        let readings = match cfg.format {
            FileFormat::Blob => {
                vec![self.blob_reading(
                    Blob::new(cfg.content_type.clone(), Some(name), data),
                    (mtime, tq),
                    Quality::Good,
                )]
            }
            FileFormat::Fits => {
                let (blob, ts, quality) = fits_record(cfg, name, data, mtime);
                vec![self.blob_reading(blob, (ts, tq), quality)]
            }
            FileFormat::Csv => match self.csv_readings(ctx, &name, &data, (mtime, tq)) {
                Ok(r) => r,
                Err(why) => return Outcome::Failed(why),
            },
        };
        let Some(last) = readings.len().checked_sub(1) else {
            // An empty CSV file: nothing to store, and nothing lost by the policy.
            return Outcome::Stored;
        };
        let mut committed = None;
        for (i, r) in readings.into_iter().enumerate() {
            let sent = if i == last {
                ctx.out
                    .send_committed(r)
                    .await
                    .map(|rx| committed = Some(rx))
            } else {
                ctx.out.send(r).await
            };
            if let Err(SendError) = sent {
                return Outcome::Stopped;
            }
        }
        let Some(rx) = committed else {
            return Outcome::Stopped;
        };
        let answer = tokio::select! {
            a = rx => a,
            // Stopping: ingest drains its queue, so the answer is normally moments away.
            _ = async {
                ctx.cancel.cancelled().await;
                tokio::time::sleep(COMMIT_GRACE).await;
            } => return Outcome::Stopped,
        };
        match answer {
            Ok(Committed::Stored) => Outcome::Stored,
            Ok(Committed::NotRouted) => Outcome::NotRouted,
            Err(_) => Outcome::Stopped,
        }
    }

    fn blob_reading(&self, blob: Blob, at: (Timestamp, TimeQuality), quality: Quality) -> Reading {
        let mut r = Reading::good(
            self.name.clone(),
            Arc::from(self.config.channel.as_str()),
            at,
            Value::Blob(blob),
            None,
        );
        r.quality = quality;
        r
    }

    fn csv_readings(
        &self,
        ctx: &DriverContext,
        name: &str,
        data: &[u8],
        (mtime, tq): (Timestamp, TimeQuality),
    ) -> Result<Vec<Reading>, String> {
        let Some(csv) = &self.config.csv else {
            return Err("no CSV settings".into());
        };
        let text = std::str::from_utf8(data)
            .map_err(|e| format!("not UTF-8 text (at byte {})", e.valid_up_to()))?;
        let mut out = Vec::new();
        let mut channels: HashMap<&str, Arc<str>> = HashMap::new();
        let mut bad_rows = 0u64;
        for (i, line) in text.lines().enumerate().skip(usize::from(csv.header)) {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let values = match csv.parser.parse(line) {
                Ok(v) => v,
                Err(e) => {
                    bad_rows += 1;
                    ctx.health.error(format!("{name} line {}: {e}", i + 1));
                    continue;
                }
            };
            let (ts, ts_quality) = match &csv.time_column {
                None => (mtime, None),
                Some(col) => match values.iter().find(|(n, _)| n == col) {
                    Some((_, Ok(Value::Text(t)))) => match parse_time(t) {
                        Some(ts) => (ts, None),
                        None => (mtime, Some(format!("{col}: {t:?} is not a time"))),
                    },
                    _ => (mtime, Some(format!("{col}: missing"))),
                },
            };
            for (column, value) in values {
                if csv.time_column.as_deref() == Some(column) {
                    continue;
                }
                let channel = channels
                    .entry(column)
                    .or_insert_with(|| Arc::from(column))
                    .clone();
                let unit = csv
                    .parser
                    .channels
                    .get(column)
                    .and_then(|c| c.unit.as_deref())
                    .map(Arc::from);
                let (value, quality) = match value {
                    Ok(v) => (
                        v,
                        ts_quality.clone().map_or(Quality::Good, Quality::Uncertain),
                    ),
                    Err(why) => (Value::Text(String::new()), Quality::Bad(why)),
                };
                let mut r = Reading::good(self.name.clone(), channel, (ts, tq), value, unit);
                r.quality = quality;
                out.push(r);
            }
        }
        if bad_rows > 0 {
            ctx.health.count("bad_rows", bad_rows);
        }
        Ok(out)
    }

    /// Applies the after-policy to a committed file.
    async fn after(&self, path: &Path, id: &FileId, ledger: &Path) -> Result<(), String> {
        let (path, id, ledger) = (path.to_path_buf(), id.clone(), ledger.to_path_buf());
        let after = self.config.after.clone();
        tokio::task::spawn_blocking(move || match after {
            After::Delete => std::fs::remove_file(&path).map_err(|e| format!("cannot delete: {e}")),
            After::Move(to) => {
                move_file(&path, &to).map_err(|e| format!("cannot move to {}: {e}", to.display()))
            }
            After::Keep => {
                append_ledger(&ledger, &id).map_err(|e| format!("ledger {}: {e}", ledger.display()))
            }
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// The blob of a FITS file with its header keywords, the observation time (DATE-OBS,
/// else the file's time), and how far to trust it.
fn fits_record(
    cfg: &FilesConfig,
    name: String,
    data: Bytes,
    mtime: Timestamp,
) -> (Blob, Timestamp, Quality) {
    let header = fits::parse_header(&data);
    let mut blob = Blob::new(cfg.content_type.clone(), Some(name), data);
    let h = match header {
        Ok(h) => h,
        Err(e) => return (blob, mtime, Quality::Uncertain(format!("FITS header: {e}"))),
    };
    let naxis = match h.get("NAXIS") {
        Some(fits::HeaderValue::Integer(n)) => (*n).clamp(0, 999),
        _ => 0,
    };
    let axes = (1..=naxis).map(|n| format!("NAXIS{n}"));
    for key in cfg.fits_keys.iter().cloned().chain(axes) {
        let value = match h.get(&key) {
            Some(fits::HeaderValue::Text(t)) => MetaValue::Text(t.clone()),
            Some(fits::HeaderValue::Logical(b)) => MetaValue::Bool(*b),
            Some(fits::HeaderValue::Integer(i)) => MetaValue::Integer(*i),
            Some(fits::HeaderValue::Real(f)) => MetaValue::Number(*f),
            Some(fits::HeaderValue::Undefined) | None => continue,
        };
        blob.meta.insert(key, value);
    }
    let ts = match h.get("DATE-OBS") {
        Some(fits::HeaderValue::Text(t)) => parse_time(t).unwrap_or(mtime),
        _ => mtime,
    };
    let whole = h
        .primary_size()
        .is_some_and(|want| blob.data.len() as u64 >= want);
    let quality = if whole {
        Quality::Good
    } else {
        Quality::Uncertain(format!(
            "{} bytes is shorter than the primary HDU its header announces: truncated?",
            blob.data.len()
        ))
    };
    (blob, ts, quality)
}

/// Whether the FITS file at `path` (of `size` bytes) holds at least the primary HDU its
/// header announces. Reads the header only.
async fn fits_whole(path: &Path, size: u64) -> bool {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let limit = (fits::MAX_HEADER_BLOCKS * fits::BLOCK) as u64;
        let mut head = Vec::new();
        let read =
            std::fs::File::open(&path).and_then(|f| f.take(limit.min(size)).read_to_end(&mut head));
        read.is_ok() && fits::primary_size(&head).is_some_and(|want| size >= want)
    })
    .await
    .unwrap_or(false)
}

/// RFC 3339, a FITS date (`2026-11-22T03:14:15.5` or `2026-11-22`, UTC), or seconds
/// since the epoch.
pub fn parse_time(t: &str) -> Option<Timestamp> {
    let t = t.trim();
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        return d.timestamp_nanos_opt().map(Timestamp);
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(d) = chrono::NaiveDateTime::parse_from_str(t, fmt) {
            return d.and_utc().timestamp_nanos_opt().map(Timestamp);
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)?
            .and_utc()
            .timestamp_nanos_opt()
            .map(Timestamp);
    }
    // Decimal seconds, parsed exactly (an f64 would lose the last digits of nanoseconds).
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty()
        || !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: i64 = whole.parse().ok().filter(|s| *s < 9_200_000_000)?;
    let nanos: i64 = format!("{frac:0<9}")[..9].parse().ok()?;
    let ns = secs * 1_000_000_000 + nanos;
    Some(Timestamp(if neg { -ns } else { ns }))
}

/// Notes how a file looks now: a change restarts its quiet period and forgets an earlier
/// close; `closed` marks it closed after writing (or renamed into place) as of now.
fn observe(
    pending: &mut HashMap<PathBuf, Candidate>,
    path: PathBuf,
    (size, mtime): (u64, SystemTime),
    closed: bool,
) {
    let now = Instant::now();
    let c = pending.entry(path).or_insert(Candidate {
        size,
        mtime,
        changed_at: now,
        closed_at: None,
    });
    if (c.size, c.mtime) != (size, mtime) {
        (c.size, c.mtime, c.changed_at) = (size, mtime, now);
        c.closed_at = None;
    }
    if closed {
        c.closed_at = Some(now);
    }
}

async fn stat(path: &Path) -> Option<(u64, SystemTime)> {
    let m = tokio::fs::metadata(path).await.ok()?;
    m.is_file()
        .then(|| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
}

/// The regular files in `dir` whose names match `pattern`.
async fn list_dir(
    dir: PathBuf,
    pattern: String,
) -> Result<Vec<(PathBuf, u64, SystemTime)>, String> {
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(|e| e.to_string())? {
            let Ok(e) = e else { continue };
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if !config::name_matches(&pattern, name) {
                continue;
            }
            if let Ok(m) = e.metadata()
                && m.is_file()
            {
                out.push((
                    e.path(),
                    m.len(),
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                ));
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Ledger lines are `size mtime_ns name`; only those of files still in `dir` are kept.
async fn load_ledger(path: &Path, dir: &Path) -> HashSet<FileId> {
    let (path, dir) = (path.to_path_buf(), dir.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let Ok(text) = std::fs::read_to_string(&path) else {
            return HashSet::new();
        };
        let ids: HashSet<FileId> = text
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, ' ');
                Some(FileId {
                    size: parts.next()?.parse().ok()?,
                    mtime_ns: parts.next()?.parse().ok()?,
                    name: parts.next()?.to_string(),
                })
            })
            .filter(|id| dir.join(&id.name).exists())
            .collect();
        let body: String = ids
            .iter()
            .map(|id| format!("{} {} {}\n", id.size, id.mtime_ns, id.name))
            .collect();
        if let Err(e) = crate::fs::write_atomic(&path, body.as_bytes()) {
            tracing::warn!(ledger = %path.display(), error = %e, "cannot prune the ledger");
        }
        ids
    })
    .await
    .unwrap_or_default()
}

fn append_ledger(path: &Path, id: &FileId) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(format!("{} {} {}\n", id.size, id.mtime_ns, id.name).as_bytes())?;
    f.sync_data()
}

/// Moves `path` into `dir` under its name (`name.1`, `name.2`, ... if taken); across
/// filesystems by copy, fsync, rename, then removing the original.
fn move_file(path: &Path, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut target = dir.join(&name);
    let mut n = 0;
    while target.exists() {
        n += 1;
        target = dir.join(format!("{name}.{n}"));
    }
    match std::fs::rename(path, &target) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
            let tmp = dir.join(format!(".{name}.partial"));
            std::fs::copy(path, &tmp)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &target)?;
            std::fs::remove_file(path)?;
        }
        Err(e) => return Err(e),
    }
    crate::fs::fsync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_from_fits_csv_and_epochs() {
        assert_eq!(
            parse_time("2026-11-22T10:00:00Z"),
            Some(Timestamp(1_795_341_600_000_000_000))
        );
        assert_eq!(
            parse_time("2026-11-22T10:00:00.5"),
            Some(Timestamp(1_795_341_600_500_000_000))
        );
        assert_eq!(
            parse_time("2026-11-22"),
            Some(Timestamp(1_795_305_600_000_000_000))
        );
        assert_eq!(
            parse_time("1795341600.25"),
            Some(Timestamp(1_795_341_600_250_000_000))
        );
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn moving_a_file_never_overwrites_one_already_there() {
        let d = tempfile_dir();
        let (src, to) = (d.join("in"), d.join("done"));
        std::fs::create_dir_all(&src).expect("mkdir");
        for body in ["first", "second"] {
            std::fs::write(src.join("a.fits"), body).expect("write");
            move_file(&src.join("a.fits"), &to).expect("move");
        }
        assert_eq!(
            std::fs::read_to_string(to.join("a.fits")).expect("a"),
            "first"
        );
        assert_eq!(
            std::fs::read_to_string(to.join("a.fits.1")).expect("a.1"),
            "second"
        );
        assert!(!src.join("a.fits").exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "skygate-files-{}-{}",
            std::process::id(),
            Timestamp::now().as_nanos()
        ));
        std::fs::create_dir_all(&d).expect("tmp");
        d
    }
}
