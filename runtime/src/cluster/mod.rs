//! Distributed mode: `sluice coordinator` and `sluice worker`, roles of the same binary.
//!
//! Workers connect to the coordinator (one TCP connection each, [`protocol`]) and register
//! their slots. The coordinator places the job's slots on them — subtask `s` of every
//! operator runs in slot `s`, so a chain of forward edges stays in one process — and sends
//! each worker the job (name and config; every worker binary has the same registry), the
//! placement, the other workers' data addresses and the snapshot to start from. Each worker
//! builds the whole graph and runs its slots' subtasks with the embedded engine; edges
//! between workers become logical channels of `crate::exec::net` connections, edges within a
//! worker stay in-memory queues.
//!
//! Snapshots: the coordinator runs the same checkpoint coordinator as embedded mode, over a
//! [`crate::exec::checkpoint::TaskLink`] that sends barrier triggers and commits to the
//! workers. Workers upload their subtasks' state to the checkpoint storage themselves (the
//! coordinator only receives the file references) and commit their sinks' transactions when
//! the coordinator says the snapshot is complete.
//!
//! Failover: a worker whose connection closes, or that misses heartbeats for longer than
//! the worker timeout, fails the attempt; so does any subtask failure. The coordinator
//! cancels the attempt on every worker, waits per its [`restart::RestartPolicy`], and
//! deploys again from the latest complete checkpoint onto the workers registered then.
//!
//! A worker outlives its coordinator: when the connection closes it cancels its attempt,
//! forgets everything that belonged to the lost coordinator, and registers again with
//! whichever coordinator next listens at the same address (giving up after
//! `--coordinator-loss-timeout`).

mod coordinator;
pub(crate) mod protocol;
pub mod restart;
mod worker;

pub use coordinator::{CoordinatorConfig, JobCoordinator, Outcome};
pub use restart::RestartPolicy;
pub use worker::{run_worker, WorkerConfig};

use protocol::PROTOCOL;

/// Locks `m` even if a holder panicked: what the cluster's mutexes guard (a socket, a
/// timestamp, a report, a map of pending channels) is replaced whole or appended to, never
/// left half-updated, and a worker or coordinator must keep serving its job.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The bytes a worker opens a data connection with: which attempt's links and which worker
/// it comes from, so the receiving worker can hand it the channels that attempt expects
/// from it. Attempts are named by their run id, not their number: a coordinator started
/// anew numbers its attempts from 1 again, and a late connection of a lost coordinator's
/// attempt must not take the channels of the new one's attempt of the same number.
mod hello {
    pub(super) const MAGIC: [u8; 4] = *b"SLH2";

    /// The 64-bit name of an attempt's links (FNV-1a of its run id): the same in every
    /// worker of the attempt.
    pub(super) fn link_of(run_id: &str) -> u64 {
        run_id.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    pub(super) fn encode(link: u64, from: u32) -> [u8; super::HELLO_LEN] {
        let mut out = [0u8; super::HELLO_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4..12].copy_from_slice(&link.to_le_bytes());
        out[12..].copy_from_slice(&from.to_le_bytes());
        out
    }

    pub(super) fn parse(bytes: &[u8; super::HELLO_LEN]) -> Option<(u64, u32)> {
        if bytes[..4] != MAGIC {
            return None;
        }
        let link = u64::from_le_bytes(bytes[4..12].try_into().ok()?);
        let from = u32::from_le_bytes(bytes[12..].try_into().ok()?);
        Some((link, from))
    }

    #[cfg(test)]
    #[test]
    fn a_hello_round_trips_and_anything_else_is_refused() {
        assert_eq!(parse(&encode(7, 2)), Some((7, 2)));
        assert_eq!(parse(&[0u8; super::HELLO_LEN]), None);
        assert_ne!(link_of("18c2f9a1b2c3d00001"), link_of("18c2f9a1b2c3d00002"));
        assert_eq!(link_of("abc"), link_of("abc"));
    }
}

const HELLO_LEN: usize = 16;
