//! Per-key timers of one keyed operator, in both time domains. A key has at most one timer
//! per timestamp per domain, as in Flink: registering twice is a no-op.

use crate::record::Key;
use rustc_hash::FxHashSet;
use std::collections::BTreeMap;

pub(crate) struct TimerService<K> {
    event: BTreeMap<i64, FxHashSet<K>>,
    processing: BTreeMap<i64, FxHashSet<K>>,
}

fn pop_due<K: Key>(timers: &mut BTreeMap<i64, FxHashSet<K>>, up_to: i64) -> Option<(i64, K)> {
    let mut first = timers.first_entry()?;
    let t = *first.key();
    if t > up_to {
        return None;
    }
    let keys = first.get_mut();
    let key = keys.iter().next()?.clone();
    keys.remove(&key);
    if keys.is_empty() {
        first.remove();
    }
    Some((t, key))
}

impl<K: Key> TimerService<K> {
    pub(crate) fn new() -> Self {
        TimerService {
            event: BTreeMap::new(),
            processing: BTreeMap::new(),
        }
    }

    pub(crate) fn register_event(&mut self, key: &K, t: i64) {
        let keys = self.event.entry(t).or_default();
        if !keys.contains(key) {
            keys.insert(key.clone());
        }
    }

    pub(crate) fn register_processing(&mut self, key: &K, t: i64) {
        let keys = self.processing.entry(t).or_default();
        if !keys.contains(key) {
            keys.insert(key.clone());
        }
    }

    pub(crate) fn delete_event(&mut self, key: &K, t: i64) {
        if let Some(keys) = self.event.get_mut(&t) {
            keys.remove(key);
            if keys.is_empty() {
                self.event.remove(&t);
            }
        }
    }

    pub(crate) fn delete_processing(&mut self, key: &K, t: i64) {
        if let Some(keys) = self.processing.get_mut(&t) {
            keys.remove(key);
            if keys.is_empty() {
                self.processing.remove(&t);
            }
        }
    }

    /// The earliest event-time timer at or before `watermark`, removed.
    pub(crate) fn pop_event(&mut self, watermark: i64) -> Option<(i64, K)> {
        pop_due(&mut self.event, watermark)
    }

    /// The earliest processing-time timer at or before `now`, removed.
    pub(crate) fn pop_processing(&mut self, now: i64) -> Option<(i64, K)> {
        pop_due(&mut self.processing, now)
    }

    /// Every timer as `(key, event_time, timestamp)`, for snapshots.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&K, bool, i64)> {
        let event = self
            .event
            .iter()
            .flat_map(|(t, keys)| keys.iter().map(move |k| (k, true, *t)));
        let processing = self
            .processing
            .iter()
            .flat_map(|(t, keys)| keys.iter().map(move |k| (k, false, *t)));
        event.chain(processing)
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.event.is_empty() && self.processing.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_time_order_once() {
        let mut t = TimerService::<u64>::new();
        t.register_event(&1, 20);
        t.register_event(&2, 10);
        t.register_event(&2, 10);
        t.register_event(&3, 30);
        t.delete_event(&3, 30);
        assert_eq!(t.pop_event(5), None);
        assert_eq!(t.pop_event(25), Some((10, 2)));
        assert_eq!(t.pop_event(25), Some((20, 1)));
        assert_eq!(t.pop_event(i64::MAX), None);
        assert!(t.is_empty());
    }
}
