use super::*;
use crate::exec::channel::{channel, ChannelReceiver, Disconnected, Msg, Received};
use crate::exec::metrics::TaskMetrics;
use crate::record::Record;
use crate::snapshot::{Barrier, SnapshotKind};
use crate::time::EventTime;
use crate::Error;
use crossbeam_utils::sync::Parker;
use std::fmt::Debug;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(20);

fn metrics(name: &str) -> Arc<TaskMetrics> {
    Arc::new(TaskMetrics::new(name.into(), false, false))
}

/// A connected pair: the sending side and the accepted stream of the receiving side.
fn connect() -> (OutboundConnection, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let out = OutboundConnection::connect(addr).expect("connect");
    let (accepted, _) = listener.accept().expect("accept");
    (out, accepted)
}

/// Serves a plain accepted stream.
fn serve(accepted: TcpStream, channels: InboundChannels) -> Result<InboundConnection, Error> {
    let peer = accepted.peer_addr().expect("peer");
    let link = crate::tls::Link::accept(accepted, None).expect("link");
    InboundConnection::serve(link, peer, channels)
}

/// The consuming task's end of a local channel.
struct Input<T> {
    rx: ChannelReceiver<T>,
    parker: Parker,
}

fn local<T>(capacity: usize) -> (crate::exec::channel::ChannelSender<T>, Input<T>) {
    let parker = Parker::new();
    let (tx, rx) = channel(capacity, parker.unparker().clone(), metrics("deliver"));
    (tx, Input { rx, parker })
}

impl<T> Input<T> {
    fn recv(&self) -> Msg<T> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.rx.try_recv() {
                Received::Msg(m) => return m,
                Received::Lost => panic!("input lost"),
                Received::Empty => {
                    assert!(Instant::now() < deadline, "no message within {TIMEOUT:?}");
                    self.parker.park_timeout(Duration::from_millis(50));
                }
            }
        }
    }

    fn wait_until_lost(&self) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.rx.try_recv() {
                Received::Lost => return,
                Received::Msg(_) => panic!("a message where the input should be lost"),
                Received::Empty => {
                    assert!(
                        Instant::now() < deadline,
                        "input not lost within {TIMEOUT:?}"
                    );
                    self.parker.park_timeout(Duration::from_millis(50));
                }
            }
        }
    }

    /// Everything up to and including `End`.
    fn until_end(&self) -> Vec<Msg<T>> {
        let mut out = Vec::new();
        loop {
            let m = self.recv();
            let end = matches!(m, Msg::End);
            out.push(m);
            if end {
                return out;
            }
        }
    }
}

fn show<T: Debug>(m: &Msg<T>) -> String {
    match m {
        Msg::Data(records) => format!("data {records:?}"),
        Msg::Watermark(t) => format!("watermark {t:?}"),
        Msg::Idle(i) => format!("idle {i}"),
        Msg::Barrier(b) => format!("barrier {b:?}"),
        Msg::LatencyMarker(m) => format!("latency marker {m:?}"),
        Msg::End => "end".into(),
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::yield_now();
    }
}

fn mixed_stream<T: Clone>(value: impl Fn(u64) -> T) -> Vec<Msg<T>> {
    let mut msgs = Vec::new();
    for i in 0..40u64 {
        let batch = (0..(i % 5) + 1)
            .map(|j| Record::new(EventTime(i as i64 * 10 + j as i64), value(i * 10 + j)))
            .collect();
        msgs.push(Msg::Data(batch));
        if i % 7 == 0 {
            msgs.push(Msg::Watermark(EventTime(i as i64 * 10)));
        }
        if i == 13 {
            msgs.push(Msg::Idle(true));
            msgs.push(Msg::Idle(false));
        }
        if i % 11 == 3 {
            msgs.push(Msg::LatencyMarker(crate::exec::LatencyMarker {
                sent_at_micros: 1_700_000_000_000_000 + i as i64,
            }));
        }
        if i % 10 == 9 {
            msgs.push(Msg::Barrier(Barrier {
                checkpoint: i / 10 + 1,
                kind: if i == 39 {
                    SnapshotKind::Savepoint
                } else {
                    SnapshotKind::Checkpoint
                },
            }));
        }
    }
    msgs.push(Msg::End);
    msgs
}

fn copy<T: Clone>(msgs: &[Msg<T>]) -> Vec<Msg<T>> {
    msgs.iter()
        .map(|m| match m {
            Msg::Data(r) => Msg::Data(r.clone()),
            Msg::Watermark(t) => Msg::Watermark(*t),
            Msg::Idle(i) => Msg::Idle(*i),
            Msg::Barrier(b) => Msg::Barrier(*b),
            Msg::LatencyMarker(m) => Msg::LatencyMarker(*m),
            Msg::End => Msg::End,
        })
        .collect()
}

#[test]
fn a_mixed_stream_arrives_exactly_and_in_order_on_every_channel() {
    let (out, accepted) = connect();
    let numbers = mixed_stream(|v| v);
    let words = mixed_stream(|v| format!("record {v}"));
    let mut channels = InboundChannels::new(2);
    let (tx1, in1) = local::<u64>(1);
    let (tx2, in2) = local::<u64>(1);
    let (tx3, in3) = local::<String>(1);
    channels.add(1, tx1);
    channels.add(2, tx2);
    channels.add(7, tx3);
    let inbound = serve(accepted, channels).expect("serve");

    std::thread::scope(|s| {
        for (channel, msgs) in [(1, copy(&numbers)), (2, copy(&numbers))] {
            let sender = out.sender::<u64>(channel, metrics("send"));
            s.spawn(move || {
                for m in msgs {
                    sender.send(m).expect("send");
                }
            });
        }
        let sender = out.sender::<String>(7, metrics("send"));
        let msgs = copy(&words);
        s.spawn(move || {
            for m in msgs {
                sender.send(m).expect("send");
            }
        });
        let shown = |msgs: &[Msg<u64>]| msgs.iter().map(show).collect::<Vec<_>>();
        assert_eq!(shown(&in1.until_end()), shown(&numbers));
        assert_eq!(shown(&in2.until_end()), shown(&numbers));
        let got: Vec<_> = in3.until_end().iter().map(show).collect();
        let want: Vec<_> = words.iter().map(show).collect();
        assert_eq!(got, want);
    });
    // The receiving side closes its half once it has read the end of the stream, so
    // closing completes by that handshake rather than by the timeout.
    out.finish()
        .expect("the receiver read every frame and closed its side");
    inbound.join().expect("every channel ended cleanly");
}

/// The end of a run: the receiving side reads the sender's last frames and only then,
/// as its delivery thread hands on the last batch, grants a credit. A sender that closed
/// at once would answer that credit with a reset, and a reset can discard frames the
/// receiver has not read yet, its ends included (what made distributed runs fail now and
/// then with "an upstream subtask stopped without finishing").
#[test]
fn closing_waits_for_the_peer_so_that_late_credits_cause_no_reset() {
    let (out, mut peer) = connect();
    peer.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut credit = Vec::new();
    frame::encode_credit(&mut credit, 3, 1);
    peer.write_all(&credit).expect("grant");
    let sender = out.sender::<u64>(3, metrics("send"));
    sender
        .send(Msg::Data(vec![Record::new(EventTime(0), 7)]))
        .expect("send");
    sender.send(Msg::End).expect("send");
    drop(sender);
    let closing = std::thread::spawn(move || out.finish());

    let mut stream = Vec::new();
    peer.read_to_end(&mut stream)
        .expect("the stream ends after the sender's end frame");
    assert!(stream.starts_with(&frame::MAGIC), "{stream:?}");
    peer.write_all(&credit).expect("a late credit");
    peer.shutdown(std::net::Shutdown::Write).expect("shutdown");

    let closed = closing.join().expect("closing thread");
    assert_eq!(closed, Ok(()), "closed after the peer, not by timeout");
    let mut rest = [0u8; 16];
    let read = peer.read(&mut rest);
    assert!(
        matches!(read, Ok(0)),
        "the peer sees the connection end, not a reset: {read:?}"
    );
}

#[test]
fn a_stopped_consumer_blocks_only_its_channel_with_a_bounded_buffer() {
    const CREDITS: usize = 3;
    const LOCAL: usize = 1;
    let (out, accepted) = connect();
    let mut channels = InboundChannels::new(CREDITS);
    let (tx_slow, slow) = local::<u64>(LOCAL);
    let (tx_fast, fast) = local::<u64>(LOCAL);
    channels.add(1, tx_slow);
    channels.add(2, tx_fast);
    let _inbound = serve(accepted, channels).expect("serve");

    let sent = Arc::new(AtomicUsize::new(0));
    let slow_metrics = metrics("slow");
    let slow_sender = out.sender::<u64>(1, slow_metrics.clone());
    let fast_sender = out.sender::<u64>(2, metrics("fast"));
    std::thread::scope(|s| {
        let counter = sent.clone();
        let blocked = s.spawn(move || {
            for i in 0..50u64 {
                slow_sender.send(Msg::Data(vec![Record::new(EventTime(0), i)]))?;
                counter.fetch_add(1, Ordering::SeqCst);
            }
            slow_sender.send(Msg::End)
        });
        // N batches wait in the exchange's buffer and LOCAL in the consumer's queue; the
        // next send blocks for want of credit.
        let bound = CREDITS + LOCAL;
        wait_until("the slow channel fills up", || {
            sent.load(Ordering::SeqCst) == bound
        });

        // Meanwhile the other channel on the same connection flows freely.
        s.spawn(move || {
            for i in 0..200u64 {
                fast_sender.send(Msg::Data(vec![Record::new(EventTime(0), i)]))?;
            }
            fast_sender.send(Msg::End)
        });
        let fast_msgs = fast.until_end();
        assert_eq!(fast_msgs.len(), 201);
        assert_eq!(sent.load(Ordering::SeqCst), bound, "the buffer bound held");
        assert!(!blocked.is_finished());

        // Reading again releases the blocked sender and loses nothing.
        let slow_msgs = slow.until_end();
        let values: Vec<u64> = slow_msgs
            .iter()
            .flat_map(|m| match m {
                Msg::Data(r) => r.iter().map(|r| r.value).collect(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(values, (0..50).collect::<Vec<_>>());
        assert!(blocked.join().expect("sender thread").is_ok());
    });
    assert!(
        slow_metrics.snapshot().backpressured > Duration::ZERO,
        "blocked time is reported as backpressure"
    );
}

#[test]
fn losing_the_receiver_makes_a_blocked_sender_disconnect_promptly() {
    let (out, accepted) = connect();
    let mut channels = InboundChannels::new(1);
    let (tx, _never_read) = local::<u64>(1);
    channels.add(4, tx);
    let inbound = serve(accepted, channels).expect("serve");
    let sender = out.sender::<u64>(4, metrics("send"));
    let sent = Arc::new(AtomicUsize::new(0));
    let (done_tx, done) = crossbeam_channel::bounded(1);
    let counter = sent.clone();
    std::thread::spawn(move || {
        let result = loop {
            if let Err(e) = sender.send(Msg::Data(vec![Record::new(EventTime(0), 1)])) {
                break e;
            }
            counter.fetch_add(1, Ordering::SeqCst);
        };
        let _ = done_tx.send(result);
    });
    wait_until("the sender blocks", || sent.load(Ordering::SeqCst) == 2);
    drop(inbound);
    let Disconnected = done
        .recv_timeout(Duration::from_secs(5))
        .expect("the blocked sender returns Disconnected within 5 s");
    assert!(out.failure().is_some());
}

#[test]
fn a_peer_closing_mid_stream_is_an_error_naming_peer_and_channel() {
    let (out, accepted) = connect();
    let mut channels = InboundChannels::new(4);
    let (tx, input) = local::<u64>(4);
    channels.add(9, tx);
    let inbound = serve(accepted, channels).expect("serve");
    let peer = inbound.peer().to_string();
    let sender = out.sender::<u64>(9, metrics("send"));
    sender
        .send(Msg::Data(vec![Record::new(EventTime(0), 1)]))
        .expect("send");
    assert!(matches!(input.recv(), Msg::Data(_)));
    drop(sender);
    drop(out);
    input.wait_until_lost();
    // Recorded before the channel saw its input lost: what a worker reports as the cause.
    let recorded = inbound.failure().expect("the failure is recorded");
    let err = inbound.join().expect_err("the channel did not end");
    assert_eq!(recorded, err.to_string());
    assert!(
        matches!(&err, Error::Exchange { channel: Some(9), peer: p, .. } if *p == peer),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains(&peer) && text.contains("channel 9"), "{text}");
}

/// Serves a connection on which a raw client writes `frame`, and returns the error.
fn error_for(frame: &[u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (accepted, _) = listener.accept().expect("accept");
    let mut channels = InboundChannels::new(2);
    let (tx, _input) = local::<u64>(1);
    channels.add(5, tx);
    let inbound = serve(accepted, channels).expect("serve");
    client.write_all(b"SLX1").expect("write");
    client.write_all(frame).expect("write");
    inbound.join().expect_err("a corrupt frame").to_string()
}

#[test]
fn a_corrupt_frame_is_an_error_naming_the_channel_and_the_fault() {
    // A watermark frame of channel 5 with a three-byte payload.
    let mut wrong_length = vec![5, 0, 0, 0, 1, 3, 0, 0, 0];
    wrong_length.extend_from_slice(&[1, 2, 3]);
    let text = error_for(&wrong_length);
    assert!(
        text.contains("channel 5") && text.contains("watermark frame has length 3, expected 8"),
        "{text}"
    );

    // A data frame of channel 5 whose payload is not a batch.
    let mut garbage = vec![5, 0, 0, 0, 0, 4, 0, 0, 0];
    garbage.extend_from_slice(&[0xff; 4]);
    let text = error_for(&garbage);
    assert!(
        text.contains("channel 5") && text.contains("cannot decode a data batch"),
        "{text}"
    );

    let text = error_for(&[5, 0, 0, 0, 42, 0, 0, 0, 0]);
    assert!(
        text.contains("channel 5") && text.contains("unknown frame kind 42"),
        "{text}"
    );
}

#[test]
fn decoding_a_short_payload_is_an_error_not_a_panic() {
    use super::frame::{credit_of, decode, Kind};
    for kind in [Kind::Watermark, Kind::Idle, Kind::Barrier, Kind::Data] {
        assert!(decode::<u64>(kind, &[]).is_err(), "{kind:?}");
    }
    assert_eq!(credit_of(&[1, 2, 3]), None);
    assert_eq!(credit_of(&[3, 0, 0, 0]), Some(3));
}

/// Prints the exchange's throughput over loopback: four channels on one connection,
/// 100-byte records (on the wire) in batches of 1000.
#[test]
#[ignore]
fn shuffle_throughput_over_loopback() {
    const CHANNELS: u32 = 4;
    const BATCHES: usize = 2500;
    const BATCH: usize = 1000;
    // Event time (8 bytes) + string length (8) + 84 bytes.
    const RECORD_BYTES: usize = 100;
    let (out, accepted) = connect();
    let mut channels = InboundChannels::new(8);
    let mut inputs = Vec::new();
    for c in 0..CHANNELS {
        let (tx, input) = local::<String>(4);
        channels.add(c, tx);
        inputs.push(input);
    }
    let _inbound = serve(accepted, channels).expect("serve");
    let started = Instant::now();
    let mut records = 0;
    std::thread::scope(|s| {
        for c in 0..CHANNELS {
            let sender = out.sender::<String>(c, metrics("send"));
            s.spawn(move || {
                let value = "x".repeat(RECORD_BYTES - 16);
                for _ in 0..BATCHES {
                    let batch = (0..BATCH)
                        .map(|i| Record::new(EventTime(i as i64), value.clone()))
                        .collect();
                    sender.send(Msg::Data(batch)).expect("send");
                }
                sender.send(Msg::End).expect("send");
            });
        }
        let counts: Vec<_> = inputs
            .into_iter()
            .map(|input| {
                s.spawn(move || {
                    let mut n = 0;
                    loop {
                        match input.recv() {
                            Msg::Data(r) => n += r.len(),
                            Msg::End => return n,
                            _ => {}
                        }
                    }
                })
            })
            .collect();
        records = counts
            .into_iter()
            .map(|h| h.join().expect("consumer"))
            .sum();
    });
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(records, CHANNELS as usize * BATCHES * BATCH);
    println!(
        "shuffle over loopback: {:.1} MB/s, {:.0} records/s ({records} records of {RECORD_BYTES} bytes in {secs:.2} s)",
        (records * RECORD_BYTES) as f64 / secs / 1e6,
        records as f64 / secs
    );
}

#[test]
fn a_length_field_claiming_more_than_is_sent_costs_only_what_was_sent() {
    let mut buf = Vec::new();
    let err = read_payload(&mut [1u8, 2, 3].as_slice(), 256 << 20, &mut buf).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    assert!(
        buf.capacity() < 1 << 20,
        "{} bytes allocated",
        buf.capacity()
    );
    read_payload(&mut [4u8, 5, 6, 7].as_slice(), 3, &mut buf).unwrap();
    assert_eq!(buf, [4, 5, 6]);
}
