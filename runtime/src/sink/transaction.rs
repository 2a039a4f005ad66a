//! Sink transactions as snapshots list them: what a sink pre-committed when a barrier passed
//! and what completing the snapshot commits. Each kind is described here as plain data; a
//! kind whose commit needs a live client (a Kafka producer holding an open transaction)
//! reaches it through [`OpenTransactions`], where the connector that opened it registers it,
//! so that the engine never depends on a connector.

use super::{FileTransaction, ObjectTransaction};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// One pre-committed piece of a sink's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkTransaction {
    File(FileTransaction),
    Kafka(KafkaTransaction),
    Object(ObjectTransaction),
}

impl From<FileTransaction> for SinkTransaction {
    fn from(t: FileTransaction) -> Self {
        SinkTransaction::File(t)
    }
}

impl From<ObjectTransaction> for SinkTransaction {
    fn from(t: ObjectTransaction) -> Self {
        SinkTransaction::Object(t)
    }
}

impl From<KafkaTransaction> for SinkTransaction {
    fn from(t: KafkaTransaction) -> Self {
        SinkTransaction::Kafka(t)
    }
}

impl SinkTransaction {
    /// The checkpoint whose barrier closed it.
    pub fn checkpoint(&self) -> u64 {
        match self {
            SinkTransaction::File(t) => t.checkpoint,
            SinkTransaction::Kafka(t) => t.checkpoint,
            SinkTransaction::Object(t) => t.checkpoint,
        }
    }

    /// Makes the output visible. Idempotent, so recovery can commit again whatever a
    /// completed snapshot lists. A Kafka transaction is committed by the producer holding it
    /// when that producer lives in this process; otherwise there is nothing to do here: the
    /// sink writers that take its transactional id over on restore resolve it (they commit it
    /// if it was not, see the Kafka sink).
    pub fn commit(&self) -> Result<(), crate::Error> {
        match self {
            SinkTransaction::File(t) => t.commit(),
            SinkTransaction::Object(t) => t.commit(),
            SinkTransaction::Kafka(t) => match OpenTransactions::get(&t.transactional_id) {
                Some(open) => open.commit(t.checkpoint).map_err(|message| {
                    crate::Error::Checkpoint(format!(
                        "committing Kafka transaction {} of checkpoint {}: {message}",
                        t.transactional_id, t.checkpoint
                    ))
                }),
                None => Ok(()),
            },
        }
    }

    /// One line for `sluice savepoint inspect`.
    pub fn describe(&self) -> String {
        match self {
            SinkTransaction::File(t) => t.committed.display().to_string(),
            SinkTransaction::Object(t) => t.committed_uri(),
            SinkTransaction::Kafka(t) => {
                let records: u64 = t.ranges.iter().map(KafkaRange::len).sum();
                format!(
                    "Kafka transaction {} ({records} record(s) in {})",
                    t.transactional_id, t.topic
                )
            }
        }
    }
}

/// Output of one Kafka sink subtask between two barriers, written in one Kafka transaction
/// that stays open until the checkpoint completes. Enough is recorded to tell, after a
/// failure, whether the transaction was committed (the marker) and to write the same records
/// again if it was not (where they lie in the topic).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTransaction {
    pub checkpoint: u64,
    /// `<prefix>-<subtask>-<slot>`.
    pub transactional_id: String,
    /// Names the sink across restarts: job name and operator uid unless configured.
    pub prefix: String,
    pub subtask: u32,
    /// The sink's parallelism when it was written.
    pub parallelism: u32,
    pub slot: u32,
    /// Transactional ids (slots) per subtask of the sink that wrote it.
    pub slots: u32,
    /// The run that wrote it: its commit marker carries this.
    pub run: String,
    pub topic: String,
    /// Offsets of the transaction's records, per partition. Always written: the workers'
    /// protocol (bincode) is not self-describing, so a skipped field would shift the rest.
    #[serde(default)]
    pub ranges: Vec<KafkaRange>,
}

/// Records `first..=last` of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaRange {
    pub partition: i32,
    pub first: i64,
    pub last: i64,
}

impl KafkaRange {
    pub fn len(&self) -> u64 {
        u64::try_from(self.last - self.first + 1).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A transaction held open by a client of this process, committed when its snapshot is.
pub trait OpenTransaction: Send + Sync {
    /// Commits the transaction pre-committed for `checkpoint` (nothing if that one was
    /// committed already).
    fn commit(&self, checkpoint: u64) -> Result<(), String>;
}

/// The open transactions of this process, by transactional id. Snapshots are committed on
/// the coordinator's thread (or a worker's), not on the sink's, and a sink that reached the
/// end of its input is gone before its last snapshot completes; the registry keeps its open
/// transaction reachable until then.
pub struct OpenTransactions;

type Registry = Mutex<HashMap<String, Arc<dyn OpenTransaction>>>;

fn registry() -> std::sync::MutexGuard<'static, HashMap<String, Arc<dyn OpenTransaction>>> {
    static OPEN: OnceLock<Registry> = OnceLock::new();
    let lock = OPEN.get_or_init(Default::default).lock();
    // A map of handles stays consistent whatever panicked while holding it.
    lock.unwrap_or_else(|e| e.into_inner())
}

impl OpenTransactions {
    pub fn register(transactional_id: &str, open: Arc<dyn OpenTransaction>) {
        registry().insert(transactional_id.to_string(), open);
    }

    pub fn remove(transactional_id: &str) {
        registry().remove(transactional_id);
    }

    pub fn get(transactional_id: &str) -> Option<Arc<dyn OpenTransaction>> {
        registry().get(transactional_id).cloned()
    }
}

/// Manifests list file transactions in the form they had before transactions had kinds
/// (`{"checkpoint":…,"pending":…,"committed":…}`), so that a manifest of a job without
/// other kinds stays readable by earlier versions; other kinds are tagged (`{"kafka":{…}}`).
pub(crate) mod manifest_form {
    use super::{FileTransaction, SinkTransaction};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Stored {
        File(FileTransaction),
        Tagged(SinkTransaction),
    }

    #[derive(Serialize)]
    #[serde(untagged)]
    enum StoredRef<'a> {
        File(&'a FileTransaction),
        Tagged(&'a SinkTransaction),
    }

    pub fn serialize<S: Serializer>(list: &[SinkTransaction], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(|t| match t {
            SinkTransaction::File(f) => StoredRef::File(f),
            other => StoredRef::Tagged(other),
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SinkTransaction>, D::Error> {
        let stored = Vec::<Stored>::deserialize(d)?;
        Ok(stored
            .into_iter()
            .map(|t| match t {
                Stored::File(f) => SinkTransaction::File(f),
                Stored::Tagged(t) => t,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Holder {
        #[serde(with = "manifest_form")]
        transactions: Vec<SinkTransaction>,
    }

    #[test]
    fn file_transactions_keep_their_untagged_manifest_form() {
        let file = FileTransaction {
            checkpoint: 3,
            pending: "/out/.pending/a".into(),
            committed: "/out/a".into(),
        };
        let kafka = KafkaTransaction {
            checkpoint: 4,
            transactional_id: "job-sink-0-1".into(),
            prefix: "job-sink".into(),
            subtask: 0,
            parallelism: 2,
            slot: 1,
            slots: 4,
            run: "r1".into(),
            topic: "out".into(),
            ranges: vec![KafkaRange {
                partition: 0,
                first: 10,
                last: 19,
            }],
        };
        let holder = Holder {
            transactions: vec![file.clone().into(), kafka.into()],
        };
        let json = serde_json::to_value(&holder).unwrap();
        assert_eq!(
            json["transactions"][0],
            serde_json::to_value(&file).unwrap()
        );
        assert_eq!(
            json["transactions"][1]["kafka"]["transactionalId"],
            "job-sink-0-1"
        );
        let back: Holder = serde_json::from_value(json).unwrap();
        assert_eq!(back, holder);
        // Through the workers' protocol (bincode) the tagged form is used throughout, also
        // for a transaction without records (a barrier right after a restore).
        let mut transactions = holder.transactions.clone();
        if let SinkTransaction::Kafka(k) = transactions[1].clone() {
            transactions.push(SinkTransaction::Kafka(KafkaTransaction {
                ranges: Vec::new(),
                ..k
            }));
        }
        transactions.push(file.into());
        let bytes = bincode::serialize(&transactions).unwrap();
        let again: Vec<SinkTransaction> = bincode::deserialize(&bytes).unwrap();
        assert_eq!(again, transactions);
    }
}
