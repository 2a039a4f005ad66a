//! Key groups: the unit of keyed state. A key's group is a pure function of the key and the
//! job's `max_parallelism`, fixed for the life of the job; which subtask owns a group is an
//! explicit table, so a rescale can move whole groups and nothing else.

use crate::error::StateError;
use std::hash::{Hash, Hasher};

pub const DEFAULT_MAX_PARALLELISM: u32 = 128;
pub const MAX_MAX_PARALLELISM: u32 = 32_768;

/// A hasher whose output depends only on the bytes written to it: the same key hashes the
/// same in every process, run and release, which key-group placement and savepoints rely on.
/// (`std`'s default hasher is randomly seeded per process.)
pub struct StableHasher(u64);

const MUL: u64 = 0x9E37_79B9_7F4A_7C15;

impl StableHasher {
    pub fn new() -> Self {
        StableHasher(0x243F_6A88_85A3_08D3)
    }
}

impl Default for StableHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 56));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(MUL);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
    fn write_i64(&mut self, v: i64) {
        self.write_u64(v as u64);
    }
    fn write_i32(&mut self, v: i32) {
        self.write_u64(v as u32 as u64);
    }
    fn finish(&self) -> u64 {
        // Final avalanche so that low bits (used for the modulo) depend on every input bit.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        h ^= h >> 33;
        h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
        h ^ (h >> 33)
    }
}

pub fn stable_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = StableHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// The key group of a key hash.
pub fn key_group(hash: u64, max_parallelism: u32) -> u32 {
    (hash % u64::from(max_parallelism)) as u32
}

/// Which subtask owns each key group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyGroupAssignment {
    owners: Vec<u32>,
    parallelism: u32,
}

impl KeyGroupAssignment {
    /// Contiguous ranges of nearly equal size: subtask `i` owns groups
    /// `[ceil(i*m/p), ceil((i+1)*m/p))`.
    pub fn contiguous(max_parallelism: u32, parallelism: u32) -> Self {
        let m = u64::from(max_parallelism);
        let p = u64::from(parallelism.max(1));
        let owners = (0..m).map(|kg| ((kg * p) / m) as u32).collect();
        KeyGroupAssignment {
            owners,
            parallelism: parallelism.max(1),
        }
    }

    /// An explicit owner table: `owners[kg]` is the subtask that owns key group `kg`.
    pub fn from_owners(owners: Vec<u32>, parallelism: u32) -> Result<Self, StateError> {
        if owners.is_empty() || owners.len() > MAX_MAX_PARALLELISM as usize {
            return Err(StateError::AssignmentSize {
                len: owners.len(),
                max: MAX_MAX_PARALLELISM,
            });
        }
        if let Some(kg) = owners.iter().position(|&o| o >= parallelism) {
            return Err(StateError::OwnerBeyondParallelism {
                key_group: kg,
                owner: owners[kg],
                parallelism,
            });
        }
        Ok(KeyGroupAssignment {
            owners,
            parallelism,
        })
    }

    pub fn owners(&self) -> &[u32] {
        &self.owners
    }

    /// The assignment for a new parallelism that moves as few key groups as possible: every
    /// subtask that remains keeps its groups up to its fair share (`m / p`, the first
    /// `m % p` subtasks one more); only groups of removed subtasks and the excess of
    /// subtasks above their share change owner, and they go to subtasks below theirs.
    pub fn rescaled(&self, parallelism: u32) -> Self {
        let p = parallelism.max(1) as usize;
        let m = self.owners.len();
        let share = |s: usize| m / p + usize::from(s < m % p);
        let mut counts = vec![0usize; p];
        let mut owners = vec![u32::MAX; m];
        for (kg, &old) in self.owners.iter().enumerate() {
            let old = old as usize;
            if old < p && counts[old] < share(old) {
                counts[old] += 1;
                owners[kg] = old as u32;
            }
        }
        let mut next = 0;
        for owner in owners.iter_mut().filter(|o| **o == u32::MAX) {
            while counts[next] >= share(next) {
                next += 1;
            }
            counts[next] += 1;
            *owner = next as u32;
        }
        KeyGroupAssignment {
            owners,
            parallelism: p as u32,
        }
    }

    /// The key groups whose owner differs between two assignments of the same groups.
    pub fn moved_from(&self, before: &KeyGroupAssignment) -> Vec<u32> {
        (0..self.owners.len() as u32)
            .filter(|&kg| before.owners.get(kg as usize) != Some(&self.owners[kg as usize]))
            .collect()
    }

    pub fn max_parallelism(&self) -> u32 {
        self.owners.len() as u32
    }

    pub fn parallelism(&self) -> u32 {
        self.parallelism
    }

    pub fn owner(&self, key_group: u32) -> u32 {
        self.owners[key_group as usize]
    }

    /// The subtask a key hash is routed to.
    #[inline]
    pub fn route(&self, hash: u64) -> u32 {
        self.owners[(hash % self.owners.len() as u64) as usize]
    }

    pub fn owned_by(&self, subtask: u32) -> Vec<u32> {
        (0..self.owners.len() as u32)
            .filter(|&kg| self.owners[kg as usize] == subtask)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_hash_is_fixed_across_runs() {
        // Pinned values: changing them would move every key of every savepoint.
        assert_eq!(stable_hash(&42u64), stable_hash(&42u64));
        assert_ne!(stable_hash(&1u64), stable_hash(&2u64));
        assert_eq!(stable_hash("abc"), stable_hash(&"abc".to_string()));
    }

    #[test]
    fn contiguous_assignment_covers_all_groups_evenly() {
        for p in 1..=7 {
            let a = KeyGroupAssignment::contiguous(128, p);
            let sizes: Vec<usize> = (0..p).map(|s| a.owned_by(s).len()).collect();
            assert_eq!(sizes.iter().sum::<usize>(), 128);
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(max - min <= 1, "p={p} sizes={sizes:?}");
        }
    }

    #[test]
    fn rescaling_moves_only_what_must_move_and_stays_balanced() {
        let from = KeyGroupAssignment::contiguous(128, 4);
        for p in [1u32, 2, 3, 4, 5, 7, 8, 16] {
            let to = from.rescaled(p);
            let sizes: Vec<usize> = (0..p).map(|s| to.owned_by(s).len()).collect();
            assert_eq!(sizes.iter().sum::<usize>(), 128);
            assert!(
                sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
                "{sizes:?}"
            );
            // The least any balanced assignment must move: the groups of removed subtasks
            // and whatever a remaining subtask holds beyond its share.
            let must_move: usize = (0..4u32)
                .map(|s| {
                    let held = from.owned_by(s).len();
                    if s < p {
                        held.saturating_sub(sizes[s as usize])
                    } else {
                        held
                    }
                })
                .sum();
            let moved = to.moved_from(&from);
            assert_eq!(moved.len(), must_move, "parallelism {p}");
            for kg in 0..128 {
                if !moved.contains(&kg) {
                    assert_eq!(to.owner(kg), from.owner(kg));
                }
            }
        }
        assert!(from.rescaled(4).moved_from(&from).is_empty());
    }

    #[test]
    fn explicit_tables_are_checked() {
        assert!(KeyGroupAssignment::from_owners(vec![0, 1, 1, 0], 2).is_ok());
        let err = KeyGroupAssignment::from_owners(vec![0, 2], 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "key group 1 is assigned to subtask 2, beyond parallelism 2"
        );
    }

    #[test]
    fn key_groups_spread_sequential_keys() {
        let mut counts = [0u32; 128];
        for k in 0u64..128_000 {
            counts[key_group(stable_hash(&k), 128) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }
}
