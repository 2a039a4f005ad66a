use super::{Poll, Source, SplitReader};
use crate::api::Record;
use crate::error::Error;
use std::sync::Arc;

/// Records held in memory, one list per split. Useful for tests and examples: a split can
/// be made to stall (stop producing without ending) to exercise idleness.
pub struct VecSource<T> {
    splits: Arc<Vec<Vec<Record<T>>>>,
    stall_after: Option<(usize, usize)>,
    max_per_poll: usize,
}

impl<T: Clone + Send + Sync + 'static> VecSource<T> {
    pub fn new(splits: Vec<Vec<Record<T>>>) -> Self {
        VecSource {
            splits: Arc::new(splits),
            stall_after: None,
            max_per_poll: usize::MAX,
        }
    }

    /// Hands out at most `n` records per poll. With a zero watermark interval the source
    /// then emits a watermark after every `n` records, which makes lateness reproducible.
    pub fn max_per_poll(mut self, n: usize) -> Self {
        self.max_per_poll = n.max(1);
        self
    }

    /// Split `split` stops producing after `records` records and never ends, like a partition
    /// that receives no more data.
    pub fn stall_split_after(mut self, split: usize, records: usize) -> Self {
        self.stall_after = Some((split, records));
        self
    }
}

struct VecReader<T> {
    records: Arc<Vec<Vec<Record<T>>>>,
    split: usize,
    next: usize,
    stall_at: Option<usize>,
    max_per_poll: usize,
}

impl<T: Clone + Send + Sync + 'static> Source<T> for VecSource<T> {
    fn split_count(&self) -> usize {
        self.splits.len()
    }

    fn open_split(&self, split: usize, offset: u64) -> Result<Box<dyn SplitReader<T>>, Error> {
        Ok(Box::new(VecReader {
            records: self.splits.clone(),
            split,
            next: usize::try_from(offset).unwrap_or(usize::MAX),
            max_per_poll: self.max_per_poll,
            stall_at: self
                .stall_after
                .filter(|(s, _)| *s == split)
                .map(|(_, n)| n),
        }))
    }
}

impl<T: Clone> SplitReader<T> for VecReader<T> {
    fn poll(&mut self, out: &mut Vec<Record<T>>, max: usize) -> Result<Poll, Error> {
        let all = &self.records[self.split];
        let limit = self.stall_at.unwrap_or(all.len()).min(all.len());
        let start = self.next.min(limit);
        let end = (start + max.min(self.max_per_poll)).min(limit);
        out.extend_from_slice(&all[start..end]);
        self.next = self.next.max(end);
        if self.next >= all.len() && self.stall_at.is_none() {
            Ok(Poll::End)
        } else {
            Ok(Poll::More)
        }
    }

    fn position(&self) -> u64 {
        self.next as u64
    }
}
