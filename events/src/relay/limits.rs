//! Per-shard write limits: Kinesis takes at most 1,000 records and 1 MiB per second per shard
//! (provisioned and on-demand streams alike; an aggregated record counts as one record and its
//! bytes). The relay keeps each shard under them by counting what it sent each shard over the
//! last [`WINDOW`] (a second and a margin for the time a call takes to arrive), so it does not
//! cause its own throttling: a record whose shard has no room waits (its key's later rows with
//! it) instead of being sent to be refused. (A token bucket would not do: it lets a full bucket
//! and a second's refill through within one second.) Which shard a record goes to comes from
//! the stream's shard map ([`super::shards`]); with no map (yet), a stream is not limited.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// What counts as "per second": a second, and a margin for calls arriving later than they were
/// counted here.
const WINDOW: Duration = Duration::from_millis(1100);

/// The limits, per shard and second (0: that limit is off).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShardLimits {
    pub records_per_second: u32,
    pub bytes_per_second: u64,
}

impl Default for ShardLimits {
    /// Kinesis's own.
    fn default() -> Self {
        ShardLimits {
            records_per_second: 1000,
            bytes_per_second: 1 << 20,
        }
    }
}

impl ShardLimits {
    pub fn is_off(&self) -> bool {
        self.records_per_second == 0 && self.bytes_per_second == 0
    }
}

/// What a shard was sent within the window: `(when, bytes)` per record, and their sum.
#[derive(Default)]
struct Sent {
    records: VecDeque<(Instant, usize)>,
    bytes: usize,
}

/// Every shard's recent sends, by stream and shard id.
#[derive(Default)]
pub(crate) struct Buckets {
    streams: HashMap<String, HashMap<String, Sent>>,
}

impl Buckets {
    /// Counts one record of `bytes` to the shard when it has room, or says how long until it
    /// may have some.
    pub(crate) fn take(
        &mut self,
        limits: &ShardLimits,
        stream: &str,
        shard: &str,
        bytes: usize,
        now: Instant,
    ) -> Result<(), Duration> {
        // Looked up by reference: a known shard costs no allocation.
        if !self
            .streams
            .get(stream)
            .is_some_and(|s| s.contains_key(shard))
        {
            self.streams
                .entry(stream.to_string())
                .or_default()
                .insert(shard.to_string(), Sent::default());
        }
        let sent = self
            .streams
            .get_mut(stream)
            .and_then(|s| s.get_mut(shard))
            .expect("inserted above");
        while let Some(&(at, b)) = sent.records.front() {
            if now.saturating_duration_since(at) < WINDOW {
                break;
            }
            sent.records.pop_front();
            sent.bytes -= b;
        }
        let max_records = limits.records_per_second as usize;
        let max_bytes = limits.bytes_per_second as usize;
        let records_full = max_records > 0 && sent.records.len() >= max_records;
        // A record larger than a second's bytes goes out alone, when nothing else was sent.
        let bytes_full =
            max_bytes > 0 && !sent.records.is_empty() && sent.bytes + bytes > max_bytes;
        if records_full || bytes_full {
            let oldest = sent.records.front().map_or(now, |&(at, _)| at);
            let wait = (oldest + WINDOW).saturating_duration_since(now);
            return Err(wait.max(Duration::from_millis(1)));
        }
        sent.records.push_back((now, bytes));
        sent.bytes += bytes;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_takes_a_seconds_worth_then_waits_for_the_window() {
        let limits = ShardLimits {
            records_per_second: 100,
            bytes_per_second: 10_000,
        };
        let mut b = Buckets::default();
        let t0 = Instant::now();
        for _ in 0..100 {
            b.take(&limits, "s", "shard-0", 10, t0).unwrap();
        }
        let wait = b.take(&limits, "s", "shard-0", 10, t0).unwrap_err();
        assert_eq!(wait, WINDOW);
        // Another shard has its own room.
        b.take(&limits, "s", "shard-1", 10, t0).unwrap();
        // Never more than the limit within any window.
        let half = t0 + WINDOW / 2;
        assert!(b.take(&limits, "s", "shard-0", 10, half).is_err());
        b.take(&limits, "s", "shard-0", 10, t0 + WINDOW).unwrap();
    }

    #[test]
    fn bytes_limit_too_and_a_huge_record_goes_alone() {
        let limits = ShardLimits {
            records_per_second: 1000,
            bytes_per_second: 1000,
        };
        let mut b = Buckets::default();
        let t0 = Instant::now();
        b.take(&limits, "s", "a", 600, t0).unwrap();
        assert!(b.take(&limits, "s", "a", 600, t0).is_err());
        b.take(&limits, "s", "a", 400, t0).unwrap();
        let later = t0 + WINDOW;
        b.take(&limits, "s", "a", 5000, later).unwrap();
        assert!(b.take(&limits, "s", "a", 1, later).is_err());
    }

    #[test]
    fn a_limit_set_to_zero_is_off() {
        let limits = ShardLimits {
            records_per_second: 0,
            bytes_per_second: 100,
        };
        let mut b = Buckets::default();
        let t0 = Instant::now();
        for _ in 0..10 {
            b.take(&limits, "s", "a", 10, t0).unwrap();
        }
        assert!(b.take(&limits, "s", "a", 10, t0).is_err());
    }
}
