//! Sharing a stream's shards among the instances of one consumer name, the way the KCL shares
//! them: one lease per shard in the consumer's database, held by one instance at a time and
//! renewed by it (each renewal bumps the lease's counter). An instance that sees a lease's
//! counter stand still for the failover time takes it as expired; an instance below its fair
//! share takes free and expired leases, and when there are none, steals one from the busiest
//! instance. This module only decides, from what one instance read of the table: pure code, the
//! clock passed in. The table and its fenced writes (a checkpoint is refused once its instance
//! lost the lease) are the next part of issue 27 and are not built yet.
//!
//! Order across owners is [`crate::lineage`]'s: only ready shards (every parent read to its end)
//! are shared out, so a child is never taken while a parent is still being read.

use std::collections::{BTreeMap, HashMap, HashSet};

/// One lease as read from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub shard: String,
    /// The instance holding it; `None` once released (a graceful stop hands its leases back).
    pub owner: Option<String>,
    /// Bumped by its owner at every renewal.
    pub counter: i64,
}

/// Tells live leases from expired ones the KCL's way: by this instance's own clock, a lease
/// whose counter has not moved for `failover_ms` since this instance first saw that value is
/// expired. No clock is compared across machines.
#[derive(Debug)]
pub struct Expiry {
    failover_ms: u64,
    /// Per shard: the counter last seen and when this instance first saw it.
    seen: HashMap<String, (i64, u64)>,
}

impl Expiry {
    pub fn new(failover_ms: u64) -> Expiry {
        Expiry {
            failover_ms,
            seen: HashMap::new(),
        }
    }

    /// Whether `lease` is live at `now_ms` (its owner renewed it lately). A free lease is never
    /// live. Leases this instance holds are judged the same way: one it failed to renew in time
    /// is as free to others as any.
    pub fn live(&mut self, lease: &Lease, now_ms: u64) -> bool {
        if lease.owner.is_none() {
            return false;
        }
        let entry = self
            .seen
            .entry(lease.shard.clone())
            .or_insert((lease.counter, now_ms));
        if entry.0 != lease.counter {
            *entry = (lease.counter, now_ms);
        }
        now_ms.saturating_sub(entry.1) < self.failover_ms
    }

    /// Forgets shards no longer in the table.
    pub fn retain<'a>(&mut self, shards: impl IntoIterator<Item = &'a str>) {
        let listed: HashSet<&str> = shards.into_iter().collect();
        self.seen.retain(|shard, _| listed.contains(shard.as_str()));
    }
}

/// What one instance should do this round.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Free or expired leases to take (a conditional write each: another instance may win).
    pub take: Vec<String>,
    /// A live lease of the busiest instance to take over, at most one per round.
    pub steal: Option<String>,
}

/// The plan of instance `me`, given the shards ready to read and each lease with whether it is
/// live ([`Expiry::live`]). The instances are those holding a live lease, and `me`; each one's
/// fair share is the ready shards divided among them, rounded up. Below it, `me` takes free and
/// expired leases (in an order of its own, so instances starting together reach for different
/// ones); with none left, it steals one from the instance holding the most, when that one holds
/// at least two more than `me` (so two instances never trade a lease back and forth).
pub fn plan(me: &str, ready: &[&str], leases: &[(Lease, bool)]) -> Plan {
    let by_shard: HashMap<&str, (&Lease, bool)> = leases
        .iter()
        .map(|(l, live)| (l.shard.as_str(), (l, *live)))
        .collect();
    // Live holdings per instance, over the ready shards only.
    let mut held: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    held.entry(me).or_default();
    for (l, live) in leases {
        if let (Some(owner), true) = (&l.owner, *live) {
            held.entry(owner.as_str()).or_default();
        }
    }
    let mut free = Vec::new();
    for shard in ready {
        match by_shard.get(shard) {
            Some((l, true)) => {
                if let Some(owner) = &l.owner {
                    held.entry(owner.as_str()).or_default().push(shard);
                }
            }
            // No lease row yet, released, or expired.
            _ => free.push(*shard),
        }
    }
    let instances = held.len();
    let target = ready.len().div_ceil(instances);
    let mine = held.get(me).map_or(0, Vec::len);
    if mine >= target {
        return Plan::default();
    }
    free.sort_by_key(|s| spread(me, s));
    let take: Vec<String> = free
        .into_iter()
        .take(target - mine)
        .map(str::to_string)
        .collect();
    if !take.is_empty() {
        return Plan { take, steal: None };
    }
    let busiest = held
        .iter()
        .filter(|(owner, _)| **owner != me)
        .max_by_key(|(owner, shards)| (shards.len(), std::cmp::Reverse(**owner)));
    let steal = busiest
        .filter(|(_, shards)| shards.len() >= mine + 2)
        .and_then(|(_, shards)| shards.iter().min_by_key(|s| spread(me, s)))
        .map(|s| s.to_string());
    Plan {
        take: Vec::new(),
        steal,
    }
}

/// An order of shards particular to one instance (FNV-1a of both names).
fn spread(me: &str, shard: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in me.bytes().chain([0]).chain(shard.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests;
