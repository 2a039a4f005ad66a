//! One attempt of a distributed job: deployed on the workers placed for it, its
//! checkpoints coordinated over their connections, watched until it ends, and wound down.

use super::workers::{Event, WorkerLink};
use super::{lock, JobCoordinator, Outcome};
use crate::cluster::protocol::{Deployment, ToWorker};
use crate::control::model::{JobError, Phase};
use crate::error::{CommitError, Error};
use crate::exec::checkpoint::{Command, Coordinator, Report, TaskLink};
use crate::exec::JobGraph;
use crate::exec::{assignments, new_run_id};
use crate::sink::SinkTransaction;
use crate::snapshot::{CheckpointStorage, Compatibility, JobLayout, SnapshotContent, SnapshotKind};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long workers get to end an attempt before the coordinator gives up on them.
const WIND_DOWN: Duration = Duration::from_secs(30);

/// How long a worker gets to commit a complete snapshot's transactions.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the reports of the running attempt go.
pub(super) struct AttemptLink {
    pub(super) attempt: u64,
    /// Slots of the attempt on each of its workers.
    pub(super) slots: HashMap<u64, u32>,
    pub(super) reports: Sender<Report>,
    pub(super) commits: Sender<(u64, u64, Option<String>)>,
    pub(super) commands: Sender<Command>,
}

impl JobCoordinator {
    pub(super) fn run_attempt(
        &self,
        attempt: u64,
        graph: &JobGraph,
        storage: Option<&CheckpointStorage>,
        restore: Option<&str>,
    ) -> Result<AttemptEnd, Error> {
        self.set_phase(Phase::Starting);
        let heads: Vec<usize> = (0..graph.nodes.len())
            .filter(|&n| !graph.is_chained(n))
            .collect();
        let task_slots: Vec<usize> = heads
            .iter()
            .flat_map(|&h| 0..graph.nodes[h].parallelism)
            .collect();
        let needed = graph.nodes.iter().map(|n| n.parallelism).max().unwrap_or(1);
        let Some((chosen, slot_workers)) = self.wait_for_slots(needed) else {
            self.set_phase(Phase::Finished);
            return Ok(AttemptEnd::Done(Outcome::Cancelled));
        };

        // The snapshot's manifest gives the key-group owners; the workers load the state.
        let restored = match restore {
            Some(location) => {
                let (s, id) = CheckpointStorage::open_snapshot(location)?;
                let content = SnapshotContent::from_manifest(&s.manifest(id)?)?;
                let compat = Compatibility::check(&content, graph.max_parallelism, &self.declared);
                if let Some(why) = compat.refusal(self.config.allow_non_restored_state) {
                    return Err(Error::Checkpoint(format!(
                        "cannot restore {location}: {why}"
                    )));
                }
                Some((content, id))
            }
            None => None,
        };
        let owners = assignments(graph, restored.as_ref().map(|(c, _)| c))?;
        let layout = JobLayout {
            job: graph.name.clone(),
            max_parallelism: graph.max_parallelism,
            declared: self.declared.clone(),
            assignments: graph
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(n, node)| Some((node.uid.clone(), owners.get(&n)?.owners().to_vec())))
                .collect(),
        };
        let next_id = storage
            .map_or(Ok(1), |s| s.next_id())?
            .max(restored.as_ref().map_or(0, |(_, id)| id + 1));

        let (reports_tx, reports) = crossbeam_channel::unbounded();
        let (commits_tx, commits) = crossbeam_channel::unbounded();
        let (commands_tx, commands) = crossbeam_channel::unbounded();
        let mut slots: HashMap<u64, u32> = HashMap::new();
        for &w in &slot_workers {
            *slots.entry(chosen[w as usize].id).or_default() += 1;
        }
        *lock(&self.current) = Some(AttemptLink {
            attempt,
            slots,
            reports: reports_tx,
            commits: commits_tx,
            commands: commands_tx,
        });
        let config_text = serde_json::to_string(&self.config.config)
            .map_err(|e| Error::Config(format!("spec.job.config: {e}")))?;
        let addresses: Vec<String> = chosen.iter().map(|w| w.address.clone()).collect();
        tracing::info!(
            attempt,
            "attempt {attempt}: deploying {} at parallelism {needed} on {}{}",
            graph.name,
            chosen
                .iter()
                .map(|w| w.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            restore
                .map(|r| format!(", restoring {r}"))
                .unwrap_or_default()
        );
        let run_id = new_run_id();
        for (i, w) in chosen.iter().enumerate() {
            w.send(&ToWorker::Deploy(Box::new(Deployment {
                attempt,
                run_id: run_id.clone(),
                job: graph.name.clone(),
                config: config_text.clone(),
                parallelism: self.config.parallelism,
                max_parallelism: graph.max_parallelism,
                restore: restore.map(str::to_string),
                allow_non_restored_state: self.config.allow_non_restored_state,
                commit_restored: i == 0,
                checkpoint_storage: self.config.checkpoints.as_ref().map(|c| c.storage.clone()),
                rocksdb: self.config.rocksdb,
                batch_size: self.config.batch_size,
                channel_capacity: self.config.channel_capacity,
                redact_keys: self.config.redact_keys,
                slot_workers: slot_workers.clone(),
                workers: addresses.clone(),
                you: i as u32,
            })));
        }
        lock(&self.view).attempt_started = Some(Instant::now());
        lock(&self.status).restored_from = restore.map(str::to_string);

        let attempt_cancel = Arc::new(AtomicBool::new(false));
        let link = DistributedLink {
            attempt,
            task_workers: task_slots
                .iter()
                .map(|&s| slot_workers[s] as usize)
                .collect(),
            workers: chosen.clone(),
            commits,
        };
        let checkpoints = Coordinator {
            layout,
            tasks: task_slots.len(),
            config: self.config.checkpoints.clone(),
            storage: self
                .config
                .checkpoints
                .as_ref()
                .map(|c| CheckpointStorage::open(&c.storage))
                .transpose()?,
            next_id,
            link: Box::new(link),
            reports,
            commands,
            cancel: attempt_cancel.clone(),
            status: self.status.clone(),
            uploaded: HashMap::new(),
        };
        let checkpoints = std::thread::Builder::new()
            .name("checkpoints".into())
            .spawn(move || checkpoints.run())
            .map_err(|e| Error::io("thread", e))?;
        self.set_phase(Phase::Running);
        let started = Instant::now();

        let mut taking_part = TakingPart {
            attempt,
            workers: &chosen,
            ended: HashSet::new(),
        };
        let mut failure: Option<Vec<JobError>> = None;
        let mut outcome: Option<Outcome> = None;
        while failure.is_none() && outcome.is_none() {
            if self.cancel.load(Ordering::SeqCst) {
                outcome = Some(Outcome::Cancelled);
                break;
            }
            if let Ok(event) = self.events.recv_timeout(Duration::from_millis(50)) {
                failure = taking_part.failure_in(event);
            }
            self.drop_silent_workers();
            if failure.is_none() && checkpoints.is_finished() {
                let stopped = lock(&self.status).stopped;
                match checkpoints.join() {
                    Ok(Ok(())) if stopped => {
                        outcome = Some(Outcome::Stopped(
                            lock(&self.status).last_completed().cloned(),
                        ))
                    }
                    Ok(Ok(())) => outcome = Some(Outcome::Finished),
                    Ok(Err(e)) => failure = Some(vec![JobError::of_job(e.to_string())]),
                    Err(_) => {
                        failure = Some(vec![JobError::of_job(
                            "the checkpoint coordinator panicked",
                        )])
                    }
                }
                break;
            }
        }
        attempt_cancel.store(true, Ordering::SeqCst);
        // A finished job's workers end by themselves; every other ending cancels them.
        let cancel = !matches!(outcome, Some(Outcome::Finished));
        self.wind_down(&mut taking_part, cancel, &mut failure);
        *lock(&self.current) = None;
        match (outcome, failure) {
            (Some(outcome), None) => {
                self.set_phase(Phase::Finished);
                Ok(AttemptEnd::Done(outcome))
            }
            (_, Some(errors)) => Ok(AttemptEnd::Failed {
                errors,
                ran_for: started.elapsed(),
            }),
            (None, None) => Ok(AttemptEnd::Failed {
                errors: vec![JobError::of_job("the attempt ended for no reason")],
                ran_for: started.elapsed(),
            }),
        }
    }

    /// Waits until every worker of the attempt has ended it (cancelling it first when
    /// `cancel`); a worker that does not in time is disconnected. Without `cancel`, a
    /// failure while the workers end is the attempt's failure.
    fn wind_down(
        &self,
        taking_part: &mut TakingPart,
        cancel: bool,
        failure: &mut Option<Vec<JobError>>,
    ) {
        let attempt = taking_part.attempt;
        if cancel {
            for w in taking_part.running() {
                w.send(&ToWorker::Cancel { attempt });
            }
        }
        let deadline = Instant::now() + WIND_DOWN;
        loop {
            let waiting = taking_part.running();
            if waiting.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                for w in waiting {
                    w.disconnect(format!("did not end attempt {attempt} in time"));
                }
                return;
            }
            if let Ok(event) = self.events.recv_timeout(Duration::from_millis(50)) {
                if let Some(f) = taking_part.failure_in(event) {
                    if !cancel {
                        failure.get_or_insert(f);
                    }
                }
            }
        }
    }
}

/// The workers of an attempt and which of them have ended it.
struct TakingPart<'a> {
    attempt: u64,
    workers: &'a [Arc<WorkerLink>],
    ended: HashSet<u64>,
}

impl TakingPart<'_> {
    /// The workers still running the attempt.
    fn running(&self) -> Vec<&Arc<WorkerLink>> {
        self.workers
            .iter()
            .filter(|w| !self.ended.contains(&w.id) && w.alive.load(Ordering::SeqCst))
            .collect()
    }

    /// Records what `event` says of the attempt; returns the failure it is, if any.
    fn failure_in(&mut self, event: Event) -> Option<Vec<JobError>> {
        match event {
            Event::Lost { worker, why } => {
                let ours = self.workers.iter().any(|w| w.id == worker);
                (ours && !self.ended.contains(&worker)).then(|| vec![JobError::of_job(why)])
            }
            Event::Ended {
                worker,
                attempt,
                finished,
                errors,
            } if attempt == self.attempt => {
                self.ended.insert(worker);
                if finished {
                    return None;
                }
                Some(if errors.is_empty() {
                    let who = self.workers.iter().find(|w| w.id == worker);
                    vec![JobError::of_job(format!(
                        "{} ended its subtasks unfinished",
                        who.map(|w| w.describe()).unwrap_or_default()
                    ))]
                } else {
                    errors
                })
            }
            Event::Ended { .. } | Event::Registered => None,
        }
    }
}

pub(super) enum AttemptEnd {
    Done(Outcome),
    Failed {
        errors: Vec<JobError>,
        ran_for: Duration,
    },
}

/// The checkpoint coordinator's link to the subtasks of an attempt: through its workers.
struct DistributedLink {
    attempt: u64,
    workers: Vec<Arc<WorkerLink>>,
    /// The worker (index into `workers`) of each task.
    task_workers: Vec<usize>,
    commits: Receiver<(u64, u64, Option<String>)>,
}

impl TaskLink for DistributedLink {
    fn inject(&self, id: u64, kind: SnapshotKind) {
        for w in &self.workers {
            w.send(&ToWorker::Trigger {
                attempt: self.attempt,
                checkpoint: id,
                kind,
            });
        }
    }

    fn commit(&self, id: u64, transactions: Vec<(usize, SinkTransaction)>) -> Result<(), Error> {
        let mut by_worker: Vec<Vec<SinkTransaction>> = vec![Vec::new(); self.workers.len()];
        for (task, t) in transactions {
            let w = self.task_workers.get(task).copied().unwrap_or(0);
            by_worker[w].push(t);
        }
        // Every worker hears of the completion: it may reuse the files it uploaded for it.
        for (w, transactions) in self.workers.iter().zip(by_worker) {
            if !w.send(&ToWorker::Commit {
                attempt: self.attempt,
                checkpoint: id,
                transactions,
            }) {
                return Err(CommitError::Lost {
                    worker: w.describe(),
                    checkpoint: id,
                }
                .into());
            }
        }
        let mut waiting: HashSet<u64> = self.workers.iter().map(|w| w.id).collect();
        let deadline = Instant::now() + COMMIT_TIMEOUT;
        while !waiting.is_empty() {
            match self.commits.recv_timeout(Duration::from_millis(100)) {
                Ok((worker, checkpoint, error)) if checkpoint == id => {
                    if let Some(message) = error {
                        let who = self.workers.iter().find(|w| w.id == worker);
                        return Err(CommitError::Failed {
                            worker: who.map(|w| w.describe()).unwrap_or_default(),
                            checkpoint: id,
                            message,
                        }
                        .into());
                    }
                    waiting.remove(&worker);
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(w) = self
                        .workers
                        .iter()
                        .find(|w| waiting.contains(&w.id) && !w.alive.load(Ordering::SeqCst))
                    {
                        return Err(CommitError::Lost {
                            worker: w.describe(),
                            checkpoint: id,
                        }
                        .into());
                    }
                    if Instant::now() >= deadline {
                        return Err(CommitError::Timeout {
                            workers: waiting.len(),
                            checkpoint: id,
                            timeout: COMMIT_TIMEOUT,
                        }
                        .into());
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Err(CommitError::AttemptEnded.into()),
            }
        }
        Ok(())
    }
}
