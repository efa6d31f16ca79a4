//! Each built-in against values computed by hand.

use std::sync::Arc;
use std::time::Duration;

use skygate_drivers::{Quality, Timestamp, Value};

use super::*;
use crate::spec::{Selector, Stat, StepSpec};
use skygate_model::fixtures::record;

const S: i64 = 1_000_000_000;

/// A reading of `channel` from `mast` at `ts_s` seconds, as input `idx` of batch 1.
fn item(idx: u32, channel: &str, ts_s: f64, v: Value) -> Item {
    let mut rec = record("wx", v);
    rec.reading.source = Arc::from("mast");
    rec.reading.channel = Arc::from(channel);
    rec.reading.ts = Timestamp((ts_s * S as f64) as i64);
    rec.reading.unit = Some(Arc::from("m/s"));
    Item {
        rec,
        from: Span::one(Ref { batch: 1, idx }),
    }
}

fn num(idx: u32, channel: &str, ts_s: f64, v: f64) -> Item {
    item(idx, channel, ts_s, Value::Number(v))
}

/// Runs `items` through one step; returns what came out and the errors counted.
fn run(step: &mut dyn Step, mut items: Vec<Item>) -> (Vec<Item>, StepErrors) {
    let mut out = Vec::new();
    let mut errors = StepErrors::default();
    step.run(&mut items, &mut out, &mut errors);
    assert!(items.is_empty(), "a step takes all of its input");
    (out, errors)
}

fn values(out: &[Item]) -> Vec<(String, Value)> {
    out.iter()
        .map(|i| {
            (
                i.rec.reading.channel.to_string(),
                i.rec.reading.value.clone(),
            )
        })
        .collect()
}

fn build_step(spec: &StepSpec) -> Box<dyn Step> {
    build(spec, &BuildCx::default())
}

fn all() -> Selector {
    Selector::default()
}

#[test]
fn scale_calibrates_selected_numbers_and_leaves_the_rest() {
    let mut s = build_step(&StepSpec::Scale {
        channels: Selector(vec!["t*".into()]),
        factor: 0.5,
        offset: -3.0,
        unit: Some("degC".into()),
    });
    let (out, errors) = run(
        &mut *s,
        vec![
            num(0, "temp", 1.0, 10.0),
            item(1, "temp", 1.0, Value::Integer(7)),
            num(2, "wind", 1.0, 10.0),
            item(3, "tag", 1.0, Value::Text("x".into())),
        ],
    );
    assert_eq!(
        values(&out),
        [
            ("temp".into(), Value::Number(2.0)),
            ("temp".into(), Value::Number(0.5)),
            ("wind".into(), Value::Number(10.0)),
            ("tag".into(), Value::Text("x".into())),
        ]
    );
    assert_eq!(out[0].rec.reading.unit.as_deref(), Some("degC"));
    assert_eq!(
        out[2].rec.reading.unit.as_deref(),
        Some("m/s"),
        "unselected: untouched"
    );
    assert_eq!(
        errors.count, 1,
        "text cannot be scaled: passed on and counted"
    );
    assert!(errors.last.expect("reason").contains("tag is not a number"));
}

#[test]
fn convert_uses_the_records_unit_and_refuses_other_units() {
    let mut s = build_step(&StepSpec::Convert {
        channels: all(),
        from: Some("m/s".into()),
        to: "km/h".into(),
    });
    let mut knots = num(1, "gust", 1.0, 10.0);
    knots.rec.reading.unit = Some(Arc::from("kn"));
    let (out, errors) = run(&mut *s, vec![num(0, "wind", 1.0, 10.0), knots]);
    assert_eq!(out[0].rec.reading.value, Value::Number(36.0));
    assert_eq!(out[0].rec.reading.unit.as_deref(), Some("km/h"));
    assert_eq!(
        out[1].rec.reading.value,
        Value::Number(10.0),
        "knots are not m/s"
    );
    assert_eq!(errors.count, 1);
}

#[test]
fn rename_and_tag_change_names_priority_source_and_unit() {
    let mut r = build_step(&StepSpec::Rename {
        channel: "t".into(),
        to: "air_temperature".into(),
    });
    let (out, _) = run(&mut *r, vec![num(0, "t", 1.0, 1.0), num(1, "tt", 1.0, 1.0)]);
    assert_eq!(&*out[0].rec.reading.channel, "air_temperature");
    assert_eq!(
        &*out[1].rec.reading.channel, "tt",
        "rename is exact, not a glob"
    );
    let mut t = build_step(&StepSpec::Tag {
        channels: all(),
        unit: Some("K".into()),
        priority: Some(8),
        source: Some("mast-2".into()),
    });
    let (out, _) = run(&mut *t, vec![num(0, "t", 1.0, 1.0)]);
    let rec = &out[0].rec;
    assert_eq!(
        (
            rec.priority,
            &*rec.reading.source,
            rec.reading.unit.as_deref()
        ),
        (8, "mast-2", Some("K"))
    );
}

#[test]
fn filter_keeps_what_the_expression_accepts_and_keeps_what_it_cannot_judge() {
    let mut f = build_step(&StepSpec::Filter {
        channels: Selector(vec!["temp".into()]),
        expr: "value > -40 && value < 60 && quality == \"good\"".into(),
    });
    let mut bad = num(2, "temp", 1.0, 20.0);
    bad.rec.reading.quality = Quality::Bad("sensor".into());
    let (out, errors) = run(
        &mut *f,
        vec![
            num(0, "temp", 1.0, 20.0),
            num(1, "temp", 1.0, 85.0),
            bad,
            num(3, "wind", 1.0, 85.0),
            item(4, "temp", 1.0, Value::Text("n/a".into())),
        ],
    );
    let kept: Vec<u32> = out.iter().map(|i| i.from.first.idx).collect();
    assert_eq!(
        kept,
        [0, 3, 4],
        "85 and bad quality dropped; wind not selected"
    );
    assert_eq!(
        errors.count, 1,
        "text compared with a number: kept, counted"
    );
}

#[test]
fn derive_computes_the_dew_point_from_one_instant_and_names_both_inputs() {
    let mut d = build_step(&StepSpec::Derive {
        channel: "dew_point".into(),
        expr: "243.12 * (math::ln(rh / 100.0) + 17.62 * t / (243.12 + t)) / (17.62 - (math::ln(rh / 100.0) + 17.62 * t / (243.12 + t)))".into(),
        unit: Some("degC".into()),
        inputs: [("t", "temperature"), ("rh", "humidity")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    });
    let (out, _) = run(
        &mut *d,
        vec![
            num(0, "temperature", 10.0, 20.0),
            num(1, "wind", 10.0, 3.0),
            num(2, "humidity", 10.0, 50.0),
            // Humidity of the next instant alone: nothing derived yet.
            num(3, "humidity", 11.0, 60.0),
        ],
    );
    assert_eq!(
        out.len(),
        5,
        "inputs pass, one derived record after the completing one"
    );
    let dp = &out[3];
    assert_eq!(&*dp.rec.reading.channel, "dew_point");
    let Value::Number(x) = dp.rec.reading.value else {
        panic!("number")
    };
    // By hand: g = ln(0.5) + 17.62*20/263.12 = 0.646166; 243.12*g/(17.62-g) = 9.25517
    assert!((x - 9.25517).abs() < 1e-4, "{x}");
    assert_eq!(dp.rec.reading.unit.as_deref(), Some("degC"));
    assert_eq!(dp.rec.reading.ts, Timestamp(10 * S));
    assert_eq!(
        (dp.from.first.idx, dp.from.last.idx, dp.from.count),
        (0, 2, 2)
    );
    // The instant at 11 s completes in the next batch.
    let (out, _) = run(&mut *d, vec![num(7, "temperature", 11.0, 0.0)]);
    assert_eq!(out.len(), 2);
    assert_eq!((out[1].from.first.idx, out[1].from.last.idx), (3, 7));
    // Both again for a finished instant: no second derived record.
    let (out, _) = run(&mut *d, vec![num(8, "temperature", 11.0, 0.0)]);
    assert_eq!(out.len(), 1);
}

#[test]
fn deadband_reports_by_exception_and_after_silence() {
    let mut d = build_step(&StepSpec::Deadband {
        channels: all(),
        abs: Some(0.5),
        pct: None,
        max_silence: Some(Duration::from_secs(60)),
    });
    let input = [
        (0.0, 10.0),
        (1.0, 10.4),
        (2.0, 10.5),
        (3.0, 10.2),
        (4.0, 9.9),
        (70.0, 9.9),
    ];
    let items = input
        .iter()
        .enumerate()
        .map(|(i, (t, v))| num(i as u32, "wind", *t, *v))
        .collect();
    let (out, _) = run(&mut *d, items);
    let passed: Vec<u32> = out.iter().map(|i| i.from.first.idx).collect();
    // 10.0 first; 10.4 (0.4) no; 10.5 (0.5) yes; 10.2 (0.3) no; 9.9 (0.6) yes;
    // 9.9 at 70 s: 66 s of silence since 4 s, so yes.
    assert_eq!(passed, [0, 2, 4, 5]);
    let mut p = build_step(&StepSpec::Deadband {
        channels: all(),
        abs: None,
        pct: Some(10.0),
        max_silence: None,
    });
    let (out, _) = run(
        &mut *p,
        vec![
            num(0, "p", 0.0, 100.0),
            num(1, "p", 1.0, 109.0),
            num(2, "p", 2.0, 110.0),
            num(3, "p", 3.0, 120.0),
        ],
    );
    let passed: Vec<u32> = out.iter().map(|i| i.from.first.idx).collect();
    assert_eq!(
        passed,
        [0, 2],
        "10 % of 100 is 10; then 10 % of 110 is 11, 120 moved 10"
    );
}

#[test]
fn alarm_raises_above_clears_only_below_the_hysteresis_and_raises_priority() {
    let mut a = build_step(&StepSpec::Alarm {
        channels: Selector(vec!["wind".into()]),
        above: Some(15.0),
        below: None,
        hysteresis: 2.0,
        priority: 9,
    });
    let winds = [14.0, 15.0, 15.5, 14.0, 13.5, 12.9, 15.1];
    let items = winds
        .iter()
        .enumerate()
        .map(|(i, v)| num(i as u32, "wind", i as f64, *v))
        .collect();
    let (out, _) = run(&mut *a, items);
    let seen: Vec<(String, Value, u8)> = out
        .iter()
        .map(|i| {
            (
                i.rec.reading.channel.to_string(),
                i.rec.reading.value.clone(),
                i.rec.priority,
            )
        })
        .collect();
    let n = |v: f64, p: u8| ("wind".to_string(), Value::Number(v), p);
    let ev = |on: bool| ("wind_alarm".to_string(), Value::Bool(on), 9);
    assert_eq!(
        seen,
        [
            n(14.0, 5),
            n(15.0, 5), // not above 15
            n(15.5, 9),
            ev(true),
            n(14.0, 9), // still above 13
            n(13.5, 9),
            n(12.9, 5),
            ev(false),
            n(15.1, 9),
            ev(true),
        ]
    );
}

#[test]
fn windows_aggregate_tumbling_minutes_at_their_edges() {
    let mut w = build_step(&StepSpec::Window {
        channels: Selector(vec!["wind".into()]),
        every: Duration::from_secs(60),
        stats: vec![
            Stat::Mean,
            Stat::Min,
            Stat::Max,
            Stat::Count,
            Stat::Stddev,
            Stat::Last,
        ],
        grace: Duration::from_secs(2),
    });
    // 59.999 s belongs to the first minute, 60.0 s opens the second.
    let (out, _) = run(
        &mut *w,
        vec![
            num(0, "wind", 0.0, 2.0),
            num(1, "wind", 30.0, 4.0),
            num(2, "temp", 30.0, 7.0),
            num(3, "wind", 59.999, 9.0),
            num(4, "wind", 60.0, 100.0),
        ],
    );
    assert_eq!(
        out.len(),
        7,
        "temp passes; the first minute closes with six statistics"
    );
    assert_eq!(&*out[0].rec.reading.channel, "temp");
    let stats: Vec<(String, Value)> = values(&out[1..]);
    // mean 5; population stddev sqrt(((2-5)^2 + (4-5)^2 + (9-5)^2) / 3) = sqrt(26/3)
    assert_eq!(
        stats,
        [
            ("wind_mean".into(), Value::Number(5.0)),
            ("wind_min".into(), Value::Number(2.0)),
            ("wind_max".into(), Value::Number(9.0)),
            ("wind_count".into(), Value::Integer(3)),
            ("wind_stddev".into(), Value::Number((26.0f64 / 3.0).sqrt())),
            ("wind_last".into(), Value::Number(9.0)),
        ]
    );
    let first = &out[1];
    assert_eq!(
        first.rec.reading.ts,
        Timestamp(0),
        "stamped with the window's start"
    );
    assert_eq!(
        (first.from.first.idx, first.from.last.idx, first.from.count),
        (0, 3, 3)
    );
    assert_eq!(out[4].rec.reading.unit, None, "a count has no unit");
    // A late reading of the first minute is not aggregated into the second.
    let (out, errors) = run(&mut *w, vec![num(5, "wind", 10.0, 1000.0)]);
    assert!(out.is_empty());
    assert_eq!(errors.count, 1);
    // The clock closes the second minute once 120 s + 2 s grace have passed.
    let mut out = Vec::new();
    w.tick(Timestamp(121 * S), &mut out);
    assert!(out.is_empty(), "still within the grace");
    w.tick(Timestamp(122 * S), &mut out);
    assert_eq!(out.len(), 6);
    assert_eq!(out[0].rec.reading.value, Value::Number(100.0));
    assert_eq!(out[0].rec.reading.ts, Timestamp(60 * S));
    assert_eq!(w.oldest_ref(), None, "nothing held any more");
}

#[test]
fn a_flushed_window_comes_out_marked_as_cut_short() {
    let mut w = build_step(&StepSpec::Window {
        channels: all(),
        every: Duration::from_secs(60),
        stats: vec![Stat::Count],
        grace: Duration::ZERO,
    });
    let (out, _) = run(&mut *w, vec![num(0, "a", 1.0, 1.0), num(1, "a", 2.0, 1.0)]);
    assert!(out.is_empty());
    assert_eq!(w.oldest_ref(), Some(Ref { batch: 1, idx: 0 }));
    let mut out = Vec::new();
    w.flush(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].rec.reading.value, Value::Integer(2));
    assert!(
        matches!(&out[0].rec.reading.quality, Quality::Uncertain(r) if r.contains("cut short"))
    );
}

#[test]
fn downsample_keeps_the_first_reading_of_each_interval_per_channel() {
    let mut d = build_step(&StepSpec::Downsample {
        channels: all(),
        every: Duration::from_secs(10),
    });
    let (out, _) = run(
        &mut *d,
        vec![
            num(0, "a", 0.0, 1.0),
            num(1, "b", 1.0, 1.0),
            num(2, "a", 9.9, 1.0),
            num(3, "a", 10.0, 1.0),
            num(4, "a", 15.0, 1.0),
            num(5, "a", 20.5, 1.0),
        ],
    );
    let kept: Vec<u32> = out.iter().map(|i| i.from.first.idx).collect();
    assert_eq!(kept, [0, 1, 3, 5]);
}
