//! Bounded channels between subtasks. Each (producer, consumer) pair has its own bounded
//! queue of batches, so a consumer can stop reading one input (barrier alignment, a full
//! downstream) while the others keep flowing, and a full queue blocks only its producer:
//! that block is the backpressure. Consumers wait on a single doorbell rung by every
//! producer after a send, so waiting on many inputs costs nothing per input.

use crate::exec::metrics::TaskMetrics;
use crate::record::Record;
use crate::time::EventTime;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use crossbeam_utils::sync::Unparker;
use std::sync::Arc;
use std::time::Instant;

/// What travels between subtasks.
pub(crate) enum Msg<T> {
    Data(Vec<Record<T>>),
    Watermark(EventTime),
    /// The producer has no data for now (`true`) or has data again (`false`); an idle
    /// input does not hold back the consumer's watermark.
    Idle(bool),
    /// A snapshot barrier (never a final one: the end of input stands for that).
    Barrier(crate::snapshot::Barrier),
    LatencyMarker(crate::exec::LatencyMarker),
    End,
}

/// The consumer stopped: the job is failing or cancelled.
#[derive(Debug)]
pub(crate) struct Disconnected;

/// The producer's end of a channel: a local queue, or a logical channel to a subtask in
/// another process (`crate::exec::net`), with the same contract.
pub(crate) enum ChannelSender<T> {
    Local {
        tx: Sender<Msg<T>>,
        doorbell: Unparker,
        metrics: Arc<TaskMetrics>,
    },
    Remote(Box<dyn SendMsg<T>>),
}

/// Sends the messages of one channel to another process.
pub(crate) trait SendMsg<T>: Send {
    fn send(&self, msg: Msg<T>) -> Result<(), Disconnected>;
}

impl<T> ChannelSender<T> {
    /// Sends `msg`, blocking while the queue is full (or, remote, while the consumer has
    /// granted no credit); the blocked time is recorded as backpressure of the sending task.
    pub(crate) fn send(&self, msg: Msg<T>) -> Result<(), Disconnected> {
        let (tx, doorbell, metrics) = match self {
            ChannelSender::Local {
                tx,
                doorbell,
                metrics,
            } => (tx, doorbell, metrics),
            ChannelSender::Remote(remote) => return remote.send(msg),
        };
        match tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(msg)) => {
                let started = Instant::now();
                // Ring first so a consumer that is asleep drains while we wait.
                doorbell.unpark();
                let sent = tx.send(msg);
                metrics.add_backpressured(started.elapsed());
                sent.map_err(|_| Disconnected)?;
            }
            Err(TrySendError::Disconnected(_)) => return Err(Disconnected),
        }
        doorbell.unpark();
        Ok(())
    }
}

pub(crate) struct ChannelReceiver<T> {
    rx: Receiver<Msg<T>>,
}

pub(crate) enum Received<T> {
    Msg(Msg<T>),
    Empty,
    /// The producer went away without sending `End`: it failed.
    Lost,
}

impl<T> ChannelReceiver<T> {
    /// Messages queued, and how many the channel holds.
    pub(crate) fn fill(&self) -> (usize, usize) {
        (self.rx.len(), self.rx.capacity().unwrap_or(0))
    }

    pub(crate) fn try_recv(&self) -> Received<T> {
        match self.rx.try_recv() {
            Ok(m) => Received::Msg(m),
            Err(TryRecvError::Empty) => Received::Empty,
            Err(TryRecvError::Disconnected) => Received::Lost,
        }
    }
}

/// A bounded channel holding at most `capacity` messages. The doorbell is the consumer's.
pub(crate) fn channel<T>(
    capacity: usize,
    doorbell: Unparker,
    producer_metrics: Arc<TaskMetrics>,
) -> (ChannelSender<T>, ChannelReceiver<T>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    (
        ChannelSender::Local {
            tx,
            doorbell,
            metrics: producer_metrics,
        },
        ChannelReceiver { rx },
    )
}
