use super::{Poll, Source, SplitReader};
use crate::api::Record;
use crate::error::Error;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use std::sync::Mutex;

/// A single-split source fed through a channel by the code that runs the job; it ends when
/// every sender is dropped. Lets a test or an embedding program decide exactly when each
/// record enters the job.
pub struct QueueSource<T> {
    rx: Mutex<Option<Receiver<Record<T>>>>,
}

impl<T: Send + 'static> QueueSource<T> {
    pub fn new() -> (Self, Sender<Record<T>>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (
            QueueSource {
                rx: Mutex::new(Some(rx)),
            },
            tx,
        )
    }
}

struct QueueReader<T> {
    rx: Receiver<Record<T>>,
    taken: u64,
}

impl<T: Send + 'static> Source<T> for QueueSource<T> {
    fn split_count(&self) -> usize {
        1
    }

    /// The queue holds only what its feeder sends: after a restore at `offset`, the feeder
    /// is the one to send records from that position on.
    fn open_split(&self, _: usize, offset: u64) -> Result<Box<dyn SplitReader<T>>, Error> {
        let rx = self
            .rx
            .lock()
            .map_err(|_| Error::Graph("queue source poisoned by a panic".into()))?
            .take()
            .ok_or_else(|| Error::Graph("a queue source can be opened by one run only".into()))?;
        Ok(Box::new(QueueReader { rx, taken: offset }))
    }
}

impl<T> SplitReader<T> for QueueReader<T> {
    fn poll(&mut self, out: &mut Vec<Record<T>>, max: usize) -> Result<Poll, Error> {
        while out.len() < max {
            match self.rx.try_recv() {
                Ok(r) => {
                    out.push(r);
                    self.taken += 1;
                }
                Err(TryRecvError::Empty) => return Ok(Poll::More),
                Err(TryRecvError::Disconnected) => return Ok(Poll::End),
            }
        }
        Ok(Poll::More)
    }

    fn position(&self) -> u64 {
        self.taken
    }
}
