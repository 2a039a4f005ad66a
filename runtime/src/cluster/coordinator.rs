//! `sluice coordinator`: accepts workers, places and deploys the job, runs its checkpoints,
//! restarts it from the latest checkpoint when a worker or subtask fails, and serves the
//! control API's view of it.

mod attempt;
mod status;
mod workers;

use super::lock;
use super::protocol::ToWorker;
use super::restart::{RestartPolicy, Restarts};
use crate::control::model::{Phase, RestartStatus, Topology};
use crate::error::Error;
use crate::exec::checkpoint::{CheckpointConfig, CheckpointStatus, CompletedSnapshot};
use crate::exec::{JobGraph, Restore};
use crate::snapshot::{CheckpointStorage, DeclaredOperator};
use crate::tls::TlsContext;
use attempt::{AttemptEnd, AttemptLink};
use crossbeam_channel::Receiver;
use status::View;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use workers::{place, Acceptor, Event, WorkerLink};

/// How the coordinator runs its job.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// Where workers connect (`host:port`; port 0 for any).
    pub listen: String,
    pub job: String,
    pub config: serde_json::Value,
    pub parallelism: usize,
    pub max_parallelism: u32,
    pub checkpoints: Option<CheckpointConfig>,
    pub restore: Option<Restore>,
    pub allow_non_restored_state: bool,
    pub rocksdb: bool,
    pub restart: RestartPolicy,
    /// A worker silent for this long is taken for dead.
    pub worker_timeout: Duration,
    pub batch_size: usize,
    pub channel_capacity: usize,
    /// Errors show `<redacted>` for the key a keyed operator failed on (`spec.redactKeys`).
    pub redact_keys: bool,
    /// Mutual TLS with the workers, when set: a worker without the job's certificate is
    /// refused before it is read.
    pub tls: Option<TlsContext>,
}

/// How a distributed job ended without failing.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Every subtask reached the end of its input; the final snapshot is committed.
    Finished,
    /// Stopped with this savepoint.
    Stopped(Option<CompletedSnapshot>),
    /// Cancelled by its owner, without a savepoint.
    Cancelled,
}

/// The coordinator of one distributed job.
pub struct JobCoordinator {
    config: CoordinatorConfig,
    local_addr: SocketAddr,
    declared: Vec<DeclaredOperator>,
    topology: Topology,
    workers: Arc<Mutex<Vec<Arc<WorkerLink>>>>,
    events: Receiver<Event>,
    current: Arc<Mutex<Option<AttemptLink>>>,
    view: Mutex<View>,
    status: Arc<Mutex<CheckpointStatus>>,
    cancel: AtomicBool,
    stop_requested: AtomicBool,
    started: Instant,
}

impl JobCoordinator {
    /// Checks the job, binds the workers' address and starts accepting workers.
    pub fn bind(config: CoordinatorConfig, graph: &JobGraph) -> Result<Self, Error> {
        let listener = TcpListener::bind(&config.listen).map_err(|e| Error::Cluster {
            peer: config.listen.clone(),
            message: format!("cannot listen for workers: {e}"),
        })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io("worker listener", e))?;
        let (events_tx, events) = crossbeam_channel::unbounded();
        let workers: Arc<Mutex<Vec<Arc<WorkerLink>>>> = Arc::default();
        let current: Arc<Mutex<Option<AttemptLink>>> = Arc::default();
        let accept = Acceptor {
            workers: workers.clone(),
            current: current.clone(),
            events: events_tx,
            next_id: Arc::new(AtomicU64::new(1)),
            tls: config.tls.clone(),
        };
        std::thread::Builder::new()
            .name("accept-workers".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let accept = accept.clone();
                    let _ = std::thread::Builder::new()
                        .name("worker-link".into())
                        .spawn(move || accept.serve(stream));
                }
            })
            .map_err(|e| Error::io("thread", e))?;
        let view = View {
            restarts: RestartStatus {
                max_attempts: config.restart.max_attempts,
                ..RestartStatus::default()
            },
            ..View::default()
        };
        Ok(JobCoordinator {
            declared: graph.declared_operators()?,
            topology: graph.topology(),
            config,
            local_addr,
            workers,
            events,
            current,
            view: Mutex::new(view),
            status: Arc::default(),
            cancel: AtomicBool::new(false),
            stop_requested: AtomicBool::new(false),
            started: Instant::now(),
        })
    }

    /// Where workers connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Checkpoint history across the job's attempts.
    pub fn checkpoint_status(&self) -> CheckpointStatus {
        lock(&self.status).clone()
    }

    /// Whether a stop was asked for.
    pub fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::SeqCst)
    }

    /// Tells every registered worker to exit.
    pub fn shutdown_workers(&self, reason: &str) {
        for w in lock(&self.workers).iter() {
            w.send(&ToWorker::Shutdown {
                reason: reason.to_string(),
            });
        }
    }

    fn set_phase(&self, phase: Phase) {
        lock(&self.view).phase = Some(phase);
    }

    /// Runs the job until it ends, restarting it after failures as the policy allows.
    pub fn run(&self, graph: &JobGraph) -> Result<Outcome, Error> {
        let _job = tracing::info_span!("job", job = %graph.name).entered();
        let storage = self
            .config
            .checkpoints
            .as_ref()
            .map(|c| CheckpointStorage::open(&c.storage))
            .transpose()?;
        // Checkpoints of this coordinator's life have ids from here on; older ones in the
        // storage belong to earlier runs and are restored only when asked to.
        let first_id = storage.as_ref().map_or(Ok(1), |s| s.next_id())?;
        let mut restore = match &self.config.restore {
            None => None,
            Some(Restore::Snapshot(location)) => Some(location.clone()),
            Some(Restore::Latest) => storage.as_ref().and_then(|s| latest_checkpoint(s, 0)),
            Some(Restore::LatestOr(initial)) => storage
                .as_ref()
                .and_then(|s| latest_checkpoint(s, 0))
                .or_else(|| Some(initial.clone())),
        };
        let mut restarts = Restarts::default();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (errors, ran_for) =
                match self.run_attempt(attempt, graph, storage.as_ref(), restore.as_deref())? {
                    AttemptEnd::Done(outcome) => return Ok(outcome),
                    AttemptEnd::Failed { errors, ran_for } => (errors, ran_for),
                };
            let cause = errors
                .iter()
                .map(|e| match &e.operator {
                    Some(op) => format!("operator '{op}': {}", e.cause),
                    None => e.cause.clone(),
                })
                .collect::<Vec<_>>()
                .join("; ");
            tracing::warn!(attempt, "attempt {attempt} failed: {cause}");
            let wait = restarts.on_failure(&self.config.restart, ran_for);
            {
                let mut view = lock(&self.view);
                view.errors = errors;
                view.restarts = RestartStatus {
                    count: restarts.count,
                    consecutive: restarts.consecutive,
                    max_attempts: self.config.restart.max_attempts,
                    backoff_ms: wait.map(|w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX)),
                    last_failure: Some(cause.clone()),
                };
                view.phase = Some(if wait.is_some() {
                    Phase::Restarting
                } else {
                    Phase::Failed
                });
            }
            let Some(wait) = wait else {
                return Err(Error::Failed {
                    restarts: restarts.count,
                    cause,
                });
            };
            tracing::info!(
                attempt,
                "restarting in {wait:?} (restart {} of at most {} in a row)",
                restarts.consecutive,
                self.config.restart.max_attempts
            );
            let until = Instant::now() + wait;
            while Instant::now() < until {
                if self.cancel.load(Ordering::SeqCst) {
                    self.set_phase(Phase::Finished);
                    return Ok(Outcome::Cancelled);
                }
                std::thread::sleep(Duration::from_millis(20).min(wait));
            }
            lock(&self.view).restarts.backoff_ms = None;
            if let Some(location) = storage
                .as_ref()
                .and_then(|s| latest_checkpoint(s, first_id))
            {
                restore = Some(location);
            }
        }
    }

    /// Waits for enough slots, then places the job on the workers: slots spread evenly.
    fn wait_for_slots(&self, needed: usize) -> Option<(Vec<Arc<WorkerLink>>, Vec<u32>)> {
        let mut announced = None;
        loop {
            if self.cancel.load(Ordering::SeqCst) {
                return None;
            }
            self.drop_silent_workers();
            let workers: Vec<Arc<WorkerLink>> = lock(&self.workers)
                .iter()
                .filter(|w| w.alive.load(Ordering::SeqCst))
                .cloned()
                .collect();
            let slots: Vec<u32> = workers.iter().map(|w| w.slots).collect();
            if let Some((used, slot_workers)) = place(&slots, needed) {
                let chosen = used.iter().map(|&i| workers[i].clone()).collect();
                return Some((chosen, slot_workers));
            }
            let have: u32 = slots.iter().sum();
            if announced != Some(have) {
                tracing::info!(
                    "waiting for workers: {needed} slots needed, {have} registered ({} workers)",
                    workers.len()
                );
                announced = Some(have);
            }
            // Events of earlier attempts are stale; registration and losses show in the
            // worker list.
            let _ = self.events.recv_timeout(Duration::from_millis(100));
        }
    }

    /// Disconnects workers that stopped sending heartbeats; each loss then arrives as an
    /// event like any other.
    fn drop_silent_workers(&self) {
        for w in lock(&self.workers).iter() {
            let silent = lock(&w.last_seen).elapsed();
            if w.alive.load(Ordering::SeqCst) && silent > self.config.worker_timeout {
                w.disconnect(format!(
                    "unreachable: no heartbeat for {:.1}s",
                    silent.as_secs_f64()
                ));
            }
        }
    }
}

/// The latest complete checkpoint with an id of at least `from`, as a location.
fn latest_checkpoint(storage: &CheckpointStorage, from: u64) -> Option<String> {
    match storage.latest_restorable() {
        Ok(r) => {
            for skipped in &r.skipped {
                tracing::warn!("restore: {skipped}");
            }
            (r.manifest.checkpoint >= from).then(|| storage.location(r.manifest.checkpoint))
        }
        Err(_) => None,
    }
}
