//! Apache Kafka: a source whose splits are a topic's partitions, and a sink that writes
//! exactly once with Kafka transactions (or at least once).
//!
//! # The client
//!
//! [`rdkafka`] over librdkafka, compiled from the source the crate bundles (its configure
//! script; TLS from the system's OpenSSL, zstd and lz4 built in). librdkafka is the client most
//! non-Java systems use in production, supports idempotent and transactional producers,
//! transactional offset commits and read_committed consumers, and needs nothing installed
//! at run time besides OpenSSL. The pure-Rust clients lack transactions. Building it from
//! source (rather than linking Debian's librdkafka) pins the version the sink's exactly-once
//! argument was checked against; it costs one C build per clean target directory.
//!
//! # Source ([`KafkaSource`])
//!
//! Partition `p` of the topic is split `p`; split `p` goes to subtask `p % parallelism` like
//! every split. A split's position is the next offset to read plus one (zero: nothing read
//! yet, start as configured), so it is part of every snapshot and restores at any
//! parallelism. Offsets are committed to the consumer group only once the snapshot that
//! holds them is complete, for lag monitoring; recovery never reads them. Per-partition
//! watermarks and idleness come from the engine's per-split watermarks.
//!
//! Records that do not decode fail the job, or go to a dead-letter topic
//! (`deadLetterTopic`, module `dead_letter`): one idempotent producer per source subtask,
//! shared by its partition readers and flushed at every barrier before the positions are
//! recorded, so a complete snapshot never covers a dead letter the brokers did not
//! acknowledge. Dead letters written after the snapshot a job restores are written again
//! (at least once).
//!
//! Values are decoded by a [`KafkaDecoder`] and encoded by a [`KafkaEncoder`]: JSON, or
//! Avro (module `avro`: plain datums with configured schemas, or the Confluent wire format
//! with a schema registry). A decoder tells a bad record (a dead letter) from a failure to
//! try (a registry that does not answer: the job fails and restarts from its checkpoint).
//!
//! An unbounded source looks for partitions added to the topic every
//! `partitionDiscoveryMs` (a minute by default), on a thread of its own per process: a
//! subtask takes up new partition `p` when `p % parallelism` is its index, without asking
//! the others, and reads it from its first record, whatever `startFrom` says (every record
//! of it is new to the job). A snapshot records the partitions read so far; a job
//! restoring a snapshot that lacks a partition reads that one from its first record too,
//! so records written to a partition the job had not yet taken up when it failed are not
//! skipped. A subtask with no partition yet stays up, idle, for the ones to come.

//! # Sink ([`KafkaSink`]) and why it writes exactly once
//!
//! Each sink subtask `s` owns a few transactional ids, `<prefix>-<s>-<slot>`, where the
//! prefix is the job's name and the sink's uid (stable across runs). Records between two
//! barriers go into one Kafka transaction on one slot. At a barrier the transaction is
//! flushed, a *marker* is added to it — the offset `checkpoint` with metadata `run`,
//! committed transactionally for consumer group `<prefix>-<s>` — and it is left open; the
//! snapshot lists it (transactional id, checkpoint, run, and the offsets its records
//! occupy). The next records go into a transaction on another slot. When the snapshot is
//! complete, the coordinator commits what it lists: the producer holding the transaction
//! commits it ([`crate::sink::OpenTransactions`]). Transactions of one subtask commit
//! in checkpoint order.
//!
//! A read_committed consumer sees a transaction's records only once it is committed, and
//! it is committed only after the snapshot recording the source positions past those
//! records is complete: no output of a checkpoint that may be rolled back is ever visible.
//!
//! After a failure the job restores the latest complete snapshot. It may list transactions
//! that were never committed (the process died between completing the snapshot and the
//! commit). librdkafka cannot resume another producer's transaction, so the restored sink
//! writer resolves each listed transaction itself, subtask by subtask in checkpoint order:
//!
//! 1. it initialises every transactional id of the old subtask (fencing any producer of
//!    the failed run still alive and aborting whatever it left open);
//! 2. it reads the marker of group `<prefix>-<s>`: the marker is written in the same
//!    transaction as the records, so it says exactly whether they were committed
//!    (`run` equal and offset at least `checkpoint`);
//! 3. if not, it reads the aborted records back from the offsets the snapshot lists
//!    (read_uncommitted) and writes them again, with the marker, in a new transaction on
//!    the same id, and commits.
//!
//! Every listed transaction is therefore committed exactly once, and transactions that no
//! complete snapshot lists are aborted: their output is produced again from the restored
//! source positions. Old subtask `s` is handled by new subtask `s % parallelism`, so a
//! rescaled job resolves every old id and no two writers touch the same id. Limits: the
//! records must still be in the topic (its retention must exceed the time to recover);
//! restoring a snapshot older than the latest commits only what that snapshot lists, so
//! output committed after it is not withdrawn (as with any sink).

mod avro;
mod config;
mod dead_letter;
mod produce;
mod sink;
mod source;

pub use avro::{check_readable, parse_schema, AvroDecoder, AvroEncoder, SchemaRegistry};
pub use config::{KafkaClientConfig, KafkaUri};
pub use produce::produce_nexmark;
pub use sink::{
    DeliveryGuarantee, JsonEncoder, KafkaEncoder, KafkaOutRecord, KafkaSink, KafkaSinkConfig,
};
pub use source::{
    DecodeError, JsonDecoder, KafkaDecoder, KafkaMessage, KafkaSource, KafkaSourceConfig,
    StartFrom, TimeFrom,
};

use crate::error::Error;

/// The number of partitions of `topic`; fails naming the brokers when none answers and
/// naming the topic when it does not exist.
pub fn partition_count(client: &KafkaClientConfig, topic: &str) -> Result<usize, Error> {
    config::partition_count(client, topic)
}
