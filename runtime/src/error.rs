//! The runtime's errors: [`Error`], and the errors of the layers below the engine that
//! convert into it. At the bottom of the layers, so that every module can return them.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid job graph: {0}")]
    Graph(String),
    #[error("operator '{uid}': {source}")]
    State {
        uid: String,
        #[source]
        source: StateError,
    },
    /// `key`: the key a keyed operator was processing (a record's or a timer's).
    #[error("operator '{uid}' subtask {subtask} failed{}: {message}", key_suffix(.key.as_ref()))]
    Task {
        uid: String,
        subtask: usize,
        key: Option<FailedKey>,
        message: String,
    },
    /// The subtask stopped because a peer it exchanges records with did: a consequence of
    /// another subtask's failure, never a root cause.
    #[error("operator '{uid}' subtask {subtask} failed: {peer} (see its error)")]
    PeerStopped {
        uid: String,
        subtask: usize,
        peer: StoppedPeer,
    },
    /// Code running on `thread` panicked outside any operator's guard.
    #[error("{thread} panicked: {message}")]
    Panicked { thread: String, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Input { origin: String, message: String },
    #[error("job config: {0}")]
    Config(String),
    #[error("unknown job '{name}'; the bundled jobs are: {known}")]
    UnknownJob { name: String, known: String },
    #[error(transparent)]
    Manifest(#[from] sluice_crds::ManifestError),
    #[error("checkpointing: {0}")]
    Checkpoint(String),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("the job was cancelled")]
    Cancelled,
    #[error("control API: {0}")]
    Control(String),
    /// The network exchange with another process failed; `channel` is the logical channel
    /// concerned, when the failure is about one.
    #[error("exchange with {peer}{}: {message}", channel_suffix(*.channel))]
    Exchange {
        peer: String,
        channel: Option<u32>,
        message: String,
    },
    /// Between the coordinator and a worker: registration, deployment, a lost peer.
    #[error("TLS certificates, {}: {message}", path.display())]
    Tls { path: PathBuf, message: String },
    #[error("cluster ({peer}): {message}")]
    Cluster { peer: String, message: String },
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// A Kafka client failed; `what` names the brokers, topic or transaction concerned.
    #[error("object storage {uri}: {message}")]
    ObjectStore { uri: String, message: String },
    #[error("Kafka {what}: {message}")]
    Kafka { what: String, message: String },
    /// A distributed job failed and its restart strategy gave up.
    #[error("the job failed after {restarts} restart(s): {cause}")]
    Failed { restarts: u32, cause: String },
}

/// Which peer of a subtask stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoppedPeer {
    /// One it reads from, before it finished.
    Upstream,
    /// One it sends to.
    Downstream,
}

impl std::fmt::Display for StoppedPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoppedPeer::Upstream => "an upstream subtask stopped without finishing",
            StoppedPeer::Downstream => "a downstream subtask stopped",
        })
    }
}

fn key_suffix(key: Option<&FailedKey>) -> String {
    key.map(|k| format!(" at {k}")).unwrap_or_default()
}

/// The key a keyed operator failed on: how job code prints it, unless the job redacts keys,
/// and its key group (never secret: it is a hash bucket, and names the state to look at).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedKey {
    /// The key's `Debug` text, at most [`FailedKey::MAX_TEXT`] bytes; `None` when redacted.
    pub text: Option<String>,
    pub key_group: u32,
}

impl FailedKey {
    /// Longer keys are cut: an error message is no place for a whole document.
    pub const MAX_TEXT: usize = 200;

    pub fn new(key: &impl std::fmt::Debug, key_group: u32, redact: bool) -> Self {
        let text = (!redact).then(|| {
            let mut text = format!("{key:?}");
            if text.len() > Self::MAX_TEXT {
                let mut end = Self::MAX_TEXT;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                text.push('…');
            }
            text
        });
        FailedKey { text, key_group }
    }
}

impl std::fmt::Display for FailedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = sluice_crds::control::describe_key(self.text.as_deref(), self.key_group);
        f.write_str(&text)
    }
}

fn channel_suffix(channel: Option<u32>) -> String {
    channel
        .map(|c| format!(", channel {c}"))
        .unwrap_or_default()
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Keyed state and window contents: their backends, the canonical encoding snapshots hold
/// them in, and restoring them.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("RocksDB {op}: {source}")]
    Rocks {
        op: &'static str,
        #[source]
        source: rocksdb::Error,
    },
    /// `what`: state, a key.
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: bincode::Error,
    },
    #[error("cannot decode {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: bincode::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A database key not in the layout this store writes (`what`: state, window).
    #[error("malformed {0} key")]
    MalformedKey(&'static str),
    #[error("state '{0}' is registered twice in the same operator")]
    RegisteredTwice(String),
    #[error("too many states in one operator")]
    TooManyStates,
    #[error("key group {0} is not owned by this subtask")]
    NotOwned(u32),
    #[error("the snapshot has state '{0}', which this operator does not declare")]
    Undeclared(String),
    #[error("state '{name}' has schema version {snapshot} in the snapshot but {declared} here")]
    SchemaVersion {
        name: String,
        snapshot: u32,
        declared: u32,
    },
    #[error("state '{name}', key group {key_group}: {source}")]
    InState {
        name: String,
        key_group: u32,
        #[source]
        source: Box<StateError>,
    },
    #[error("key group {key_group}: {source}")]
    InKeyGroup {
        key_group: u32,
        #[source]
        source: Box<StateError>,
    },
    /// A RocksDB checkpoint made off the task thread failed (see `state::pin`).
    #[error("RocksDB checkpoint {0}")]
    Checkpoint(String),
    #[error("a RocksDB store is snapshotted by pinning it")]
    SnapshotByPin,
    #[error("malformed snapshot entries: {0}")]
    Malformed(String),
    #[error("an encoded key or value of {0} bytes is over the 4 GiB a snapshot holds")]
    TooLarge(usize),
    /// A read before the operator finished its restore (an operator that restores keyed
    /// state into RocksDB must end its restore with `finish_restore`).
    #[error("restored RocksDB state read before the restore was finished")]
    RestoreUnfinished,
    #[error("state without a backend")]
    NoBackend,
    /// A snapshot holds state of a kind (`what`) the operator restored from it has none of.
    #[error("the operator keeps no {0}")]
    NotKept(&'static str),
    #[error("an assignment covers 1..={max} key groups, not {len}")]
    AssignmentSize { len: usize, max: u32 },
    #[error(
        "key group {key_group} is assigned to subtask {owner}, beyond parallelism {parallelism}"
    )]
    OwnerBeyondParallelism {
        key_group: usize,
        owner: u32,
        parallelism: u32,
    },
}

impl StateError {
    pub(crate) fn encode(what: &'static str) -> impl FnOnce(bincode::Error) -> Self {
        move |source| StateError::Encode { what, source }
    }

    pub(crate) fn decode(what: &'static str) -> impl FnOnce(bincode::Error) -> Self {
        move |source| StateError::Decode { what, source }
    }

    pub(crate) fn rocks(op: &'static str) -> impl FnOnce(rocksdb::Error) -> Self {
        move |source| StateError::Rocks { op, source }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| StateError::Io { path, source }
    }
}

/// The workers of a distributed job did not all commit a complete snapshot's sink
/// transactions.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("{worker} lost before committing snapshot {checkpoint}")]
    Lost { worker: String, checkpoint: u64 },
    #[error("{worker}: committing snapshot {checkpoint}: {message}")]
    Failed {
        worker: String,
        checkpoint: u64,
        message: String,
    },
    #[error("{workers} worker(s) did not commit snapshot {checkpoint} within {timeout:?}")]
    Timeout {
        workers: usize,
        checkpoint: u64,
        timeout: std::time::Duration,
    },
    #[error("the attempt ended")]
    AttemptEnded,
    #[error("committing {object} of snapshot {checkpoint}: {message}")]
    Object {
        object: String,
        checkpoint: u64,
        message: String,
    },
}

/// A frame of the network exchange that cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("cannot encode a data batch: {0}")]
    EncodeBatch(#[source] bincode::Error),
    #[error("cannot decode a data batch: {0}")]
    DecodeBatch(#[source] bincode::Error),
    #[error("a {kind} frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{kind} frame payload of {len} bytes is too short")]
    TooShort { kind: &'static str, len: usize },
    #[error("idle frame holds {0}, expected 0 or 1")]
    IdleValue(u8),
    #[error("barrier frame has unknown snapshot kind {0}")]
    SnapshotKind(u8),
    #[error("a credit frame carries no message")]
    CreditMessage,
    #[error("{kind} frame after the end of the channel")]
    AfterEnd { kind: &'static str },
    #[error("data batch without credit ({buffered} batches already buffered)")]
    NoCredit { buffered: usize },
}

/// Checkpoint storage failed, or what it holds is not a complete, intact snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("checkpoint storage {uri}: {message}")]
    Uri { uri: String, message: String },
    #[error("checkpoint storage {path}: {}", causes(source))]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{path}: {message}")]
    Corrupt { path: String, message: String },
    #[error("no complete checkpoint in {uri}")]
    NoCheckpoint { uri: String },
    /// The snapshot key is missing, malformed, or not the one a file was written with.
    #[error("snapshot key '{id}': {message}")]
    Key { id: String, message: String },
    /// A local file of a snapshot part (a pinned RocksDB checkpoint) could not be read.
    #[error("{}: {source}", path.display())]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no checkpoint storage for RocksDB state")]
    NoStorage,
    /// An operator's part of a snapshot could not be encoded or uploaded.
    #[error("operator '{uid}': {source}")]
    Part {
        uid: String,
        #[source]
        source: Box<SnapshotError>,
    },
    #[error(transparent)]
    State(#[from] StateError),
    /// A part still refers to local state (`what`: encoded, uploaded) where it may not.
    #[error("operator '{uid}': state not {what}")]
    Unresolved { uid: String, what: &'static str },
}

/// What a panic said: its message when it has one.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// The errors below `error`, from the one it wraps down to the root, each as it describes
/// itself.
pub(crate) fn cause_chain(error: &dyn std::error::Error) -> Vec<String> {
    std::iter::successors(error.source(), |e| e.source())
        .map(|e| e.to_string())
        .collect()
}

/// An error with its causes: a store's own message often leaves out the one that says
/// what went wrong (a refused connection, the server's reply).
pub(crate) fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text = format!("{text}: {message}");
        }
        source = cause.source();
    }
    text
}
