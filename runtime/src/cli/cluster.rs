//! `sluice coordinator` and `sluice worker`.

use super::{
    bind_control, install_stop_handler, print_checkpoints, read_manifest, run_options, storage_uri,
    ControlArgs, SnapshotArgs, STOP_REPORT_GRACE, STOP_REQUESTED,
};
use crate::cluster::{
    run_worker, CoordinatorConfig, JobCoordinator, Outcome, RestartPolicy, WorkerConfig,
};
use crate::control::JobControl;
use crate::error::Error;
use crate::jobs::JobRegistry;
use crate::state::{RocksConfig, StateBackend};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub(super) struct CoordinatorArgs {
    /// The StreamJob manifest (YAML).
    manifest: PathBuf,
    /// Overrides spec.parallelism.
    #[arg(long)]
    parallelism: Option<u32>,
    /// Where workers connect (`host:port`; port 0 takes a free port, printed once listening).
    #[arg(long, default_value = "0.0.0.0:6123")]
    listen: String,
    /// A worker silent for this long is taken for dead and the job restarts without it.
    #[arg(long, value_parser = super::parse_duration, default_value = "10s")]
    worker_timeout: Duration,
    /// What SIGTERM (and Ctrl-C) does: stop the job with a savepoint, or cancel it so that
    /// the next start resumes from the latest checkpoint. Under a supervisor that restarts
    /// the coordinator (a Kubernetes Deployment), `cancel` is the safe choice: output
    /// committed by a savepoint the supervisor never learns of would be produced again.
    #[arg(long, value_enum, default_value_t = OnTerminate::Savepoint)]
    on_terminate: OnTerminate,
    /// Keep serving the control API after the job ends, until SIGTERM, instead of exiting:
    /// a supervisor reads how the job ended (and where its savepoint went) before it removes
    /// the process, and a container that exited would only be started again.
    #[arg(long)]
    wait_for_termination: bool,
    #[command(flatten)]
    restart: RestartArgs,
    #[command(flatten)]
    snapshots: SnapshotArgs,
    #[command(flatten)]
    control: ControlArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnTerminate {
    Savepoint,
    Cancel,
}

#[derive(clap::Args)]
struct RestartArgs {
    /// Wait before the first restart after a failure; doubles with each failure in a row.
    #[arg(long, value_parser = super::parse_duration, default_value = "1s")]
    restart_initial_backoff: Duration,
    #[arg(long, value_parser = super::parse_duration, default_value = "60s")]
    restart_max_backoff: Duration,
    /// Restarts in a row before the job fails for good.
    #[arg(long, default_value_t = 10)]
    restart_max_attempts: u32,
    /// A run healthy for this long starts the count of restarts in a row afresh.
    #[arg(long, value_parser = super::parse_duration, default_value = "10m")]
    restart_reset_after: Duration,
}

#[derive(clap::Args)]
pub(super) struct WorkerArgs {
    /// The coordinator's address (`host:port`) [default: the SLUICE_COORDINATOR
    /// environment variable].
    #[arg(long)]
    coordinator: Option<String>,
    /// Subtasks of each operator this worker runs at most (one slot holds subtask `s` of
    /// every operator).
    #[arg(long, default_value_t = 1)]
    slots: u32,
    /// Names the worker in the coordinator's status [default: POD_NAME, or worker-<pid>].
    #[arg(long)]
    name: Option<String>,
    /// Where other workers connect to send records (`host:port`; port 0 takes a free port).
    #[arg(long, default_value = "0.0.0.0:0")]
    data_addr: String,
    /// The host other workers reach this one at [default: the local address of the
    /// connection to the coordinator].
    #[arg(long)]
    advertise_host: Option<String>,
    /// RocksDB working directory [default: a directory under the system's temporary
    /// directory].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// RocksDB memory budget in MiB [default: 40 % of the container's memory limit, or 512].
    #[arg(long)]
    state_memory_mib: Option<usize>,
    /// How long to keep trying to reach the coordinator.
    #[arg(long, value_parser = super::parse_duration, default_value = "60s")]
    connect_timeout: Duration,
}

pub(super) fn worker(registry: &JobRegistry, args: WorkerArgs) -> Result<(), Error> {
    exit_on_terminate();
    let coordinator = args
        .coordinator
        .or_else(|| std::env::var("SLUICE_COORDINATOR").ok())
        .ok_or_else(|| {
            Error::Config("no coordinator: pass --coordinator or set SLUICE_COORDINATOR".into())
        })?;
    let name = args
        .name
        .or_else(|| std::env::var("POD_NAME").ok())
        .unwrap_or_else(|| format!("worker-{}", std::process::id()));
    run_worker(
        registry,
        WorkerConfig {
            coordinator,
            name,
            slots: args.slots.max(1),
            data_bind: args.data_addr,
            advertise_host: args.advertise_host,
            state_dir: args
                .state_dir
                .unwrap_or_else(|| std::env::temp_dir().join("sluice-state")),
            state_memory: args
                .state_memory_mib
                .map_or_else(RocksConfig::default_memory_budget, |m| m << 20),
            connect_timeout: args.connect_timeout,
        },
    )
}

pub(super) fn coordinator(registry: &JobRegistry, args: CoordinatorArgs) -> Result<(), Error> {
    let manifest = read_manifest(&args.manifest)?;
    let spec = &manifest.spec;
    let parallelism = args.parallelism.unwrap_or(spec.parallelism).max(1) as usize;
    let graph = registry.build(
        &spec.job.name,
        parallelism,
        spec.max_parallelism,
        &spec.job.config,
    )?;
    let options = run_options(&manifest.metadata.name, &args.snapshots)?;
    let savepoints = storage_uri(
        args.snapshots
            .savepoint_dir
            .as_deref()
            .unwrap_or(&format!("savepoints/{}", manifest.metadata.name)),
    )?;
    let control = bind_control(&args.control, &savepoints)?;
    let coordinator = Arc::new(JobCoordinator::bind(
        CoordinatorConfig {
            listen: args.listen,
            job: spec.job.name.clone(),
            config: spec.job.config.clone(),
            parallelism,
            max_parallelism: spec.max_parallelism,
            checkpoints: options.checkpoints.clone(),
            restore: options.restore.clone(),
            allow_non_restored_state: options.allow_non_restored_state,
            rocksdb: matches!(options.state_backend, StateBackend::RocksDb(_)),
            restart: RestartPolicy {
                initial_backoff: args.restart.restart_initial_backoff,
                max_backoff: args.restart.restart_max_backoff,
                max_attempts: args.restart.restart_max_attempts,
                reset_after: args.restart.restart_reset_after,
                ..RestartPolicy::default()
            },
            worker_timeout: args.worker_timeout,
            batch_size: options.batch_size,
            channel_capacity: options.channel_capacity,
        },
        &graph,
    )?);
    eprintln!(
        "coordinator of {} ({}) at parallelism {parallelism} listening for workers on {}",
        manifest.metadata.name,
        spec.job.name,
        coordinator.local_addr()
    );
    let server = control.map(|c| c.serve(coordinator.clone())).transpose()?;
    install_stop_handler();
    // Ctrl-C / SIGTERM stops with a savepoint, as `sluice run` does, or cancels.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (coordinator, done, savepoints) = (coordinator.clone(), done.clone(), savepoints);
        let on_terminate = args.on_terminate;
        std::thread::spawn(move || {
            // The request stays set: with --wait-for-termination, the same SIGTERM that
            // cancels the job ends the process once the job has stopped.
            let mut handled = false;
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
                if handled || !STOP_REQUESTED.load(Ordering::SeqCst) || coordinator.stop_requested()
                {
                    continue;
                }
                handled = true;
                if on_terminate == OnTerminate::Cancel {
                    eprintln!("cancelling: the next start resumes from the latest checkpoint");
                    coordinator.cancel();
                    continue;
                }
                eprintln!("stopping with a savepoint into {savepoints}");
                if let Err(e) = coordinator.savepoint(&savepoints, true) {
                    eprintln!("stop with a savepoint failed: {e}");
                }
            }
        })
    };
    let outcome = coordinator.run(&graph);
    done.store(true, Ordering::SeqCst);
    let _ = watcher.join();
    let reason = match &outcome {
        Ok(_) => "the job ended",
        Err(_) => "the job failed",
    };
    coordinator.shutdown_workers(reason);
    if let Some(server) = server {
        if args.wait_for_termination {
            eprintln!("{reason}; serving its status until terminated");
            while !STOP_REQUESTED.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
        } else {
            server.wait_for_stop_reported(STOP_REPORT_GRACE);
        }
        server.shutdown();
    }
    eprintln!("{} restart(s)", coordinator.status().restarts.count);
    match outcome? {
        Outcome::Finished => eprintln!("finished"),
        Outcome::Cancelled => eprintln!("stopped without a savepoint"),
        Outcome::Stopped(savepoint) => {
            if let Some(s) = savepoint {
                eprintln!(
                    "savepoint {} written in {:.2}s ({} bytes); resume with --restore {}",
                    s.id,
                    s.duration.as_secs_f64(),
                    s.bytes,
                    s.location
                );
            }
        }
    }
    print_checkpoints(&coordinator.checkpoint_status());
    Ok(())
}

extern "C" fn exit_terminated(_: libc::c_int) {
    // SAFETY: `_exit` is async-signal-safe.
    unsafe { libc::_exit(128 + libc::SIGTERM) }
}

/// A worker ends at once on SIGTERM: its state lives in the coordinator's checkpoints, and the
/// coordinator restarts the job without it. As a container's first process it would otherwise
/// ignore SIGTERM (the kernel's rule for PID 1) and hold up its pod's deletion for the whole
/// grace period.
fn exit_on_terminate() {
    let handler = exit_terminated as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only calls `_exit`.
    unsafe {
        libc::signal(libc::SIGTERM, handler);
    }
}

/// The command lines the operator writes (`sluice_crds::command`) parse with this crate's
/// parser into the values the operator meant: the two sides cannot drift apart unnoticed.
#[cfg(test)]
mod tests {
    use super::super::{parse_duration, BackendArg, Cli, Command};
    use super::{CoordinatorArgs, OnTerminate, WorkerArgs};
    use clap::Parser;
    use sluice_crds::command::{self, ArgDuration, Restore};
    use std::path::PathBuf;
    use std::time::Duration;

    fn parse(args: Vec<String>) -> Command {
        let line = std::iter::once("sluice".to_string()).chain(args.iter().cloned());
        match Cli::try_parse_from(line) {
            Ok(cli) => cli.command,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    fn coordinator(args: Vec<String>) -> CoordinatorArgs {
        match parse(args) {
            Command::Coordinator(c) => c,
            _ => panic!("not a coordinator command"),
        }
    }

    fn worker(args: Vec<String>) -> WorkerArgs {
        match parse(args) {
            Command::Worker(w) => w,
            _ => panic!("not a worker command"),
        }
    }

    /// Each field of `sent` came back in `parsed`; a field left out has the value of
    /// `defaults`, a parse of the bare command. The destructuring names every field, so a
    /// field added to the contract fails to compile here until it is checked.
    fn assert_coordinator(sent: &command::CoordinatorArgs, parsed: &CoordinatorArgs) {
        let defaults = coordinator(vec!["coordinator".into(), "job.yaml".into()]);
        let command::CoordinatorArgs {
            manifest,
            listen,
            control_addr,
            on_terminate,
            wait_for_termination,
            parallelism,
            state_dir,
            checkpoint_dir,
            checkpoint_interval,
            retain_checkpoints,
            restore,
            initial_snapshot,
            savepoint_dir,
            allow_non_restored_state,
            restart_initial_backoff,
            restart_max_backoff,
            restart_max_attempts,
            restart_reset_after,
        } = sent;
        let (s, d) = (&parsed.snapshots, &defaults.snapshots);
        let (r, rd) = (&parsed.restart, &defaults.restart);
        let duration = |sent: &Option<ArgDuration>, default: Duration| {
            sent.map_or(default, ArgDuration::to_std)
        };
        assert_eq!(parsed.manifest, PathBuf::from(manifest));
        assert_eq!(parsed.listen, listen.clone().unwrap_or(defaults.listen));
        assert_eq!(
            parsed.control.control_addr,
            control_addr.clone().or(defaults.control.control_addr)
        );
        let on_terminate = on_terminate.map(|o| match o {
            command::OnTerminate::Savepoint => OnTerminate::Savepoint,
            command::OnTerminate::Cancel => OnTerminate::Cancel,
        });
        assert!(parsed.on_terminate == on_terminate.unwrap_or(defaults.on_terminate));
        assert_eq!(parsed.wait_for_termination, *wait_for_termination);
        assert_eq!(parsed.parallelism, parallelism.or(defaults.parallelism));
        assert_eq!(
            s.state_dir,
            state_dir
                .as_ref()
                .map(PathBuf::from)
                .or(d.state_dir.clone())
        );
        assert_eq!(
            s.checkpoint_dir,
            checkpoint_dir.clone().or(d.checkpoint_dir.clone())
        );
        assert_eq!(
            s.checkpoint_interval,
            checkpoint_interval
                .map(ArgDuration::to_std)
                .or(d.checkpoint_interval)
        );
        assert_eq!(
            s.retain_checkpoints,
            retain_checkpoints.map_or(d.retain_checkpoints, |n| n as usize)
        );
        let restore = restore.as_ref().map(|r| match r {
            Restore::Latest => "latest".to_string(),
            Restore::From(location) => location.clone(),
        });
        assert_eq!(s.restore, restore.or(d.restore.clone()));
        assert_eq!(
            s.initial_snapshot,
            initial_snapshot.clone().or(d.initial_snapshot.clone())
        );
        assert_eq!(
            s.savepoint_dir,
            savepoint_dir.clone().or(d.savepoint_dir.clone())
        );
        assert_eq!(s.allow_non_restored_state, *allow_non_restored_state);
        assert_eq!(
            r.restart_initial_backoff,
            duration(restart_initial_backoff, rd.restart_initial_backoff)
        );
        assert_eq!(
            r.restart_max_backoff,
            duration(restart_max_backoff, rd.restart_max_backoff)
        );
        assert_eq!(
            r.restart_max_attempts,
            restart_max_attempts.unwrap_or(rd.restart_max_attempts)
        );
        assert_eq!(
            r.restart_reset_after,
            duration(restart_reset_after, rd.restart_reset_after)
        );
        // Options the operator never sets keep their defaults.
        assert_eq!(parsed.worker_timeout, defaults.worker_timeout);
        assert!(s.state_backend == BackendArg::Rocksdb && d.state_backend == BackendArg::Rocksdb);
    }

    #[test]
    fn a_coordinator_command_line_of_the_operator_parses_to_the_values_it_holds() {
        let every_option = command::CoordinatorArgs {
            manifest: "/etc/sluice/job.yaml".into(),
            listen: Some("0.0.0.0:6123".into()),
            control_addr: Some("0.0.0.0:8081".into()),
            on_terminate: Some(command::OnTerminate::Cancel),
            wait_for_termination: true,
            parallelism: Some(7),
            state_dir: Some("/var/lib/sluice/state".into()),
            checkpoint_dir: Some("s3://bucket/ck/ns/q5/run-1".into()),
            checkpoint_interval: Some(ArgDuration::millis_of(Duration::from_millis(1500))),
            retain_checkpoints: Some(4),
            restore: Some(Restore::Latest),
            initial_snapshot: Some("s3://bucket/sp/ns/q5/20261127T100000Z/sp-0000000009".into()),
            savepoint_dir: Some("s3://bucket/sp/ns/q5".into()),
            allow_non_restored_state: true,
            restart_initial_backoff: Some(ArgDuration::Millis(250)),
            restart_max_backoff: Some(ArgDuration::Seconds(150)),
            restart_max_attempts: Some(u32::MAX),
            restart_reset_after: Some(ArgDuration::Millis(1_800_000)),
        };
        assert_coordinator(&every_option, &coordinator(every_option.to_args()));

        let from_a_savepoint = command::CoordinatorArgs {
            manifest: "job.yaml".into(),
            restore: Some(Restore::From("file:///data/sp/sp-0000000001".into())),
            on_terminate: Some(command::OnTerminate::Savepoint),
            ..command::CoordinatorArgs::default()
        };
        assert_coordinator(&from_a_savepoint, &coordinator(from_a_savepoint.to_args()));

        let bare = command::CoordinatorArgs {
            manifest: "job.yaml".into(),
            ..command::CoordinatorArgs::default()
        };
        assert_coordinator(&bare, &coordinator(bare.to_args()));
    }

    #[test]
    fn a_worker_command_line_of_the_operator_parses_to_the_values_it_holds() {
        let defaults = worker(vec!["worker".into()]);
        let sent = command::WorkerArgs {
            coordinator: Some("q5-coordinator:6123".into()),
            slots: Some(3),
            data_addr: Some("0.0.0.0:6124".into()),
            state_dir: Some("/var/lib/sluice/state".into()),
            connect_timeout: Some(ArgDuration::Seconds(300)),
        };
        for sent in [sent, command::WorkerArgs::default()] {
            let parsed = worker(sent.to_args());
            let command::WorkerArgs {
                coordinator,
                slots,
                data_addr,
                state_dir,
                connect_timeout,
            } = &sent;
            assert_eq!(
                parsed.coordinator,
                coordinator.clone().or(defaults.coordinator.clone())
            );
            assert_eq!(parsed.slots, slots.unwrap_or(defaults.slots));
            assert_eq!(
                parsed.data_addr,
                data_addr.clone().unwrap_or(defaults.data_addr.clone())
            );
            assert_eq!(
                parsed.state_dir,
                state_dir
                    .as_ref()
                    .map(PathBuf::from)
                    .or(defaults.state_dir.clone())
            );
            assert_eq!(
                parsed.connect_timeout,
                connect_timeout.map_or(defaults.connect_timeout, ArgDuration::to_std)
            );
        }
    }

    /// Durations as the operator writes them read back exactly, in both units.
    #[test]
    fn durations_of_the_operator_read_back_exactly() {
        for ms in [
            0,
            1,
            150,
            999,
            1_000,
            1_500,
            30_000,
            86_400_000,
            604_800_000,
        ] {
            let d = ArgDuration::Millis(ms);
            assert_eq!(parse_duration(&d.to_string()), Ok(d.to_std()), "{d}");
        }
        for s in [0, 1, 300, 86_400] {
            let d = ArgDuration::Seconds(s);
            assert_eq!(parse_duration(&d.to_string()), Ok(d.to_std()), "{d}");
        }
    }
}
