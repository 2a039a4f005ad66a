//! Savepoints asked for through the API: each runs on a thread of its own and is looked up
//! by its request id.

use super::model::{SavepointState, SavepointStatus};
use super::JobControl;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Requests remembered; older finished ones are forgotten first.
const REMEMBERED: usize = 100;

struct Entry {
    status: SavepointStatus,
    /// A client has read the outcome (completed or failed).
    reported: bool,
}

pub(super) struct Savepoints {
    /// Request ids start with it, so an id from an earlier process is unknown rather than
    /// mistaken for a request of this one.
    prefix: String,
    inner: Mutex<Inner>,
    changed: Condvar,
}

struct Inner {
    next: u64,
    entries: VecDeque<Entry>,
}

impl Savepoints {
    pub(super) fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Savepoints {
            prefix: format!("{:x}", (nanos as u64) ^ u64::from(std::process::id())),
            inner: Mutex::new(Inner {
                next: 1,
                entries: VecDeque::new(),
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the entries consistent (each update is one
        // assignment), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a savepoint into `target` and returns its request id.
    pub(super) fn start(
        self: &Arc<Self>,
        job: Arc<dyn JobControl>,
        target: String,
        stop: bool,
    ) -> Result<String, std::io::Error> {
        let id = {
            let mut inner = self.lock();
            let id = format!("{}-{}", self.prefix, inner.next);
            inner.next += 1;
            if inner.entries.len() >= REMEMBERED {
                let finished = inner
                    .entries
                    .iter()
                    .position(|e| e.status.status != SavepointState::InProgress);
                if let Some(i) = finished {
                    inner.entries.remove(i);
                }
            }
            inner.entries.push_back(Entry {
                status: SavepointStatus {
                    id: id.clone(),
                    status: SavepointState::InProgress,
                    stop,
                    target_directory: target.clone(),
                    location: None,
                    bytes: None,
                    duration_ms: None,
                    error: None,
                },
                reported: false,
            });
            id
        };
        let this = self.clone();
        let request = id.clone();
        let spawned = std::thread::Builder::new()
            .name("savepoint".into())
            .spawn(move || {
                let result = job.savepoint(&target, stop);
                match &result {
                    Ok(done) => tracing::info!(
                        savepoint = %request,
                        checkpoint = done.id,
                        "control API: savepoint {request} completed: {}{}",
                        done.location,
                        if stop { " (the job stops)" } else { "" }
                    ),
                    Err(e) => tracing::warn!(
                        savepoint = %request,
                        "control API: savepoint {request} failed: {e}"
                    ),
                }
                this.update(&request, |s| match result {
                    Ok(done) => {
                        s.status = SavepointState::Completed;
                        s.location = Some(done.location);
                        s.bytes = Some(done.bytes);
                        s.duration_ms = Some(done.duration_ms);
                    }
                    Err(e) => {
                        s.status = SavepointState::Failed;
                        s.error = Some(e.to_string());
                    }
                });
            });
        if let Err(e) = spawned {
            self.update(&id, |s| {
                s.status = SavepointState::Failed;
                s.error = Some(format!("could not start: {e}"));
            });
            return Err(e);
        }
        Ok(id)
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut SavepointStatus)) {
        let mut inner = self.lock();
        if let Some(e) = inner.entries.iter_mut().find(|e| e.status.id == id) {
            f(&mut e.status);
        }
        drop(inner);
        self.changed.notify_all();
    }

    /// The status of request `id`, marking a final outcome as read.
    pub(super) fn get(&self, id: &str) -> Option<SavepointStatus> {
        let mut inner = self.lock();
        let entry = inner.entries.iter_mut().find(|e| e.status.id == id)?;
        if entry.status.status != SavepointState::InProgress {
            entry.reported = true;
        }
        let status = entry.status.clone();
        drop(inner);
        self.changed.notify_all();
        Some(status)
    }

    /// Whether a stop-with-savepoint is under way.
    pub(super) fn stop_in_progress(&self) -> bool {
        self.lock()
            .entries
            .iter()
            .any(|e| e.status.stop && e.status.status == SavepointState::InProgress)
    }

    /// Waits, at most `timeout`, until the outcome of every stop-with-savepoint has been
    /// read by a client: a process that stops with its job would otherwise exit before the
    /// client learns where the savepoint went.
    pub(super) fn wait_for_stop_reported(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut inner = self.lock();
        loop {
            // A failed stop did not stop the job: nothing to wait for.
            let pending = inner
                .entries
                .iter()
                .any(|e| e.status.stop && !e.reported && e.status.status != SavepointState::Failed);
            let left = deadline.saturating_duration_since(Instant::now());
            if !pending || left.is_zero() {
                return;
            }
            inner = match self.changed.wait_timeout(inner, left) {
                Ok((guard, _)) => guard,
                Err(p) => p.into_inner().0,
            };
        }
    }
}
