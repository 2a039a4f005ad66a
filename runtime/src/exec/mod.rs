//! Execution: turning a job graph into running subtasks.

pub(crate) mod channel;
mod embedded;
pub(crate) mod exchange;
pub mod metrics;
pub(crate) mod operator;
mod task;

pub use embedded::{start_embedded, JobSummary, RunOptions, RunningJob};
pub use operator::{Operator, TwoInputOperator};
pub(crate) use task::{one_input_head, two_input_head, HeadArgs, SourceTask, Task};

use crate::error::Error;
use crate::state::KeyGroupAssignment;
use crate::time::ProcTime;
use metrics::TaskMetrics;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The job's processing-time clock. Tests drive a manual clock so that processing-time
/// behaviour (TTL, processing-time windows, idleness) is deterministic.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<AtomicI64>),
}

impl Clock {
    pub fn manual(start: ProcTime) -> Self {
        Clock::Manual(Arc::new(AtomicI64::new(start.0)))
    }

    pub fn now(&self) -> ProcTime {
        match self {
            Clock::System => ProcTime(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            ),
            Clock::Manual(t) => ProcTime(t.load(Ordering::Relaxed)),
        }
    }

    /// Moves a manual clock forward; no effect on the system clock.
    pub fn advance_to(&self, t: ProcTime) {
        if let Clock::Manual(cell) = self {
            cell.fetch_max(t.0, Ordering::Relaxed);
        }
    }
}

/// The first error an operator of a task reports. Operators cannot return errors through
/// the push interface, so they record them here and the task loop stops after the batch.
#[derive(Clone, Default)]
pub(crate) struct FailureCell(Rc<RefCell<Option<Error>>>);

impl FailureCell {
    pub(crate) fn set(&self, error: Error) {
        let mut slot = self.0.borrow_mut();
        if slot.is_none() {
            *slot = Some(error);
        }
    }
    pub(crate) fn take(&self) -> Option<Error> {
        self.0.borrow_mut().take()
    }
}

/// What an operator learns about where it runs when it is built on its subtask's thread.
#[derive(Clone)]
pub(crate) struct BuildCx {
    pub(crate) uid: String,
    pub(crate) subtask: usize,
    pub(crate) parallelism: usize,
    pub(crate) batch_size: usize,
    /// Which subtask owns each key group of this operator.
    pub(crate) assignment: Arc<KeyGroupAssignment>,
    pub(crate) clock: Clock,
    pub(crate) metrics: Arc<TaskMetrics>,
    pub(crate) failure: FailureCell,
}

impl BuildCx {
    pub(crate) fn fail(&self, message: impl Into<String>) {
        self.failure.set(Error::Task {
            uid: self.uid.clone(),
            subtask: self.subtask,
            message: message.into(),
        });
    }
}

/// Forwards idle, tick, flush and finish of an operator whose output is an `Emitter` in
/// field `emit`, sending buffered output first.
macro_rules! basic_control {
    () => {
        fn idle(&mut self, idle: bool) {
            self.emit.send();
            self.emit.out.idle(idle);
        }
        fn tick(&mut self, now: ProcTime) {
            self.emit.out.tick(now);
        }
        fn flush(&mut self) {
            self.emit.send();
            self.emit.out.flush();
        }
        fn finish(&mut self) {
            self.emit.send();
            self.emit.out.finish();
        }
    };
}
pub(crate) use basic_control;
