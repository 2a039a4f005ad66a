//! Kafka as the bundled jobs' input and output: `input: kafka://host:port/topic`,
//! `output: kafka://host:port/topic`, and a `kafka` block with the connection settings and
//! the source's and sink's options (docs/kafka.md). The settings parse in every build; using
//! them needs the `kafka` feature.

use crate::api::{Data, JobBuilder, Stream, WatermarkStrategy};
use crate::error::Error;
use crate::nexmark::Event;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// How often to look for partitions added while the job runs, in milliseconds (default
    /// a minute; 0: never).
    #[serde(default)]
    pub partition_discovery_ms: Option<u64>,
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
    /// How record values are encoded: `json` (default) or `avro` (then `avro` says how).
    #[serde(default)]
    pub format: FormatOption,
    #[serde(default)]
    pub avro: Option<AvroSourceOptions>,
}

/// `spec.job.config.kafka.source.format` and `…sink.format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FormatOption {
    #[default]
    Json,
    Avro,
}

/// An Avro schema in the job's config: its JSON text, or the schema itself written as a
/// YAML (or JSON) object.
pub type SchemaOption = serde_json::Value;

/// `spec.job.config.kafka.source.avro`: the schema records are read as, and where the
/// schema they were written with comes from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AvroSourceOptions {
    /// The schema the job reads records as (one of this and `readerSchemaFile`).
    #[serde(default)]
    pub reader_schema: Option<SchemaOption>,
    #[serde(default)]
    pub reader_schema_file: Option<PathBuf>,
    /// Plain Avro: the schema records were written with [default: the reader schema].
    #[serde(default)]
    pub writer_schema: Option<SchemaOption>,
    #[serde(default)]
    pub writer_schema_file: Option<PathBuf>,
    /// The Confluent wire format: each record names its writer schema by an id in this
    /// schema registry (`http://host:port`). Excludes a writer schema.
    #[serde(default)]
    pub registry_url: Option<String>,
}

/// `spec.job.config.kafka.sink.avro`: the schema records are written with.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AvroSinkOptions {
    /// One of this and `schemaFile`.
    #[serde(default)]
    pub schema: Option<SchemaOption>,
    #[serde(default)]
    pub schema_file: Option<PathBuf>,
    /// The Confluent wire format: the schema is registered under `<topic>-value` in this
    /// schema registry when the job starts, and records carry its id.
    #[serde(default)]
    pub registry_url: Option<String>,
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
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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
    /// How record values are encoded: `json` (default) or `avro` (then `avro` says how).
    #[serde(default)]
    pub format: FormatOption,
    #[serde(default)]
    pub avro: Option<AvroSinkOptions>,
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
        parse_schema, AvroDecoder, AvroEncoder, DeliveryGuarantee, JsonDecoder, JsonEncoder,
        KafkaClientConfig, KafkaSink, KafkaSinkConfig, KafkaSource, KafkaSourceConfig, KafkaUri,
        SchemaRegistry, StartFrom, TimeFrom,
    };
    use crate::connectors::Throttled;
    use apache_avro::Schema;
    use std::time::Duration;

    const SOURCE_AVRO: &str = "spec.job.config.kafka.source.avro";
    const SINK_AVRO: &str = "spec.job.config.kafka.sink.avro";

    /// The schema written inline at `field` or in the file at `<field>File`; `None` when
    /// neither is given.
    fn schema_option(
        inline: Option<&SchemaOption>,
        file: Option<&Path>,
        field: &str,
    ) -> Result<Option<Schema>, Error> {
        let text = match (inline, file) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(format!(
                    "{field}: set either it or {field}File, not both"
                )))
            }
            (Some(serde_json::Value::String(text)), None) => text.clone(),
            (Some(schema), None) => schema.to_string(),
            (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
                Error::Config(format!("{field}File: cannot read {}: {e}", path.display()))
            })?,
            (None, None) => return Ok(None),
        };
        parse_schema(&text)
            .map(Some)
            .map_err(|e| Error::Config(format!("{field}: {e}")))
    }

    fn registry(url: &str, field: &str) -> Result<SchemaRegistry, Error> {
        SchemaRegistry::new(url).map_err(|e| Error::Config(format!("{field}.registryUrl: {e}")))
    }

    /// The Avro decoder `avro` describes: checks the schemas now, naming the field at fault.
    pub(super) fn avro_decoder(
        avro: &AvroSourceOptions,
        time: TimeFrom<Event>,
    ) -> Result<AvroDecoder<Event>, Error> {
        let reader = schema_option(
            avro.reader_schema.as_ref(),
            avro.reader_schema_file.as_deref(),
            &format!("{SOURCE_AVRO}.readerSchema"),
        )?
        .ok_or_else(|| {
            Error::Config(format!(
                "{SOURCE_AVRO}.readerSchema: required (or readerSchemaFile) with format avro"
            ))
        })?;
        let writer = schema_option(
            avro.writer_schema.as_ref(),
            avro.writer_schema_file.as_deref(),
            &format!("{SOURCE_AVRO}.writerSchema"),
        )?;
        match (&avro.registry_url, writer) {
            (Some(_), Some(_)) => Err(Error::Config(format!(
                "{SOURCE_AVRO}.writerSchema: records in the Confluent wire format (registryUrl) \
                 name their writer schema; set one of writerSchema and registryUrl"
            ))),
            (Some(url), None) => Ok(AvroDecoder::confluent(
                registry(url, SOURCE_AVRO)?,
                reader,
                time,
            )),
            (None, writer) => {
                let writer = writer.unwrap_or_else(|| reader.clone());
                AvroDecoder::plain(writer, reader, time)
                    .map_err(|e| Error::Config(format!("{SOURCE_AVRO}.writerSchema: {e}")))
            }
        }
    }

    /// The Avro encoder `avro` describes, its schema registered when it names a registry.
    fn avro_encoder<O: Data + Serialize>(
        avro: &AvroSinkOptions,
        topic: &str,
    ) -> Result<AvroEncoder<O>, Error> {
        let schema = schema_option(
            avro.schema.as_ref(),
            avro.schema_file.as_deref(),
            &format!("{SINK_AVRO}.schema"),
        )?
        .ok_or_else(|| {
            Error::Config(format!(
                "{SINK_AVRO}.schema: required (or schemaFile) with format avro"
            ))
        })?;
        match &avro.registry_url {
            None => Ok(AvroEncoder::plain(schema)),
            Some(url) => AvroEncoder::confluent(schema, &registry(url, SINK_AVRO)?, topic),
        }
    }

    /// `format` and the `avro` block agree.
    pub(super) fn check_format<A>(
        format: FormatOption,
        avro: &Option<A>,
        field: &str,
    ) -> Result<(), Error> {
        match (format, avro) {
            (FormatOption::Avro, None) => Err(Error::Config(format!(
                "{field}.avro: required with format avro"
            ))),
            (FormatOption::Json, Some(_)) => Err(Error::Config(format!(
                "{field}.avro: set, but {field}.format is json (set it to avro)"
            ))),
            _ => Ok(()),
        }
    }

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
        config.group_id = options.group_id.clone();
        config.bounded = options.bounded;
        if let Some(ms) = options.partition_discovery_ms {
            config.partition_discovery_ms = ms;
        }
        config.dead_letter_topic = options.dead_letter_topic.clone();
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
        check_format(
            options.format,
            &options.avro,
            "spec.job.config.kafka.source",
        )?;
        let source = match &options.avro {
            Some(avro) => KafkaSource::new(config, avro_decoder(avro, time)?)?,
            None => KafkaSource::new(config, JsonDecoder::new(time))?,
        };
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
        config.transactional_id_prefix = o.transactional_id_prefix.clone();
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
        config.compression = o.compression.clone();
        check_format(o.format, &o.avro, "spec.job.config.kafka.sink")?;
        let sink = match &o.avro {
            Some(avro) => {
                let mut encoder = avro_encoder::<O>(avro, &config.topic)?;
                if let Some(field) = &o.key_field {
                    encoder = encoder.key_field(field);
                }
                for (name, value) in &o.headers {
                    encoder = encoder.header(name, value.as_bytes());
                }
                KafkaSink::new(config, encoder)?
            }
            None => {
                let mut encoder = JsonEncoder::<O>::default();
                if let Some(field) = &o.key_field {
                    encoder = encoder.key_field(field);
                }
                for (name, value) in &o.headers {
                    encoder = encoder.header(name, value.as_bytes());
                }
                KafkaSink::new(config, encoder)?
            }
        };
        match max_records_per_second {
            None => out.sink("kafka-output", sink),
            Some(rate) => out.sink("kafka-output", Throttled::new(sink, rate)),
        }
        Ok(())
    }
}

#[cfg(feature = "kafka")]
pub(crate) use enabled::{events, sink};

#[cfg(all(test, feature = "kafka"))]
mod tests {
    use super::enabled::{avro_decoder, check_format};
    use super::*;
    use crate::connectors::kafka::TimeFrom;

    fn source(yaml: &str) -> AvroSourceOptions {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn error(avro: &AvroSourceOptions) -> String {
        match avro_decoder(avro, TimeFrom::RecordTimestamp) {
            Ok(_) => panic!("accepted {avro:?}"),
            Err(e) => e.to_string(),
        }
    }

    const V1: &str =
        r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}]}"#;

    #[test]
    fn avro_schemas_are_read_inline_as_objects_or_text() {
        let object = source(
            "readerSchema: {type: record, name: R, fields: [{name: a, type: long}, \
             {name: b, type: string, default: x}]}\nwriterSchema: '{\"type\": \"record\", \
             \"name\": \"R\", \"fields\": [{\"name\": \"a\", \"type\": \"int\"}]}'",
        );
        assert!(avro_decoder(&object, TimeFrom::RecordTimestamp).is_ok());
    }

    #[test]
    fn bad_avro_options_are_refused_naming_the_field() {
        let not_a_schema = source("readerSchema: {type: recrod}");
        let e = error(&not_a_schema);
        assert!(
            e.contains("spec.job.config.kafka.source.avro.readerSchema: not an Avro schema"),
            "{e}"
        );
        let unreadable = source(&format!(
            "readerSchema: {{type: record, name: R, fields: [{{name: b, type: string}}]}}\n\
             writerSchema: '{V1}'"
        ));
        let e = error(&unreadable);
        assert!(
            e.contains("spec.job.config.kafka.source.avro.writerSchema: the reader schema cannot"),
            "{e}"
        );
        let both = source(&format!(
            "readerSchema: '{V1}'\nwriterSchema: '{V1}'\nregistryUrl: http://localhost:1"
        ));
        assert!(error(&both).contains("avro.writerSchema: records in the Confluent"));
        let no_reader = source(&format!("writerSchema: '{V1}'"));
        assert!(error(&no_reader).contains("avro.readerSchema: required"));
        let twice = source(&format!(
            "readerSchema: '{V1}'\nreaderSchemaFile: /nonexistent"
        ));
        assert!(error(&twice).contains("not both"));
        let missing = source("readerSchemaFile: /nonexistent/events.avsc");
        assert!(error(&missing).contains("avro.readerSchemaFile: cannot read"));
        let https = source(&format!(
            "readerSchema: '{V1}'\nregistryUrl: https://registry"
        ));
        assert!(error(&https).contains("avro.registryUrl: 'https://registry' is not an http://"));
        let unset = check_format::<AvroSourceOptions>(FormatOption::Avro, &None, "x.source")
            .unwrap_err()
            .to_string();
        assert!(
            unset.contains("x.source.avro: required with format avro"),
            "{unset}"
        );
        let json = check_format(FormatOption::Json, &Some(not_a_schema), "x.source")
            .unwrap_err()
            .to_string();
        assert!(
            json.contains("x.source.avro: set, but x.source.format is json"),
            "{json}"
        );
    }
}
