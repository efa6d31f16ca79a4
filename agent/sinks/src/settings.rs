//! What every sink is told by the config: the common delivery settings and its kind.

use std::time::Duration;

use super::bucket::BucketSinkSettings;

#[derive(Debug, Clone, PartialEq)]
pub struct SinkCommon {
    /// Share of the link given to backfill while live data waits, 0.0 to 1.0.
    pub backfill_share: f64,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub batch_max_records: u32,
    pub batch_max_bytes: u64,
    /// In the live lane, wait up to this long for a fuller batch.
    pub batch_max_age: Duration,
    /// Bandwidth cap in bytes per second (None: as fast as the link goes).
    pub max_bytes_per_sec: Option<u64>,
    /// The stream records this sink's peer refuses for good are set aside in.
    pub dead_letter_stream: String,
}

/// Where refused records go unless a sink says otherwise.
const DEFAULT_DEAD_LETTER_STREAM: &str = "deadletter";

/// A sink's settings where its table says nothing.
impl Default for SinkCommon {
    fn default() -> Self {
        Self {
            backfill_share: 0.5,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            batch_max_records: 5000,
            batch_max_bytes: 8 * 1024 * 1024,
            batch_max_age: Duration::from_secs(5),
            max_bytes_per_sec: None,
            dead_letter_stream: DEFAULT_DEAD_LETTER_STREAM.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    Bucket(Box<BucketSinkSettings>),
    Mqtt(Box<super::mqtt::MqttSinkSettings>),
    #[cfg(feature = "kafka")]
    Kafka(Box<super::kafka::KafkaSinkSettings>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SinkSettings {
    pub name: String,
    pub common: SinkCommon,
    pub kind: SinkKind,
}
