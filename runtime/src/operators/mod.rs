//! The built-in operators behind the job API.

pub(crate) mod basic;
pub(crate) mod join;
pub(crate) mod keyed;
pub(crate) mod window;
pub(crate) mod window_all;

use crate::api::Record;
use crate::exec::Operator;

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
}
