//! The built-in operators behind the job API, the user functions they call
//! ([`functions`]) and the window assigners that configure their windows ([`assigners`]).

pub(crate) mod assigners;
pub(crate) mod basic;
pub(crate) mod functions;
pub(crate) mod join;
pub(crate) mod keyed;
pub(crate) mod panes;
pub(crate) mod window;
pub(crate) mod window_all;

use crate::exec::{ControlEvent, Operator};
use crate::record::Record;

/// Collects an operator's output and hands it downstream a batch at a time.
pub(crate) struct Emitter<O> {
    pub(crate) buf: Vec<Record<O>>,
    pub(crate) out: Box<dyn Operator<O>>,
    batch_size: usize,
}

impl<O> Emitter<O> {
    pub(crate) fn new(out: Box<dyn Operator<O>>, batch_size: usize) -> Self {
        Emitter {
            buf: Vec::with_capacity(batch_size),
            out,
            batch_size,
        }
    }

    /// Sends the buffer on when it is full.
    #[inline]
    pub(crate) fn maybe_send(&mut self) {
        if self.buf.len() >= self.batch_size {
            self.out.push(&mut self.buf);
        }
    }

    pub(crate) fn send(&mut self) {
        if !self.buf.is_empty() {
            self.out.push(&mut self.buf);
        }
    }

    /// Passes a control event on, after the buffered records, which belong before it.
    pub(crate) fn forward(&mut self, event: ControlEvent<'_>) {
        self.send();
        self.out.control(event);
    }
}

use crate::error::StateError;
use crate::exec::{BuildCx, RestoredPart};
use crate::snapshot::{OperatorSnapshot, RestoredNative, TaskSnapshot};

/// An operator whose state a restored snapshot fills in when it is built.
pub(crate) trait Restorable {
    /// Loads one key group written at any parallelism.
    fn restore_key_group(&mut self, _key_group: u32, _bytes: &[u8]) -> Result<(), StateError> {
        Err(StateError::NotKept("keyed state"))
    }
    /// Loads one non-keyed item written at any parallelism.
    fn restore_item(&mut self, _bytes: &[u8]) -> Result<(), StateError> {
        Err(StateError::NotKept("state items"))
    }
    /// Loads the owned key groups of a snapshot's RocksDB database.
    fn restore_native(&mut self, _native: &RestoredNative) -> Result<(), StateError> {
        Err(StateError::NotKept("RocksDB state"))
    }
    /// Ends the restore, once every piece is loaded.
    fn finish_restore(&mut self) -> Result<(), StateError> {
        Ok(())
    }
}

/// An operator that keeps state of its own and encodes it when a barrier passes. (Keyed
/// process and window operators snapshot through their `KeyedCore` or `Panes`, which may
/// pin RocksDB instead.)
pub(crate) trait Snapshotted: Restorable {
    /// Adds the state to `op`: keyed state per key group, anything else as items.
    fn snapshot(&self, op: &mut OperatorSnapshot) -> Result<(), StateError>;
}

/// Loads this subtask's share of the restored state into a freshly built operator.
pub(crate) fn restore<S: Restorable>(cx: &BuildCx, op: &mut S) -> Result<(), crate::Error> {
    cx.read_restored(|part| match part {
        RestoredPart::KeyGroup(kg, bytes) => op.restore_key_group(kg, bytes).map_err(|e| {
            cx.state_error(match e {
                // Named already, with its state.
                StateError::InState { key_group, .. } if key_group == kg => e,
                e => StateError::InKeyGroup {
                    key_group: kg,
                    source: Box::new(e),
                },
            })
        }),
        RestoredPart::Item(bytes) => op.restore_item(bytes).map_err(|e| cx.state_error(e)),
        RestoredPart::Native(db) => op.restore_native(db).map_err(|e| cx.state_error(e)),
    })?;
    op.finish_restore().map_err(|e| cx.state_error(e))
}

/// Adds an operator's state to the snapshot of its subtask; a failure fails the task.
pub(crate) fn snapshot<S: Snapshotted>(cx: &BuildCx, op: &S, snapshot: &mut TaskSnapshot) {
    let part = snapshot.operator(&cx.uid, cx.subtask);
    if let Err(e) = op.snapshot(part) {
        cx.fail(format!("snapshot: {e}"));
    }
}

/// Runs job code over a batch of keys (records or timers), guarded. `work` puts each key
/// in the slot it is given before job code sees it, and empties the slot before computing
/// the next key, so that when job code panics (caught here, so that the error can name the
/// key) or meets a state error (`work` returns the first), the slot holds the key it was
/// at. The caller then fails its subtask at that key: the rest of the batch is dropped, the
/// state may be half updated, and the job restarts from its last checkpoint. Catching costs
/// nothing until something panics; operators guard a whole batch, except where windows fire
/// (the key there is only lent to each call), so it stays off the per-record path.
#[inline(always)]
pub(crate) fn guarded<K>(
    work: impl FnOnce(&mut Option<K>) -> Option<StateError>,
) -> Result<(), (String, Option<K>)> {
    let mut current = None;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut current))) {
        Ok(None) => Ok(()),
        Ok(Some(e)) => Err((format!("keyed state: {e}"), current)),
        Err(panic) => Err((
            format!(
                "job code panicked: {}",
                crate::error::panic_message(panic.as_ref())
            ),
            current,
        )),
    }
}

/// Puts the next key in the slot [`guarded`] gave (emptied first: if computing the key
/// panics, no earlier key is blamed) and lends it back.
pub(crate) fn hold_key<K>(slot: &mut Option<K>, key: impl FnOnce() -> K) -> &K {
    *slot = None;
    slot.insert(key())
}

/// Fails the subtask with what [`guarded`] caught, at the key it held.
pub(crate) fn fail_caught<K: crate::record::Key>(
    cx: &BuildCx,
    caught: Result<(), (String, Option<K>)>,
) {
    if let Err((why, key)) = caught {
        cx.fail_at_key(key.as_ref(), why);
    }
}
