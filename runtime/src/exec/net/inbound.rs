//! The receiving side of a connection: one reader thread demultiplexes frames into a
//! buffer per logical channel, and one delivery thread per channel moves them into the
//! consuming task's ordinary [`ChannelSender`], granting a credit back for each batch.

use super::frame::{self, Kind};
use crate::error::{Error, FrameError};
use crate::exec::channel::{ChannelSender, Msg};
use crate::tls::{Link, LinkReader, LinkWriter};
use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// The logical channels one connection delivers, registered before it is served.
pub(crate) struct InboundChannels {
    capacity: usize,
    channels: Vec<(u32, Box<dyn Start>)>,
}

impl InboundChannels {
    /// Each channel buffers at most `capacity` data batches: the credits it grants.
    pub(crate) fn new(capacity: usize) -> Self {
        InboundChannels {
            capacity: capacity.max(1),
            channels: Vec::new(),
        }
    }

    /// Delivers the messages of logical channel `channel` to `to`.
    pub(crate) fn add<T: DeserializeOwned + Send + 'static>(
        &mut self,
        channel: u32,
        to: ChannelSender<T>,
    ) {
        self.channels.push((channel, Box::new(Pending { to })));
    }
}

/// What the reader and the delivery threads of one connection share.
struct Conn {
    peer: SocketAddr,
    /// Credit frames from the delivery threads; one whole frame per lock.
    writer: Mutex<LinkWriter>,
    closer: TcpStream,
}

impl Conn {
    fn grant(&self, buf: &mut Vec<u8>, channel: u32, batches: u32) -> std::io::Result<()> {
        frame::encode_credit(buf, channel, batches);
        self.writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_all(buf)
    }

    fn shutdown_write(&self) {
        // Under the writer's lock, so that no credit frame is cut short.
        let _ = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .shutdown_write();
    }

    fn error(&self, channel: Option<u32>, message: impl Into<String>) -> Error {
        Error::Exchange {
            peer: self.peer.to_string(),
            channel,
            message: message.into(),
        }
    }
}

trait Start: Send {
    /// Starts the delivery thread; returns where the reader hands the channel's frames.
    fn start(
        self: Box<Self>,
        conn: Arc<Conn>,
        channel: u32,
        capacity: usize,
    ) -> std::io::Result<Box<dyn Deliver>>;
}

trait Deliver: Send {
    /// Decodes a frame of this channel and queues it for delivery.
    fn deliver(&mut self, kind: Kind, payload: &[u8]) -> Result<(), FrameError>;
    fn ended(&self) -> bool;
}

struct Pending<T> {
    to: ChannelSender<T>,
}

impl<T: DeserializeOwned + Send + 'static> Start for Pending<T> {
    fn start(
        self: Box<Self>,
        conn: Arc<Conn>,
        channel: u32,
        capacity: usize,
    ) -> std::io::Result<Box<dyn Deliver>> {
        // Unbounded, but holds at most `capacity` batches: the peer sends a batch only for
        // a credit, and a credit is granted only once a batch has left it. Control
        // messages are few and must not wait for credit, or a barrier could not pass a
        // full buffer.
        let (queue, queued) = crossbeam_channel::unbounded::<Msg<T>>();
        let buffered = Arc::new(AtomicUsize::new(0));
        let to = self.to;
        let in_thread = buffered.clone();
        std::thread::Builder::new()
            .name(format!("net-deliver-{channel}"))
            .spawn(move || {
                let mut buf = Vec::with_capacity(frame::HEADER_LEN + 4);
                // Ends when the reader drops the queue (after an error: the consumer
                // then sees its input lost) or after `End`.
                for msg in queued.iter() {
                    let is_data = matches!(msg, Msg::Data(_));
                    let is_end = matches!(msg, Msg::End);
                    if to.send(msg).is_err() {
                        // The consumer stopped: the job is failing. Closing the connection
                        // unblocks the peer's senders with `Disconnected`.
                        let _ = conn.closer.shutdown(Shutdown::Both);
                        return;
                    }
                    if is_data {
                        // Released before the credit is sent, so the batch the credit
                        // pays for always finds room.
                        in_thread.fetch_sub(1, Ordering::AcqRel);
                        // Fails once the peer has ended its stream and this side has
                        // closed its own: the batches still queued are delivered all
                        // the same. A broken connection ends the queue instead.
                        let _ = conn.grant(&mut buf, channel, 1);
                    }
                    if is_end {
                        return;
                    }
                }
            })?;
        Ok(Box::new(Queue {
            queue,
            buffered,
            capacity,
            ended: false,
        }))
    }
}

struct Queue<T> {
    queue: crossbeam_channel::Sender<Msg<T>>,
    buffered: Arc<AtomicUsize>,
    capacity: usize,
    ended: bool,
}

impl<T: DeserializeOwned + Send> Deliver for Queue<T> {
    fn deliver(&mut self, kind: Kind, payload: &[u8]) -> Result<(), FrameError> {
        if self.ended {
            return Err(FrameError::AfterEnd { kind: kind.name() });
        }
        let msg = frame::decode::<T>(kind, payload)?;
        match msg {
            Msg::Data(_) => {
                let before = self.buffered.fetch_add(1, Ordering::AcqRel);
                if before >= self.capacity {
                    return Err(FrameError::NoCredit { buffered: before });
                }
            }
            Msg::End => self.ended = true,
            _ => {}
        }
        // The delivery thread only stops early when the consumer is gone, and then the
        // connection is being shut down: nothing to report for this channel.
        let _ = self.queue.send(msg);
        Ok(())
    }

    fn ended(&self) -> bool {
        self.ended
    }
}

/// A connection being received from; its reader runs until the peer closes it or it fails.
pub(crate) struct InboundConnection {
    #[cfg(test)]
    peer: SocketAddr,
    closer: TcpStream,
    /// Why the reader stopped, if it failed: set before the channels it delivered to see
    /// their input lost, so that whoever sees that can ask why.
    failure: Arc<Mutex<Option<String>>>,
    reader: Option<JoinHandle<Result<(), Error>>>,
}

impl InboundConnection {
    /// Serves an accepted connection from `peer` (its hello already read): grants each
    /// channel its initial credits and starts delivering.
    pub(crate) fn serve(
        link: Link,
        peer: SocketAddr,
        channels: InboundChannels,
    ) -> Result<Self, Error> {
        let io_error = |e: std::io::Error| Error::Exchange {
            peer: peer.to_string(),
            channel: None,
            message: format!("cannot serve the connection: {e}"),
        };
        let Link {
            reader: reading,
            writer,
            closer,
        } = link;
        closer.set_nodelay(true).map_err(io_error)?;
        let conn = Arc::new(Conn {
            peer,
            writer: Mutex::new(writer),
            closer: closer.try_clone().map_err(io_error)?,
        });
        let mut deliver: FxHashMap<u32, Box<dyn Deliver>> = FxHashMap::default();
        let mut buf = Vec::new();
        let credit = u32::try_from(channels.capacity).unwrap_or(u32::MAX);
        for (channel, pending) in channels.channels {
            if deliver.contains_key(&channel) {
                return Err(conn.error(Some(channel), "channel registered twice"));
            }
            let queue = pending
                .start(conn.clone(), channel, channels.capacity)
                .map_err(io_error)?;
            deliver.insert(channel, queue);
            conn.grant(&mut buf, channel, credit).map_err(io_error)?;
        }
        let failure = Arc::new(Mutex::new(None));
        let failed = failure.clone();
        let reader = std::thread::Builder::new()
            .name(format!("net-read-{peer}"))
            .spawn(move || {
                let result = read_frames(reading, &conn, &mut deliver);
                if let Err(e) = &result {
                    *failed.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
                }
                // Only now do the consumers of channels left unended see their input lost.
                drop(deliver);
                match result {
                    // Every channel ended and so did the stream: closing this side's
                    // half tells the sender all was read, so that it can close without
                    // a reset (`OutboundConnection::finish`).
                    Ok(()) => conn.shutdown_write(),
                    Err(_) => {
                        let _ = conn.closer.shutdown(Shutdown::Both);
                    }
                }
                result
            })
            .map_err(io_error)?;
        Ok(InboundConnection {
            #[cfg(test)]
            peer,
            closer,
            failure,
            reader: Some(reader),
        })
    }

    /// Why the connection failed, once it has; a channel that saw its input lost can ask.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    #[cfg(test)]
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Waits until the peer has closed the connection after ending every channel, or
    /// returns why the connection failed.
    #[cfg(test)]
    pub(crate) fn join(mut self) -> Result<(), Error> {
        match self.reader.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::Exchange {
                peer: self.peer.to_string(),
                channel: None,
                message: "the connection's reader panicked".into(),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for InboundConnection {
    fn drop(&mut self) {
        // Unblocks the reader (and makes the peer's senders fail) when not joined.
        if self.reader.is_some() {
            let _ = self.closer.shutdown(Shutdown::Both);
        }
    }
}

fn read_frames(
    stream: LinkReader,
    conn: &Conn,
    deliver: &mut FxHashMap<u32, Box<dyn Deliver>>,
) -> Result<(), Error> {
    // Buffered: small frames (watermarks, ends) would otherwise cost a read each.
    let mut stream = std::io::BufReader::with_capacity(64 << 10, stream);
    let mut magic = [0; 4];
    stream
        .read_exact(&mut magic)
        .map_err(|e| conn.error(None, format!("cannot read the protocol header: {e}")))?;
    if magic != frame::MAGIC {
        return Err(conn.error(
            None,
            format!("not a data exchange connection (header {magic:?})"),
        ));
    }
    let unended = |deliver: &FxHashMap<u32, Box<dyn Deliver>>| {
        let mut open: Vec<u32> = deliver
            .iter()
            .filter(|(_, d)| !d.ended())
            .map(|(c, _)| *c)
            .collect();
        open.sort_unstable();
        open.first().copied()
    };
    let mut payload = Vec::new();
    loop {
        let header = match frame::read_header(&mut stream) {
            Ok(Some(h)) => h,
            Ok(None) => {
                return match unended(deliver) {
                    None => Ok(()),
                    Some(channel) => Err(conn.error(
                        Some(channel),
                        "the connection closed before the end of the channel",
                    )),
                }
            }
            Err(e) => {
                return Err(conn.error(unended(deliver), format!("connection lost: {e}")));
            }
        };
        let header = frame::parse_header(&header)
            .map_err(|m| conn.error(m.channel, format!("malformed frame: {}", m.message)))?;
        let channel = header.channel;
        frame::read_payload(&mut stream, header.len, &mut payload).map_err(|e| {
            conn.error(
                Some(channel),
                format!("connection lost inside a {} frame: {e}", header.kind.name()),
            )
        })?;
        let Some(to) = deliver.get_mut(&channel) else {
            return Err(conn.error(
                Some(channel),
                format!("{} frame for an unknown channel", header.kind.name()),
            ));
        };
        to.deliver(header.kind, &payload)
            .map_err(|e| conn.error(Some(channel), e.to_string()))?;
    }
}
