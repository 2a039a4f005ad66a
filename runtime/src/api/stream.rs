//! Building a job: streams, keyed streams, windows and joins. Every method adds an operator
//! to the job graph; nothing runs until the graph is built and started.

use crate::operators::assigners::{TimeWindow, WindowAssigner};
use crate::operators::functions::{
    AggregateFunction, KeyedCoProcessFunction, KeyedProcessFunction, OpenContext,
};
use crate::record::{Data, Either, Key};
use crate::sink::{Sink, SinkContext};
use crate::source::Source;
use crate::watermark::WatermarkStrategy;
use crate::error::Error;
use crate::exec::{
    one_input_head, two_input_head, BuildCx, Operator, SourceTask, TwoInputOperator,
};
use crate::exec::erased::Erased;
use crate::exec::exchange::KeyHasher;
use crate::exec::graph::{
    fixed_states, no_states, BuildOperator, DeclareStates, InputEdge, JobGraph, NodeDef,
    NodeKind, Outputs, Partition, PortType,
};
use crate::operators::basic::{FilterMapOp, FilterOp, FlatMapOp, MapOp, SinkOp, SplitOp};
use crate::operators::join::{IntervalJoinOp, JoinFn, WindowJoinOp, INTERVAL_LEFT, INTERVAL_RIGHT};
use crate::operators::keyed::{KeyFn, KeyedCoProcessOp, KeyedCore, KeyedProcessOp};
use crate::operators::restore;
use crate::operators::window::{
    LateOutput, SessionWindowOp, WindowFn, WindowOp, SESSIONS_STATE, SESSIONS_VERSION,
};
use crate::operators::window_all::{GlobalWindowAllOp, LocalWindowAllOp};
use crate::operators::Emitter;
use crate::state::StateValue;
use crate::state::{stable_hash, KeyedStateStore, MAX_MAX_PARALLELISM};
use crate::time::duration_millis;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Names a side output and the type of its records.
pub struct OutputTag<T> {
    name: String,
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

struct GraphState {
    name: String,
    nodes: Vec<NodeDef>,
    parallelism: usize,
    max_parallelism: u32,
    watermark_interval: Duration,
    errors: Vec<String>,
}

/// Starts a job definition; streams created from it add operators to the job.
#[derive(Clone)]
pub struct JobBuilder {
    g: Rc<RefCell<GraphState>>,
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

    pub fn parallelism(&self) -> usize {
        self.g.borrow().parallelism
    }

    /// How often sources emit watermarks while data flows (default 50 ms).
    pub fn set_watermark_interval(&self, interval: Duration) {
        self.g.borrow_mut().watermark_interval = interval;
    }

    fn add(&self, node: NodeDef) -> usize {
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
            let readers = (0..source.split_count())
                .filter(|s| s % cx.parallelism == cx.subtask)
                .map(|s| {
                    let from = cx.restored_split(s);
                    let reader = source.open_split(s, from.map_or(0, |p| p.offset))?;
                    Ok((s, reader, from.is_some_and(|p| p.done)))
                })
                .collect::<Result<Vec<_>, Error>>()?;
            let task: Box<dyn crate::exec::Task> = Box::new(SourceTask::new(
                readers,
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

/// A stream of `T`: the output of one operator.
pub struct Stream<T> {
    job: JobBuilder,
    node: usize,
    port: usize,
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
struct SidePort {
    name: String,
    port: PortType,
}

impl<T: Data> Stream<T> {
    fn new(job: JobBuilder, node: usize, port: usize) -> Self {
        Stream {
            job,
            node,
            port,
            _t: PhantomData,
        }
    }

    fn node_parallelism(&self) -> usize {
        self.job.g.borrow().nodes[self.node].parallelism
    }

    fn edge(&self, side: usize, partition: Partition) -> InputEdge {
        InputEdge {
            from: self.node,
            port: self.port,
            side,
            partition,
        }
    }

    /// Adds a one-input operator reading this stream; returns its main output.
    #[allow(clippy::too_many_arguments)]
    fn one_input<O: Data>(
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
    fn with_states(self, states: DeclareStates) -> Self {
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
                })?;
                let op: Box<dyn Operator<T>> = Box::new(SinkOp {
                    writer,
                    cx: cx.clone(),
                    failed: false,
                });
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

/// A stream partitioned by key.
pub struct KeyedStream<K, T> {
    stream: Stream<T>,
    key: KeyFn<T, K>,
}

impl<K, T> Clone for KeyedStream<K, T> {
    fn clone(&self) -> Self {
        KeyedStream {
            stream: self.stream.clone(),
            key: self.key.clone(),
        }
    }
}

fn hash_partition<K: Key, T: 'static>(key: &KeyFn<T, K>) -> Partition {
    let key = key.clone();
    let hasher: KeyHasher<T> = Arc::new(move |t: &T| stable_hash(&key(t)));
    Partition::Hash(Arc::new(hasher))
}

/// The states a process function's factory registers, found by calling it once with a
/// scratch store (no record is processed).
/// A process function's factory, shared by every subtask.
type Factory<F> = Arc<dyn Fn(&mut OpenContext<'_>) -> Result<F, Error> + Send + Sync>;

fn declared_by<F: 'static>(name: &str, factory: Factory<F>) -> DeclareStates {
    let uid = name.to_string();
    Arc::new(move || {
        let mut states =
            KeyedStateStore::new(&crate::state::KeyGroupAssignment::contiguous(1, 1), 0);
        factory(&mut OpenContext {
            states: &mut states,
            subtask: 0,
            parallelism: 1,
            uid: &uid,
        })?;
        Ok(states.schemas())
    })
}

fn keyed_core<K: Key, O: 'static>(
    cx: &BuildCx,
    states: KeyedStateStore,
    out: Box<dyn Operator<O>>,
) -> KeyedCore<K, O> {
    KeyedCore::new(states, cx, Emitter::new(out, cx.batch_size))
}

impl<K: Key, T: Data> KeyedStream<K, T> {
    fn partition(&self) -> Partition {
        hash_partition(&self.key)
    }

    /// Processes each record with a function built per subtask by `factory`, which also
    /// registers the function's states.
    pub fn process<O: Data, F: KeyedProcessFunction<K, T, O>>(
        &self,
        name: &str,
        factory: impl Fn(&mut OpenContext<'_>) -> Result<F, Error> + Send + Sync + 'static,
    ) -> Stream<O> {
        let factory = Arc::new(factory);
        let declare = declared_by(name, factory.clone());
        let key = self.key.clone();
        let parallelism = self.stream.job.parallelism();
        self.stream
            .one_input(
                name,
                parallelism,
                self.partition(),
                true,
                false,
                Vec::new(),
                move |cx, mut outs| {
                    let mut states = cx.keyed_state()?;
                    let f = factory(&mut OpenContext {
                        states: &mut states,
                        subtask: cx.subtask,
                        parallelism: cx.parallelism,
                        uid: &cx.uid,
                    })?;
                    let mut op = KeyedProcessOp {
                        key_fn: key.clone(),
                        f,
                        core: keyed_core(cx, states, outs.take::<O>(0)),
                    };
                    restore(cx, &mut op.core)?;
                    let op: Box<dyn Operator<T>> = Box::new(op);
                    Ok(op)
                },
            )
            .with_states(declare)
    }

    pub fn window<W: WindowAssigner>(&self, assigner: W) -> WindowedStream<K, T, W> {
        WindowedStream {
            keyed: self.clone(),
            assigner,
            lateness: Duration::ZERO,
            late_tag: None,
        }
    }

    /// Connects two streams keyed the same way, for a two-input process function.
    pub fn connect<B: Data>(&self, other: &KeyedStream<K, B>) -> ConnectedKeyedStreams<K, T, B> {
        ConnectedKeyedStreams {
            left: self.clone(),
            right: other.clone(),
        }
    }

    /// Joins records of both streams with the same key in the same window.
    pub fn window_join<B: Data, W: WindowAssigner>(
        &self,
        other: &KeyedStream<K, B>,
        assigner: W,
    ) -> WindowJoinBuilder<K, T, B, W> {
        WindowJoinBuilder {
            left: self.clone(),
            right: other.clone(),
            assigner,
        }
    }

    /// Joins each record of this stream with the records of `other` with the same key whose
    /// timestamps lie in `[ts - before, ts + after]`.
    pub fn interval_join<B: Data>(
        &self,
        other: &KeyedStream<K, B>,
        before: Duration,
        after: Duration,
    ) -> IntervalJoinBuilder<K, T, B> {
        IntervalJoinBuilder {
            left: self.clone(),
            right: other.clone(),
            before: duration_millis(before),
            after: duration_millis(after),
        }
    }
}

/// Adds a two-input operator reading `left` and `right`.
fn two_input<A: Data, B: Data, O: Data>(
    left: &Stream<A>,
    left_partition: Partition,
    right: &Stream<B>,
    right_partition: Partition,
    name: &str,
    build: impl Fn(&BuildCx, Outputs) -> Result<Box<dyn TwoInputOperator<A, B>>, Error>
        + Send
        + Sync
        + 'static,
) -> Stream<O> {
    let build: BuildOperator = Arc::new(move |cx, outputs| {
        let op = build(cx, outputs)?;
        let erased: Erased = Box::new(op);
        Ok(erased)
    });
    let node = left.job.add(NodeDef {
        name: name.to_string(),
        uid: name.to_string(),
        parallelism: left.job.parallelism(),
        kind: NodeKind::TwoInput {
            build,
            head: two_input_head::<A, B>,
        },
        inputs: vec![left.edge(0, left_partition), right.edge(1, right_partition)],
        ports: vec![PortType::of::<O>()],
        side_ports: Vec::new(),
        stateful: true,
        states: no_states(),
        is_sink: false,
    });
    Stream::new(left.job.clone(), node, 0)
}

/// Two keyed streams processed together.
pub struct ConnectedKeyedStreams<K, A, B> {
    left: KeyedStream<K, A>,
    right: KeyedStream<K, B>,
}

impl<K: Key, A: Data, B: Data> ConnectedKeyedStreams<K, A, B> {
    pub fn process<O: Data, F: KeyedCoProcessFunction<K, A, B, O>>(
        &self,
        name: &str,
        factory: impl Fn(&mut OpenContext<'_>) -> Result<F, Error> + Send + Sync + 'static,
    ) -> Stream<O> {
        let factory = Arc::new(factory);
        let declare = declared_by(name, factory.clone());
        let (lk, rk) = (self.left.key.clone(), self.right.key.clone());
        two_input(
            &self.left.stream,
            self.left.partition(),
            &self.right.stream,
            self.right.partition(),
            name,
            move |cx, mut outs| {
                let mut states = cx.keyed_state()?;
                let f = factory(&mut OpenContext {
                    states: &mut states,
                    subtask: cx.subtask,
                    parallelism: cx.parallelism,
                    uid: &cx.uid,
                })?;
                let mut op = KeyedCoProcessOp {
                    left_key: lk.clone(),
                    right_key: rk.clone(),
                    f,
                    core: keyed_core(cx, states, outs.take::<O>(0)),
                };
                restore(cx, &mut op.core)?;
                let op: Box<dyn TwoInputOperator<A, B>> = Box::new(op);
                Ok(op)
            },
        )
        .with_states(declare)
    }
}

/// A keyed stream cut into windows.
pub struct WindowedStream<K, T, W> {
    keyed: KeyedStream<K, T>,
    assigner: W,
    lateness: Duration,
    late_tag: Option<String>,
}

impl<K: Key, T: Data, W: WindowAssigner> WindowedStream<K, T, W> {
    /// Keeps windows this long after they fire; later records update and re-fire them.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.lateness = lateness;
        self
    }

    /// Sends records too late for every window they belong to to the side output `tag`
    /// (read it with `side_output(&tag)` on the result). Without it they are counted and
    /// dropped.
    pub fn late_output(mut self, tag: &OutputTag<T>) -> Self {
        self.late_tag = Some(tag.name.clone());
        self
    }

    /// Aggregates each window incrementally with `agg`; when the window fires,
    /// `window_fn(key, window, result)` makes the output record, stamped with the window's
    /// last timestamp.
    pub fn aggregate<A: AggregateFunction<T>, O: Data>(
        &self,
        name: &str,
        agg: A,
        window_fn: impl Fn(&K, TimeWindow, A::Out) -> O + Send + Sync + 'static,
    ) -> Stream<O> {
        let agg = Arc::new(agg);
        let window_fn: WindowFn<K, A::Out, O> = Arc::new(window_fn);
        let key = self.keyed.key.clone();
        let assigner = self.assigner.clone();
        let lateness = duration_millis(self.lateness);
        let has_late = self.late_tag.is_some();
        let side_ports = self
            .late_tag
            .iter()
            .map(|name| SidePort {
                name: name.clone(),
                port: PortType::of::<T>(),
            })
            .collect();
        let parallelism = self.keyed.stream.job.parallelism();
        self.keyed
            .stream
            .one_input(
                name,
                parallelism,
                self.keyed.partition(),
                true,
                false,
                side_ports,
                move |cx, mut outs| {
                    let emit = Emitter::new(outs.take::<O>(0), cx.batch_size);
                    let late = LateOutput {
                        out: has_late.then(|| Emitter::new(outs.take::<T>(1), cx.batch_size)),
                        cx: cx.clone(),
                    };
                    let op: Box<dyn Operator<T>> = if let Some(gap) = assigner.session_gap() {
                        let mut op = SessionWindowOp::new(
                            key.clone(),
                            gap,
                            agg.clone(),
                            window_fn.clone(),
                            lateness,
                            emit,
                            late,
                        )?;
                        restore(cx, &mut op)?;
                        Box::new(op)
                    } else {
                        let mut op = WindowOp::new(
                            key.clone(),
                            assigner.clone(),
                            agg.clone(),
                            window_fn.clone(),
                            lateness,
                            cx.clock.now(),
                            emit,
                            late,
                        )?;
                        restore(cx, &mut op)?;
                        Box::new(op)
                    };
                    Ok(op)
                },
            )
            .with_states(fixed_states(&[if self.assigner.session_gap().is_some() {
                (SESSIONS_STATE, SESSIONS_VERSION)
            } else {
                ("window-panes", 1)
            }]))
    }
}

/// A whole stream cut into windows.
pub struct AllWindowedStream<T, W> {
    stream: Stream<T>,
    assigner: W,
}

impl<T: Data, W: WindowAssigner> AllWindowedStream<T, W> {
    /// Pre-aggregates per subtask (operator `<name>-local`), then merges the partial results
    /// in one subtask (operator `<name>`) that calls `window_fn(window, result)`.
    pub fn aggregate<A: AggregateFunction<T>, O: Data>(
        &self,
        name: &str,
        agg: A,
        window_fn: impl Fn(TimeWindow, A::Out) -> O + Send + Sync + 'static,
    ) -> Stream<O>
    where
        A::Acc: Data,
    {
        let agg = Arc::new(agg);
        let assigner = self.assigner.clone();
        let local_agg = agg.clone();
        let local: Stream<(TimeWindow, A::Acc)> = self
            .stream
            .one_input(
                &format!("{name}-local"),
                self.stream.node_parallelism(),
                Partition::Forward,
                true,
                false,
                Vec::new(),
                move |cx, mut outs| {
                    let mut op = LocalWindowAllOp {
                        assigner: assigner.clone(),
                        agg: local_agg.clone(),
                        panes: BTreeMap::new(),
                        watermark: i64::MIN,
                        scratch: Vec::new(),
                        emit: Emitter::new(outs.take(0), cx.batch_size),
                        cx: cx.clone(),
                    };
                    restore(cx, &mut op)?;
                    let op: Box<dyn Operator<T>> = Box::new(op);
                    Ok(op)
                },
            )
            .with_states(fixed_states(&[("window-all-panes", 1)]));
        let window_fn: WindowFn<(), A::Out, O> = Arc::new(move |_, w, r| window_fn(w, r));
        local
            .one_input(
                name,
                1,
                Partition::Rebalance,
                true,
                false,
                Vec::new(),
                move |cx, mut outs| {
                    let mut op = GlobalWindowAllOp {
                        agg: agg.clone(),
                        window_fn: window_fn.clone(),
                        panes: BTreeMap::new(),
                        emit: Emitter::new(outs.take(0), cx.batch_size),
                        cx: cx.clone(),
                        _in: PhantomData,
                    };
                    restore(cx, &mut op)?;
                    let op: Box<dyn Operator<(TimeWindow, A::Acc)>> = Box::new(op);
                    Ok(op)
                },
            )
            .with_states(fixed_states(&[("window-all-panes", 1)]))
    }
}

/// Two keyed streams joined per window.
pub struct WindowJoinBuilder<K, A, B, W> {
    left: KeyedStream<K, A>,
    right: KeyedStream<K, B>,
    assigner: W,
}

impl<K: Key, A: Data + StateValue, B: Data + StateValue, W: WindowAssigner>
    WindowJoinBuilder<K, A, B, W>
{
    /// Emits `f(left, right)` for every pair with the same key in the same window.
    pub fn apply<O: Data>(
        &self,
        name: &str,
        f: impl Fn(&A, &B) -> O + Send + Sync + 'static,
    ) -> Stream<O> {
        let (lk, rk) = (self.left.key.clone(), self.right.key.clone());
        let assigner = self.assigner.clone();
        let f: JoinFn<A, B, O> = Arc::new(f);
        two_input(
            &self.left.stream,
            self.left.partition(),
            &self.right.stream,
            self.right.partition(),
            name,
            move |cx, mut outs| {
                let mut op = WindowJoinOp::new(
                    lk.clone(),
                    rk.clone(),
                    assigner.clone(),
                    f.clone(),
                    Emitter::new(outs.take(0), cx.batch_size),
                    cx.clone(),
                )?;
                restore(cx, &mut op)?;
                let op: Box<dyn TwoInputOperator<A, B>> = Box::new(op);
                Ok(op)
            },
        )
        // Version 2: entries are (window, fired, key, sides), as for window aggregates.
        .with_states(fixed_states(&[("window-join-buffers", 2)]))
    }
}

/// Two keyed streams joined by a time interval.
pub struct IntervalJoinBuilder<K, A, B> {
    left: KeyedStream<K, A>,
    right: KeyedStream<K, B>,
    before: i64,
    after: i64,
}

impl<K: Key, A: Data + StateValue, B: Data + StateValue> IntervalJoinBuilder<K, A, B> {
    /// Emits `f(left, right)` for every matching pair, stamped with the later timestamp.
    pub fn apply<O: Data>(
        &self,
        name: &str,
        f: impl Fn(&A, &B) -> O + Send + Sync + 'static,
    ) -> Stream<O> {
        let (lk, rk) = (self.left.key.clone(), self.right.key.clone());
        let (before, after) = (self.before, self.after);
        let f: JoinFn<A, B, O> = Arc::new(f);
        two_input(
            &self.left.stream,
            self.left.partition(),
            &self.right.stream,
            self.right.partition(),
            name,
            move |cx, mut outs| {
                let mut op = IntervalJoinOp::new(
                    lk.clone(),
                    rk.clone(),
                    (before, after),
                    f.clone(),
                    Emitter::new(outs.take(0), cx.batch_size),
                    cx,
                )?;
                restore(cx, &mut op)?;
                let op: Box<dyn TwoInputOperator<A, B>> = Box::new(op);
                Ok(op)
            },
        )
        .with_states(fixed_states(&[(INTERVAL_LEFT, 1), (INTERVAL_RIGHT, 1)]))
    }
}
