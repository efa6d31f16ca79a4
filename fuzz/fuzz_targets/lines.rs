//! The ASCII line parser, regex and delimited, on any line.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use skygate_drivers::serial::lines::{ChannelRaw, LineParser, ValueType};

fn parsers() -> &'static [LineParser; 2] {
    static P: OnceLock<[LineParser; 2]> = OnceLock::new();
    P.get_or_init(|| {
        [
            LineParser::new(
                Some(
                    r"^r,\s*(?P<mpsas>-?\d+\.\d+)m,\s*(?P<freq>\d+)Hz,\s*(?P<temp>-?\d+\.\d+)C"
                        .into(),
                ),
                None,
                None,
                BTreeMap::new(),
            )
            .expect("valid"),
            LineParser::new(
                None,
                Some(",".into()),
                Some(vec!["a".into(), "".into(), "b".into()]),
                BTreeMap::from([(
                    "b".to_string(),
                    ChannelRaw {
                        value_type: Some(ValueType::Integer),
                        scale: None,
                        ..ChannelRaw::default()
                    },
                )]),
            )
            .expect("valid"),
        ]
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        for p in parsers() {
            let _ = p.parse(line);
        }
    }
});
