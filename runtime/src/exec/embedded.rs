//! Embedded execution: every subtask of every chain is a thread of this process.

use super::checkpoint::{
    commit_all, CheckpointConfig, CheckpointControl, CheckpointStatus, Command, CompletedSnapshot,
    Coordinator, SavepointRequest,
};
use super::metrics::{TaskMetrics, TaskMetricsSnapshot};
use super::{BuildCx, Clock, FailureCell, HeadArgs, Task};
use crate::error::Error;
use super::erased::{Erased, ErasedSend};
use super::graph::{ErasedRouting, JobGraph, NodeKind, Outputs, Partition, PortType};
use crate::snapshot::{
    CheckpointStorage, Compatibility, DeclaredOperator, JobLayout, RestoredState, SnapshotContent,
};
use crate::state::KeyGroupAssignment;
use crossbeam_channel::Sender;
use crossbeam_utils::sync::{Parker, Unparker};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where a run's state comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restore {
    /// The latest complete checkpoint in the run's checkpoint storage; an empty storage
    /// starts the job from scratch.
    Latest,
    /// The latest complete checkpoint, or this snapshot while the storage has none: how a
    /// supervised run (the operator's) starts from a savepoint once and from its own
    /// checkpoints after every restart.
    LatestOr(String),
    /// A checkpoint or savepoint directory (`…/chk-<id>`, `…/sp-<id>`).
    Snapshot(String),
}

/// Tunables of a run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Records per batch moved between operators.
    pub batch_size: usize,
    /// Batches a channel holds before its producer blocks (backpressure).
    pub channel_capacity: usize,
    pub clock: Clock,
    pub checkpoints: Option<CheckpointConfig>,
    pub restore: Option<Restore>,
    /// Restore even when some state of the snapshot has no operator to go to (it is dropped).
    pub allow_non_restored_state: bool,
    /// Where keyed state lives.
    pub state_backend: crate::state::StateBackend,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            batch_size: 1024,
            channel_capacity: 8,
            clock: Clock::System,
            checkpoints: None,
            restore: None,
            allow_non_restored_state: false,
            state_backend: crate::state::StateBackend::Heap,
        }
    }
}

/// Figures of a finished run.
#[derive(Clone, Debug)]
pub struct JobSummary {
    pub elapsed: Duration,
    pub tasks: Vec<TaskMetricsSnapshot>,
}

impl JobSummary {
    pub fn source_records(&self) -> u64 {
        self.tasks
            .iter()
            .filter(|t| t.is_source)
            .map(|t| t.records_in)
            .sum()
    }
    pub fn sink_records(&self) -> u64 {
        self.tasks.iter().map(|t| t.sink_records).sum()
    }
    pub fn late_records(&self) -> u64 {
        self.tasks.iter().map(|t| t.late_records).sum()
    }
}

/// How a subtask is doing, as the job's owner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubtaskState {
    Running,
    /// Reached the end of its input.
    Finished,
    /// Failed on its own: a root cause of the job's failure.
    Failed(String),
    /// Stopped because the job was cancelled, stopped, or another subtask failed.
    Cancelled,
}

/// One subtask of a chain, named by the chain's first operator.
#[derive(Clone, Debug)]
pub struct SubtaskStatus {
    pub operator: String,
    pub subtask: usize,
    pub state: SubtaskState,
    pub metrics: TaskMetricsSnapshot,
}

/// A root cause of a job's failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobFailure {
    /// The operator it names; `None` for the checkpoint coordinator.
    pub operator: Option<String>,
    pub subtask: Option<usize>,
    pub cause: String,
}

type SubtaskThread = JoinHandle<Result<(), Error>>;

/// One thread of a run, with how it ended: recorded by the thread itself, so the job's state
/// can be read while it runs (joining is left to `wait`).
struct ThreadSlot {
    /// The chain head's uid and the subtask index; `None` for the checkpoint coordinator.
    subtask: Option<(String, usize)>,
    ended: Mutex<Option<Ending>>,
}

#[derive(Clone)]
enum Ending {
    Ok,
    Failed {
        failure: JobFailure,
        secondary: bool,
    },
}

impl ThreadSlot {
    fn ending(&self) -> Option<Ending> {
        self.ended.lock().ok().and_then(|e| e.clone())
    }

    fn record(&self, result: &Result<(), Error>) {
        let ending = match result {
            Ok(()) => Ending::Ok,
            Err(e) => {
                let (operator, subtask) = match (e, &self.subtask) {
                    (Error::Task { uid, subtask, .. }, _) => (Some(uid.clone()), Some(*subtask)),
                    (Error::State { uid, .. }, own) => {
                        (Some(uid.clone()), own.as_ref().map(|(_, s)| *s))
                    }
                    (_, Some((uid, s))) => (Some(uid.clone()), Some(*s)),
                    (_, None) => (None, None),
                };
                Ending::Failed {
                    failure: JobFailure {
                        operator,
                        subtask,
                        cause: e.to_string(),
                    },
                    secondary: is_secondary(e),
                }
            }
        };
        if let Ok(mut slot) = self.ended.lock() {
            *slot = Some(ending);
        }
    }
}

/// Whether a subtask's error is only a consequence of the job stopping (cancelled, or a
/// peer it exchanges records with stopped), not a cause.
fn is_secondary(e: &Error) -> bool {
    matches!(e, Error::Cancelled)
        || matches!(e, Error::Task { message, .. } if message.contains("subtask stopped"))
}

/// Runs `work` on a new thread that records how it ended in `slot`; a panic becomes an
/// error naming the thread, so that a panicked subtask shows as failed while others run.
fn spawn_recorded(
    name: String,
    slot: Arc<ThreadSlot>,
    work: impl FnOnce() -> Result<(), Error> + Send + 'static,
) -> Result<SubtaskThread, Error> {
    let thread_name: String = name.chars().take(15).collect();
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                .unwrap_or_else(|panic| {
                    Err(Error::Graph(format!(
                        "{name} panicked: {}",
                        panic_message(panic.as_ref())
                    )))
                });
            slot.record(&result);
            result
        })
        .map_err(|e| Error::io("thread", e))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// What the job is, as its owner reports it.
struct JobInfo {
    name: String,
    parallelism: usize,
    max_parallelism: u32,
    declared: Vec<DeclaredOperator>,
}

/// A job whose subtasks are running on threads of this process.
pub struct RunningJob {
    /// Taken by `wait`.
    threads: Mutex<Vec<(String, SubtaskThread)>>,
    /// Every thread's slot, subtasks first (in the order of `metrics`), the checkpoint
    /// coordinator last.
    slots: Vec<Arc<ThreadSlot>>,
    metrics: Vec<Arc<TaskMetrics>>,
    cancel: Arc<AtomicBool>,
    /// The owner asked the job to stop (cancel, or a savepoint with stop).
    stop_requested: AtomicBool,
    started: Instant,
    commands: Sender<Command>,
    control: Arc<CheckpointControl>,
    status: Arc<Mutex<CheckpointStatus>>,
    info: JobInfo,
}

impl RunningJob {
    /// The job's name (the registry's job, as snapshots record it).
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The highest parallelism of the job's operators.
    pub fn parallelism(&self) -> usize {
        self.info.parallelism
    }

    pub fn max_parallelism(&self) -> u32 {
        self.info.max_parallelism
    }

    /// What each operator declares, as a snapshot to restore is checked against.
    pub fn declared_operators(&self) -> &[DeclaredOperator] {
        &self.info.declared
    }

    /// Time since the subtasks started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether the owner asked the job to stop (a cancel, or a savepoint with stop not
    /// failed yet).
    pub fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::SeqCst)
    }

    /// Every subtask with its state and counters, in the order of [`RunningJob::metrics`].
    pub fn subtasks(&self) -> Vec<SubtaskStatus> {
        self.slots
            .iter()
            .zip(&self.metrics)
            .filter_map(|(slot, metrics)| {
                let (operator, subtask) = slot.subtask.clone()?;
                let state = match slot.ending() {
                    None => SubtaskState::Running,
                    Some(Ending::Ok) => SubtaskState::Finished,
                    Some(Ending::Failed {
                        secondary: true, ..
                    }) => SubtaskState::Cancelled,
                    Some(Ending::Failed { failure, .. }) => SubtaskState::Failed(failure.cause),
                };
                Some(SubtaskStatus {
                    operator,
                    subtask,
                    state,
                    metrics: metrics.snapshot(),
                })
            })
            .collect()
    }

    /// The root causes of the job's failure so far (empty while nothing failed on its own).
    pub fn failures(&self) -> Vec<JobFailure> {
        self.slots
            .iter()
            .filter_map(|slot| match slot.ending()? {
                Ending::Failed {
                    failure,
                    secondary: false,
                } => Some(failure),
                _ => None,
            })
            .collect()
    }

    /// Checkpoint history and where this run was restored from.
    pub fn checkpoint_status(&self) -> CheckpointStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Takes a savepoint into storage `uri` (`file:///…` or `s3://bucket/prefix`) and waits
    /// for it. With `stop`, the job stops right after it, committing exactly the output the
    /// savepoint covers.
    pub fn savepoint(&self, uri: &str, stop: bool) -> Result<CompletedSnapshot, Error> {
        if !stop {
            return self.snapshot(Some(uri.to_string()), false);
        }
        self.stop_requested.store(true, Ordering::SeqCst);
        let result = self.snapshot(Some(uri.to_string()), true);
        if result.is_err() && !self.cancel.load(Ordering::Relaxed) {
            // The job goes on after a failed stop-with-savepoint.
            self.stop_requested.store(false, Ordering::SeqCst);
        }
        result
    }

    /// Takes a checkpoint now (into the run's checkpoint storage) and waits for it.
    pub fn checkpoint(&self) -> Result<CompletedSnapshot, Error> {
        self.snapshot(None, false)
    }

    fn snapshot(&self, storage: Option<String>, stop: bool) -> Result<CompletedSnapshot, Error> {
        let (reply, result) = crossbeam_channel::bounded(1);
        self.commands
            .send(Command::Savepoint(SavepointRequest {
                storage,
                stop,
                reply,
            }))
            .map_err(|_| Error::Checkpoint("the job is no longer running".into()))?;
        result
            .recv()
            .map_err(|_| Error::Checkpoint("the job ended before the savepoint completed".into()))?
            .map_err(Error::Checkpoint)
    }

    /// What the run's subtasks and its supervisor share about snapshots.
    pub(crate) fn control(&self) -> &Arc<CheckpointControl> {
        &self.control
    }

    pub fn metrics(&self) -> Vec<TaskMetricsSnapshot> {
        self.metrics.iter().map(|m| m.snapshot()).collect()
    }

    /// Whether every thread of the run (subtasks and checkpoint coordinator) has ended.
    pub fn is_finished(&self) -> bool {
        self.slots.iter().all(|s| s.ending().is_some())
    }

    /// Asks every subtask to stop; `wait` then returns `Error::Cancelled`.
    pub fn cancel(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Waits for every subtask. The error returned is the root cause: the first failure
    /// that is not merely a consequence of another subtask stopping. Only the first call
    /// waits; later ones find no subtask left.
    pub fn wait(&self) -> Result<JobSummary, Error> {
        let mut root: Option<Error> = None;
        let mut consequence: Option<Error> = None;
        let threads = match self.threads.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(_) => return Err(Error::Graph("the job's thread list is poisoned".into())),
        };
        let results: Vec<Result<(), Error>> = threads
            .into_iter()
            .map(|(name, t)| {
                t.join().unwrap_or_else(|panic| {
                    Err(Error::Graph(format!(
                        "{name} panicked: {}",
                        panic_message(panic.as_ref())
                    )))
                })
            })
            .collect();
        // Read once every thread has ended: the coordinator records a stop with a savepoint
        // after it has answered the savepoint's requester, who may already be waiting here.
        let stopped = self.checkpoint_status().stopped;
        for result in results {
            if let Err(e) = result {
                let secondary = is_secondary(&e);
                if secondary && stopped {
                    // Stopped with a savepoint: a clean stop.
                    continue;
                }
                if matches!(e, Error::Cancelled) {
                    // Cancelled explains the other consequences best.
                    consequence = Some(e);
                } else if secondary {
                    consequence.get_or_insert(e);
                } else {
                    root.get_or_insert(e);
                }
            }
        }
        if let Some(e) = root.or(consequence) {
            return Err(e);
        }
        Ok(JobSummary {
            elapsed: self.started.elapsed(),
            tasks: self.metrics.iter().map(|m| m.snapshot()).collect(),
        })
    }
}

type EdgeKey = (usize, usize, usize); // (consumer node, input index, producer subtask)

/// The snapshot to start from, checked against the job before anything runs.
fn load_restore(
    graph: &JobGraph,
    options: &RunOptions,
    status: &mut CheckpointStatus,
    commit_restored: bool,
) -> Result<Option<RestoredState>, Error> {
    let Some(restore) = &options.restore else {
        return Ok(None);
    };
    let (storage, manifest) = match restore {
        Restore::Latest | Restore::LatestOr(_) => {
            let config = options.checkpoints.as_ref().ok_or_else(|| {
                Error::Checkpoint("restoring the latest checkpoint needs checkpoint storage".into())
            })?;
            let storage = CheckpointStorage::open(&config.storage)?;
            match storage.latest_restorable() {
                Ok(r) => {
                    for skipped in &r.skipped {
                        eprintln!("restore: {skipped}");
                    }
                    status.skipped_at_restore = r.skipped;
                    (storage, r.manifest)
                }
                Err(crate::snapshot::SnapshotError::NoCheckpoint { .. }) => {
                    if let Restore::LatestOr(initial) = restore {
                        eprintln!(
                            "restore: no complete checkpoint in {}; starting from {initial}",
                            config.storage
                        );
                        open_snapshot(initial)?
                    } else {
                        eprintln!(
                            "restore: no complete checkpoint in {}; starting from empty state",
                            config.storage
                        );
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Restore::Snapshot(location) => open_snapshot(location)?,
    };
    // Downloaded databases go beside the local state, so removing that removes them too.
    let scratch = match &options.state_backend {
        crate::state::StateBackend::RocksDb(config) => config.dir.clone(),
        crate::state::StateBackend::Heap => std::env::temp_dir().join("sluice-state"),
    };
    let restored = RestoredState::load(&storage, &manifest, &scratch)?;
    let compat = Compatibility::check(
        &restored.content,
        graph.max_parallelism,
        &graph.declared_operators()?,
    );
    if let Some(why) = compat.refusal(options.allow_non_restored_state) {
        return Err(Error::Checkpoint(format!(
            "cannot restore {}: {why}",
            storage.location(manifest.checkpoint)
        )));
    }
    // Output the snapshot covers is committed, even if the failed run did not get to it.
    if commit_restored {
        commit_all(&restored.content.transactions().cloned().collect::<Vec<_>>())?;
    }
    let location = storage.location(manifest.checkpoint);
    eprintln!("restoring from {location}");
    status.restored_from = Some(location);
    Ok(Some(restored))
}

fn open_snapshot(location: &str) -> Result<(CheckpointStorage, crate::snapshot::Manifest), Error> {
    let (storage, id) = CheckpointStorage::open_snapshot(location)?;
    // Loading checks every file against its checksum; no separate verification pass.
    let manifest = storage.manifest(id)?;
    Ok((storage, manifest))
}

/// The key-group owners of every stateful operator: restored from the snapshot (rescaled
/// keeping as many owners as possible when the parallelism changed) or contiguous ranges.
pub(crate) fn assignments(
    graph: &JobGraph,
    restored: Option<&SnapshotContent>,
) -> Result<HashMap<usize, Arc<KeyGroupAssignment>>, Error> {
    let mut out = HashMap::new();
    for (n, node) in graph.nodes.iter().enumerate() {
        let p = node.parallelism as u32;
        let previous = restored
            .and_then(|r| r.operators.iter().find(|o| o.uid == node.uid))
            .filter(|o| o.assignment.len() == graph.max_parallelism as usize);
        let assignment = match previous {
            Some(o) => {
                let before =
                    KeyGroupAssignment::from_owners(o.assignment.clone(), o.parallelism as u32)
                        .map_err(|e| Error::Checkpoint(format!("operator '{}': {e}", node.uid)))?;
                if before.parallelism() == p {
                    before
                } else {
                    before.rescaled(p)
                }
            }
            None => KeyGroupAssignment::contiguous(graph.max_parallelism, p),
        };
        out.insert(n, Arc::new(assignment));
    }
    Ok(out)
}

/// A name for this run that no earlier run of the job had.
pub(crate) fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}{:05x}",
        nanos % (1 << 48),
        std::process::id() % (1 << 20)
    )
}

/// Where a run's state comes from, loaded and checked before anything runs.
pub(crate) struct Prepared {
    pub(crate) restored: Option<Arc<RestoredState>>,
    pub(crate) assignments: Arc<HashMap<usize, Arc<KeyGroupAssignment>>>,
    pub(crate) status: CheckpointStatus,
}

/// Loads the snapshot `options` restores from (committing the output it covers when
/// `commit_restored`) and assigns key groups.
pub(crate) fn prepare(
    graph: &JobGraph,
    options: &RunOptions,
    commit_restored: bool,
) -> Result<Prepared, Error> {
    let mut status = CheckpointStatus::default();
    let restored = load_restore(graph, options, &mut status, commit_restored)?.map(Arc::new);
    let assignments = Arc::new(assignments(graph, restored.as_deref().map(|r| &r.content))?);
    Ok(Prepared {
        restored,
        assignments,
        status,
    })
}

/// The share of a job one process runs when the job spans processes: subtask `s` of every
/// operator runs in slot `s`, and each slot is on one worker.
pub(crate) struct Placement<'a> {
    /// The attempt's run id, the same in every worker: sinks tell their own pending output
    /// from that of earlier attempts by it.
    pub(crate) run_id: &'a str,
    /// The worker of each slot.
    pub(crate) slot_workers: &'a [u32],
    pub(crate) this_worker: u32,
    pub(crate) links: &'a mut dyn RemoteLinks,
}

impl Placement<'_> {
    fn is_local(&self, subtask: usize) -> bool {
        self.slot_workers.get(subtask) == Some(&self.this_worker)
    }

    fn worker_of(&self, subtask: usize) -> Result<u32, Error> {
        self.slot_workers
            .get(subtask)
            .copied()
            .ok_or_else(|| Error::Graph(format!("no worker placed for slot {subtask}")))
    }
}

/// The connections of a process to the other workers of its job. Logical channel ids are
/// the same in every process: every process numbers the job's edges in the same order.
pub(crate) trait RemoteLinks {
    /// A sender of the port's records to `channel` on `worker`.
    fn sender(
        &mut self,
        port: &PortType,
        worker: u32,
        channel: u32,
        metrics: Arc<TaskMetrics>,
    ) -> Result<ErasedSend, Error>;
    /// Delivers `channel` from `worker` into the local sender `to`.
    fn deliver(&mut self, port: &PortType, worker: u32, channel: u32, to: ErasedSend);
}

/// What the supervising thread of a run gets: in embedded mode the checkpoint coordinator,
/// on a worker the relay to the job's coordinator.
pub(crate) struct SupervisorParts {
    pub(crate) layout: JobLayout,
    /// Subtasks of the whole job.
    pub(crate) tasks: usize,
    /// The job's subtasks this process runs, by task index.
    pub(crate) local_tasks: Vec<usize>,
    pub(crate) control: Arc<CheckpointControl>,
    pub(crate) reports: crossbeam_channel::Receiver<super::checkpoint::Report>,
    pub(crate) commands: crossbeam_channel::Receiver<Command>,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) status: Arc<Mutex<CheckpointStatus>>,
}

pub(crate) type Supervise = Box<dyn FnOnce(SupervisorParts) -> Result<(), Error> + Send>;

/// Starts every subtask of `graph` on its own thread.
pub fn start_embedded(graph: JobGraph, options: RunOptions) -> Result<RunningJob, Error> {
    let prepared = prepare(&graph, &options, true)?;
    let storage = match &options.checkpoints {
        Some(c) => Some(CheckpointStorage::open(&c.storage)?),
        None => None,
    };
    let next_id = match &storage {
        Some(s) => s.next_id()?,
        None => 1,
    }
    .max(prepared.restored.as_ref().map_or(0, |r| r.id + 1));
    let config = options.checkpoints.clone();
    let supervise: Supervise = Box::new(move |parts: SupervisorParts| {
        Coordinator {
            layout: parts.layout,
            tasks: parts.tasks,
            config,
            storage,
            next_id,
            link: Box::new(parts.control),
            reports: parts.reports,
            commands: parts.commands,
            cancel: parts.cancel,
            status: parts.status,
            uploaded: HashMap::new(),
        }
        .run()
    });
    launch(graph, options, prepared, None, supervise)
}

/// Starts the subtasks of `graph` this process runs (all of them without a placement) and
/// the supervising thread.
pub(crate) fn launch(
    graph: JobGraph,
    options: RunOptions,
    prepared: Prepared,
    mut placement: Option<Placement<'_>>,
    supervise: Supervise,
) -> Result<RunningJob, Error> {
    let Prepared {
        restored,
        assignments,
        status,
    } = prepared;
    let declared = graph.declared_operators()?;
    let info = JobInfo {
        name: graph.name.clone(),
        parallelism: graph.nodes.iter().map(|n| n.parallelism).max().unwrap_or(1),
        max_parallelism: graph.max_parallelism,
        declared: declared.clone(),
    };
    let graph = Arc::new(graph);
    let (control, reports) = CheckpointControl::new();
    let (commands_tx, commands) = crossbeam_channel::unbounded();
    let status = Arc::new(Mutex::new(status));
    let run_id: Arc<str> = match &placement {
        Some(p) => Arc::from(p.run_id),
        None => Arc::from(new_run_id()),
    };
    let state_backend = Arc::new(options.state_backend.clone());
    let heads: Vec<usize> = (0..graph.nodes.len())
        .filter(|&n| !graph.is_chained(n))
        .collect();
    let here: Option<Vec<bool>> = placement.as_ref().map(|p| {
        let most = graph.nodes.iter().map(|n| n.parallelism).max().unwrap_or(1);
        (0..most).map(|s| p.is_local(s)).collect()
    });
    let local = |s: usize| here.as_ref().is_none_or(|h| h.get(s) == Some(&true));

    // One metrics record and one doorbell per subtask of every chain run here.
    let mut metrics: HashMap<(usize, usize), Arc<TaskMetrics>> = HashMap::new();
    let mut parkers: HashMap<(usize, usize), Parker> = HashMap::new();
    let mut unparkers: HashMap<(usize, usize), Unparker> = HashMap::new();
    for &h in &heads {
        let node = &graph.nodes[h];
        let is_source = matches!(node.kind, NodeKind::Source(_));
        let chain_has_sink =
            (0..graph.nodes.len()).any(|n| graph.nodes[n].is_sink && graph.head_of(n) == h);
        for s in (0..node.parallelism).filter(|&s| local(s)) {
            let m = TaskMetrics::new(format!("{}[{s}]", node.uid), is_source, chain_has_sink);
            metrics.insert((h, s), Arc::new(m));
            let p = Parker::new();
            unparkers.insert((h, s), p.unparker().clone());
            parkers.insert((h, s), p);
        }
    }

    // Channels for every edge that crosses chains; an edge between processes is a logical
    // channel of a connection, numbered alike in every process.
    let mut senders: HashMap<EdgeKey, Vec<ErasedSend>> = HashMap::new();
    let mut receivers: HashMap<(usize, usize), Vec<(usize, ErasedSend)>> = HashMap::new();
    let mut channel_id: u32 = 0;
    for &h in &heads {
        let node = &graph.nodes[h];
        for (i, edge) in node.inputs.iter().enumerate() {
            let from = &graph.nodes[edge.from];
            let producer_head = graph.head_of(edge.from);
            let pointwise = matches!(edge.partition, Partition::Forward)
                && from.parallelism == node.parallelism;
            let port = from.ports[edge.port];
            for ps in 0..from.parallelism {
                let consumers: Vec<usize> = if pointwise {
                    vec![ps]
                } else {
                    (0..node.parallelism).collect()
                };
                let mut txs = Vec::with_capacity(consumers.len());
                for cs in consumers {
                    let channel = channel_id;
                    channel_id += 1;
                    match (local(ps), local(cs), placement.as_mut()) {
                        (true, true, _) | (_, _, None) => {
                            let (tx, rx) = (port.channel)(
                                options.channel_capacity,
                                unparkers[&(h, cs)].clone(),
                                metrics[&(producer_head, ps)].clone(),
                            );
                            txs.push(tx);
                            receivers.entry((h, cs)).or_default().push((edge.side, rx));
                        }
                        (true, false, Some(p)) => {
                            let worker = p.worker_of(cs)?;
                            let producer = metrics[&(producer_head, ps)].clone();
                            txs.push(p.links.sender(&port, worker, channel, producer)?);
                        }
                        (false, true, Some(p)) => {
                            // Delivery blocking on a full queue is not the producer's
                            // backpressure here; it shows as credits withheld over there.
                            let (tx, rx) = (port.channel)(
                                options.channel_capacity,
                                unparkers[&(h, cs)].clone(),
                                metrics[&(h, cs)].clone(),
                            );
                            let worker = p.worker_of(ps)?;
                            p.links.deliver(&port, worker, channel, tx);
                            receivers.entry((h, cs)).or_default().push((edge.side, rx));
                        }
                        (false, false, Some(_)) => {}
                    }
                }
                if local(ps) {
                    senders.insert((h, i, ps), txs);
                }
            }
        }
    }

    let cancel = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let mut slots = Vec::new();
    let mut task_metrics_in_order = Vec::new();
    let mut local_tasks = Vec::new();
    let mut task_index = 0;
    for &h in &heads {
        for s in 0..graph.nodes[h].parallelism {
            let task = task_index;
            task_index += 1;
            if !local(s) {
                continue;
            }
            local_tasks.push(task);
            let env = TaskEnv {
                task,
                control: control.clone(),
                restored: restored.clone(),
                run_id: run_id.clone(),
                assignments: assignments.clone(),
                state_backend: state_backend.clone(),
            };
            let mut wiring = Wiring {
                senders: HashMap::new(),
            };
            // The senders this subtask's chain writes to.
            for (c, consumer) in graph.nodes.iter().enumerate() {
                if graph.is_chained(c) {
                    continue;
                }
                for (i, edge) in consumer.inputs.iter().enumerate() {
                    if graph.head_of(edge.from) == h {
                        if let Some(txs) = senders.remove(&(c, i, s)) {
                            wiring.senders.insert((c, i), txs);
                        }
                    }
                }
            }
            let inputs = receivers.remove(&(h, s)).unwrap_or_default();
            let parker = parkers.remove(&(h, s)).ok_or_else(|| {
                Error::Graph(format!("no doorbell for {}[{s}]", graph.nodes[h].uid))
            })?;
            let task_metrics = metrics[&(h, s)].clone();
            task_metrics_in_order.push(task_metrics.clone());
            let graph = graph.clone();
            let cancel = cancel.clone();
            let options = options.clone();
            let name = format!("{}[{s}]", graph.nodes[h].uid);
            let slot = Arc::new(ThreadSlot {
                subtask: Some((graph.nodes[h].uid.clone(), s)),
                ended: Mutex::new(None),
            });
            slots.push(slot.clone());
            let handle = spawn_recorded(name.clone(), slot, move || {
                let result = build_task(
                    &graph,
                    h,
                    s,
                    wiring,
                    inputs,
                    parker,
                    task_metrics,
                    &options,
                    &env,
                )
                .and_then(|task| task.run(&cancel));
                if let Err(e) = &result {
                    if !matches!(e, Error::Cancelled) {
                        // Stop the rest of the job: a failed subtask fails the job.
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
                result
            })?;
            threads.push((name, handle));
        }
    }

    let parts = SupervisorParts {
        layout: JobLayout {
            job: graph.name.clone(),
            max_parallelism: graph.max_parallelism,
            declared,
            assignments: graph
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(n, node)| {
                    Some((node.uid.clone(), assignments.get(&n)?.owners().to_vec()))
                })
                .collect(),
        },
        tasks: task_index,
        local_tasks,
        control: control.clone(),
        reports,
        commands,
        cancel: cancel.clone(),
        status: status.clone(),
    };
    let stop_job = cancel.clone();
    let slot = Arc::new(ThreadSlot {
        subtask: None,
        ended: Mutex::new(None),
    });
    slots.push(slot.clone());
    let handle = spawn_recorded("checkpoints".into(), slot, move || {
        let result = supervise(parts);
        if result.is_err() {
            // Checkpointing failed for good: so does the job.
            stop_job.store(true, Ordering::Relaxed);
        }
        result
    })?;
    threads.push(("checkpoint coordinator".to_string(), handle));

    Ok(RunningJob {
        threads: Mutex::new(threads),
        slots,
        metrics: task_metrics_in_order,
        cancel,
        stop_requested: AtomicBool::new(false),
        started: Instant::now(),
        commands: commands_tx,
        control,
        status,
        info,
    })
}

/// What every subtask of a run shares, beyond its wiring.
struct TaskEnv {
    task: usize,
    control: Arc<CheckpointControl>,
    restored: Option<Arc<RestoredState>>,
    run_id: Arc<str>,
    assignments: Arc<HashMap<usize, Arc<KeyGroupAssignment>>>,
    state_backend: Arc<crate::state::StateBackend>,
}

/// The key-group owners of node `n`'s subtasks: senders route by it and the node's keyed
/// state holds exactly the groups it assigns to its subtask.
fn assignment_for(
    assignments: &HashMap<usize, Arc<KeyGroupAssignment>>,
    graph: &JobGraph,
    n: usize,
) -> Arc<KeyGroupAssignment> {
    assignments.get(&n).cloned().unwrap_or_else(|| {
        Arc::new(KeyGroupAssignment::contiguous(
            graph.max_parallelism,
            graph.nodes[n].parallelism as u32,
        ))
    })
}

/// The channel senders one subtask writes to, by (consumer node, input index).
struct Wiring {
    senders: HashMap<(usize, usize), Vec<ErasedSend>>,
}

#[allow(clippy::too_many_arguments)]
fn build_task(
    graph: &JobGraph,
    head: usize,
    subtask: usize,
    mut wiring: Wiring,
    inputs: Vec<(usize, ErasedSend)>,
    parker: Parker,
    metrics: Arc<TaskMetrics>,
    options: &RunOptions,
    env: &TaskEnv,
) -> Result<Box<dyn Task>, Error> {
    let failure = FailureCell::default();
    let cx_for = |n: usize| BuildCx {
        uid: graph.nodes[n].uid.clone(),
        subtask,
        parallelism: graph.nodes[n].parallelism,
        batch_size: options.batch_size,
        assignment: assignment_for(&env.assignments, graph, n),
        clock: options.clock.clone(),
        metrics: metrics.clone(),
        failure: failure.clone(),
        task: env.task,
        control: env.control.clone(),
        restored: env.restored.clone(),
        run_id: env.run_id.clone(),
        state_backend: env.state_backend.clone(),
    };
    let outputs = build_outputs(graph, head, &cx_for, &mut wiring, &env.assignments)?;
    let cx = cx_for(head);
    match &graph.nodes[head].kind {
        NodeKind::Source(build) => build(&cx, outputs),
        NodeKind::OneInput { build, head: make } | NodeKind::TwoInput { build, head: make } => {
            let op = build(&cx, outputs)?;
            make(HeadArgs {
                op,
                inputs,
                parker,
                cx,
            })
        }
    }
}

/// Builds, for each output port of `node`, the operator that receives it: the chained
/// operators of this thread and the writers to other chains, joined by a tee when a port
/// has several consumers.
fn build_outputs(
    graph: &JobGraph,
    node: usize,
    cx_for: &dyn Fn(usize) -> BuildCx,
    wiring: &mut Wiring,
    assignments: &HashMap<usize, Arc<KeyGroupAssignment>>,
) -> Result<Outputs, Error> {
    let def = &graph.nodes[node];
    let mut ports: Vec<Erased> = Vec::with_capacity(def.ports.len());
    for (p, port) in def.ports.iter().enumerate() {
        let mut consumers: Vec<Erased> = Vec::new();
        for (c, consumer) in graph.nodes.iter().enumerate() {
            for (i, edge) in consumer.inputs.iter().enumerate() {
                if edge.from != node || edge.port != p {
                    continue;
                }
                if graph.is_chained(c) {
                    let outputs = build_outputs(graph, c, cx_for, wiring, assignments)?;
                    let NodeKind::OneInput { build, .. } = &consumer.kind else {
                        return Err(Error::Graph(format!(
                            "chained node {} has no single input",
                            consumer.uid
                        )));
                    };
                    consumers.push(build(&cx_for(c), outputs)?);
                } else {
                    let txs = wiring.senders.remove(&(c, i)).ok_or_else(|| {
                        Error::Graph(format!(
                            "edge {} -> {} has no channels",
                            def.uid, consumer.uid
                        ))
                    })?;
                    let routing = match &edge.partition {
                        Partition::Forward if def.parallelism == consumer.parallelism => {
                            ErasedRouting::Pointwise
                        }
                        Partition::Forward | Partition::Rebalance => ErasedRouting::Rebalance,
                        Partition::Broadcast => ErasedRouting::Broadcast,
                        Partition::Hash(hasher) => ErasedRouting::Hash(
                            hasher.clone(),
                            assignment_for(assignments, graph, c),
                        ),
                    };
                    consumers.push((port.writer)(txs, routing, &cx_for(node)));
                }
            }
        }
        ports.push(match consumers.len() {
            0 => (port.discard)(),
            1 => consumers
                .pop()
                .ok_or_else(|| Error::Graph("lost consumer".into()))?,
            _ => (port.tee)(consumers),
        });
    }
    Ok(Outputs::new(ports))
}
