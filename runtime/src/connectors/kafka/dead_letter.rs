//! The source's dead-letter topic: records that do not decode are written there, with
//! headers naming where they came from, instead of failing the job.

use super::config::KafkaClientConfig;
use crate::error::Error;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long a barrier waits for the brokers to acknowledge the dead letters before the job
/// fails; above the producer's `message.timeout.ms`, so that a record the brokers never
/// took is reported as such rather than as a timeout.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(90);
const MESSAGE_TIMEOUT_MS: &str = "60000";

/// Where a dead letter came from, and what was wrong with it.
pub(crate) struct DeadLetter<'a> {
    pub job: &'a str,
    pub operator: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub error: &'a str,
}

/// The dead-letter producer of one source subtask, shared by its partition readers: one
/// idempotent producer, created on the first record that does not decode.
pub(crate) struct DeadLetters {
    client: KafkaClientConfig,
    /// The topic read, for errors.
    source: String,
    topic: String,
    producer: Mutex<Option<BaseProducer<FirstFailure>>>,
}

/// `(partition, offset)` of a dead letter's source record, for its delivery report.
type Origin = Box<(i32, i64)>;

/// The first dead letter the brokers did not take: `(partition, offset, error)` of its
/// source record.
#[derive(Default)]
struct FirstFailure(Mutex<Option<(i32, i64, String)>>);

impl ClientContext for FirstFailure {}

impl ProducerContext for FirstFailure {
    type DeliveryOpaque = Origin;
    fn delivery(&self, result: &DeliveryResult<'_>, origin: Origin) {
        if let Err((e, _)) = result {
            let mut first = self.0.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert_with(|| (origin.0, origin.1, e.to_string()));
        }
    }
}

impl DeadLetters {
    pub(crate) fn new(client: KafkaClientConfig, source: String, topic: String) -> Arc<Self> {
        Arc::new(DeadLetters {
            client,
            source,
            topic,
            producer: Mutex::new(None),
        })
    }

    fn producer(&self) -> MutexGuard<'_, Option<BaseProducer<FirstFailure>>> {
        // A panic while holding the lock leaves nothing half-done: the producer is whole.
        self.producer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `record` (its key, value and headers) with headers naming `letter`'s origin
    /// and error; the broker's acknowledgement is awaited by [`Self::flush`].
    pub(crate) fn write(
        &self,
        record: &BorrowedMessage<'_>,
        letter: &DeadLetter<'_>,
    ) -> Result<(), Error> {
        let mut guard = self.producer();
        let producer = match &mut *guard {
            Some(p) => p,
            slot @ None => slot.insert(self.create()?),
        };
        let own = record.headers();
        let mut headers = OwnedHeaders::new_with_capacity(own.map_or(0, |h| h.count()) + 6);
        for h in own.into_iter().flat_map(|h| h.iter()) {
            headers = headers.insert(h);
        }
        let (partition, offset) = (letter.partition.to_string(), letter.offset.to_string());
        for (key, value) in [
            ("sluice.job", letter.job),
            ("sluice.operator", letter.operator),
            ("sluice.topic", letter.topic),
            ("sluice.partition", partition.as_str()),
            ("sluice.offset", offset.as_str()),
            ("sluice.error", letter.error),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut out = BaseRecord::<[u8], [u8], Origin>::with_opaque_to(
            &self.topic,
            Box::new((letter.partition, letter.offset)),
        )
        .headers(headers);
        if let Some(key) = record.key() {
            out = out.key(key);
        }
        if let Some(value) = record.payload() {
            out = out.payload(value);
        }
        loop {
            match producer.send(out) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    out = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => {
                    return Err(self.error(
                        letter.partition,
                        format!(
                            "cannot write the dead letter of offset {} to '{}': {e}",
                            letter.offset, self.topic
                        ),
                    ))
                }
            }
        }
        // Serves delivery reports, so that failures are noticed by the next flush.
        producer.poll(Duration::ZERO);
        Ok(())
    }

    /// Waits until the brokers acknowledged every dead letter written so far; fails naming
    /// the source partition and offset of one they did not take (`partition` when the
    /// wait itself failed).
    pub(crate) fn flush(&self, partition: i32) -> Result<(), Error> {
        let guard = self.producer();
        let Some(producer) = &*guard else {
            return Ok(());
        };
        let flushed = producer.flush(FLUSH_TIMEOUT);
        producer.poll(Duration::ZERO);
        let failed = producer
            .context()
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some((p, offset, e)) = failed {
            return Err(self.error(
                p,
                format!(
                    "the dead letter of offset {offset} was not written to '{}': {e}",
                    self.topic
                ),
            ));
        }
        flushed.map_err(|e| {
            self.error(
                partition,
                format!(
                    "dead letters not acknowledged by '{}' within {FLUSH_TIMEOUT:?}: {e}",
                    self.topic
                ),
            )
        })
    }

    fn create(&self) -> Result<BaseProducer<FirstFailure>, Error> {
        self.client
            .client_config(&[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("linger.ms", "5"),
                ("message.timeout.ms", MESSAGE_TIMEOUT_MS),
            ])?
            .create_with_context(FirstFailure::default())
            .map_err(|e| {
                self.client
                    .error(format!("cannot create the dead-letter producer: {e}"))
            })
    }

    /// An error about the dead letters of partition `partition` of the topic read.
    fn error(&self, partition: i32, message: impl Into<String>) -> Error {
        Error::Kafka {
            what: format!(
                "topic '{}' partition {partition} (brokers {})",
                self.source, self.client.bootstrap_servers
            ),
            message: message.into(),
        }
    }
}
