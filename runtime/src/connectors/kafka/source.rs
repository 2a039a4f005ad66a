//! The Kafka source: one split per partition of a topic.

use super::config::{KafkaClientConfig, CONNECT_TIMEOUT};
use super::dead_letter::{DeadLetter, DeadLetters};
use crate::api::Record;
use crate::connectors::{Poll, Source, SplitReader};
use crate::error::Error;
use crate::source::SplitProgress;
use crate::time::EventTime;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// How often an unbounded source looks for partitions added to the topic while the job
    /// runs (milliseconds; 0: never). New partitions are read from their first record.
    #[serde(default = "KafkaSourceConfig::default_partition_discovery_ms")]
    pub partition_discovery_ms: u64,
    /// Records that do not decode are written to this topic (same brokers and client
    /// properties) and skipped, instead of failing the job. At least once: a restored job
    /// may write a dead letter again.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// With a dead-letter topic: the job fails when more than this fraction of the records
    /// a partition reader read since it was opened went to the dead-letter topic, judged
    /// once it read [`KafkaSourceConfig::DEAD_LETTER_MIN_SAMPLE`] records.
    #[serde(default)]
    pub max_dead_letter_rate: Option<f64>,
    /// The job's name, named in dead letters' `sluice.job` header.
    #[serde(default)]
    pub job_name: String,
    /// The source operator's uid, named in dead letters' `sluice.operator` header.
    #[serde(default)]
    pub operator_uid: String,
}

impl KafkaSourceConfig {
    /// Records read by a partition reader before its dead-letter rate is compared with
    /// `maxDeadLetterRate`: before that, a bad record or two at the start of a partition
    /// would be a high rate that says little.
    pub const DEAD_LETTER_MIN_SAMPLE: u64 = 1000;

    /// A minute: partitions are added by hand, rarely, and each look is a metadata request
    /// per source per process.
    fn default_partition_discovery_ms() -> u64 {
        60_000
    }

    /// How often to look for new partitions; `None`: never.
    fn partition_discovery(&self) -> Option<Duration> {
        (!self.bounded && self.partition_discovery_ms > 0)
            .then(|| Duration::from_millis(self.partition_discovery_ms))
    }

    pub fn new(client: KafkaClientConfig, topic: impl Into<String>) -> Self {
        KafkaSourceConfig {
            client,
            topic: topic.into(),
            start_from: StartFrom::Earliest,
            group_id: None,
            bounded: false,
            partition_discovery_ms: Self::default_partition_discovery_ms(),
            dead_letter_topic: None,
            max_dead_letter_rate: None,
            job_name: String::new(),
            operator_uid: String::new(),
        }
    }

    /// The dead-letter options make sense together and with the topic.
    fn check_dead_letters(&self) -> Result<(), Error> {
        let invalid = |message: String| {
            Err(Error::Config(format!(
                "Kafka source of topic '{}': {message}",
                self.topic
            )))
        };
        if self.dead_letter_topic.as_ref() == Some(&self.topic) {
            // Its dead letters would be read again, and fail again.
            return invalid("deadLetterTopic must not be the topic read".into());
        }
        match self.max_dead_letter_rate {
            Some(_) if self.dead_letter_topic.is_none() => {
                invalid("maxDeadLetterRate needs a deadLetterTopic".into())
            }
            Some(rate) if !(0.0..=1.0).contains(&rate) => invalid(format!(
                "maxDeadLetterRate {rate} is not a fraction between 0 and 1"
            )),
            _ => Ok(()),
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
    fn decode(&self, message: &KafkaMessage<'_>) -> Result<Record<T>, DecodeError>;
}

/// Why a record was not decoded.
#[derive(Debug)]
pub enum DecodeError {
    /// The record is bad: it goes to the dead-letter topic (or fails the job without one).
    Record(String),
    /// Decoding could not be tried (a schema registry did not answer): the job fails and
    /// restarts from its checkpoint, since the record may well be good.
    Unavailable(String),
}

impl From<String> for DecodeError {
    fn from(message: String) -> Self {
        DecodeError::Record(message)
    }
}

impl From<&str> for DecodeError {
    fn from(message: &str) -> Self {
        DecodeError::Record(message.to_string())
    }
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
    fn decode(&self, m: &KafkaMessage<'_>) -> Result<Record<T>, DecodeError> {
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
    /// The partition count found by the discovery thread, started when a task first asks.
    discovered: OnceLock<Arc<AtomicUsize>>,
}

impl<T> KafkaSource<T> {
    /// Looks the topic up: fails naming the brokers when none answers and naming the topic
    /// when it does not exist.
    pub fn new(
        config: KafkaSourceConfig,
        decoder: impl KafkaDecoder<T>,
    ) -> Result<KafkaSource<T>, Error> {
        config.check_dead_letters()?;
        let partitions = super::partition_count(&config.client, &config.topic)?;
        if let Some(topic) = &config.dead_letter_topic {
            // A missing dead-letter topic fails the job now, not at its first bad record.
            super::partition_count(&config.client, topic)?;
        }
        Ok(KafkaSource {
            config: Arc::new(config),
            partitions,
            decoder: Arc::new(decoder),
            discovered: OnceLock::new(),
        })
    }
}

impl<T: Send + 'static> Source<T> for KafkaSource<T> {
    fn split_count(&self) -> usize {
        self.partitions
    }

    fn open_split(&self, split: usize, position: u64) -> Result<Box<dyn SplitReader<T>>, Error> {
        let start_from = &self.config.start_from;
        self.open(split, position, start_from, self.dead_letters())
    }

    /// The subtask's partition readers share one dead-letter producer.
    fn open_splits(&self, splits: &[(usize, u64)]) -> Result<Vec<Box<dyn SplitReader<T>>>, Error> {
        let dead_letters = self.dead_letters();
        let start_from = &self.config.start_from;
        splits
            .iter()
            .map(|&(split, position)| self.open(split, position, start_from, dead_letters.clone()))
            .collect()
    }

    /// From the earliest offset: whatever `startFrom` says, every record of a partition the
    /// job did not know is new to it.
    fn open_new_splits(&self, splits: &[usize]) -> Result<Vec<Box<dyn SplitReader<T>>>, Error> {
        let dead_letters = self.dead_letters();
        splits
            .iter()
            .map(|&split| self.open(split, 0, &StartFrom::Earliest, dead_letters.clone()))
            .collect()
    }

    fn discovered_split_count(&self) -> Option<usize> {
        let interval = self.config.partition_discovery()?;
        let count = self.discovered.get_or_init(|| {
            let count = Arc::new(AtomicUsize::new(self.partitions));
            discover_partitions(self.config.clone(), Arc::downgrade(&count), interval);
            count
        });
        Some(count.load(Ordering::Relaxed))
    }
}

/// Looks up the topic's partition count every `interval` while the source lives (`count`
/// can be upgraded), off the task threads: a metadata request waits for the brokers. A
/// failed look is reported and the count kept; a partition count only grows.
fn discover_partitions(
    config: Arc<KafkaSourceConfig>,
    count: Weak<AtomicUsize>,
    interval: Duration,
) {
    let topic = config.topic.clone();
    let look = move || {
        let client = &config.client;
        let mut metadata = None;
        loop {
            std::thread::sleep(interval);
            let Some(count) = count.upgrade() else {
                return;
            };
            let found = match &metadata {
                Some(consumer) => {
                    super::config::partition_count_with(consumer, client, &config.topic)
                }
                None => super::config::metadata_client(client).and_then(|consumer| {
                    let found =
                        super::config::partition_count_with(&consumer, client, &config.topic);
                    metadata = Some(consumer);
                    found
                }),
            };
            match found {
                Ok(now) if now > count.load(Ordering::Relaxed) => {
                    tracing::info!(topic = %config.topic, partitions = now, "the topic has new partitions");
                    count.store(now, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("looking for new partitions: {e} (retrying)"),
            }
        }
    };
    let spawned = std::thread::Builder::new()
        .name(format!("kafka-discovery-{topic}"))
        .spawn(look);
    if let Err(e) = spawned {
        tracing::warn!(%topic, "no partition discovery: cannot start its thread: {e}");
    }
}

impl<T: Send + 'static> KafkaSource<T> {
    fn open(
        &self,
        split: usize,
        position: u64,
        start_from: &StartFrom,
        dead_letters: Option<Arc<DeadLetters>>,
    ) -> Result<Box<dyn SplitReader<T>>, Error> {
        let reader = PartitionReader::open(
            self.config.clone(),
            self.decoder.clone(),
            dead_letters,
            i32::try_from(split).map_err(|_| self.error(split, "no such partition"))?,
            position,
            start_from,
        )?;
        Ok(Box::new(reader))
    }

    fn dead_letters(&self) -> Option<Arc<DeadLetters>> {
        let topic = self.config.dead_letter_topic.as_ref()?;
        Some(DeadLetters::new(
            self.config.client.clone(),
            self.config.topic.clone(),
            topic.clone(),
        ))
    }

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
    /// Where records that do not decode go; none: they fail the job.
    dead_letters: Option<Arc<DeadLetters>>,
    consumer: BaseConsumer,
    partition: i32,
    /// The next offset to hand out.
    next: i64,
    /// Bounded: the partition's end when opened.
    stop: Option<i64>,
    /// `(checkpoint, next offset)` of snapshots not yet known to be complete.
    taken: Vec<(u64, i64)>,
    last_error_report: Option<Instant>,
    /// The offset the reader was opened at, the records read since, and how many of them
    /// were dead letters: the dead-letter rate.
    opened_at: i64,
    read: u64,
    dead: u64,
}

impl<T: 'static> PartitionReader<T> {
    fn open(
        config: Arc<KafkaSourceConfig>,
        decoder: Arc<dyn KafkaDecoder<T>>,
        dead_letters: Option<Arc<DeadLetters>>,
        partition: i32,
        position: u64,
        start_from: &StartFrom,
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
            dead_letters,
            consumer,
            partition,
            next: 0,
            stop: None,
            taken: Vec::new(),
            last_error_report: None,
            opened_at: 0,
            read: 0,
            dead: 0,
        };
        let (low, high) = reader
            .consumer
            .fetch_watermarks(&config.topic, partition, CONNECT_TIMEOUT)
            .map_err(|e| reader.error(format!("cannot read the partition's offsets: {e}")))?;
        reader.next = match position.checked_sub(1) {
            // A restored position (an offset, plus one).
            Some(offset) => i64::try_from(offset).map_err(|_| reader.error("bad position"))?,
            None => reader.start_offset(start_from, low, high)?,
        };
        reader.opened_at = reader.next;
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
    fn start_offset(&self, start_from: &StartFrom, low: i64, high: i64) -> Result<i64, Error> {
        let topic = &self.config.topic;
        match start_from {
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

    /// Fails when more of the records read went to the dead-letter topic than
    /// `maxDeadLetterRate` allows.
    fn check_dead_letter_rate(&self) -> Result<(), Error> {
        let Some(max) = self.config.max_dead_letter_rate else {
            return Ok(());
        };
        let rate = self.dead as f64 / self.read as f64;
        if rate <= max {
            return Ok(());
        }
        Err(self.error(format!(
            "dead-letter rate {rate:.6} above maxDeadLetterRate {max}: {} of the {} records \
             read since offset {} did not decode (the last at offset {})",
            self.dead,
            self.read,
            self.opened_at,
            self.next - 1
        )))
    }

    /// The partition's end offset as the client last fetched it: librdkafka's cache, read
    /// without the round trip to the broker that `fetch_watermarks` makes (the reader's
    /// thread must not block). The safe API does not expose it. `None` before the first
    /// fetch.
    fn cached_end_offset(&self) -> Option<i64> {
        let topic = std::ffi::CString::new(self.config.topic.as_str()).ok()?;
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: the client handle lives as long as `self.consumer`, which outlives the
        // call; `topic` is NUL-terminated and outlives it; `low` and `high` are valid for
        // writes.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                topic.as_ptr(),
                self.partition,
                &mut low,
                &mut high,
            )
        };
        (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
            .then_some(high)
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
            tracing::warn!("{}", self.error(format!("{e} (retrying)")));
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
                    self.read += 1;
                    let dead_letter = match self.decoder.decode(&message) {
                        Ok(record) => {
                            out.push(record);
                            false
                        }
                        Err(DecodeError::Unavailable(e)) => {
                            return Err(self.error(format!("record at offset {offset}: {e}")));
                        }
                        Err(DecodeError::Record(e)) => {
                            let Some(dead_letters) = &self.dead_letters else {
                                return Err(self.error(format!("record at offset {offset}: {e}")));
                            };
                            let letter = DeadLetter {
                                job: &self.config.job_name,
                                operator: &self.config.operator_uid,
                                topic: &self.config.topic,
                                partition: self.partition,
                                offset,
                                error: &e,
                            };
                            dead_letters.write(&m, &letter)?;
                            self.dead += 1;
                            true
                        }
                    };
                    self.next = offset + 1;
                    // Only dead letters raise the rate: judged at each one from the sample
                    // on, and at the sample for those before it.
                    let sample = self.read >= KafkaSourceConfig::DEAD_LETTER_MIN_SAMPLE;
                    if (dead_letter && sample)
                        || (self.read == KafkaSourceConfig::DEAD_LETTER_MIN_SAMPLE && self.dead > 0)
                    {
                        self.check_dead_letter_rate()?;
                    }
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

    fn progress(&self) -> SplitProgress {
        let position = u64::try_from(self.next).unwrap_or(0);
        let backlog = self
            .cached_end_offset()
            .and_then(|high| u64::try_from(high).ok())
            .map(|high| high.saturating_sub(position));
        SplitProgress { position, backlog }
    }

    /// The snapshot covers the offsets of the dead letters written so far: they must be in
    /// the dead-letter topic before it can complete.
    fn snapshot_started(&mut self, checkpoint: u64) -> Result<(), Error> {
        if let Some(dead_letters) = &self.dead_letters {
            dead_letters.flush(self.partition)?;
        }
        if self.config.group_id.is_some() {
            self.taken.push((checkpoint, self.next));
        }
        Ok(())
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
            tracing::warn!("{}", self.error(format!("committing offset {offset}: {e}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_options_are_checked_together() {
        let mut config = KafkaSourceConfig::new(KafkaClientConfig::new("localhost:9092"), "events");
        assert!(config.check_dead_letters().is_ok());
        config.max_dead_letter_rate = Some(0.01);
        let err = config.check_dead_letters().unwrap_err().to_string();
        assert!(err.contains("needs a deadLetterTopic"), "{err}");
        config.dead_letter_topic = Some("dead".into());
        assert!(config.check_dead_letters().is_ok());
        config.max_dead_letter_rate = Some(1.5);
        let err = config.check_dead_letters().unwrap_err().to_string();
        assert!(err.contains("not a fraction"), "{err}");
        config.max_dead_letter_rate = None;
        config.dead_letter_topic = Some("events".into());
        let err = config.check_dead_letters().unwrap_err().to_string();
        assert!(err.contains("must not be the topic read"), "{err}");
    }
}
