//! The job API: what a job author writes against. The vocabulary it speaks (records,
//! keys, watermarks, window assigners, user functions) is defined in lower layers and
//! re-exported here, so a job needs only this module.

mod builder;
mod join;
mod keyed;
mod registry;
mod stream;
mod window;

pub use crate::operators::assigners::{
    Session, SlidingEventTime, TimeWindow, TumblingEventTime, TumblingProcessingTime,
    WindowAssigner,
};
pub use crate::operators::functions::{
    AggregateFunction, Count, KeyedCoProcessFunction, KeyedProcessFunction, OpenContext,
    ProcessContext, Timer,
};
pub use crate::record::{Data, Either, Key, Record};
pub use crate::watermark::WatermarkStrategy;
pub use builder::JobBuilder;
pub use join::{IntervalJoinBuilder, WindowJoinBuilder};
pub use keyed::{ConnectedKeyedStreams, KeyedStream};
pub use registry::{DefineJob, JobRegistry};
pub use stream::{OutputTag, Stream};
pub use window::{AllWindowedStream, WindowedStream};
