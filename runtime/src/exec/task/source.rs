//! The loop of a source subtask: polls its splits, derives watermarks and idleness from
//! what they produce, takes up splits the source discovers, and injects the barriers the
//! checkpoint coordinator asks for.

use super::{snapshot_chain, Task, FINAL};
use crate::error::Error;
use crate::exec::metrics::SplitMetrics;
use crate::exec::{BuildCx, ControlEvent, LatencyMarker, Operator};
use crate::record::Record;
use crate::snapshot::{Barrier, SplitPosition};
use crate::source::{Poll, Source, SplitReader};
use crate::time::{duration_millis, EventTime, ProcTime};
use crate::watermark::WatermarkStrategy;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One split being read by a source subtask.
struct SplitRun<T> {
    split: usize,
    reader: Box<dyn SplitReader<T>>,
    max_ts: i64,
    last_data: ProcTime,
    idle: bool,
    done: bool,
}

impl<T> SplitRun<T> {
    fn new(split: usize, reader: Box<dyn SplitReader<T>>, done: bool, now: ProcTime) -> Self {
        SplitRun {
            split,
            reader,
            max_ts: i64::MIN,
            last_data: now,
            idle: false,
            done,
        }
    }
}

/// A source whose splits grow while the job runs, and how many of them the subtask has
/// looked at.
pub(crate) struct SplitDiscovery<T> {
    pub(crate) source: Arc<dyn Source<T>>,
    pub(crate) known: usize,
}

pub(crate) struct SourceTask<T> {
    splits: Vec<SplitRun<T>>,
    /// Set for a source that discovers splits: the subtask never runs out of splits, even
    /// with none yet.
    discovery: Option<SplitDiscovery<T>>,
    out: Box<dyn Operator<T>>,
    strategy: WatermarkStrategy,
    watermark_interval: Duration,
    cx: BuildCx,
}

impl<T> SourceTask<T> {
    pub(crate) fn new(
        readers: Vec<(usize, Box<dyn SplitReader<T>>, bool)>,
        discovery: Option<SplitDiscovery<T>>,
        out: Box<dyn Operator<T>>,
        strategy: WatermarkStrategy,
        watermark_interval: Duration,
        cx: BuildCx,
    ) -> Self {
        let now = cx.clock.now();
        SourceTask {
            splits: readers
                .into_iter()
                .map(|(split, reader, done)| SplitRun::new(split, reader, done, now))
                .collect(),
            discovery,
            out,
            strategy,
            watermark_interval,
            cx,
        }
    }
}

impl<T: 'static> SourceTask<T> {
    /// Opens the splits discovered since the last look that this subtask reads. A new split
    /// holds the watermark back until it has data or turns idle, like any split; records in
    /// it older than the watermark already emitted are late.
    fn take_up_discovered(&mut self) -> Result<(), Error> {
        let Some(discovery) = &mut self.discovery else {
            return Ok(());
        };
        let Some(count) = discovery.source.discovered_split_count() else {
            return Ok(());
        };
        if count <= discovery.known {
            return Ok(());
        }
        let (parallelism, subtask) = (self.cx.parallelism, self.cx.subtask);
        let mine: Vec<usize> = (discovery.known..count)
            .filter(|s| s % parallelism == subtask)
            .collect();
        discovery.known = count;
        if mine.is_empty() {
            return Ok(());
        }
        let readers = discovery.source.open_new_splits(&mine)?;
        tracing::info!(
            operator = %self.cx.uid,
            subtask,
            splits = ?mine,
            "reading splits that appeared while the job runs"
        );
        let now = self.cx.clock.now();
        self.splits.extend(
            mine.into_iter()
                .zip(readers)
                .map(|(split, reader)| SplitRun::new(split, reader, false, now)),
        );
        Ok(())
    }

    /// Records the position of every split, then passes the barrier down the chain.
    fn barrier(&mut self, barrier: Barrier) -> Result<(), Error> {
        for s in &mut self.splits {
            s.reader.snapshot_started(barrier.checkpoint)?;
        }
        let splits = &self.splits;
        let (uid, subtask) = (self.cx.uid.clone(), self.cx.subtask);
        let out = &mut self.out;
        snapshot_chain(&self.cx, barrier, |b, snapshot| {
            let op = snapshot.operator(&uid, subtask);
            op.splits = splits
                .iter()
                .map(|s| SplitPosition {
                    split: s.split,
                    offset: s.reader.position(),
                    done: s.done,
                })
                .collect();
            out.control(ControlEvent::Barrier(b, snapshot));
        });
        Ok(())
    }
}

/// The watermark once records up to `max_ts` were read, out of order by at most `bound`:
/// every record still to come is later than it. `i64::MIN` before any record.
fn watermark_after(max_ts: i64, bound: i64) -> i64 {
    if max_ts == i64::MIN {
        i64::MIN
    } else {
        max_ts.saturating_sub(bound).saturating_sub(1)
    }
}

/// How often a source publishes where its splits are: often enough for a scrape, seldom
/// enough that an idle source (which looks at its splits every millisecond) does not ask
/// a Kafka client for its offsets each time.
const SPLITS_PUBLISHED_EVERY: Duration = Duration::from_millis(250);

impl<T> SourceTask<T> {
    /// Publishes where each split is, for metrics.
    fn publish_splits(&self, bound: i64) {
        let splits = self
            .splits
            .iter()
            .map(|s| SplitMetrics {
                split: s.split as u32,
                progress: s.reader.progress(),
                watermark: EventTime(watermark_after(s.max_ts, bound)),
                idle: s.idle,
            })
            .collect();
        self.cx.metrics.set_splits(splits);
    }
}

impl<T: 'static> Task for SourceTask<T> {
    fn run(mut self: Box<Self>, cancel: &AtomicBool) -> Result<(), Error> {
        let result = self.read_splits(cancel);
        if result.is_err() {
            // Where each split stopped, for the error's input position: a record that
            // failed is the next of its split.
            self.publish_splits(duration_millis(self.strategy.max_out_of_orderness));
        }
        result
    }
}

impl<T: 'static> SourceTask<T> {
    fn read_splits(&mut self, cancel: &AtomicBool) -> Result<(), Error> {
        let started = Instant::now();
        let bound = duration_millis(self.strategy.max_out_of_orderness);
        let idle_after = self.strategy.idle_timeout.map(duration_millis);
        let mut batch: Vec<Record<T>> = Vec::with_capacity(self.cx.batch_size);
        let mut emitted_wm = i64::MIN;
        let mut all_idle = false;
        let mut last_wm_check = Instant::now();
        let mut last_published = Instant::now();
        let mut last_marker = Instant::now();
        let mut last_tick = self.cx.clock.now();
        let mut injected = 0;
        let mut completed = self.cx.control.committed();
        loop {
            if let Some(barrier) = self.cx.control.barrier_due(&mut injected) {
                self.barrier(barrier)?;
            }
            let committed = self.cx.control.committed();
            if committed > completed {
                completed = committed;
                for s in &mut self.splits {
                    s.reader.snapshot_complete(committed);
                }
            }
            let mut produced = false;
            for split in self.splits.iter_mut().filter(|s| !s.done) {
                let poll = split.reader.poll(&mut batch, self.cx.batch_size)?;
                if !batch.is_empty() {
                    produced = true;
                    split.max_ts = batch.iter().fold(split.max_ts, |m, r| m.max(r.ts.0));
                    split.last_data = self.cx.clock.now();
                    split.idle = false;
                    if all_idle {
                        all_idle = false;
                        self.out.control(ControlEvent::Idle(false));
                    }
                    self.cx.metrics.add_records_in(batch.len());
                    self.out.push(&mut batch);
                }
                if poll == Poll::End {
                    split.done = true;
                }
            }
            if let Some(e) = self.cx.failure.take() {
                return Err(e);
            }
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Cancelled);
            }
            if self.discovery.is_none() && self.splits.iter().all(|s| s.done) {
                self.publish_splits(bound);
                self.cx.metrics.set_watermark(EventTime::MAX);
                self.out.control(ControlEvent::Watermark(EventTime::MAX));
                self.out.control(ControlEvent::Finish);
                if let Some(e) = self.cx.failure.take() {
                    return Err(e);
                }
                self.barrier(FINAL)?;
                self.cx.metrics.set_elapsed(started.elapsed());
                return self.cx.failure.take().map_or(Ok(()), Err);
            }
            let now = self.cx.clock.now();
            if !produced || last_wm_check.elapsed() >= self.watermark_interval {
                last_wm_check = Instant::now();
                if last_published.elapsed() >= SPLITS_PUBLISHED_EVERY {
                    last_published = last_wm_check;
                    self.publish_splits(bound);
                }
                self.take_up_discovered()?;
                if let Some(after) = idle_after {
                    for s in self.splits.iter_mut().filter(|s| !s.done) {
                        s.idle = now.0 - s.last_data.0 >= after;
                    }
                }
                let active = self.splits.iter().filter(|s| !s.done && !s.idle);
                match active.map(|s| s.max_ts).min() {
                    None => {
                        if !all_idle {
                            all_idle = true;
                            self.out.control(ControlEvent::Idle(true));
                        }
                    }
                    Some(min) => {
                        let wm = watermark_after(min, bound);
                        if wm > emitted_wm {
                            emitted_wm = wm;
                            self.cx.metrics.set_watermark(EventTime(wm));
                            self.out.control(ControlEvent::Watermark(EventTime(wm)));
                        }
                    }
                }
            }
            if now > last_tick {
                last_tick = now;
                self.out.control(ControlEvent::Tick(now));
            }
            if last_marker.elapsed() >= LatencyMarker::EVERY {
                last_marker = Instant::now();
                self.out
                    .control(ControlEvent::LatencyMarker(LatencyMarker::now()));
            }
            self.cx.metrics.set_elapsed(started.elapsed());
            if !produced {
                self.out.control(ControlEvent::Flush);
                let t = Instant::now();
                std::thread::sleep(Duration::from_millis(1));
                self.cx.metrics.add_idle(t.elapsed());
            }
        }
    }
}
