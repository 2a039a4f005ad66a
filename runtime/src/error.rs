//! The runtime's errors: [`Error`], and the errors of the layers below the engine that
//! convert into it. At the bottom of the layers, so that every module can return them.

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
    #[error("cluster ({peer}): {message}")]
    Cluster { peer: String, message: String },
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
