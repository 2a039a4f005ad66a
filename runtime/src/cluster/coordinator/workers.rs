//! The coordinator's side of its workers: their registration, the link each is reached
//! by, the reader of each connection routing its messages, and where the job's slots go.

use super::attempt::AttemptLink;
use super::lock;
use crate::cluster::protocol::{read_message, write_message, ToCoordinator, ToWorker};
use crate::cluster::PROTOCOL;
use crate::control::model::{JobError, SubtaskStatus};
use crate::exec::checkpoint::Report;
use crate::tls::{Link, LinkWriter, TlsContext};
use crossbeam_channel::Sender;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A registered worker, as the coordinator reaches it.
pub(super) struct WorkerLink {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) slots: u32,
    pub(super) address: String,
    pub(super) writer: Mutex<LinkWriter>,
    /// Shuts the connection down without waiting for a writer.
    pub(super) closer: TcpStream,
    pub(super) last_seen: Mutex<Instant>,
    pub(super) alive: AtomicBool,
    /// Why the coordinator closed the connection, when it did: what the loss reports.
    pub(super) closed_because: Mutex<Option<String>>,
    /// Its subtasks of the attempt it last reported on.
    pub(super) subtasks: Mutex<(u64, Vec<SubtaskStatus>)>,
}

impl WorkerLink {
    /// Sends a message; `false` when the worker is gone.
    pub(super) fn send(&self, message: &ToWorker) -> bool {
        let mut buf = Vec::new();
        let sent = write_message(&mut *lock(&self.writer), &mut buf, message);
        if let Err(e) = &sent {
            self.disconnect(format!("lost: cannot send to it: {e}"));
        }
        sent.is_ok()
    }

    /// Closes the connection; the worker's reader then reports it lost, saying `why`.
    pub(super) fn disconnect(&self, why: String) {
        self.alive.store(false, Ordering::SeqCst);
        lock(&self.closed_because).get_or_insert(why);
        let _ = self.closer.shutdown(Shutdown::Both);
    }

    pub(super) fn describe(&self) -> String {
        format!("worker {} ({})", self.name, self.address)
    }
}

pub(super) enum Event {
    Registered,
    Lost {
        worker: u64,
        why: String,
    },
    Ended {
        worker: u64,
        attempt: u64,
        finished: bool,
        errors: Vec<JobError>,
    },
}

/// Places `needed` slots on workers with `slots` free each, spreading them evenly (one per
/// worker in turn). Returns the workers used (indices into `slots`) and, per slot, the
/// index of its worker among those used; `None` when there are too few slots.
pub(super) fn place(slots: &[u32], needed: usize) -> Option<(Vec<usize>, Vec<u32>)> {
    let total: u64 = slots.iter().map(|&s| u64::from(s)).sum();
    if total < needed as u64 || needed == 0 {
        return None;
    }
    let mut taken = vec![0u32; slots.len()];
    let mut by_worker = Vec::with_capacity(needed);
    while by_worker.len() < needed {
        for (i, &free) in slots.iter().enumerate() {
            if by_worker.len() < needed && taken[i] < free {
                taken[i] += 1;
                by_worker.push(i);
            }
        }
    }
    let used: Vec<usize> = (0..slots.len()).filter(|&i| taken[i] > 0).collect();
    let slot_workers = by_worker
        .iter()
        .map(|w| used.iter().position(|u| u == w).unwrap_or(0) as u32)
        .collect();
    Some((used, slot_workers))
}

/// Accepts and serves worker connections.
#[derive(Clone)]
pub(super) struct Acceptor {
    pub(super) workers: Arc<Mutex<Vec<Arc<WorkerLink>>>>,
    pub(super) current: Arc<Mutex<Option<AttemptLink>>>,
    pub(super) events: Sender<Event>,
    pub(super) next_id: Arc<AtomicU64>,
    /// Workers must present the job's certificate when set.
    pub(super) tls: Option<TlsContext>,
}

impl Acceptor {
    pub(super) fn serve(&self, stream: TcpStream) {
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "an unknown peer".to_string(), |a| a.to_string());
        let _ = stream.set_nodelay(true);
        let Link {
            reader: mut reading,
            writer,
            closer,
        } = match Link::accept(stream, self.tls.as_ref()) {
            Ok(link) => link,
            Err(e) => {
                tracing::warn!(%peer, "refused a connection from {peer}: {e}");
                return;
            }
        };
        let _ = closer.set_read_timeout(Some(Duration::from_secs(10)));
        let (name, slots, address) = match read_message::<ToCoordinator>(&mut reading) {
            Ok(Some(ToCoordinator::Register {
                protocol,
                name,
                slots,
                data_address,
            })) if protocol == PROTOCOL => (name, slots, data_address),
            Ok(Some(ToCoordinator::Register { protocol, .. })) => {
                tracing::warn!(
                    %peer,
                    "refused a worker at {peer}: protocol version {protocol}, this coordinator speaks {PROTOCOL}"
                );
                return;
            }
            _ => {
                tracing::warn!(
                    %peer,
                    "refused a connection from {peer}: it did not register as a worker"
                );
                return;
            }
        };
        let _ = closer.set_read_timeout(None);
        let link = Arc::new(WorkerLink {
            id: self.next_id.fetch_add(1, Ordering::SeqCst),
            name,
            slots,
            address,
            writer: Mutex::new(writer),
            closer,
            last_seen: Mutex::new(Instant::now()),
            alive: AtomicBool::new(true),
            closed_because: Mutex::new(None),
            subtasks: Mutex::new((0, Vec::new())),
        });
        tracing::info!(
            worker = %link.name,
            "{} registered with {} slots",
            link.describe(),
            link.slots
        );
        lock(&self.workers).push(link.clone());
        let _ = self.events.send(Event::Registered);
        let why = loop {
            let message = match read_message::<ToCoordinator>(&mut reading) {
                Ok(Some(m)) => m,
                Ok(None) => break "its connection closed".to_string(),
                Err(e) => break format!("its connection failed: {e}"),
            };
            *lock(&link.last_seen) = Instant::now();
            if let Some(event) = self.dispatch(&link, message) {
                let _ = self.events.send(event);
            }
        };
        let why = lock(&link.closed_because)
            .clone()
            .unwrap_or(format!("lost: {why}"));
        link.disconnect(why.clone());
        lock(&self.workers).retain(|w| w.id != link.id);
        let why = format!("{} {why}", link.describe());
        tracing::warn!(worker = %link.name, "{why}");
        let _ = self.events.send(Event::Lost {
            worker: link.id,
            why,
        });
    }

    /// Routes a worker's message: reports to the running attempt's checkpoint coordinator,
    /// the rest to the supervisor.
    fn dispatch(&self, link: &WorkerLink, message: ToCoordinator) -> Option<Event> {
        let route = |attempt: u64, report: Report| {
            if let Some(c) = lock(&self.current)
                .as_ref()
                .filter(|c| c.attempt == attempt)
            {
                let _ = c.reports.send(report);
            }
        };
        match message {
            ToCoordinator::Register { .. } => None,
            ToCoordinator::Status { attempt, subtasks } => {
                *lock(&link.subtasks) = (attempt, subtasks);
                None
            }
            ToCoordinator::Ack {
                attempt,
                task,
                checkpoint,
                part,
            } => {
                route(
                    attempt,
                    Report::Ack {
                        task: task as usize,
                        checkpoint,
                        snapshot: part.into_snapshot(),
                    },
                );
                None
            }
            ToCoordinator::Declined {
                attempt,
                checkpoint,
                error,
            } => {
                let error = format!("{}: {error}", link.describe());
                route(attempt, Report::Declined { checkpoint, error });
                None
            }
            ToCoordinator::Finished {
                attempt,
                task,
                part,
            } => {
                route(
                    attempt,
                    Report::Finished {
                        task: task as usize,
                        snapshot: part.into_snapshot(),
                    },
                );
                None
            }
            ToCoordinator::Committed {
                attempt,
                checkpoint,
                error,
            } => {
                if let Some(c) = lock(&self.current)
                    .as_ref()
                    .filter(|c| c.attempt == attempt)
                {
                    let _ = c.commits.send((link.id, checkpoint, error));
                }
                None
            }
            ToCoordinator::Ended {
                attempt,
                finished,
                errors,
            } => Some(Event::Ended {
                worker: link.id,
                attempt,
                finished,
                errors,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::place;

    #[test]
    fn slots_spread_one_per_worker_in_turn() {
        assert_eq!(place(&[2, 2, 2], 3), Some((vec![0, 1, 2], vec![0, 1, 2])));
        assert_eq!(
            place(&[2, 2, 2], 4),
            Some((vec![0, 1, 2], vec![0, 1, 2, 0]))
        );
        // Workers without a free slot are skipped and not used.
        assert_eq!(place(&[0, 3, 1], 3), Some((vec![1, 2], vec![0, 1, 0])));
        assert_eq!(place(&[1, 1], 3), None);
        assert_eq!(place(&[], 1), None);
    }
}
