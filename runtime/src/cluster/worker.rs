//! `sluice worker`: registers its slots with the coordinator, runs the subtasks of the
//! slots it is given, exchanges records with the other workers, uploads its subtasks'
//! snapshot parts and commits their sink transactions when told.

use super::protocol::{read_message, write_message, Deployment, ToCoordinator, ToWorker, WirePart};
use super::{hello, lock, HELLO_LEN, PROTOCOL};
use crate::api::JobRegistry;
use crate::control::model::JobError;
use crate::control::JobControl;
use crate::error::Error;
use crate::exec::checkpoint::{commit_all, Report};
use crate::exec::erased::ErasedSend;
use crate::exec::graph::PortType;
use crate::exec::metrics::TaskMetrics;
use crate::exec::net::{InboundChannels, InboundConnection, OutboundConnection};
use crate::exec::{
    launch, prepare, Placement, RemoteLinks, Restore, RunOptions, RunningJob, Supervise,
    SupervisorParts,
};
use crate::snapshot::{CheckpointStorage, FileEntry, SnapshotError};
use crate::state::{RocksConfig, StateBackend};
use crossbeam_channel::RecvTimeoutError;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The coordinator's cluster address (`host:port`, e.g. a Service name).
    pub coordinator: String,
    pub name: String,
    pub slots: u32,
    /// Where to accept connections from other workers (`host:port`, port 0 for any).
    pub data_bind: String,
    /// The host other workers reach this one at [default: the address this worker's
    /// connection to the coordinator leaves from].
    pub advertise_host: Option<String>,
    pub state_dir: PathBuf,
    pub state_memory: usize,
    /// How long to keep trying to reach the coordinator at start.
    pub connect_timeout: Duration,
}

/// Between status reports (the worker's heartbeat).
const STATUS_INTERVAL: Duration = Duration::from_millis(500);
/// How long an accepted data connection may wait for the deployment that expects it.
const INBOUND_WAIT: Duration = Duration::from_secs(30);

/// The connection to the coordinator, shared by the threads that report on it.
struct Upstream {
    stream: Mutex<TcpStream>,
}

impl Upstream {
    fn send(&self, message: &ToCoordinator) {
        let mut buf = Vec::new();
        // A lost coordinator shows on the reading side, which ends the worker.
        let _ = write_message(&mut *lock(&self.stream), &mut buf, message);
    }
}

/// Shared files this worker uploaded, by name. A file uploaded for a snapshot that never
/// completed may be deleted by retention, so it is reused only once its snapshot completed.
#[derive(Default)]
struct Uploads {
    confirmed: HashMap<String, FileEntry>,
    pending: BTreeMap<u64, HashMap<String, FileEntry>>,
}

impl Uploads {
    fn confirm(&mut self, checkpoint: u64) {
        let done: Vec<u64> = self.pending.range(..=checkpoint).map(|(c, _)| *c).collect();
        for c in done {
            if let Some(files) = self.pending.remove(&c) {
                if c == checkpoint {
                    self.confirmed.extend(files);
                }
            }
        }
    }
}

/// Inbound channels of each attempt, by the worker they come from, until that worker's
/// connection arrives; and the connections being served.
#[derive(Default)]
struct Inbound {
    state: Mutex<InboundState>,
    published: Condvar,
}

#[derive(Default)]
struct InboundState {
    expected: HashMap<(u64, u32), InboundChannels>,
    serving: Vec<(u64, InboundConnection)>,
}

impl Inbound {
    fn publish(&self, attempt: u64, channels: HashMap<u32, InboundChannels>) {
        let mut state = lock(&self.state);
        for (from, c) in channels {
            state.expected.insert((attempt, from), c);
        }
        drop(state);
        self.published.notify_all();
    }

    /// Closes the connections of `attempt` and forgets what it still expected.
    fn close(&self, attempt: u64) {
        let mut state = lock(&self.state);
        state.expected.retain(|(a, _), _| *a != attempt);
        let serving = std::mem::take(&mut state.serving);
        let (closing, keep): (Vec<_>, Vec<_>) =
            serving.into_iter().partition(|(a, _)| *a == attempt);
        state.serving = keep;
        drop(state);
        drop(closing);
    }

    fn accept(self: Arc<Self>, mut stream: TcpStream) {
        let mut hello_bytes = [0u8; HELLO_LEN];
        let _ = stream.set_read_timeout(Some(INBOUND_WAIT));
        if stream.read_exact(&mut hello_bytes).is_err() {
            return;
        }
        let _ = stream.set_read_timeout(None);
        let Some((attempt, from)) = hello::parse(&hello_bytes) else {
            tracing::warn!("worker: refused a data connection that did not introduce itself");
            return;
        };
        let deadline = Instant::now() + INBOUND_WAIT;
        let mut state = lock(&self.state);
        let channels = loop {
            if let Some(c) = state.expected.remove(&(attempt, from)) {
                break c;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    attempt,
                    "worker: no deployment expects data from worker {from} in attempt {attempt}"
                );
                return;
            }
            state = self
                .published
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        drop(state);
        match InboundConnection::serve(stream, channels) {
            Ok(conn) => lock(&self.state).serving.push((attempt, conn)),
            Err(e) => tracing::warn!(attempt, "worker: {e}"),
        }
    }
}

/// The connections of one attempt to the other workers.
struct Links<'a> {
    attempt: u64,
    me: u32,
    workers: &'a [String],
    capacity: usize,
    outbound: HashMap<u32, OutboundConnection>,
    inbound: HashMap<u32, InboundChannels>,
}

impl RemoteLinks for Links<'_> {
    fn sender(
        &mut self,
        port: &PortType,
        worker: u32,
        channel: u32,
        metrics: Arc<TaskMetrics>,
    ) -> Result<ErasedSend, Error> {
        if !self.outbound.contains_key(&worker) {
            let addr = self
                .workers
                .get(worker as usize)
                .ok_or_else(|| Error::Graph(format!("the deployment names no worker {worker}")))?;
            let conn = OutboundConnection::connect_with_hello(
                addr.as_str(),
                &hello::encode(self.attempt, self.me),
            )?;
            self.outbound.insert(worker, conn);
        }
        let conn = &self.outbound[&worker];
        Ok((port.remote_sender)(conn, channel, metrics))
    }

    fn deliver(&mut self, port: &PortType, worker: u32, channel: u32, to: ErasedSend) {
        let channels = self
            .inbound
            .entry(worker)
            .or_insert_with(|| InboundChannels::new(self.capacity));
        (port.deliver_inbound)(channels, channel, to);
    }
}

/// The attempt this worker runs.
struct Current {
    attempt: u64,
    job: Arc<RunningJob>,
    outbound: Arc<Vec<OutboundConnection>>,
}

impl Current {
    /// Cancels the attempt's subtasks and closes its connections, so that no subtask stays
    /// blocked on a peer that no longer reads (a frozen or dead worker).
    fn cancel(&self, inbound: &Inbound) {
        self.job.cancel();
        for c in self.outbound.iter() {
            c.close();
        }
        inbound.close(self.attempt);
    }
}

struct Worker<'r> {
    registry: &'r JobRegistry,
    config: WorkerConfig,
    upstream: Arc<Upstream>,
    inbound: Arc<Inbound>,
    current: Arc<Mutex<Option<Current>>>,
    uploads: Arc<Mutex<Uploads>>,
}

/// Runs a worker until the coordinator shuts it down (`Ok`) or is lost (`Err`).
pub fn run_worker(registry: &JobRegistry, config: WorkerConfig) -> Result<(), Error> {
    let _worker = tracing::info_span!("worker", worker = %config.name).entered();
    let listener = TcpListener::bind(&config.data_bind).map_err(|e| Error::Cluster {
        peer: config.data_bind.clone(),
        message: format!("cannot listen for data connections: {e}"),
    })?;
    let data_port = listener
        .local_addr()
        .map_err(|e| Error::io("data listener", e))?
        .port();
    let stream = connect(&config.coordinator, config.connect_timeout)?;
    let advertise = match &config.advertise_host {
        Some(host) => host.clone(),
        None => stream
            .local_addr()
            .map_err(|e| Error::io("coordinator connection", e))?
            .ip()
            .to_string(),
    };
    let data_address = format!("{advertise}:{data_port}");
    let mut reading = stream
        .try_clone()
        .map_err(|e| Error::io("coordinator connection", e))?;
    let upstream = Arc::new(Upstream {
        stream: Mutex::new(stream),
    });
    upstream.send(&ToCoordinator::Register {
        protocol: PROTOCOL,
        name: config.name.clone(),
        slots: config.slots,
        data_address: data_address.clone(),
    });
    tracing::info!(
        "worker {} registered with {} ({} slots, data at {data_address})",
        config.name,
        config.coordinator,
        config.slots
    );

    let inbound = Arc::new(Inbound::default());
    let accepting = inbound.clone();
    std::thread::Builder::new()
        .name("data-accept".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let inbound = accepting.clone();
                let _ = std::thread::Builder::new()
                    .name("data-hello".into())
                    .spawn(move || inbound.accept(stream));
            }
        })
        .map_err(|e| Error::io("thread", e))?;

    let worker = Worker {
        registry,
        config,
        upstream,
        inbound,
        current: Arc::new(Mutex::new(None)),
        uploads: Arc::new(Mutex::new(Uploads::default())),
    };
    worker.start_status_reports()?;
    loop {
        let message = read_message::<ToWorker>(&mut reading).map_err(|e| Error::Cluster {
            peer: worker.config.coordinator.clone(),
            message: format!("connection to the coordinator failed: {e}"),
        });
        match message {
            Ok(Some(ToWorker::Deploy(d))) => worker.deploy(*d),
            Ok(Some(ToWorker::Trigger {
                attempt,
                checkpoint,
                kind,
            })) => {
                if let Some(c) = lock(&worker.current)
                    .as_ref()
                    .filter(|c| c.attempt == attempt)
                {
                    c.job.control().request(checkpoint, kind);
                }
            }
            Ok(Some(ToWorker::Commit {
                attempt,
                checkpoint,
                transactions,
            })) => worker.commit(attempt, checkpoint, &transactions),
            Ok(Some(ToWorker::Cancel { attempt })) => {
                if let Some(c) = lock(&worker.current)
                    .as_ref()
                    .filter(|c| c.attempt == attempt)
                {
                    c.cancel(&worker.inbound);
                }
            }
            Ok(Some(ToWorker::Shutdown { reason })) => {
                tracing::info!("worker {}: {reason}", worker.config.name);
                worker.cancel_current();
                return Ok(());
            }
            Ok(None) => {
                worker.cancel_current();
                return Err(Error::Cluster {
                    peer: worker.config.coordinator.clone(),
                    message: "the coordinator closed the connection".into(),
                });
            }
            Err(e) => {
                worker.cancel_current();
                return Err(e);
            }
        }
    }
}

/// Connects to the coordinator, retrying until `timeout` (it may start after the worker).
fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(Error::Cluster {
                    peer: addr.to_string(),
                    message: format!("cannot reach the coordinator within {timeout:?}: {e}"),
                })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

impl Worker<'_> {
    fn start_status_reports(&self) -> Result<(), Error> {
        let (upstream, current, name) = (
            self.upstream.clone(),
            self.current.clone(),
            self.config.name.clone(),
        );
        std::thread::Builder::new()
            .name("status".into())
            .spawn(move || loop {
                let report = match lock(&current).as_ref() {
                    Some(c) => {
                        let mut subtasks = c.job.status().subtasks;
                        for s in &mut subtasks {
                            s.worker = Some(name.clone());
                        }
                        ToCoordinator::Status {
                            attempt: c.attempt,
                            subtasks,
                        }
                    }
                    None => ToCoordinator::Status {
                        attempt: 0,
                        subtasks: Vec::new(),
                    },
                };
                upstream.send(&report);
                std::thread::sleep(STATUS_INTERVAL);
            })
            .map(|_| ())
            .map_err(|e| Error::io("thread", e))
    }

    fn cancel_current(&self) {
        let current = lock(&self.current).take();
        if let Some(c) = current {
            c.cancel(&self.inbound);
            let _ = c.job.wait();
        }
    }

    fn deploy(&self, d: Deployment) {
        self.cancel_current();
        let attempt = d.attempt;
        if let Err(e) = self.start(d) {
            tracing::warn!(
                attempt,
                "worker {}: attempt {attempt} did not start: {e}",
                self.config.name
            );
            self.upstream.send(&ToCoordinator::Ended {
                attempt,
                finished: false,
                errors: vec![JobError {
                    operator: None,
                    subtask: None,
                    cause: format!("worker {}: {e}", self.config.name),
                }],
            });
        }
    }

    fn start(&self, d: Deployment) -> Result<(), Error> {
        let config: serde_json::Value = serde_json::from_str(&d.config)
            .map_err(|e| Error::Config(format!("spec.job.config: {e}")))?;
        let graph = self
            .registry
            .build(&d.job, d.parallelism, d.max_parallelism, &config)?;
        let state_backend = if d.rocksdb {
            StateBackend::RocksDb(RocksConfig::new(
                self.config.state_dir.clone(),
                self.config.state_memory,
            ))
        } else {
            StateBackend::Heap
        };
        let options = RunOptions {
            batch_size: d.batch_size,
            channel_capacity: d.channel_capacity,
            restore: d.restore.clone().map(Restore::Snapshot),
            allow_non_restored_state: d.allow_non_restored_state,
            state_backend,
            ..RunOptions::default()
        };
        let storage = d
            .checkpoint_storage
            .as_deref()
            .map(CheckpointStorage::open)
            .transpose()?;
        let prepared = prepare(&graph, &options, d.commit_restored)?;
        let mut links = Links {
            attempt: d.attempt,
            me: d.you,
            workers: &d.workers,
            capacity: d.channel_capacity,
            outbound: HashMap::new(),
            inbound: HashMap::new(),
        };
        let relay = Relay {
            attempt: d.attempt,
            upstream: self.upstream.clone(),
            uploads: self.uploads.clone(),
            storage,
        };
        let supervise: Supervise = Box::new(move |parts| relay.run(parts));
        let placement = Placement {
            run_id: &d.run_id,
            slot_workers: &d.slot_workers,
            this_worker: d.you,
            links: &mut links,
        };
        let job = Arc::new(launch(
            graph,
            options,
            prepared,
            Some(placement),
            supervise,
        )?);
        let outbound: Arc<Vec<OutboundConnection>> =
            Arc::new(std::mem::take(&mut links.outbound).into_values().collect());
        self.inbound
            .publish(d.attempt, std::mem::take(&mut links.inbound));
        *lock(&self.current) = Some(Current {
            attempt: d.attempt,
            job: job.clone(),
            outbound: outbound.clone(),
        });
        tracing::info!(
            job = %d.job,
            attempt = d.attempt,
            "worker {}: attempt {} runs {} subtask(s)",
            self.config.name,
            d.attempt,
            job.subtasks().len()
        );
        // Reports how the attempt ended once every subtask has; then lets go of its
        // connections.
        let (upstream, current, inbound, attempt) = (
            self.upstream.clone(),
            self.current.clone(),
            self.inbound.clone(),
            d.attempt,
        );
        std::thread::Builder::new()
            .name("attempt".into())
            .spawn(move || {
                let result = job.wait();
                // A stop with a savepoint reaches a worker as a cancel: only the coordinator
                // knows the savepoint completed.
                let finished = result.is_ok();
                let mut errors: Vec<JobError> =
                    job.failures().into_iter().map(JobError::from).collect();
                if let (Err(e), true) = (&result, errors.is_empty()) {
                    if !job.stop_requested() {
                        errors.push(JobError {
                            operator: None,
                            subtask: None,
                            cause: e.to_string(),
                        });
                    }
                }
                {
                    let mut current = lock(&current);
                    if current.as_ref().is_some_and(|c| c.attempt == attempt) {
                        *current = None;
                    }
                }
                drop(outbound);
                inbound.close(attempt);
                upstream.send(&ToCoordinator::Ended {
                    attempt,
                    finished,
                    errors,
                });
            })
            .map_err(|e| Error::io("thread", e))?;
        Ok(())
    }

    fn commit(
        &self,
        attempt: u64,
        checkpoint: u64,
        transactions: &[crate::snapshot::FileTransaction],
    ) {
        // Committed even when the attempt is over: the snapshot is complete, and committing
        // is idempotent.
        let result = commit_all(transactions);
        if let Some(c) = lock(&self.current)
            .as_ref()
            .filter(|c| c.attempt == attempt)
        {
            c.job.control().mark_committed(checkpoint);
        }
        lock(&self.uploads).confirm(checkpoint);
        self.upstream.send(&ToCoordinator::Committed {
            attempt,
            checkpoint,
            error: result.err().map(|e| e.to_string()),
        });
    }
}

/// The supervising thread of a worker's attempt: uploads each part its subtasks hand over
/// and reports it to the coordinator.
struct Relay {
    attempt: u64,
    upstream: Arc<Upstream>,
    uploads: Arc<Mutex<Uploads>>,
    storage: Option<CheckpointStorage>,
}

impl Relay {
    fn run(self, parts: SupervisorParts) -> Result<(), Error> {
        let mut finished = 0;
        let attempt = self.attempt;
        loop {
            if parts.cancel.load(Ordering::Relaxed) {
                return Ok(());
            }
            let report = match parts.reports.recv_timeout(Duration::from_millis(50)) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            match report {
                Report::Ack {
                    task,
                    checkpoint,
                    snapshot,
                } => match self.upload(snapshot, Some(checkpoint)) {
                    Ok(part) => self.upstream.send(&ToCoordinator::Ack {
                        attempt,
                        task: task as u32,
                        checkpoint,
                        part,
                    }),
                    Err(error) => self.upstream.send(&ToCoordinator::Declined {
                        attempt,
                        checkpoint,
                        error: error.to_string(),
                    }),
                },
                Report::Finished { task, snapshot } => {
                    let part = self.upload(snapshot, None).map_err(|e| {
                        Error::Checkpoint(format!("final state of a finished subtask: {e}"))
                    })?;
                    self.upstream.send(&ToCoordinator::Finished {
                        attempt,
                        task: task as u32,
                        part,
                    });
                    finished += 1;
                    if finished == parts.local_tasks.len() {
                        return Ok(());
                    }
                }
                Report::Declined { checkpoint, error } => {
                    self.upstream.send(&ToCoordinator::Declined {
                        attempt,
                        checkpoint,
                        error,
                    })
                }
            }
        }
    }

    /// Encodes and uploads a part; files uploaded for snapshot `checkpoint` are reused once
    /// it completes, those of a final part (`None`) at once (the coordinator keeps them).
    fn upload(
        &self,
        mut snapshot: crate::snapshot::TaskSnapshot,
        checkpoint: Option<u64>,
    ) -> Result<WirePart, SnapshotError> {
        let mut known = lock(&self.uploads).confirmed.clone();
        snapshot.resolve(self.storage.as_ref(), &mut known)?;
        let part = WirePart::new(snapshot)?;
        let mut uploads = lock(&self.uploads);
        let new: HashMap<String, FileEntry> = known
            .into_iter()
            .filter(|(name, _)| !uploads.confirmed.contains_key(name))
            .collect();
        match checkpoint {
            Some(c) => uploads.pending.entry(c).or_default().extend(new),
            None => uploads.confirmed.extend(new),
        }
        Ok(part)
    }
}
