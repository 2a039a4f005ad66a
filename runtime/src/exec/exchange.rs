//! The last operator of a chain whose output crosses to another stage: partitions records
//! into per-consumer buffers and ships full buffers as one message.

use super::channel::{ChannelSender, Msg};
use super::metrics::KeyGroupCounts;
use super::{BuildCx, ControlEvent, Operator};
use crate::error::StoppedPeer;
use crate::record::Record;
use crate::snapshot::SnapshotKind;
use crate::state::KeyGroupAssignment;
use std::sync::Arc;

/// Hashes a record's key; the same function on the same key gives the same value in every
/// process.
pub(crate) type KeyHasher<T> = Arc<dyn Fn(&T) -> u64 + Send + Sync>;

pub(crate) enum Routing<T> {
    /// One consumer: the subtask with the producer's index.
    Pointwise,
    Rebalance,
    Broadcast,
    Hash(KeyHasher<T>, Arc<KeyGroupAssignment>, Arc<KeyGroupCounts>),
}

pub(crate) struct ExchangeWriter<T> {
    senders: Vec<ChannelSender<T>>,
    buffers: Vec<Vec<Record<T>>>,
    routing: Routing<T>,
    next: usize,
    /// The consumer the next latency marker goes to: each goes to one, in turn, so that
    /// markers do not multiply at every exchange.
    next_marker: usize,
    batch_size: usize,
    cx: BuildCx,
    broken: bool,
    /// Records sent to each key group (hash routing), counted here in plain integers and
    /// published to the subtask's metrics at every control event (each watermark, barrier,
    /// flush): an atomic write per record cost q5 some 8 % of its throughput.
    key_group_records: Vec<u64>,
}

impl<T: Clone> ExchangeWriter<T> {
    pub(crate) fn new(senders: Vec<ChannelSender<T>>, routing: Routing<T>, cx: &BuildCx) -> Self {
        let batch_size = cx.batch_size;
        let key_group_records = match &routing {
            Routing::Hash(_, assignment, _) => vec![0; assignment.max_parallelism() as usize],
            _ => Vec::new(),
        };
        ExchangeWriter {
            buffers: senders
                .iter()
                .map(|_| Vec::with_capacity(batch_size))
                .collect(),
            senders,
            routing,
            next: 0,
            next_marker: 0,
            batch_size,
            cx: cx.clone(),
            broken: false,
            key_group_records,
        }
    }

    fn send(&mut self, target: usize, msg: Msg<T>) {
        if self.broken {
            return;
        }
        if self.senders[target].send(msg).is_err() {
            self.broken = true;
            let stopped = self.cx.peer_stopped(StoppedPeer::Downstream);
            self.cx.failure.set(stopped);
        }
    }

    fn send_buffer(&mut self, target: usize) {
        if self.buffers[target].is_empty() {
            return;
        }
        let full = std::mem::replace(
            &mut self.buffers[target],
            Vec::with_capacity(self.batch_size),
        );
        self.cx.metrics.add_records_out(full.len());
        self.send(target, Msg::Data(full));
    }

    /// Sends every buffer downstream.
    fn flush(&mut self) {
        for t in 0..self.senders.len() {
            self.send_buffer(t);
        }
    }

    fn broadcast(&mut self, make: impl Fn() -> Msg<T>) {
        self.flush();
        for t in 0..self.senders.len() {
            self.send(t, make());
        }
    }
}

impl<T: Clone> Operator<T> for ExchangeWriter<T> {
    fn push(&mut self, batch: &mut Vec<Record<T>>) {
        let n = self.senders.len();
        match &self.routing {
            Routing::Pointwise => {
                self.buffers[0].append(batch);
                if self.buffers[0].len() >= self.batch_size {
                    self.send_buffer(0);
                }
            }
            Routing::Hash(hasher, assignment, _) => {
                let (hasher, assignment) = (hasher.clone(), assignment.clone());
                let key_groups = u64::from(assignment.max_parallelism());
                for r in batch.drain(..) {
                    let key_group = (hasher(&r.value) % key_groups) as u32;
                    if let Some(n) = self.key_group_records.get_mut(key_group as usize) {
                        *n += 1;
                    }
                    let t = assignment.owner(key_group) as usize;
                    let buf = &mut self.buffers[t];
                    buf.push(r);
                    if buf.len() >= self.batch_size {
                        self.send_buffer(t);
                    }
                }
            }
            Routing::Rebalance => {
                for r in batch.drain(..) {
                    let t = self.next;
                    self.next = (self.next + 1) % n;
                    self.buffers[t].push(r);
                    if self.buffers[t].len() >= self.batch_size {
                        self.send_buffer(t);
                    }
                }
            }
            Routing::Broadcast => {
                for t in 0..n {
                    self.buffers[t].extend_from_slice(batch);
                    if self.buffers[t].len() >= self.batch_size {
                        self.send_buffer(t);
                    }
                }
                batch.clear();
            }
        }
    }

    fn control(&mut self, event: ControlEvent<'_>) {
        if let Routing::Hash(_, _, counts) = &self.routing {
            counts.publish(&self.key_group_records);
        }
        match event {
            ControlEvent::Watermark(watermark) => self.broadcast(|| Msg::Watermark(watermark)),
            ControlEvent::Idle(idle) => self.broadcast(|| Msg::Idle(idle)),
            ControlEvent::Tick(_) => {}
            ControlEvent::Flush => self.flush(),
            ControlEvent::Barrier(barrier, _) => {
                if barrier.kind != SnapshotKind::Final {
                    self.broadcast(|| Msg::Barrier(barrier));
                }
            }
            ControlEvent::Finish => self.broadcast(|| Msg::End),
            ControlEvent::LatencyMarker(marker) if !self.senders.is_empty() => {
                let target = self.next_marker;
                self.next_marker = (target + 1) % self.senders.len();
                // Behind the records buffered for that consumer, as it would be behind
                // records read before it.
                self.send_buffer(target);
                self.send(target, Msg::LatencyMarker(marker));
            }
            ControlEvent::LatencyMarker(_) => {}
        }
    }
}
