//! A simulated MQTT instrument for demos and the embedded default: a dome controller
//! publishing its status as JSON and a UPS publishing its load as a bare number, every
//! 2 seconds, into the agent's embedded broker (in-process, as a client's publish would
//! arrive), so the broker, topic matching and decoders all run.

use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::{LocalBroker, Message};

/// The topics the simulated instruments publish on.
pub const TOPICS: [&str; 2] = ["dome/main/status", "ups/main/load"];

/// Message `n` of each simulated instrument.
pub fn messages(n: u64, now: chrono::DateTime<chrono::Utc>) -> [Message; 2] {
    let x = n as f64;
    let shutter = if (n / 300).is_multiple_of(2) {
        "open"
    } else {
        "closed"
    };
    let status = format!(
        r#"{{"env":{{"t":{:.2},"rh":{:.1}}},"shutter":"{shutter}","time":"{}"}}"#,
        11.0 + 1.5 * (x / 150.0).sin(),
        40.0 + 5.0 * (x / 200.0).sin(),
        now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    let load = format!("{:.1}", 35.0 + 5.0 * (x / 40.0).sin());
    [
        Message {
            topic: TOPICS[0].into(),
            payload: Bytes::from(status),
        },
        Message {
            topic: TOPICS[1].into(),
            payload: Bytes::from(load),
        },
    ]
}

/// Publishes until `stop`.
pub async fn instruments(broker: std::sync::Arc<dyn LocalBroker>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    for n in 0u64.. {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for m in messages(n, chrono::Utc::now()) {
            if broker.publish(m).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::decode::{Decoder, EpochUnit};

    #[test]
    fn the_simulated_status_decodes_with_its_own_timestamp() {
        let now = chrono::DateTime::from_timestamp(1_795_350_919, 0).expect("time");
        let [status, load] = messages(0, now);
        let d = Decoder::Json {
            fields: Vec::new(),
            timestamp: Some(("/time".into(), EpochUnit::Seconds)),
        };
        let p = d.decode(&status.payload).expect("decodes");
        assert_eq!(p.ts.map(|t| t.0), Some(1_795_350_919_000_000_000));
        assert!(p.values.iter().any(|v| v.field == "env.t"));
        assert_eq!(&load.payload[..], b"35.0");
    }
}
