//! Joins of two keyed streams: per window, or by a time interval.

use super::keyed::two_input;
use super::{KeyedStream, Stream};
use crate::exec::graph::fixed_states;
use crate::exec::TwoInputOperator;
use crate::operators::assigners::WindowAssigner;
use crate::operators::join::{IntervalJoinOp, JoinFn, WindowJoinOp, INTERVAL_LEFT, INTERVAL_RIGHT};
use crate::operators::restore;
use crate::operators::Emitter;
use crate::record::{Data, Key};
use crate::state::StateValue;
use std::sync::Arc;

/// Two keyed streams joined per window.
pub struct WindowJoinBuilder<K, A, B, W> {
    pub(super) left: KeyedStream<K, A>,
    pub(super) right: KeyedStream<K, B>,
    pub(super) assigner: W,
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
    pub(super) left: KeyedStream<K, A>,
    pub(super) right: KeyedStream<K, B>,
    pub(super) before: i64,
    pub(super) after: i64,
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
