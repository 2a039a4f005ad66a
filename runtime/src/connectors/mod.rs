//! Sources and sinks: implementations of the contracts in [`crate::source`] and
//! [`crate::sink`], re-exported here with them.

mod collect;
mod jsonl;
mod jsonl_source;
#[cfg(feature = "kafka")]
pub mod kafka;
mod nexmark;
mod object_files;
mod queue_source;
mod throttled;
mod vec_source;

pub use crate::sink::{
    FileTransaction, ObjectTransaction, Sink, SinkContext, SinkTransaction, SinkWriter,
};
pub use crate::snapshot::SplitPosition;
pub use crate::source::{Poll, Source, SplitReader};
pub use collect::{CollectSink, Collected, DiscardSink};
pub use jsonl::JsonLinesSink;
pub use jsonl_source::JsonLinesSource;
pub use nexmark::{nexmark_file_source, NexmarkSource};
pub use object_files::{FileFormat, FileSinkOptions, ObjectFileSink, PartitionBy, PENDING};
pub use queue_source::QueueSource;
pub use throttled::Throttled;
pub use vec_source::VecSource;
