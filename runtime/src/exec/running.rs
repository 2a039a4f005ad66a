//! A job whose subtasks run on threads of this process: their states, counters and
//! failures as its owner sees them, snapshots on request, cancel and wait.

use super::checkpoint::{
    CheckpointControl, CheckpointStatus, Command, CompletedSnapshot, SavepointRequest,
};
use super::metrics::{TaskMetrics, TaskMetricsSnapshot};
use crate::error::{panic_message, Error, FailedKey};
use crate::snapshot::DeclaredOperator;
use crate::time::EventTime;
use crossbeam_channel::Sender;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// The errors below `cause`, down to the root.
    pub causes: Vec<String>,
    /// Where the failed subtask was in its input; `None` for the checkpoint coordinator.
    pub input: Option<InputPosition>,
    /// The key a keyed operator failed on.
    pub key: Option<FailedKey>,
}

/// Where a subtask was in its input: its counters as it stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputPosition {
    pub records_in: u64,
    pub watermark: EventTime,
    /// A source's splits: (split, position).
    pub splits: Vec<(u32, u64)>,
}

impl InputPosition {
    fn of(metrics: &TaskMetricsSnapshot) -> Self {
        InputPosition {
            records_in: metrics.records_in,
            watermark: metrics.watermark,
            splits: metrics
                .splits
                .iter()
                .map(|s| (s.split, s.progress.position))
                .collect(),
        }
    }
}

pub(super) type SubtaskThread = JoinHandle<Result<(), Error>>;

/// One thread of a run, with how it ended: recorded by the thread itself, so the job's state
/// can be read while it runs (joining is left to `wait`).
pub(super) struct ThreadSlot {
    /// The chain head's uid and the subtask index; `None` for the checkpoint coordinator.
    pub(super) subtask: Option<(String, usize)>,
    /// The subtask's counters, where a failure reads its input position.
    pub(super) metrics: Option<Arc<TaskMetrics>>,
    pub(super) ended: Mutex<Option<Ending>>,
}

#[derive(Clone)]
pub(super) enum Ending {
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
                    (
                        Error::Task { uid, subtask, .. } | Error::PeerStopped { uid, subtask, .. },
                        _,
                    ) => (Some(uid.clone()), Some(*subtask)),
                    (Error::State { uid, .. }, own) => {
                        (Some(uid.clone()), own.as_ref().map(|(_, s)| *s))
                    }
                    (_, Some((uid, s))) => (Some(uid.clone()), Some(*s)),
                    (_, None) => (None, None),
                };
                let failure = JobFailure {
                    operator,
                    subtask,
                    cause: e.to_string(),
                    causes: crate::error::cause_chain(e),
                    input: self
                        .metrics
                        .as_ref()
                        .map(|m| InputPosition::of(&m.snapshot())),
                    key: match e {
                        Error::Task { key, .. } => key.clone(),
                        _ => None,
                    },
                };
                let secondary = is_secondary(e);
                if !secondary {
                    // In the subtask's span: the log line names the job, operator and subtask.
                    tracing::error!(
                        error = %failure.cause,
                        causes = ?failure.causes,
                        input = ?failure.input,
                        key = failure.key.as_ref().map(tracing::field::display),
                        "subtask failed"
                    );
                }
                Ending::Failed { failure, secondary }
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
    matches!(e, Error::Cancelled | Error::PeerStopped { .. })
}

/// Runs `work` on a new thread, in a span naming its subtask, that records how it ended in
/// `slot`; a panic becomes an error naming the thread, so that a panicked subtask shows as
/// failed while others run.
pub(super) fn spawn_recorded(
    name: String,
    slot: Arc<ThreadSlot>,
    work: impl FnOnce() -> Result<(), Error> + Send + 'static,
) -> Result<SubtaskThread, Error> {
    let thread_name: String = name.chars().take(15).collect();
    // Created here, so that it is a child of the caller's span (the job, the worker): every
    // event of the thread names its job and subtask.
    let span = match &slot.subtask {
        Some((operator, subtask)) => tracing::info_span!("subtask", %operator, subtask),
        None => tracing::info_span!("thread", %name),
    };
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let _span = span.enter();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                .unwrap_or_else(|panic| {
                    Err(Error::Panicked {
                        thread: name,
                        message: panic_message(panic.as_ref()),
                    })
                });
            slot.record(&result);
            result
        })
        .map_err(|e| Error::io("thread", e))
}

/// What the job is, as its owner reports it.
pub(super) struct JobInfo {
    pub(super) name: String,
    pub(super) parallelism: usize,
    pub(super) max_parallelism: u32,
    pub(super) declared: Vec<DeclaredOperator>,
    pub(super) topology: sluice_crds::control::Topology,
}

/// A job whose subtasks are running on threads of this process.
pub struct RunningJob {
    /// Taken by `wait`.
    pub(super) threads: Mutex<Vec<(String, SubtaskThread)>>,
    /// Every thread's slot, subtasks first (in the order of `metrics`), the checkpoint
    /// coordinator last.
    pub(super) slots: Vec<Arc<ThreadSlot>>,
    pub(super) metrics: Vec<Arc<TaskMetrics>>,
    pub(super) cancel: Arc<AtomicBool>,
    /// The owner asked the job to stop (cancel, or a savepoint with stop).
    pub(super) stop_requested: AtomicBool,
    pub(super) started: Instant,
    pub(super) commands: Sender<Command>,
    pub(super) control: Arc<CheckpointControl>,
    pub(super) status: Arc<Mutex<CheckpointStatus>>,
    pub(super) info: JobInfo,
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

    /// The job's operator groups and the edges between them.
    pub fn topology(&self) -> &sluice_crds::control::Topology {
        &self.info.topology
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
                    Err(Error::Panicked {
                        thread: name,
                        message: panic_message(panic.as_ref()),
                    })
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
