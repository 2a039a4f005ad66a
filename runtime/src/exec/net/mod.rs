//! The data exchange between processes: the logical channels of a job's edges that cross
//! from one worker to another, multiplexed on one TCP connection per pair of processes.
//!
//! A [`RemoteSender`] has the contract of a local `ChannelSender`; on the receiving process
//! an [`InboundConnection`] delivers into the ordinary local channels of the consuming
//! tasks, so a task cannot tell a remote input from a local one.
//!
//! Flow control is by credit, per logical channel: the receiving side buffers at most N
//! data batches per channel and grants a credit each time its consumer takes one; a sender
//! without credit blocks (backpressure, measured like a full local channel). A slow
//! consumer therefore stops only its own channel, never the connection. Watermarks, idle
//! markers, barriers and ends need no credit but travel in order with the data of their
//! channel, so barriers stay in-band.
//!
//! Threads rather than async: the engine runs one thread per task and its senders block,
//! so a remote sender blocking on credit is the same as a local one blocking on a full
//! queue. The receiving side costs one reader thread per connection and one delivery
//! thread per channel (each may block on its consumer's local queue without holding up
//! the reader); an async runtime would save those threads but need a bridge into the
//! blocking task threads at every channel, and the connection counts are small (one per
//! pair of workers).

pub(crate) mod frame;
mod inbound;
mod outbound;

pub(crate) use frame::read_payload;
pub(crate) use inbound::{InboundChannels, InboundConnection};
pub(crate) use outbound::OutboundConnection;

#[cfg(test)]
mod tests;
