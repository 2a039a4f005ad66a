//! `sluice coordinator` and `sluice worker`.

use super::{
    bind_control, bind_metrics, install_stop_handler, print_checkpoints, read_manifest,
    run_options, storage_uri, STOP_REPORT_GRACE, STOP_REQUESTED,
};
use crate::cluster::{
    run_worker, CoordinatorConfig, JobCoordinator, Outcome, RestartPolicy, WorkerConfig,
};
use crate::control::JobControl;
use crate::error::Error;
use crate::jobs::JobRegistry;
use crate::state::{RocksConfig, StateBackend};
use crate::tls::TlsContext;
use sluice_crds::command::{
    ArgDuration, CoordinatorArgs, OnTerminate, WorkerArgs, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_COORDINATOR_LOSS_TIMEOUT, DEFAULT_DATA_ADDR, DEFAULT_LISTEN,
    DEFAULT_RESTART_BACKOFF_JITTER, DEFAULT_RESTART_BACKOFF_MULTIPLIER,
    DEFAULT_RESTART_INITIAL_BACKOFF, DEFAULT_RESTART_MAX_ATTEMPTS, DEFAULT_RESTART_MAX_BACKOFF,
    DEFAULT_RESTART_RESET_AFTER, DEFAULT_SLOTS, DEFAULT_WORKER_TIMEOUT,
};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
            slots: args.slots.unwrap_or(DEFAULT_SLOTS).max(1),
            data_bind: args
                .data_addr
                .unwrap_or_else(|| DEFAULT_DATA_ADDR.to_string()),
            advertise_host: args.advertise_host,
            state_dir: args
                .state_dir
                .unwrap_or_else(|| std::env::temp_dir().join("sluice-state")),
            state_memory: args
                .state_memory_mib
                .map_or_else(RocksConfig::default_memory_budget, |m| m << 20),
            connect_timeout: or_default(&args.connect_timeout, DEFAULT_CONNECT_TIMEOUT),
            coordinator_loss_timeout: or_default(
                &args.coordinator_loss_timeout,
                DEFAULT_COORDINATOR_LOSS_TIMEOUT,
            ),
            tls: tls_context(args.tls_dir.as_deref())?,
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
    let tls = tls_context(args.tls_dir.as_deref())?;
    let control = bind_control(&args.control, &savepoints, tls.as_ref())?;
    let metrics = bind_metrics(&args.control)?;
    let coordinator = Arc::new(JobCoordinator::bind(
        CoordinatorConfig {
            listen: args.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
            job: spec.job.name.clone(),
            config: spec.job.config.clone(),
            parallelism,
            max_parallelism: spec.max_parallelism,
            checkpoints: options.checkpoints.clone(),
            restore: options.restore.clone(),
            allow_non_restored_state: options.allow_non_restored_state,
            rocksdb: matches!(options.state_backend, StateBackend::RocksDb(_)),
            restart: RestartPolicy {
                initial_backoff: or_default(
                    &args.restart.restart_initial_backoff,
                    DEFAULT_RESTART_INITIAL_BACKOFF,
                ),
                max_backoff: or_default(
                    &args.restart.restart_max_backoff,
                    DEFAULT_RESTART_MAX_BACKOFF,
                ),
                multiplier: args
                    .restart
                    .restart_backoff_multiplier
                    .unwrap_or(DEFAULT_RESTART_BACKOFF_MULTIPLIER),
                jitter: args
                    .restart
                    .restart_backoff_jitter
                    .unwrap_or(DEFAULT_RESTART_BACKOFF_JITTER),
                max_attempts: args
                    .restart
                    .restart_max_attempts
                    .unwrap_or(DEFAULT_RESTART_MAX_ATTEMPTS),
                reset_after: or_default(
                    &args.restart.restart_reset_after,
                    DEFAULT_RESTART_RESET_AFTER,
                ),
            },
            worker_timeout: or_default(&args.worker_timeout, DEFAULT_WORKER_TIMEOUT),
            batch_size: options.batch_size,
            channel_capacity: options.channel_capacity,
            redact_keys: spec.redact_keys,
            tls,
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
    // Served as long as the process runs, through --wait-for-termination too.
    let _metrics = metrics.map(|m| m.serve(coordinator.clone())).transpose()?;
    install_stop_handler();
    // Ctrl-C / SIGTERM stops with a savepoint, as `sluice run` does, or cancels.
    let done = Arc::new(AtomicBool::new(false));
    let on_terminate = args.on_terminate.unwrap_or_default();
    let watcher = {
        let (coordinator, done, savepoints) = (coordinator.clone(), done.clone(), savepoints);
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
                    tracing::info!("cancelling: the next start resumes from the latest checkpoint");
                    coordinator.cancel();
                    continue;
                }
                tracing::info!("stopping with a savepoint into {savepoints}");
                if let Err(e) = coordinator.savepoint(&savepoints, true) {
                    tracing::warn!("stop with a savepoint failed: {e}");
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
    // A coordinator that is only being replaced (its pod deleted: SIGTERM with
    // --on-terminate cancel), or that keeps serving its status under a supervisor, leaves its
    // workers be: they register with the next coordinator instead of exiting and being
    // restarted (with the kubelet's growing delays) by their own supervisor.
    let replaced = STOP_REQUESTED.load(Ordering::SeqCst) && on_terminate == OnTerminate::Cancel;
    if !replaced && !args.wait_for_termination {
        coordinator.shutdown_workers(reason);
    }
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

/// A duration flag's value, or its default when it was not given.
fn or_default(flag: &Option<ArgDuration>, default: Duration) -> Duration {
    flag.as_ref().map_or(default, ArgDuration::duration)
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

/// The job's certificates, when `--tls-dir` names them.
fn tls_context(dir: Option<&Path>) -> Result<Option<TlsContext>, Error> {
    dir.map(TlsContext::from_dir).transpose()
}
