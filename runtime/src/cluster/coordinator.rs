//! `sluice coordinator`: accepts workers, places and deploys the job, runs its checkpoints,
//! restarts it from the latest checkpoint when a worker or subtask fails, and serves the
//! control API's view of it.

use super::protocol::{read_message, write_message, Deployment, ToCoordinator, ToWorker};
use super::restart::{RestartPolicy, Restarts};
use super::{lock, PROTOCOL};
use crate::control::model::{
    CheckpointSummary, CompatibilityReport, JobError, JobStatus, Phase, RestartStatus,
    SnapshotInfo, SubtaskStatus, WorkerStatus,
};
use crate::control::JobControl;
use crate::error::Error;
use crate::exec::checkpoint::{
    CheckpointConfig, CheckpointStatus, Command, CompletedSnapshot, Coordinator, Report,
    SavepointRequest, TaskLink,
};
use crate::exec::{assignments, Restore};
use crate::exec::JobGraph;
use crate::snapshot::{
    CheckpointStorage, Compatibility, DeclaredOperator, FileTransaction, JobLayout,
    SnapshotContent, SnapshotKind,
};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::{HashMap, HashSet};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// How long workers get to end an attempt before the coordinator gives up on them.
const WIND_DOWN: Duration = Duration::from_secs(30);
/// How long a worker gets to commit a complete snapshot's transactions.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// A registered worker, as the coordinator reaches it.
struct WorkerLink {
    id: u64,
    name: String,
    slots: u32,
    address: String,
    writer: Mutex<TcpStream>,
    last_seen: Mutex<Instant>,
    alive: AtomicBool,
    /// Why the coordinator closed the connection, when it did: what the loss reports.
    closed_because: Mutex<Option<String>>,
    /// Its subtasks of the attempt it last reported on.
    subtasks: Mutex<(u64, Vec<SubtaskStatus>)>,
}

impl WorkerLink {
    /// Sends a message; `false` when the worker is gone.
    fn send(&self, message: &ToWorker) -> bool {
        let mut buf = Vec::new();
        let sent = write_message(&mut *lock(&self.writer), &mut buf, message);
        if let Err(e) = &sent {
            self.disconnect(format!("lost: cannot send to it: {e}"));
        }
        sent.is_ok()
    }

    /// Closes the connection; the worker's reader then reports it lost, saying `why`.
    fn disconnect(&self, why: String) {
        self.alive.store(false, Ordering::SeqCst);
        lock(&self.closed_because).get_or_insert(why);
        let _ = lock(&self.writer).shutdown(Shutdown::Both);
    }

    fn describe(&self) -> String {
        format!("worker {} ({})", self.name, self.address)
    }
}

enum Event {
    Registered,
    Lost {
        worker: u64,
        why: String,
    },
    Ended {
        worker: u64,
        attempt: u64,
        finished: bool,
        errors: Vec<JobError>,
    },
}

/// Where the reports of the running attempt go.
struct AttemptLink {
    attempt: u64,
    /// Slots of the attempt on each of its workers.
    slots: HashMap<u64, u32>,
    reports: Sender<Report>,
    commits: Sender<(u64, u64, Option<String>)>,
    commands: Sender<Command>,
}

/// What the control API reads.
#[derive(Default)]
struct View {
    phase: Option<Phase>,
    errors: Vec<JobError>,
    restarts: RestartStatus,
    attempt_started: Option<Instant>,
}

/// The coordinator of one distributed job.
pub struct JobCoordinator {
    config: CoordinatorConfig,
    local_addr: SocketAddr,
    declared: Vec<DeclaredOperator>,
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
            eprintln!("attempt {attempt} failed: {cause}");
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
            eprintln!(
                "restarting in {wait:?} (restart {} of at most {} in a row)",
                restarts.consecutive, self.config.restart.max_attempts
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
                eprintln!(
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

    fn run_attempt(
        &self,
        attempt: u64,
        graph: &JobGraph,
        storage: Option<&CheckpointStorage>,
        restore: Option<&str>,
    ) -> Result<AttemptEnd, Error> {
        self.set_phase(Phase::Starting);
        let heads: Vec<usize> = (0..graph.nodes.len())
            .filter(|&n| !graph.is_chained(n))
            .collect();
        let task_slots: Vec<usize> = heads
            .iter()
            .flat_map(|&h| 0..graph.nodes[h].parallelism)
            .collect();
        let needed = graph.nodes.iter().map(|n| n.parallelism).max().unwrap_or(1);
        let Some((chosen, slot_workers)) = self.wait_for_slots(needed) else {
            self.set_phase(Phase::Finished);
            return Ok(AttemptEnd::Done(Outcome::Cancelled));
        };

        // The snapshot's manifest gives the key-group owners; the workers load the state.
        let restored = match restore {
            Some(location) => {
                let (s, id) = CheckpointStorage::open_snapshot(location)?;
                let content = SnapshotContent::from_manifest(&s.manifest(id)?)?;
                let compat = Compatibility::check(&content, graph.max_parallelism, &self.declared);
                if let Some(why) = compat.refusal(self.config.allow_non_restored_state) {
                    return Err(Error::Checkpoint(format!(
                        "cannot restore {location}: {why}"
                    )));
                }
                Some((content, id))
            }
            None => None,
        };
        let owners = assignments(graph, restored.as_ref().map(|(c, _)| c))?;
        let layout = JobLayout {
            job: graph.name.clone(),
            max_parallelism: graph.max_parallelism,
            declared: self.declared.clone(),
            assignments: graph
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(n, node)| Some((node.uid.clone(), owners.get(&n)?.owners().to_vec())))
                .collect(),
        };
        let next_id = storage
            .map_or(Ok(1), |s| s.next_id())?
            .max(restored.as_ref().map_or(0, |(_, id)| id + 1));

        let (reports_tx, reports) = crossbeam_channel::unbounded();
        let (commits_tx, commits) = crossbeam_channel::unbounded();
        let (commands_tx, commands) = crossbeam_channel::unbounded();
        let mut slots: HashMap<u64, u32> = HashMap::new();
        for &w in &slot_workers {
            *slots.entry(chosen[w as usize].id).or_default() += 1;
        }
        *lock(&self.current) = Some(AttemptLink {
            attempt,
            slots,
            reports: reports_tx,
            commits: commits_tx,
            commands: commands_tx,
        });
        let config_text = serde_json::to_string(&self.config.config)
            .map_err(|e| Error::Config(format!("spec.job.config: {e}")))?;
        let addresses: Vec<String> = chosen.iter().map(|w| w.address.clone()).collect();
        eprintln!(
            "attempt {attempt}: deploying {} at parallelism {needed} on {}{}",
            graph.name,
            chosen
                .iter()
                .map(|w| w.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            restore
                .map(|r| format!(", restoring {r}"))
                .unwrap_or_default()
        );
        let run_id = crate::exec::new_run_id();
        for (i, w) in chosen.iter().enumerate() {
            w.send(&ToWorker::Deploy(Box::new(Deployment {
                attempt,
                run_id: run_id.clone(),
                job: graph.name.clone(),
                config: config_text.clone(),
                parallelism: self.config.parallelism,
                max_parallelism: graph.max_parallelism,
                restore: restore.map(str::to_string),
                allow_non_restored_state: self.config.allow_non_restored_state,
                commit_restored: i == 0,
                checkpoint_storage: self.config.checkpoints.as_ref().map(|c| c.storage.clone()),
                rocksdb: self.config.rocksdb,
                batch_size: self.config.batch_size,
                channel_capacity: self.config.channel_capacity,
                slot_workers: slot_workers.clone(),
                workers: addresses.clone(),
                you: i as u32,
            })));
        }
        lock(&self.view).attempt_started = Some(Instant::now());
        lock(&self.status).restored_from = restore.map(str::to_string);

        let attempt_cancel = Arc::new(AtomicBool::new(false));
        let link = DistributedLink {
            attempt,
            task_workers: task_slots
                .iter()
                .map(|&s| slot_workers[s] as usize)
                .collect(),
            workers: chosen.clone(),
            commits,
        };
        let checkpoints = Coordinator {
            layout,
            tasks: task_slots.len(),
            config: self.config.checkpoints.clone(),
            storage: self
                .config
                .checkpoints
                .as_ref()
                .map(|c| CheckpointStorage::open(&c.storage))
                .transpose()?,
            next_id,
            link: Box::new(link),
            reports,
            commands,
            cancel: attempt_cancel.clone(),
            status: self.status.clone(),
            uploaded: HashMap::new(),
        };
        let checkpoints = std::thread::Builder::new()
            .name("checkpoints".into())
            .spawn(move || checkpoints.run())
            .map_err(|e| Error::io("thread", e))?;
        self.set_phase(Phase::Running);
        let started = Instant::now();

        let mut taking_part = TakingPart {
            attempt,
            workers: &chosen,
            ended: HashSet::new(),
        };
        let mut failure: Option<Vec<JobError>> = None;
        let mut outcome: Option<Outcome> = None;
        while failure.is_none() && outcome.is_none() {
            if self.cancel.load(Ordering::SeqCst) {
                outcome = Some(Outcome::Cancelled);
                break;
            }
            if let Ok(event) = self.events.recv_timeout(Duration::from_millis(50)) {
                failure = taking_part.failure_in(event);
            }
            self.drop_silent_workers();
            if failure.is_none() && checkpoints.is_finished() {
                let stopped = lock(&self.status).stopped;
                match checkpoints.join() {
                    Ok(Ok(())) if stopped => {
                        outcome = Some(Outcome::Stopped(lock(&self.status).last_completed.clone()))
                    }
                    Ok(Ok(())) => outcome = Some(Outcome::Finished),
                    Ok(Err(e)) => failure = Some(vec![cluster_error(e.to_string())]),
                    Err(_) => {
                        failure = Some(vec![cluster_error(
                            "the checkpoint coordinator panicked".into(),
                        )])
                    }
                }
                break;
            }
        }
        attempt_cancel.store(true, Ordering::SeqCst);
        // A finished job's workers end by themselves; every other ending cancels them.
        let cancel = !matches!(outcome, Some(Outcome::Finished));
        self.wind_down(&mut taking_part, cancel, &mut failure);
        *lock(&self.current) = None;
        match (outcome, failure) {
            (Some(outcome), None) => {
                self.set_phase(Phase::Finished);
                Ok(AttemptEnd::Done(outcome))
            }
            (_, Some(errors)) => Ok(AttemptEnd::Failed {
                errors,
                ran_for: started.elapsed(),
            }),
            (None, None) => Ok(AttemptEnd::Failed {
                errors: vec![cluster_error("the attempt ended for no reason".into())],
                ran_for: started.elapsed(),
            }),
        }
    }

    /// Waits until every worker of the attempt has ended it (cancelling it first when
    /// `cancel`); a worker that does not in time is disconnected. Without `cancel`, a
    /// failure while the workers end is the attempt's failure.
    fn wind_down(
        &self,
        taking_part: &mut TakingPart,
        cancel: bool,
        failure: &mut Option<Vec<JobError>>,
    ) {
        let attempt = taking_part.attempt;
        if cancel {
            for w in taking_part.running() {
                w.send(&ToWorker::Cancel { attempt });
            }
        }
        let deadline = Instant::now() + WIND_DOWN;
        loop {
            let waiting = taking_part.running();
            if waiting.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                for w in waiting {
                    w.disconnect(format!("did not end attempt {attempt} in time"));
                }
                return;
            }
            if let Ok(event) = self.events.recv_timeout(Duration::from_millis(50)) {
                if let Some(f) = taking_part.failure_in(event) {
                    if !cancel {
                        failure.get_or_insert(f);
                    }
                }
            }
        }
    }

    fn subtasks(&self) -> Vec<SubtaskStatus> {
        let attempt = lock(&self.current)
            .as_ref()
            .map(|c| (c.attempt, c.slots.keys().copied().collect::<Vec<_>>()));
        let Some((attempt, ids)) = attempt else {
            return Vec::new();
        };
        let workers = lock(&self.workers).clone();
        let mut out = Vec::new();
        for id in ids {
            if let Some(w) = workers.iter().find(|w| w.id == id) {
                let reported = lock(&w.subtasks);
                if reported.0 == attempt {
                    out.extend(reported.1.iter().cloned());
                }
            }
        }
        out.sort_by(|a, b| (&a.operator, a.subtask).cmp(&(&b.operator, b.subtask)));
        out
    }
}

/// The workers of an attempt and which of them have ended it.
struct TakingPart<'a> {
    attempt: u64,
    workers: &'a [Arc<WorkerLink>],
    ended: HashSet<u64>,
}

impl TakingPart<'_> {
    /// The workers still running the attempt.
    fn running(&self) -> Vec<&Arc<WorkerLink>> {
        self.workers
            .iter()
            .filter(|w| !self.ended.contains(&w.id) && w.alive.load(Ordering::SeqCst))
            .collect()
    }

    /// Records what `event` says of the attempt; returns the failure it is, if any.
    fn failure_in(&mut self, event: Event) -> Option<Vec<JobError>> {
        match event {
            Event::Lost { worker, why } => {
                let ours = self.workers.iter().any(|w| w.id == worker);
                (ours && !self.ended.contains(&worker)).then(|| vec![cluster_error(why)])
            }
            Event::Ended {
                worker,
                attempt,
                finished,
                errors,
            } if attempt == self.attempt => {
                self.ended.insert(worker);
                if finished {
                    return None;
                }
                Some(if errors.is_empty() {
                    let who = self.workers.iter().find(|w| w.id == worker);
                    vec![cluster_error(format!(
                        "{} ended its subtasks unfinished",
                        who.map(|w| w.describe()).unwrap_or_default()
                    ))]
                } else {
                    errors
                })
            }
            Event::Ended { .. } | Event::Registered => None,
        }
    }
}

enum AttemptEnd {
    Done(Outcome),
    Failed {
        errors: Vec<JobError>,
        ran_for: Duration,
    },
}

fn cluster_error(cause: String) -> JobError {
    JobError {
        operator: None,
        subtask: None,
        cause,
    }
}

/// The latest complete checkpoint with an id of at least `from`, as a location.
fn latest_checkpoint(storage: &CheckpointStorage, from: u64) -> Option<String> {
    match storage.latest_restorable() {
        Ok(r) => {
            for skipped in &r.skipped {
                eprintln!("restore: {skipped}");
            }
            (r.manifest.checkpoint >= from).then(|| storage.location(r.manifest.checkpoint))
        }
        Err(_) => None,
    }
}

/// Places `needed` slots on workers with `slots` free each, spreading them evenly (one per
/// worker in turn). Returns the workers used (indices into `slots`) and, per slot, the
/// index of its worker among those used; `None` when there are too few slots.
fn place(slots: &[u32], needed: usize) -> Option<(Vec<usize>, Vec<u32>)> {
    let total: u64 = slots.iter().map(|&s| u64::from(s)).sum();
    if total < needed as u64 || needed == 0 {
        return None;
    }
    let mut taken = vec![0u32; slots.len()];
    let mut by_worker = Vec::with_capacity(needed);
    while by_worker.len() < needed {
        for (i, &free) in slots.iter().enumerate() {
            if by_worker.len() < needed && taken[i] < free {
                taken[i] += 1;
                by_worker.push(i);
            }
        }
    }
    let used: Vec<usize> = (0..slots.len()).filter(|&i| taken[i] > 0).collect();
    let slot_workers = by_worker
        .iter()
        .map(|w| used.iter().position(|u| u == w).unwrap_or(0) as u32)
        .collect();
    Some((used, slot_workers))
}

/// Accepts and serves worker connections.
#[derive(Clone)]
struct Acceptor {
    workers: Arc<Mutex<Vec<Arc<WorkerLink>>>>,
    current: Arc<Mutex<Option<AttemptLink>>>,
    events: Sender<Event>,
    next_id: Arc<AtomicU64>,
}

impl Acceptor {
    fn serve(&self, stream: TcpStream) {
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "an unknown peer".to_string(), |a| a.to_string());
        let _ = stream.set_nodelay(true);
        let mut reading = match stream.try_clone() {
            Ok(r) => r,
            Err(_) => return,
        };
        let _ = reading.set_read_timeout(Some(Duration::from_secs(10)));
        let (name, slots, address) = match read_message::<ToCoordinator>(&mut reading) {
            Ok(Some(ToCoordinator::Register {
                protocol,
                name,
                slots,
                data_address,
            })) if protocol == PROTOCOL => (name, slots, data_address),
            Ok(Some(ToCoordinator::Register { protocol, .. })) => {
                eprintln!(
                    "refused a worker at {peer}: protocol version {protocol}, this coordinator speaks {PROTOCOL}"
                );
                return;
            }
            _ => {
                eprintln!("refused a connection from {peer}: it did not register as a worker");
                return;
            }
        };
        let _ = reading.set_read_timeout(None);
        let link = Arc::new(WorkerLink {
            id: self.next_id.fetch_add(1, Ordering::SeqCst),
            name,
            slots,
            address,
            writer: Mutex::new(stream),
            last_seen: Mutex::new(Instant::now()),
            alive: AtomicBool::new(true),
            closed_because: Mutex::new(None),
            subtasks: Mutex::new((0, Vec::new())),
        });
        eprintln!("{} registered with {} slots", link.describe(), link.slots);
        lock(&self.workers).push(link.clone());
        let _ = self.events.send(Event::Registered);
        let why = loop {
            let message = match read_message::<ToCoordinator>(&mut reading) {
                Ok(Some(m)) => m,
                Ok(None) => break "its connection closed".to_string(),
                Err(e) => break format!("its connection failed: {e}"),
            };
            *lock(&link.last_seen) = Instant::now();
            if let Some(event) = self.dispatch(&link, message) {
                let _ = self.events.send(event);
            }
        };
        let why = lock(&link.closed_because)
            .clone()
            .unwrap_or(format!("lost: {why}"));
        link.disconnect(why.clone());
        lock(&self.workers).retain(|w| w.id != link.id);
        let why = format!("{} {why}", link.describe());
        eprintln!("{why}");
        let _ = self.events.send(Event::Lost {
            worker: link.id,
            why,
        });
    }

    /// Routes a worker's message: reports to the running attempt's checkpoint coordinator,
    /// the rest to the supervisor.
    fn dispatch(&self, link: &WorkerLink, message: ToCoordinator) -> Option<Event> {
        let route = |attempt: u64, report: Report| {
            if let Some(c) = lock(&self.current)
                .as_ref()
                .filter(|c| c.attempt == attempt)
            {
                let _ = c.reports.send(report);
            }
        };
        match message {
            ToCoordinator::Register { .. } => None,
            ToCoordinator::Status { attempt, subtasks } => {
                *lock(&link.subtasks) = (attempt, subtasks);
                None
            }
            ToCoordinator::Ack {
                attempt,
                task,
                checkpoint,
                part,
            } => {
                route(
                    attempt,
                    Report::Ack {
                        task: task as usize,
                        checkpoint,
                        snapshot: part.into_snapshot(),
                    },
                );
                None
            }
            ToCoordinator::Declined {
                attempt,
                checkpoint,
                error,
            } => {
                let error = format!("{}: {error}", link.describe());
                route(attempt, Report::Declined { checkpoint, error });
                None
            }
            ToCoordinator::Finished {
                attempt,
                task,
                part,
            } => {
                route(
                    attempt,
                    Report::Finished {
                        task: task as usize,
                        snapshot: part.into_snapshot(),
                    },
                );
                None
            }
            ToCoordinator::Committed {
                attempt,
                checkpoint,
                error,
            } => {
                if let Some(c) = lock(&self.current)
                    .as_ref()
                    .filter(|c| c.attempt == attempt)
                {
                    let _ = c.commits.send((link.id, checkpoint, error));
                }
                None
            }
            ToCoordinator::Ended {
                attempt,
                finished,
                errors,
            } => Some(Event::Ended {
                worker: link.id,
                attempt,
                finished,
                errors,
            }),
        }
    }
}

/// The checkpoint coordinator's link to the subtasks of an attempt: through its workers.
struct DistributedLink {
    attempt: u64,
    workers: Vec<Arc<WorkerLink>>,
    /// The worker (index into `workers`) of each task.
    task_workers: Vec<usize>,
    commits: Receiver<(u64, u64, Option<String>)>,
}

impl TaskLink for DistributedLink {
    fn inject(&self, id: u64, kind: SnapshotKind) {
        for w in &self.workers {
            w.send(&ToWorker::Trigger {
                attempt: self.attempt,
                checkpoint: id,
                kind,
            });
        }
    }

    fn commit(&self, id: u64, transactions: Vec<(usize, FileTransaction)>) -> Result<(), String> {
        let mut by_worker: Vec<Vec<FileTransaction>> = vec![Vec::new(); self.workers.len()];
        for (task, t) in transactions {
            let w = self.task_workers.get(task).copied().unwrap_or(0);
            by_worker[w].push(t);
        }
        // Every worker hears of the completion: it may reuse the files it uploaded for it.
        for (w, transactions) in self.workers.iter().zip(by_worker) {
            if !w.send(&ToWorker::Commit {
                attempt: self.attempt,
                checkpoint: id,
                transactions,
            }) {
                return Err(format!(
                    "{} lost before committing snapshot {id}",
                    w.describe()
                ));
            }
        }
        let mut waiting: HashSet<u64> = self.workers.iter().map(|w| w.id).collect();
        let deadline = Instant::now() + COMMIT_TIMEOUT;
        while !waiting.is_empty() {
            match self.commits.recv_timeout(Duration::from_millis(100)) {
                Ok((worker, checkpoint, error)) if checkpoint == id => {
                    if let Some(e) = error {
                        let who = self.workers.iter().find(|w| w.id == worker);
                        return Err(format!(
                            "{}: committing snapshot {id}: {e}",
                            who.map(|w| w.describe()).unwrap_or_default()
                        ));
                    }
                    waiting.remove(&worker);
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(w) = self
                        .workers
                        .iter()
                        .find(|w| waiting.contains(&w.id) && !w.alive.load(Ordering::SeqCst))
                    {
                        return Err(format!(
                            "{} lost before committing snapshot {id}",
                            w.describe()
                        ));
                    }
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "{} worker(s) did not commit snapshot {id} within {COMMIT_TIMEOUT:?}",
                            waiting.len()
                        ));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Err("the attempt ended".into()),
            }
        }
        Ok(())
    }
}

impl JobControl for JobCoordinator {
    fn status(&self) -> JobStatus {
        let view = lock(&self.view);
        let checkpoints = lock(&self.status).clone();
        let mut phase = view.phase.unwrap_or(Phase::Starting);
        if phase == Phase::Running && self.stop_requested() {
            phase = Phase::Stopping;
        }
        let subtasks = self.subtasks();
        let used: HashMap<u64, u32> = lock(&self.current)
            .as_ref()
            .map(|c| c.slots.clone())
            .unwrap_or_default();
        let workers = lock(&self.workers)
            .iter()
            .map(|w| WorkerStatus {
                name: w.name.clone(),
                address: w.address.clone(),
                slots: w.slots,
                used_slots: used.get(&w.id).copied().unwrap_or(0),
            })
            .collect();
        JobStatus {
            name: self.config.job.clone(),
            phase,
            parallelism: self.config.parallelism as u32,
            max_parallelism: self.config.max_parallelism,
            uptime_seconds: view
                .attempt_started
                .unwrap_or(self.started)
                .elapsed()
                .as_secs_f64(),
            subtasks,
            checkpoints: CheckpointSummary::from(&checkpoints),
            restored_from: checkpoints.restored_from,
            errors: view.errors.clone(),
            restarts: view.restarts.clone(),
            workers,
        }
    }

    fn savepoint(&self, target: &str, stop: bool) -> Result<SnapshotInfo, Error> {
        let commands = lock(&self.current)
            .as_ref()
            .map(|c| c.commands.clone())
            .ok_or_else(|| Error::Checkpoint("the job is not running".into()))?;
        if stop {
            self.stop_requested.store(true, Ordering::SeqCst);
        }
        let (reply, result) = crossbeam_channel::bounded(1);
        let outcome = commands
            .send(Command::Savepoint(SavepointRequest {
                storage: Some(target.to_string()),
                stop,
                reply,
            }))
            .map_err(|_| Error::Checkpoint("the job is no longer running".into()))
            .and_then(|()| {
                result.recv().map_err(|_| {
                    Error::Checkpoint("the job ended before the savepoint completed".into())
                })
            })
            .and_then(|r| r.map_err(Error::Checkpoint));
        if outcome.is_err() && stop {
            self.stop_requested.store(false, Ordering::SeqCst);
        }
        outcome.map(|s| SnapshotInfo::from(&s))
    }

    fn cancel(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
        self.cancel.store(true, Ordering::SeqCst);
    }

    fn compatibility(
        &self,
        location: &str,
        allow_non_restored_state: bool,
    ) -> Result<CompatibilityReport, Error> {
        crate::control::check_compatibility(
            location,
            self.config.max_parallelism,
            &self.declared,
            allow_non_restored_state,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::place;

    #[test]
    fn slots_spread_one_per_worker_in_turn() {
        assert_eq!(place(&[2, 2, 2], 3), Some((vec![0, 1, 2], vec![0, 1, 2])));
        assert_eq!(
            place(&[2, 2, 2], 4),
            Some((vec![0, 1, 2], vec![0, 1, 2, 0]))
        );
        // Workers without a free slot are skipped and not used.
        assert_eq!(place(&[0, 3, 1], 3), Some((vec![1, 2], vec![0, 1, 0])));
        assert_eq!(place(&[1, 1], 3), None);
        assert_eq!(place(&[], 1), None);
    }
}
