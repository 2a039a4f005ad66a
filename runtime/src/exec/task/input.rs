//! The input loop of a task whose chain head reads channels, one loop for one- and
//! two-input operators: per-channel watermarks and idleness, barrier alignment, timers.

use super::{snapshot_chain, HeadArgs, Task, FINAL};
use crate::error::{Error, StoppedPeer};
use crate::exec::channel::{ChannelReceiver, Msg, Received};
use crate::exec::erased::{downcast_op, downcast_receiver};
use crate::exec::{BuildCx, ControlEvent, Operator, TwoInputOperator};
use crate::record::Record;
use crate::snapshot::Barrier;
use crate::time::{EventTime, ProcTime};
use crossbeam_utils::sync::Parker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long an input loop with nothing to read sleeps before checking its timers again.
const IDLE_WAIT: Duration = Duration::from_millis(5);

fn upstream_lost(cx: &BuildCx) -> Error {
    cx.peer_stopped(StoppedPeer::Upstream)
}

/// Watermark, idleness and end-of-input of each input channel; the task's watermark is the
/// minimum over active channels, so an idle channel never holds it back.
struct ChannelClock {
    watermarks: Vec<i64>,
    idle: Vec<bool>,
    ended: Vec<bool>,
    current: i64,
    all_idle: bool,
}

enum ClockChange {
    Watermark(EventTime),
    Idle(bool),
}

impl ChannelClock {
    fn new(channels: usize) -> Self {
        ChannelClock {
            watermarks: vec![i64::MIN; channels],
            idle: vec![false; channels],
            ended: vec![false; channels],
            current: i64::MIN,
            all_idle: false,
        }
    }

    fn all_ended(&self) -> bool {
        self.ended.iter().all(|&e| e)
    }

    fn recompute(&mut self) -> Vec<ClockChange> {
        let mut changes = Vec::new();
        let active: Vec<usize> = (0..self.watermarks.len())
            .filter(|&c| !self.idle[c] || self.ended[c])
            .collect();
        let all_idle = active.is_empty();
        if all_idle != self.all_idle {
            self.all_idle = all_idle;
            changes.push(ClockChange::Idle(all_idle));
        }
        if !all_idle {
            let min = active
                .iter()
                .map(|&c| self.watermarks[c])
                .min()
                .unwrap_or(i64::MIN);
            if min > self.current {
                self.current = min;
                changes.push(ClockChange::Watermark(EventTime(min)));
            }
        }
        changes
    }

    fn on_watermark(&mut self, c: usize, wm: EventTime) -> Vec<ClockChange> {
        self.watermarks[c] = self.watermarks[c].max(wm.0);
        self.recompute()
    }

    fn on_idle(&mut self, c: usize, idle: bool) -> Vec<ClockChange> {
        self.idle[c] = idle;
        self.recompute()
    }

    /// Data on an idle channel makes it active again.
    fn on_data(&mut self, c: usize) -> Vec<ClockChange> {
        if self.idle[c] {
            self.on_idle(c, false)
        } else {
            Vec::new()
        }
    }

    fn on_end(&mut self, c: usize) -> Vec<ClockChange> {
        self.ended[c] = true;
        self.watermarks[c] = i64::MAX;
        self.recompute()
    }
}

/// Barrier alignment: an input that delivered the barrier is not read again until every
/// input still open has delivered it, so the snapshot sees exactly the records before it.
struct Alignment {
    blocked: Vec<bool>,
    pending: Option<Barrier>,
    /// When the pending barrier first arrived.
    since: Option<Instant>,
}

impl Alignment {
    fn new(channels: usize) -> Self {
        Alignment {
            blocked: vec![false; channels],
            pending: None,
            since: None,
        }
    }

    fn on_barrier(&mut self, c: usize, barrier: Barrier) {
        self.blocked[c] = true;
        self.pending = Some(barrier);
        self.since.get_or_insert_with(Instant::now);
    }

    /// The barrier, once it has arrived on every input that has not ended, with the time
    /// since it first arrived.
    fn complete(&mut self, ended: &[bool]) -> Option<(Barrier, Duration)> {
        let barrier = self.pending?;
        if self.blocked.iter().zip(ended).all(|(&b, &e)| b || e) {
            self.pending = None;
            self.blocked.fill(false);
            let aligned_in = self.since.take().map_or(Duration::ZERO, |t| t.elapsed());
            Some((barrier, aligned_in))
        } else {
            None
        }
    }
}

/// Reads channels round-robin, sleeping on the doorbell when all are empty.
struct InputLoop {
    parker: Parker,
    cx: BuildCx,
    last_tick: ProcTime,
    started: Instant,
}

impl InputLoop {
    fn new(parker: Parker, cx: BuildCx) -> Self {
        InputLoop {
            parker,
            last_tick: cx.clock.now(),
            cx,
            started: Instant::now(),
        }
    }

    /// Processing-time tick, when the clock moved.
    fn tick(&mut self) -> Option<ProcTime> {
        let now = self.cx.clock.now();
        if now > self.last_tick {
            self.last_tick = now;
            Some(now)
        } else {
            None
        }
    }

    fn wait(&self) {
        let t = Instant::now();
        self.parker.park_timeout(IDLE_WAIT);
        self.cx.metrics.add_idle(t.elapsed());
    }

    fn check(&self, cancel: &AtomicBool) -> Result<(), Error> {
        self.cx.metrics.set_elapsed(self.started.elapsed());
        if let Some(e) = self.cx.failure.take() {
            return Err(e);
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        Ok(())
    }
}

/// A record or control message taken from an input channel, with the records in the
/// batch type of the task's inputs.
pub(crate) enum Input<B> {
    Empty,
    /// The producer went away without sending `End`: it failed.
    Lost,
    Data(B),
    Watermark(EventTime),
    Idle(bool),
    Barrier(Barrier),
    LatencyMarker(crate::exec::LatencyMarker),
    End,
}

impl<B> Input<B> {
    fn from<T>(received: Received<T>, data: impl FnOnce(Vec<Record<T>>) -> B) -> Self {
        match received {
            Received::Empty => Input::Empty,
            Received::Lost => Input::Lost,
            Received::Msg(Msg::Data(batch)) => Input::Data(data(batch)),
            Received::Msg(Msg::Watermark(wm)) => Input::Watermark(wm),
            Received::Msg(Msg::Idle(idle)) => Input::Idle(idle),
            Received::Msg(Msg::Barrier(b)) => Input::Barrier(b),
            Received::Msg(Msg::LatencyMarker(m)) => Input::LatencyMarker(m),
            Received::Msg(Msg::End) => Input::End,
        }
    }
}

/// The input channels of a task and how their batches reach its operator: one input
/// ([`OneInput`]) or two of different types ([`TwoInputs`]). Both run the same loop
/// ([`InputTask`]), monomorphized for their record types.
pub(crate) trait Inputs: 'static {
    type Op: ?Sized;
    /// A batch of one channel's records.
    type Batch;
    fn channels(&self) -> usize;
    /// Batches queued in all input channels, and how many they hold.
    fn fill(&self) -> (usize, usize);
    fn try_recv(&self, channel: usize) -> Input<Self::Batch>;
    fn records(batch: &Self::Batch) -> usize;
    fn push(op: &mut Self::Op, batch: &mut Self::Batch);
    fn control(op: &mut Self::Op, event: ControlEvent<'_>);
}

pub(crate) struct OneInput<I> {
    channels: Vec<ChannelReceiver<I>>,
}

impl<I: 'static> Inputs for OneInput<I> {
    type Op = dyn Operator<I>;
    type Batch = Vec<Record<I>>;
    fn channels(&self) -> usize {
        self.channels.len()
    }
    fn fill(&self) -> (usize, usize) {
        sum_fill(&self.channels)
    }
    fn try_recv(&self, channel: usize) -> Input<Self::Batch> {
        Input::from(self.channels[channel].try_recv(), |batch| batch)
    }
    fn records(batch: &Self::Batch) -> usize {
        batch.len()
    }
    fn push(op: &mut Self::Op, batch: &mut Self::Batch) {
        op.push(batch);
    }
    fn control(op: &mut Self::Op, event: ControlEvent<'_>) {
        op.control(event);
    }
}

/// The channels of both inputs of a two-input operator: the left ones first. One clock
/// and one barrier alignment span both, so the operator's watermark is the minimum of both
/// sides and its barrier the one that arrived on every channel.
pub(crate) struct TwoInputs<A, B> {
    left: Vec<ChannelReceiver<A>>,
    right: Vec<ChannelReceiver<B>>,
}

pub(crate) enum Sided<A, B> {
    Left(Vec<Record<A>>),
    Right(Vec<Record<B>>),
}

impl<A: 'static, B: 'static> Inputs for TwoInputs<A, B> {
    type Op = dyn TwoInputOperator<A, B>;
    type Batch = Sided<A, B>;
    fn channels(&self) -> usize {
        self.left.len() + self.right.len()
    }
    fn fill(&self) -> (usize, usize) {
        let (left, right) = (sum_fill(&self.left), sum_fill(&self.right));
        (left.0 + right.0, left.1 + right.1)
    }
    fn try_recv(&self, channel: usize) -> Input<Self::Batch> {
        match channel.checked_sub(self.left.len()) {
            None => Input::from(self.left[channel].try_recv(), Sided::Left),
            Some(right) => Input::from(self.right[right].try_recv(), Sided::Right),
        }
    }
    fn records(batch: &Self::Batch) -> usize {
        match batch {
            Sided::Left(b) => b.len(),
            Sided::Right(b) => b.len(),
        }
    }
    fn push(op: &mut Self::Op, batch: &mut Self::Batch) {
        match batch {
            Sided::Left(b) => op.push_left(b),
            Sided::Right(b) => op.push_right(b),
        }
    }
    fn control(op: &mut Self::Op, event: ControlEvent<'_>) {
        op.control(event);
    }
}

fn sum_fill<T>(channels: &[ChannelReceiver<T>]) -> (usize, usize) {
    channels.iter().fold((0, 0), |(queued, capacity), c| {
        let (q, cap) = c.fill();
        (queued + q, capacity + cap)
    })
}

/// How often an input task samples how full its input channels are.
const FILL_SAMPLED_EVERY: i64 = 100;

/// A task whose chain head reads channels: the head of a one- or two-input operator.
pub(crate) struct InputTask<In: Inputs> {
    op: Box<In::Op>,
    inputs: In,
    io: InputLoop,
}

pub(crate) fn one_input_head<I: 'static>(args: HeadArgs) -> Result<Box<dyn Task>, Error> {
    let op = downcast_op::<I>(args.op);
    let channels = args
        .inputs
        .into_iter()
        .map(|(_, rx)| downcast_receiver::<I>(rx))
        .collect();
    Ok(Box::new(InputTask {
        op,
        inputs: OneInput { channels },
        io: InputLoop::new(args.parker, args.cx),
    }))
}

pub(crate) fn two_input_head<A: 'static, B: 'static>(
    args: HeadArgs,
) -> Result<Box<dyn Task>, Error> {
    let op = *args
        .op
        .downcast::<Box<dyn TwoInputOperator<A, B>>>()
        .expect("two-input operator of its inputs' record types");
    let (mut left, mut right) = (Vec::new(), Vec::new());
    for (side, rx) in args.inputs {
        if side == 0 {
            left.push(downcast_receiver::<A>(rx));
        } else {
            right.push(downcast_receiver::<B>(rx));
        }
    }
    Ok(Box::new(InputTask {
        op,
        inputs: TwoInputs { left, right },
        io: InputLoop::new(args.parker, args.cx),
    }))
}

fn apply<F: FnMut(ClockChange)>(changes: Vec<ClockChange>, mut f: F) {
    for c in changes {
        f(c);
    }
}

fn change_event(change: ClockChange) -> ControlEvent<'static> {
    match change {
        ClockChange::Watermark(wm) => ControlEvent::Watermark(wm),
        ClockChange::Idle(idle) => ControlEvent::Idle(idle),
    }
}

impl<In: Inputs> Task for InputTask<In> {
    fn run(mut self: Box<Self>, cancel: &AtomicBool) -> Result<(), Error> {
        let n = self.inputs.channels();
        let mut clock = ChannelClock::new(n);
        let mut align = Alignment::new(n);
        let metrics = self.io.cx.metrics.clone();
        let mut fill_sampled_at = i64::MIN;
        loop {
            let mut received = false;
            for c in 0..n {
                if clock.ended[c] || align.blocked[c] {
                    continue;
                }
                let changes = match self.inputs.try_recv(c) {
                    Input::Empty => continue,
                    Input::Lost => return Err(upstream_lost(&self.io.cx)),
                    Input::Data(mut batch) => {
                        received = true;
                        metrics.add_records_in(In::records(&batch));
                        let started = Instant::now();
                        let changes = clock.on_data(c);
                        apply(changes, |ch| In::control(&mut *self.op, change_event(ch)));
                        In::push(&mut *self.op, &mut batch);
                        metrics.record_batch(started.elapsed());
                        continue;
                    }
                    Input::Watermark(wm) => clock.on_watermark(c, wm),
                    Input::Idle(idle) => clock.on_idle(c, idle),
                    Input::Barrier(b) => {
                        align.on_barrier(c, b);
                        Vec::new()
                    }
                    Input::LatencyMarker(marker) => {
                        In::control(&mut *self.op, ControlEvent::LatencyMarker(marker));
                        Vec::new()
                    }
                    Input::End => clock.on_end(c),
                };
                received = true;
                apply(changes, |ch| {
                    if let ClockChange::Watermark(wm) = ch {
                        metrics.set_watermark(wm);
                    }
                    In::control(&mut *self.op, change_event(ch))
                });
            }
            if let Some((barrier, aligned_in)) = align.complete(&clock.ended) {
                metrics.add_aligning(aligned_in);
                snapshot_chain(&self.io.cx, barrier, |b, s| {
                    In::control(&mut *self.op, ControlEvent::Barrier(b, s))
                });
            }
            if let Some(now) = self.io.tick() {
                if now.0.saturating_sub(fill_sampled_at) >= FILL_SAMPLED_EVERY {
                    fill_sampled_at = now.0;
                    let (queued, capacity) = self.inputs.fill();
                    metrics.set_input_fill(queued, capacity);
                }
                In::control(&mut *self.op, ControlEvent::Tick(now));
            }
            self.io.check(cancel)?;
            if clock.all_ended() {
                In::control(&mut *self.op, ControlEvent::Finish);
                self.io.check(cancel)?;
                snapshot_chain(&self.io.cx, FINAL, |b, s| {
                    In::control(&mut *self.op, ControlEvent::Barrier(b, s))
                });
                return self.io.check(cancel);
            }
            if !received {
                In::control(&mut *self.op, ControlEvent::Flush);
                self.io.wait();
            }
        }
    }
}
