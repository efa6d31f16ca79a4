//! Buffer tests: a model-based property test and one test per invariant.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use proptest::prelude::*;
use skygate_bsp::{Board, BoardError, DiskSpace, GenericLinux, Identity, Temperature};
use skygate_drivers::{Blob, Quality, Reading, TimeQuality, Timestamp, Value};

use super::*;
use super::{BufferSettings, Durability};
use skygate_model::Record;

const STREAMS: [&str; 3] = ["s0", "s1", "s2"];
const SINKS: [&str; 2] = ["a", "b"];

fn routes() -> Vec<(Vec<String>, Vec<String>)> {
    vec![
        (vec!["s0".into(), "s1".into()], vec!["a".into()]),
        (vec!["s1".into(), "s2".into()], vec!["b".into()]),
    ]
}

fn options(dir: &Path, max_bytes: u64) -> BufferOptions {
    BufferOptions {
        events: None,
        dir: dir.to_path_buf(),
        settings: BufferSettings {
            durability: Durability::Process,
            max_bytes,
            min_free_disk: 0,
            blob_spool_threshold: 1024,
            ..BufferSettings::default()
        },
        gateway_id: "gw-test".into(),
        sinks: SINKS.iter().map(|s| s.to_string()).collect(),
        routes: routes(),
    }
}

fn open(dir: &Path, max_bytes: u64) -> (Buffer, BufferGuard) {
    Buffer::open(options(dir, max_bytes), Arc::new(GenericLinux::default())).expect("open buffer")
}

fn reading(n: i64, value: Value) -> Reading {
    Reading {
        source: Arc::from("sim"),
        channel: Arc::from("ch"),
        ts: Timestamp(1_700_000_000_000_000_000 + n),
        time_quality: TimeQuality::Ntp,
        value,
        unit: None,
        quality: Quality::Good,
    }
}

fn new_record(buffer: &Buffer, stream: &str, priority: u8, n: i64) -> NewRecord {
    let routes = routes();
    let sinks = routes
        .iter()
        .filter(|(ss, _)| ss.iter().any(|s| s == stream))
        .flat_map(|(_, k)| k.iter().map(String::as_str));
    NewRecord {
        sinks: buffer.mask_for(sinks),
        record: Record {
            seq: 0,
            stream: Arc::from(stream),
            priority,
            ingest_ts: Timestamp::now(),
            reading: reading(n, Value::Integer(n)),
            lineage: None,
        },
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Copies the buffer directory as a killed process would leave it: whatever the files
/// hold right now (committed transactions are in the WAL), without the lock.
fn crash_image(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("spool")).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("ls") {
        let e = entry.expect("entry");
        let name = e.file_name();
        if name == "LOCK" || name == "skygate.db-shm" || e.path().is_dir() {
            continue;
        }
        std::fs::copy(e.path(), to.join(&name)).expect("copy");
    }
    for e in std::fs::read_dir(from.join("spool"))
        .expect("ls spool")
        .flatten()
    {
        std::fs::copy(e.path(), to.join("spool").join(e.file_name())).expect("copy spool");
    }
}

async fn pending(buffer: &Buffer, sink: &str) -> Vec<Record> {
    buffer
        .read(ReadQuery {
            sink: buffer.sink_id(sink).expect("sink"),
            after: 0,
            upto: u64::MAX,
            max_records: 1_000_000,
            max_bytes: u64::MAX,
        })
        .await
        .expect("read")
}

// ---------------------------------------------------------------------------------------
// Model-based property test
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: usize,
        priority: u8,
        n: usize,
    },
    Deliver {
        sink: usize,
        max: u32,
    },
    Ack {
        sink: usize,
    },
    Nack {
        sink: usize,
    },
    CrashReopen,
    /// Reopen with a byte cap below what is stored, then append: forces eviction.
    Squeeze,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..3u8, 1..15usize).prop_map(|(stream, priority, n)| Op::Append { stream, priority, n }),
        3 => (0..2usize, 1..25u32).prop_map(|(sink, max)| Op::Deliver { sink, max }),
        3 => (0..2usize).prop_map(|sink| Op::Ack { sink }),
        1 => (0..2usize).prop_map(|sink| Op::Nack { sink }),
        1 => Just(Op::CrashReopen),
        1 => Just(Op::Squeeze),
    ]
}

#[derive(Debug, Clone)]
struct ModelRec {
    stream: usize,
    priority: u8,
    pending: BTreeSet<usize>,
}

struct Harness {
    root: tempfile::TempDir,
    dir: PathBuf,
    generation: usize,
    buffer: Buffer,
    guard: Option<BufferGuard>,
    model: BTreeMap<u64, ModelRec>,
    last_seq: u64,
    cursor: [u64; 2],
    in_flight: [Option<(u64, u64)>; 2],
    evicted: BTreeSet<u64>,
}

impl Harness {
    fn new() -> Self {
        let root = tempfile::tempdir().expect("tmp");
        let dir = root.path().join("g0");
        let (buffer, guard) = open(&dir, 1 << 30);
        Self {
            root,
            dir,
            generation: 0,
            buffer,
            guard: Some(guard),
            model: BTreeMap::new(),
            last_seq: 0,
            cursor: [0; 2],
            in_flight: [None; 2],
            evicted: BTreeSet::new(),
        }
    }

    async fn reopen(&mut self, crash: bool, max_bytes: u64) {
        self.generation += 1;
        let next = self.root.path().join(format!("g{}", self.generation));
        if crash {
            crash_image(&self.dir, &next);
        }
        if let Some(g) = self.guard.take() {
            g.close().await;
        }
        if !crash {
            std::fs::rename(&self.dir, &next).expect("move");
        }
        self.dir = next;
        let (b, g) = open(&self.dir, max_bytes);
        self.buffer = b;
        self.guard = Some(g);
        self.cursor = [0; 2];
        self.in_flight = [None; 2];
    }

    async fn append(&mut self, stream: usize, priority: u8, n: usize) {
        let recs: Vec<NewRecord> = (0..n)
            .map(|i| {
                new_record(
                    &self.buffer,
                    STREAMS[stream],
                    priority,
                    (self.last_seq + i as u64) as i64,
                )
            })
            .collect();
        let pend: BTreeSet<usize> = (0..2)
            .filter(|s| recs[0].sinks & self.buffer.sink_id(SINKS[*s]).expect("id").mask() != 0)
            .collect();
        let r = self.buffer.append_durable(recs).await.expect("append");
        // Seqs continue exactly where the last append ended: no hole, no reuse.
        assert_eq!(
            r.first,
            self.last_seq + 1,
            "seq must continue without holes"
        );
        assert_eq!(r.last, self.last_seq + n as u64);
        for seq in r.first..=r.last {
            self.model.insert(
                seq,
                ModelRec {
                    stream,
                    priority,
                    pending: pend.clone(),
                },
            );
        }
        self.last_seq = r.last;
    }

    async fn apply(&mut self, op: &Op) {
        match *op {
            Op::Append {
                stream,
                priority,
                n,
            } => self.append(stream, priority, n).await,
            Op::Deliver { sink, max } => {
                if self.in_flight[sink].is_some() {
                    return;
                }
                let got = self
                    .buffer
                    .read(ReadQuery {
                        sink: self.buffer.sink_id(SINKS[sink]).expect("id"),
                        after: self.cursor[sink],
                        upto: u64::MAX,
                        max_records: max,
                        max_bytes: u64::MAX,
                    })
                    .await
                    .expect("read");
                let expect: Vec<u64> = self
                    .model
                    .range(self.cursor[sink] + 1..)
                    .filter(|(_, r)| r.pending.contains(&sink))
                    .map(|(s, _)| *s)
                    .take(max as usize)
                    .collect();
                let seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
                assert_eq!(
                    seqs, expect,
                    "sink {} reads what it is owed, in seq order",
                    SINKS[sink]
                );
                for r in &got {
                    assert_eq!(&*r.stream, STREAMS[self.model[&r.seq].stream]);
                }
                if let (Some(f), Some(l)) = (seqs.first(), seqs.last()) {
                    let _ = f;
                    self.in_flight[sink] = Some((self.cursor[sink] + 1, *l));
                }
            }
            Op::Ack { sink } => {
                if let Some((first, last)) = self.in_flight[sink].take() {
                    let id = self.buffer.sink_id(SINKS[sink]).expect("id");
                    self.buffer.ack(id, first, last).await.expect("ack");
                    self.buffer.sync().await.expect("sync");
                    for (_, r) in self.model.range_mut(first..=last) {
                        r.pending.remove(&sink);
                    }
                    self.model.retain(|_, r| !r.pending.is_empty());
                    self.cursor[sink] = last;
                }
            }
            Op::Nack { sink } => self.in_flight[sink] = None,
            Op::CrashReopen => {
                self.buffer.sync().await.expect("sync");
                self.reopen(true, 1 << 30).await;
                self.check().await;
            }
            Op::Squeeze => {
                let stored = BufferMetrics::get(&self.buffer.metrics().bytes_stored);
                if stored < 4096 {
                    return;
                }
                self.reopen(false, (stored / 2).max(1024)).await;
                let before: BTreeMap<u64, ModelRec> = self.model.clone();
                // One more record triggers eviction down to 95% of the cap.
                self.append(1, 9, 1).await;
                let stats = super::ops::stats(&self.dir).expect("stats");
                let present: BTreeSet<u64> = {
                    let mut s: BTreeSet<u64> = pending(&self.buffer, "a")
                        .await
                        .iter()
                        .map(|r| r.seq)
                        .collect();
                    s.extend(pending(&self.buffer, "b").await.iter().map(|r| r.seq));
                    s
                };
                let gone: Vec<u64> = before
                    .keys()
                    .filter(|s| !present.contains(s))
                    .copied()
                    .collect();
                assert!(
                    !gone.is_empty(),
                    "a cap below the stored bytes evicts something"
                );
                let gaps = read_gaps(&self.dir);
                // Every evicted record is covered by a recorded gap of its stream.
                for seq in &gone {
                    let stream = STREAMS[before[seq].stream];
                    assert!(
                        gaps.iter().any(|g| g.stream == stream
                            && g.first_seq <= *seq
                            && *seq <= g.last_seq),
                        "evicted seq {seq} of {stream} has no gap; gaps {gaps:?}"
                    );
                }
                // Lowest priority first, then oldest.
                for e in &gone {
                    for (s, r) in &before {
                        if present.contains(s) {
                            let ev = &before[e];
                            assert!(
                                ev.priority < r.priority || (ev.priority == r.priority && e < s),
                                "evicted {e} (prio {}) while keeping {s} (prio {})",
                                ev.priority,
                                r.priority
                            );
                        }
                    }
                }
                assert!(stats.gaps.total > 0);
                for seq in gone {
                    self.model.remove(&seq);
                    self.evicted.insert(seq);
                }
                // Back to a roomy cap for the rest of the run.
                self.reopen(false, 1 << 30).await;
            }
        }
    }

    /// The buffer holds exactly what the model says each sink is owed, in order.
    async fn check(&self) {
        for (i, sink) in SINKS.iter().enumerate() {
            let got: Vec<u64> = pending(&self.buffer, sink)
                .await
                .iter()
                .map(|r| r.seq)
                .collect();
            // The writer's running backlog counter agrees with what is stored.
            let backlog = self
                .buffer
                .backlog(self.buffer.sink_id(sink).expect("id"))
                .0;
            assert_eq!(backlog, got.len() as u64, "backlog counter of sink {sink}");
            let want: Vec<u64> = self
                .model
                .iter()
                .filter(|(_, r)| r.pending.contains(&i))
                .map(|(s, _)| *s)
                .collect();
            assert_eq!(got, want, "pending for sink {sink}");
        }
    }
}

fn read_gaps(dir: &Path) -> Vec<skygate_model::Gap> {
    let conn = schema::open_readonly(&dir.join(schema::DB_FILE)).expect("open");
    conn.prepare("SELECT id, stream, first_seq, last_seq, count, first_ts, last_ts, reason, recorded_at FROM gaps")
        .expect("prepare")
        .query_map([], reader::gap_from_row)
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 200, ..ProptestConfig::default() })]

    /// No record committed by the buffer is ever lost or reordered, across acks, nacks,
    /// crash-reopens and evictions, except by an eviction recorded as a gap.
    #[test]
    fn the_buffer_behaves_like_its_model(ops in proptest::collection::vec(op(), 1..40)) {
        rt().block_on(async {
            let mut h = Harness::new();
            for op in &ops {
                h.apply(op).await;
            }
            h.check().await;
            h.reopen(true, 1 << 30).await;
            h.check().await;
            // Numbering continues after the last seq ever issued, even across a crash.
            let r = h.buffer.append_durable(vec![new_record(&h.buffer, "s0", 1, 0)]).await.expect("append");
            assert_eq!(r.first, h.last_seq + 1);
            if let Some(g) = h.guard.take() {
                g.close().await;
            }
        });
    }
}

// ---------------------------------------------------------------------------------------
// One test per invariant
// ---------------------------------------------------------------------------------------

#[test]
fn seqs_are_never_reused_even_after_everything_was_delivered_and_deleted() {
    let d = tempfile::tempdir().expect("tmp");
    rt().block_on(async {
        let (b, g) = open(d.path(), 1 << 30);
        let r = b
            .append_durable((0..10).map(|i| new_record(&b, "s0", 5, i)).collect())
            .await
            .expect("append");
        assert_eq!((r.first, r.last), (1, 10));
        b.ack(b.sink_id("a").expect("a"), 1, 10).await.expect("ack");
        b.sync().await.expect("sync");
        assert_eq!(
            BufferMetrics::get(&b.metrics().records_stored),
            0,
            "acked by every sink: deleted"
        );
        g.close().await;
        let (b, g) = open(d.path(), 1 << 30);
        let r = b
            .append_durable(vec![new_record(&b, "s0", 5, 0)])
            .await
            .expect("append");
        assert_eq!(r.first, 11);
        g.close().await;
    });
}

#[test]
fn a_record_routed_nowhere_is_numbered_not_stored_and_a_lineage_names_it() {
    let d = tempfile::tempdir().expect("tmp");
    rt().block_on(async {
        let (b, g) = open(d.path(), 1 << 30);
        let mut input = new_record(&b, "s0", 5, 1);
        input.sinks = 0;
        let mut derived = new_record(&b, "s0", 5, 2);
        derived.record.lineage = Some(skygate_model::Lineage {
            workflow: Arc::from("wf"),
            first: skygate_model::SeqRef::Back(1),
            last: skygate_model::SeqRef::Back(1),
            count: 1,
        });
        let r = b
            .append_durable(vec![new_record(&b, "s0", 5, 0), input, derived])
            .await
            .expect("append");
        assert_eq!((r.first, r.last), (1, 3), "all three numbered");
        let stored = pending(&b, "a").await;
        let seqs: Vec<u64> = stored.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 3], "the unrouted input takes seq 2 without a row");
        let l = stored[1].lineage.as_ref().expect("lineage");
        assert_eq!(
            (l.first, l.last),
            (skygate_model::SeqRef::Seq(2), skygate_model::SeqRef::Seq(2))
        );
        assert_eq!(BufferMetrics::get(&b.metrics().records_stored), 2);
        g.close().await;
        let report = ops::fsck(d.path()).expect("fsck");
        assert!(
            report.ok && report.problems.is_empty(),
            "{:?}",
            report.problems
        );
        let (b, g) = open(d.path(), 1 << 30);
        let r = b
            .append_durable(vec![new_record(&b, "s0", 5, 0)])
            .await
            .expect("append");
        assert_eq!(r.first, 4, "numbering resumes after the unstored seq");
        g.close().await;
    });
}

#[test]
fn a_record_routed_to_two_sinks_stays_until_both_acknowledge_it() {
    let d = tempfile::tempdir().expect("tmp");
    rt().block_on(async {
        let (b, g) = open(d.path(), 1 << 30);
        b.append_durable(vec![new_record(&b, "s1", 5, 0)])
            .await
            .expect("append");
        b.ack(b.sink_id("a").expect("a"), 1, 1).await.expect("ack");
        b.sync().await.expect("sync");
        assert!(pending(&b, "a").await.is_empty());
        assert_eq!(
            pending(&b, "b").await.len(),
            1,
            "b has not acknowledged yet"
        );
        b.ack(b.sink_id("b").expect("b"), 1, 1).await.expect("ack");
        b.sync().await.expect("sync");
        assert_eq!(BufferMetrics::get(&b.metrics().records_stored), 0);
        g.close().await;
    });
}

#[test]
fn eviction_at_the_byte_cap_takes_lowest_priority_first_records_gaps_and_degrades_status() {
    let d = tempfile::tempdir().expect("tmp");
    rt().block_on(async {
        let (b, g) = open(d.path(), 1 << 20);
        // ~1.3 MiB of records: low-priority text first, high-priority after.
        let text = "x".repeat(1000);
        for prio in [1u8, 8] {
            let recs: Vec<NewRecord> = (0..650)
                .map(|i| {
                    let mut r = new_record(&b, "s0", prio, i);
                    r.record.reading.value = Value::Text(text.clone());
                    r
                })
                .collect();
            b.append_durable(recs).await.expect("append");
        }
        let left = pending(&b, "a").await;
        assert!(
            left.iter().all(|r| r.priority == 8)
                || left.iter().filter(|r| r.priority == 1).count() < 650
        );
        assert_eq!(
            left.iter().filter(|r| r.priority == 8).count(),
            650,
            "high priority kept"
        );
        assert!(BufferMetrics::get(&b.metrics().bytes_stored) <= 1 << 20);
        let evicted = BufferMetrics::get(&b.metrics().records_evicted);
        assert!(evicted > 0);
        let st = b.status().borrow().clone();
        assert!(
            st.degraded && st.reasons.iter().any(|r| r.contains("max_bytes")),
            "{st:?}"
        );
        let gaps = b
            .pending_gaps(b.sink_id("a").expect("a"))
            .await
            .expect("gaps");
        assert_eq!(gaps.len(), 1);
        assert_eq!(gaps[0].stream, "s0");
        assert_eq!(gaps[0].first_seq, 1, "oldest first");
        assert_eq!(gaps[0].count, Some(evicted));
        assert!(gaps[0].reason.contains("max_bytes"));
        // Sinks not owed the evicted records get no marker.
        assert!(
            b.pending_gaps(b.sink_id("b").expect("b"))
                .await
                .expect("gaps")
                .is_empty()
        );
        g.close().await;
    });
}

#[derive(Debug)]
struct FakeDisk {
    available: AtomicU64,
}

impl Board for FakeDisk {
    fn identity(&self) -> Identity {
        GenericLinux::default().identity()
    }
    fn disk_space(&self, _: &Path) -> Result<DiskSpace, BoardError> {
        Ok(DiskSpace {
            total_bytes: 1 << 30,
            available_bytes: self.available.load(Ordering::Relaxed),
        })
    }
    fn temperatures(&self) -> Vec<Temperature> {
        Vec::new()
    }
}

#[test]
fn low_free_disk_evicts_degrades_and_recovers_when_space_returns() {
    let d = tempfile::tempdir().expect("tmp");
    let disk = Arc::new(FakeDisk {
        available: AtomicU64::new(1 << 30),
    });
    let mut opts = options(d.path(), 1 << 30);
    opts.settings.min_free_disk = 10 << 20;
    rt().block_on(async {
        let (b, g) = Buffer::open(opts, disk.clone()).expect("open");
        let big = "y".repeat(4000);
        let mk = |b: &Buffer, n: usize| -> Vec<NewRecord> {
            (0..n)
                .map(|i| {
                    let mut r = new_record(b, "s0", 3, i as i64);
                    r.record.reading.value = Value::Text(big.clone());
                    r
                })
                .collect()
        };
        b.append_durable(mk(&b, 500)).await.expect("append");
        assert!(!b.status().borrow().degraded);
        // The disk fills from elsewhere: 1 MiB left against a 10 MiB watermark.
        disk.available.store(1 << 20, Ordering::Relaxed);
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        b.append_durable(mk(&b, 10))
            .await
            .expect("append still succeeds");
        let st = b.status().borrow().clone();
        assert!(
            st.degraded && st.reasons.iter().any(|r| r.contains("free disk")),
            "{st:?}"
        );
        assert!(BufferMetrics::get(&b.metrics().records_evicted) > 0);
        assert!(
            !b.pending_gaps(b.sink_id("a").expect("a"))
                .await
                .expect("gaps")
                .is_empty()
        );
        // Persisted for `buffer stats` in another process.
        b.sync().await.expect("sync");
        // Space returns.
        disk.available.store(1 << 30, Ordering::Relaxed);
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        b.append_durable(mk(&b, 1)).await.expect("append");
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        let st = b.status().borrow().clone();
        assert!(
            !st.reasons.iter().any(|r| r.contains("free disk")),
            "recovered: {st:?}"
        );
        g.close().await;
    });
}

#[test]
fn large_blobs_live_in_spool_files_until_their_record_is_acknowledged() {
    let d = tempfile::tempdir().expect("tmp");
    rt().block_on(async {
        let (b, g) = open(d.path(), 1 << 30);
        let mut r = new_record(&b, "s0", 5, 0);
        let data = Bytes::from((0..50_000u32).map(|i| i as u8).collect::<Vec<_>>());
        r.record.reading.value = Value::Blob(Blob::new(
            "image/jpeg",
            Some("frame.jpg".into()),
            data.clone(),
        ));
        b.append_durable(vec![r]).await.expect("append");
        let spool = d.path().join("spool");
        assert_eq!(
            std::fs::read(spool.join("1.blob")).expect("spool file"),
            data
        );
        let got = pending(&b, "a").await;
        match &got[0].reading.value {
            Value::Blob(blob) => {
                assert_eq!(blob.data, data, "read back joined with its spool file")
            }
            other => panic!("{other:?}"),
        }
        b.ack(b.sink_id("a").expect("a"), 1, 1).await.expect("ack");
        b.sync().await.expect("sync");
        assert!(!spool.join("1.blob").exists(), "deleted with its record");
        g.close().await;
    });
}

#[test]
fn a_spool_file_left_by_a_commit_that_never_happened_is_removed_at_start() {
    let d = tempfile::tempdir().expect("tmp");
    {
        let (_b, g) = open(d.path(), 1 << 30);
        g.close_blocking();
    }
    std::fs::write(d.path().join("spool/77.blob"), b"orphan").expect("write");
    let (_b, g) = open(d.path(), 1 << 30);
    assert_eq!(g.report.orphan_spool_files_removed, 1);
    assert!(!d.path().join("spool/77.blob").exists());
    g.close_blocking();
}

#[test]
fn a_second_agent_on_the_same_buffer_is_refused() {
    let d = tempfile::tempdir().expect("tmp");
    let (_b, g) = open(d.path(), 1 << 30);
    match Buffer::open(
        options(d.path(), 1 << 30),
        Arc::new(GenericLinux::default()),
    ) {
        Err(BufferError::Locked { holder, .. }) => {
            assert_eq!(holder, Some(std::process::id().to_string()))
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    g.close_blocking();
}

#[test]
fn a_garbage_database_is_quarantined_and_numbering_resumes_above_the_ceiling() {
    let d = tempfile::tempdir().expect("tmp");
    rt().block_on(async {
        let (b, g) = open(d.path(), 1 << 30);
        b.append_durable((0..5).map(|i| new_record(&b, "s0", 5, i)).collect())
            .await
            .expect("append");
        g.close().await;
    });
    let ceiling = startup::read_hwm(d.path());
    assert!(ceiling >= 5);
    let ceiling = startup::read_hwm(d.path());
    assert!(ceiling >= 5);
    std::fs::write(d.path().join("skygate.db"), vec![0x5a; 8192]).expect("corrupt");
    let (b, g) = open(d.path(), 1 << 30);
    let q = g.report.quarantined.clone().expect("quarantined");
    assert!(
        q.dir.join("skygate.db").exists(),
        "moved aside, never deleted"
    );
    assert!(q.dir.join("report.json").exists());
    assert_eq!(
        q.resumed_at_seq,
        ceiling + 1,
        "meta unreadable: resume above the seq ceiling"
    );
    rt().block_on(async {
        let r = b
            .append_durable(vec![new_record(&b, "s0", 5, 0)])
            .await
            .expect("append on fresh buffer");
        assert_eq!(r.first, q.resumed_at_seq);
        let gaps = b
            .pending_gaps(b.sink_id("a").expect("a"))
            .await
            .expect("gaps");
        assert!(
            gaps.iter().any(|g| g.stream == "*"
                && g.count.is_none()
                && g.reason.starts_with("quarantine")),
            "{gaps:?}"
        );
    });
    g.close_blocking();
    let report = super::ops::fsck(d.path()).expect("fsck");
    assert!(!report.ok);
    assert_eq!(report.quarantines.len(), 1);
}

#[test]
fn a_database_that_fails_its_check_is_salvaged_with_original_seqs() {
    let d = tempfile::tempdir().expect("tmp");
    rt().block_on(async {
        let (b, g) = open(d.path(), 1 << 30);
        b.append_durable((0..20).map(|i| new_record(&b, "s1", 5, i)).collect())
            .await
            .expect("append");
        g.close().await;
    });
    // A schema version this agent does not write: fails the check, rows stay readable.
    let conn = rusqlite::Connection::open(d.path().join("skygate.db")).expect("open");
    conn.execute(
        "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
        [],
    )
    .expect("update");
    drop(conn);
    let (b, g) = open(d.path(), 1 << 30);
    let q = g.report.quarantined.clone().expect("quarantined");
    assert_eq!(q.salvaged_records, 20);
    assert_eq!(q.resumed_at_seq, 21, "meta was readable: no jump");
    rt().block_on(async {
        let seqs: Vec<u64> = pending(&b, "b").await.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    });
    g.close_blocking();
}

#[test]
fn replay_marks_records_pending_again_and_refuses_while_the_agent_runs() {
    let d = tempfile::tempdir().expect("tmp");
    rt().block_on(async {
        let (b, g) = open(d.path(), 1 << 30);
        b.append_durable((0..4).map(|i| new_record(&b, "s1", 5, i)).collect())
            .await
            .expect("append");
        b.ack(b.sink_id("b").expect("b"), 1, 4).await.expect("ack");
        b.sync().await.expect("sync");
        assert!(matches!(
            super::ops::replay(d.path(), "b", &super::ops::Selection::default()),
            Err(BufferError::Locked { .. })
        ));
        g.close().await;
    });
    let n = super::ops::replay(
        d.path(),
        "b",
        &super::ops::Selection {
            from_seq: Some(2),
            to_seq: Some(3),
            ..Default::default()
        },
    )
    .expect("replay");
    assert_eq!(n, 2);
    let (b, g) = open(d.path(), 1 << 30);
    rt().block_on(async {
        let seqs: Vec<u64> = pending(&b, "b").await.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![2, 3]);
    });
    g.close_blocking();
}

#[test]
fn export_writes_the_documented_ndjson_with_blobs_inline() {
    let d = tempfile::tempdir().expect("tmp");
    rt().block_on(async {
        let (b, g) = open(d.path(), 1 << 30);
        let mut r = new_record(&b, "s0", 5, 0);
        r.record.reading.value =
            Value::Blob(Blob::new("text/plain", None, Bytes::from_static(b"hello")));
        b.append_durable(vec![r, new_record(&b, "s0", 5, 1)])
            .await
            .expect("append");
        g.close().await;
    });
    let mut out = Vec::new();
    let n =
        super::ops::export(d.path(), &super::ops::Selection::default(), &mut out).expect("export");
    assert_eq!(n, 2);
    let lines: Vec<serde_json::Value> = out
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("json"))
        .collect();
    assert_eq!(lines[0]["gateway"], "gw-test");
    assert_eq!(lines[0]["seq"], 1);
    assert_eq!(lines[0]["value"]["data_base64"], "aGVsbG8=");
    assert_eq!(lines[1]["type"], "integer");
}

#[test]
fn a_database_removed_by_hand_never_lets_seqs_be_reused_and_records_the_unknown_range() {
    let d = tempfile::tempdir().expect("tmp");
    rt().block_on(async {
        let (b, g) = open(d.path(), 1 << 30);
        b.append_durable((0..3).map(|i| new_record(&b, "s0", 5, i)).collect())
            .await
            .expect("append");
        g.close().await;
    });
    let ceiling = startup::read_hwm(d.path());
    std::fs::remove_file(d.path().join("skygate.db")).expect("rm db");
    // Start and stop without appending anything, then start again.
    open(d.path(), 1 << 30).1.close_blocking();
    let (b, g) = open(d.path(), 1 << 30);
    rt().block_on(async {
        let r = b
            .append_durable(vec![new_record(&b, "s0", 5, 0)])
            .await
            .expect("append");
        assert_eq!(
            r.first,
            ceiling + 1,
            "numbering continues above the ceiling, even after an idle start"
        );
        let gaps = b
            .pending_gaps(b.sink_id("a").expect("a"))
            .await
            .expect("gaps");
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert_eq!(
            (gaps[0].first_seq, gaps[0].last_seq),
            (ceiling - startup::HWM_RESERVE + 1, ceiling)
        );
        assert_eq!(gaps[0].count, None);
    });
    g.close_blocking();
}

#[test]
fn fsck_and_stats_read_one_snapshot_while_the_writer_commits() {
    let d = tempfile::tempdir().expect("tmp");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (b, g) = open(d.path(), 1 << 30);
        let writer = b.clone();
        let appender = tokio::spawn(async move {
            for n in 0..400 {
                let batch = (0..50)
                    .map(|i| new_record(&writer, "s0", 5, n * 50 + i))
                    .collect();
                writer.append_durable(batch).await.expect("append");
            }
        });
        let dir = d.path().to_path_buf();
        let checks = tokio::task::spawn_blocking(move || {
            let mut runs = 0;
            // Read while commits land between the statements of each command.
            while runs < 200 {
                let f = super::ops::fsck(&dir).expect("fsck");
                assert!(f.ok, "fsck while committing: {:?}", f.problems);
                let s = super::ops::stats(&dir).expect("stats");
                let by_stream: u64 = s.streams.iter().map(|x| x.records).sum();
                assert_eq!(
                    by_stream, s.records,
                    "per-stream counts from another moment"
                );
                runs += 1;
            }
        });
        checks.await.expect("checks");
        appender.await.expect("appender");
        g.close().await;
    });
}
