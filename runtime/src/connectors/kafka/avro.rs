//! Avro payloads for the Kafka source and sink, with [`apache_avro`].
//!
//! Two framings:
//!
//! - **plain**: the value is one Avro datum (binary encoding, no header) written with a
//!   writer schema the job is configured with;
//! - **Confluent wire format**: byte 0 (the magic), the writer schema's id in a schema
//!   registry (4 bytes, big-endian), then the datum. The decoder fetches the writer schema
//!   by id (`GET {url}/schemas/ids/{id}`) once and keeps it; the encoder registers its schema
//!   under the subject `<topic>-value` when the job is built (`POST
//!   {url}/subjects/{subject}/versions`) and frames every record with the id it got back.
//!
//! A datum is decoded with its writer schema and resolved to the reader schema by Avro's
//! rules (fields the writer lacks take the reader's defaults, fields the reader lacks are
//! skipped, promotions such as int → long), then turned into the job's type through serde.
//! Apache-avro 0.21 rather than 0.22: 0.22 serialises `u64` only into a `fixed` named
//! `org.apache.avro.rust.u64`, and the jobs' types hold their Avro `long`s in `u64`s.

use super::sink::{KafkaEncoder, KafkaOutRecord};
use super::source::{DecodeError, KafkaDecoder, KafkaMessage, TimeFrom};
use crate::api::Record;
use crate::error::Error;
use crate::time::EventTime;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value;
use apache_avro::Schema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The first byte of a record in the Confluent wire format.
const MAGIC: u8 = 0;
/// Magic byte and schema id.
const WIRE_HEADER: usize = 5;

/// Parses an Avro schema from its JSON text.
pub fn parse_schema(json: &str) -> Result<Schema, String> {
    Schema::parse_str(json).map_err(|e| format!("not an Avro schema: {e}"))
}

/// Whether data written with `writer` can be read with `reader` (Avro's resolution rules).
pub fn check_readable(writer: &Schema, reader: &Schema) -> Result<(), String> {
    SchemaCompatibility::can_read(writer, reader)
        .map_err(|e| format!("the reader schema cannot read data of the writer schema: {e}"))
}

/// A Confluent-compatible schema registry, over plain HTTP.
#[derive(Clone)]
pub struct SchemaRegistry {
    url: String,
    agent: ureq::Agent,
}

/// What the registry answered, when it answered.
enum RegistryAnswer<T> {
    Found(T),
    /// The registry has nothing usable under that name: no such id (HTTP 404), or what it
    /// holds is not an Avro schema.
    Unusable(String),
}

#[derive(Deserialize)]
struct SchemaById {
    schema: String,
}

#[derive(Serialize)]
struct NewSchema<'a> {
    schema: &'a str,
}

#[derive(Deserialize)]
struct Registered {
    id: u32,
}

impl SchemaRegistry {
    /// `url`: the registry's base URL, e.g. `http://registry:8081`.
    pub fn new(url: &str) -> Result<Self, String> {
        if !url.starts_with("http://") {
            return Err(format!("'{url}' is not an http:// URL"));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Ok(SchemaRegistry {
            url: url.trim_end_matches('/').to_string(),
            agent,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema with id `id`; `Err` when the registry could not be asked.
    fn schema_by_id(&self, id: u32) -> Result<RegistryAnswer<Schema>, String> {
        let url = format!("{}/schemas/ids/{id}", self.url);
        let mut response = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| format!("schema registry {}: GET {url}: {e}", self.url))?;
        match response.status().as_u16() {
            200 => {
                let body: SchemaById = response
                    .body_mut()
                    .read_json()
                    .map_err(|e| format!("schema registry {}: GET {url}: {e}", self.url))?;
                Ok(match parse_schema(&body.schema) {
                    Ok(schema) => RegistryAnswer::Found(schema),
                    Err(e) => RegistryAnswer::Unusable(format!("schema id {id}: {e}")),
                })
            }
            404 => Ok(RegistryAnswer::Unusable(format!(
                "schema id {id} is not in the schema registry {}",
                self.url
            ))),
            status => Err(format!(
                "schema registry {}: GET {url}: HTTP {status}: {}",
                self.url,
                response.body_mut().read_to_string().unwrap_or_default()
            )),
        }
    }

    /// Registers `schema` under `subject` (an existing identical version is reused);
    /// returns its id.
    pub fn register(&self, subject: &str, schema: &Schema) -> Result<u32, Error> {
        let url = format!("{}/subjects/{subject}/versions", self.url);
        let error = |message: String| Error::Kafka {
            what: format!("schema registry {}", self.url),
            message: format!("registering the schema of subject '{subject}': {message}"),
        };
        let text = schema.canonical_form();
        let mut response = self
            .agent
            .post(&url)
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .send_json(NewSchema { schema: &text })
            .map_err(|e| error(format!("POST {url}: {e}")))?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.body_mut().read_to_string().unwrap_or_default();
            return Err(error(format!("POST {url}: HTTP {status}: {body}")));
        }
        let registered: Registered = response
            .body_mut()
            .read_json()
            .map_err(|e| error(format!("POST {url}: {e}")))?;
        Ok(registered.id)
    }
}

/// Where the decoder gets the writer schema of a record.
enum WriterSchemas {
    /// Plain Avro: one configured writer schema.
    Fixed(Schema),
    /// Confluent wire format: by id from the registry, kept once fetched.
    Registry {
        registry: SchemaRegistry,
        by_id: RwLock<HashMap<u32, Arc<Schema>>>,
    },
}

/// Avro payloads, decoded into the job's type `T` through a reader schema.
pub struct AvroDecoder<T> {
    reader: Schema,
    writers: WriterSchemas,
    time: TimeFrom<T>,
    _t: PhantomData<fn() -> T>,
}

impl<T> AvroDecoder<T> {
    /// Plain Avro written with `writer`, read as `reader`; fails when the reader cannot
    /// read what the writer wrote.
    pub fn plain(writer: Schema, reader: Schema, time: TimeFrom<T>) -> Result<Self, String> {
        check_readable(&writer, &reader)?;
        Ok(AvroDecoder {
            reader,
            writers: WriterSchemas::Fixed(writer),
            time,
            _t: PhantomData,
        })
    }

    /// The Confluent wire format, writer schemas from `registry`, read as `reader`.
    pub fn confluent(registry: SchemaRegistry, reader: Schema, time: TimeFrom<T>) -> Self {
        AvroDecoder {
            reader,
            writers: WriterSchemas::Registry {
                registry,
                by_id: RwLock::new(HashMap::new()),
            },
            time,
            _t: PhantomData,
        }
    }

    /// The writer schema of registry id `id`, fetched on first use.
    fn writer_by_id(
        registry: &SchemaRegistry,
        by_id: &RwLock<HashMap<u32, Arc<Schema>>>,
        reader: &Schema,
        id: u32,
    ) -> Result<Arc<Schema>, DecodeError> {
        // A poisoned lock holds a whole map: entries are inserted complete.
        if let Some(schema) = by_id.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return Ok(schema.clone());
        }
        // An unreachable registry is no fault of the record: the job fails (and restarts
        // from its checkpoint) instead of sending good records to the dead-letter topic.
        let schema = match registry
            .schema_by_id(id)
            .map_err(DecodeError::Unavailable)?
        {
            RegistryAnswer::Found(schema) => schema,
            RegistryAnswer::Unusable(message) => return Err(DecodeError::Record(message)),
        };
        check_readable(&schema, reader)
            .map_err(|e| DecodeError::Record(format!("writer schema id {id}: {e}")))?;
        tracing::info!(
            registry = registry.url(),
            id,
            "fetched an Avro writer schema"
        );
        let schema = Arc::new(schema);
        by_id
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, schema.clone());
        Ok(schema)
    }
}

/// Reads one datum written with `writer` from `bytes`, resolved to `reader`.
fn read_datum(writer: &Schema, reader: &Schema, mut bytes: &[u8]) -> Result<Value, String> {
    let value = apache_avro::from_avro_datum(writer, &mut bytes, Some(reader))
        .map_err(|e| format!("not an Avro datum of the writer schema: {e}"))?;
    if !bytes.is_empty() {
        return Err(format!(
            "{} bytes left after the Avro datum: not written with the writer schema",
            bytes.len()
        ));
    }
    Ok(value)
}

/// Top-level field `name` of a record value, as epoch milliseconds.
fn time_field(value: &Value, name: &str) -> Option<i64> {
    let Value::Record(fields) = value else {
        return None;
    };
    match fields.iter().find(|(field, _)| field == name)?.1 {
        Value::Long(ms) | Value::TimestampMillis(ms) => Some(ms),
        Value::Int(ms) => Some(i64::from(ms)),
        _ => None,
    }
}

impl<T: DeserializeOwned + 'static> KafkaDecoder<T> for AvroDecoder<T> {
    fn decode(&self, m: &KafkaMessage<'_>) -> Result<Record<T>, DecodeError> {
        let payload = m.payload.ok_or("a record without a value")?;
        let value = match &self.writers {
            WriterSchemas::Fixed(writer) => read_datum(writer, &self.reader, payload)?,
            WriterSchemas::Registry { registry, by_id } => {
                let (header, datum) = payload
                    .split_first_chunk::<WIRE_HEADER>()
                    .ok_or("shorter than the Confluent wire format's 5-byte header")?;
                if header[0] != MAGIC {
                    return Err(format!(
                        "magic byte {} where the Confluent wire format has {MAGIC}",
                        header[0]
                    )
                    .into());
                }
                let id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
                let writer = Self::writer_by_id(registry, by_id, &self.reader, id)?;
                read_datum(&writer, &self.reader, datum)
                    .map_err(|e| format!("writer schema id {id}: {e}"))?
            }
        };
        let ts = match &self.time {
            TimeFrom::RecordTimestamp => Some(m.timestamp.ok_or("a record without a timestamp")?),
            TimeFrom::Field(name) => Some(
                time_field(&value, name)
                    .ok_or_else(|| format!("no field '{name}' with epoch milliseconds"))?,
            ),
            TimeFrom::Value(_) => None,
        };
        let record: T = apache_avro::from_value(&value)
            .map_err(|e| format!("the Avro value does not fit the job's type: {e}"))?;
        Ok(match (&self.time, ts) {
            (TimeFrom::Value(of), _) => Record::new(of(&record), record),
            (_, ts) => Record::new(EventTime(ts.unwrap_or_default()), record),
        })
    }
}

/// The job's records as Avro values of a configured schema, plain or in the Confluent wire
/// format; the record's event time as the Kafka timestamp; optional keys and headers.
pub struct AvroEncoder<T> {
    schema: Schema,
    /// The registry id of `schema`: the Confluent wire format.
    schema_id: Option<u32>,
    key_field: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
    _t: PhantomData<fn(&T)>,
}

impl<T> AvroEncoder<T> {
    /// Plain Avro datums of `schema`.
    pub fn plain(schema: Schema) -> Self {
        AvroEncoder {
            schema,
            schema_id: None,
            key_field: None,
            headers: Vec::new(),
            _t: PhantomData,
        }
    }

    /// The Confluent wire format: registers `schema` under `<topic>-value` in `registry`
    /// now, and frames records with the id it gets.
    pub fn confluent(
        schema: Schema,
        registry: &SchemaRegistry,
        topic: &str,
    ) -> Result<Self, Error> {
        let subject = format!("{topic}-value");
        let id = registry.register(&subject, &schema)?;
        tracing::info!(
            registry = registry.url(),
            subject,
            id,
            "registered the Avro schema"
        );
        Ok(AvroEncoder {
            schema_id: Some(id),
            ..Self::plain(schema)
        })
    }

    /// Keys records by a top-level field of their JSON form, as the JSON encoder does.
    pub fn key_field(mut self, field: impl Into<String>) -> Self {
        self.key_field = Some(field.into());
        self
    }

    /// Adds a header to every record.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

impl<T: Serialize + 'static> KafkaEncoder<T> for AvroEncoder<T> {
    fn encode(&self, record: &Record<T>, out: &mut KafkaOutRecord) -> Result<(), String> {
        if let Some(id) = self.schema_id {
            out.value.push(MAGIC);
            out.value.extend_from_slice(&id.to_be_bytes());
        }
        apache_avro::write_avro_datum_ref(&self.schema, &record.value, &mut out.value)
            .map_err(|e| format!("cannot encode the record with the Avro schema: {e}"))?;
        match &self.key_field {
            None => out.key = None,
            Some(field) => {
                let bad = |e: serde_json::Error| format!("cannot encode the record's key: {e}");
                let json = serde_json::to_value(&record.value).map_err(bad)?;
                let key = out.key.get_or_insert_with(Vec::new);
                match json.get(field) {
                    Some(serde_json::Value::String(s)) => key.extend_from_slice(s.as_bytes()),
                    Some(v) => serde_json::to_writer(&mut *key, v).map_err(bad)?,
                    None => return Err(format!("no field '{field}' to key the record by")),
                }
            }
        }
        out.headers.extend(self.headers.iter().cloned());
        let ts = record.ts.millis();
        out.timestamp = (ts >= 0 && ts != i64::MAX).then_some(ts);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"Reading","fields":[
        {"name":"sensor","type":"long"},{"name":"celsius","type":"double"},
        {"name":"note","type":"string"}]}"#;
    /// V1 with `note` removed and `unit` added with a default.
    const V2: &str = r#"{"type":"record","name":"Reading","fields":[
        {"name":"sensor","type":"long"},{"name":"celsius","type":"double"},
        {"name":"unit","type":"string","default":"C"}]}"#;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Reading {
        sensor: u64,
        celsius: f64,
        unit: String,
    }

    #[derive(Serialize)]
    struct ReadingV1 {
        sensor: u64,
        celsius: f64,
        note: String,
    }

    fn message(payload: &[u8]) -> KafkaMessage<'_> {
        KafkaMessage {
            key: None,
            payload: Some(payload),
            timestamp: Some(7),
            partition: 0,
            offset: 0,
        }
    }

    fn v1_datum(sensor: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let old = ReadingV1 {
            sensor,
            celsius: 21.5,
            note: "roof".into(),
        };
        apache_avro::write_avro_datum_ref(&parse_schema(V1).unwrap(), &old, &mut out).unwrap();
        out
    }

    #[test]
    fn old_records_are_read_with_the_new_schema_by_avro_rules() {
        let decoder = AvroDecoder::<Reading>::plain(
            parse_schema(V1).unwrap(),
            parse_schema(V2).unwrap(),
            TimeFrom::RecordTimestamp,
        )
        .unwrap();
        let record = decoder.decode(&message(&v1_datum(3))).unwrap();
        assert_eq!(record.ts, EventTime(7));
        assert_eq!(
            record.value,
            Reading {
                sensor: 3,
                celsius: 21.5,
                unit: "C".into()
            }
        );
    }

    #[test]
    fn garbage_and_trailing_bytes_are_record_errors() {
        let decoder = AvroDecoder::<Reading>::plain(
            parse_schema(V1).unwrap(),
            parse_schema(V2).unwrap(),
            TimeFrom::RecordTimestamp,
        )
        .unwrap();
        let mut longer = v1_datum(3);
        longer.push(1);
        for bad in [&[0xff, 0xff, 0xff][..], &longer] {
            match decoder.decode(&message(bad)) {
                Err(DecodeError::Record(_)) => {}
                Err(DecodeError::Unavailable(e)) => panic!("not a record error: {e}"),
                Ok(r) => panic!("decoded {:?}", r.value),
            }
        }
    }

    #[test]
    fn a_reader_that_cannot_read_the_writer_is_refused() {
        let reader = r#"{"type":"record","name":"Reading","fields":[
            {"name":"sensor","type":"long"},{"name":"unit","type":"string"}]}"#;
        let err = AvroDecoder::<Reading>::plain(
            parse_schema(V1).unwrap(),
            parse_schema(reader).unwrap(),
            TimeFrom::RecordTimestamp,
        )
        .err()
        .unwrap();
        assert!(err.contains("cannot read"), "{err}");
    }

    #[test]
    fn an_unreachable_registry_is_no_fault_of_the_record() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let registry = SchemaRegistry::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let decoder = AvroDecoder::<Reading>::confluent(
            registry,
            parse_schema(V2).unwrap(),
            TimeFrom::RecordTimestamp,
        );
        let framed = [&[0, 0, 0, 0, 1][..], &v1_datum(3)].concat();
        match decoder.decode(&message(&framed)) {
            Err(DecodeError::Unavailable(e)) => assert!(e.contains("schema registry"), "{e}"),
            Err(DecodeError::Record(e)) => panic!("a record error: {e}"),
            Ok(r) => panic!("decoded {:?}", r.value),
        }
        // Framing is checked before the registry is asked.
        match decoder.decode(&message(&[1, 0, 0, 0, 1, 2])) {
            Err(DecodeError::Record(e)) => assert!(e.contains("magic byte 1"), "{e}"),
            other => panic!("{:?}", other.map(|r| r.value)),
        }
    }

    #[test]
    fn the_encoder_frames_confluent_records_and_the_decoder_reads_them_back() {
        let schema = parse_schema(V2).unwrap();
        let mut encoder = AvroEncoder::<Reading>::plain(schema.clone());
        encoder.schema_id = Some(0x01020304);
        let mut out = KafkaOutRecord::default();
        let value = Reading {
            sensor: 9,
            celsius: -1.0,
            unit: "K".into(),
        };
        encoder
            .encode(&Record::new(EventTime(5), value), &mut out)
            .unwrap();
        assert_eq!(out.value[..WIRE_HEADER], [0, 1, 2, 3, 4]);
        assert_eq!(out.timestamp, Some(5));
        let decoded: Reading = apache_avro::from_value(
            &read_datum(&schema, &schema, &out.value[WIRE_HEADER..]).unwrap(),
        )
        .unwrap();
        assert_eq!(decoded.unit, "K");
    }
}
