//! The sending side of a connection: [`RemoteSender`]s share one socket and hold a credit
//! count per channel, replenished by credit frames the peer sends back.

use super::frame::{self, Kind};
use crate::error::Error;
use crate::exec::channel::{Disconnected, Msg};
use crate::exec::metrics::TaskMetrics;
use crate::tls::{Link, LinkReader, LinkWriter, TlsContext};
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::cell::RefCell;
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

struct Shared {
    /// Writers take this for one whole frame, so frames of different channels never
    /// interleave.
    writer: Mutex<LinkWriter>,
    /// Another handle on the socket, to shut it down while a writer may be blocked.
    closer: TcpStream,
    state: Mutex<State>,
    credit_arrived: Condvar,
}

#[derive(Default)]
struct State {
    /// Data batches each channel may still send.
    credits: FxHashMap<u32, u32>,
    /// Why the connection is unusable, once it is.
    failed: Option<String>,
    /// The peer closed its side after this side had ended the stream: it read every frame.
    closed_by_peer: bool,
}

/// How long closing waits for the peer to read what was sent and close its side.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking holder leaves the counters consistent: each update is one statement.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn fail(&self, why: String) {
        let mut state = lock(&self.state);
        state.failed.get_or_insert(why);
        drop(state);
        self.credit_arrived.notify_all();
        let _ = self.closer.shutdown(Shutdown::Both);
    }
}

/// A connection to a peer process that carries the data of many logical channels to it.
/// Keep it alive while its senders are in use: dropping it closes the connection.
pub(crate) struct OutboundConnection {
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
}

impl OutboundConnection {
    #[cfg(test)]
    pub(crate) fn connect(addr: impl ToSocketAddrs + std::fmt::Debug) -> Result<Self, Error> {
        Self::connect_with_hello(addr, &[], None)
    }

    /// Connects (under TLS with `tls`) and writes `hello` before the stream of frames, so
    /// that the accepting side can tell which peer (and which run) the connection comes
    /// from.
    pub(crate) fn connect_with_hello(
        addr: impl ToSocketAddrs + std::fmt::Debug,
        hello: &[u8],
        tls: Option<&TlsContext>,
    ) -> Result<Self, Error> {
        let describe = format!("{addr:?}");
        let stream = TcpStream::connect(&addr).map_err(|e| Error::Exchange {
            peer: describe.clone(),
            channel: None,
            message: format!("cannot connect: {e}"),
        })?;
        let started = Self::start(stream, hello, tls);
        started.map_err(|e| Error::Exchange {
            peer: describe,
            channel: None,
            message: e.to_string(),
        })
    }

    fn start(stream: TcpStream, hello: &[u8], tls: Option<&TlsContext>) -> std::io::Result<Self> {
        // Frames are written whole; delaying small ones (credits, watermarks) only adds
        // latency.
        stream.set_nodelay(true)?;
        let peer = stream.peer_addr()?;
        let Link {
            reader: mut reading,
            mut writer,
            closer,
        } = Link::connect(stream, tls)?;
        writer.write_all(hello)?;
        writer.write_all(&frame::MAGIC)?;
        let shared = Arc::new(Shared {
            writer: Mutex::new(writer),
            closer,
            state: Mutex::new(State::default()),
            credit_arrived: Condvar::new(),
        });
        let for_reader = shared.clone();
        let reader = std::thread::Builder::new()
            .name(format!("net-credits-{peer}"))
            .spawn(move || {
                let why = match read_credits(&mut reading, &for_reader) {
                    Ok(()) => {
                        lock(&for_reader.state).closed_by_peer = true;
                        "the peer closed the connection".into()
                    }
                    Err(why) => why,
                };
                for_reader.fail(why);
            })?;
        Ok(OutboundConnection {
            shared,
            reader: Some(reader),
        })
    }

    /// Closes the connection: its senders fail at once, blocked ones included.
    pub(crate) fn close(&self) {
        self.shared
            .fail("the connection was closed by this side".into());
    }

    /// Ends the stream after the frames already written, waits until the peer has read
    /// them and closed its side (at most [`CLOSE_TIMEOUT`]), then closes; returns why the
    /// connection failed if it did not end that way.
    ///
    /// Closing a socket with unread input (credits the peer granted late) makes the
    /// kernel send a reset, and a reset can discard frames the peer has not read yet,
    /// its ends included: the peer would then see its input lost after a clean run.
    /// Dropping the connection does the same.
    #[cfg(test)]
    pub(crate) fn finish(mut self) -> Result<(), String> {
        self.end_gracefully()
    }

    fn end_gracefully(&mut self) -> Result<(), String> {
        let Some(reader) = self.reader.take() else {
            return Ok(());
        };
        if let Some(why) = lock(&self.shared.state).failed.clone() {
            // Shut down already: the reader is ending.
            let _ = reader.join();
            return Err(why);
        }
        // The timeout is the socket's, so it bounds the credit reader's wait.
        let _ = self.shared.closer.set_read_timeout(Some(CLOSE_TIMEOUT));
        // Under the writer's lock, so that no frame is cut short.
        let _ = lock(&self.shared.writer).shutdown_write();
        let _ = reader.join();
        let state = lock(&self.shared.state);
        match (&state.failed, state.closed_by_peer) {
            (_, true) => Ok(()),
            (Some(why), false) => Err(why.clone()),
            (None, false) => Err("the connection's credit reader stopped".into()),
        }
    }

    /// Why the connection failed, if it did.
    #[cfg(test)]
    pub(crate) fn failure(&self) -> Option<String> {
        lock(&self.shared.state).failed.clone()
    }

    /// A sender for logical channel `channel`; its blocked time counts as backpressure in
    /// `metrics`. One sender per channel: the peer's credits are for that channel.
    pub(crate) fn sender<T: Serialize>(
        &self,
        channel: u32,
        metrics: Arc<TaskMetrics>,
    ) -> RemoteSender<T> {
        lock(&self.shared.state).credits.entry(channel).or_insert(0);
        RemoteSender {
            shared: self.shared.clone(),
            channel,
            buf: RefCell::new(Vec::new()),
            metrics,
            _records: PhantomData,
        }
    }
}

impl Drop for OutboundConnection {
    fn drop(&mut self) {
        if let Err(why) = self.end_gracefully() {
            tracing::debug!("data connection closed: {why}");
        }
        // Also when the reader was gone already: closes the socket for every sender.
        self.shared
            .fail("the connection was closed by this side".into());
    }
}

/// Applies credit frames until the connection ends: `Ok` when the peer closed it between
/// frames, otherwise why it ended.
fn read_credits(stream: &mut LinkReader, shared: &Shared) -> Result<(), String> {
    let mut payload = [0u8; 4];
    loop {
        let header = match frame::read_header(stream) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("connection lost: {e}")),
        };
        let header = match frame::parse_header(&header) {
            Ok(h) if h.kind == Kind::Credit => h,
            Ok(h) => {
                return Err(format!(
                    "channel {}: unexpected {} frame from the receiving side",
                    h.channel,
                    h.kind.name()
                ))
            }
            Err(m) => match m.channel {
                Some(c) => return Err(format!("channel {c}: malformed frame: {}", m.message)),
                None => return Err(format!("malformed frame: {}", m.message)),
            },
        };
        if let Err(e) = stream.read_exact(&mut payload) {
            return Err(format!("connection lost: {e}"));
        }
        let Some(granted) = frame::credit_of(&payload) else {
            return Err(format!(
                "channel {}: malformed credit frame",
                header.channel
            ));
        };
        let mut state = lock(&shared.state);
        let credits = state.credits.entry(header.channel).or_insert(0);
        *credits = credits.saturating_add(granted);
        drop(state);
        shared.credit_arrived.notify_all();
    }
}

/// Sends the messages of one logical channel to the peer process; the remote counterpart
/// of [`crate::exec::channel::ChannelSender`], with the same contract.
pub(crate) struct RemoteSender<T> {
    shared: Arc<Shared>,
    channel: u32,
    /// The frame being written, reused so that a batch costs no allocation once warm.
    buf: RefCell<Vec<u8>>,
    metrics: Arc<TaskMetrics>,
    _records: PhantomData<fn(T)>,
}

impl<T: Serialize> crate::exec::channel::SendMsg<T> for RemoteSender<T> {
    fn send(&self, msg: Msg<T>) -> Result<(), Disconnected> {
        RemoteSender::send(self, msg)
    }
}

impl<T: Serialize> RemoteSender<T> {
    /// Sends `msg`. A data batch needs one credit of this channel and blocks until the peer
    /// grants one; the blocked time is recorded as backpressure. Control messages need no
    /// credit but go through the same ordered stream, so they never overtake data.
    pub(crate) fn send(&self, msg: Msg<T>) -> Result<(), Disconnected> {
        if matches!(msg, Msg::Data(_)) {
            self.take_credit()?;
        }
        let mut buf = self.buf.borrow_mut();
        if let Err(why) = frame::encode(&mut buf, self.channel, &msg) {
            // The batch was already paid for with a credit and the peer expects it: the
            // channel cannot go on. The reason stays readable through `failure()`.
            self.shared.fail(format!("channel {}: {why}", self.channel));
            return Err(Disconnected);
        }
        let written = lock(&self.shared.writer).write_all(&buf);
        if let Err(e) = written {
            self.shared.fail(format!("connection lost: {e}"));
            return Err(Disconnected);
        }
        Ok(())
    }

    fn take_credit(&self) -> Result<(), Disconnected> {
        let mut state = lock(&self.shared.state);
        let mut blocked_since = None;
        loop {
            if state.failed.is_some() {
                return Err(Disconnected);
            }
            let credits = state.credits.entry(self.channel).or_insert(0);
            if *credits > 0 {
                *credits -= 1;
                break;
            }
            blocked_since.get_or_insert_with(Instant::now);
            state = self
                .shared
                .credit_arrived
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if let Some(started) = blocked_since {
            self.metrics.add_backpressured(started.elapsed());
        }
        Ok(())
    }
}
