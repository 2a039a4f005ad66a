//! Kafka as the bundled jobs' input and output: `input: kafka://host:port/topic`,
//! `output: kafka://host:port/topic`, and a `kafka` block with the connection settings and
//! the source's and sink's options (docs/kafka.md). The settings parse in every build; using
//! them needs the `kafka` feature.

use crate::api::{Data, JobBuilder, Stream, WatermarkStrategy};
use crate::error::Error;
use crate::nexmark::Event;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// `spec.job.config.kafka`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaJobConfig {
    /// `host:port[,host:port…]`, for `kafka:///topic` URIs.
    #[serde(default)]
    pub bootstrap_servers: Option<String>,
    /// librdkafka properties for every client (security, SASL, TLS…); a value `${NAME}`
    /// is read from environment variable `NAME`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub source: KafkaSourceOptions,
    #[serde(default)]
    pub sink: KafkaSinkOptions,
}

/// `spec.job.config.kafka.source`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaSourceOptions {
    /// `earliest` (default), `latest`, `{timestamp: <epoch ms>}` or `committed`.
    #[serde(default)]
    pub start_from: StartFromOption,
    /// Completed checkpoints' offsets are committed to this group (lag monitoring).
    #[serde(default)]
    pub group_id: Option<String>,
    /// Stop at the partitions' ends as of the start (a bounded job).
    #[serde(default)]
    pub bounded: bool,
    /// Event time from the events' `dateTime` (default) or the Kafka record timestamp.
    #[serde(default)]
    pub event_time: EventTimeOption,
    /// A partition with no records for this long stops holding the watermark back.
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    /// Events that do not decode go to this topic (same cluster) instead of failing the job.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// The job fails when a larger fraction of a partition's records are dead letters (judged
    /// from 1000 records read on).
    #[serde(default)]
    pub max_dead_letter_rate: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StartFromOption {
    #[default]
    Earliest,
    Latest,
    Timestamp(i64),
    Committed,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventTimeOption {
    /// The event's `dateTime` field.
    #[default]
    Event,
    /// The Kafka record's timestamp.
    Record,
}

/// `spec.job.config.kafka.sink.delivery`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeliveryOption {
    /// Kafka transactions committed with the checkpoints.
    #[default]
    ExactlyOnce,
    /// An idempotent producer flushed at every barrier: output written after the last
    /// checkpoint is written again after a restart.
    AtLeastOnce,
}

/// `spec.job.config.kafka.sink`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaSinkOptions {
    #[serde(default)]
    pub delivery: DeliveryOption,
    #[serde(default)]
    pub transactional_id_prefix: Option<String>,
    #[serde(default)]
    pub transaction_timeout_ms: Option<u64>,
    #[serde(default)]
    pub transaction_slots: Option<u32>,
    #[serde(default)]
    pub max_in_flight_bytes: Option<u64>,
    #[serde(default)]
    pub linger_ms: Option<u64>,
    #[serde(default)]
    pub compression: Option<String>,
    /// Key records by this top-level field of their JSON form.
    #[serde(default)]
    pub key_field: Option<String>,
    /// Headers added to every record.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The `kafka://` URI in `path`, if it is one.
pub(crate) fn kafka_uri(path: &Path) -> Option<&str> {
    path.to_str().filter(|p| p.starts_with("kafka://"))
}

#[cfg(not(feature = "kafka"))]
fn without_kafka() -> Error {
    Error::Config("this binary was built without Kafka support (cargo feature `kafka`)".into())
}

/// The Nexmark events of topic `uri`.
#[cfg(not(feature = "kafka"))]
pub(crate) fn events(
    _: &JobBuilder,
    _: &str,
    _: Option<&KafkaJobConfig>,
    _: WatermarkStrategy,
) -> Result<Stream<Event>, Error> {
    Err(without_kafka())
}

/// Writes `out` to topic `uri`.
#[cfg(not(feature = "kafka"))]
pub(crate) fn sink<O: Data + Serialize>(
    _: &Stream<O>,
    _: &str,
    _: Option<&KafkaJobConfig>,
    _: Option<u64>,
) -> Result<(), Error> {
    Err(without_kafka())
}

#[cfg(feature = "kafka")]
mod enabled {
    use super::*;
    use crate::connectors::kafka::{
        DeliveryGuarantee, JsonDecoder, JsonEncoder, KafkaClientConfig, KafkaSink, KafkaSinkConfig,
        KafkaSource, KafkaSourceConfig, KafkaUri, StartFrom, TimeFrom,
    };
    use crate::connectors::Throttled;
    use std::time::Duration;

    /// The uid of the bundled jobs' Kafka source, named in its dead letters.
    const SOURCE_UID: &str = "kafka-events";

    fn client(
        uri: &str,
        kafka: Option<&KafkaJobConfig>,
        field: &str,
    ) -> Result<(KafkaClientConfig, String), Error> {
        let parsed = KafkaUri::parse(uri)
            .unwrap_or_else(|| Err(format!("'{uri}' is not a kafka:// URI")))
            .map_err(|e| Error::Config(format!("spec.job.config.{field}: {e}")))?;
        let servers = parsed
            .bootstrap_servers
            .or_else(|| kafka.and_then(|k| k.bootstrap_servers.clone()))
            .ok_or_else(|| {
                Error::Config(format!(
                    "spec.job.config.{field}: '{uri}' names no brokers and \
                     spec.job.config.kafka.bootstrapServers is not set"
                ))
            })?;
        let mut client = KafkaClientConfig::new(servers);
        if let Some(k) = kafka {
            client.properties = k.properties.clone();
        }
        Ok((client, parsed.topic))
    }

    pub(crate) fn events(
        job: &JobBuilder,
        uri: &str,
        kafka: Option<&KafkaJobConfig>,
        mut watermarks: WatermarkStrategy,
    ) -> Result<Stream<Event>, Error> {
        let (client, topic) = client(uri, kafka, "input")?;
        let options = kafka.map(|k| k.source.clone()).unwrap_or_default();
        let mut config = KafkaSourceConfig::new(client, topic);
        config.start_from = match options.start_from {
            StartFromOption::Earliest => StartFrom::Earliest,
            StartFromOption::Latest => StartFrom::Latest,
            StartFromOption::Timestamp(t) => StartFrom::Timestamp(t),
            StartFromOption::Committed => StartFrom::Committed,
        };
        config.group_id = options.group_id;
        config.bounded = options.bounded;
        config.dead_letter_topic = options.dead_letter_topic;
        config.max_dead_letter_rate = options.max_dead_letter_rate;
        config.job_name = job.name();
        config.operator_uid = SOURCE_UID.to_string();
        if let Some(ms) = options.idle_timeout_ms {
            watermarks = watermarks.with_idleness(Duration::from_millis(ms));
        }
        let time = match options.event_time {
            EventTimeOption::Event => TimeFrom::Value(Event::timestamp),
            EventTimeOption::Record => TimeFrom::RecordTimestamp,
        };
        let source = KafkaSource::new(config, JsonDecoder::new(time))?;
        Ok(job.source(SOURCE_UID, source, watermarks))
    }

    pub(crate) fn sink<O: Data + Serialize>(
        out: &Stream<O>,
        uri: &str,
        kafka: Option<&KafkaJobConfig>,
        max_records_per_second: Option<u64>,
    ) -> Result<(), Error> {
        let (client, topic) = client(uri, kafka, "output")?;
        let o = kafka.map(|k| k.sink.clone()).unwrap_or_default();
        let mut config = KafkaSinkConfig::new(client, topic);
        config.delivery = match o.delivery {
            DeliveryOption::ExactlyOnce => DeliveryGuarantee::ExactlyOnce,
            DeliveryOption::AtLeastOnce => DeliveryGuarantee::AtLeastOnce,
        };
        config.transactional_id_prefix = o.transactional_id_prefix;
        if let Some(v) = o.transaction_timeout_ms {
            config.transaction_timeout_ms = v;
        }
        if let Some(v) = o.transaction_slots {
            config.transaction_slots = v;
        }
        if let Some(v) = o.max_in_flight_bytes {
            config.max_in_flight_bytes = v;
        }
        if let Some(v) = o.linger_ms {
            config.linger_ms = v;
        }
        config.compression = o.compression;
        let mut encoder = JsonEncoder::<O>::default();
        if let Some(field) = o.key_field {
            encoder = encoder.key_field(field);
        }
        for (name, value) in o.headers {
            encoder = encoder.header(name, value.into_bytes());
        }
        let sink = KafkaSink::new(config, encoder)?;
        match max_records_per_second {
            None => out.sink("kafka-output", sink),
            Some(rate) => out.sink("kafka-output", Throttled::new(sink, rate)),
        }
        Ok(())
    }
}

#[cfg(feature = "kafka")]
pub(crate) use enabled::{events, sink};
