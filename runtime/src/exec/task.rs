//! The loops that drive a subtask: a source loop ([`source`]), or an input loop reading
//! from channels ([`input`]); and what both do when a barrier passes.

mod input;
mod source;

pub(crate) use input::{one_input_head, two_input_head};
pub(crate) use source::{SourceTask, SplitDiscovery};

use super::checkpoint::{Report, FINAL_ID};
use super::erased::{Erased, ErasedSend};
use super::BuildCx;
use crate::error::Error;
use crate::snapshot::{Barrier, SnapshotKind, TaskSnapshot};
use crossbeam_utils::sync::Parker;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

pub(crate) trait Task {
    fn run(self: Box<Self>, cancel: &AtomicBool) -> Result<(), Error>;
}

/// Everything a chain head needs to become a running task.
pub(crate) struct HeadArgs {
    pub(crate) op: Erased,
    pub(crate) inputs: Vec<(usize, ErasedSend)>,
    pub(crate) parker: Parker,
    pub(crate) cx: BuildCx,
}

/// Passes a barrier through the chain and reports the chain's part to the coordinator.
fn snapshot_chain(cx: &BuildCx, barrier: Barrier, pass: impl FnOnce(Barrier, &mut TaskSnapshot)) {
    let mut snapshot = TaskSnapshot::default();
    let started = Instant::now();
    pass(barrier, &mut snapshot);
    let took = started.elapsed();
    cx.metrics.record_snapshot_sync(took);
    cx.metrics.record_batch(took);
    cx.control.report(if barrier.kind == SnapshotKind::Final {
        Report::Finished {
            task: cx.task,
            snapshot,
        }
    } else {
        Report::Ack {
            task: cx.task,
            checkpoint: barrier.checkpoint,
            snapshot,
        }
    });
}

const FINAL: Barrier = Barrier {
    checkpoint: FINAL_ID,
    kind: SnapshotKind::Final,
};
