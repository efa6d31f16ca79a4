//! Workflow files: what loads, and where each kind of mistake is pointed at.

use std::path::Path;

use super::*;

const GOOD: &str = "\
name: weather
input: [weather, \"mast-*\"]
steps:
  - scale: {channels: [temperature], factor: 1.0, offset: -0.3, unit: degC}
  - convert: {channels: [wind_speed], from: m/s, to: km/h}
  - derive:
      channel: dew_point
      unit: degC
      inputs: {t: temperature, rh: humidity}
      expr: \"t - (100 - rh) / 5\"
  - alarm: {channels: [wind_speed], above: 50, hysteresis: 5}
  - deadband: {channels: [pressure], abs: 0.5, max_silence: 10m}
  - window: {every: 1m, stats: [mean, max]}
  - downsample: {channels: [wind_direction], every: 10s}
  - filter: {expr: \"quality != \\\"bad\\\"\"}
  - rename: {channel: temperature_mean, to: air_temperature}
  - tag: {priority: 7}
output:
  stream: weather.1m
  sinks: [archive]
";

fn parse_str(text: &str) -> Result<WorkflowSpec, ConfigError> {
    parse(Path::new("wf/weather.yaml"), text)
}

fn err(text: &str) -> String {
    parse_str(text).expect_err("must not load").to_string()
}

#[test]
fn a_full_workflow_loads_with_every_built_in() {
    let w = parse_str(GOOD).expect("loads");
    assert_eq!(w.name, "weather");
    assert_eq!(w.input, ["weather", "mast-*"]);
    let f: Vec<&str> = w.steps.iter().map(StepSpec::function).collect();
    assert_eq!(
        f,
        [
            "scale",
            "convert",
            "derive",
            "alarm",
            "deadband",
            "window",
            "downsample",
            "filter",
            "rename",
            "tag"
        ]
    );
    assert_eq!(w.output_stream, "weather.1m");
    assert_eq!(w.sinks[0].0, "archive");
    assert!(w.takes("weather") && w.takes("mast-3") && !w.takes("weather.1m"));
    match &w.steps[2] {
        StepSpec::Derive { inputs, .. } => {
            assert_eq!(inputs["t"], "temperature");
            assert_eq!(inputs["rh"], "humidity");
        }
        other => panic!("{other:?}"),
    }
    match &w.steps[3] {
        StepSpec::Alarm { priority, .. } => assert_eq!(*priority, 9, "default priority"),
        other => panic!("{other:?}"),
    }
    check_set(std::slice::from_ref(&w), ["archive"]).expect("sinks exist, no cycle");
}

#[test]
fn the_name_defaults_to_the_file_name() {
    let w = parse(
        Path::new("/etc/skygate/sky-clear.yaml"),
        "input: [sky]\nsteps: [{downsample: {every: 1m}}]\noutput: {stream: sky.1m}\n",
    )
    .expect("loads");
    assert_eq!(w.name, "sky-clear");
}

#[test]
fn an_unknown_function_is_named_at_its_line_and_column() {
    let e = err(
        "input: [a]\nsteps:\n  - scale: {factor: 2}\n  - smooth: {n: 3}\noutput: {stream: b}\n",
    );
    assert!(
        e.starts_with("wf/weather.yaml:4:5: unknown variant `smooth`"),
        "{e}"
    );
    assert!(e.contains("expected one of scale, convert"), "{e}");
}

#[test]
fn bad_parameters_are_named_where_they_are() {
    let e = err(
        "input: [a]\nsteps:\n  - scale:\n      factor: 2\n      colour: 3\noutput: {stream: b}\n",
    );
    assert!(
        e.starts_with("wf/weather.yaml:5:7: unknown field `colour`"),
        "{e}"
    );
    let e = err("input: [a]\nsteps:\n  - scale: {factor: lots}\noutput: {stream: b}\n");
    assert!(e.starts_with("wf/weather.yaml:3:21:"), "{e}");
    let e = err("input: [a]\nsteps:\n  - window: {every: soon}\noutput: {stream: b}\n");
    assert!(e.starts_with("wf/weather.yaml:3:21: every \"soon\""), "{e}");
    let e = err("input: [a]\nsteps:\n  - convert: {from: degC, to: m/s}\noutput: {stream: b}\n");
    assert!(e.starts_with("wf/weather.yaml:3:21: cannot convert"), "{e}");
    let e = err("input: [a]\nsteps:\n  - filter: {expr: \"value >\"}\noutput: {stream: b}\n");
    assert!(
        e.starts_with("wf/weather.yaml:3:20: expression \"value >\""),
        "{e}"
    );
    let e = err("input: [a]\nsteps:\n  - filter: {expr: \"humidity > 3\"}\noutput: {stream: b}\n");
    assert!(e.contains("filter expression reads \"humidity\""), "{e}");
    let e = err("input: [a]\nsteps:\n  - alarm: {above: 10, priority: 12}\noutput: {stream: b}\n");
    assert!(e.starts_with("wf/weather.yaml:3:34: priority 12"), "{e}");
    let e = err("input: [a]\nsteps:\n  - alarm: {hysteresis: 1}\noutput: {stream: b}\n");
    assert!(
        e.starts_with("wf/weather.yaml:3:5: alarm needs above or below"),
        "{e}"
    );
    let e = err(
        "input: [a]\nsteps:\n  - derive: {channel: x, expr: \"math::nope(t)\"}\noutput: {stream: b}\n",
    );
    assert!(e.contains("unknown function \"math::nope\""), "{e}");
}

#[test]
fn broken_yaml_and_missing_sections_are_refused() {
    let e = err("input: [a]\nsteps:\n  - scale: {factor: 2\noutput: {stream: b}\n");
    assert!(e.starts_with("wf/weather.yaml:"), "{e}");
    let e = err("input: [a]\nsteps: []\noutput: {stream: b}\n");
    assert!(e.contains("needs at least one step"), "{e}");
    let e = err("input: []\nsteps: [{tag: {priority: 1}}]\noutput: {stream: b}\n");
    assert!(e.contains("`input` needs at least one stream"), "{e}");
    let e = err("input: [a]\nsteps: [{tag: {priority: 1}}]\n");
    assert!(e.contains("output"), "{e}");
    let e = err("input: [a]\nsteps: [{tag: {priority: 1}}]\noutput: {stream: \"b c\"}\n");
    assert!(e.starts_with("wf/weather.yaml:3:18: output stream"), "{e}");
}

fn flow(name: &str, input: &str, output: &str) -> WorkflowSpec {
    parse(
        Path::new(&format!("wf/{name}.yaml")),
        &format!("input: [{input}]\nsteps: [{{tag: {{priority: 1}}}}]\noutput:\n  stream: {output}\n  sinks: [archive]\n"),
    )
    .expect("loads")
}

#[test]
fn cycles_between_workflows_are_refused_at_the_output_that_closes_them() {
    let set = [
        flow("a", "raw", "x"),
        flow("b", "x", "y"),
        flow("c", "\"y*\"", "raw"),
    ];
    let e = check_set(&set, ["archive"]).expect_err("cycle").to_string();
    assert!(
        e.starts_with("wf/a.yaml:4:11: workflow cycle: a -> b -> c -> a"),
        "{e}"
    );
    let e = check_set(&[flow("self", "\"s*\"", "s.out")], ["archive"])
        .expect_err("self loop")
        .to_string();
    assert!(e.contains("workflow cycle: self -> self"), "{e}");
    // A chain without a loop is fine, and runs in feeding order.
    let chain = [
        flow("c", "y", "z"),
        flow("a", "raw", "x"),
        flow("b", "x", "y"),
    ];
    check_set(&chain, ["archive"]).expect("chain");
    assert_eq!(feeding_order(&chain), [1, 2, 0]);
}

#[test]
fn unknown_sinks_and_duplicate_names_are_refused() {
    let e = check_set(&[flow("a", "raw", "x")], ["kafka", "uplink"])
        .expect_err("unknown sink")
        .to_string();
    assert_eq!(
        e,
        "wf/a.yaml:5:11: unknown sink \"archive\"; defined sinks: kafka, uplink"
    );
    let e = check_set(&[flow("a", "raw", "x"), flow("a", "raw", "y")], ["archive"])
        .expect_err("duplicate")
        .to_string();
    assert!(
        e.contains("workflow name \"a\" is also used by wf/a.yaml"),
        "{e}"
    );
}

#[test]
fn moving_lines_does_not_change_a_workflow() {
    let a = parse_str(GOOD).expect("loads");
    let b = parse_str(&format!("# a comment on top\n\n{GOOD}")).expect("loads");
    assert_eq!(a, b, "positions do not count");
    let c = parse_str(&GOOD.replace("factor: 1.0", "factor: 1.1")).expect("loads");
    assert_ne!(a, c);
}
