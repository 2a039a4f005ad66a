//! Keyed streams: partitioned by key, processed with keyed state and timers, alone or
//! connected with another stream keyed the same way; the start of keyed windows and joins.

use super::{IntervalJoinBuilder, Stream, WindowJoinBuilder, WindowedStream};
use crate::error::Error;
use crate::exec::erased::Erased;
use crate::exec::exchange::KeyHasher;
use crate::exec::graph::{
    no_states, BuildOperator, DeclareStates, NodeDef, NodeKind, Outputs, Partition, PortType,
};
use crate::exec::{two_input_head, BuildCx, Operator, TwoInputOperator};
use crate::operators::assigners::WindowAssigner;
use crate::operators::functions::{KeyedCoProcessFunction, KeyedProcessFunction, OpenContext};
use crate::operators::keyed::{KeyFn, KeyedCoProcessOp, KeyedCore, KeyedProcessOp};
use crate::operators::restore;
use crate::operators::Emitter;
use crate::record::{Data, Key};
use crate::state::{stable_hash, KeyGroupAssignment, KeyedStateStore};
use crate::time::duration_millis;
use std::sync::Arc;
use std::time::Duration;

/// A stream partitioned by key.
pub struct KeyedStream<K, T> {
    pub(super) stream: Stream<T>,
    pub(super) key: KeyFn<T, K>,
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

/// A process function's factory, shared by every subtask.
type Factory<F> = Arc<dyn Fn(&mut OpenContext<'_>) -> Result<F, Error> + Send + Sync>;

/// The states a process function's factory registers, found by calling it once with a
/// scratch store (no record is processed).
fn declared_by<F: 'static>(name: &str, factory: Factory<F>) -> DeclareStates {
    let uid = name.to_string();
    Arc::new(move || {
        let mut states = KeyedStateStore::new(&KeyGroupAssignment::contiguous(1, 1), 0);
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
    pub(super) fn partition(&self) -> Partition {
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
pub(super) fn two_input<A: Data, B: Data, O: Data>(
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
