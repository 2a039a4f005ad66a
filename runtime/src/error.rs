//! The runtime's error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid job graph: {0}")]
    Graph(String),
    #[error("operator '{uid}': {message}")]
    State { uid: String, message: String },
    #[error("operator '{uid}' subtask {subtask} failed: {message}")]
    Task {
        uid: String,
        subtask: usize,
        message: String,
    },
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
    Snapshot(#[from] crate::snapshot::SnapshotError),
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
    #[error("cluster ({peer}): {message}")]
    Cluster { peer: String, message: String },
    /// A Kafka client failed; `what` names the brokers, topic or transaction concerned.
    #[error("Kafka {what}: {message}")]
    Kafka { what: String, message: String },
    /// A distributed job failed and its restart strategy gave up.
    #[error("the job failed after {restarts} restart(s): {cause}")]
    Failed { restarts: u32, cause: String },
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
