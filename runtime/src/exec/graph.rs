//! The job graph: operators (nodes) with their parallelism and the edges between them.
//! Types are erased here so that a graph of any shape fits one structure; every erased piece
//! is a function monomorphized for its record type when the job was defined, so a running
//! job moves fully typed batches and never downcasts per record.

use crate::error::Error;
use crate::exec::channel::{self, ChannelSender};
use crate::exec::erased::{downcast_op, downcast_send, Erased, ErasedSend};
use crate::exec::exchange::{ExchangeWriter, KeyHasher, Routing};
use crate::exec::metrics::TaskMetrics;
use crate::exec::net::{InboundChannels, OutboundConnection};
use crate::exec::operator::{Discard, Tee};
use crate::exec::{BuildCx, HeadArgs, Operator, Task};
use crate::record::Data;
use crossbeam_utils::sync::Unparker;
use sluice_crds::control::{GroupEdge, OperatorGroup, Partitioning, Topology};
use std::any::Any;
use std::sync::Arc;

/// Builds one subtask's operator for a node, given its downstream per output port.
pub(crate) type BuildOperator =
    Arc<dyn Fn(&BuildCx, Outputs) -> Result<Erased, Error> + Send + Sync>;
/// Builds one subtask of a source.
pub(crate) type BuildSource =
    Arc<dyn Fn(&BuildCx, Outputs) -> Result<Box<dyn Task>, Error> + Send + Sync>;

/// Functions that know the record type of an output port.
#[derive(Clone, Copy)]
pub(crate) struct PortType {
    pub(crate) type_name: &'static str,
    pub(crate) channel: fn(usize, Unparker, Arc<TaskMetrics>) -> (ErasedSend, ErasedSend),
    pub(crate) writer: fn(Vec<ErasedSend>, ErasedRouting, &BuildCx) -> Erased,
    pub(crate) tee: fn(Vec<Erased>) -> Erased,
    pub(crate) discard: fn() -> Erased,
    /// A `ChannelSender` of the port's records to logical channel `channel` of a
    /// connection to another process.
    pub(crate) remote_sender: fn(&OutboundConnection, u32, Arc<TaskMetrics>) -> ErasedSend,
    /// Delivers logical channel `channel` of an inbound connection into a local
    /// `ChannelSender` of the port's records.
    pub(crate) deliver_inbound: fn(&mut InboundChannels, u32, ErasedSend),
}

fn new_remote_sender<T: Data>(
    connection: &OutboundConnection,
    channel: u32,
    metrics: Arc<TaskMetrics>,
) -> ErasedSend {
    let sender: ChannelSender<T> =
        ChannelSender::Remote(Box::new(connection.sender::<T>(channel, metrics)));
    Box::new(sender)
}

fn deliver_inbound<T: Data>(channels: &mut InboundChannels, channel: u32, to: ErasedSend) {
    channels.add(channel, downcast_send::<ChannelSender<T>>(to));
}

fn new_channel<T: Data>(
    capacity: usize,
    doorbell: Unparker,
    metrics: Arc<TaskMetrics>,
) -> (ErasedSend, ErasedSend) {
    let (tx, rx) = channel::channel::<T>(capacity, doorbell, metrics);
    (Box::new(tx), Box::new(rx))
}

fn new_writer<T: Data>(senders: Vec<ErasedSend>, routing: ErasedRouting, cx: &BuildCx) -> Erased {
    let senders: Vec<ChannelSender<T>> = senders.into_iter().map(downcast_send).collect();
    let routing = match routing {
        ErasedRouting::Pointwise => Routing::Pointwise,
        ErasedRouting::Rebalance => Routing::Rebalance,
        ErasedRouting::Broadcast => Routing::Broadcast,
        ErasedRouting::Hash {
            hasher,
            assignment,
            consumer,
        } => {
            let counts = cx
                .metrics
                .key_group_counts(&consumer, assignment.max_parallelism());
            Routing::Hash(
                hasher
                    .downcast_ref::<KeyHasher<T>>()
                    .expect("key hasher of the port's record type")
                    .clone(),
                assignment,
                counts,
            )
        }
    };
    let op: Box<dyn Operator<T>> = Box::new(ExchangeWriter::new(senders, routing, cx));
    Box::new(op)
}

fn new_tee<T: Data>(outputs: Vec<Erased>) -> Erased {
    let outputs: Vec<Box<dyn Operator<T>>> = outputs.into_iter().map(downcast_op).collect();
    let op: Box<dyn Operator<T>> = Box::new(Tee::new(outputs));
    Box::new(op)
}

fn new_discard<T: Data>() -> Erased {
    let op: Box<dyn Operator<T>> = Box::new(Discard);
    Box::new(op)
}

impl PortType {
    pub(crate) fn of<T: Data>() -> Self {
        PortType {
            type_name: std::any::type_name::<T>(),
            channel: new_channel::<T>,
            writer: new_writer::<T>,
            tee: new_tee::<T>,
            discard: new_discard::<T>,
            remote_sender: new_remote_sender::<T>,
            deliver_inbound: deliver_inbound::<T>,
        }
    }
}

/// The downstream operators of one subtask's node, one per output port.
pub(crate) struct Outputs(Vec<Option<Erased>>);

impl Outputs {
    pub(crate) fn new(ports: Vec<Erased>) -> Self {
        Outputs(ports.into_iter().map(Some).collect())
    }

    /// Takes the operator for `port`, typed.
    pub(crate) fn take<T: 'static>(&mut self, port: usize) -> Box<dyn Operator<T>> {
        downcast_op(self.0[port].take().expect("each output port is taken once"))
    }
}

/// The states an operator declares (name and schema version), known without running it.
pub(crate) type DeclareStates =
    Arc<dyn Fn() -> Result<Vec<crate::snapshot::StateSchema>, Error> + Send + Sync>;

/// An operator that declares no state.
pub(crate) fn no_states() -> DeclareStates {
    Arc::new(|| Ok(Vec::new()))
}

/// An operator with fixed states of its own (windows, joins).
pub(crate) fn fixed_states(states: &[(&str, u32)]) -> DeclareStates {
    let states: Vec<crate::snapshot::StateSchema> = states
        .iter()
        .map(|(name, v)| crate::snapshot::StateSchema {
            name: name.to_string(),
            schema_version: *v,
        })
        .collect();
    Arc::new(move || Ok(states.clone()))
}

#[derive(Clone)]
pub(crate) enum Partition {
    Forward,
    Rebalance,
    Broadcast,
    /// Holds a `KeyHasher<T>` for the edge's record type.
    Hash(Arc<dyn Any + Send + Sync>),
}

pub(crate) enum ErasedRouting {
    Pointwise,
    Rebalance,
    Broadcast,
    Hash {
        hasher: Arc<dyn Any + Send + Sync>,
        assignment: Arc<crate::state::KeyGroupAssignment>,
        /// The keyed operator fed, which the exchange counts records per key group for.
        consumer: String,
    },
}

#[derive(Clone)]
pub(crate) struct InputEdge {
    pub(crate) from: usize,
    pub(crate) port: usize,
    /// 0 for the first (or only) input, 1 for the second input of a two-input operator.
    pub(crate) side: usize,
    pub(crate) partition: Partition,
}

#[derive(Clone)]
pub(crate) enum NodeKind {
    Source(BuildSource),
    OneInput {
        build: BuildOperator,
        head: fn(HeadArgs) -> Result<Box<dyn Task>, Error>,
    },
    TwoInput {
        build: BuildOperator,
        head: fn(HeadArgs) -> Result<Box<dyn Task>, Error>,
    },
}

#[derive(Clone)]
pub(crate) struct NodeDef {
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) parallelism: usize,
    pub(crate) kind: NodeKind,
    pub(crate) inputs: Vec<InputEdge>,
    pub(crate) ports: Vec<PortType>,
    /// Names of extra ports (side outputs) after port 0, by tag name.
    pub(crate) side_ports: Vec<String>,
    pub(crate) stateful: bool,
    pub(crate) states: DeclareStates,
    pub(crate) is_sink: bool,
}

/// A job ready to run.
pub struct JobGraph {
    pub(crate) name: String,
    pub(crate) nodes: Vec<NodeDef>,
    pub(crate) max_parallelism: u32,
}

impl JobGraph {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// `(uid, parallelism, stateful)` of every operator, in definition order.
    pub fn operators(&self) -> Vec<(String, usize, bool)> {
        self.nodes
            .iter()
            .map(|n| (n.uid.clone(), n.parallelism, n.stateful))
            .collect()
    }

    /// What each operator declares, as recorded in snapshots and checked against them.
    pub fn declared_operators(&self) -> Result<Vec<crate::snapshot::DeclaredOperator>, Error> {
        self.nodes
            .iter()
            .map(|n| {
                Ok(crate::snapshot::DeclaredOperator {
                    uid: n.uid.clone(),
                    parallelism: n.parallelism,
                    stateful: n.stateful,
                    states: (n.states)()?,
                })
            })
            .collect()
    }

    /// The operator groups (chains) and the edges between them, as the control API shows
    /// them.
    pub fn topology(&self) -> Topology {
        let heads: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| !self.is_chained(n))
            .collect();
        let groups = heads
            .iter()
            .map(|&h| OperatorGroup {
                name: self.nodes[h].uid.clone(),
                operators: (0..self.nodes.len())
                    .filter(|&n| self.head_of(n) == h)
                    .map(|n| self.nodes[n].uid.clone())
                    .collect(),
                parallelism: self.nodes[h].parallelism as u32,
            })
            .collect();
        let edges = heads
            .iter()
            .flat_map(|&h| {
                self.nodes[h].inputs.iter().map(move |input| GroupEdge {
                    from: self.nodes[self.head_of(input.from)].uid.clone(),
                    to: self.nodes[h].uid.clone(),
                    partitioning: match input.partition {
                        Partition::Forward => Partitioning::Forward,
                        Partition::Rebalance => Partitioning::Rebalance,
                        Partition::Broadcast => Partitioning::Broadcast,
                        Partition::Hash(_) => Partitioning::Hash,
                    },
                })
            })
            .collect();
        Topology { groups, edges }
    }

    /// Whether node `n` runs in the same thread as its single input (operator chaining).
    pub(crate) fn is_chained(&self, n: usize) -> bool {
        let node = &self.nodes[n];
        matches!(node.kind, NodeKind::OneInput { .. })
            && node.inputs.len() == 1
            && matches!(node.inputs[0].partition, Partition::Forward)
            && self.nodes[node.inputs[0].from].parallelism == node.parallelism
    }

    /// The first node of the chain that `n` belongs to.
    pub(crate) fn head_of(&self, mut n: usize) -> usize {
        while self.is_chained(n) {
            n = self.nodes[n].inputs[0].from;
        }
        n
    }
}
