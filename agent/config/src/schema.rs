//! The configuration's JSON Schema (`config/skygate.schema.json`, `skygate config-schema`),
//! derived from the raw types every file is parsed into, so that editors validate and
//! complete a config as it is typed (Taplo / Even Better TOML: a `#:schema` line at the
//! top of the file, or a schema association for `/etc/skygate/**/*.toml`).
//!
//! It describes one file, a main file or a drop-in alike (no key is required at the top).
//! A driver or sink table is checked against its `kind`'s keys, common keys included, and
//! nothing else. What needs more than one file or more than types and patterns (a route
//! naming a sink defined elsewhere, a TLS key without its certificate) stays with
//! `check-config`, which remains the authority: a file the schema accepts can still be
//! refused there, with the reason.

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::raw::{DriverCommonRaw, SinkCommonRaw, TopRaw};

/// Draft-07: the draft the TOML editor plugins implement. TOML has no null, so an
/// optional key is just its type (and errors name the key, not "any of the schemas").
fn generate<T: JsonSchema>() -> Map<String, Value> {
    let mut schema = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    drop_null(&mut schema);
    match schema {
        Value::Object(m) => m,
        other => unreachable!("a struct's schema is an object: {other}"),
    }
}

/// `Option<T>` as schemars writes it (`anyOf [T, null]`, `type [t, "null"]`,
/// `default: null`) becomes `T`.
fn drop_null(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.get("default") == Some(&Value::Null) {
                m.remove("default");
            }
            if let Some(Value::Array(types)) = m.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let t = types.pop().expect("one type");
                    m.insert("type".into(), t);
                }
            }
            if let Some(Value::Array(any)) = m.get_mut("anyOf") {
                any.retain(|s| s.get("type").is_none_or(|t| t != "null"));
                if any.len() == 1
                    && let Some(Value::Object(only)) = any.pop()
                {
                    m.remove("anyOf");
                    for (k, val) in only {
                        m.entry(k).or_insert(val);
                    }
                }
            }
            m.values_mut().for_each(drop_null);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_null),
        _ => {}
    }
}

/// Each driver kind and the raw type its table is read into (`raw::parse_file` dispatches
/// on the same names; a test keeps the two lists equal).
fn driver_kinds() -> Vec<(&'static str, Map<String, Value>)> {
    use skygate_drivers as d;
    vec![
        ("sim", generate::<d::sim::SimConfigRaw>()),
        ("modbus", generate::<d::modbus::ModbusConfigRaw>()),
        ("serial", generate::<d::serial::SerialConfigRaw>()),
        ("http", generate::<d::http::HttpConfigRaw>()),
        ("mqtt", generate::<d::mqtt::MqttConfigRaw>()),
        ("files", generate::<d::files::FilesConfigRaw>()),
    ]
}

fn sink_kinds() -> Vec<(&'static str, Map<String, Value>)> {
    use skygate_sinks as sinks;
    vec![
        ("bucket", generate::<sinks::bucket::BucketSinkRaw>()),
        ("mqtt", generate::<sinks::mqtt::MqttSinkRaw>()),
        #[cfg(feature = "kafka")]
        ("kafka", generate::<sinks::kafka::KafkaSinkRaw>()),
    ]
}

/// The whole schema.
pub fn schema() -> Value {
    let mut root = generate::<TopRaw>();
    let mut defs = match root.remove("definitions") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let drivers = named_tables(
        "driver",
        generate::<DriverCommonRaw>(),
        driver_kinds(),
        &mut defs,
    );
    let sinks = named_tables("sink", generate::<SinkCommonRaw>(), sink_kinds(), &mut defs);
    let props = root
        .entry("properties")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("properties is an object");
    props.insert("drivers".into(), drivers);
    props.insert("sinks".into(), sinks);
    root.insert(
        "$id".into(),
        json!("https://skygate.invalid/skygate.schema.json"),
    );
    root.insert("title".into(), json!("Skygate agent configuration"));
    root.insert(
        "description".into(),
        json!("One Skygate config file (main file or conf.d drop-in); `skygate check-config` is the authority"),
    );
    root.insert("definitions".into(), Value::Object(defs));
    Value::Object(root)
}

/// `[drivers.NAME]` or `[sinks.NAME]`: a map of tables, each checked by its `kind` against
/// the common keys plus that kind's (draft-07 `if`/`then`, so an editor reports the key
/// that is wrong rather than "matches none of N alternatives").
fn named_tables(
    what: &str,
    common: Map<String, Value>,
    kinds: Vec<(&'static str, Map<String, Value>)>,
    defs: &mut Map<String, Value>,
) -> Value {
    let names: Vec<&str> = kinds.iter().map(|(k, _)| *k).collect();
    let mut cases = Vec::new();
    for (kind, mut schema) in kinds {
        if let Some(Value::Object(d)) = schema.remove("definitions") {
            defs.extend(d);
        }
        let mut props = Map::new();
        props.insert("kind".into(), json!({ "const": kind }));
        for source in [&common, &schema] {
            if let Some(Value::Object(p)) = source.get("properties") {
                props.extend(p.clone());
            }
        }
        let mut required = vec![json!("kind")];
        if let Some(Value::Array(r)) = schema.get("required") {
            required.extend(r.iter().cloned());
        }
        let mut then = Map::new();
        if let Some(d) = schema.get("description") {
            then.insert("description".into(), d.clone());
        }
        then.insert("properties".into(), Value::Object(props));
        then.insert("required".into(), Value::Array(required));
        then.insert("additionalProperties".into(), json!(false));
        cases.push(json!({
            "if": { "properties": { "kind": { "const": kind } }, "required": ["kind"] },
            "then": then,
        }));
    }
    json!({
        "description": format!("{what}s by name"),
        "type": "object",
        "additionalProperties": {
            "type": "object",
            "required": ["kind"],
            "properties": { "kind": { "description": format!("the {what} kind"), "enum": names } },
            "allOf": cases,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_knows_the_kinds_the_parser_knows() {
        fn kinds(k: Vec<(&'static str, Map<String, Value>)>) -> Vec<&'static str> {
            k.into_iter().map(|(n, _)| n).collect()
        }
        assert_eq!(kinds(driver_kinds()), super::super::raw::DRIVER_KINDS);
        assert_eq!(kinds(sink_kinds()), super::super::raw::SINK_KINDS);
    }

    /// The checked-in file is what a default build (Kafka included) generates: a config type that changes
    /// without the file fails here.
    #[cfg(feature = "kafka")]
    #[test]
    fn the_shipped_schema_file_is_current() {
        let generated = serde_json::to_string_pretty(&schema()).expect("json") + "\n";
        let shipped = include_str!("../../../config/skygate.schema.json");
        assert!(
            generated == shipped,
            "config/skygate.schema.json is stale: regenerate it with \
             `skygate config-schema > config/skygate.schema.json`"
        );
    }

    #[test]
    fn a_driver_table_takes_its_kinds_keys_and_the_common_ones_only() {
        let s = schema();
        let cases = &s["properties"]["drivers"]["additionalProperties"]["allOf"];
        let modbus = cases
            .as_array()
            .expect("cases")
            .iter()
            .find(|c| c["if"]["properties"]["kind"]["const"] == "modbus")
            .expect("modbus");
        let props = modbus["then"]["properties"].as_object().expect("props");
        for key in ["kind", "stream", "priority", "transport", "host", "devices"] {
            assert!(props.contains_key(key), "modbus lacks {key}");
        }
        assert!(!props.contains_key("url"), "an http key on modbus");
        assert_eq!(modbus["then"]["additionalProperties"], false);
    }
}
