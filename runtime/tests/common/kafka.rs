//! A real Kafka broker (or a three-node cluster) for tests, started by `e2e/kafka/broker.sh`
//! (KRaft mode on the JDK, jars fetched by Maven into the cache) on free loopback ports with
//! its state in a temporary directory, stopped when the test ends. Without java (or without
//! the jars and mvn to fetch them) the test is skipped, unless `SLUICE_REQUIRE_KAFKA=1` (CI)
//! makes that a failure.

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../e2e/kafka/broker.sh")
}

fn skip(test: &str, why: &str) -> Option<KafkaCluster> {
    super::skip(test, why, "SLUICE_REQUIRE_KAFKA")
}

/// A record as a read_committed consumer sees it.
#[derive(Debug)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ReadRecord {
    /// The value of header `key` as text (the first, if several).
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
    }
}

/// `(partition, offset)` of the record last delivered, or why it was not.
#[derive(Default)]
struct LastDelivery(Mutex<Option<Result<(i32, i64), String>>>);

impl ClientContext for LastDelivery {}

impl ProducerContext for LastDelivery {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        *self.0.lock().unwrap() = Some(match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.to_string()),
        });
    }
}

pub struct KafkaCluster {
    dir: tempfile::TempDir,
    pub bootstrap: String,
}

impl KafkaCluster {
    /// Starts `brokers` (1 or 3) nodes; `None` (after saying why) when Kafka cannot run here
    /// and is not required.
    pub fn start(test: &str, brokers: usize) -> Option<KafkaCluster> {
        if Command::new("java").arg("-version").output().is_err() {
            return skip(test, "no java on PATH to run Kafka");
        }
        let fetch = Command::new("bash").arg(script()).arg("fetch").output();
        match fetch {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                let why = format!(
                    "the Kafka jars could not be fetched: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                return skip(test, &why);
            }
            Err(e) => return skip(test, &format!("cannot run e2e/kafka/broker.sh: {e}")),
        }
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let out = Command::new("bash")
            .arg(script())
            .args(["start", "--brokers", &brokers.to_string(), "--dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        let cluster = KafkaCluster {
            bootstrap: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            dir,
        };
        assert!(
            out.status.success(),
            "{test}: Kafka did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "{test}: Kafka ({brokers} node(s)) at {} ready in {:.1}s",
            cluster.bootstrap,
            started.elapsed().as_secs_f64()
        );
        Some(cluster)
    }

    fn script(&self, args: &[&str]) {
        let out = Command::new("bash")
            .arg(script())
            .args(args)
            .arg("--dir")
            .arg(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "broker.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops node `n` (from 1); its ports and data stay.
    pub fn stop_node(&self, n: usize) {
        self.script(&["stop", "--node", &n.to_string()]);
    }

    pub fn start_node(&self, n: usize) {
        self.script(&["start-node", "--node", &n.to_string()]);
    }

    fn admin(&self) -> AdminClient<DefaultClientContext> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .unwrap()
    }

    /// Creates `topic`, with `min.insync.replicas` one below the replication (at least 1).
    pub fn create_topic(&self, topic: &str, partitions: i32, replication: i32) {
        self.create_topic_with(topic, partitions, replication, &[]);
    }

    /// Creates `topic` with topic configuration `config` besides.
    pub fn create_topic_with(
        &self,
        topic: &str,
        partitions: i32,
        replication: i32,
        config: &[(&str, &str)],
    ) {
        let admin = self.admin();
        let min_isr = (replication - 1).max(1).to_string();
        let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication))
            .set("min.insync.replicas", &min_isr);
        for &(key, value) in config {
            new = new.set(key, value);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let results = rt
            .block_on(admin.create_topics([&new], &AdminOptions::new()))
            .unwrap();
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
        }
        self.wait_for_partitions(topic, partitions as usize);
    }

    /// Adds partitions to `topic` until it has `partitions`.
    pub fn add_partitions(&self, topic: &str, partitions: usize) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let results = rt
            .block_on(self.admin().create_partitions(
                [&NewPartitions::new(topic, partitions)],
                &AdminOptions::new(),
            ))
            .unwrap();
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("adding partitions to {t}: {e}"));
        }
        self.wait_for_partitions(topic, partitions);
    }

    /// Metadata reaches every broker shortly after the controller accepts a change.
    fn wait_for_partitions(&self, topic: &str, partitions: usize) {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .unwrap();
        super::wait_until("the topic's partitions", Duration::from_secs(60), || {
            consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .ok()
                .and_then(|m| {
                    m.topics()
                        .iter()
                        .find(|t| t.name() == topic)
                        .map(|t| t.partitions().len() == partitions && t.error().is_none())
                })
                .unwrap_or(false)
        });
    }

    /// The offsets `group` committed for `topic`, summed over its partitions (a partition
    /// without a commit counts 0); an error while the group's coordinator is not ready.
    pub fn committed_offsets(&self, group: &str, topic: &str) -> Result<i64, KafkaError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", group)
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..metadata.topics()[0].partitions().len() as i32 {
            tpl.add_partition(topic, p);
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(30))?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum())
    }

    /// Every record value of `topic` a read_committed consumer sees, read to the end of
    /// every partition.
    pub fn read_committed(&self, topic: &str) -> Vec<String> {
        self.read_records(topic)
            .into_iter()
            .map(|r| String::from_utf8(r.value.unwrap_or_default()).unwrap())
            .collect()
    }

    /// Every record of `topic` a read_committed consumer sees, with its key, headers and
    /// place, read to the end of every partition.
    pub fn read_records(&self, topic: &str) -> Vec<ReadRecord> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", "sluice-test-reader")
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .unwrap();
        let partitions = metadata.topics()[0].partitions().len() as i32;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut records = Vec::new();
        let mut at_end: HashSet<i32> = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(300);
        while at_end.len() < partitions as usize {
            assert!(
                Instant::now() < deadline,
                "reading {topic}: partitions {at_end:?} of {partitions} read to their end"
            );
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Ok(m)) => records.push(ReadRecord {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_string(), h.value.unwrap_or(&[]).to_vec()))
                                .collect()
                        })
                        .unwrap_or_default(),
                }),
                // The end of what is committed: the test reads once every transaction of the
                // job is resolved, so nothing open holds it back.
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p);
                }
                Some(Err(e)) => eprintln!("reading {topic}: {e}"),
            }
        }
        records
    }

    /// Writes one record into `partition` of `topic`; returns its offset.
    pub fn produce_one(
        &self,
        topic: &str,
        partition: i32,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &str)],
    ) -> i64 {
        let producer: BaseProducer<LastDelivery> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("enable.idempotence", "true")
            .create_with_context(LastDelivery::default())
            .unwrap();
        let mut own = OwnedHeaders::new();
        for &(key, value) in headers {
            own = own.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record = BaseRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .payload(value)
            .headers(own);
        if let Some(key) = key {
            record = record.key(key);
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
        producer.flush(Duration::from_secs(60)).unwrap();
        let delivered = producer.context().0.lock().unwrap().take();
        let (at, offset) = delivered.expect("no delivery report").unwrap();
        assert_eq!(at, partition);
        offset
    }
}

impl KafkaCluster {
    /// Writes `(partition, value)` records into `topic`, in order per partition, and waits
    /// until the brokers took them all.
    pub fn produce_many(&self, topic: &str, records: &[(i32, Vec<u8>)]) {
        let producer: BaseProducer<FirstFailure> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "20")
            .create_with_context(FirstFailure::default())
            .unwrap();
        for (partition, value) in records {
            let mut record = BaseRecord::<[u8], [u8]>::to(topic)
                .partition(*partition)
                .payload(value.as_slice());
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        producer.poll(Duration::from_millis(5));
                    }
                    Err((e, _)) => panic!("writing to {topic}: {e}"),
                }
            }
        }
        producer.flush(Duration::from_secs(120)).unwrap();
        let failed = producer.context().0.lock().unwrap().take();
        if let Some(e) = failed {
            panic!("writing to {topic}: {e}");
        }
    }
}

/// The first record the brokers did not take.
#[derive(Default)]
struct FirstFailure(Mutex<Option<String>>);

impl ClientContext for FirstFailure {}

impl ProducerContext for FirstFailure {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.0.lock().unwrap().get_or_insert_with(|| e.to_string());
        }
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for entry in std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let log = entry.path().join("server.log");
                if let Ok(text) = std::fs::read_to_string(&log) {
                    let lines: Vec<&str> = text.lines().collect();
                    eprintln!(
                        "{} (last lines):\n{}",
                        log.display(),
                        lines[lines.len().saturating_sub(30)..].join("\n")
                    );
                }
            }
        }
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg("--dir")
            .arg(self.dir.path())
            .output();
    }
}
