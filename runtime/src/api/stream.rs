//! Streams: the output of one operator, and the operators that read one stream (record
//! at a time, repartitioning, union, split, sinks). Keyed streams, windows and joins build
//! on them ([`super::keyed`], [`super::window`], [`super::join`]).

use super::{AllWindowedStream, JobBuilder, KeyedStream};
use crate::error::Error;
use crate::exec::erased::Erased;
use crate::exec::graph::{
    no_states, BuildOperator, DeclareStates, InputEdge, NodeDef, NodeKind, Outputs, Partition,
    PortType,
};
use crate::exec::{one_input_head, BuildCx, Operator};
use crate::operators::assigners::WindowAssigner;
use crate::operators::basic::{FilterMapOp, FilterOp, FlatMapOp, MapOp, SinkOp, SplitOp};
use crate::operators::Emitter;
use crate::record::{Data, Either, Key};
use crate::sink::{Sink, SinkContext};
use std::marker::PhantomData;
use std::sync::Arc;

/// Names a side output and the type of its records.
pub struct OutputTag<T> {
    pub(super) name: String,
    _t: PhantomData<fn() -> T>,
}

impl<T> OutputTag<T> {
    pub fn new(name: impl Into<String>) -> Self {
        OutputTag {
            name: name.into(),
            _t: PhantomData,
        }
    }
}

/// A stream of `T`: the output of one operator.
pub struct Stream<T> {
    pub(super) job: JobBuilder,
    pub(super) node: usize,
    pub(super) port: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Stream<T> {
    fn clone(&self) -> Self {
        Stream {
            job: self.job.clone(),
            node: self.node,
            port: self.port,
            _t: PhantomData,
        }
    }
}

/// Ports a new operator exposes besides its main output.
pub(super) struct SidePort {
    pub(super) name: String,
    pub(super) port: PortType,
}

impl<T: Data> Stream<T> {
    pub(super) fn new(job: JobBuilder, node: usize, port: usize) -> Self {
        Stream {
            job,
            node,
            port,
            _t: PhantomData,
        }
    }

    pub(super) fn node_parallelism(&self) -> usize {
        self.job.g.borrow().nodes[self.node].parallelism
    }

    pub(super) fn edge(&self, side: usize, partition: Partition) -> InputEdge {
        InputEdge {
            from: self.node,
            port: self.port,
            side,
            partition,
        }
    }

    /// Adds a one-input operator reading this stream; returns its main output.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn one_input<O: Data>(
        &self,
        name: &str,
        parallelism: usize,
        partition: Partition,
        stateful: bool,
        is_sink: bool,
        side_ports: Vec<SidePort>,
        build: impl Fn(&BuildCx, Outputs) -> Result<Box<dyn Operator<T>>, Error> + Send + Sync + 'static,
    ) -> Stream<O> {
        let build: BuildOperator = Arc::new(move |cx, outputs| {
            let op = build(cx, outputs)?;
            let erased: Erased = Box::new(op);
            Ok(erased)
        });
        let mut ports = if is_sink {
            Vec::new()
        } else {
            vec![PortType::of::<O>()]
        };
        let side_names = side_ports.iter().map(|s| s.name.clone()).collect();
        ports.extend(side_ports.into_iter().map(|s| s.port));
        let node = self.job.add(NodeDef {
            name: name.to_string(),
            uid: name.to_string(),
            parallelism,
            kind: NodeKind::OneInput {
                build,
                head: one_input_head::<T>,
            },
            inputs: vec![self.edge(0, partition)],
            ports,
            side_ports: side_names,
            stateful,
            states: no_states(),
            is_sink,
        });
        Stream::new(self.job.clone(), node, 0)
    }

    /// Records the states of the operator that produces this stream.
    pub(super) fn with_states(self, states: DeclareStates) -> Self {
        self.job.g.borrow_mut().nodes[self.node].states = states;
        self
    }

    /// Sets the stable id of the operator that produces this stream (defaults to its name).
    /// Savepoints map state to operators by uid.
    pub fn uid(self, uid: &str) -> Self {
        self.job.g.borrow_mut().nodes[self.node].uid = uid.to_string();
        self
    }

    /// Sets the parallelism of the operator that produces this stream.
    pub fn set_parallelism(self, parallelism: usize) -> Self {
        self.job.g.borrow_mut().nodes[self.node].parallelism = parallelism.max(1);
        self
    }

    pub fn map<O: Data>(
        &self,
        name: &str,
        f: impl Fn(T) -> O + Send + Sync + 'static,
    ) -> Stream<O> {
        let f = Arc::new(f);
        self.one_input(
            name,
            self.node_parallelism(),
            Partition::Forward,
            false,
            false,
            Vec::new(),
            move |cx, mut outs| {
                let f = f.clone();
                let op: Box<dyn Operator<T>> = Box::new(MapOp {
                    f: move |v| f(v),
                    buf: Vec::with_capacity(cx.batch_size),
                    out: outs.take::<O>(0),
                    _in: PhantomData,
                });
                Ok(op)
            },
        )
    }

    pub fn filter(&self, name: &str, f: impl Fn(&T) -> bool + Send + Sync + 'static) -> Stream<T> {
        let f = Arc::new(f);
        self.one_input(
            name,
            self.node_parallelism(),
            Partition::Forward,
            false,
            false,
            Vec::new(),
            move |_, mut outs| {
                let f = f.clone();
                let op: Box<dyn Operator<T>> = Box::new(FilterOp {
                    f: move |v: &T| f(v),
                    out: outs.take::<T>(0),
                });
                Ok(op)
            },
        )
    }

    pub fn flat_map<O: Data, It: IntoIterator<Item = O> + 'static>(
        &self,
        name: &str,
        f: impl Fn(T) -> It + Send + Sync + 'static,
    ) -> Stream<O> {
        let f = Arc::new(f);
        self.one_input(
            name,
            self.node_parallelism(),
            Partition::Forward,
            false,
            false,
            Vec::new(),
            move |cx, mut outs| {
                let f = f.clone();
                let op: Box<dyn Operator<T>> = Box::new(FlatMapOp {
                    f: move |v| f(v),
                    buf: Vec::with_capacity(cx.batch_size),
                    out: outs.take::<O>(0),
                    _in: PhantomData,
                });
                Ok(op)
            },
        )
    }

    /// Keeps the records `f` maps to `Some`, transformed.
    pub fn filter_map<O: Data>(
        &self,
        name: &str,
        f: impl Fn(T) -> Option<O> + Send + Sync + 'static,
    ) -> Stream<O> {
        let f = Arc::new(f);
        self.one_input(
            name,
            self.node_parallelism(),
            Partition::Forward,
            false,
            false,
            Vec::new(),
            move |cx, mut outs| {
                let f = f.clone();
                let op: Box<dyn Operator<T>> = Box::new(FilterMapOp {
                    f: move |v| f(v),
                    buf: Vec::with_capacity(cx.batch_size),
                    out: outs.take::<O>(0),
                    _in: PhantomData,
                });
                Ok(op)
            },
        )
    }

    /// Routes each record to the left or right output (or drops it with `None`). Cheaper
    /// than two filters on the same stream, which would each get a copy of every record.
    pub fn split<L: Data, R: Data>(
        &self,
        name: &str,
        f: impl Fn(T) -> Option<Either<L, R>> + Send + Sync + 'static,
    ) -> (Stream<L>, Stream<R>) {
        let f = Arc::new(f);
        let right_port = SidePort {
            name: format!("{name}-right"),
            port: PortType::of::<R>(),
        };
        let left = self.one_input(
            name,
            self.node_parallelism(),
            Partition::Forward,
            false,
            false,
            vec![right_port],
            move |cx, mut outs| {
                let f = f.clone();
                let op: Box<dyn Operator<T>> = Box::new(SplitOp {
                    f: move |v| f(v),
                    left: Emitter::new(outs.take::<L>(0), cx.batch_size),
                    right: Emitter::new(outs.take::<R>(1), cx.batch_size),
                    _in: PhantomData,
                });
                Ok(op)
            },
        );
        let right = Stream::new(self.job.clone(), left.node, 1);
        (left, right)
    }

    /// Redistributes records round-robin to the next operator's subtasks.
    pub fn rebalance(&self, name: &str, parallelism: usize) -> Stream<T> {
        self.one_input(
            name,
            parallelism.max(1),
            Partition::Rebalance,
            false,
            false,
            Vec::new(),
            |_, mut outs| Ok(outs.take::<T>(0)),
        )
    }

    /// Sends every record to every subtask of the next operator.
    pub fn broadcast(&self, name: &str, parallelism: usize) -> Stream<T> {
        self.one_input(
            name,
            parallelism.max(1),
            Partition::Broadcast,
            false,
            false,
            Vec::new(),
            |_, mut outs| Ok(outs.take::<T>(0)),
        )
    }

    /// Merges streams of the same type into one.
    pub fn union(&self, name: &str, others: &[&Stream<T>]) -> Stream<T> {
        let parallelism = self.node_parallelism();
        let build: BuildOperator = Arc::new(|_, mut outs: Outputs| {
            let erased: Erased = Box::new(outs.take::<T>(0));
            Ok(erased)
        });
        let inputs = std::iter::once(self)
            .chain(others.iter().copied())
            .map(|s| s.edge(0, Partition::Forward))
            .collect();
        let node = self.job.add(NodeDef {
            name: name.to_string(),
            uid: name.to_string(),
            parallelism,
            kind: NodeKind::OneInput {
                build,
                head: one_input_head::<T>,
            },
            inputs,
            ports: vec![PortType::of::<T>()],
            side_ports: Vec::new(),
            stateful: false,
            states: no_states(),
            is_sink: false,
        });
        Stream::new(self.job.clone(), node, 0)
    }

    /// Partitions the stream by key: records with equal keys go to the same subtask, and
    /// keyed operators downstream keep state per key.
    pub fn key_by<K: Key>(&self, f: impl Fn(&T) -> K + Send + Sync + 'static) -> KeyedStream<K, T> {
        KeyedStream {
            stream: self.clone(),
            key: Arc::new(f),
        }
    }

    /// Windows over the whole stream (not keyed), pre-aggregated in parallel.
    pub fn window_all<W: WindowAssigner>(&self, assigner: W) -> AllWindowedStream<T, W> {
        AllWindowedStream {
            stream: self.clone(),
            assigner,
        }
    }

    /// Writes the stream to a sink with the parallelism of this stream.
    pub fn sink<S: Sink<T>>(&self, name: &str, sink: S) {
        let sink = Arc::new(sink);
        let job = self.job.g.borrow().name.clone();
        self.one_input::<T>(
            name,
            self.node_parallelism(),
            Partition::Forward,
            false,
            true,
            Vec::new(),
            move |cx, _| {
                let writer = sink.open(&SinkContext {
                    subtask: cx.subtask,
                    parallelism: cx.parallelism,
                    run_id: cx.run_id.to_string(),
                    job: job.clone(),
                    uid: cx.uid.clone(),
                    restored: cx.restored_transactions(),
                })?;
                let op: Box<dyn Operator<T>> = Box::new(SinkOp::new(writer, cx.clone()));
                Ok(op)
            },
        );
    }

    /// The side output `tag` of the operator that produces this stream.
    pub fn side_output<S: Data>(&self, tag: &OutputTag<S>) -> Stream<S> {
        let port = {
            let mut g = self.job.g.borrow_mut();
            let node = &g.nodes[self.node];
            let found = node.side_ports.iter().position(|n| *n == tag.name);
            match found {
                Some(i) if node.ports[i + 1].type_name == std::any::type_name::<S>() => i + 1,
                Some(_) => {
                    let message = format!(
                        "side output '{}' of '{}' does not carry {}",
                        tag.name,
                        node.name,
                        std::any::type_name::<S>()
                    );
                    g.errors.push(message);
                    0
                }
                None => {
                    let message =
                        format!("operator '{}' has no side output '{}'", node.name, tag.name);
                    g.errors.push(message);
                    0
                }
            }
        };
        Stream::new(self.job.clone(), self.node, port)
    }
}
