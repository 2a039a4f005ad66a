//! The Kafka source: one split per partition of a topic.

use super::config::{KafkaClientConfig, CONNECT_TIMEOUT};
use crate::api::Record;
use crate::connectors::{Poll, Source, SplitReader};
use crate::error::Error;
use crate::time::EventTime;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a partition is read from when the job starts without a position for it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StartFrom {
    #[default]
    Earliest,
    Latest,
    /// The first record with a timestamp at or after this (epoch milliseconds).
    Timestamp(i64),
    /// The consumer group's committed offsets; earliest where the group has none.
    Committed,
}

/// A Kafka source: the topic's partitions as splits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaSourceConfig {
    #[serde(flatten)]
    pub client: KafkaClientConfig,
    pub topic: String,
    #[serde(default)]
    pub start_from: StartFrom,
    /// Offsets of completed snapshots are committed to this group (for lag monitoring),
    /// and `startFrom: committed` reads from them.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Stop at the end of each partition as it was when the split was opened, instead of
    /// waiting for more records (a bounded job).
    #[serde(default)]
    pub bounded: bool,
}

impl KafkaSourceConfig {
    pub fn new(client: KafkaClientConfig, topic: impl Into<String>) -> Self {
        KafkaSourceConfig {
            client,
            topic: topic.into(),
            start_from: StartFrom::Earliest,
            group_id: None,
            bounded: false,
        }
    }
}

/// One record as read from Kafka, for a [`KafkaDecoder`].
pub struct KafkaMessage<'a> {
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// The record's timestamp (create or log-append time), epoch milliseconds.
    pub timestamp: Option<i64>,
    pub partition: i32,
    pub offset: i64,
}

/// Turns Kafka records into the stream's records, with their event time.
pub trait KafkaDecoder<T>: Send + Sync + 'static {
    fn decode(&self, message: &KafkaMessage<'_>) -> Result<Record<T>, String>;
}

/// Where a decoded record's event time comes from.
pub enum TimeFrom<T> {
    /// The Kafka record's timestamp.
    RecordTimestamp,
    /// A function of the value (e.g. one of its fields).
    Value(fn(&T) -> EventTime),
    /// A top-level field of the JSON payload holding epoch milliseconds.
    Field(String),
}

/// JSON payloads.
pub struct JsonDecoder<T> {
    time: TimeFrom<T>,
    _t: PhantomData<fn() -> T>,
}

impl<T> JsonDecoder<T> {
    pub fn new(time: TimeFrom<T>) -> Self {
        JsonDecoder {
            time,
            _t: PhantomData,
        }
    }
}

impl<T: DeserializeOwned + 'static> KafkaDecoder<T> for JsonDecoder<T> {
    fn decode(&self, m: &KafkaMessage<'_>) -> Result<Record<T>, String> {
        let payload = m.payload.ok_or("a record without a value")?;
        let bad = |e: serde_json::Error| format!("not a JSON value of the expected form: {e}");
        match &self.time {
            TimeFrom::RecordTimestamp => {
                let value = serde_json::from_slice(payload).map_err(bad)?;
                let ts = m.timestamp.ok_or("a record without a timestamp")?;
                Ok(Record::new(EventTime(ts), value))
            }
            TimeFrom::Value(of) => {
                let value = serde_json::from_slice(payload).map_err(bad)?;
                Ok(Record::new(of(&value), value))
            }
            TimeFrom::Field(name) => {
                let json: serde_json::Value = serde_json::from_slice(payload).map_err(bad)?;
                let ts = json
                    .get(name)
                    .and_then(serde_json::Value::as_i64)
                    .ok_or_else(|| format!("no field '{name}' with epoch milliseconds"))?;
                let value = serde_json::from_value(json).map_err(bad)?;
                Ok(Record::new(EventTime(ts), value))
            }
        }
    }
}

/// Reads a topic; its partitions are the splits.
pub struct KafkaSource<T> {
    config: Arc<KafkaSourceConfig>,
    partitions: usize,
    decoder: Arc<dyn KafkaDecoder<T>>,
}

impl<T> KafkaSource<T> {
    /// Looks the topic up: fails naming the brokers when none answers and naming the topic
    /// when it does not exist.
    pub fn new(
        config: KafkaSourceConfig,
        decoder: impl KafkaDecoder<T>,
    ) -> Result<KafkaSource<T>, Error> {
        let partitions = super::partition_count(&config.client, &config.topic)?;
        Ok(KafkaSource {
            config: Arc::new(config),
            partitions,
            decoder: Arc::new(decoder),
        })
    }
}

impl<T: Send + 'static> Source<T> for KafkaSource<T> {
    fn split_count(&self) -> usize {
        self.partitions
    }

    fn open_split(&self, split: usize, position: u64) -> Result<Box<dyn SplitReader<T>>, Error> {
        let reader = PartitionReader::open(
            self.config.clone(),
            self.decoder.clone(),
            i32::try_from(split).map_err(|_| self.error(split, "no such partition"))?,
            position,
        )?;
        Ok(Box::new(reader))
    }
}

impl<T> KafkaSource<T> {
    fn error(&self, split: usize, message: impl Into<String>) -> Error {
        Error::Kafka {
            what: format!("topic '{}' partition {split}", self.config.topic),
            message: message.into(),
        }
    }
}

struct PartitionReader<T> {
    config: Arc<KafkaSourceConfig>,
    decoder: Arc<dyn KafkaDecoder<T>>,
    consumer: BaseConsumer,
    partition: i32,
    /// The next offset to hand out.
    next: i64,
    /// Bounded: the partition's end when opened.
    stop: Option<i64>,
    /// `(checkpoint, next offset)` of snapshots not yet known to be complete.
    taken: Vec<(u64, i64)>,
    last_error_report: Option<Instant>,
}

impl<T: 'static> PartitionReader<T> {
    fn open(
        config: Arc<KafkaSourceConfig>,
        decoder: Arc<dyn KafkaDecoder<T>>,
        partition: i32,
        position: u64,
    ) -> Result<Self, Error> {
        // librdkafka assigns partitions only to a consumer with a group id; without a
        // configured group nothing is ever committed to this one.
        let group = config
            .group_id
            .clone()
            .unwrap_or_else(|| format!("sluice-{}", config.topic));
        let mut defaults = vec![
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            // Only committed output of transactional producers.
            ("isolation.level", "read_committed"),
            ("enable.partition.eof", "true"),
            // One consumer per partition: a bounded prefetch per partition.
            ("queued.max.messages.kbytes", "16384"),
            // A position beyond the log (records removed by retention) starts at the
            // earliest that remains.
            ("auto.offset.reset", "earliest"),
        ];
        defaults.push(("group.id", group.as_str()));
        let client = &config.client;
        let consumer: BaseConsumer = client
            .client_config(&defaults)?
            .create()
            .map_err(|e| client.error(format!("cannot create a consumer: {e}")))?;
        let mut reader = PartitionReader {
            config: config.clone(),
            decoder,
            consumer,
            partition,
            next: 0,
            stop: None,
            taken: Vec::new(),
            last_error_report: None,
        };
        let (low, high) = reader
            .consumer
            .fetch_watermarks(&config.topic, partition, CONNECT_TIMEOUT)
            .map_err(|e| reader.error(format!("cannot read the partition's offsets: {e}")))?;
        reader.next = match position.checked_sub(1) {
            // A restored position (an offset, plus one).
            Some(offset) => i64::try_from(offset).map_err(|_| reader.error("bad position"))?,
            None => reader.start_offset(low, high)?,
        };
        if config.bounded {
            reader.stop = Some(high);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&config.topic, partition, Offset::Offset(reader.next))
            .map_err(|e| reader.error(e.to_string()))?;
        reader
            .consumer
            .assign(&tpl)
            .map_err(|e| reader.error(format!("cannot assign the partition: {e}")))?;
        Ok(reader)
    }

    /// The first offset to read when nothing was read before, resolved now so that a
    /// snapshot taken before the first record records it.
    fn start_offset(&self, low: i64, high: i64) -> Result<i64, Error> {
        let topic = &self.config.topic;
        match &self.config.start_from {
            StartFrom::Earliest => Ok(low),
            StartFrom::Latest => Ok(high),
            StartFrom::Timestamp(ts) => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(topic, self.partition, Offset::Offset(*ts))
                    .map_err(|e| self.error(e.to_string()))?;
                let found = self
                    .consumer
                    .offsets_for_times(tpl, CONNECT_TIMEOUT)
                    .map_err(|e| self.error(format!("offsets for time {ts}: {e}")))?;
                Ok(
                    match found
                        .find_partition(topic, self.partition)
                        .map(|e| e.offset())
                    {
                        Some(Offset::Offset(o)) => o,
                        // No record that late: from the end.
                        _ => high,
                    },
                )
            }
            StartFrom::Committed => {
                if self.config.group_id.is_none() {
                    return Err(self.error("startFrom: committed needs a groupId"));
                }
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(topic, self.partition);
                let committed = self
                    .consumer
                    .committed_offsets(tpl, CONNECT_TIMEOUT)
                    .map_err(|e| self.error(format!("the group's committed offsets: {e}")))?;
                Ok(
                    match committed
                        .find_partition(topic, self.partition)
                        .map(|e| e.offset())
                    {
                        Some(Offset::Offset(o)) => o.clamp(low, high),
                        _ => low,
                    },
                )
            }
        }
    }

    fn error(&self, message: impl Into<String>) -> Error {
        Error::Kafka {
            what: format!(
                "topic '{}' partition {} (brokers {})",
                self.config.topic, self.partition, self.config.client.bootstrap_servers
            ),
            message: message.into(),
        }
    }

    /// Errors the client recovers from by itself (brokers away, leaders moving) are
    /// reported at most every ten seconds; fatal ones fail the job.
    fn transient(&mut self, e: &KafkaError) -> Result<(), Error> {
        if let Some(code) = e.rdkafka_error_code() {
            if code == rdkafka::types::RDKafkaErrorCode::Fatal {
                return Err(self.error(e.to_string()));
            }
        }
        let due = self
            .last_error_report
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        if due {
            self.last_error_report = Some(Instant::now());
            eprintln!("{}", self.error(format!("{e} (retrying)")));
        }
        Ok(())
    }
}

impl<T: 'static> SplitReader<T> for PartitionReader<T> {
    fn poll(&mut self, out: &mut Vec<Record<T>>, max: usize) -> Result<Poll, Error> {
        if self.stop.is_some_and(|stop| self.next >= stop) {
            return Ok(Poll::End);
        }
        for _ in 0..max {
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(m)) => {
                    let offset = m.offset();
                    if offset < self.next {
                        // Fetched again after a reconnection: handed out already.
                        continue;
                    }
                    if self.stop.is_some_and(|stop| offset >= stop) {
                        self.next = offset;
                        return Ok(Poll::End);
                    }
                    let message = KafkaMessage {
                        key: m.key(),
                        payload: m.payload(),
                        timestamp: m.timestamp().to_millis(),
                        partition: self.partition,
                        offset,
                    };
                    let record = self
                        .decoder
                        .decode(&message)
                        .map_err(|e| self.error(format!("record at offset {offset}: {e}")))?;
                    out.push(record);
                    self.next = offset + 1;
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    // The end as of now; a bounded split is done (its end was no later).
                    if let Some(stop) = self.stop {
                        self.next = self.next.max(stop);
                        return Ok(Poll::End);
                    }
                    break;
                }
                Some(Err(e)) => {
                    self.transient(&e)?;
                    break;
                }
            }
        }
        Ok(Poll::More)
    }

    fn position(&self) -> u64 {
        u64::try_from(self.next).unwrap_or(0) + 1
    }

    fn snapshot_started(&mut self, checkpoint: u64) {
        if self.config.group_id.is_some() {
            self.taken.push((checkpoint, self.next));
        }
    }

    fn snapshot_complete(&mut self, checkpoint: u64) {
        let Some(at) = self.taken.iter().rposition(|(c, _)| *c <= checkpoint) else {
            return;
        };
        let offset = self.taken[at].1;
        self.taken.drain(..=at);
        let mut tpl = TopicPartitionList::new();
        let added =
            tpl.add_partition_offset(&self.config.topic, self.partition, Offset::Offset(offset));
        // For lag monitoring only: a failed commit is reported, never fatal.
        if let Err(e) = added.and_then(|()| self.consumer.commit(&tpl, CommitMode::Async)) {
            eprintln!("{}", self.error(format!("committing offset {offset}: {e}")));
        }
    }
}
