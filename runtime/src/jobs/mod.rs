//! The jobs bundled with Sluice (the Nexmark queries, the fraud example) and the
//! configuration they share. The `sluice` binary runs them by name from
//! [`JobRegistry::bundled`]; a user's own binary registers its jobs in a [`JobRegistry`]
//! and hands it to [`crate::cli::main_with`], which makes it a complete `sluice` binary for
//! those jobs.

pub mod fraud;
pub mod kafka_io;
pub mod nexmark_queries;

pub use crate::api::{DefineJob, JobRegistry};

use crate::api::{Data, JobBuilder, Stream, WatermarkStrategy};
use crate::connectors::{
    nexmark_file_source, DiscardSink, FileSinkOptions, JsonLinesSink, NexmarkSource,
    ObjectFileSink, Throttled,
};
use crate::error::Error;
use crate::nexmark::{Event, NexmarkConfig};
use crate::objects;
use fraud::FraudRule;
use nexmark_queries::QueryWindows;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

type DefineFn = fn(&JobBuilder, &serde_json::Value) -> Result<(), Error>;

impl JobRegistry {
    /// The jobs bundled with Sluice: the Nexmark queries and the fraud example.
    pub fn bundled() -> Self {
        use nexmark_queries::*;
        let mut r = JobRegistry::new();
        let queries: [(&str, &str, DefineFn); 9] = [
            (
                "nexmark-q0",
                "Nexmark q0: passthrough of every bid",
                |j, c| nexmark_job(j, c, q0),
            ),
            (
                "nexmark-q1",
                "Nexmark q1: bid prices converted to euros",
                |j, c| nexmark_job(j, c, q1),
            ),
            (
                "nexmark-q2",
                "Nexmark q2: bids on every 123rd auction",
                |j, c| nexmark_job(j, c, q2),
            ),
            (
                "nexmark-q3",
                "Nexmark q3: local item suggestion (incremental join)",
                |j, c| nexmark_job(j, c, q3),
            ),
            (
                "nexmark-q4",
                "Nexmark q4: average winning price per category (updating)",
                |j, c| nexmark_job(j, c, q4),
            ),
            (
                "nexmark-q5",
                "Nexmark q5: hot items per sliding window",
                |j, c| nexmark_job(j, c, q5),
            ),
            (
                "nexmark-q7",
                "Nexmark q7: highest bid per tumbling window",
                |j, c| nexmark_job(j, c, q7),
            ),
            (
                "nexmark-q8",
                "Nexmark q8: new users who created auctions (window join)",
                |j, c| nexmark_job(j, c, q8),
            ),
            (
                "nexmark-q11",
                "Nexmark q11: bids per user session",
                |j, c| nexmark_job(j, c, q11),
            ),
        ];
        for (name, description, define) in queries {
            r.register(name, description, define);
        }
        r.register(
            "fraud-small-then-large",
            "A small charge followed soon by a large one on the same card raises an alert",
            |job, config| {
                let cfg: NexmarkJobConfig = parse_config(config)?;
                cfg.rule.validate()?;
                let events = cfg.events(job)?;
                let alerts = fraud::fraud(job, &events, &cfg.rule);
                cfg.attach_output(&alerts)
            },
        );
        r
    }
}

/// Reads a job's config, naming the offending field on error.
pub fn parse_config<T: DeserializeOwned>(config: &serde_json::Value) -> Result<T, Error> {
    let empty = serde_json::Value::Object(Default::default());
    let value = if config.is_null() { &empty } else { config };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!(".{path}")
        };
        Error::Config(format!("spec.job.config{at}: {}", e.inner()))
    })
}

/// Configuration shared by the bundled jobs (`spec.job.config`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NexmarkJobConfig {
    /// The event generator (used unless `input` is set; `outOfOrderMs` also sets the
    /// watermark bound when reading a file).
    #[serde(default)]
    pub generator: NexmarkConfig,
    /// Read events from this JSON-lines file (as written by `sluice nexmark generate`), or
    /// from a topic: `kafka://host:port/topic` (as written by `sluice nexmark produce`).
    #[serde(default)]
    pub input: Option<PathBuf>,
    /// Where results go: a directory of JSON-lines part files, object storage
    /// (`s3://bucket/prefix`, `file:///dir`: JSON-lines or Parquet parts, see `sink.files`),
    /// a topic (`kafka://host:port/topic`), or `discard` to count them only.
    #[serde(default)]
    pub output: Output,
    /// Kafka connection settings and options for `kafka://` input and output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<kafka_io::KafkaJobConfig>,
    #[serde(default)]
    pub windows: QueryWindows,
    /// The fraud job's rule.
    #[serde(default)]
    pub rule: FraudRule,
    /// Splits of the event stream. Fixed for the life of the job (like a topic's
    /// partitions), so that source positions restore at any parallelism; subtasks beyond
    /// the number of splits have nothing to read.
    #[serde(default = "default_source_splits")]
    pub source_splits: usize,
    #[serde(default)]
    pub sink: SinkConfig,
}

/// How results are written (`spec.job.config.sink`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SinkConfig {
    /// Sink subtasks, when not the job's parallelism (results are rebalanced onto them).
    #[serde(default)]
    pub parallelism: Option<usize>,
    /// Each sink subtask writes at most this many records per second; a faster stream is
    /// slowed down by backpressure.
    #[serde(default)]
    pub max_records_per_second: Option<u64>,
    /// Format, rolling and partitioning of the parts written to object storage.
    #[serde(default)]
    pub files: FileSinkOptions,
}

fn default_source_splits() -> usize {
    8
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Output {
    #[default]
    Discard,
    Path(PathBuf),
}

impl NexmarkJobConfig {
    /// The event stream, in `source_splits` splits.
    pub fn events(&self, job: &JobBuilder) -> Result<Stream<Event>, Error> {
        self.generator
            .validate()
            .map_err(|e| Error::Config(format!("spec.job.config.generator.{e}")))?;
        let watermarks = WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(
            self.generator.out_of_order_ms,
        ));
        if self.source_splits == 0 {
            return Err(Error::Config(
                "spec.job.config.sourceSplits: must be at least 1".into(),
            ));
        }
        let splits = self.source_splits;
        if let Some(uri) = self.input.as_deref().and_then(kafka_io::kafka_uri) {
            return kafka_io::events(job, uri, self.kafka.as_ref(), watermarks);
        }
        Ok(match &self.input {
            Some(path) => {
                if !path.is_file() {
                    return Err(Error::Config(format!(
                        "spec.job.config.input: {} is not a readable file",
                        path.display()
                    )));
                }
                job.source(
                    "nexmark-file",
                    nexmark_file_source(path, splits),
                    watermarks,
                )
            }
            None => job.source(
                "nexmark",
                NexmarkSource::new(&self.generator, splits),
                watermarks,
            ),
        })
    }

    /// Adds the sink `output` names; fails when it is a topic that cannot be reached.
    pub fn attach_output<O: Data + Serialize>(&self, out: &Stream<O>) -> Result<(), Error> {
        let rebalanced;
        let out = match self.sink.parallelism {
            Some(p) => {
                rebalanced = out.rebalance("to-sink", p.max(1));
                &rebalanced
            }
            None => out,
        };
        let path = match &self.output {
            Output::Path(p) if p.as_os_str() != "discard" => Some(p),
            _ => None,
        };
        if let Some(uri) = path.and_then(|p| kafka_io::kafka_uri(p)) {
            let rate = self.sink.max_records_per_second;
            return kafka_io::sink(out, uri, self.kafka.as_ref(), rate);
        }
        let uri = path
            .and_then(|p| p.to_str())
            .filter(|p| p.starts_with(objects::S3) || p.starts_with(objects::FILE));
        if let Some(uri) = uri {
            let sink = ObjectFileSink::new(uri, self.sink.files.clone())?;
            return attach(out, "output", sink, self.sink.max_records_per_second);
        }
        let rate = self.sink.max_records_per_second;
        match path {
            None => attach(out, "discard", DiscardSink, rate),
            Some(p) => attach(out, "output", JsonLinesSink::new(p), rate),
        }
    }
}

/// Adds `sink` as the job's output `uid`, throttled to `rate` records per second if given.
fn attach<O: Data, S: crate::sink::Sink<O>>(
    out: &Stream<O>,
    uid: &str,
    sink: S,
    rate: Option<u64>,
) -> Result<(), Error> {
    match rate {
        None => out.sink(uid, sink),
        Some(rate) => out.sink(uid, Throttled::new(sink, rate)),
    }
    Ok(())
}

fn nexmark_job<O: Data + Serialize>(
    job: &JobBuilder,
    config: &serde_json::Value,
    query: fn(&JobBuilder, &Stream<Event>, &QueryWindows) -> Stream<O>,
) -> Result<(), Error> {
    let cfg: NexmarkJobConfig = parse_config(config)?;
    let events = cfg.events(job)?;
    let out = query(job, &events, &cfg.windows);
    cfg.attach_output(&out)
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;

    /// Every bundled job's output type has a Parquet schema, so Parquet output never fails
    /// at start for them.
    #[test]
    fn the_bundled_jobs_output_types_have_parquet_schemas() {
        use super::fraud::FraudAlert;
        use super::nexmark_queries::{Q1, Q11, Q2, Q3, Q4, Q5, Q7, Q8};
        use crate::nexmark::Bid;
        use arrow_schema::FieldRef;
        use serde_arrow::schema::{SchemaLike, TracingOptions};
        fn traced<T: DeserializeOwned>() -> Option<String> {
            Vec::<FieldRef>::from_type::<T>(TracingOptions::default())
                .err()
                .map(|e| e.to_string())
        }
        let failed: Vec<String> = [
            ("Bid", traced::<Bid>()),
            ("Q1", traced::<Q1>()),
            ("Q2", traced::<Q2>()),
            ("Q3", traced::<Q3>()),
            ("Q4", traced::<Q4>()),
            ("Q5", traced::<Q5>()),
            ("Q7", traced::<Q7>()),
            ("Q8", traced::<Q8>()),
            ("Q11", traced::<Q11>()),
            ("FraudAlert", traced::<FraudAlert>()),
        ]
        .into_iter()
        .filter_map(|(name, e)| e.map(|e| format!("{name}: {e}")))
        .collect();
        assert!(failed.is_empty(), "{failed:?}");
    }
}
