//! The `sluice` command line. It is a library function so that any binary registering its
//! own jobs is a complete `sluice` binary: `fn main() { sluice_runtime::cli::main_with(registry) }`.

use crate::error::Error;
use crate::exec::metrics::TaskMetricsSnapshot;
use crate::exec::{start_embedded, JobSummary, RunOptions};
use crate::jobs::JobRegistry;
use crate::nexmark::{write_events_jsonl, NexmarkConfig};
use crate::time::EventTime;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "sluice", version, about = "Stateful stream processing")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

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
    },
    /// Lists the jobs this binary can run.
    Jobs,
    /// Nexmark tools.
    Nexmark {
        #[command(subcommand)]
        command: NexmarkCommand,
    },
}

#[derive(Subcommand)]
enum NexmarkCommand {
    /// Writes generated events as JSON lines, for checking results with another tool or
    /// for feeding a job through `input:`.
    Generate {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 100_000)]
        events_per_second: u64,
        #[arg(long, default_value_t = 0)]
        out_of_order_ms: u64,
        /// Output file; standard output when absent.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// The stock `sluice` binary: the bundled jobs.
pub fn main() -> ExitCode {
    main_with(JobRegistry::bundled())
}

/// A `sluice` binary running the jobs of `registry`.
pub fn main_with(registry: JobRegistry) -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            manifest,
            parallelism,
            progress_interval,
        } => run(&registry, &manifest, parallelism, progress_interval),
        Command::Jobs => {
            for (name, description) in registry.list() {
                println!("{name:<26} {description}");
            }
            Ok(())
        }
        Command::Nexmark {
            command:
                NexmarkCommand::Generate {
                    events,
                    seed,
                    events_per_second,
                    out_of_order_ms,
                    output,
                },
        } => generate(
            NexmarkConfig {
                events,
                seed,
                events_per_second,
                out_of_order_ms,
                ..NexmarkConfig::default()
            },
            output,
        ),
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
    config
        .validate()
        .map_err(|e| Error::Config(e.to_string()))?;
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

fn run(
    registry: &JobRegistry,
    manifest_path: &PathBuf,
    parallelism: Option<u32>,
    progress_interval: f64,
) -> Result<(), Error> {
    let text = std::fs::read_to_string(manifest_path).map_err(|e| Error::io(manifest_path, e))?;
    let manifest = sluice_crds::parse_manifest(&text, &manifest_path.display().to_string())?;
    let spec = &manifest.spec;
    let parallelism = parallelism.unwrap_or(spec.parallelism).max(1);
    let graph = registry.build(
        &spec.job.name,
        parallelism as usize,
        spec.max_parallelism,
        &spec.job.config,
    )?;
    eprintln!(
        "running {} ({}) embedded at parallelism {parallelism}, max parallelism {}",
        manifest.metadata.name, spec.job.name, spec.max_parallelism
    );
    let cpu_start = cpu_time();
    let job = start_embedded(graph, RunOptions::default())?;
    let interval = Duration::from_secs_f64(progress_interval.max(0.0));
    let mut last = (Instant::now(), 0u64);
    while !job.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        if !interval.is_zero() && last.0.elapsed() >= interval {
            let m = job.metrics();
            let events: u64 = sources(&m).map(|t| t.records_in).sum();
            let rate = (events - last.1) as f64 / last.0.elapsed().as_secs_f64();
            eprintln!(
                "  events {events:>12}  {:>10}/s  watermark {}  outputs {}",
                human(rate),
                watermark(&m),
                m.iter().map(|t| t.sink_records).sum::<u64>()
            );
            last = (Instant::now(), events);
        }
    }
    let summary = job.wait()?;
    print_summary(&summary, cpu_time().saturating_sub(cpu_start));
    Ok(())
}

fn sources(m: &[TaskMetricsSnapshot]) -> impl Iterator<Item = &TaskMetricsSnapshot> {
    m.iter().filter(|t| t.is_source)
}

/// The lowest watermark of the sink chains: how far results are complete.
fn watermark(m: &[TaskMetricsSnapshot]) -> String {
    match m.iter().filter(|t| t.is_sink).map(|t| t.watermark).min() {
        None | Some(EventTime::MIN) => "-".into(),
        Some(EventTime::MAX) => "end".into(),
        Some(w) => utc(w.0),
    }
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
