//! What the coordinator and its workers say to each other over their one TCP connection:
//! length-prefixed bincode messages. The data of the job never takes this path (it goes
//! worker to worker, `crate::exec::net`); only deployments, snapshot control and reports do.

use crate::control::model::{JobError, SubtaskStatus};
use crate::exec::net::read_payload;
use crate::snapshot::{Native, NativeRef, OperatorSnapshot, SinkTransaction, SnapshotKind};
use crate::snapshot::{SnapshotError, SplitPosition, TaskSnapshot};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

/// Changes whenever a message changes; a worker of another version is refused at once.
pub(crate) const PROTOCOL: u32 = 6;

/// A message larger than this is refused as corrupt rather than allocated.
const MAX_MESSAGE: usize = 1 << 30;

/// What a worker is told to run: one attempt of the job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Deployment {
    /// Numbers the runs of the job; messages of an earlier attempt are ignored.
    pub(crate) attempt: u64,
    /// Names the attempt in its output (see `Placement::run_id`).
    pub(crate) run_id: String,
    /// The registered job and its `spec.job.config` (JSON text).
    pub(crate) job: String,
    pub(crate) config: String,
    pub(crate) parallelism: usize,
    pub(crate) max_parallelism: u32,
    /// The checkpoint or savepoint directory to start from; `None` starts empty.
    pub(crate) restore: Option<String>,
    pub(crate) allow_non_restored_state: bool,
    /// This worker commits the sink transactions the restored snapshot lists (exactly one
    /// worker does).
    pub(crate) commit_restored: bool,
    /// The job's checkpoint storage, where workers upload their state.
    pub(crate) checkpoint_storage: Option<String>,
    pub(crate) rocksdb: bool,
    pub(crate) batch_size: usize,
    pub(crate) channel_capacity: usize,
    /// Errors show `<redacted>` for the key a keyed operator failed on.
    pub(crate) redact_keys: bool,
    /// The worker (index into `workers`) of each slot; subtask `s` runs in slot `s`.
    pub(crate) slot_workers: Vec<u32>,
    /// The data address of each worker of this attempt.
    pub(crate) workers: Vec<String>,
    /// The receiving worker's index.
    pub(crate) you: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToWorker {
    Deploy(Box<Deployment>),
    /// Sources inject the barrier of snapshot `checkpoint`.
    Trigger {
        attempt: u64,
        checkpoint: u64,
        kind: SnapshotKind,
    },
    /// Snapshot `checkpoint` is complete: commit these transactions (this worker's
    /// subtasks pre-committed them) and answer with `Committed`.
    Commit {
        attempt: u64,
        checkpoint: u64,
        transactions: Vec<SinkTransaction>,
    },
    Cancel {
        attempt: u64,
    },
    /// The job is over; the worker exits.
    Shutdown {
        reason: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToCoordinator {
    Register {
        protocol: u32,
        name: String,
        slots: u32,
        /// Where it accepts connections from other workers.
        data_address: String,
    },
    /// Every subtask of the attempt this worker runs, now; also the worker's heartbeat.
    Status {
        attempt: u64,
        subtasks: Vec<SubtaskStatus>,
    },
    Ack {
        attempt: u64,
        task: u32,
        checkpoint: u64,
        part: WirePart,
    },
    Declined {
        attempt: u64,
        checkpoint: u64,
        error: String,
    },
    Finished {
        attempt: u64,
        task: u32,
        part: WirePart,
    },
    Committed {
        attempt: u64,
        checkpoint: u64,
        error: Option<String>,
    },
    /// Every subtask of the attempt on this worker has ended: `finished` when they reached
    /// the end of their input; else `errors` says why, or is empty when they were cancelled.
    Ended {
        attempt: u64,
        finished: bool,
        errors: Vec<JobError>,
    },
}

/// A subtask's part of a snapshot once its worker uploaded it: nothing local remains.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WirePart {
    operators: Vec<WireOperator>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireOperator {
    uid: String,
    subtask: usize,
    key_groups: Vec<(u32, Vec<u8>)>,
    items: Vec<Vec<u8>>,
    splits: Vec<SplitPosition>,
    transactions: Vec<SinkTransaction>,
    native: Option<NativeRef>,
}

impl WirePart {
    /// A resolved part; refuses one that still refers to local files.
    pub(crate) fn new(part: TaskSnapshot) -> Result<Self, SnapshotError> {
        let operators = part
            .operators
            .into_iter()
            .map(|op| {
                if op.deferred.0.is_some() {
                    return Err(SnapshotError::Unresolved {
                        uid: op.uid,
                        what: "encoded",
                    });
                }
                let native = match op.native {
                    None => None,
                    Some(Native::Uploaded(r)) => Some(r),
                    Some(Native::Pinned(_)) => {
                        return Err(SnapshotError::Unresolved {
                            uid: op.uid,
                            what: "uploaded",
                        })
                    }
                };
                Ok(WireOperator {
                    uid: op.uid,
                    subtask: op.subtask,
                    key_groups: op.key_groups,
                    items: op.items,
                    splits: op.splits,
                    transactions: op.transactions,
                    native,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(WirePart { operators })
    }

    pub(crate) fn into_snapshot(self) -> TaskSnapshot {
        TaskSnapshot {
            operators: self
                .operators
                .into_iter()
                .map(|op| OperatorSnapshot {
                    uid: op.uid,
                    subtask: op.subtask,
                    key_groups: op.key_groups,
                    items: op.items,
                    splits: op.splits,
                    transactions: op.transactions,
                    deferred: Default::default(),
                    native: op.native.map(Native::Uploaded),
                })
                .collect(),
        }
    }
}

/// Writes one message (into `buf`, reused, then to `w` in one write).
pub(crate) fn write_message<T: Serialize>(
    w: &mut impl Write,
    buf: &mut Vec<u8>,
    message: &T,
) -> io::Result<()> {
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    bincode::serialize_into(&mut *buf, message)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let len = u32::try_from(buf.len() - 4)
        .ok()
        .filter(|&l| (l as usize) <= MAX_MESSAGE)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "message too large"))?;
    buf[..4].copy_from_slice(&len.to_le_bytes());
    w.write_all(buf)
}

/// Reads one message; `Ok(None)` when the peer closed the connection between messages.
pub(crate) fn read_message<T: DeserializeOwned>(r: &mut impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {len} bytes exceeds the limit of {MAX_MESSAGE}"),
        ));
    }
    let mut payload = Vec::new();
    read_payload(r, len, &mut payload)?;
    bincode::deserialize(&payload).map(Some).map_err(|e| {
        // bincode reports a message shorter than its type as an I/O error with no text.
        let why = match *e {
            bincode::ErrorKind::Io(ref io) if io.kind() == io::ErrorKind::UnexpectedEof => {
                format!("the message of {len} byte(s) ends before its last field")
            }
            ref other => other.to_string(),
        };
        let name = std::any::type_name::<T>()
            .rsplit("::")
            .next()
            .unwrap_or("message");
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("undecodable {name}: {why}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_a_closed_stream_reads_as_none() {
        let mut wire = Vec::new();
        let mut buf = Vec::new();
        let sent = ToWorker::Trigger {
            attempt: 2,
            checkpoint: 7,
            kind: SnapshotKind::Savepoint,
        };
        write_message(&mut wire, &mut buf, &sent).unwrap();
        let mut r = wire.as_slice();
        let got: ToWorker = read_message(&mut r).unwrap().unwrap();
        assert!(matches!(
            got,
            ToWorker::Trigger {
                attempt: 2,
                checkpoint: 7,
                kind: SnapshotKind::Savepoint
            }
        ));
        assert!(read_message::<ToWorker>(&mut r).unwrap().is_none());
    }

    #[test]
    fn an_oversized_or_truncated_message_is_an_error() {
        let huge = (MAX_MESSAGE as u32 + 1).to_le_bytes();
        let err = read_message::<ToWorker>(&mut huge.as_slice()).unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        let mut truncated = 100u32.to_le_bytes().to_vec();
        truncated.extend_from_slice(&[1, 2, 3]);
        assert!(read_message::<ToWorker>(&mut truncated.as_slice()).is_err());
    }

    #[test]
    fn a_message_shorter_than_its_type_names_the_type_and_its_length() {
        let mut frame = Vec::new();
        write_message(&mut frame, &mut Vec::new(), &7u8).unwrap();
        let err = read_message::<(u64, u64)>(&mut frame.as_slice()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "undecodable (u64, u64): the message of 1 byte(s) ends before its last field"
        );
    }

    #[test]
    fn a_part_with_local_files_is_refused() {
        let mut part = TaskSnapshot::default();
        part.operator("win", 0).native = Some(Native::Pinned(crate::snapshot::PinnedNative {
            checkpoint: crate::state::PinnedCheckpoint::made("/nowhere".into()),
            instance: "x".into(),
            pin: 1,
            groups: vec![],
            states: vec![],
        }));
        let err = WirePart::new(part).unwrap_err();
        assert!(err.to_string().contains("operator 'win'"), "{err}");
    }
}
