//! Jobs by name: what a binary can run, each defined on a [`JobBuilder`] from the
//! configuration in its manifest (`spec.job.config`).

use super::JobBuilder;
use crate::error::Error;
use crate::exec::JobGraph;
use std::collections::BTreeMap;

/// Adds a job's operators to `job`, configured from the manifest's `spec.job.config`.
pub type DefineJob =
    Box<dyn Fn(&JobBuilder, &serde_json::Value) -> Result<(), Error> + Send + Sync>;

struct Registered {
    description: String,
    define: DefineJob,
}

/// The jobs a binary can run, by name.
#[derive(Default)]
pub struct JobRegistry {
    jobs: BTreeMap<String, Registered>,
}

impl JobRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(
        &mut self,
        name: &str,
        description: &str,
        define: impl Fn(&JobBuilder, &serde_json::Value) -> Result<(), Error> + Send + Sync + 'static,
    ) {
        self.jobs.insert(
            name.to_string(),
            Registered {
                description: description.to_string(),
                define: Box::new(define),
            },
        );
    }

    /// `(name, description)` of every job.
    pub fn list(&self) -> Vec<(&str, &str)> {
        self.jobs
            .iter()
            .map(|(n, r)| (n.as_str(), r.description.as_str()))
            .collect()
    }

    /// Builds job `name` at `parallelism` from its configuration.
    pub fn build(
        &self,
        name: &str,
        parallelism: usize,
        max_parallelism: u32,
        config: &serde_json::Value,
    ) -> Result<JobGraph, Error> {
        let registered = self.jobs.get(name).ok_or_else(|| Error::UnknownJob {
            name: name.to_string(),
            known: self.jobs.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
        let job = JobBuilder::new(name, parallelism, max_parallelism);
        (registered.define)(&job, config)?;
        job.build()
    }
}
