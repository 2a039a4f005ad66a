//! The Kafka sink. Why it writes exactly once is argued in the module docs of `kafka`.

use super::config::{KafkaClientConfig, CONNECT_TIMEOUT};
use crate::api::Record;
use crate::connectors::{Sink, SinkContext, SinkTransaction, SinkWriter};
use crate::error::Error;
use crate::sink::{KafkaRange, KafkaTransaction, OpenTransaction, OpenTransactions};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long flushing, committing or initialising a transaction may take before the sink
/// gives up (and the job restarts from its latest checkpoint).
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(120);

/// How long writing waits for a transactional id to come free.
const SLOT_WAIT: Duration = Duration::from_secs(120);

/// What the sink promises a read_committed consumer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeliveryGuarantee {
    /// Kafka transactions committed when the checkpoint completes: output appears once
    /// per checkpoint interval, never twice.
    #[default]
    ExactlyOnce,
    /// An idempotent producer flushed at every checkpoint: output appears at once, and a
    /// restart may write again what was written after the last checkpoint.
    AtLeastOnce,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaSinkConfig {
    #[serde(flatten)]
    pub client: KafkaClientConfig,
    pub topic: String,
    #[serde(default)]
    pub delivery: DeliveryGuarantee,
    /// Prefix of the transactional ids and marker groups [default: `<job>-<sink uid>`].
    /// Two jobs writing at once need different prefixes.
    #[serde(default)]
    pub transactional_id_prefix: Option<String>,
    /// How long a transaction may stay open: more than a checkpoint interval plus the time
    /// a checkpoint takes; at most the brokers' `transaction.max.timeout.ms`.
    #[serde(default = "default_transaction_timeout_ms")]
    pub transaction_timeout_ms: u64,
    /// Transactional ids per sink subtask: one being written, the others pre-committed and
    /// waiting for their checkpoints (more than one when checkpoints fail).
    #[serde(default = "default_transaction_slots")]
    pub transaction_slots: u32,
    /// Bytes a sink subtask may have handed to the client and not yet seen acknowledged;
    /// beyond it, writing waits (backpressure).
    #[serde(default = "default_max_in_flight_bytes")]
    pub max_in_flight_bytes: u64,
    /// How long the client waits to fill a batch.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    #[serde(default)]
    pub compression: Option<String>,
}

fn default_transaction_timeout_ms() -> u64 {
    600_000
}
fn default_transaction_slots() -> u32 {
    4
}
fn default_max_in_flight_bytes() -> u64 {
    64 << 20
}
fn default_linger_ms() -> u64 {
    5
}

impl KafkaSinkConfig {
    pub fn new(client: KafkaClientConfig, topic: impl Into<String>) -> Self {
        KafkaSinkConfig {
            client,
            topic: topic.into(),
            delivery: DeliveryGuarantee::ExactlyOnce,
            transactional_id_prefix: None,
            transaction_timeout_ms: default_transaction_timeout_ms(),
            transaction_slots: default_transaction_slots(),
            max_in_flight_bytes: default_max_in_flight_bytes(),
            linger_ms: default_linger_ms(),
            compression: None,
        }
    }

    fn producer_defaults(&self) -> Vec<(&'static str, String)> {
        vec![
            ("acks", "all".into()),
            ("linger.ms", self.linger_ms.to_string()),
            (
                "queue.buffering.max.kbytes",
                (self.max_in_flight_bytes / 1024).max(1).to_string(),
            ),
            (
                "compression.type",
                self.compression.clone().unwrap_or_else(|| "none".into()),
            ),
            ("enable.idempotence", "true".into()),
        ]
    }

    fn transactional_producer(&self, id: &str) -> Result<SlotProducer, Error> {
        let mut defaults = self.producer_defaults();
        defaults.push(("transactional.id", id.to_string()));
        defaults.push((
            "transaction.timeout.ms",
            self.transaction_timeout_ms.to_string(),
        ));
        self.producer(&defaults)
    }

    fn producer(&self, defaults: &[(&'static str, String)]) -> Result<SlotProducer, Error> {
        let defaults: Vec<(&str, &str)> = defaults.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.client
            .client_config(&defaults)?
            .create_with_context(Deliveries::default())
            .map_err(|e| self.client.error(format!("cannot create a producer: {e}")))
    }

    /// A consumer of `group` (reading aborted records too when `uncommitted`).
    fn consumer(&self, group: &str, uncommitted: bool) -> Result<BaseConsumer, Error> {
        let isolation = if uncommitted {
            "read_uncommitted"
        } else {
            "read_committed"
        };
        self.client
            .client_config(&[
                ("group.id", group),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("isolation.level", isolation),
                ("enable.partition.eof", "true"),
                ("auto.offset.reset", "earliest"),
            ])?
            .create()
            .map_err(|e| self.client.error(format!("cannot create a consumer: {e}")))
    }
}

/// One record to write, filled by a [`KafkaEncoder`]; its buffers are reused.
#[derive(Default)]
pub struct KafkaOutRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Epoch milliseconds; `None` lets the client take the time of writing.
    pub timestamp: Option<i64>,
    /// `None` lets the client choose (by the key's hash when there is a key).
    pub partition: Option<i32>,
}

impl KafkaOutRecord {
    fn clear(&mut self) {
        if let Some(k) = &mut self.key {
            k.clear();
        }
        self.value.clear();
        self.headers.clear();
        self.timestamp = None;
        self.partition = None;
    }
}

/// Turns the stream's records into Kafka records.
pub trait KafkaEncoder<T>: Send + Sync + 'static {
    /// Fills `out` (cleared) from `record`.
    fn encode(&self, record: &Record<T>, out: &mut KafkaOutRecord) -> Result<(), String>;
}

/// JSON values, the record's event time as the Kafka timestamp, optional keys and headers.
pub struct JsonEncoder<T> {
    key_field: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
    _t: PhantomData<fn(&T)>,
}

impl<T> Default for JsonEncoder<T> {
    fn default() -> Self {
        JsonEncoder {
            key_field: None,
            headers: Vec::new(),
            _t: PhantomData,
        }
    }
}

impl<T> JsonEncoder<T> {
    /// Keys records by a top-level field of their JSON form (its text for strings, its JSON
    /// otherwise), so that records of one key land in one partition.
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

impl<T: Serialize + 'static> KafkaEncoder<T> for JsonEncoder<T> {
    fn encode(&self, record: &Record<T>, out: &mut KafkaOutRecord) -> Result<(), String> {
        let bad = |e: serde_json::Error| format!("cannot encode record: {e}");
        // The value in the record's own field order, as the file sink writes it.
        serde_json::to_writer(&mut out.value, &record.value).map_err(bad)?;
        match &self.key_field {
            None => out.key = None,
            Some(field) => {
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

/// Writes a stream into a topic.
pub struct KafkaSink<T> {
    config: Arc<KafkaSinkConfig>,
    encoder: Arc<dyn KafkaEncoder<T>>,
}

impl<T> KafkaSink<T> {
    /// Looks the topic up: fails naming the brokers when none answers and naming the topic
    /// when it does not exist.
    pub fn new(config: KafkaSinkConfig, encoder: impl KafkaEncoder<T>) -> Result<Self, Error> {
        super::partition_count(&config.client, &config.topic)?;
        if config.transaction_slots < 2 {
            return Err(config
                .client
                .error("transactionSlots must be at least 2 (one writing, one committing)"));
        }
        Ok(KafkaSink {
            config: Arc::new(config),
            encoder: Arc::new(encoder),
        })
    }
}

impl<T: 'static> Sink<T> for KafkaSink<T> {
    fn open(&self, cx: &SinkContext) -> Result<Box<dyn SinkWriter<T>>, Error> {
        let writer = Writer {
            config: self.config.clone(),
            encoder: self.encoder.clone(),
            out: KafkaOutRecord::default(),
            _t: PhantomData,
        };
        Ok(match self.config.delivery {
            DeliveryGuarantee::AtLeastOnce => Box::new(AtLeastOnce {
                producer: self.config.producer(&self.config.producer_defaults())?,
                w: writer,
            }),
            DeliveryGuarantee::ExactlyOnce => Box::new(ExactlyOnce::open(writer, cx)?),
        })
    }
}

/// Where a producer's records landed, for the snapshot, and the first failure.
#[derive(Default)]
struct Deliveries {
    state: Mutex<Delivered>,
}

#[derive(Default)]
struct Delivered {
    /// Runs of consecutive offsets, per partition.
    ranges: BTreeMap<i32, Vec<KafkaRange>>,
    error: Option<String>,
}

impl Deliveries {
    fn lock(&self) -> MutexGuard<'_, Delivered> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_ranges(&self) -> Vec<KafkaRange> {
        let ranges = std::mem::take(&mut self.lock().ranges);
        ranges.into_values().flatten().collect()
    }

    fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut state = self.lock();
        match result {
            Ok(m) => {
                let (partition, offset) = (m.partition(), m.offset());
                let runs = state.ranges.entry(partition).or_default();
                match runs.last_mut() {
                    Some(run) if run.last + 1 == offset => run.last = offset,
                    _ => runs.push(KafkaRange {
                        partition,
                        first: offset,
                        last: offset,
                    }),
                }
            }
            Err((e, m)) => {
                state.error.get_or_insert_with(|| {
                    format!(
                        "a record for partition {} was not written: {e}",
                        m.partition()
                    )
                });
            }
        }
    }
}

type SlotProducer = BaseProducer<Deliveries>;

/// The part of a writer shared by both guarantees.
struct Writer<T> {
    config: Arc<KafkaSinkConfig>,
    encoder: Arc<dyn KafkaEncoder<T>>,
    out: KafkaOutRecord,
    _t: PhantomData<fn(&T)>,
}

impl<T: 'static> Writer<T> {
    fn error(&self, message: impl Into<String>) -> Error {
        Error::Kafka {
            what: format!(
                "sink to topic '{}' (brokers {})",
                self.config.topic, self.config.client.bootstrap_servers
            ),
            message: message.into(),
        }
    }

    /// Hands `batch` to `producer`, waiting while its buffer is full.
    fn send(&mut self, producer: &SlotProducer, batch: &[Record<T>]) -> Result<(), Error> {
        let topic = self.config.topic.as_str();
        for r in batch {
            self.out.clear();
            self.encoder
                .encode(r, &mut self.out)
                .map_err(|e| self.error(e))?;
            let out = &self.out;
            let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(out.value.as_slice());
            if let Some(key) = &out.key {
                record = record.key(key.as_slice());
            }
            if let Some(ts) = out.timestamp {
                record = record.timestamp(ts);
            }
            if let Some(p) = out.partition {
                record = record.partition(p);
            }
            if !out.headers.is_empty() {
                let mut headers = OwnedHeaders::new_with_capacity(out.headers.len());
                for (key, value) in &out.headers {
                    headers = headers.insert(Header {
                        key,
                        value: Some(value),
                    });
                }
                record = record.headers(headers);
            }
            send_waiting(producer, record).map_err(|e| self.error(e))?;
        }
        producer.poll(Duration::ZERO);
        Ok(())
    }
}

/// Sends one record; while the client's buffer is full, serves it and tries again.
fn send_waiting(
    producer: &SlotProducer,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), String> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(format!("cannot write a record: {e}")),
        }
    }
}

fn flush(producer: &SlotProducer) -> Result<(), String> {
    producer
        .flush(TRANSACTION_TIMEOUT)
        .map_err(|e| format!("records not acknowledged within {TRANSACTION_TIMEOUT:?}: {e}"))?;
    match producer.context().error() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

struct AtLeastOnce<T> {
    w: Writer<T>,
    producer: SlotProducer,
}

impl<T: 'static> SinkWriter<T> for AtLeastOnce<T> {
    fn write(&mut self, batch: &[Record<T>]) -> Result<(), Error> {
        self.w.send(&self.producer, batch)?;
        match self.producer.context().error() {
            Some(e) => Err(self.w.error(e)),
            None => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<(), Error> {
        flush(&self.producer).map_err(|e| self.w.error(e))
    }

    fn pre_commit(
        &mut self,
        _checkpoint: u64,
        _committed: u64,
    ) -> Result<Vec<SinkTransaction>, Error> {
        // Everything before the barrier is acknowledged before the checkpoint can complete.
        flush(&self.producer).map_err(|e| self.w.error(e))?;
        Ok(Vec::new())
    }
}

/// What a transactional id's producer is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
enum SlotState {
    Idle,
    /// Records are being written into its transaction.
    Open,
    /// Flushed and marked at the barrier of this checkpoint; committed when it completes.
    PreCommitted(u64),
    Failed(String),
}

/// A transactional id of a subtask and its producer.
struct Slot {
    id: String,
    index: u32,
    producer: SlotProducer,
    state: Mutex<SlotState>,
}

impl Slot {
    fn state(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl OpenTransaction for Slot {
    fn commit(&self, checkpoint: u64) -> Result<(), String> {
        let mut state = self.state();
        match &*state {
            SlotState::PreCommitted(c) if *c <= checkpoint => {
                match self.producer.commit_transaction(TRANSACTION_TIMEOUT) {
                    Ok(()) => {
                        *state = SlotState::Idle;
                        Ok(())
                    }
                    Err(e) => {
                        let message = format!("commit failed: {e}");
                        *state = SlotState::Failed(message.clone());
                        Err(message)
                    }
                }
            }
            SlotState::Failed(e) => Err(e.clone()),
            // Committed before, or newer than the snapshot being committed.
            _ => Ok(()),
        }
    }
}

/// The names one sink subtask's transactions go by.
#[derive(Clone)]
struct Names {
    prefix: String,
}

impl Names {
    fn transactional_id(&self, subtask: usize, slot: u32) -> String {
        format!("{}-{subtask}-{slot}", self.prefix)
    }

    /// The consumer group whose offset in partition 0 of the topic marks the newest
    /// committed transaction of `subtask`.
    fn marker_group(&self, subtask: usize) -> String {
        format!("{}-{subtask}", self.prefix)
    }
}

/// The marker's offset for a checkpoint (the final snapshot's id is the largest).
fn marker_offset(checkpoint: u64) -> i64 {
    i64::try_from(checkpoint).unwrap_or(i64::MAX)
}

struct ExactlyOnce<T> {
    w: Writer<T>,
    names: Names,
    subtask: usize,
    parallelism: usize,
    run: String,
    slots: Vec<Arc<Slot>>,
    /// The slot whose transaction is being written.
    current: Option<usize>,
    /// Keeps the marker group's client alive for `marker`.
    _marker_consumer: BaseConsumer,
    marker: ConsumerGroupMetadata,
    /// Pre-committed, not yet known to be committed.
    pending: Vec<KafkaTransaction>,
    /// The final barrier passed: its transaction stays registered for the final commit.
    final_barrier: bool,
}

impl<T: 'static> ExactlyOnce<T> {
    fn open(w: Writer<T>, cx: &SinkContext) -> Result<Self, Error> {
        let config = w.config.clone();
        let names = Names {
            prefix: config
                .transactional_id_prefix
                .clone()
                .unwrap_or_else(|| format!("{}-{}", cx.job, cx.uid)),
        };
        let restored: Vec<KafkaTransaction> = cx
            .restored
            .iter()
            .filter_map(|t| match t {
                SinkTransaction::Kafka(k) if k.prefix == names.prefix => Some(k.clone()),
                _ => None,
            })
            .collect();
        let before = restored
            .iter()
            .map(|t| t.parallelism as usize)
            .max()
            .unwrap_or(0);
        let started = Instant::now();
        let mut own = Vec::new();
        // The old subtasks this subtask takes over (itself among them); no other subtask
        // touches their ids.
        for old in (0..before.max(cx.parallelism)).filter(|s| s % cx.parallelism == cx.subtask) {
            let listed: Vec<&KafkaTransaction> = restored
                .iter()
                .filter(|t| t.subtask as usize == old)
                .collect();
            let mut slots = listed.iter().map(|t| t.slots).max().unwrap_or(0);
            if old == cx.subtask {
                slots = slots.max(config.transaction_slots);
            }
            let producers = fence(&config, &names, old, slots)?;
            resolve(&config, &names, old, listed, &producers)?;
            if old == cx.subtask {
                own = producers
                    .into_iter()
                    .take(config.transaction_slots as usize)
                    .collect();
            }
        }
        let marker_consumer = config.consumer(&names.marker_group(cx.subtask), false)?;
        let marker = marker_consumer
            .group_metadata()
            .ok_or_else(|| w.error("no consumer group metadata for the commit marker"))?;
        if !restored.is_empty() || cx.subtask == 0 {
            tracing::info!(
                sink = %names.prefix,
                subtask = cx.subtask,
                "Kafka sink transactions resolved in {:.1}s",
                started.elapsed().as_secs_f64()
            );
        }
        Ok(ExactlyOnce {
            w,
            names,
            subtask: cx.subtask,
            parallelism: cx.parallelism,
            run: cx.run_id.clone(),
            slots: own,
            current: None,
            _marker_consumer: marker_consumer,
            marker,
            pending: Vec::new(),
            final_barrier: false,
        })
    }

    fn failed(&self) -> Result<(), Error> {
        for slot in &self.slots {
            if let SlotState::Failed(e) = &*slot.state() {
                return Err(self.w.error(format!("transaction {}: {e}", slot.id)));
            }
        }
        Ok(())
    }

    /// The slot being written, beginning a transaction on an idle one when there is none.
    fn current(&mut self) -> Result<Arc<Slot>, Error> {
        if let Some(i) = self.current {
            return Ok(self.slots[i].clone());
        }
        // Every id may hold a transaction of a checkpoint not yet complete (checkpoints
        // failed): writing waits for the next completion to free one.
        let since = Instant::now();
        let idle = loop {
            if let Some(i) = self
                .slots
                .iter()
                .position(|s| *s.state() == SlotState::Idle)
            {
                break i;
            }
            self.failed()?;
            if since.elapsed() > SLOT_WAIT {
                return Err(self.w.error(format!(
                    "all {} transactional ids held transactions of incomplete checkpoints for \
                     {SLOT_WAIT:?} (raise transactionSlots, or see why checkpoints fail)",
                    self.slots.len()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let slot = self.slots[idle].clone();
        slot.producer.begin_transaction().map_err(|e| {
            self.w
                .error(format!("transaction {}: cannot begin: {e}", slot.id))
        })?;
        slot.producer.context().take_ranges();
        *slot.state() = SlotState::Open;
        self.current = Some(idle);
        Ok(slot)
    }

    fn record(&self, checkpoint: u64, slot: u32, ranges: Vec<KafkaRange>) -> KafkaTransaction {
        KafkaTransaction {
            checkpoint,
            transactional_id: self.names.transactional_id(self.subtask, slot),
            prefix: self.names.prefix.clone(),
            subtask: self.subtask as u32,
            parallelism: self.parallelism as u32,
            slot,
            slots: self.slots.len() as u32,
            run: self.run.clone(),
            topic: self.w.config.topic.clone(),
            ranges,
        }
    }
}

impl<T: 'static> SinkWriter<T> for ExactlyOnce<T> {
    fn write(&mut self, batch: &[Record<T>]) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        self.failed()?;
        let slot = self.current()?;
        self.w.send(&slot.producer, batch)?;
        match slot.producer.context().error() {
            Some(e) => Err(self.w.error(format!("transaction {}: {e}", slot.id))),
            None => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<(), Error> {
        Ok(())
    }

    fn visible_on_commit(&self) -> bool {
        true
    }

    fn pre_commit(
        &mut self,
        checkpoint: u64,
        committed: u64,
    ) -> Result<Vec<SinkTransaction>, Error> {
        self.pending.retain(|t| t.checkpoint > committed);
        self.failed()?;
        let record = match self.current.take() {
            Some(i) => {
                let slot = self.slots[i].clone();
                let fail = |e: String| self.w.error(format!("transaction {}: {e}", slot.id));
                flush(&slot.producer).map_err(fail)?;
                let mut marker = TopicPartitionList::new();
                marker
                    .add_partition_offset(
                        &self.w.config.topic,
                        0,
                        Offset::Offset(marker_offset(checkpoint)),
                    )
                    .map_err(|e| fail(e.to_string()))?;
                if let Some(mut elem) = marker.find_partition(&self.w.config.topic, 0) {
                    elem.set_metadata(&self.run);
                }
                slot.producer
                    .send_offsets_to_transaction(&marker, &self.marker, TRANSACTION_TIMEOUT)
                    .map_err(|e| fail(format!("cannot add the commit marker: {e}")))?;
                let ranges = slot.producer.context().take_ranges();
                *slot.state() = SlotState::PreCommitted(checkpoint);
                OpenTransactions::register(&slot.id, slot.clone());
                self.record(checkpoint, slot.index, ranges)
            }
            // Nothing written since the last barrier: no transaction, but the snapshot still
            // learns this subtask's ids (a restore fences them).
            None => self.record(checkpoint, 0, Vec::new()),
        };
        self.pending.push(record);
        if checkpoint == u64::MAX {
            self.final_barrier = true;
        }
        Ok(self
            .pending
            .iter()
            .cloned()
            .map(SinkTransaction::from)
            .collect())
    }
}

impl<T> Drop for ExactlyOnce<T> {
    fn drop(&mut self) {
        // A writer that stops early leaves its open transactions to the next run's writers
        // (which abort or resolve them); after the final barrier the last one still awaits
        // the final snapshot's commit.
        if !self.final_barrier {
            for slot in &self.slots {
                if matches!(*slot.state(), SlotState::PreCommitted(_)) {
                    OpenTransactions::remove(&slot.id);
                }
            }
        }
    }
}

/// Initialises every transactional id of old subtask `subtask` (in parallel): any producer
/// still using one is fenced and whatever it left open is aborted.
fn fence(
    config: &KafkaSinkConfig,
    names: &Names,
    subtask: usize,
    slots: u32,
) -> Result<Vec<Arc<Slot>>, Error> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..slots)
            .map(|index| {
                scope.spawn(move || -> Result<Arc<Slot>, Error> {
                    let id = names.transactional_id(subtask, index);
                    OpenTransactions::remove(&id);
                    let producer = config.transactional_producer(&id)?;
                    producer
                        .init_transactions(TRANSACTION_TIMEOUT)
                        .map_err(|e| Error::Kafka {
                            what: format!(
                                "transactional id '{id}' (brokers {})",
                                config.client.bootstrap_servers
                            ),
                            message: format!("cannot initialise transactions: {e}"),
                        })?;
                    Ok(Arc::new(Slot {
                        id,
                        index,
                        producer,
                        state: Mutex::new(SlotState::Idle),
                    }))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(config.client.error("fencing panicked")))
            })
            .collect()
    })
}

/// Commits what the restored snapshot lists for old subtask `subtask` and its commit did not
/// reach: tells by the marker, writes the records again from where they lie.
fn resolve(
    config: &KafkaSinkConfig,
    names: &Names,
    subtask: usize,
    mut listed: Vec<&KafkaTransaction>,
    producers: &[Arc<Slot>],
) -> Result<(), Error> {
    listed.retain(|t| !t.ranges.is_empty());
    if listed.is_empty() {
        return Ok(());
    }
    listed.sort_by_key(|t| t.checkpoint);
    let group = names.marker_group(subtask);
    let consumer = config.consumer(&group, false)?;
    let error = |message: String| Error::Kafka {
        what: format!(
            "recovering transactions of group '{group}' (brokers {})",
            config.client.bootstrap_servers
        ),
        message,
    };
    let topic = &config.topic;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let committed = consumer
        .committed_offsets(tpl, TRANSACTION_TIMEOUT)
        .map_err(|e| error(format!("cannot read the commit marker: {e}")))?;
    let (mut marked, mut marked_run) = match committed.find_partition(topic, 0) {
        Some(e) => match e.offset() {
            Offset::Offset(o) => (o, e.metadata().to_string()),
            _ => (-1, String::new()),
        },
        None => (-1, String::new()),
    };
    let metadata = consumer
        .group_metadata()
        .ok_or_else(|| error("no consumer group metadata".into()))?;
    for t in listed {
        if marked_run == t.run && marked >= marker_offset(t.checkpoint) {
            continue;
        }
        let slot = producers
            .iter()
            .find(|s| s.index == t.slot)
            .ok_or_else(|| error(format!("no producer for slot {}", t.slot)))?;
        let copied = rewrite(config, t, slot, &metadata).map_err(error)?;
        tracing::warn!(
            "Kafka sink: transaction {} of checkpoint {} was not committed; wrote its {copied} \
             record(s) again",
            t.transactional_id,
            t.checkpoint
        );
        marked = marker_offset(t.checkpoint);
        marked_run = t.run.clone();
    }
    Ok(())
}

/// Writes the records of `t` again, from the offsets where its aborted transaction left them,
/// in a new transaction with its marker; commits it. Returns how many were written.
fn rewrite(
    config: &KafkaSinkConfig,
    t: &KafkaTransaction,
    slot: &Slot,
    marker_group: &ConsumerGroupMetadata,
) -> Result<u64, String> {
    let reader = config
        .consumer(&format!("{}-recovery", t.transactional_id), true)
        .map_err(|e| e.to_string())?;
    let producer = &slot.producer;
    producer
        .begin_transaction()
        .map_err(|e| format!("cannot begin: {e}"))?;
    let mut by_partition: BTreeMap<i32, Vec<KafkaRange>> = BTreeMap::new();
    for r in &t.ranges {
        by_partition.entry(r.partition).or_default().push(*r);
    }
    let mut copied = 0u64;
    for (partition, ranges) in by_partition {
        let first = ranges.iter().map(|r| r.first).min().unwrap_or(0);
        let last = ranges.iter().map(|r| r.last).max().unwrap_or(-1);
        let wanted: u64 = ranges.iter().map(KafkaRange::len).sum();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&t.topic, partition, Offset::Offset(first))
            .map_err(|e| e.to_string())?;
        reader.assign(&tpl).map_err(|e| e.to_string())?;
        let mut found = 0u64;
        let mut progress = Instant::now();
        while found < wanted {
            if progress.elapsed() > CONNECT_TIMEOUT * 3 {
                return Err(format!(
                    "partition {partition}: found {found} of {wanted} records at offsets \
                     {first}..={last} in {:?}",
                    CONNECT_TIMEOUT * 3
                ));
            }
            let m = match reader.poll(Duration::from_millis(100)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    return Err(format!(
                        "partition {partition}: the records at offsets {first}..={last} are \
                         gone ({found} of {wanted} found; retention removed them?)"
                    ))
                }
                Some(Err(e)) => {
                    tracing::warn!("Kafka sink recovery, partition {partition}: {e} (retrying)");
                    continue;
                }
                Some(Ok(m)) => m,
            };
            progress = Instant::now();
            let offset = m.offset();
            if offset > last {
                return Err(format!(
                    "partition {partition}: {} of {wanted} records at offsets {first}..={last} \
                     are gone (compacted or deleted)",
                    wanted - found
                ));
            }
            if !ranges.iter().any(|r| r.first <= offset && offset <= r.last) {
                continue;
            }
            let mut record = BaseRecord::<[u8], [u8]>::to(&t.topic).partition(partition);
            if let Some(p) = m.payload() {
                record = record.payload(p);
            }
            if let Some(k) = m.key() {
                record = record.key(k);
            }
            if let Some(ts) = m.timestamp().to_millis() {
                record = record.timestamp(ts);
            }
            if let Some(h) = m.headers() {
                record = record.headers(h.detach());
            }
            send_waiting(producer, record)?;
            found += 1;
        }
        copied += found;
    }
    flush(producer)?;
    let mut marker = TopicPartitionList::new();
    marker
        .add_partition_offset(&t.topic, 0, Offset::Offset(marker_offset(t.checkpoint)))
        .map_err(|e| e.to_string())?;
    if let Some(mut elem) = marker.find_partition(&t.topic, 0) {
        elem.set_metadata(&t.run);
    }
    producer
        .send_offsets_to_transaction(&marker, marker_group, TRANSACTION_TIMEOUT)
        .map_err(|e| format!("cannot add the commit marker: {e}"))?;
    producer
        .commit_transaction(TRANSACTION_TIMEOUT)
        .map_err(|e| format!("cannot commit: {e}"))?;
    producer.context().take_ranges();
    Ok(copied)
}
