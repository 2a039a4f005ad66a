//! The `sluice` command line. It is a library function so that any binary registering its
//! own jobs is a complete `sluice` binary: `fn main() { sluice_runtime::cli::main_with(registry) }`.

use crate::control::{self, BoundControl, BoundMetrics, ControlConfig};
use crate::error::Error;
use crate::exec::{
    start_embedded, CheckpointConfig, CheckpointStatus, JobSummary, Restore, RunOptions,
};
use crate::jobs::JobRegistry;
use crate::nexmark::{write_events_jsonl, NexmarkConfig};
use crate::snapshot::{CheckpointStorage, Compatibility, SnapshotContent, SAVEPOINTS};
use crate::state::{RocksConfig, StateBackend};
use crate::tls::TlsContext;
use clap::{Parser, Subcommand};
use sluice_crds::command::{
    self, ArgDuration, ControlArgs, RestoreFrom, SavepointCommand, SnapshotArgs, StateBackendArg,
    DEFAULT_RETAIN_CHECKPOINTS, DEFAULT_TOLERABLE_CHECKPOINT_FAILURES,
};

mod cluster;
mod kafka;
mod logging;
mod progress;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "sluice", version, about = "Stateful stream processing")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Runs the job of a StreamJob manifest embedded in this process.
    Run {
        /// The StreamJob manifest (YAML).
        manifest: PathBuf,
        /// Overrides spec.parallelism.
        #[arg(long)]
        parallelism: Option<u32>,
        /// Seconds between progress lines; 0 prints only the summary.
        #[arg(long, default_value_t = 1.0)]
        progress_interval: f64,
        #[command(flatten)]
        snapshots: SnapshotArgs,
        #[command(flatten)]
        control: ControlArgs,
    },
    // `coordinator`, `worker` and `savepoint`: the command line the operator writes.
    #[command(flatten)]
    Contract(command::Command),
    /// Lists the jobs this binary can run.
    Jobs,
    /// Nexmark tools.
    Nexmark {
        #[command(subcommand)]
        command: NexmarkCommand,
    },
}

/// How long a process whose job was stopped through the control API keeps serving it, at
/// most, so that the client can read where the stop's savepoint went.
const STOP_REPORT_GRACE: Duration = Duration::from_secs(30);

#[derive(Subcommand)]
enum NexmarkCommand {
    /// Writes generated events as JSON lines, for checking results with another tool or
    /// for feeding a job through `input:`.
    Generate {
        #[command(flatten)]
        generator: GeneratorArgs,
        /// Output file; standard output when absent.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Writes generated events as JSON into a Kafka topic, event `n` into partition
    /// `n % partitions`, for jobs reading `input: kafka://…`.
    Produce(kafka::ProduceArgs),
}

/// The generator's settings, as `generator:` in a job's config names them.
#[derive(clap::Args)]
struct GeneratorArgs {
    /// Events `0..N` of the sequence.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value_t = 100_000)]
    events_per_second: u64,
    #[arg(long, default_value_t = 0)]
    out_of_order_ms: u64,
}

impl GeneratorArgs {
    fn config(&self) -> Result<NexmarkConfig, Error> {
        let config = NexmarkConfig {
            events: self.events,
            seed: self.seed,
            events_per_second: self.events_per_second,
            out_of_order_ms: self.out_of_order_ms,
            ..NexmarkConfig::default()
        };
        config
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(config)
    }
}

/// The stock `sluice` binary: the bundled jobs.
pub fn main() -> ExitCode {
    main_with(JobRegistry::bundled())
}

/// A `sluice` binary running the jobs of `registry`.
pub fn main_with(registry: JobRegistry) -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    // object_store's TLS provider, named: whether another one is linked in too depends on
    // what the binary was built with (a user's job crate may add one), and with two rustls
    // picks none.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let result = match cli.command {
        Command::Run {
            manifest,
            parallelism,
            progress_interval,
            snapshots,
            control,
        } => run(
            &registry,
            &manifest,
            parallelism,
            progress_interval,
            &snapshots,
            &control,
        ),
        Command::Contract(command::Command::Coordinator(args)) => {
            cluster::coordinator(&registry, args)
        }
        Command::Contract(command::Command::Worker(args)) => cluster::worker(&registry, args),
        Command::Contract(command::Command::Savepoint { command }) => match command {
            SavepointCommand::Check(args) => check_savepoint(
                &registry,
                &args.snapshot,
                &args.job,
                args.manifest.as_deref(),
                args.allow_non_restored_state,
            ),
            SavepointCommand::Inspect(args) => inspect_savepoint(&args.snapshot),
            SavepointCommand::Delete(args) => delete_savepoints(&args.savepoints),
        },
        Command::Jobs => {
            for (name, description) in registry.list() {
                println!("{name:<26} {description}");
            }
            Ok(())
        }
        Command::Nexmark {
            command: NexmarkCommand::Generate { generator, output },
        } => generator
            .config()
            .and_then(|config| generate(config, output)),
        Command::Nexmark {
            command: NexmarkCommand::Produce(args),
        } => kafka::produce(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(config: NexmarkConfig, output: Option<PathBuf>) -> Result<(), Error> {
    match output {
        Some(path) => {
            let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
            let mut w = std::io::BufWriter::new(file);
            write_events_jsonl(&config, &mut w).map_err(|e| Error::io(&path, e))?;
            w.flush().map_err(|e| Error::io(&path, e))
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            write_events_jsonl(&config, &mut w).map_err(|e| Error::io("stdout", e))?;
            w.flush().map_err(|e| Error::io("stdout", e))
        }
    }
}

/// The URI of a storage given as a URI (`file://`, `s3://`) or a (relative) directory.
fn storage_uri(location: &str) -> Result<String, Error> {
    if location.contains("://") {
        return Ok(location.to_string());
    }
    let path = std::path::absolute(location).map_err(|e| Error::io(location, e))?;
    Ok(format!("file://{}", path.display()))
}

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM ask the job to stop with a savepoint instead of killing the process.
fn install_stop_handler() {
    let handler = request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// The manifest at `path`; fails when it names a snapshot key the process does not have, so
/// a job never writes unencrypted snapshots its manifest says are encrypted.
fn read_manifest(path: &std::path::Path) -> Result<sluice_crds::StreamJobManifest, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let manifest = sluice_crds::parse_manifest(&text, &path.display().to_string())?;
    if let Some(encryption) = &manifest.spec.checkpointing.encryption {
        crate::snapshot::require_key(&encryption.key_id)?;
    }
    Ok(manifest)
}

fn run_options(name: &str, args: &SnapshotArgs) -> Result<RunOptions, Error> {
    let checkpoint_storage = storage_uri(
        args.checkpoint_dir
            .as_deref()
            .unwrap_or(&format!("checkpoints/{name}")),
    )?;
    let restore = match (&args.restore, &args.initial_snapshot) {
        (Some(RestoreFrom::Latest), Some(initial)) => Some(Restore::LatestOr(initial.clone())),
        (Some(RestoreFrom::Latest), None) => Some(Restore::Latest),
        (Some(RestoreFrom::Snapshot(location)), None) => Some(Restore::Snapshot(location.clone())),
        (None, None) => None,
        (_, Some(_)) => {
            return Err(Error::Config(
                "--initial-snapshot needs --restore latest".into(),
            ))
        }
    };
    let checkpoints = (args.checkpoint_interval.is_some()
        || args.checkpoint_dir.is_some()
        || matches!(restore, Some(Restore::Latest | Restore::LatestOr(_))))
    .then(|| CheckpointConfig {
        interval: args.checkpoint_interval.as_ref().map(ArgDuration::duration),
        retain: args
            .retain_checkpoints
            .unwrap_or(DEFAULT_RETAIN_CHECKPOINTS)
            .max(1),
        tolerable_failures: args
            .tolerable_checkpoint_failures
            .unwrap_or(DEFAULT_TOLERABLE_CHECKPOINT_FAILURES),
        ..CheckpointConfig::new(checkpoint_storage)
    });
    let state_backend = match args.state_backend.unwrap_or_default() {
        StateBackendArg::Heap => StateBackend::Heap,
        StateBackendArg::Rocksdb => StateBackend::RocksDb(RocksConfig::new(
            args.state_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("sluice-state")),
            args.state_memory_mib
                .map_or_else(RocksConfig::default_memory_budget, |m| m << 20),
        )),
    };
    Ok(RunOptions {
        checkpoints,
        restore,
        allow_non_restored_state: args.allow_non_restored_state,
        state_backend,
        ..RunOptions::default()
    })
}

fn run(
    registry: &JobRegistry,
    manifest_path: &std::path::Path,
    parallelism: Option<u32>,
    progress_interval: f64,
    snapshots: &SnapshotArgs,
    control_args: &ControlArgs,
) -> Result<(), Error> {
    let manifest = read_manifest(manifest_path)?;
    let spec = &manifest.spec;
    let parallelism = parallelism.unwrap_or(spec.parallelism).max(1);
    let graph = registry.build(
        &spec.job.name,
        parallelism as usize,
        spec.max_parallelism,
        &spec.job.config,
    )?;
    eprintln!(
        "running {} ({}) embedded at parallelism {parallelism}, max parallelism {}, {} state",
        manifest.metadata.name,
        spec.job.name,
        spec.max_parallelism,
        match snapshots.state_backend.unwrap_or_default() {
            StateBackendArg::Rocksdb => "RocksDB",
            StateBackendArg::Heap => "heap",
        }
    );
    let options = RunOptions {
        redact_keys: spec.redact_keys,
        ..run_options(&manifest.metadata.name, snapshots)?
    };
    let savepoints = storage_uri(
        snapshots
            .savepoint_dir
            .as_deref()
            .unwrap_or(&format!("savepoints/{}", manifest.metadata.name)),
    )?;
    // Bound before the job starts: a bad address or a missing token fails the run early.
    let control = bind_control(control_args, &savepoints, None)?;
    let metrics = bind_metrics(control_args)?;
    let cpu_start = cpu_time();
    install_stop_handler();
    let job = Arc::new(start_embedded(graph, options)?);
    let control = control.map(|c| c.serve(job.clone())).transpose()?;
    // Served until the run ends, as the control API is.
    let _metrics = metrics.map(|m| m.serve(job.clone())).transpose()?;
    let interval = Duration::from_secs_f64(progress_interval.max(0.0));
    let mut progress = progress::Progress::new(std::io::stderr().is_terminal());
    let mut last = Instant::now();
    while !job.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        if STOP_REQUESTED.swap(false, Ordering::SeqCst) {
            if job.stop_requested() {
                eprintln!("already stopping");
                continue;
            }
            eprintln!("stopping with a savepoint into {savepoints}");
            let done = job.savepoint(&savepoints, true)?;
            eprintln!(
                "savepoint {} written in {:.2}s ({} bytes); resume with --restore {}",
                done.id,
                done.duration.as_secs_f64(),
                done.bytes,
                done.location
            );
            break;
        }
        if !interval.is_zero() && last.elapsed() >= interval {
            let text = progress.update(&job.subtasks(), last.elapsed());
            last = Instant::now();
            // Progress is best effort: a closed stderr must not stop the job.
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
    }
    if let Some(server) = control {
        server.wait_for_stop_reported(STOP_REPORT_GRACE);
        server.shutdown();
    }
    let status = job.checkpoint_status();
    let summary = match job.wait() {
        // Cancelled by its owner (`POST /v1/stop` without a savepoint): a clean stop.
        Err(Error::Cancelled) if job.stop_requested() => {
            eprintln!("stopped without a savepoint");
            print_checkpoints(&status);
            return Ok(());
        }
        result => result?,
    };
    print_summary(&summary, cpu_time().saturating_sub(cpu_start));
    print_checkpoints(&status);
    Ok(())
}

/// Binds the control API when `--control-addr` asks for it, printing where it listens.
fn bind_control(
    args: &ControlArgs,
    savepoints: &str,
    tls: Option<&TlsContext>,
) -> Result<Option<BoundControl>, Error> {
    let Some(addr) = &args.control_addr else {
        return Ok(None);
    };
    let bound = BoundControl::bind(ControlConfig {
        addr: addr.clone(),
        token: control::read_token(args.control_token_file.as_deref())?,
        default_savepoint_dir: Some(savepoints.to_string()),
        tls: tls.map(TlsContext::https),
    })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("control API listening on {scheme}://{}", bound.local_addr());
    Ok(Some(bound))
}

/// Binds the metrics endpoint when `--metrics-addr` asks for it, printing where it listens.
fn bind_metrics(args: &ControlArgs) -> Result<Option<BoundMetrics>, Error> {
    let Some(addr) = &args.metrics_addr else {
        return Ok(None);
    };
    let bound = BoundMetrics::bind(addr)?;
    eprintln!("metrics listening on http://{}/metrics", bound.local_addr());
    Ok(Some(bound))
}

fn print_checkpoints(s: &CheckpointStatus) {
    if let Some(from) = &s.restored_from {
        eprintln!("  restored from   {from}");
    }
    if s.completed + s.failed > 0 {
        eprintln!(
            "  checkpoints     {} completed, {} failed",
            s.completed, s.failed
        );
    }
    if let Some(c) = s.last_completed() {
        eprintln!(
            "  last snapshot   {} ({:?}, {} bytes, {:.0} ms)",
            c.location,
            c.kind,
            c.bytes,
            c.duration.as_secs_f64() * 1000.0
        );
    }
}

/// Reads the manifest of a checkpoint or savepoint directory, verifying its files.
fn open_snapshot(location: &str) -> Result<(CheckpointStorage, crate::snapshot::Manifest), Error> {
    let (storage, id) = CheckpointStorage::open_snapshot(location)?;
    let manifest = storage.verify(id)?;
    Ok((storage, manifest))
}

fn check_savepoint(
    registry: &JobRegistry,
    snapshot: &str,
    job: &str,
    manifest: Option<&std::path::Path>,
    allow_non_restored_state: bool,
) -> Result<(), Error> {
    let content = SnapshotContent::read_verified(snapshot)?;
    let (config, max_parallelism) = match manifest {
        Some(path) => {
            let manifest = read_manifest(path)?;
            (manifest.spec.job.config, manifest.spec.max_parallelism)
        }
        None => (serde_json::Value::Null, content.max_parallelism),
    };
    let graph = registry.build(job, 1, max_parallelism, &config)?;
    let compat = Compatibility::check(&content, max_parallelism, &graph.declared_operators()?);
    match compat.refusal(allow_non_restored_state) {
        // The report goes to the stream the error goes to, so that a reader of both (a
        // pod's log, which the operator's pre-flight quotes) sees them in this order.
        Some(_) => {
            eprintln!("{compat}");
            Err(Error::Checkpoint(format!(
                "job '{job}' cannot restore {snapshot}{}",
                if compat.is_incompatible() {
                    ""
                } else {
                    " (--allow-non-restored-state drops the missing state)"
                }
            )))
        }
        None => {
            println!("{compat}");
            Ok(())
        }
    }
}

fn delete_savepoints(locations: &[String]) -> Result<(), Error> {
    let mut failed = Vec::new();
    for location in locations {
        let name = location.trim_end_matches('/').rsplit('/').next();
        let outcome = if name.is_some_and(|n| n.starts_with(&format!("{SAVEPOINTS}-"))) {
            CheckpointStorage::open_snapshot(location)
                .and_then(|(storage, id)| storage.delete_snapshot(id))
                .map_err(|e| e.to_string())
        } else {
            Err("not a savepoint directory (sp-<id>)".to_string())
        };
        match outcome {
            Ok(true) => println!("deleted {location}"),
            Ok(false) => println!("{location}: already gone"),
            Err(e) => {
                eprintln!("{location}: {e}");
                failed.push(location.as_str());
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{} of {} savepoints not deleted: {}",
            failed.len(),
            locations.len(),
            failed.join(", ")
        )))
    }
}

fn inspect_savepoint(snapshot: &str) -> Result<(), Error> {
    let (storage, m) = open_snapshot(snapshot)?;
    let content = SnapshotContent::from_manifest(&m)?;
    println!("snapshot        {}", storage.location(m.checkpoint));
    println!("kind            {:?}", content.kind);
    println!("job             {}", m.job);
    println!("format version  {}", m.version);
    println!("max parallelism {}", content.max_parallelism);
    println!(
        "files           {} ({} bytes)",
        m.files.len(),
        m.files.iter().map(|f| f.size).sum::<u64>()
    );
    for op in &content.operators {
        let bytes: u64 = op.key_groups.iter().map(|(_, r)| r.len).sum::<u64>()
            + op.items.iter().map(|r| r.len).sum::<u64>();
        let states: Vec<String> = op
            .states
            .iter()
            .map(|s| format!("{} v{}", s.name, s.schema_version))
            .collect();
        println!(
            "operator {:<24} parallelism {:>3}  key groups {:>5}  items {:>4}  {:>10} bytes  states [{}]",
            op.uid,
            op.parallelism,
            op.key_groups.len(),
            op.items.len(),
            bytes,
            states.join(", ")
        );
        for s in &op.splits {
            println!(
                "  split {:>4} at record {}{}",
                s.split,
                s.offset,
                if s.done { " (done)" } else { "" }
            );
        }
        for t in &op.transactions {
            println!(
                "  transaction of checkpoint {}: {}",
                t.checkpoint(),
                t.describe()
            );
        }
    }
    Ok(())
}

/// `2026-01-01T00:00:49.672Z` for epoch milliseconds.
fn utc(ms: i64) -> String {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, sec, milli) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1_000 % 60,
        ms_of_day % 1_000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{sec:02}.{milli:03}Z")
}

fn human(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// User plus system CPU time of the whole process.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own and has no other effect.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            return Duration::ZERO;
        }
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn print_summary(s: &JobSummary, cpu: Duration) {
    let events = s.source_records();
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    let cpu_secs = cpu.as_secs_f64().max(1e-9);
    eprintln!("finished in {:.2}s", secs);
    eprintln!("  events          {events}");
    eprintln!("  outputs         {}", s.sink_records());
    eprintln!("  late records    {}", s.late_records());
    eprintln!("  events/s        {}", human(events as f64 / secs));
    eprintln!("  CPU time        {:.2}s", cpu_secs);
    eprintln!("  events/CPU-s    {}", human(events as f64 / cpu_secs));
    eprintln!("  subtasks (busy / idle / backpressured):");
    for t in &s.tasks {
        eprintln!(
            "    {:<28} {:>7.2}s {:>7.2}s {:>7.2}s  in {:>11}  out {:>11}",
            t.name,
            t.busy.as_secs_f64(),
            t.idle.as_secs_f64(),
            t.backpressured.as_secs_f64(),
            t.records_in,
            t.records_out
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_epoch_millis() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::utc(1_767_225_649_672), "2026-01-01T00:00:49.672Z");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(super::utc(-1), "1969-12-31T23:59:59.999Z");
    }
}
