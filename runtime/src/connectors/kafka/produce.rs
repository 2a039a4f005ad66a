//! `sluice nexmark produce`: generated Nexmark events into a topic.

use super::config::KafkaClientConfig;
use crate::error::Error;
use crate::nexmark::{NexmarkConfig, NexmarkGenerator};
use rdkafka::client::ClientContext;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use std::sync::Mutex;
use std::time::Duration;

/// Remembers the first record the brokers did not take.
#[derive(Default)]
struct FirstFailure(Mutex<Option<String>>);

impl ClientContext for FirstFailure {}

impl ProducerContext for FirstFailure {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            let mut first = self.0.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

/// Writes events `first..config.events` as JSON, event `n` into partition `n % partitions`
/// (so each partition holds what split `n % partitions` of the generator produces when the
/// job has as many source splits) with the event's time as the record timestamp. A topic
/// filled in stages (`first` the end of the previous stage) holds what one call would have
/// written. Returns the number of partitions.
pub fn produce_nexmark(
    client: &KafkaClientConfig,
    topic: &str,
    config: &NexmarkConfig,
    first: u64,
) -> Result<usize, Error> {
    let partitions = super::partition_count(client, topic)?;
    let producer: BaseProducer<FirstFailure> = client
        .client_config(&[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "20"),
            ("compression.type", "lz4"),
        ])?
        .create_with_context(FirstFailure::default())
        .map_err(|e| client.error(format!("cannot create a producer: {e}")))?;
    let generator = NexmarkGenerator::new(config);
    let mut value = Vec::with_capacity(512);
    for n in first..config.events {
        let event = generator.event(n);
        value.clear();
        serde_json::to_writer(&mut value, &event)
            .map_err(|e| client.error(format!("cannot encode event {n}: {e}")))?;
        let partition = (n % partitions as u64) as i32;
        let mut record = BaseRecord::<(), [u8]>::to(topic)
            .payload(value.as_slice())
            .partition(partition)
            .timestamp(event.timestamp().millis());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    record = back;
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(client.error(format!("cannot write event {n} to '{topic}': {e}")))
                }
            }
        }
        if n % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(Duration::from_secs(300))
        .map_err(|e| client.error(format!("events not acknowledged: {e}")))?;
    let failure = producer
        .context()
        .0
        .lock()
        .map(|f| f.clone())
        .unwrap_or(None);
    match failure {
        Some(e) => Err(client.error(format!("events not written to '{topic}': {e}"))),
        None => Ok(partitions),
    }
}
