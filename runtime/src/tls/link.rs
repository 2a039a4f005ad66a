//! A connected socket, plain or under TLS, split into a reading half for one thread and a
//! writing half for others, plus a handle that shuts the socket down from anywhere.
//!
//! Under TLS both halves share one session, behind a lock that no one holds while waiting
//! on the socket: the reader reads raw bytes with the lock released and takes it only to
//! decrypt them, and a writer takes it only to encrypt, then sends with it released. A
//! reader blocked in `read` therefore never stops a writer, and a writer blocked on a full
//! socket never stops the reader, as with a plain socket's two handles; otherwise two
//! peers whose writers both waited for the other side to read could wait forever.
//!
//! Records go out in the order they were encrypted because writers are serialised by
//! whoever owns the [`LinkWriter`] (a mutex, as for a plain socket): a writer encrypts and
//! sends under it. The reading side writes nothing itself: peers never ask for a key
//! update and the server sends no session tickets, so the only message a reader could
//! owe is an alert on a broken connection, which is then closed anyway.

use super::TlsContext;
use rustls::{ClientConnection, Connection, ServerConnection};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How long a handshake may take: a peer that connects and says nothing must not hold an
/// accepting thread.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Raw bytes read from the socket at a time: a few full TLS records.
const READ_CHUNK: usize = 64 << 10;

/// A connection ready for frames; see the module's documentation.
pub struct Link {
    pub reader: LinkReader,
    pub writer: LinkWriter,
    /// Shuts the socket down while a reader or a writer is blocked on it.
    pub closer: TcpStream,
}

impl Link {
    /// The side that connected: plain without `tls`, otherwise after a handshake that
    /// presents this job's certificate and accepts only a peer with one.
    pub fn connect(stream: TcpStream, tls: Option<&TlsContext>) -> io::Result<Link> {
        match tls {
            None => Link::plain(stream),
            Some(tls) => {
                let session = ClientConnection::new(tls.client.clone(), TlsContext::peer_name()?)
                    .map_err(io::Error::other)?;
                Link::secured(stream, session.into())
            }
        }
    }

    /// The side that accepted: as [`Link::connect`], for the server's half of the
    /// handshake. A peer without a certificate of this job's CA fails here, before any of
    /// its bytes is read as a frame.
    pub fn accept(stream: TcpStream, tls: Option<&TlsContext>) -> io::Result<Link> {
        match tls {
            None => Link::plain(stream),
            Some(tls) => {
                let session =
                    ServerConnection::new(tls.server.clone()).map_err(io::Error::other)?;
                Link::secured(stream, session.into())
            }
        }
    }

    fn plain(stream: TcpStream) -> io::Result<Link> {
        Ok(Link {
            reader: LinkReader(Reading::Plain(stream.try_clone()?)),
            closer: stream.try_clone()?,
            writer: LinkWriter(Writing::Plain(stream)),
        })
    }

    fn secured(mut stream: TcpStream, mut session: Connection) -> io::Result<Link> {
        stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
        while session.is_handshaking() {
            session.complete_io(&mut stream)?;
        }
        while session.wants_write() {
            session.write_tls(&mut stream)?;
        }
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(None)?;
        // A whole frame is encrypted at once, whatever its size.
        session.set_buffer_limit(None);
        let session = Arc::new(Mutex::new(session));
        Ok(Link {
            reader: LinkReader(Reading::Tls {
                socket: stream.try_clone()?,
                session: session.clone(),
                raw: vec![0; READ_CHUNK].into_boxed_slice(),
                start: 0,
                end: 0,
            }),
            closer: stream.try_clone()?,
            writer: LinkWriter(Writing::Tls {
                socket: stream,
                session,
                out: Vec::new(),
            }),
        })
    }
}

fn lock(session: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic inside rustls leaves a session that fails its next use, which is the answer.
    session.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The reading half of a [`Link`]; one thread reads it.
pub struct LinkReader(Reading);

enum Reading {
    Plain(TcpStream),
    Tls {
        socket: TcpStream,
        session: Arc<Mutex<Connection>>,
        /// Bytes read from the socket and not yet handed to the session: `start..end`.
        raw: Box<[u8]>,
        start: usize,
        end: usize,
    },
}

impl Read for LinkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (socket, session, raw, start, end) = match &mut self.0 {
            Reading::Plain(socket) => return socket.read(buf),
            Reading::Tls {
                socket,
                session,
                raw,
                start,
                end,
            } => (socket, session, raw, start, end),
        };
        loop {
            {
                let mut session = lock(session);
                loop {
                    match session.reader().read(buf) {
                        // Data, or the peer's close_notify (0).
                        Ok(n) => return Ok(n),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                    if start == end {
                        break;
                    }
                    // The session takes what its buffer holds; the rest waits here until
                    // the plaintext before it has been read.
                    *start += session.read_tls(&mut &raw[*start..*end])?;
                    session
                        .process_new_packets()
                        .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
                }
            }
            let n = socket.read(raw)?;
            (*start, *end) = (0, n);
            if n == 0 {
                // The end of the socket: the session says whether it was a clean close.
                let mut session = lock(session);
                session.read_tls(&mut &[][..])?;
                session
                    .process_new_packets()
                    .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
                return session.reader().read(buf);
            }
        }
    }
}

/// The writing half of a [`Link`]. Writers share it behind a lock, one whole frame per
/// hold, exactly as they would a plain socket.
pub struct LinkWriter(Writing);

enum Writing {
    Plain(TcpStream),
    Tls {
        socket: TcpStream,
        session: Arc<Mutex<Connection>>,
        /// Encrypted records on their way out, reused from one write to the next.
        out: Vec<u8>,
    },
}

impl LinkWriter {
    /// Ends this side's stream after what was written (a TLS close_notify first); the peer
    /// reads the end as a clean close.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Writing::Plain(socket) => socket.shutdown(Shutdown::Write),
            Writing::Tls {
                socket,
                session,
                out,
            } => {
                send(socket, session, out, |s| {
                    s.send_close_notify();
                    Ok(())
                })?;
                socket.shutdown(Shutdown::Write)
            }
        }
    }
}

/// Lets `queue` add to the session's outgoing records, encrypts them into `out` under the
/// session's lock, then sends them with the lock released.
fn send(
    socket: &mut TcpStream,
    session: &Mutex<Connection>,
    out: &mut Vec<u8>,
    queue: impl FnOnce(&mut Connection) -> io::Result<()>,
) -> io::Result<()> {
    let mut guard = lock(session);
    queue(&mut guard)?;
    out.clear();
    while guard.wants_write() {
        guard.write_tls(out)?;
    }
    drop(guard);
    socket.write_all(out)
}

impl Write for LinkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Writing::Plain(socket) => socket.write(data),
            Writing::Tls {
                socket,
                session,
                out,
            } => {
                send(socket, session, out, |s| s.writer().write_all(data))?;
                Ok(data.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Writing::Plain(socket) => socket.flush(),
            // Every write sends what it encrypted.
            Writing::Tls { .. } => Ok(()),
        }
    }
}
