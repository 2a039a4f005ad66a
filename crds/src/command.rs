//! The runtime's command line for running a job on a cluster and for its savepoint tools:
//! `sluice coordinator`, `sluice worker` and `sluice savepoint …`.
//!
//! The runtime parses these structs (they are its clap arguments) and the operator fills
//! them and writes them with `to_args`, so both sides spell every flag alike. A flag left
//! out (`None`, `false`) is not written, and the runtime uses its default: the defaults are
//! the `DEFAULT_*` constants and the enums' `Default`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Where a coordinator listens for workers when `--listen` is not given.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:6123";
pub const DEFAULT_WORKER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_RESTART_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const DEFAULT_RESTART_MAX_BACKOFF: Duration = Duration::from_secs(60);
pub const DEFAULT_RESTART_BACKOFF_MULTIPLIER: f64 = 2.0;
/// No jitter unless asked for: a lone coordinator has no herd of peers to spread out.
pub const DEFAULT_RESTART_BACKOFF_JITTER: f64 = 0.0;
pub const DEFAULT_RESTART_MAX_ATTEMPTS: u32 = 10;
pub const DEFAULT_RESTART_RESET_AFTER: Duration = Duration::from_secs(600);
pub const DEFAULT_RETAIN_CHECKPOINTS: usize = 3;
pub const DEFAULT_TOLERABLE_CHECKPOINT_FAILURES: u32 = 3;
pub const DEFAULT_SLOTS: u32 = 1;
/// Where a worker listens for records when `--data-addr` is not given: any free port.
pub const DEFAULT_DATA_ADDR: &str = "0.0.0.0:0";
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_COORDINATOR_LOSS_TIMEOUT: Duration = Duration::from_secs(300);

/// The commands of the contract, as subcommands of `sluice`.
// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Subcommand)]
pub enum Command {
    /// Coordinates the job of a StreamJob manifest across `sluice worker` processes.
    Coordinator(CoordinatorArgs),
    /// Runs subtasks of the job a `sluice coordinator` deploys.
    Worker(WorkerArgs),
    /// Savepoint tools.
    Savepoint {
        #[command(subcommand)]
        command: SavepointCommand,
    },
}

/// `sluice` with a [`Command`]: what [`Command::try_parse_args`] parses.
#[derive(Parser)]
#[command(name = "sluice")]
struct CommandLine {
    #[command(subcommand)]
    command: Command,
}

impl Command {
    /// The command line (after the program's name) that parses back into this command.
    pub fn to_args(&self) -> Vec<String> {
        match self {
            Command::Coordinator(args) => args.to_args(),
            Command::Worker(args) => args.to_args(),
            Command::Savepoint { command } => command.to_args(),
        }
    }

    /// Parses a command line without the program's name, as [`Command::to_args`] writes it.
    pub fn try_parse_args<I>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator,
        I::Item: Into<OsString>,
    {
        let line =
            std::iter::once(OsString::from("sluice")).chain(args.into_iter().map(Into::into));
        CommandLine::try_parse_from(line).map(|l| l.command)
    }
}

/// `sluice coordinator`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct CoordinatorArgs {
    /// The StreamJob manifest (YAML).
    pub manifest: PathBuf,
    /// Overrides spec.parallelism.
    #[arg(long)]
    pub parallelism: Option<u32>,
    /// Where workers connect (`host:port`; port 0 takes a free port, printed once listening)
    /// [default: 0.0.0.0:6123].
    #[arg(long)]
    pub listen: Option<String>,
    /// A worker silent for this long is taken for dead and the job restarts without it
    /// [default: 10s].
    #[arg(long)]
    pub worker_timeout: Option<ArgDuration>,
    /// What SIGTERM (and Ctrl-C) does: stop the job with a savepoint, or cancel it so that
    /// the next start resumes from the latest checkpoint. Under a supervisor that restarts
    /// the coordinator (a Kubernetes Deployment), `cancel` is the safe choice: output
    /// committed by a savepoint the supervisor never learns of would be produced again; the
    /// workers then stay, to register with the next coordinator [default: savepoint].
    #[arg(long, value_enum)]
    pub on_terminate: Option<OnTerminate>,
    /// Keep serving the control API after the job ends, until SIGTERM, instead of exiting:
    /// a supervisor reads how the job ended (and where its savepoint went) before it removes
    /// the process, and a container that exited would only be started again. The workers are
    /// not told to exit either.
    #[arg(long)]
    pub wait_for_termination: bool,
    /// A directory holding the job's certificates (`ca.crt`, `tls.crt`, `tls.key`; see
    /// `sluice_crds::tls`): connections between the job's processes then use mutual TLS,
    /// accepting only peers with a certificate of the job's CA, and the control API serves
    /// HTTPS with the same certificate. Without it they are plain TCP and HTTP.
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    #[command(flatten)]
    pub restart: RestartArgs,
    #[command(flatten)]
    pub snapshots: SnapshotArgs,
    #[command(flatten)]
    pub control: ControlArgs,
}

impl CoordinatorArgs {
    /// `coordinator` and its flags, in the order the operator has always written them: a
    /// different command line would roll every running job's pods on an operator upgrade.
    pub fn to_args(&self) -> Vec<String> {
        let CoordinatorArgs {
            manifest,
            parallelism,
            listen,
            worker_timeout,
            on_terminate,
            wait_for_termination,
            tls_dir,
            restart,
            snapshots,
            control,
        } = self;
        let SnapshotArgs {
            checkpoint_interval,
            checkpoint_dir,
            retain_checkpoints,
            tolerable_checkpoint_failures,
            restore,
            initial_snapshot,
            allow_non_restored_state,
            savepoint_dir,
            state_backend,
            state_dir,
            state_memory_mib,
        } = snapshots;
        let ControlArgs {
            control_addr,
            control_token_file,
            metrics_addr,
        } = control;
        let mut line = Line::new(["coordinator".to_string(), manifest.display().to_string()]);
        line.value("listen", listen);
        line.value("control-addr", control_addr);
        line.value("on-terminate", &on_terminate.map(value_name));
        line.switch("wait-for-termination", *wait_for_termination);
        line.value("parallelism", parallelism);
        line.value("state-dir", &state_dir.as_ref().map(|d| d.display()));
        line.value("checkpoint-dir", checkpoint_dir);
        line.value("checkpoint-interval", checkpoint_interval);
        line.value("retain-checkpoints", retain_checkpoints);
        line.value("restore", restore);
        line.value("initial-snapshot", initial_snapshot);
        line.value("savepoint-dir", savepoint_dir);
        line.switch("allow-non-restored-state", *allow_non_restored_state);
        restart.write(&mut line);
        line.value("worker-timeout", worker_timeout);
        line.value(
            "tolerable-checkpoint-failures",
            tolerable_checkpoint_failures,
        );
        line.value("state-backend", &state_backend.map(value_name));
        line.value("state-memory-mib", state_memory_mib);
        line.value(
            "control-token-file",
            &control_token_file.as_ref().map(|f| f.display()),
        );
        line.value("metrics-addr", metrics_addr);
        // Last, as the newest flag: lines written before it keep their order.
        line.value("tls-dir", &tls_dir.as_ref().map(|d| d.display()));
        line.0
    }
}

/// What a coordinator does on SIGTERM (and Ctrl-C).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OnTerminate {
    /// Stop the job with a savepoint.
    #[default]
    Savepoint,
    /// Cancel the job: the next start resumes from the latest checkpoint.
    Cancel,
}

/// How a coordinator restarts a failed job.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct RestartArgs {
    /// Wait before the first restart after a failure; grows by the multiplier with each
    /// failure in a row [default: 1s].
    #[arg(long)]
    pub restart_initial_backoff: Option<ArgDuration>,
    /// The longest wait between restarts [default: 60s].
    #[arg(long)]
    pub restart_max_backoff: Option<ArgDuration>,
    /// What each failure in a row multiplies the wait by; at least 1 [default: 2].
    #[arg(long, value_parser = parse_multiplier)]
    pub restart_backoff_multiplier: Option<f64>,
    /// Moves each wait by a random amount of up to this fraction of itself, either way
    /// (0 to 1), so that restarts of many jobs do not fall in step [default: 0].
    #[arg(long, value_parser = parse_jitter)]
    pub restart_backoff_jitter: Option<f64>,
    /// Restarts in a row before the job fails for good [default: 10].
    #[arg(long)]
    pub restart_max_attempts: Option<u32>,
    /// A run healthy for this long starts the count of restarts in a row afresh
    /// [default: 10m].
    #[arg(long)]
    pub restart_reset_after: Option<ArgDuration>,
}

impl RestartArgs {
    fn write(&self, line: &mut Line) {
        let RestartArgs {
            restart_initial_backoff,
            restart_max_backoff,
            restart_backoff_multiplier,
            restart_backoff_jitter,
            restart_max_attempts,
            restart_reset_after,
        } = self;
        line.value("restart-initial-backoff", restart_initial_backoff);
        line.value("restart-max-backoff", restart_max_backoff);
        line.value("restart-backoff-multiplier", restart_backoff_multiplier);
        line.value("restart-backoff-jitter", restart_backoff_jitter);
        line.value("restart-max-attempts", restart_max_attempts);
        line.value("restart-reset-after", restart_reset_after);
    }
}

/// `--restart-backoff-multiplier`: a finite number of at least 1 (a smaller one would
/// shrink the wait as failures pile up).
fn parse_multiplier(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a number"))?;
    if value.is_finite() && value >= 1.0 {
        Ok(value)
    } else {
        Err(format!("'{text}': must be a finite number of at least 1"))
    }
}

/// `--restart-backoff-jitter`: a fraction from 0 to 1.
fn parse_jitter(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a number"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("'{text}': must be a fraction from 0 to 1"))
    }
}

/// Checkpoints, savepoints and state: shared by `sluice run` and `sluice coordinator`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct SnapshotArgs {
    /// Time between checkpoints (`500ms`, `10s`, `2m`); enables checkpointing.
    #[arg(long)]
    pub checkpoint_interval: Option<ArgDuration>,
    /// Checkpoint storage (`file:///…`, `s3://bucket/prefix` or a directory)
    /// [default: checkpoints/<job>].
    #[arg(long)]
    pub checkpoint_dir: Option<String>,
    /// Complete checkpoints kept [default: 3].
    #[arg(long)]
    pub retain_checkpoints: Option<usize>,
    /// Failed checkpoints in a row tolerated before the job fails [default: 3].
    #[arg(long)]
    pub tolerable_checkpoint_failures: Option<u32>,
    /// Starts from `latest` (the newest complete checkpoint in the checkpoint storage), from
    /// a checkpoint or savepoint directory (a path, `file://` or `s3://` URI), or from the
    /// newest checkpoint of other checkpoint storage (its root directory).
    #[arg(long)]
    pub restore: Option<RestoreFrom>,
    /// With `--restore latest`: the checkpoint or savepoint to start from while the checkpoint
    /// storage holds no checkpoint yet. A supervisor passes the same arguments to every
    /// restart, and only the first start uses this snapshot.
    #[arg(long)]
    pub initial_snapshot: Option<String>,
    /// Restores even when state of the snapshot maps to no operator of the job (it is lost).
    #[arg(long)]
    pub allow_non_restored_state: bool,
    /// Where Ctrl-C (or SIGTERM) writes the savepoint it stops with (`file:///…`,
    /// `s3://bucket/prefix` or a directory) [default: savepoints/<job>].
    #[arg(long)]
    pub savepoint_dir: Option<String>,
    /// Where keyed state lives: `rocksdb` (state beyond memory, bounded memory use) or
    /// `heap` (fastest, bounded by memory) [default: rocksdb].
    #[arg(long, value_enum)]
    pub state_backend: Option<StateBackendArg>,
    /// RocksDB working directory (local disk; not durable, snapshots are)
    /// [default: a directory under the system's temporary directory].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// RocksDB memory budget in MiB (block cache and write buffers of all operators)
    /// [default: 40 % of the container's memory limit, or 512].
    #[arg(long)]
    pub state_memory_mib: Option<usize>,
}

/// Where a job starts from (`--restore`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreFrom {
    /// `latest`: the newest complete checkpoint in the job's checkpoint storage.
    Latest,
    /// A checkpoint or savepoint directory, or other checkpoint storage's root.
    Snapshot(String),
}

impl FromStr for RestoreFrom {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "latest" => RestoreFrom::Latest,
            location => RestoreFrom::Snapshot(location.to_string()),
        })
    }
}

impl fmt::Display for RestoreFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreFrom::Latest => f.write_str("latest"),
            RestoreFrom::Snapshot(location) => f.write_str(location),
        }
    }
}

/// Where keyed state lives (`--state-backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum StateBackendArg {
    #[default]
    Rocksdb,
    Heap,
}

/// The control API.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct ControlArgs {
    /// Serves the control API (HTTP + JSON, `docs/control-api.md`) and the job page (`/`) at
    /// `host:port`; port 0 takes a free port. The address is printed once listening.
    #[arg(long, value_name = "HOST:PORT")]
    pub control_addr: Option<String>,
    /// A file holding the API's bearer token [default: the SLUICE_CONTROL_TOKEN
    /// environment variable]. Without a token the API listens on loopback only.
    #[arg(long, value_name = "FILE")]
    pub control_token_file: Option<PathBuf>,
    /// Serves the job's Prometheus metrics (`/metrics`), its status (`GET /v1/job`) and the
    /// job page (`/`) at `host:port`, read-only and without a token: a scraper or a browser
    /// then holds no credential that could stop the job. They name jobs and operators,
    /// never a record or a secret.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
}

/// `sluice worker`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct WorkerArgs {
    /// The coordinator's address (`host:port`) [default: the SLUICE_COORDINATOR
    /// environment variable].
    #[arg(long)]
    pub coordinator: Option<String>,
    /// Subtasks of each operator this worker runs at most (one slot holds subtask `s` of
    /// every operator) [default: 1].
    #[arg(long)]
    pub slots: Option<u32>,
    /// Names the worker in the coordinator's status [default: POD_NAME, or worker-<pid>].
    #[arg(long)]
    pub name: Option<String>,
    /// Where other workers connect to send records (`host:port`; port 0 takes a free port)
    /// [default: 0.0.0.0:0].
    #[arg(long)]
    pub data_addr: Option<String>,
    /// The host other workers reach this one at [default: the local address of the
    /// connection to the coordinator].
    #[arg(long)]
    pub advertise_host: Option<String>,
    /// RocksDB working directory [default: a directory under the system's temporary
    /// directory].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// RocksDB memory budget in MiB [default: 40 % of the container's memory limit, or 512].
    #[arg(long)]
    pub state_memory_mib: Option<usize>,
    /// How long to keep trying to reach the coordinator at start [default: 60s].
    #[arg(long)]
    pub connect_timeout: Option<ArgDuration>,
    /// How long a worker that lost its coordinator keeps trying to register with the next
    /// one at the same address before it exits with an error [default: 5m].
    #[arg(long)]
    pub coordinator_loss_timeout: Option<ArgDuration>,
    /// A directory holding the job's certificates (`ca.crt`, `tls.crt`, `tls.key`; see
    /// `sluice_crds::tls`): connections between the job's processes then use mutual TLS,
    /// accepting only peers with a certificate of the job's CA
    /// (the coordinator and the other workers). Without it they are plain TCP.
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
}

impl WorkerArgs {
    /// `worker` and its flags, in the order the operator has always written them.
    pub fn to_args(&self) -> Vec<String> {
        let WorkerArgs {
            coordinator,
            slots,
            name,
            data_addr,
            advertise_host,
            state_dir,
            state_memory_mib,
            connect_timeout,
            coordinator_loss_timeout,
            tls_dir,
        } = self;
        let mut line = Line::new(["worker".to_string()]);
        line.value("coordinator", coordinator);
        line.value("slots", slots);
        line.value("data-addr", data_addr);
        line.value("state-dir", &state_dir.as_ref().map(|d| d.display()));
        line.value("connect-timeout", connect_timeout);
        line.value("name", name);
        line.value("advertise-host", advertise_host);
        line.value("state-memory-mib", state_memory_mib);
        line.value("coordinator-loss-timeout", coordinator_loss_timeout);
        line.value("tls-dir", &tls_dir.as_ref().map(|d| d.display()));
        line.0
    }
}

/// `sluice savepoint …`.
#[derive(Clone, Debug, PartialEq, Subcommand)]
pub enum SavepointCommand {
    /// Checks whether a job can restore a snapshot: lists the state that is missing, new or
    /// incompatible; exits non-zero when restoring would fail.
    Check(SavepointCheckArgs),
    /// Deletes savepoints (manifest first, so a deletion cut short leaves nothing that
    /// restores); one already gone is no error. Checkpoints are left to the job's retention.
    Delete(SavepointDeleteArgs),
    /// Prints what a checkpoint or savepoint holds.
    Inspect(SavepointInspectArgs),
}

impl SavepointCommand {
    /// The command line (after the program's name) that parses back into this command.
    pub fn to_args(&self) -> Vec<String> {
        match self {
            SavepointCommand::Check(args) => args.to_args(),
            SavepointCommand::Delete(args) => args.to_args(),
            SavepointCommand::Inspect(args) => args.to_args(),
        }
    }
}

/// `sluice savepoint check`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct SavepointCheckArgs {
    /// A checkpoint or savepoint directory (a path, `file://` or `s3://` URI).
    pub snapshot: String,
    /// The job (as `sluice jobs` lists it).
    #[arg(long)]
    pub job: String,
    /// A StreamJob manifest supplying the job's config and max parallelism.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    #[arg(long)]
    pub allow_non_restored_state: bool,
}

impl SavepointCheckArgs {
    /// `savepoint check` and its arguments.
    pub fn to_args(&self) -> Vec<String> {
        let SavepointCheckArgs {
            snapshot,
            job,
            manifest,
            allow_non_restored_state,
        } = self;
        let mut line = Line::new(["savepoint", "check", snapshot].map(String::from));
        line.value("job", &Some(job));
        line.value("manifest", &manifest.as_ref().map(|m| m.display()));
        line.switch("allow-non-restored-state", *allow_non_restored_state);
        line.0
    }
}

/// `sluice savepoint delete`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct SavepointDeleteArgs {
    /// Savepoint directories (`…/sp-<id>`, as paths, `file://` or `s3://` URIs).
    #[arg(required = true)]
    pub savepoints: Vec<String>,
}

impl SavepointDeleteArgs {
    /// `savepoint delete` and the savepoints.
    pub fn to_args(&self) -> Vec<String> {
        ["savepoint", "delete"]
            .into_iter()
            .map(String::from)
            .chain(self.savepoints.iter().cloned())
            .collect()
    }
}

/// `sluice savepoint inspect`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct SavepointInspectArgs {
    /// A checkpoint or savepoint directory (a path, `file://` or `s3://` URI).
    pub snapshot: String,
}

impl SavepointInspectArgs {
    /// `savepoint inspect` and the snapshot.
    pub fn to_args(&self) -> Vec<String> {
        ["savepoint", "inspect", &self.snapshot]
            .map(String::from)
            .to_vec()
    }
}

/// A command line being written.
struct Line(Vec<String>);

impl Line {
    fn new(words: impl IntoIterator<Item = String>) -> Self {
        Line(words.into_iter().collect())
    }

    /// `--flag=value`: one word, so that a value starting with `-` stays a value.
    fn value(&mut self, flag: &str, value: &Option<impl fmt::Display>) {
        if let Some(value) = value {
            self.0.push(format!("--{flag}={value}"));
        }
    }

    fn switch(&mut self, flag: &str, on: bool) {
        if on {
            self.0.push(format!("--{flag}"));
        }
    }
}

/// The name a value of a `ValueEnum` has on the command line.
fn value_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// A duration on the command line: `500ms`, `10s`, `2m`, `1h`, `1.5s`; a bare number is
/// seconds. The text is kept as written, so that writing it back yields the same text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgDuration {
    text: String,
    duration: Duration,
}

impl ArgDuration {
    /// Whole milliseconds, written `<n>ms`.
    pub fn from_millis(millis: u64) -> Self {
        Self {
            text: format!("{millis}ms"),
            duration: Duration::from_millis(millis),
        }
    }

    /// Whole seconds, written `<n>s`.
    pub fn from_secs(secs: u64) -> Self {
        Self {
            text: format!("{secs}s"),
            duration: Duration::from_secs(secs),
        }
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A duration argument that is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArgDurationError {
    #[error("'{0}' is not a duration like 500ms, 10s or 2m")]
    NotADuration(String),
    #[error("'{text}': unknown unit '{unit}' (ms, s, m, h)")]
    UnknownUnit { text: String, unit: String },
    #[error("'{text}': {reason}")]
    OutOfRange { text: String, reason: String },
}

impl FromStr for ArgDuration {
    type Err = ArgDurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let t = text.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(ArgDurationError::NotADuration(text.to_string()));
        }
        let unit_nanos: u128 = match unit {
            "ms" => 1_000_000,
            "" | "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(ArgDurationError::UnknownUnit {
                    text: text.to_string(),
                    unit: unit.to_string(),
                })
            }
        };
        let out_of_range = || ArgDurationError::OutOfRange {
            text: text.to_string(),
            reason: "too long".into(),
        };
        // Decimal arithmetic, not floating point: `0.1s` is exactly 100 ms. Digits below a
        // nanosecond of the largest unit do not count.
        let fraction = &fraction[..fraction.len().min(18)];
        let digits: u128 = format!("{whole}{fraction}")
            .parse()
            .map_err(|_| out_of_range())?;
        let nanos = digits.checked_mul(unit_nanos).ok_or_else(out_of_range)?
            / 10u128.pow(fraction.len() as u32);
        let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| out_of_range())?;
        let duration = Duration::new(secs, (nanos % 1_000_000_000) as u32);
        Ok(Self {
            text: t.to_string(),
            duration,
        })
    }
}

impl fmt::Display for ArgDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duration(text: &str) -> ArgDuration {
        text.parse().unwrap()
    }

    fn round_trip(command: Command) {
        let args = command.to_args();
        let parsed = Command::try_parse_args(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(parsed, command, "{args:?}");
    }

    #[test]
    fn durations_parse_with_units_and_keep_their_text() {
        let d = |text: &str| duration(text).duration();
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("10s"), Duration::from_secs(10));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        assert_eq!(d("2m"), Duration::from_secs(120));
        assert_eq!(d("1h"), Duration::from_secs(3600));
        assert_eq!(d("3"), Duration::from_secs(3));
        assert_eq!(d("0.1s"), Duration::from_millis(100));
        assert_eq!(d(".5m"), Duration::from_secs(30));
        assert_eq!(d("5."), Duration::from_secs(5));
        assert_eq!(d("1234567ms"), Duration::from_millis(1_234_567));
        for bad in ["", ".", "1.2.3s", "-5s", "ms"] {
            assert!(bad.parse::<ArgDuration>().is_err(), "{bad:?}");
        }
        assert_eq!(duration(" 300s ").to_string(), "300s");
        assert_eq!(ArgDuration::from_millis(2000), duration("2000ms"));
        assert_eq!(ArgDuration::from_secs(300), duration("300s"));
        assert_eq!(
            "5d".parse::<ArgDuration>().unwrap_err().to_string(),
            "'5d': unknown unit 'd' (ms, s, m, h)"
        );
        assert_eq!(
            "soon".parse::<ArgDuration>().unwrap_err().to_string(),
            "'soon' is not a duration like 500ms, 10s or 2m"
        );
    }

    #[test]
    fn every_field_set_survives_writing_and_parsing() {
        round_trip(Command::Coordinator(CoordinatorArgs {
            manifest: "/etc/sluice/job.yaml".into(),
            parallelism: Some(5),
            listen: Some("0.0.0.0:6123".into()),
            worker_timeout: Some(duration("1.5s")),
            on_terminate: Some(OnTerminate::Cancel),
            wait_for_termination: true,
            tls_dir: Some("/etc/sluice-tls".into()),
            restart: RestartArgs {
                restart_initial_backoff: Some(ArgDuration::from_millis(1500)),
                restart_max_backoff: Some(duration("2m")),
                restart_backoff_multiplier: Some(1.5),
                restart_backoff_jitter: Some(0.25),
                restart_max_attempts: Some(u32::MAX),
                restart_reset_after: Some(duration("1h")),
            },
            snapshots: SnapshotArgs {
                checkpoint_interval: Some(duration("3")),
                checkpoint_dir: Some("s3://bucket/ck/ns/job/run-1".into()),
                retain_checkpoints: Some(7),
                tolerable_checkpoint_failures: Some(0),
                restore: Some(RestoreFrom::Latest),
                initial_snapshot: Some("file:///data/sp/sp-0000000001".into()),
                allow_non_restored_state: true,
                savepoint_dir: Some("s3://bucket/sp".into()),
                state_backend: Some(StateBackendArg::Heap),
                state_dir: Some("/var/lib/sluice/state".into()),
                state_memory_mib: Some(256),
            },
            control: ControlArgs {
                control_addr: Some("0.0.0.0:8081".into()),
                control_token_file: Some("/var/run/token".into()),
                metrics_addr: Some("0.0.0.0:9249".into()),
            },
        }));
        round_trip(Command::Coordinator(CoordinatorArgs {
            manifest: "job.yaml".into(),
            on_terminate: Some(OnTerminate::Savepoint),
            snapshots: SnapshotArgs {
                restore: Some(RestoreFrom::Snapshot("-odd/sp-0000000002".into())),
                state_backend: Some(StateBackendArg::Rocksdb),
                ..SnapshotArgs::default()
            },
            ..CoordinatorArgs::default()
        }));
        round_trip(Command::Worker(WorkerArgs {
            coordinator: Some("q5-coordinator:6123".into()),
            slots: Some(2),
            name: Some("q5-worker-0".into()),
            data_addr: Some("0.0.0.0:6124".into()),
            advertise_host: Some("10.0.0.7".into()),
            state_dir: Some("/var/lib/sluice/state".into()),
            state_memory_mib: Some(1024),
            connect_timeout: Some(ArgDuration::from_secs(300)),
            coordinator_loss_timeout: Some(duration("10m")),
            tls_dir: Some("/etc/sluice-tls".into()),
        }));
        round_trip(Command::Savepoint {
            command: SavepointCommand::Check(SavepointCheckArgs {
                snapshot: "file:///data/sp/sp-0000000003".into(),
                job: "nexmark-q5".into(),
                manifest: Some("/etc/sluice/job.yaml".into()),
                allow_non_restored_state: true,
            }),
        });
        round_trip(Command::Savepoint {
            command: SavepointCommand::Delete(SavepointDeleteArgs {
                savepoints: vec!["s3://b/sp/sp-0000000001".into(), "/data/sp-2".into()],
            }),
        });
        round_trip(Command::Savepoint {
            command: SavepointCommand::Inspect(SavepointInspectArgs {
                snapshot: "/data/ck/chk-0000000009".into(),
            }),
        });
    }

    #[test]
    fn defaults_survive_writing_and_parsing_as_no_flags() {
        let coordinator = CoordinatorArgs {
            manifest: "job.yaml".into(),
            ..CoordinatorArgs::default()
        };
        assert_eq!(coordinator.to_args(), ["coordinator", "job.yaml"]);
        round_trip(Command::Coordinator(coordinator));
        assert_eq!(WorkerArgs::default().to_args(), ["worker"]);
        round_trip(Command::Worker(WorkerArgs::default()));
        round_trip(Command::Savepoint {
            command: SavepointCommand::Check(SavepointCheckArgs {
                snapshot: "sp-1".into(),
                job: "j".into(),
                ..SavepointCheckArgs::default()
            }),
        });
        round_trip(Command::Savepoint {
            command: SavepointCommand::Inspect(SavepointInspectArgs::default()),
        });
    }

    #[test]
    fn flags_are_written_as_the_runtime_documents_them() {
        let args = CoordinatorArgs {
            manifest: "/etc/sluice/job.yaml".into(),
            listen: Some("0.0.0.0:6123".into()),
            on_terminate: Some(OnTerminate::Cancel),
            wait_for_termination: true,
            snapshots: SnapshotArgs {
                checkpoint_interval: Some(ArgDuration::from_millis(2000)),
                restore: Some(RestoreFrom::Latest),
                ..SnapshotArgs::default()
            },
            ..CoordinatorArgs::default()
        };
        assert_eq!(
            args.to_args(),
            [
                "coordinator",
                "/etc/sluice/job.yaml",
                "--listen=0.0.0.0:6123",
                "--on-terminate=cancel",
                "--wait-for-termination",
                "--checkpoint-interval=2000ms",
                "--restore=latest",
            ]
        );
    }

    #[test]
    fn the_runtimes_spellings_parse() {
        let parsed = Command::try_parse_args([
            "coordinator",
            "job.yaml",
            "--restore",
            "latest",
            "--checkpoint-dir",
            "/tmp/ck",
            "--state-backend",
            "heap",
        ])
        .unwrap();
        let Command::Coordinator(args) = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!(args.snapshots.restore, Some(RestoreFrom::Latest));
        assert_eq!(args.snapshots.checkpoint_dir.as_deref(), Some("/tmp/ck"));
        assert_eq!(args.snapshots.state_backend, Some(StateBackendArg::Heap));
        assert!(Command::try_parse_args(["worker", "--connect-timeout", "5d"]).is_err());
        assert!(Command::try_parse_args(["savepoint", "delete"]).is_err());
    }

    #[test]
    fn a_multiplier_below_1_or_a_jitter_outside_0_to_1_is_refused_naming_the_flag() {
        let refused = |flag: &str, value: &str| {
            let arg = format!("--{flag}={value}");
            let error = Command::try_parse_args(["coordinator", "job.yaml", &arg])
                .expect_err(&arg)
                .to_string();
            assert!(error.contains(&format!("--{flag}")), "{arg}: {error}");
            error
        };
        for value in ["-2", "NaN", "inf", "0.5", "two"] {
            refused("restart-backoff-multiplier", value);
        }
        for value in ["-0.1", "1.5", "NaN", "lots"] {
            refused("restart-backoff-jitter", value);
        }
        assert!(refused("restart-backoff-jitter", "1.5").contains("from 0 to 1"));
        let parsed = Command::try_parse_args([
            "coordinator",
            "job.yaml",
            "--restart-backoff-multiplier",
            "1",
            "--restart-backoff-jitter",
            "1",
        ])
        .unwrap();
        let Command::Coordinator(args) = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!(args.restart.restart_backoff_multiplier, Some(1.0));
        assert_eq!(args.restart.restart_backoff_jitter, Some(1.0));
    }
}
