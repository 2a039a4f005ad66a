//! `sluice worker`: registers its slots with the coordinator, runs the subtasks of the
//! slots it is given, exchanges records with the other workers, uploads its subtasks'
//! snapshot parts and commits their sink transactions when told. It outlives its
//! coordinator: when the connection to it closes, the worker cancels its attempt and
//! registers again with the coordinator that next listens at the same address.

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
use crate::tls::{Link, LinkWriter, TlsContext};
use crossbeam_channel::RecvTimeoutError;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// How long to keep trying to register with a new coordinator after losing one.
    pub coordinator_loss_timeout: Duration,
    /// Mutual TLS with the coordinator and the other workers, when set: each side presents
    /// the job's certificate and accepts only a peer with one.
    pub tls: Option<TlsContext>,
}

/// Between status reports (the worker's heartbeat).
const STATUS_INTERVAL: Duration = Duration::from_millis(500);
/// How long an accepted data connection may wait for the deployment that expects it.
const INBOUND_WAIT: Duration = Duration::from_secs(30);
/// The first pause between tries to reach a lost coordinator's successor; it doubles...
const RECONNECT_FIRST_PAUSE: Duration = Duration::from_millis(100);
/// ...up to this. A connection that lasts this long (or brings a message) counts as a new
/// coordinator found: the next loss starts its clock afresh.
const RECONNECT_MAX_PAUSE: Duration = Duration::from_secs(5);
/// How long one attempt to reach the coordinator may take. A connection to a Service whose
/// pod just went away can be sent to the gone pod's address, where it is dropped rather than
/// refused: without a bound, the kernel would retry it for minutes before the next attempt.
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// One connection to a coordinator, shared by the threads that report on it. Each
/// coordinator gets its own: reports of a lost coordinator's attempts, sent late, go to the
/// closed connection and never reach the next coordinator.
struct Upstream {
    stream: Mutex<LinkWriter>,
    /// Another handle of the socket, to shut it down while a writer holds `stream`.
    closer: TcpStream,
    closed: AtomicBool,
}

impl Upstream {
    fn new(writer: LinkWriter, closer: TcpStream) -> Self {
        Upstream {
            closer,
            stream: Mutex::new(writer),
            closed: AtomicBool::new(false),
        }
    }

    fn send(&self, message: &ToCoordinator) {
        let mut buf = Vec::new();
        // A lost coordinator shows on the reading side, which ends the connection.
        let _ = write_message(&mut *lock(&self.stream), &mut buf, message);
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.closer.shutdown(Shutdown::Both);
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

/// Inbound channels of each attempt (by its link id, `hello::link_of`), by the worker they
/// come from, until that worker's connection arrives; and the connections being served.
struct Inbound {
    state: Mutex<InboundState>,
    published: Condvar,
    /// Peers must present the job's certificate when set.
    tls: Option<TlsContext>,
}

#[derive(Default)]
struct InboundState {
    expected: HashMap<(u64, u32), InboundChannels>,
    /// By attempt (link) and the worker sending.
    serving: Vec<(u64, u32, InboundConnection)>,
}

impl Inbound {
    fn publish(&self, link: u64, channels: HashMap<u32, InboundChannels>) {
        let mut state = lock(&self.state);
        for (from, c) in channels {
            state.expected.insert((link, from), c);
        }
        drop(state);
        self.published.notify_all();
    }

    /// Closes the connections of attempt `link` and forgets what it still expected.
    fn close(&self, link: u64) {
        let mut state = lock(&self.state);
        state.expected.retain(|(l, _), _| *l != link);
        let serving = std::mem::take(&mut state.serving);
        let (closing, keep): (Vec<_>, Vec<_>) =
            serving.into_iter().partition(|(l, _, _)| *l == link);
        state.serving = keep;
        drop(state);
        drop(closing);
    }

    /// Why the connections of attempt `link` that failed did.
    fn failures(&self, link: u64) -> Vec<String> {
        lock(&self.state)
            .serving
            .iter()
            .filter(|(l, _, _)| *l == link)
            .filter_map(|(_, from, c)| {
                let why = c.failure()?;
                Some(format!(
                    "the data connection from worker {from} failed: {why}"
                ))
            })
            .collect()
    }

    /// Closes the connections of every attempt and forgets what they expected: none
    /// outlives the coordinator that deployed it.
    fn close_all(&self) {
        let mut state = lock(&self.state);
        state.expected.clear();
        let closing = std::mem::take(&mut state.serving);
        drop(state);
        drop(closing);
    }

    fn accept(self: Arc<Self>, stream: TcpStream) {
        let Ok(peer) = stream.peer_addr() else {
            return;
        };
        let mut connection = match Link::accept(stream, self.tls.as_ref()) {
            Ok(connection) => connection,
            Err(e) => {
                tracing::warn!(%peer, "worker: refused a data connection from {peer}: {e}");
                return;
            }
        };
        let mut hello_bytes = [0u8; HELLO_LEN];
        let _ = connection.closer.set_read_timeout(Some(INBOUND_WAIT));
        if connection.reader.read_exact(&mut hello_bytes).is_err() {
            return;
        }
        let _ = connection.closer.set_read_timeout(None);
        let Some((link, from)) = hello::parse(&hello_bytes) else {
            tracing::warn!("worker: refused a data connection that did not introduce itself");
            return;
        };
        let deadline = Instant::now() + INBOUND_WAIT;
        let mut state = lock(&self.state);
        let channels = loop {
            if let Some(c) = state.expected.remove(&(link, from)) {
                break c;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    "worker: no deployment expects data from worker {from} in attempt \
                     {link:016x}"
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
        match InboundConnection::serve(connection, peer, channels) {
            Ok(conn) => lock(&self.state).serving.push((link, from, conn)),
            Err(e) => tracing::warn!("worker: {e}"),
        }
    }
}

/// The connections of one attempt to the other workers.
struct Links<'a> {
    tls: Option<&'a TlsContext>,
    link: u64,
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
                &hello::encode(self.link, self.me),
                self.tls,
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
    /// Names the attempt across coordinators (its number does not: `hello`).
    link: u64,
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
        inbound.close(self.link);
    }
}

struct Worker<'r> {
    registry: &'r JobRegistry,
    config: WorkerConfig,
    /// Where other workers reach this one; the same for every coordinator.
    data_address: String,
    inbound: Arc<Inbound>,
    current: Arc<Mutex<Option<Current>>>,
    uploads: Arc<Mutex<Uploads>>,
}

/// How a connection to a coordinator ended.
enum Session {
    /// The coordinator said the job is over.
    Shutdown,
    /// The connection closed or failed, saying why; `held` when it lasted long enough (or
    /// carried a message) to count as a coordinator found.
    Lost { why: String, held: bool },
}

/// Runs a worker until a coordinator shuts it down (`Ok`), or until no coordinator was
/// reachable for `connect_timeout` at start or for `coordinator_loss_timeout` after losing
/// one (`Err`).
pub fn run_worker(registry: &JobRegistry, config: WorkerConfig) -> Result<(), Error> {
    let _worker = tracing::info_span!("worker", worker = %config.name).entered();
    // The listener and its accept thread live as long as the worker: every coordinator is
    // told the same data address.
    let listener = TcpListener::bind(&config.data_bind).map_err(|e| Error::Cluster {
        peer: config.data_bind.clone(),
        message: format!("cannot listen for data connections: {e}"),
    })?;
    let data_port = listener
        .local_addr()
        .map_err(|e| Error::io("data listener", e))?
        .port();
    let mut stream = connect(&config.coordinator, config.connect_timeout)?;
    let advertise = match &config.advertise_host {
        Some(host) => host.clone(),
        None => stream
            .local_addr()
            .map_err(|e| Error::io("coordinator connection", e))?
            .ip()
            .to_string(),
    };
    let inbound = Arc::new(Inbound {
        state: Mutex::default(),
        published: Condvar::new(),
        tls: config.tls.clone(),
    });
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
        data_address: format!("{advertise}:{data_port}"),
        config,
        inbound,
        current: Arc::new(Mutex::new(None)),
        uploads: Arc::new(Mutex::new(Uploads::default())),
    };
    let coordinator = worker.config.coordinator.clone();
    let loss_timeout = worker.config.coordinator_loss_timeout;
    // When the coordinator was lost (the first loss of a run of short-lived connections).
    let mut lost_since: Option<Instant> = None;
    let mut pause = RECONNECT_FIRST_PAUSE;
    loop {
        let (why, held) = match worker.serve(stream, lost_since.is_some())? {
            Session::Shutdown => return Ok(()),
            Session::Lost { why, held } => (why, held),
        };
        worker.forget_coordinator();
        if held || lost_since.is_none() {
            lost_since = Some(Instant::now());
            pause = RECONNECT_FIRST_PAUSE;
            tracing::warn!(
                %coordinator,
                "worker {}: lost the coordinator at {coordinator} ({why}); cancelled its \
                 attempt, waiting up to {loss_timeout:?} for a coordinator to register with",
                worker.config.name
            );
        } else {
            tracing::warn!(
                %coordinator,
                "worker {}: the coordinator at {coordinator} closed the connection at once \
                 ({why}); trying again",
                worker.config.name
            );
        }
        let since = lost_since.unwrap_or_else(Instant::now);
        stream = reconnect(&coordinator, since, loss_timeout, &mut pause)?;
    }
}

/// Connects to the coordinator, retrying until `timeout` (it may start after the worker).
fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        match connect_once(addr) {
            Ok(s) => return Ok(s),
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

/// One attempt to reach the coordinator, each of its addresses bounded by
/// [`CONNECT_ATTEMPT_TIMEOUT`].
fn connect_once(addr: &str) -> std::io::Result<TcpStream> {
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, CONNECT_ATTEMPT_TIMEOUT) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, format!("{addr}: no address"))
    }))
}

/// Connects to the next coordinator at `addr` after losing one at `lost_since`: tries with
/// pauses doubling from `pause` up to [`RECONNECT_MAX_PAUSE`], and gives up once
/// `loss_timeout` has passed since the loss.
fn reconnect(
    addr: &str,
    lost_since: Instant,
    loss_timeout: Duration,
    pause: &mut Duration,
) -> Result<TcpStream, Error> {
    loop {
        let waited = lost_since.elapsed();
        if waited >= loss_timeout {
            return Err(Error::Cluster {
                peer: addr.to_string(),
                message: format!(
                    "no coordinator at {addr} for {:.1}s since it was lost \
                     (--coordinator-loss-timeout {loss_timeout:?}); giving up",
                    waited.as_secs_f64()
                ),
            });
        }
        std::thread::sleep((*pause).min(loss_timeout - waited));
        *pause = (*pause * 2).min(RECONNECT_MAX_PAUSE);
        match connect_once(addr) {
            Ok(s) => return Ok(s),
            Err(e) => tracing::debug!("worker: coordinator at {addr} not reachable yet: {e}"),
        }
    }
}

impl Worker<'_> {
    /// Registers on a fresh connection to the coordinator and serves it until it ends.
    fn serve(&self, stream: TcpStream, again: bool) -> Result<Session, Error> {
        let connected = Instant::now();
        let Link {
            reader: mut reading,
            writer,
            closer,
        } = match Link::connect(stream, self.config.tls.as_ref()) {
            Ok(link) => link,
            // Refused, or this side refused the coordinator: a coordinator with another
            // certificate is not this job's, and the next one may be.
            Err(e) => {
                return Ok(Session::Lost {
                    why: format!("the TLS handshake failed: {e}"),
                    held: false,
                })
            }
        };
        let upstream = Arc::new(Upstream::new(writer, closer));
        let (name, coordinator) = (&self.config.name, &self.config.coordinator);
        upstream.send(&ToCoordinator::Register {
            protocol: PROTOCOL,
            name: name.clone(),
            slots: self.config.slots,
            data_address: self.data_address.clone(),
        });
        tracing::info!(
            %coordinator,
            "worker {name} {} with {coordinator} ({} slots, data at {})",
            if again { "registered again" } else { "registered" },
            self.config.slots,
            self.data_address
        );
        self.start_status_reports(&upstream)?;
        let mut heard = false;
        let end = loop {
            let message = match read_message::<ToWorker>(&mut reading) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    break Session::Lost {
                        why: "the coordinator closed the connection".into(),
                        held: heard || connected.elapsed() >= RECONNECT_MAX_PAUSE,
                    }
                }
                Err(e) => {
                    break Session::Lost {
                        why: format!("the connection to the coordinator failed: {e}"),
                        held: heard || connected.elapsed() >= RECONNECT_MAX_PAUSE,
                    }
                }
            };
            heard = true;
            match message {
                ToWorker::Deploy(d) => self.deploy(&upstream, *d),
                ToWorker::Trigger {
                    attempt,
                    checkpoint,
                    kind,
                } => {
                    if let Some(c) = lock(&self.current)
                        .as_ref()
                        .filter(|c| c.attempt == attempt)
                    {
                        c.job.control().request(checkpoint, kind);
                    }
                }
                ToWorker::Commit {
                    attempt,
                    checkpoint,
                    transactions,
                } => self.commit(&upstream, attempt, checkpoint, &transactions),
                ToWorker::Cancel { attempt } => {
                    if let Some(c) = lock(&self.current)
                        .as_ref()
                        .filter(|c| c.attempt == attempt)
                    {
                        c.cancel(&self.inbound);
                    }
                }
                ToWorker::Shutdown { reason } => {
                    tracing::info!("worker {name}: {reason}");
                    self.cancel_current();
                    break Session::Shutdown;
                }
            }
        };
        // Ends this connection's status reports; whatever the lost coordinator's attempts
        // still send goes nowhere.
        upstream.close();
        Ok(end)
    }

    /// After losing the coordinator: cancels its attempt and drops everything that
    /// belonged to it, so the next coordinator starts from a clean worker.
    fn forget_coordinator(&self) {
        self.cancel_current();
        self.inbound.close_all();
        // Files uploaded for its checkpoints: the next coordinator's retention does not
        // know this worker counted on them, so they are uploaded again rather than reused.
        *lock(&self.uploads) = Uploads::default();
    }

    fn start_status_reports(&self, upstream: &Arc<Upstream>) -> Result<(), Error> {
        let (upstream, current, name) = (
            upstream.clone(),
            self.current.clone(),
            self.config.name.clone(),
        );
        std::thread::Builder::new()
            .name("status".into())
            .spawn(move || loop {
                if upstream.closed.load(Ordering::SeqCst) {
                    return;
                }
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

    fn deploy(&self, upstream: &Arc<Upstream>, d: Deployment) {
        self.cancel_current();
        let attempt = d.attempt;
        if let Err(e) = self.start(upstream, d) {
            tracing::warn!(
                attempt,
                "worker {}: attempt {attempt} did not start: {e}",
                self.config.name
            );
            upstream.send(&ToCoordinator::Ended {
                attempt,
                finished: false,
                errors: vec![JobError::of_job(format!(
                    "worker {}: {e}",
                    self.config.name
                ))],
            });
        }
    }

    fn start(&self, upstream: &Arc<Upstream>, d: Deployment) -> Result<(), Error> {
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
            redact_keys: d.redact_keys,
            ..RunOptions::default()
        };
        let storage = d
            .checkpoint_storage
            .as_deref()
            .map(CheckpointStorage::open)
            .transpose()?;
        let prepared = prepare(&graph, &options, d.commit_restored)?;
        let link = hello::link_of(&d.run_id);
        let mut links = Links {
            tls: self.config.tls.as_ref(),
            link,
            me: d.you,
            workers: &d.workers,
            capacity: d.channel_capacity,
            outbound: HashMap::new(),
            inbound: HashMap::new(),
        };
        let relay = Relay {
            attempt: d.attempt,
            upstream: upstream.clone(),
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
            .publish(link, std::mem::take(&mut links.inbound));
        *lock(&self.current) = Some(Current {
            attempt: d.attempt,
            link,
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
            upstream.clone(),
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
                        // No subtask here failed of its own: a lost data connection is
                        // the cause rather than the input it cut short.
                        let lost = inbound.failures(link);
                        if lost.is_empty() {
                            errors.push(JobError::of_job(e.to_string()));
                        }
                        errors.extend(lost.into_iter().map(JobError::of_job));
                    }
                }
                {
                    let mut current = lock(&current);
                    // By link: a new coordinator's attempt may have the same number.
                    if current.as_ref().is_some_and(|c| c.link == link) {
                        *current = None;
                    }
                }
                // Closing waits until each peer has read what this worker sent, ends
                // included (`OutboundConnection::finish`).
                drop(outbound);
                inbound.close(link);
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
        upstream: &Upstream,
        attempt: u64,
        checkpoint: u64,
        transactions: &[crate::snapshot::SinkTransaction],
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
        upstream.send(&ToCoordinator::Committed {
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
