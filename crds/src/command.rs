//! The runtime's command line as the operator writes it: `sluice coordinator`, `sluice
//! worker`, `sluice savepoint check` and `sluice savepoint delete`, each a struct the
//! operator fills and turns into container arguments with `to_args()`.
//!
//! The runtime parses these arguments with its own clap definitions, which also carry its
//! help text, value parsers and the options the operator never sets (and share options with
//! `sluice run`). Keeping clap out of this crate keeps it small for the operator; what keeps
//! the two from drifting is a test of the runtime (`runtime/src/cli`) that parses
//! `to_args()` of every struct here with the real parser and checks each field comes back
//! with the same value.
//!
//! An option left `None` is not written, and the runtime's default applies. The arguments
//! come out in a fixed order: a pod template whose arguments changed would restart the pods
//! of every running job when a new operator applies it.

use std::fmt;
use std::time::Duration;

/// A duration as written on the command line: whole milliseconds or whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgDuration {
    Millis(u64),
    Seconds(u64),
}

impl ArgDuration {
    /// Whole milliseconds of `d` (sub-millisecond parts dropped).
    pub fn millis_of(d: Duration) -> Self {
        ArgDuration::Millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn to_std(self) -> Duration {
        match self {
            ArgDuration::Millis(ms) => Duration::from_millis(ms),
            ArgDuration::Seconds(s) => Duration::from_secs(s),
        }
    }
}

impl fmt::Display for ArgDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgDuration::Millis(ms) => write!(f, "{ms}ms"),
            ArgDuration::Seconds(s) => write!(f, "{s}s"),
        }
    }
}

/// What a coordinator does on SIGTERM (`--on-terminate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnTerminate {
    /// Stop the job with a savepoint.
    Savepoint,
    /// Cancel: the next start resumes from the latest checkpoint.
    Cancel,
}

impl OnTerminate {
    pub fn as_str(self) -> &'static str {
        match self {
            OnTerminate::Savepoint => "savepoint",
            OnTerminate::Cancel => "cancel",
        }
    }
}

/// Where a run starts from (`--restore`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restore {
    /// The newest complete checkpoint of the run's checkpoint storage (`latest`), else
    /// `--initial-snapshot`.
    Latest,
    /// A checkpoint or savepoint directory, or the root of other checkpoint storage.
    From(String),
}

impl Restore {
    fn as_arg(&self) -> &str {
        match self {
            Restore::Latest => "latest",
            Restore::From(location) => location,
        }
    }
}

/// `sluice coordinator <manifest> …`: coordinates the job of a StreamJob manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoordinatorArgs {
    /// The StreamJob manifest's path in the container.
    pub manifest: String,
    /// Where workers connect (`host:port`).
    pub listen: Option<String>,
    /// Where the control API listens (`host:port`).
    pub control_addr: Option<String>,
    pub on_terminate: Option<OnTerminate>,
    /// Keep serving the control API after the job ended, until SIGTERM.
    pub wait_for_termination: bool,
    pub parallelism: Option<u32>,
    /// RocksDB working directory.
    pub state_dir: Option<String>,
    /// Checkpoint storage (URI).
    pub checkpoint_dir: Option<String>,
    pub checkpoint_interval: Option<ArgDuration>,
    /// Completed checkpoints kept.
    pub retain_checkpoints: Option<u32>,
    pub restore: Option<Restore>,
    /// With [`Restore::Latest`]: where to start while the checkpoint storage is empty.
    pub initial_snapshot: Option<String>,
    /// Savepoint storage (URI).
    pub savepoint_dir: Option<String>,
    pub allow_non_restored_state: bool,
    pub restart_initial_backoff: Option<ArgDuration>,
    pub restart_max_backoff: Option<ArgDuration>,
    /// Restarts in a row before the job fails for good.
    pub restart_max_attempts: Option<u32>,
    pub restart_reset_after: Option<ArgDuration>,
}

impl CoordinatorArgs {
    pub fn to_args(&self) -> Vec<String> {
        let mut a = Args(vec!["coordinator".into(), self.manifest.clone()]);
        a.opt("listen", self.listen.as_ref());
        a.opt("control-addr", self.control_addr.as_ref());
        a.opt("on-terminate", self.on_terminate.map(OnTerminate::as_str));
        a.flag("wait-for-termination", self.wait_for_termination);
        a.opt("parallelism", self.parallelism);
        a.opt("state-dir", self.state_dir.as_ref());
        a.opt("checkpoint-dir", self.checkpoint_dir.as_ref());
        a.opt("checkpoint-interval", self.checkpoint_interval);
        a.opt("retain-checkpoints", self.retain_checkpoints);
        a.opt("restore", self.restore.as_ref().map(Restore::as_arg));
        a.opt("initial-snapshot", self.initial_snapshot.as_ref());
        a.opt("savepoint-dir", self.savepoint_dir.as_ref());
        a.flag("allow-non-restored-state", self.allow_non_restored_state);
        a.opt("restart-initial-backoff", self.restart_initial_backoff);
        a.opt("restart-max-backoff", self.restart_max_backoff);
        a.opt("restart-max-attempts", self.restart_max_attempts);
        a.opt("restart-reset-after", self.restart_reset_after);
        a.0
    }
}

/// `sluice worker …`: runs subtasks of the job a coordinator deploys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerArgs {
    /// The coordinator's address (`host:port`).
    pub coordinator: Option<String>,
    /// Subtasks of each operator the worker runs at most.
    pub slots: Option<u32>,
    /// Where other workers connect to send records (`host:port`).
    pub data_addr: Option<String>,
    /// RocksDB working directory.
    pub state_dir: Option<String>,
    /// How long to keep trying to reach the coordinator.
    pub connect_timeout: Option<ArgDuration>,
}

impl WorkerArgs {
    pub fn to_args(&self) -> Vec<String> {
        let mut a = Args(vec!["worker".into()]);
        a.opt("coordinator", self.coordinator.as_ref());
        a.opt("slots", self.slots);
        a.opt("data-addr", self.data_addr.as_ref());
        a.opt("state-dir", self.state_dir.as_ref());
        a.opt("connect-timeout", self.connect_timeout);
        a.0
    }
}

/// `sluice savepoint check <snapshot> --job …`: whether a job can restore a snapshot; exits
/// non-zero when it cannot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavepointCheckArgs {
    /// A checkpoint or savepoint directory (a path, `file://` or `s3://` URI).
    pub snapshot: String,
    /// The job, as `sluice jobs` lists it.
    pub job: String,
    /// A StreamJob manifest supplying the job's config and max parallelism.
    pub manifest: Option<String>,
    pub allow_non_restored_state: bool,
}

impl SavepointCheckArgs {
    pub fn to_args(&self) -> Vec<String> {
        let mut a = Args(vec![
            "savepoint".into(),
            "check".into(),
            self.snapshot.clone(),
        ]);
        a.opt("job", Some(&self.job));
        a.opt("manifest", self.manifest.as_ref());
        a.flag("allow-non-restored-state", self.allow_non_restored_state);
        a.0
    }
}

/// `sluice savepoint delete <savepoint>…`: deletes savepoints; one already gone is no error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavepointDeleteArgs {
    /// Savepoint directories (`…/sp-<id>`); at least one.
    pub savepoints: Vec<String>,
}

impl SavepointDeleteArgs {
    pub fn to_args(&self) -> Vec<String> {
        ["savepoint", "delete"]
            .into_iter()
            .map(String::from)
            .chain(self.savepoints.iter().cloned())
            .collect()
    }
}

/// Arguments being written: options as `--name=value`, so that a value starting with `-`
/// is never taken for an option.
struct Args(Vec<String>);

impl Args {
    fn opt(&mut self, name: &str, value: Option<impl fmt::Display>) {
        if let Some(v) = value {
            self.0.push(format!("--{name}={v}"));
        }
    }

    fn flag(&mut self, name: &str, set: bool) {
        if set {
            self.0.push(format!("--{name}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_written_in_order_and_absent_ones_left_out() {
        let args = CoordinatorArgs {
            manifest: "/etc/sluice/job.yaml".into(),
            on_terminate: Some(OnTerminate::Cancel),
            parallelism: Some(4),
            checkpoint_interval: Some(ArgDuration::millis_of(Duration::from_secs(2))),
            restore: Some(Restore::Latest),
            allow_non_restored_state: true,
            restart_max_attempts: Some(u32::MAX),
            ..CoordinatorArgs::default()
        };
        assert_eq!(
            args.to_args(),
            [
                "coordinator",
                "/etc/sluice/job.yaml",
                "--on-terminate=cancel",
                "--parallelism=4",
                "--checkpoint-interval=2000ms",
                "--restore=latest",
                "--allow-non-restored-state",
                "--restart-max-attempts=4294967295",
            ]
        );
        let worker = WorkerArgs {
            connect_timeout: Some(ArgDuration::Seconds(300)),
            ..WorkerArgs::default()
        };
        assert_eq!(worker.to_args(), ["worker", "--connect-timeout=300s"]);
    }
}
