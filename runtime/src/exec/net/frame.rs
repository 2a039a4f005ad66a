//! The wire format. A connection starts with [`MAGIC`] from the connecting side, then carries
//! frames in both directions:
//!
//! ```text
//! channel: u32 LE | kind: u8 | length: u32 LE | payload: `length` bytes
//! ```
//!
//! Payloads: a data batch is the bincode of its `Vec<Record<T>>`; a watermark an `i64` LE;
//! idle one byte (0 or 1); a barrier the checkpoint id `u64` LE and the snapshot kind (one
//! byte); end nothing; a credit the number of batches granted, `u32` LE; a latency marker
//! the microseconds since the Unix epoch it was sent at, `i64` LE.

use crate::error::FrameError;
use crate::exec::channel::Msg;
use crate::record::Record;
use crate::snapshot::{Barrier, SnapshotKind};
use crate::time::EventTime;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{self, Read};

/// Identifies the protocol and its version, so a stray connection fails at once.
pub(crate) const MAGIC: [u8; 4] = *b"SLX1";
pub(crate) const HEADER_LEN: usize = 9;
/// A larger length is taken as a corrupt header rather than allocated.
pub(crate) const MAX_PAYLOAD: usize = 256 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Data = 0,
    Watermark = 1,
    Idle = 2,
    Barrier = 3,
    End = 4,
    Credit = 5,
    LatencyMarker = 6,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0 => Kind::Data,
            1 => Kind::Watermark,
            2 => Kind::Idle,
            3 => Kind::Barrier,
            4 => Kind::End,
            5 => Kind::Credit,
            6 => Kind::LatencyMarker,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Data => "data",
            Kind::Watermark => "watermark",
            Kind::Idle => "idle",
            Kind::Barrier => "barrier",
            Kind::End => "end",
            Kind::Credit => "credit",
            Kind::LatencyMarker => "latency marker",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    pub(crate) channel: u32,
    pub(crate) kind: Kind,
    pub(crate) len: usize,
}

/// A frame that cannot be read; names the channel when the header got that far.
#[derive(Debug)]
pub(crate) struct Malformed {
    pub(crate) channel: Option<u32>,
    pub(crate) message: String,
}

/// Encodes `msg` as one frame of `channel` into `buf` (cleared first), so that the caller
/// sends it with one write. `buf` is reused across calls: encoding allocates nothing once
/// it has grown to the batch size.
pub(crate) fn encode<T: Serialize>(
    buf: &mut Vec<u8>,
    channel: u32,
    msg: &Msg<T>,
) -> Result<(), FrameError> {
    buf.clear();
    buf.extend_from_slice(&[0; HEADER_LEN]);
    let kind = match msg {
        Msg::Data(records) => {
            bincode::serialize_into(&mut *buf, records).map_err(FrameError::EncodeBatch)?;
            Kind::Data
        }
        Msg::Watermark(t) => {
            buf.extend_from_slice(&t.0.to_le_bytes());
            Kind::Watermark
        }
        Msg::Idle(idle) => {
            buf.push(u8::from(*idle));
            Kind::Idle
        }
        Msg::Barrier(b) => {
            buf.extend_from_slice(&b.checkpoint.to_le_bytes());
            buf.push(match b.kind {
                SnapshotKind::Checkpoint => 0,
                SnapshotKind::Savepoint => 1,
                SnapshotKind::Final => 2,
            });
            Kind::Barrier
        }
        Msg::LatencyMarker(m) => {
            buf.extend_from_slice(&m.sent_at_micros.to_le_bytes());
            Kind::LatencyMarker
        }
        Msg::End => Kind::End,
    };
    finish(buf, channel, kind)
}

/// Encodes a credit grant of `batches` for `channel` into `buf`.
pub(crate) fn encode_credit(buf: &mut Vec<u8>, channel: u32, batches: u32) {
    buf.clear();
    buf.extend_from_slice(&[0; HEADER_LEN]);
    buf.extend_from_slice(&batches.to_le_bytes());
    // A four-byte payload always fits.
    let _ = finish(buf, channel, Kind::Credit);
}

fn finish(buf: &mut [u8], channel: u32, kind: Kind) -> Result<(), FrameError> {
    let len = buf.len() - HEADER_LEN;
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge {
            kind: kind.name(),
            len,
            max: MAX_PAYLOAD,
        });
    }
    buf[0..4].copy_from_slice(&channel.to_le_bytes());
    buf[4] = kind as u8;
    buf[5..9].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Reads exactly `len` bytes into `buf` (reused across calls). Beyond the capacity it has,
/// the buffer grows only as bytes arrive, so a length field that claims more than the peer
/// sends costs no more memory than what was sent.
pub(crate) fn read_payload(r: &mut impl Read, len: usize, buf: &mut Vec<u8>) -> io::Result<()> {
    if len <= buf.capacity() {
        // Nothing to allocate; and `read_exact` into the whole payload lets a buffered reader
        // copy large frames straight from the socket, which `read_to_end`'s probing reads
        // do not (measured on 64 KiB frames: 10–20 GiB/s against 19–33).
        buf.resize(len, 0);
        return r.read_exact(buf);
    }
    buf.clear();
    let got = r.take(len as u64).read_to_end(buf)?;
    if got < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{got} of {len} bytes before the end of the stream"),
        ));
    }
    Ok(())
}

/// Reads the next header; `None` when the stream ends cleanly between frames.
pub(crate) fn read_header(r: &mut impl Read) -> io::Result<Option<[u8; HEADER_LEN]>> {
    let mut header = [0; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        match r.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed inside a frame header",
                ))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(header))
}

pub(crate) fn parse_header(bytes: &[u8; HEADER_LEN]) -> Result<Header, Malformed> {
    let channel = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let len = u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
    let malformed = |message: String| Malformed {
        channel: Some(channel),
        message,
    };
    let kind = Kind::from_u8(bytes[4])
        .ok_or_else(|| malformed(format!("unknown frame kind {}", bytes[4])))?;
    let expected = match kind {
        Kind::Data => None,
        Kind::Watermark => Some(8),
        Kind::Idle => Some(1),
        Kind::Barrier => Some(9),
        Kind::End => Some(0),
        Kind::Credit => Some(4),
        Kind::LatencyMarker => Some(8),
    };
    if len > MAX_PAYLOAD {
        return Err(malformed(format!(
            "{} frame length {len} exceeds the limit of {MAX_PAYLOAD}",
            kind.name()
        )));
    }
    if let Some(expected) = expected.filter(|&e| e != len) {
        return Err(malformed(format!(
            "{} frame has length {len}, expected {expected}",
            kind.name()
        )));
    }
    Ok(Header { channel, kind, len })
}

/// Decodes the payload of a frame of `kind` (any kind but credit).
pub(crate) fn decode<T: DeserializeOwned>(
    kind: Kind,
    payload: &[u8],
) -> Result<Msg<T>, FrameError> {
    let short = || FrameError::TooShort {
        kind: kind.name(),
        len: payload.len(),
    };
    let le8 = |at: usize| {
        payload
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .ok_or_else(short)
    };
    let byte = |at: usize| payload.get(at).copied().ok_or_else(short);
    Ok(match kind {
        Kind::Data => {
            let records: Vec<Record<T>> =
                bincode::deserialize(payload).map_err(FrameError::DecodeBatch)?;
            Msg::Data(records)
        }
        Kind::Watermark => Msg::Watermark(EventTime(i64::from_le_bytes(le8(0)?))),
        Kind::Idle => match byte(0)? {
            0 => Msg::Idle(false),
            1 => Msg::Idle(true),
            b => return Err(FrameError::IdleValue(b)),
        },
        Kind::Barrier => {
            let kind = match byte(8)? {
                0 => SnapshotKind::Checkpoint,
                1 => SnapshotKind::Savepoint,
                2 => SnapshotKind::Final,
                b => return Err(FrameError::SnapshotKind(b)),
            };
            Msg::Barrier(Barrier {
                checkpoint: u64::from_le_bytes(le8(0)?),
                kind,
            })
        }
        Kind::End => Msg::End,
        Kind::LatencyMarker => Msg::LatencyMarker(crate::exec::LatencyMarker {
            sent_at_micros: i64::from_le_bytes(le8(0)?),
        }),
        Kind::Credit => return Err(FrameError::CreditMessage),
    })
}

/// The batches a credit frame grants; `None` if its payload is not four bytes.
pub(crate) fn credit_of(payload: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(payload).ok().map(u32::from_le_bytes)
}
