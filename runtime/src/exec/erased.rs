//! Values whose type is erased where graphs of any shape share one structure, and the
//! downcasts that recover it. Every erased value was built for the record type of its edge
//! or port when the job was defined, so a failed downcast is a bug in graph construction,
//! never a consequence of input.

use super::channel::ChannelReceiver;
use super::Operator;
use std::any::Any;

pub(crate) type Erased = Box<dyn Any>;
pub(crate) type ErasedSend = Box<dyn Any + Send>;

/// Downcasts an erased operator built for records of type `T`. A mismatch is a bug in
/// graph construction, never a consequence of input.
pub(crate) fn downcast_op<T: 'static>(op: Erased) -> Box<dyn Operator<T>> {
    *op.downcast::<Box<dyn Operator<T>>>()
        .expect("operator built for the record type of its input")
}

pub(crate) fn downcast_send<T: 'static>(b: ErasedSend) -> T {
    *b.downcast::<T>()
        .expect("channel end of the record type of its edge")
}

/// `ChannelReceiver<T>` from an erased receiver.
pub(crate) fn downcast_receiver<T: 'static>(b: ErasedSend) -> ChannelReceiver<T> {
    downcast_send(b)
}
