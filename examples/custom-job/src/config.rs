//! The job's configuration: the manifest's `spec.job.config`, checked before anything runs.
//! Unknown fields are errors (a typo must not silently fall back to a default), and every
//! message names the field, as `spec.job.config.<field>`.

use crate::clicks::{Click, ClickGenerator, GeneratorConfig};
use crate::sessions::SessionRules;
use serde::{Deserialize, Serialize};
use sluice_runtime::api::{Data, JobBuilder, Stream, WatermarkStrategy};
use sluice_runtime::connectors::{DiscardSink, JsonLinesSink, JsonLinesSource, Throttled};
use sluice_runtime::jobs::{Output, SinkConfig};
use sluice_runtime::Error;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionsConfig {
    /// Clicks from this JSON-lines file (one [`Click`] per line); without it, from the
    /// generator.
    #[serde(default)]
    pub input: Option<PathBuf>,
    /// The click generator, used when `input` is absent.
    #[serde(default)]
    pub generator: GeneratorConfig,
    /// How late a click may arrive after a later one (event time): the watermark trails the
    /// newest click by this much. Later clicks still count, in the session open when they
    /// are processed.
    #[serde(default = "default_max_out_of_order_ms")]
    pub max_out_of_order_ms: u64,
    /// A user's session closes after this long without a click, in event time.
    #[serde(default = "default_session_gap_ms")]
    pub session_gap_ms: i64,
    /// A user's session state not written for this long (processing time) is dropped: it
    /// bounds the state of sessions that cannot close because event time stopped advancing
    /// (an input that went quiet). Keep it far above the time a session takes to close.
    #[serde(default = "default_state_ttl_seconds")]
    pub state_ttl_seconds: u64,
    /// Splits of the input. Fixed for the life of the job (like a topic's partitions) so
    /// that source positions restore at any parallelism.
    #[serde(default = "default_source_splits")]
    pub source_splits: usize,
    /// Where sessions go: a directory of JSON-lines part files, or `discard`.
    #[serde(default)]
    pub output: Output,
    #[serde(default)]
    pub sink: SinkConfig,
}

fn default_max_out_of_order_ms() -> u64 {
    1_000
}

fn default_session_gap_ms() -> i64 {
    30_000
}

fn default_state_ttl_seconds() -> u64 {
    6 * 3_600
}

fn default_source_splits() -> usize {
    4
}

fn invalid(field: &str, message: impl std::fmt::Display) -> Error {
    Error::Config(format!("spec.job.config.{field}: {message}"))
}

impl SessionsConfig {
    pub fn validate(&self) -> Result<(), Error> {
        if self.session_gap_ms <= 0 {
            return Err(invalid(
                "sessionGapMs",
                format!("must be positive, got {}", self.session_gap_ms),
            ));
        }
        if self.state_ttl_seconds == 0 {
            return Err(invalid("stateTtlSeconds", "must be positive"));
        }
        if self.source_splits == 0 {
            return Err(invalid("sourceSplits", "must be at least 1"));
        }
        if self.sink.parallelism == Some(0) {
            return Err(invalid("sink.parallelism", "must be at least 1"));
        }
        if self.sink.max_records_per_second == Some(0) {
            return Err(invalid("sink.maxRecordsPerSecond", "must be at least 1"));
        }
        match &self.input {
            Some(path) if !path.is_file() => {
                return Err(invalid(
                    "input",
                    format!("{} is not a readable file", path.display()),
                ))
            }
            Some(_) => {}
            None => {
                let generator = &self.generator;
                if generator.users == 0 {
                    return Err(invalid("generator.users", "must be at least 1"));
                }
                if generator.clicks_per_second == 0 {
                    return Err(invalid("generator.clicksPerSecond", "must be at least 1"));
                }
                if generator.out_of_order_ms > self.max_out_of_order_ms {
                    return Err(invalid(
                        "generator.outOfOrderMs",
                        format!(
                            "{} exceeds maxOutOfOrderMs ({}): clicks would arrive late",
                            generator.out_of_order_ms, self.max_out_of_order_ms
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn rules(&self) -> SessionRules {
        SessionRules {
            gap_ms: self.session_gap_ms,
            state_ttl: Duration::from_secs(self.state_ttl_seconds),
        }
    }

    /// The clicks, from the file or the generator. Both sources have the uid `clicks`, so a
    /// savepoint's read positions map to whichever the job reads (positions only make sense
    /// for the same input, of course).
    pub fn clicks(&self, job: &JobBuilder) -> Result<Stream<Click>, Error> {
        let watermarks = WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(
            self.max_out_of_order_ms,
        ));
        Ok(match &self.input {
            Some(path) => job.source(
                "clicks",
                JsonLinesSource::new(path, self.source_splits, Click::time),
                watermarks,
            ),
            None => job.source(
                "clicks",
                ClickGenerator::new(self.generator.clone(), self.source_splits),
                watermarks,
            ),
        })
    }

    /// Writes `out` where `output` says, at the sink's parallelism and rate.
    pub fn attach_output<O: Data + Serialize>(&self, out: &Stream<O>) {
        let rebalanced;
        let out = match self.sink.parallelism {
            Some(p) => {
                rebalanced = out.rebalance("to-sink", p);
                &rebalanced
            }
            None => out,
        };
        let dir = match &self.output {
            Output::Path(p) if p.as_os_str() != "discard" => Some(p),
            _ => None,
        };
        match (dir, self.sink.max_records_per_second) {
            (None, None) => out.sink("output", DiscardSink),
            (None, Some(rate)) => out.sink("output", Throttled::new(DiscardSink, rate)),
            (Some(dir), None) => out.sink("output", JsonLinesSink::new(dir)),
            (Some(dir), Some(rate)) => {
                out.sink("output", Throttled::new(JsonLinesSink::new(dir), rate))
            }
        }
    }
}
