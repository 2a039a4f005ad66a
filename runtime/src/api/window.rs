//! Windows: a keyed stream cut into windows per key, or a whole stream cut into windows
//! and aggregated in two phases.

use super::stream::SidePort;
use super::{KeyedStream, OutputTag, Stream};
use crate::exec::graph::{fixed_states, Partition, PortType};
use crate::exec::Operator;
use crate::operators::assigners::{TimeWindow, WindowAssigner};
use crate::operators::functions::AggregateFunction;
use crate::operators::restore;
use crate::operators::window::{
    LateOutput, SessionWindowOp, WindowFn, WindowOp, SESSIONS_STATE, SESSIONS_VERSION,
};
use crate::operators::window_all::{GlobalWindowAllOp, LocalWindowAllOp};
use crate::operators::Emitter;
use crate::record::{Data, Key};
use crate::time::duration_millis;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// A keyed stream cut into windows.
pub struct WindowedStream<K, T, W> {
    pub(super) keyed: KeyedStream<K, T>,
    pub(super) assigner: W,
    pub(super) lateness: Duration,
    pub(super) late_tag: Option<String>,
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
    pub(super) stream: Stream<T>,
    pub(super) assigner: W,
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
