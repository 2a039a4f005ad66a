//! The Kafka connector's Avro format against a real broker: Nexmark events written with an
//! older writer schema are read by a job with a newer reader schema, and its output written
//! as Avro is exactly what the Avro rules say it must be; records that are not Avro of the
//! writer schema go to the dead-letter topic with their origin while the output stays exact.
#![cfg(feature = "kafka")]

mod common;

use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use common::assert_same;
use common::kafka::KafkaCluster;
use common::run::{printed, sluice};
use serde_json::{json, Value};
use sluice_runtime::nexmark::{Bid, Event, NexmarkConfig, NexmarkGenerator};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

const EVENTS: u64 = 20_000;
const PARTITIONS: i32 = 4;

/// One broker and its job at a time: the machine is small.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Version 1 of the events' schema, the one the topic was written with: bids carry a
/// `campaign` that version 2 dropped, and no `extra`.
const EVENTS_V1: &str = r#"[
  {"type": "record", "name": "Person", "fields": [
    {"name": "type", "type": "string"},
    {"name": "id", "type": "long"},
    {"name": "name", "type": "string"},
    {"name": "emailAddress", "type": "string"},
    {"name": "creditCard", "type": "string"},
    {"name": "city", "type": "string"},
    {"name": "state", "type": "string"},
    {"name": "dateTime", "type": "long"},
    {"name": "extra", "type": "string"}]},
  {"type": "record", "name": "Auction", "fields": [
    {"name": "type", "type": "string"},
    {"name": "id", "type": "long"},
    {"name": "itemName", "type": "string"},
    {"name": "description", "type": "string"},
    {"name": "initialBid", "type": "long"},
    {"name": "reserve", "type": "long"},
    {"name": "dateTime", "type": "long"},
    {"name": "expires", "type": "long"},
    {"name": "seller", "type": "long"},
    {"name": "category", "type": "long"},
    {"name": "extra", "type": "string"}]},
  {"type": "record", "name": "Bid", "fields": [
    {"name": "type", "type": "string"},
    {"name": "auction", "type": "long"},
    {"name": "bidder", "type": "long"},
    {"name": "price", "type": "long"},
    {"name": "channel", "type": "string"},
    {"name": "url", "type": "string"},
    {"name": "dateTime", "type": "long"},
    {"name": "campaign", "type": "string"}]}
]"#;

/// What a bid's `extra` is when its writer had none.
const EXTRA_DEFAULT: &str = "written-before-v2";

/// Version 2, the job's reader schema: bids gained `extra` (with a default) and lost
/// `campaign`.
fn events_v2() -> Value {
    let mut v2: Value = serde_json::from_str(EVENTS_V1).unwrap();
    let bid = v2[2]["fields"].as_array_mut().unwrap();
    bid.retain(|f| f["name"] != "campaign");
    bid.push(json!({"name": "extra", "type": "string", "default": EXTRA_DEFAULT}));
    v2
}

/// The job's output schema: a bid.
const BID: &str = r#"{"type": "record", "name": "Bid", "fields": [
  {"name": "auction", "type": "long"},
  {"name": "bidder", "type": "long"},
  {"name": "price", "type": "long"},
  {"name": "channel", "type": "string"},
  {"name": "url", "type": "string"},
  {"name": "dateTime", "type": "long"},
  {"name": "extra", "type": "string"}]}"#;

fn long(n: u64) -> Avro {
    Avro::Long(i64::try_from(n).unwrap())
}

fn string(s: &str) -> Avro {
    Avro::String(s.to_string())
}

fn record(fields: Vec<(&str, Avro)>) -> Avro {
    Avro::Record(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// Event `n` as version 1 wrote it.
fn v1_datum(schema: &Schema, event: &Event, n: u64) -> Vec<u8> {
    let value = match event {
        Event::Person(p) => Avro::Union(
            0,
            Box::new(record(vec![
                ("type", string("person")),
                ("id", long(p.id)),
                ("name", string(&p.name)),
                ("emailAddress", string(&p.email_address)),
                ("creditCard", string(&p.credit_card)),
                ("city", string(&p.city)),
                ("state", string(&p.state)),
                ("dateTime", Avro::Long(p.date_time.0)),
                ("extra", string(&p.extra)),
            ])),
        ),
        Event::Auction(a) => Avro::Union(
            1,
            Box::new(record(vec![
                ("type", string("auction")),
                ("id", long(a.id)),
                ("itemName", string(&a.item_name)),
                ("description", string(&a.description)),
                ("initialBid", long(a.initial_bid)),
                ("reserve", long(a.reserve)),
                ("dateTime", Avro::Long(a.date_time.0)),
                ("expires", Avro::Long(a.expires.0)),
                ("seller", long(a.seller)),
                ("category", long(a.category)),
                ("extra", string(&a.extra)),
            ])),
        ),
        Event::Bid(b) => Avro::Union(
            2,
            Box::new(record(vec![
                ("type", string("bid")),
                ("auction", long(b.auction)),
                ("bidder", long(b.bidder)),
                ("price", long(b.price)),
                ("channel", string(&b.channel)),
                ("url", string(&b.url)),
                ("dateTime", Avro::Long(b.date_time.0)),
                ("campaign", string(&format!("campaign-{n}"))),
            ])),
        ),
    };
    apache_avro::to_avro_datum(schema, value).unwrap()
}

/// Writes the generator's events `0..EVENTS` as version 1 datums, event `n` into partition
/// `n % PARTITIONS`, each value after `header`; `between` is called once half of them are
/// written. Returns the bids the job must output: each as version 2 reads it, as JSON,
/// sorted.
fn produce_v1(
    kafka: &KafkaCluster,
    topic: &str,
    header: &[u8],
    mut between: impl FnMut(),
) -> Vec<String> {
    let schema = Schema::parse_str(EVENTS_V1).unwrap();
    let generator = NexmarkGenerator::new(&NexmarkConfig {
        events: EVENTS,
        ..NexmarkConfig::default()
    });
    let mut bids = Vec::new();
    let mut batch = Vec::new();
    for n in 0..EVENTS {
        if n == EVENTS / 2 {
            kafka.produce_many(topic, &batch);
            batch.clear();
            between();
        }
        let event = generator.event(n);
        let partition = (n % PARTITIONS as u64) as i32;
        let mut value = header.to_vec();
        value.extend(v1_datum(&schema, &event, n));
        batch.push((partition, value));
        if let Event::Bid(b) = event {
            let evolved = Bid {
                extra: sluice_runtime::nexmark::Text::Owned(EXTRA_DEFAULT.into()),
                ..b
            };
            bids.push(serde_json::to_string(&evolved).unwrap());
        }
    }
    kafka.produce_many(topic, &batch);
    bids.sort();
    bids
}

/// The bids in `topic`, decoded with the output schema, as JSON, sorted.
fn read_bids(kafka: &KafkaCluster, topic: &str) -> Vec<String> {
    read_framed_bids(kafka, topic, &[])
}

/// The bids in `topic`, each value after `header`, decoded with the output schema, as
/// JSON, sorted.
fn read_framed_bids(kafka: &KafkaCluster, topic: &str, header: &[u8]) -> Vec<String> {
    let schema = Schema::parse_str(BID).unwrap();
    let mut bids: Vec<String> = kafka
        .read_records(topic)
        .into_iter()
        .map(|r| {
            let bytes = r.value.unwrap_or_default();
            assert_eq!(bytes[..header.len()], *header, "the header at {}", r.offset);
            let mut datum = &bytes[header.len()..];
            let value = apache_avro::from_avro_datum(&schema, &mut datum, None).unwrap();
            assert!(datum.is_empty(), "bytes after the datum at {}", r.offset);
            let bid: Bid = apache_avro::from_value(&value).unwrap();
            serde_json::to_string(&bid).unwrap()
        })
        .collect();
    bids.sort();
    bids
}

/// A q0 (every bid) manifest reading `events` as Avro version 1 → 2 and writing `bids` as
/// Avro, with `source` merged into the source's options and `sink_avro` the sink's `avro`
/// block (default: the output schema from a file). The reader schema is written as an
/// object and the writer schema as JSON text.
fn q0_manifest(
    kafka: &KafkaCluster,
    dir: &Path,
    source: Value,
    sink_avro: Option<Value>,
) -> PathBuf {
    let bid_schema = dir.join("bid.avsc");
    std::fs::write(&bid_schema, BID).unwrap();
    let sink_avro = sink_avro.unwrap_or_else(|| json!({"schemaFile": bid_schema}));
    let mut source_options = json!({
        "bounded": true,
        "format": "avro",
        "avro": {"readerSchema": events_v2(), "writerSchema": EVENTS_V1},
    });
    for (k, v) in source.as_object().unwrap() {
        source_options[k] = v.clone();
    }
    let config = json!({
        "input": format!("kafka://{}/events", kafka.bootstrap),
        "output": format!("kafka://{}/bids", kafka.bootstrap),
        "kafka": {
            "source": source_options,
            "sink": {"format": "avro", "avro": sink_avro},
        },
    });
    let path = dir.join("q0.yaml");
    let manifest = json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "StreamJob",
        "metadata": {"name": "nexmark-q0"},
        "spec": {"job": {"name": "nexmark-q0", "config": config}, "parallelism": 2},
    });
    std::fs::write(&path, manifest.to_string()).unwrap();
    path
}

fn run(manifest: &Path, dir: &Path) -> std::process::Output {
    sluice()
        .arg("run")
        .arg(manifest)
        .args(["--checkpoint-interval", "300ms"])
        .arg("--checkpoint-dir")
        .arg(dir.join("chk"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--progress-interval", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// Events written with version 1 and read with version 2: every bid comes out once, with
/// `extra` from the reader's default and `campaign` dropped, encoded with the output schema.
#[test]
fn records_of_an_older_writer_schema_are_read_with_the_newer_reader_schema() {
    let _serial = serial();
    let test = "kafka_avro_evolution";
    let Some(kafka) = KafkaCluster::start(test, 1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    kafka.create_topic("events", PARTITIONS, 1);
    kafka.create_topic("bids", 2, 1);
    let expected = produce_v1(&kafka, "events", &[], || {});
    let manifest = q0_manifest(&kafka, dir.path(), json!({}), None);
    let out = run(&manifest, dir.path());
    assert!(out.status.success(), "{}", printed(&out));
    assert_same(&read_bids(&kafka, "bids"), &expected, "q0 over Avro events");
}

/// Records that are not datums of the writer schema, among the events.
fn not_avro_of_the_writer() -> Vec<(&'static str, Vec<u8>)> {
    let other = Schema::parse_str(
        r#"{"type": "record", "name": "Other", "fields": [{"name": "x", "type": "string"}]}"#,
    )
    .unwrap();
    let other_datum =
        apache_avro::to_avro_datum(&other, record(vec![("x", string("hello"))])).unwrap();
    let events_v1 = Schema::parse_str(EVENTS_V1).unwrap();
    let generator = NexmarkGenerator::new(&NexmarkConfig::default());
    let mut too_long = v1_datum(&events_v1, &generator.event(3), 3);
    too_long.extend_from_slice(b"trailing");
    vec![
        ("another schema", other_datum),
        ("garbage", vec![0xff, 0xff, 0xff]),
        ("empty", Vec::new()),
        ("bytes after the datum", too_long),
        ("JSON", br#"{"type": "bid"}"#.to_vec()),
    ]
}

/// Records of another schema, garbage, and a datum with bytes after it go to the dead-letter
/// topic with their key, value and headers and headers naming where they were read and why
/// they did not decode; the output is that of the events alone.
#[test]
fn records_that_are_not_avro_of_the_writer_schema_go_to_the_dead_letter_topic() {
    let _serial = serial();
    let test = "kafka_avro_dead_letters";
    let Some(kafka) = KafkaCluster::start(test, 1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    kafka.create_topic("events", PARTITIONS, 1);
    kafka.create_topic("bids", 2, 1);
    kafka.create_topic("dead-letters", 1, 1);
    let bad = not_avro_of_the_writer();
    let mut written = Vec::new();
    let expected = produce_v1(&kafka, "events", &[], || {
        for (i, (what, value)) in bad.iter().enumerate() {
            let partition = i as i32 % PARTITIONS;
            let key = format!("key-{i}");
            let offset = kafka.produce_one(
                "events",
                partition,
                Some(key.as_bytes()),
                value,
                &[("what", *what)],
            );
            written.push((partition, offset, key, value.clone()));
        }
    });
    let manifest = q0_manifest(
        &kafka,
        dir.path(),
        json!({"deadLetterTopic": "dead-letters"}),
        None,
    );
    let out = run(&manifest, dir.path());
    assert!(out.status.success(), "{}", printed(&out));
    assert_same(
        &read_bids(&kafka, "bids"),
        &expected,
        "q0 over Avro events and bad records",
    );

    let mut letters = kafka.read_records("dead-letters");
    let at = |r: &common::kafka::ReadRecord| {
        (
            r.header("sluice.partition")
                .unwrap()
                .parse::<i32>()
                .unwrap(),
            r.header("sluice.offset").unwrap().parse::<i64>().unwrap(),
        )
    };
    letters.sort_by_key(at);
    written.sort_by_key(|(p, o, _, _)| (*p, *o));
    let found: Vec<_> = letters
        .iter()
        .map(|r| {
            let (p, o) = at(r);
            (
                p,
                o,
                String::from_utf8(r.key.clone().unwrap()).unwrap(),
                r.value.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(found, written, "the dead letters' origins, keys and values");
    for letter in &letters {
        assert!(letter.header("what").is_some(), "{letter:?}");
        assert_eq!(
            letter.header("sluice.job"),
            Some("nexmark-q0"),
            "{letter:?}"
        );
        assert_eq!(
            letter.header("sluice.operator"),
            Some("kafka-events"),
            "{letter:?}"
        );
        assert_eq!(letter.header("sluice.topic"), Some("events"), "{letter:?}");
        let error = letter.header("sluice.error").unwrap_or_default();
        let expected: &[&str] = match letter.header("what") {
            Some("bytes after the datum") => &["bytes left after the Avro datum"],
            // The client may hand an empty value over as none at all.
            Some("empty") => &["not an Avro datum", "a record without a value"],
            _ => &["not an Avro datum of the writer schema"],
        };
        assert!(
            expected.iter().any(|e| error.contains(e)),
            "{:?}: {error}",
            letter.header("what")
        );
    }
}

/// A schema registry with the part of Confluent's REST API the connector uses (register a
/// subject's schema, get a schema by id), in memory, on a free loopback port. A stand-in:
/// no registry server can be installed from the package registries this project reaches.
struct StubRegistry {
    url: String,
    schemas: std::sync::Arc<Mutex<Vec<(String, String)>>>,
}

/// Ids start here, so that a framing that ignored them would not pass by chance.
const FIRST_ID: usize = 100;

impl StubRegistry {
    fn start() -> StubRegistry {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let schemas = std::sync::Arc::new(Mutex::new(Vec::<(String, String)>::new()));
        let state = schemas.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = Self::serve(stream, &state);
            }
        });
        StubRegistry { url, schemas }
    }

    fn serve(
        stream: std::net::TcpStream,
        schemas: &Mutex<Vec<(String, String)>>,
    ) -> std::io::Result<()> {
        use std::io::{BufRead, BufReader, Read, Write};
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            if line.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (status, answer) = match (method, path.split('/').collect::<Vec<_>>().as_slice()) {
            ("POST", ["", "subjects", subject, "versions"]) => {
                let request: Value = serde_json::from_slice(&body).unwrap_or_default();
                let schema = request["schema"].as_str().unwrap_or_default().to_string();
                if Schema::parse_str(&schema).is_err() {
                    (
                        422,
                        json!({"error_code": 42201, "message": "Invalid schema"}),
                    )
                } else {
                    let mut all = schemas.lock().unwrap();
                    let id = match all.iter().position(|(_, s)| *s == schema) {
                        Some(i) => i,
                        None => {
                            all.push((subject.to_string(), schema));
                            all.len() - 1
                        }
                    };
                    (200, json!({"id": FIRST_ID + id}))
                }
            }
            ("GET", ["", "schemas", "ids", id]) => {
                let all = schemas.lock().unwrap();
                let found = id
                    .parse::<usize>()
                    .ok()
                    .and_then(|id| id.checked_sub(FIRST_ID))
                    .and_then(|i| all.get(i));
                match found {
                    Some((_, schema)) => (200, json!({"schema": schema})),
                    None => (
                        404,
                        json!({"error_code": 40403, "message": "Schema not found"}),
                    ),
                }
            }
            _ => (404, json!({"error_code": 404, "message": "Not found"})),
        };
        let text = answer.to_string();
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {status} X\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        )?;
        stream.flush()
    }

    /// Registers `schema` under `subject`; its id.
    fn register(&self, subject: &str, schema: &str) -> u32 {
        let mut all = self.schemas.lock().unwrap();
        all.push((subject.to_string(), schema.to_string()));
        (FIRST_ID + all.len() - 1) as u32
    }

    /// The id of the schema registered under `subject`.
    fn id_of(&self, subject: &str) -> Option<u32> {
        let all = self.schemas.lock().unwrap();
        let i = all.iter().position(|(s, _)| s == subject)?;
        Some((FIRST_ID + i) as u32)
    }
}

/// The Confluent wire format end to end: events framed with the id of their writer schema
/// in the registry, read through the registry by a job with the newer reader schema, whose
/// output schema the sink registers under `bids-value` and whose records carry its id. A
/// record naming an id the registry does not know, or without the magic byte, is a dead
/// letter.
#[test]
fn confluent_wire_format_through_a_schema_registry_round_trips() {
    let _serial = serial();
    let test = "kafka_avro_registry";
    let Some(kafka) = KafkaCluster::start(test, 1) else {
        return;
    };
    let registry = StubRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    kafka.create_topic("events", PARTITIONS, 1);
    kafka.create_topic("bids", 2, 1);
    kafka.create_topic("dead-letters", 1, 1);
    let writer_id = registry.register("events-value", EVENTS_V1);
    let mut header = vec![0];
    header.extend_from_slice(&writer_id.to_be_bytes());
    let generator = NexmarkGenerator::new(&NexmarkConfig::default());
    let datum = v1_datum(
        &Schema::parse_str(EVENTS_V1).unwrap(),
        &generator.event(3),
        3,
    );
    let unknown_id = [&[0, 0, 0, 0x30, 0x39][..], &datum].concat();
    let no_magic = [&[1][..], &header[1..], &datum].concat();
    let expected = produce_v1(&kafka, "events", &header, || {
        kafka.produce_one("events", 0, None, &unknown_id, &[("what", "unknown id")]);
        kafka.produce_one("events", 1, None, &no_magic, &[("what", "no magic byte")]);
    });
    let manifest = q0_manifest(
        &kafka,
        dir.path(),
        json!({
            "deadLetterTopic": "dead-letters",
            "avro": {"readerSchema": events_v2(), "registryUrl": registry.url},
        }),
        Some(json!({"schema": BID, "registryUrl": registry.url})),
    );
    let out = run(&manifest, dir.path());
    assert!(out.status.success(), "{}", printed(&out));
    let bids_id = registry
        .id_of("bids-value")
        .expect("the sink registered no schema under bids-value");
    assert_ne!(bids_id, writer_id);
    let mut bids_header = vec![0];
    bids_header.extend_from_slice(&bids_id.to_be_bytes());
    assert_same(
        &read_framed_bids(&kafka, "bids", &bids_header),
        &expected,
        "q0 through the registry",
    );
    let letters = kafka.read_records("dead-letters");
    assert_eq!(letters.len(), 2, "{letters:?}");
    for letter in &letters {
        let error = letter.header("sluice.error").unwrap_or_default();
        let expected = match letter.header("what") {
            Some("unknown id") => "schema id 12345 is not in the schema registry",
            _ => "magic byte 1",
        };
        assert!(error.contains(expected), "{letter:?}: {error}");
    }

    // A registry nobody answers at fails the run at the first record, naming it, rather than
    // sending good records to the dead-letter topic.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let manifest = q0_manifest(
        &kafka,
        dir.path(),
        json!({
            "deadLetterTopic": "dead-letters",
            "avro": {"readerSchema": events_v2(), "registryUrl": format!("http://127.0.0.1:{closed}")},
        }),
        Some(json!({"schema": BID, "registryUrl": registry.url})),
    );
    let out = run(&manifest, dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run succeeded:\n{stderr}");
    assert!(
        stderr.contains("record at offset ") && stderr.contains(&format!("127.0.0.1:{closed}")),
        "no record and registry named:\n{stderr}"
    );
    assert_eq!(
        kafka.read_records("dead-letters").len(),
        2,
        "new dead letters"
    );
}
