//! Starting a run: the channels of every edge (local queues, or logical channels to other
//! processes when a placement spreads the job over workers), each subtask's chain of
//! operators built on its own thread, and the supervising thread. Embedded runs and
//! distributed workers start alike.

use super::checkpoint::{CheckpointControl, CheckpointStatus, Command};
use super::embedded::RunOptions;
use super::erased::{Erased, ErasedSend};
use super::graph::{ErasedRouting, JobGraph, NodeKind, Outputs, Partition, PortType};
use super::metrics::TaskMetrics;
use super::restore::Prepared;
use super::running::{spawn_recorded, JobInfo, RunningJob, ThreadSlot};
use super::{BuildCx, FailureCell, HeadArgs, Task};
use crate::error::Error;
use crate::snapshot::{JobLayout, RestoredState};
use crate::state::KeyGroupAssignment;
use crossbeam_utils::sync::{Parker, Unparker};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

type EdgeKey = (usize, usize, usize); // (consumer node, input index, producer subtask)

/// A name for this run that no earlier run of the job had.
pub(crate) fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}{:05x}",
        nanos % (1 << 48),
        std::process::id() % (1 << 20)
    )
}

/// The share of a job one process runs when the job spans processes: subtask `s` of every
/// operator runs in slot `s`, and each slot is on one worker.
pub(crate) struct Placement<'a> {
    /// The attempt's run id, the same in every worker: sinks tell their own pending output
    /// from that of earlier attempts by it.
    pub(crate) run_id: &'a str,
    /// The worker of each slot.
    pub(crate) slot_workers: &'a [u32],
    pub(crate) this_worker: u32,
    pub(crate) links: &'a mut dyn RemoteLinks,
}

impl Placement<'_> {
    fn is_local(&self, subtask: usize) -> bool {
        self.slot_workers.get(subtask) == Some(&self.this_worker)
    }

    fn worker_of(&self, subtask: usize) -> Result<u32, Error> {
        self.slot_workers
            .get(subtask)
            .copied()
            .ok_or_else(|| Error::Graph(format!("no worker placed for slot {subtask}")))
    }
}

/// The connections of a process to the other workers of its job. Logical channel ids are
/// the same in every process: every process numbers the job's edges in the same order.
pub(crate) trait RemoteLinks {
    /// A sender of the port's records to `channel` on `worker`.
    fn sender(
        &mut self,
        port: &PortType,
        worker: u32,
        channel: u32,
        metrics: Arc<TaskMetrics>,
    ) -> Result<ErasedSend, Error>;
    /// Delivers `channel` from `worker` into the local sender `to`.
    fn deliver(&mut self, port: &PortType, worker: u32, channel: u32, to: ErasedSend);
}

/// What the supervising thread of a run gets: in embedded mode the checkpoint coordinator,
/// on a worker the relay to the job's coordinator.
pub(crate) struct SupervisorParts {
    pub(crate) layout: JobLayout,
    /// Subtasks of the whole job.
    pub(crate) tasks: usize,
    /// The job's subtasks this process runs, by task index.
    pub(crate) local_tasks: Vec<usize>,
    pub(crate) control: Arc<CheckpointControl>,
    pub(crate) reports: crossbeam_channel::Receiver<super::checkpoint::Report>,
    pub(crate) commands: crossbeam_channel::Receiver<Command>,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) status: Arc<Mutex<CheckpointStatus>>,
}

pub(crate) type Supervise = Box<dyn FnOnce(SupervisorParts) -> Result<(), Error> + Send>;

/// Starts the subtasks of `graph` this process runs (all of them without a placement) and
/// the supervising thread.
pub(crate) fn launch(
    graph: JobGraph,
    options: RunOptions,
    prepared: Prepared,
    mut placement: Option<Placement<'_>>,
    supervise: Supervise,
) -> Result<RunningJob, Error> {
    let Prepared {
        restored,
        assignments,
        status,
    } = prepared;
    let declared = graph.declared_operators()?;
    let info = JobInfo {
        name: graph.name.clone(),
        parallelism: graph.nodes.iter().map(|n| n.parallelism).max().unwrap_or(1),
        max_parallelism: graph.max_parallelism,
        declared: declared.clone(),
        topology: graph.topology(),
    };
    let graph = Arc::new(graph);
    let (control, reports) = CheckpointControl::new();
    let (commands_tx, commands) = crossbeam_channel::unbounded();
    let status = Arc::new(Mutex::new(status));
    let run_id: Arc<str> = match &placement {
        Some(p) => Arc::from(p.run_id),
        None => Arc::from(new_run_id()),
    };
    let state_backend = Arc::new(options.state_backend.clone());
    let heads: Vec<usize> = (0..graph.nodes.len())
        .filter(|&n| !graph.is_chained(n))
        .collect();
    let here: Option<Vec<bool>> = placement.as_ref().map(|p| {
        let most = graph.nodes.iter().map(|n| n.parallelism).max().unwrap_or(1);
        (0..most).map(|s| p.is_local(s)).collect()
    });
    let local = |s: usize| here.as_ref().is_none_or(|h| h.get(s) == Some(&true));

    // One metrics record and one doorbell per subtask of every chain run here.
    let mut metrics: HashMap<(usize, usize), Arc<TaskMetrics>> = HashMap::new();
    let mut parkers: HashMap<(usize, usize), Parker> = HashMap::new();
    let mut unparkers: HashMap<(usize, usize), Unparker> = HashMap::new();
    for &h in &heads {
        let node = &graph.nodes[h];
        let is_source = matches!(node.kind, NodeKind::Source(_));
        let chain_has_sink =
            (0..graph.nodes.len()).any(|n| graph.nodes[n].is_sink && graph.head_of(n) == h);
        for s in (0..node.parallelism).filter(|&s| local(s)) {
            let m = TaskMetrics::new(format!("{}[{s}]", node.uid), is_source, chain_has_sink);
            metrics.insert((h, s), Arc::new(m));
            let p = Parker::new();
            unparkers.insert((h, s), p.unparker().clone());
            parkers.insert((h, s), p);
        }
    }

    // Channels for every edge that crosses chains; an edge between processes is a logical
    // channel of a connection, numbered alike in every process.
    let mut senders: HashMap<EdgeKey, Vec<ErasedSend>> = HashMap::new();
    let mut receivers: HashMap<(usize, usize), Vec<(usize, ErasedSend)>> = HashMap::new();
    let mut channel_id: u32 = 0;
    for &h in &heads {
        let node = &graph.nodes[h];
        for (i, edge) in node.inputs.iter().enumerate() {
            let from = &graph.nodes[edge.from];
            let producer_head = graph.head_of(edge.from);
            let pointwise = matches!(edge.partition, Partition::Forward)
                && from.parallelism == node.parallelism;
            let port = from.ports[edge.port];
            for ps in 0..from.parallelism {
                let consumers: Vec<usize> = if pointwise {
                    vec![ps]
                } else {
                    (0..node.parallelism).collect()
                };
                let mut txs = Vec::with_capacity(consumers.len());
                for cs in consumers {
                    let channel = channel_id;
                    channel_id += 1;
                    match (local(ps), local(cs), placement.as_mut()) {
                        (true, true, _) | (_, _, None) => {
                            let (tx, rx) = (port.channel)(
                                options.channel_capacity,
                                unparkers[&(h, cs)].clone(),
                                metrics[&(producer_head, ps)].clone(),
                            );
                            txs.push(tx);
                            receivers.entry((h, cs)).or_default().push((edge.side, rx));
                        }
                        (true, false, Some(p)) => {
                            let worker = p.worker_of(cs)?;
                            let producer = metrics[&(producer_head, ps)].clone();
                            txs.push(p.links.sender(&port, worker, channel, producer)?);
                        }
                        (false, true, Some(p)) => {
                            // Delivery blocking on a full queue is no subtask's backpressure
                            // here: the producer's shows as credits withheld over there, and
                            // the consumer is not waiting for room. (Recorded as the
                            // consumer's, it made a busy sink look backpressured and idle.)
                            let (tx, rx) = (port.channel)(
                                options.channel_capacity,
                                unparkers[&(h, cs)].clone(),
                                Arc::new(TaskMetrics::unreported()),
                            );
                            let worker = p.worker_of(ps)?;
                            p.links.deliver(&port, worker, channel, tx);
                            receivers.entry((h, cs)).or_default().push((edge.side, rx));
                        }
                        (false, false, Some(_)) => {}
                    }
                }
                if local(ps) {
                    senders.insert((h, i, ps), txs);
                }
            }
        }
    }

    let cancel = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let mut slots = Vec::new();
    let mut task_metrics_in_order = Vec::new();
    let mut local_tasks = Vec::new();
    let mut task_index = 0;
    for &h in &heads {
        for s in 0..graph.nodes[h].parallelism {
            let task = task_index;
            task_index += 1;
            if !local(s) {
                continue;
            }
            local_tasks.push(task);
            let env = TaskEnv {
                task,
                control: control.clone(),
                restored: restored.clone(),
                run_id: run_id.clone(),
                assignments: assignments.clone(),
                state_backend: state_backend.clone(),
            };
            let mut wiring = Wiring {
                senders: HashMap::new(),
            };
            // The senders this subtask's chain writes to.
            for (c, consumer) in graph.nodes.iter().enumerate() {
                if graph.is_chained(c) {
                    continue;
                }
                for (i, edge) in consumer.inputs.iter().enumerate() {
                    if graph.head_of(edge.from) == h {
                        if let Some(txs) = senders.remove(&(c, i, s)) {
                            wiring.senders.insert((c, i), txs);
                        }
                    }
                }
            }
            let inputs = receivers.remove(&(h, s)).unwrap_or_default();
            let parker = parkers.remove(&(h, s)).ok_or_else(|| {
                Error::Graph(format!("no doorbell for {}[{s}]", graph.nodes[h].uid))
            })?;
            let task_metrics = metrics[&(h, s)].clone();
            task_metrics_in_order.push(task_metrics.clone());
            let graph = graph.clone();
            let cancel = cancel.clone();
            let options = options.clone();
            let name = format!("{}[{s}]", graph.nodes[h].uid);
            let slot = Arc::new(ThreadSlot {
                subtask: Some((graph.nodes[h].uid.clone(), s)),
                metrics: Some(task_metrics.clone()),
                ended: Mutex::new(None),
            });
            slots.push(slot.clone());
            let handle = spawn_recorded(name.clone(), slot, move || {
                let result = build_task(
                    &graph,
                    h,
                    s,
                    wiring,
                    inputs,
                    parker,
                    task_metrics,
                    &options,
                    &env,
                )
                .and_then(|task| task.run(&cancel));
                if let Err(e) = &result {
                    if !matches!(e, Error::Cancelled) {
                        // Stop the rest of the job: a failed subtask fails the job.
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
                result
            })?;
            threads.push((name, handle));
        }
    }

    let parts = SupervisorParts {
        layout: JobLayout {
            job: graph.name.clone(),
            max_parallelism: graph.max_parallelism,
            declared,
            assignments: graph
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(n, node)| {
                    Some((node.uid.clone(), assignments.get(&n)?.owners().to_vec()))
                })
                .collect(),
        },
        tasks: task_index,
        local_tasks,
        control: control.clone(),
        reports,
        commands,
        cancel: cancel.clone(),
        status: status.clone(),
    };
    let stop_job = cancel.clone();
    let slot = Arc::new(ThreadSlot {
        subtask: None,
        metrics: None,
        ended: Mutex::new(None),
    });
    slots.push(slot.clone());
    let handle = spawn_recorded("checkpoints".into(), slot, move || {
        let result = supervise(parts);
        if result.is_err() {
            // Checkpointing failed for good: so does the job.
            stop_job.store(true, Ordering::Relaxed);
        }
        result
    })?;
    threads.push(("checkpoint coordinator".to_string(), handle));

    Ok(RunningJob {
        threads: Mutex::new(threads),
        slots,
        metrics: task_metrics_in_order,
        cancel,
        stop_requested: AtomicBool::new(false),
        started: Instant::now(),
        commands: commands_tx,
        control,
        status,
        info,
    })
}

/// What every subtask of a run shares, beyond its wiring.
struct TaskEnv {
    task: usize,
    control: Arc<CheckpointControl>,
    restored: Option<Arc<RestoredState>>,
    run_id: Arc<str>,
    assignments: Arc<HashMap<usize, Arc<KeyGroupAssignment>>>,
    state_backend: Arc<crate::state::StateBackend>,
}

/// The key-group owners of node `n`'s subtasks: senders route by it and the node's keyed
/// state holds exactly the groups it assigns to its subtask.
fn assignment_for(
    assignments: &HashMap<usize, Arc<KeyGroupAssignment>>,
    graph: &JobGraph,
    n: usize,
) -> Arc<KeyGroupAssignment> {
    assignments.get(&n).cloned().unwrap_or_else(|| {
        Arc::new(KeyGroupAssignment::contiguous(
            graph.max_parallelism,
            graph.nodes[n].parallelism as u32,
        ))
    })
}

/// The channel senders one subtask writes to, by (consumer node, input index).
struct Wiring {
    senders: HashMap<(usize, usize), Vec<ErasedSend>>,
}

#[allow(clippy::too_many_arguments)]
fn build_task(
    graph: &JobGraph,
    head: usize,
    subtask: usize,
    mut wiring: Wiring,
    inputs: Vec<(usize, ErasedSend)>,
    parker: Parker,
    metrics: Arc<TaskMetrics>,
    options: &RunOptions,
    env: &TaskEnv,
) -> Result<Box<dyn Task>, Error> {
    let failure = FailureCell::default();
    let cx_for = |n: usize| BuildCx {
        uid: graph.nodes[n].uid.clone(),
        subtask,
        parallelism: graph.nodes[n].parallelism,
        batch_size: options.batch_size,
        assignment: assignment_for(&env.assignments, graph, n),
        clock: options.clock.clone(),
        metrics: metrics.clone(),
        failure: failure.clone(),
        task: env.task,
        control: env.control.clone(),
        restored: env.restored.clone(),
        run_id: env.run_id.clone(),
        state_backend: env.state_backend.clone(),
        redact_keys: options.redact_keys,
    };
    let outputs = build_outputs(graph, head, &cx_for, &mut wiring, &env.assignments)?;
    let cx = cx_for(head);
    match &graph.nodes[head].kind {
        NodeKind::Source(build) => build(&cx, outputs),
        NodeKind::OneInput { build, head: make } | NodeKind::TwoInput { build, head: make } => {
            let op = build(&cx, outputs)?;
            make(HeadArgs {
                op,
                inputs,
                parker,
                cx,
            })
        }
    }
}

/// Builds, for each output port of `node`, the operator that receives it: the chained
/// operators of this thread and the writers to other chains, joined by a tee when a port
/// has several consumers.
fn build_outputs(
    graph: &JobGraph,
    node: usize,
    cx_for: &dyn Fn(usize) -> BuildCx,
    wiring: &mut Wiring,
    assignments: &HashMap<usize, Arc<KeyGroupAssignment>>,
) -> Result<Outputs, Error> {
    let def = &graph.nodes[node];
    let mut ports: Vec<Erased> = Vec::with_capacity(def.ports.len());
    for (p, port) in def.ports.iter().enumerate() {
        let mut consumers: Vec<Erased> = Vec::new();
        for (c, consumer) in graph.nodes.iter().enumerate() {
            for (i, edge) in consumer.inputs.iter().enumerate() {
                if edge.from != node || edge.port != p {
                    continue;
                }
                if graph.is_chained(c) {
                    let outputs = build_outputs(graph, c, cx_for, wiring, assignments)?;
                    let NodeKind::OneInput { build, .. } = &consumer.kind else {
                        return Err(Error::Graph(format!(
                            "chained node {} has no single input",
                            consumer.uid
                        )));
                    };
                    consumers.push(build(&cx_for(c), outputs)?);
                } else {
                    let txs = wiring.senders.remove(&(c, i)).ok_or_else(|| {
                        Error::Graph(format!(
                            "edge {} -> {} has no channels",
                            def.uid, consumer.uid
                        ))
                    })?;
                    let routing = match &edge.partition {
                        Partition::Forward if def.parallelism == consumer.parallelism => {
                            ErasedRouting::Pointwise
                        }
                        Partition::Forward | Partition::Rebalance => ErasedRouting::Rebalance,
                        Partition::Broadcast => ErasedRouting::Broadcast,
                        Partition::Hash(hasher) => ErasedRouting::Hash {
                            hasher: hasher.clone(),
                            assignment: assignment_for(assignments, graph, c),
                            consumer: consumer.uid.clone(),
                        },
                    };
                    consumers.push((port.writer)(txs, routing, &cx_for(node)));
                }
            }
        }
        ports.push(match consumers.len() {
            0 => (port.discard)(),
            1 => consumers
                .pop()
                .ok_or_else(|| Error::Graph("lost consumer".into()))?,
            _ => (port.tee)(consumers),
        });
    }
    Ok(Outputs::new(ports))
}
