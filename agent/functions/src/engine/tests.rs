//! The engine: outputs filed and routed, lineage within and across appends, chained
//! workflows, and the hand-over at a reload.

use std::path::Path;
use std::sync::Arc;

use skygate_drivers::{Timestamp, Value};

use super::*;
use crate::spec::parse;
use skygate_model::fixtures::record;

fn spec(name: &str, yaml: &str) -> WorkflowSpec {
    parse(Path::new(&format!("{name}.yaml")), yaml).expect("workflow")
}

fn input(stream: &str, channel: &str, ts_s: i64, v: f64, sinks: u64) -> NewRecord {
    let mut record = record(stream, Value::Number(v));
    record.reading.channel = Arc::from(channel);
    record.reading.ts = Timestamp(ts_s * 1_000_000_000);
    NewRecord { record, sinks }
}

const SCALE: &str =
    "input: [wx]\nsteps: [{scale: {factor: 2}}]\noutput: {stream: wx.cal, sinks: [a]}\n";
const MINUTE: &str =
    "input: [wx]\nsteps: [{window: {every: 1m, stats: [count]}}]\noutput: {stream: wx.1m}\n";

#[test]
fn outputs_follow_their_inputs_in_the_same_append_and_name_them_relatively() {
    let view = WorkflowsView::default();
    let mut e = Engine::build(
        &[spec("cal", SCALE)],
        |_| 0b10,
        |_| 0,
        &BuildCx::default(),
        view.clone(),
    )
    .expect("engine");
    let mut batch = vec![
        input("wx", "t", 1, 1.0, 0),
        input("gps", "lat", 1, 52.0, 1),
        input("wx", "t", 2, 3.0, 0),
    ];
    e.process(&mut batch, 7);
    assert_eq!(e.needs(7), None, "everything it names is in this append");
    e.stamp(&mut batch, 7);
    assert_eq!(batch.len(), 5);
    let out: Vec<(&str, &Value, u64)> = batch[3..]
        .iter()
        .map(|n| (&*n.record.stream, &n.record.reading.value, n.sinks))
        .collect();
    assert_eq!(
        out,
        [
            ("wx.cal", &Value::Number(2.0), 0b10),
            ("wx.cal", &Value::Number(6.0), 0b10)
        ]
    );
    let l = batch[3].record.lineage.as_ref().expect("lineage");
    assert_eq!(
        (l.first, l.last, l.count),
        (SeqRef::Back(3), SeqRef::Back(3), 1)
    );
    assert_eq!(&*l.workflow, "cal");
    let l = batch[4].record.lineage.as_ref().expect("lineage");
    assert_eq!(l.first, SeqRef::Back(2), "index 4 names index 2");
    assert!(
        batch[..3].iter().all(|n| n.record.lineage.is_none()),
        "inputs are as they came"
    );
    let st = &view.status()[0];
    assert_eq!((st.records_in, st.records_out, st.errors), (2, 2, 0));
}

#[test]
fn a_window_names_inputs_of_earlier_appends_by_seq_once_their_numbers_are_known() {
    let mut e = Engine::build(
        &[spec("minute", MINUTE)],
        |_| 1,
        |_| 0,
        &BuildCx::default(),
        WorkflowsView::default(),
    )
    .expect("engine");
    let mut b1 = vec![input("wx", "t", 0, 1.0, 0), input("wx", "t", 10, 1.0, 0)];
    e.process(&mut b1, 1);
    e.stamp(&mut b1, 1);
    assert_eq!(b1.len(), 2, "the minute is still open");
    let mut b2 = vec![
        input("other", "x", 0, 0.0, 1),
        input("wx", "t", 59, 1.0, 0),
        input("wx", "t", 60, 1.0, 0),
    ];
    e.process(&mut b2, 2);
    assert_eq!(b2.len(), 4, "the first minute closed");
    assert_eq!(e.needs(2), Some(1), "batch 1's seqs are not known yet");
    e.numbered(1, 100);
    assert_eq!(e.needs(2), None);
    e.stamp(&mut b2, 2);
    let l = b2[3].record.lineage.as_ref().expect("lineage");
    // First input: batch 1 index 0 = seq 100; last: batch 2 index 1, two before index 3.
    assert_eq!(
        (l.first, l.last, l.count),
        (SeqRef::Seq(100), SeqRef::Back(2), 3)
    );
    assert_eq!(b2[3].record.reading.value, Value::Integer(3));
    // Batch 1's number is forgotten once no window refers to it; batch 2's is kept.
    e.numbered(2, 103);
    let mut b3 = Vec::new();
    e.process(&mut b3, 3);
    e.stamp(&mut b3, 3);
    assert_eq!(e.numbers.keys().copied().collect::<Vec<_>>(), [2]);
}

#[test]
fn chained_workflows_run_in_feeding_order_within_one_append() {
    let first = spec("cal", SCALE);
    let second = spec(
        "hot",
        "input: [wx.cal]\nsteps: [{filter: {expr: \"value > 5\"}}]\noutput: {stream: wx.hot}\n",
    );
    // Given in the wrong order on purpose.
    let mut e = Engine::build(
        &[second, first],
        |_| 1,
        |_| 0,
        &BuildCx::default(),
        WorkflowsView::default(),
    )
    .expect("engine");
    let mut batch = vec![input("wx", "t", 1, 1.0, 0), input("wx", "t", 2, 4.0, 0)];
    e.process(&mut batch, 1);
    e.stamp(&mut batch, 1);
    let streams: Vec<&str> = batch.iter().map(|n| &*n.record.stream).collect();
    assert_eq!(streams, ["wx", "wx", "wx.cal", "wx.cal", "wx.hot"]);
    let l = batch[4].record.lineage.as_ref().expect("lineage");
    assert_eq!(
        (&*l.workflow, l.first),
        ("hot", SeqRef::Back(1)),
        "names wx.cal's record"
    );
}

#[test]
fn a_reload_keeps_the_state_of_unchanged_workflows_and_flushes_the_others() {
    let view = WorkflowsView::default();
    let mut old = Engine::build(
        &[
            spec("minute", MINUTE),
            spec(
                "five",
                &MINUTE.replace("1m", "5m").replace("wx.1m", "wx.5m"),
            ),
        ],
        |_| 1,
        |_| 0,
        &BuildCx::default(),
        view.clone(),
    )
    .expect("engine");
    let mut b1 = vec![input("wx", "t", 0, 1.0, 0), input("wx", "t", 1, 1.0, 0)];
    old.process(&mut b1, 1);
    old.stamp(&mut b1, 1);
    old.numbered(1, 50);
    // The new set: `minute` unchanged, `five` gone.
    let mut new = Engine::build(
        &[spec("minute", MINUTE)],
        |_| 1,
        |_| 0,
        &BuildCx::default(),
        view.clone(),
    )
    .expect("engine");
    let mut flushed = Vec::new();
    new.adopt(Some(old), &mut flushed);
    assert_eq!(flushed.len(), 1, "the 5-minute window came out, cut short");
    assert_eq!(&*flushed[0].record.stream, "wx.5m");
    assert_eq!(
        new.needs(2),
        None,
        "batch 1's number came over from the old engine"
    );
    new.stamp(&mut flushed, 2);
    let l = flushed[0].record.lineage.as_ref().expect("lineage");
    assert_eq!((l.first, l.last), (SeqRef::Seq(50), SeqRef::Seq(51)));
    // The kept minute still holds both readings: no reading lost or counted twice.
    let mut b3 = vec![input("wx", "t", 60, 1.0, 0)];
    new.process(&mut b3, 3);
    assert_eq!(b3[1].record.reading.value, Value::Integer(2));
    assert_eq!(view.status().len(), 1);
    assert_eq!(view.status()[0].records_in, 3, "counters carried over");
}
