//! User function traits and the contexts they run in.

use crate::error::{Error, StateError};
use crate::record::{Key, Record};
use crate::state::{
    KeyedStateStore, ListAccess, ListState, MapAccess, MapState, StateDescriptor, StateValue,
    TimerService, ValueAccess, ValueState,
};
use crate::time::{EventTime, ProcTime};

/// Incremental aggregation: one accumulator per key and window, updated per record.
pub trait AggregateFunction<I>: Send + Sync + 'static {
    type Acc: StateValue;
    type Out;
    fn create(&self) -> Self::Acc;
    fn add(&self, acc: &mut Self::Acc, value: &I);
    /// Combines two accumulators (merging session windows, global window aggregation).
    fn merge(&self, into: &mut Self::Acc, other: Self::Acc);
    fn result(&self, acc: &Self::Acc) -> Self::Out;
}

/// Counts the records of each key and window.
#[derive(Clone, Copy, Debug, Default)]
pub struct Count;

impl<T> AggregateFunction<T> for Count {
    type Acc = u64;
    type Out = u64;
    fn create(&self) -> u64 {
        0
    }
    fn add(&self, acc: &mut u64, _: &T) {
        *acc += 1;
    }
    fn merge(&self, into: &mut u64, other: u64) {
        *into += other;
    }
    fn result(&self, acc: &u64) -> u64 {
        *acc
    }
}

/// A timer that fired, in its own time domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    Event(EventTime),
    Processing(ProcTime),
}

/// Processes each record of a keyed stream with access to that key's state and timers.
pub trait KeyedProcessFunction<K, I, O>: 'static {
    fn process(&mut self, value: I, ctx: &mut ProcessContext<'_, K, O>);
    fn on_timer(&mut self, _timer: Timer, _ctx: &mut ProcessContext<'_, K, O>) {}
}

/// Like [`KeyedProcessFunction`] for two connected streams keyed the same way.
pub trait KeyedCoProcessFunction<K, A, B, O>: 'static {
    fn process_left(&mut self, value: A, ctx: &mut ProcessContext<'_, K, O>);
    fn process_right(&mut self, value: B, ctx: &mut ProcessContext<'_, K, O>);
    fn on_timer(&mut self, _timer: Timer, _ctx: &mut ProcessContext<'_, K, O>) {}
}

/// Given to a process function's factory on each subtask: registers the states the
/// function will use.
pub struct OpenContext<'a> {
    pub(crate) states: &'a mut KeyedStateStore,
    pub(crate) subtask: usize,
    pub(crate) parallelism: usize,
    pub(crate) uid: &'a str,
}

impl<'a> OpenContext<'a> {
    fn state_error(&self, source: StateError) -> Error {
        Error::State {
            uid: self.uid.to_string(),
            source,
        }
    }

    pub fn value_state<K: Key, V: StateValue>(
        &mut self,
        descriptor: StateDescriptor,
    ) -> Result<ValueState<V>, Error> {
        self.states
            .register_value::<K, V>(descriptor)
            .map_err(|m| self.state_error(m))
    }

    pub fn map_state<K: Key, MK: Key, MV: StateValue>(
        &mut self,
        descriptor: StateDescriptor,
    ) -> Result<MapState<MK, MV>, Error> {
        self.states
            .register_map::<K, MK, MV>(descriptor)
            .map_err(|m| self.state_error(m))
    }

    pub fn list_state<K: Key, V: StateValue>(
        &mut self,
        descriptor: StateDescriptor,
    ) -> Result<ListState<V>, Error> {
        self.states
            .register_list::<K, V>(descriptor)
            .map_err(|m| self.state_error(m))
    }

    pub fn subtask(&self) -> usize {
        self.subtask
    }

    pub fn parallelism(&self) -> usize {
        self.parallelism
    }
}

/// What a process function sees while handling one record or timer of one key.
pub struct ProcessContext<'a, K, O> {
    pub(crate) key: &'a K,
    /// The local index of the key's key group.
    pub(crate) group: usize,
    pub(crate) ts: EventTime,
    pub(crate) watermark: EventTime,
    pub(crate) now: ProcTime,
    pub(crate) states: &'a mut KeyedStateStore,
    pub(crate) timers: &'a mut TimerService<K>,
    pub(crate) out: &'a mut Vec<Record<O>>,
}

impl<'a, K: Key, O> ProcessContext<'a, K, O> {
    pub fn key(&self) -> &K {
        self.key
    }
    /// The event time of the record being processed, or of the timer that fired.
    pub fn timestamp(&self) -> EventTime {
        self.ts
    }
    pub fn watermark(&self) -> EventTime {
        self.watermark
    }
    pub fn now(&self) -> ProcTime {
        self.now
    }

    /// Emits with the current timestamp.
    pub fn emit(&mut self, value: O) {
        self.out.push(Record::new(self.ts, value));
    }
    pub fn emit_at(&mut self, ts: EventTime, value: O) {
        self.out.push(Record::new(ts, value));
    }

    pub fn register_event_timer(&mut self, t: EventTime) {
        self.timers.register_event(self.key, t.0);
    }
    pub fn delete_event_timer(&mut self, t: EventTime) {
        self.timers.delete_event(self.key, t.0);
    }
    pub fn register_processing_timer(&mut self, t: ProcTime) {
        self.timers.register_processing(self.key, t.0);
    }
    pub fn delete_processing_timer(&mut self, t: ProcTime) {
        self.timers.delete_processing(self.key, t.0);
    }

    pub fn value<V: StateValue>(&mut self, state: ValueState<V>) -> ValueAccess<'_, K, V> {
        self.states.value(state, self.key, self.group, self.now.0)
    }
    pub fn map<MK: Key, MV: StateValue>(
        &mut self,
        state: MapState<MK, MV>,
    ) -> MapAccess<'_, K, MK, MV> {
        self.states.map(state, self.key, self.group, self.now.0)
    }
    pub fn list<V: StateValue>(&mut self, state: ListState<V>) -> ListAccess<'_, K, V> {
        self.states.list(state, self.key, self.group, self.now.0)
    }
}
