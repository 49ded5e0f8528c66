//! What a consumer has done so far, for the application to show (a status endpoint, a log line,
//! metrics of its own).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Progress {
    applied: AtomicU64,
    duplicates: AtomicU64,
    unreadable: AtomicU64,
    batches: AtomicU64,
    misplaced: AtomicU64,
    leases_held: AtomicU64,
    lease_changes: AtomicU64,
    shards: Mutex<BTreeMap<String, ShardProgress>>,
}

/// One shard's position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardProgress {
    /// The last record applied.
    pub sequence_number: Option<String>,
    /// Events of this shard handed to the handler and committed.
    pub applied: u64,
    /// Events of this shard skipped as applied before.
    pub duplicates: u64,
    /// How far the last read was behind the shard's newest record (Kinesis's figure).
    pub millis_behind: i64,
    pub finished: bool,
}

impl Progress {
    /// Events handed to the handler and committed.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Events skipped because their id was applied before (a retried publish, a replay).
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Records that were not CloudEvents (passed over, logged).
    pub fn unreadable(&self) -> u64 {
        self.unreadable.load(Ordering::Relaxed)
    }

    /// Aggregated events left out because they were outside their shard's hash range (sent
    /// again by the producer to the right shard; see [`crate::event::from_record`]).
    pub fn misplaced(&self) -> u64 {
        self.misplaced.load(Ordering::Relaxed)
    }

    /// Transactions committed.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Shard leases this instance holds (PostgreSQL; 0 without leases).
    pub fn leases_held(&self) -> u64 {
        self.leases_held.load(Ordering::Relaxed)
    }

    /// Shard leases this instance took or stole since it started.
    pub fn lease_changes(&self) -> u64 {
        self.lease_changes.load(Ordering::Relaxed)
    }

    pub(crate) fn leases(&self, held: usize, changes: u64) {
        self.leases_held.store(held as u64, Ordering::Relaxed);
        self.lease_changes.fetch_add(changes, Ordering::Relaxed);
    }

    /// Each shard read so far.
    pub fn shards(&self) -> BTreeMap<String, ShardProgress> {
        self.shards.lock().unwrap().clone()
    }

    /// The largest `millis_behind` of the shards still being read.
    pub fn millis_behind(&self) -> i64 {
        let shards = self.shards.lock().unwrap();
        shards
            .values()
            .filter(|s| !s.finished)
            .map(|s| s.millis_behind)
            .max()
            .unwrap_or(0)
    }

    pub(crate) fn committed(&self, shard: &str, applied: u64, duplicates: u64, unreadable: u64) {
        self.shard(shard, |p| {
            p.applied += applied;
            p.duplicates += duplicates;
        });
        self.applied.fetch_add(applied, Ordering::Relaxed);
        self.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        self.unreadable.fetch_add(unreadable, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn left_out(&self, n: u64) {
        self.misplaced.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn shard(&self, id: &str, update: impl FnOnce(&mut ShardProgress)) {
        update(
            self.shards
                .lock()
                .unwrap()
                .entry(id.to_string())
                .or_default(),
        );
    }
}
