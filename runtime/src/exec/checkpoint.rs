//! The embedded checkpoint coordinator: asks the sources for barriers, collects every
//! subtask's part once the barrier has passed it, writes the snapshot to object storage,
//! then commits the sinks' transactions.
//!
//! The subtasks only serialize their state when the barrier passes (the synchronous part);
//! writing to storage happens on the coordinator's thread while they go on processing.

use crate::error::Error;
use crate::snapshot::FileEntry;
use crate::snapshot::{
    write_snapshot, Barrier, CheckpointStorage, JobLayout, SinkTransaction, SnapshotKind,
    TaskSnapshot, Written,
};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Periodic checkpoints of a run.
#[derive(Clone, Debug)]
pub struct CheckpointConfig {
    /// Root of the job's checkpoints: `file:///…` or `s3://bucket/prefix`.
    pub storage: String,
    /// Time between checkpoints; `None` takes checkpoints only at the end of input.
    pub interval: Option<Duration>,
    /// A checkpoint not complete after this long is abandoned.
    pub timeout: Duration,
    /// Failed or abandoned checkpoints in a row that the job tolerates; one more fails it.
    pub tolerable_failures: u32,
    /// Complete checkpoints kept.
    pub retain: usize,
}

impl CheckpointConfig {
    pub fn new(storage: impl Into<String>) -> Self {
        CheckpointConfig {
            storage: storage.into(),
            interval: Some(Duration::from_secs(10)),
            timeout: Duration::from_secs(600),
            tolerable_failures: 3,
            retain: 3,
        }
    }
}

/// What subtasks send the coordinator.
pub(crate) enum Report {
    /// Barrier `checkpoint` passed the subtask.
    Ack {
        task: usize,
        checkpoint: u64,
        snapshot: TaskSnapshot,
    },
    /// The subtask reached the end of its input; its final state stands in for it in every
    /// later snapshot.
    Finished { task: usize, snapshot: TaskSnapshot },
    /// The subtask's part of `checkpoint` could not be written (reported by a worker, which
    /// uploads its subtasks' parts itself): the snapshot fails.
    Declined { checkpoint: u64, error: String },
}

/// How the checkpoint coordinator reaches the subtasks: through shared memory when they run
/// in its process, through the workers' connections when they do not.
pub(crate) trait TaskLink: Send {
    /// Asks the sources to inject the barrier of snapshot `id`.
    fn inject(&self, id: u64, kind: SnapshotKind);
    /// Commits the sink transactions of the complete snapshot `id`, by the subtask (task
    /// index) that pre-committed them, and tells every subtask that `id` is complete.
    fn commit(&self, id: u64, transactions: Vec<(usize, SinkTransaction)>) -> Result<(), Error>;
}

impl TaskLink for Arc<CheckpointControl> {
    fn inject(&self, id: u64, kind: SnapshotKind) {
        self.request(id, kind);
    }

    fn commit(&self, id: u64, transactions: Vec<(usize, SinkTransaction)>) -> Result<(), Error> {
        let transactions: Vec<SinkTransaction> = transactions.into_iter().map(|(_, t)| t).collect();
        commit_all(&transactions)?;
        self.mark_committed(id);
        Ok(())
    }
}

/// Shared by the coordinator and every subtask of a run.
pub(crate) struct CheckpointControl {
    /// The newest barrier the sources are asked to inject.
    requested: AtomicU64,
    requested_kind: AtomicU8,
    /// Sink transactions of checkpoints up to this id are committed.
    committed: AtomicU64,
    reports: Sender<Report>,
}

impl CheckpointControl {
    pub(crate) fn new() -> (Arc<Self>, Receiver<Report>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let control = CheckpointControl {
            requested: AtomicU64::new(0),
            requested_kind: AtomicU8::new(0),
            committed: AtomicU64::new(0),
            reports: tx,
        };
        (Arc::new(control), rx)
    }

    /// The barrier a source should inject, if one was requested since `injected`.
    pub(crate) fn barrier_due(&self, injected: &mut u64) -> Option<Barrier> {
        let id = self.requested.load(Ordering::Acquire);
        if id <= *injected {
            return None;
        }
        *injected = id;
        let kind = match self.requested_kind.load(Ordering::Acquire) {
            1 => SnapshotKind::Savepoint,
            _ => SnapshotKind::Checkpoint,
        };
        Some(Barrier {
            checkpoint: id,
            kind,
        })
    }

    pub(crate) fn request(&self, id: u64, kind: SnapshotKind) {
        let k = u8::from(kind == SnapshotKind::Savepoint);
        self.requested_kind.store(k, Ordering::Release);
        self.requested.store(id, Ordering::Release);
    }

    pub(crate) fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// The sink transactions of snapshots up to `id` are committed.
    pub(crate) fn mark_committed(&self, id: u64) {
        self.committed.fetch_max(id, Ordering::AcqRel);
    }

    /// The job is over when the coordinator is gone; a report it misses changes nothing.
    pub(crate) fn report(&self, report: Report) {
        let _ = self.reports.send(report);
    }
}

/// The id a final barrier carries: its transactions are committed by the final snapshot.
pub(crate) const FINAL_ID: u64 = u64::MAX;

/// The last complete snapshot and the checkpoint history, as the job reports it.
#[derive(Clone, Debug, Default)]
pub struct CheckpointStatus {
    pub completed: u64,
    pub failed: u64,
    /// Failed since the last one that completed (savepoints into a requester's own storage
    /// aside: they say nothing of the job's health).
    pub failed_in_a_row: u64,
    /// The last [`CheckpointSummary::RECENT`] completed, oldest first.
    ///
    /// [`CheckpointSummary::RECENT`]: sluice_crds::control::CheckpointSummary::RECENT
    pub recent: std::collections::VecDeque<CompletedSnapshot>,
    pub last_failure: Option<String>,
    /// The snapshot this run was restored from.
    pub restored_from: Option<String>,
    /// Newer checkpoints skipped at restore because they were incomplete or corrupt.
    pub skipped_at_restore: Vec<String>,
    /// The job stopped after a savepoint (stop-with-savepoint).
    pub stopped: bool,
}

impl CheckpointStatus {
    pub fn last_completed(&self) -> Option<&CompletedSnapshot> {
        self.recent.back()
    }

    fn completed_one(&mut self, done: &CompletedSnapshot) {
        self.completed += 1;
        if self.recent.len() == sluice_crds::control::CheckpointSummary::RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(done.clone());
    }
}

#[derive(Clone, Debug)]
pub struct CompletedSnapshot {
    pub id: u64,
    pub kind: SnapshotKind,
    pub location: String,
    /// From the barrier's request to the manifest written.
    pub duration: Duration,
    /// The state it refers to, in storage.
    pub bytes: u64,
    /// What this snapshot uploaded: less than `bytes` when RocksDB table files written for
    /// earlier checkpoints are shared (incremental checkpoints).
    pub uploaded_bytes: u64,
    /// `(uid, bytes)` of each stateful operator: what its state takes of `bytes`.
    pub operator_bytes: Vec<(String, u64)>,
    /// When its manifest was written: the snapshot exists from then on.
    pub completed_at: std::time::SystemTime,
}

/// A snapshot asked for by the job's owner.
pub(crate) struct SavepointRequest {
    /// Root of the savepoint (`file:///…` or `s3://bucket/prefix`); `None` asks for a
    /// checkpoint now.
    pub(crate) storage: Option<String>,
    /// Stop the job once the savepoint is complete.
    pub(crate) stop: bool,
    pub(crate) reply: Sender<Result<CompletedSnapshot, String>>,
}

/// What the job's owner can ask the coordinator.
pub(crate) enum Command {
    Savepoint(SavepointRequest),
}

struct InFlight {
    id: u64,
    kind: SnapshotKind,
    started: Instant,
    parts: Vec<Option<TaskSnapshot>>,
    savepoint: Option<SavepointRequest>,
    /// A part could not be encoded: the snapshot fails.
    error: Option<String>,
    /// Shared files uploaded for it.
    uploaded_bytes: u64,
}

pub(crate) struct Coordinator {
    pub(crate) layout: JobLayout,
    pub(crate) tasks: usize,
    pub(crate) config: Option<CheckpointConfig>,
    pub(crate) storage: Option<CheckpointStorage>,
    pub(crate) next_id: u64,
    pub(crate) link: Box<dyn TaskLink>,
    pub(crate) reports: Receiver<Report>,
    pub(crate) commands: Receiver<Command>,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) status: Arc<Mutex<CheckpointStatus>>,
    /// Shared files in checkpoint storage, by name: uploaded once, listed by every
    /// checkpoint that still needs them.
    pub(crate) uploaded: HashMap<String, FileEntry>,
}

impl Coordinator {
    /// Runs until every subtask finished (then takes the final snapshot and commits) or the
    /// job is cancelled. An error fails the job.
    pub(crate) fn run(mut self) -> Result<(), Error> {
        let mut finished: Vec<Option<TaskSnapshot>> = (0..self.tasks).map(|_| None).collect();
        let mut inflight: Option<InFlight> = None;
        let mut queued: Vec<Command> = Vec::new();
        let mut failures_in_row = 0u32;
        let interval = self.config.as_ref().and_then(|c| c.interval);
        let timeout = self
            .config
            .as_ref()
            .map_or(Duration::from_secs(600), |c| c.timeout);
        let mut next_due = interval.map(|i| Instant::now() + i);
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                if let Some(f) = inflight.take() {
                    if let Some(request) = f.savepoint {
                        let _ = request.reply.send(Err("the job was cancelled".into()));
                    }
                }
                return Ok(());
            }
            while let Ok(c) = self.commands.try_recv() {
                queued.push(c);
            }
            if inflight.is_none() {
                if let Some(Command::Savepoint(request)) = queued.pop() {
                    let kind = if request.storage.is_some() {
                        SnapshotKind::Savepoint
                    } else {
                        SnapshotKind::Checkpoint
                    };
                    let mut f = self.trigger(kind, &finished);
                    f.savepoint = Some(request);
                    inflight = Some(f);
                } else if next_due.is_some_and(|t| Instant::now() >= t) {
                    inflight = Some(self.trigger(SnapshotKind::Checkpoint, &finished));
                }
            }
            let wait = Duration::from_millis(20);
            match self.reports.recv_timeout(wait) {
                Ok(Report::Ack {
                    task,
                    checkpoint,
                    mut snapshot,
                }) => {
                    if let Some(f) = inflight.as_mut().filter(|f| f.id == checkpoint) {
                        match snapshot.resolve(self.storage.as_ref(), &mut self.uploaded) {
                            Ok(bytes) => {
                                f.uploaded_bytes += bytes;
                                f.parts[task] = Some(snapshot);
                            }
                            Err(e) => f.error = Some(e.to_string()),
                        }
                    }
                }
                Ok(Report::Declined { checkpoint, error }) => {
                    if let Some(f) = inflight.as_mut().filter(|f| f.id == checkpoint) {
                        f.error.get_or_insert(error);
                    }
                }
                Ok(Report::Finished { task, mut snapshot }) => {
                    let storage = self.storage.as_ref();
                    snapshot.resolve(storage, &mut self.uploaded).map_err(|e| {
                        Error::Checkpoint(format!("final state of a finished subtask: {e}"))
                    })?;
                    if let Some(f) = inflight.as_mut() {
                        if f.parts[task].is_none() {
                            f.parts[task] = Some(snapshot.clone());
                        }
                    }
                    finished[task] = Some(snapshot);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            if let Some(f) = inflight.take() {
                if let Some(e) = &f.error {
                    let message = format!("checkpoint {}: {e}", f.id);
                    if let Some(request) = f.savepoint {
                        let _ = request.reply.send(Err(message.clone()));
                    }
                    self.fail(message);
                    failures_in_row += 1;
                    next_due = interval.map(|i| Instant::now() + i);
                } else if f.parts.iter().all(Option::is_some) {
                    // A savepoint into storage its requester named: failing to write there
                    // says nothing of the job's health, so the job goes on.
                    let own_storage = f.savepoint.as_ref().is_some_and(|r| r.storage.is_some());
                    let outcome = self.complete(f, &finished);
                    match outcome {
                        Ok(stop) => {
                            failures_in_row = 0;
                            if stop {
                                if let Ok(mut s) = self.status.lock() {
                                    s.stopped = true;
                                }
                                self.cancel.store(true, Ordering::Relaxed);
                                return Ok(());
                            }
                        }
                        Err(e) => {
                            self.fail(e.to_string());
                            if !own_storage {
                                failures_in_row += 1;
                            }
                        }
                    }
                    next_due = interval.map(|i| Instant::now() + i);
                } else if f.started.elapsed() > timeout {
                    let message = format!(
                        "checkpoint {} not complete after {timeout:?}: {} subtask(s) did not \
                         acknowledge it",
                        f.id,
                        f.parts.iter().filter(|p| p.is_none()).count()
                    );
                    if let Some(request) = f.savepoint {
                        let _ = request.reply.send(Err(message.clone()));
                    }
                    self.fail(message);
                    failures_in_row += 1;
                    next_due = interval.map(|i| Instant::now() + i);
                } else {
                    inflight = Some(f);
                }
                if let Ok(mut s) = self.status.lock() {
                    s.failed_in_a_row = u64::from(failures_in_row);
                }
                let tolerable = self.config.as_ref().map_or(0, |c| c.tolerable_failures);
                if failures_in_row > tolerable {
                    return Err(Error::Checkpoint(format!(
                        "{failures_in_row} checkpoints failed in a row (tolerated: {tolerable}); \
                         last: {}",
                        self.status
                            .lock()
                            .ok()
                            .and_then(|s| s.last_failure.clone())
                            .unwrap_or_default()
                    )));
                }
            }
            if inflight.is_none() && finished.iter().all(Option::is_some) {
                return self.finish(finished);
            }
        }
    }

    fn trigger(&mut self, kind: SnapshotKind, finished: &[Option<TaskSnapshot>]) -> InFlight {
        let id = self.next_id;
        self.next_id += 1;
        self.link.inject(id, kind);
        InFlight {
            id,
            kind,
            started: Instant::now(),
            // Finished subtasks take part with their final state.
            parts: finished.to_vec(),
            savepoint: None,
            error: None,
            uploaded_bytes: 0,
        }
    }

    fn fail(&self, message: String) {
        tracing::warn!("checkpoint failed: {message}");
        if let Ok(mut s) = self.status.lock() {
            s.failed += 1;
            s.last_failure = Some(message);
        }
    }

    /// Writes a snapshot whose parts are all in; returns whether the job should stop.
    fn complete(
        &mut self,
        mut f: InFlight,
        finished: &[Option<TaskSnapshot>],
    ) -> Result<bool, Error> {
        let request = f.savepoint.take();
        match request {
            Some(SavepointRequest {
                storage: Some(uri),
                stop,
                reply,
            }) => {
                let result = CheckpointStorage::open_savepoints(&uri)
                    .map_err(Error::from)
                    .and_then(|storage| self.write(&storage, f, stop));
                let _ = reply.send(answer(&result));
                result.map(|_| stop)
            }
            checkpoint => {
                let Some(storage) = self.storage.take() else {
                    if let Some(r) = checkpoint {
                        let _ = r.reply.send(Err("no checkpoint storage configured".into()));
                    }
                    return Ok(false);
                };
                let result = self.write(&storage, f, true);
                if result.is_ok() {
                    self.retain(&storage, finished);
                }
                self.storage = Some(storage);
                if let Some(r) = checkpoint {
                    let _ = r.reply.send(answer(&result));
                }
                result.map(|_| false)
            }
        }
    }

    /// Keeps the configured number of checkpoints and the shared files they (or the final
    /// state of finished subtasks, still to be listed) need; forgets the deleted ones.
    fn retain(&mut self, storage: &CheckpointStorage, finished: &[Option<TaskSnapshot>]) {
        let protect: HashSet<String> = finished
            .iter()
            .flatten()
            .flat_map(|t| t.shared_files().map(str::to_string))
            .collect();
        let keep = self.config.as_ref().map_or(1, |c| c.retain);
        match storage.retain(keep, &protect) {
            Ok(remaining) => self.uploaded.retain(|name, _| remaining.contains(name)),
            Err(e) => tracing::warn!(error = %e, keep, "checkpoint retention"),
        }
    }

    /// Writes the snapshot and, when `commit`, commits the sink transactions it lists.
    fn write(
        &self,
        storage: &CheckpointStorage,
        f: InFlight,
        commit: bool,
    ) -> Result<CompletedSnapshot, Error> {
        let (id, kind, started, uploaded_shared) = (f.id, f.kind, f.started, f.uploaded_bytes);
        let transactions = transactions_of(&f.parts);
        let parts: Vec<TaskSnapshot> = f.parts.into_iter().flatten().collect();
        let Written {
            manifest,
            operator_bytes,
        } = write_snapshot(storage, &self.layout, id, kind, parts)?;
        let done = CompletedSnapshot {
            id,
            kind,
            location: storage.location(id),
            duration: started.elapsed(),
            bytes: manifest
                .files
                .iter()
                .chain(&manifest.shared)
                .map(|f| f.size)
                .sum(),
            uploaded_bytes: manifest.files.iter().map(|f| f.size).sum::<u64>() + uploaded_shared,
            operator_bytes,
            completed_at: std::time::SystemTime::now(),
        };
        if commit {
            self.link.commit(id, transactions)?;
        }
        if let Ok(mut s) = self.status.lock() {
            s.completed_one(&done);
        }
        Ok(done)
    }

    /// Every subtask finished: the final snapshot (when checkpointing) and the last commit.
    fn finish(mut self, parts: Vec<Option<TaskSnapshot>>) -> Result<(), Error> {
        match self.storage.take() {
            Some(storage) => {
                let last = InFlight {
                    id: self.next_id,
                    kind: SnapshotKind::Final,
                    started: Instant::now(),
                    parts,
                    savepoint: None,
                    error: None,
                    uploaded_bytes: 0,
                };
                self.write(&storage, last, true)
                    .map_err(|e| Error::Checkpoint(e.to_string()))?;
                self.retain(&storage, &[]);
            }
            None => {
                self.link
                    .commit(self.next_id, transactions_of(&parts))
                    .map_err(|e| Error::Checkpoint(e.to_string()))?;
            }
        }
        Ok(())
    }
}

/// What the requester of a snapshot hears: the snapshot, or why it failed.
fn answer(result: &Result<CompletedSnapshot, Error>) -> Result<CompletedSnapshot, String> {
    match result {
        Ok(done) => Ok(done.clone()),
        Err(e) => Err(e.to_string()),
    }
}

/// Every sink transaction the parts of a snapshot list, with the index of the subtask that
/// pre-committed it.
fn transactions_of(parts: &[Option<TaskSnapshot>]) -> Vec<(usize, SinkTransaction)> {
    parts
        .iter()
        .enumerate()
        .filter_map(|(task, p)| Some((task, p.as_ref()?)))
        .flat_map(|(task, p)| {
            p.operators
                .iter()
                .flat_map(move |o| o.transactions.iter().map(move |t| (task, t.clone())))
        })
        .collect()
}

pub(crate) fn commit_all(transactions: &[SinkTransaction]) -> Result<(), Error> {
    transactions.iter().try_for_each(SinkTransaction::commit)
}
