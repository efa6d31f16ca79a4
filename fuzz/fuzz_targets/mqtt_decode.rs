//! MQTT payload decoders (JSON with and without fields, CSV, number, raw) on any payload.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use bytes::Bytes;
use skygate_drivers::channels::ChannelSpec;
use skygate_drivers::mqtt::decode::{Decoder, EpochUnit, JsonField};
use skygate_drivers::serial::lines::LineParser;

fn decoders() -> &'static [Decoder; 5] {
    static D: OnceLock<[Decoder; 5]> = OnceLock::new();
    D.get_or_init(|| {
        [
            Decoder::Json {
                fields: Vec::new(),
                timestamp: Some(("/ts".into(), EpochUnit::Millis)),
            },
            Decoder::Json {
                fields: vec![JsonField {
                    name: "t".into(),
                    pointer: "/env/t".into(),
                    spec: ChannelSpec::default(),
                }],
                timestamp: Some(("/time".into(), EpochUnit::Seconds)),
            },
            Decoder::Csv(
                LineParser::new(
                    None,
                    Some(",".into()),
                    Some(vec!["a".into(), "b".into()]),
                    BTreeMap::new(),
                )
                .expect("valid"),
            ),
            Decoder::Number(ChannelSpec::default()),
            Decoder::Raw {
                content_type: "application/octet-stream".into(),
            },
        ]
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let payload = Bytes::copy_from_slice(data);
    for d in decoders() {
        let _ = d.decode(&payload);
    }
});
