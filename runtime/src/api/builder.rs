//! Starting a job definition: the builder every stream of a job refers to, its sources,
//! and the checks that turn the definition into a graph to run.

use super::Stream;
use crate::error::Error;
use crate::exec::graph::{no_states, JobGraph, NodeDef, NodeKind, Outputs, PortType};
use crate::exec::{BuildCx, SourceTask, SplitDiscovery, Task};
use crate::record::Data;
use crate::source::Source;
use crate::state::MAX_MAX_PARALLELISM;
use crate::watermark::WatermarkStrategy;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

pub(super) struct GraphState {
    pub(super) name: String,
    pub(super) nodes: Vec<NodeDef>,
    pub(super) parallelism: usize,
    pub(super) max_parallelism: u32,
    pub(super) watermark_interval: Duration,
    pub(super) errors: Vec<String>,
}

/// Starts a job definition; streams created from it add operators to the job.
#[derive(Clone)]
pub struct JobBuilder {
    pub(super) g: Rc<RefCell<GraphState>>,
}

impl JobBuilder {
    /// `parallelism` is the default for sources and keyed operators; `max_parallelism` fixes
    /// the number of key groups for the life of the job.
    pub fn new(name: impl Into<String>, parallelism: usize, max_parallelism: u32) -> Self {
        JobBuilder {
            g: Rc::new(RefCell::new(GraphState {
                name: name.into(),
                nodes: Vec::new(),
                parallelism: parallelism.max(1),
                max_parallelism,
                watermark_interval: Duration::from_millis(50),
                errors: Vec::new(),
            })),
        }
    }

    /// The job's name.
    pub fn name(&self) -> String {
        self.g.borrow().name.clone()
    }

    pub fn parallelism(&self) -> usize {
        self.g.borrow().parallelism
    }

    /// How often sources emit watermarks while data flows (default 50 ms).
    pub fn set_watermark_interval(&self, interval: Duration) {
        self.g.borrow_mut().watermark_interval = interval;
    }

    pub(super) fn add(&self, node: NodeDef) -> usize {
        let mut g = self.g.borrow_mut();
        g.nodes.push(node);
        g.nodes.len() - 1
    }

    /// A source read by `parallelism()` subtasks; split `i` goes to subtask
    /// `i % parallelism`.
    pub fn source<T: Data, S: Source<T>>(
        &self,
        name: &str,
        source: S,
        watermarks: WatermarkStrategy,
    ) -> Stream<T> {
        let source = Arc::new(source);
        let interval = self.g.borrow().watermark_interval;
        let build = Arc::new(move |cx: &BuildCx, mut outputs: Outputs| {
            let out = outputs.take::<T>(0);
            // Splits the restored snapshot does not know appeared after it was taken.
            let restoring = cx.restores_operator();
            let mut known: Vec<(usize, u64, bool)> = Vec::new();
            let mut new: Vec<usize> = Vec::new();
            let split_count = source.split_count();
            for split in (0..split_count).filter(|s| s % cx.parallelism == cx.subtask) {
                match cx.restored_split(split) {
                    Some(p) => known.push((split, p.offset, p.done)),
                    None if restoring => new.push(split),
                    None => known.push((split, 0, false)),
                }
            }
            let positions: Vec<(usize, u64)> = known.iter().map(|&(s, o, _)| (s, o)).collect();
            let mut readers: Vec<_> = source
                .open_splits(&positions)?
                .into_iter()
                .zip(&known)
                .map(|(reader, &(s, _, done))| (s, reader, done))
                .collect();
            if !new.is_empty() {
                let opened = source.open_new_splits(&new)?;
                readers.extend(new.into_iter().zip(opened).map(|(s, r)| (s, r, false)));
            }
            let discovery = source.discovered_split_count().map(|_| SplitDiscovery {
                source: source.clone() as Arc<dyn Source<T>>,
                known: split_count,
            });
            let task: Box<dyn Task> = Box::new(SourceTask::new(
                readers,
                discovery,
                out,
                watermarks.clone(),
                interval,
                cx.clone(),
            ));
            Ok(task)
        });
        let node = self.add(NodeDef {
            name: name.to_string(),
            uid: name.to_string(),
            parallelism: self.parallelism(),
            kind: NodeKind::Source(build),
            inputs: Vec::new(),
            ports: vec![PortType::of::<T>()],
            side_ports: Vec::new(),
            stateful: false,
            states: no_states(),
            is_sink: false,
        });
        Stream::new(self.clone(), node, 0)
    }

    /// Checks the definition and returns the graph to run.
    pub fn build(&self) -> Result<JobGraph, Error> {
        let g = self.g.borrow();
        if let Some(e) = g.errors.first() {
            return Err(Error::Graph(e.clone()));
        }
        if g.max_parallelism == 0 || g.max_parallelism > MAX_MAX_PARALLELISM {
            return Err(Error::Graph(format!(
                "max parallelism {} is outside 1..={MAX_MAX_PARALLELISM}",
                g.max_parallelism
            )));
        }
        let mut uids: HashMap<&str, &str> = HashMap::new();
        for n in &g.nodes {
            if let Some(other) = uids.insert(&n.uid, &n.name) {
                return Err(Error::Graph(format!(
                    "operators '{other}' and '{}' have the same uid '{}'; uids must be unique",
                    n.name, n.uid
                )));
            }
            if n.stateful && n.parallelism > g.max_parallelism as usize {
                return Err(Error::Graph(format!(
                    "operator '{}' has parallelism {} above the max parallelism {}",
                    n.uid, n.parallelism, g.max_parallelism
                )));
            }
        }
        Ok(JobGraph {
            name: g.name.clone(),
            nodes: g.nodes.clone(),
            max_parallelism: g.max_parallelism,
        })
    }
}
