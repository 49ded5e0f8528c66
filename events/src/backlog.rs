//! The relay's working set: the outbox rows it has read and not yet settled, one queue per
//! stream, in `seq` order. It decides what the next PutRecords call carries, so the store only
//! sees cheap range reads (`seq > cursor`) and deletes by primary key — no per-key queries.
//!
//! Order per partition key: a row is sent only when no earlier row of its key is waiting (in
//! flight, or scheduled for a retry). A call on a plain stream carries at most one row per key
//! (PutRecords does not keep the order of records within a call), so a failed record is never
//! overtaken by a later one of its key. On an aggregated stream a call may carry many rows of a
//! key, in order: the relay packs them into one aggregated record, which Kinesis stores whole or
//! not at all (`packing::pack` leaves out any row of a key whose record is already closed), so a
//! hot key moves a whole batch per round trip instead of one event.
//!
//! A stream that fails for its own sake (Kinesis unreachable, throttling) is paused, then probed
//! with one call at a time until a call gets through (`pause`, `resume`).
//!
//! Memory is bounded by a byte budget (`events.memory`, see `RelayConfig::memory`): a stream takes
//! rows while it holds less than half of the budget and all streams together less than the whole,
//! or while it holds less than a sixteenth (so busy streams never starve a quiet one). Rows past
//! that are left in the store (`lag_from`) and read back by `seq` range once there is room, so one
//! stalled stream (throttled, deleted, one hot key) neither grows the process nor holds up the
//! others.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use strangler_store::Pending;

/// Kinesis limits for one PutRecords call.
pub const MAX_RECORDS: usize = 500;
pub const MAX_CALL_BYTES: usize = 5 * 1024 * 1024;
/// Rows one call carries at most on a stream whose records are aggregated (the 500 records are
/// then aggregates of many rows; the 5 MiB still bound the call).
pub const MAX_AGGREGATED_ROWS: usize = 10_000;
/// Rows one stream's queue holds at most, whatever the budget.
pub const QUEUE_ROWS: usize = 20_000;
/// What a held row costs besides its payload, key, id and stream name (the `Row`, its map entry,
/// allocation headers), counted against the budget.
const ROW_OVERHEAD: usize = 160;

/// A row's cost against the budget.
fn row_bytes(p: &Pending) -> usize {
    p.payload.len() + p.partition_key.len() + p.id.len() + p.stream.len() + ROW_OVERHEAD
}

#[derive(Default)]
pub struct Backlog {
    /// Every outbox row with `seq <= cursor` has been read: it is queued, settled, or (for a
    /// lagging stream) left to be read back by `seq` range.
    pub cursor: i64,
    streams: BTreeMap<String, Queue>,
    /// Round-robin start for `next_batch`, so busy streams take turns.
    turn: usize,
    /// Streams whose calls carry aggregated records (`*`: all), so up to `MAX_AGGREGATED_ROWS`,
    /// several of a key.
    aggregated: Vec<String>,
    /// The most bytes all queues hold together.
    budget: usize,
    /// The most payload bytes of one key a call carries on an aggregated stream (one aggregated
    /// record's worth: a key's rows travel in one record).
    key_bytes: usize,
    /// What they hold.
    bytes: usize,
}

#[derive(Default)]
struct Queue {
    /// Rows per call at most.
    max_rows: usize,
    /// A call may carry several rows of a key (aggregated stream), up to this many payload
    /// bytes of it (0: one row per key).
    key_bytes: usize,
    /// Nothing is sent before this time (the stream backs off).
    paused_until_ms: i64,
    /// After a pause: one call at a time until one gets through.
    probing: bool,
    /// Calls in flight.
    calls: usize,
    rows: BTreeMap<i64, Row>,
    bytes: usize,
    /// The first `seq` of this stream left in the store because the queue was full.
    lag_from: Option<i64>,
    /// How many of its rows are left in the store that way.
    left: usize,
    last_launch: Option<Instant>,
    /// The last pick that was not sent (nothing due, or a small batch while lingering), kept
    /// while no row changes and no retry time it waits for has come: picking again would walk
    /// the whole queue for the same answer (a stream whose Kinesis is down holds a full queue,
    /// mostly rows behind their keys' failed first rows, while every commit wakes the relay).
    last_pick: Option<Pick>,
    /// `pick`'s keys seen (whether each still takes rows, and its bytes taken), kept to reuse
    /// its allocation.
    keys: HashMap<u64, (bool, usize), BuildHasherDefault<KeyHash>>,
}

struct Row {
    pending: Pending,
    /// The partition key's hash: `pick` compares these, not the strings. Two keys with the same
    /// hash only wait for each other (one call apart), which keeps every key's order.
    key: u64,
    inflight: bool,
}

/// The hasher of `pick`'s key set: the values are already hashes.
#[derive(Default)]
struct KeyHash(u64);

impl Hasher for KeyHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn key_hash(key: &str) -> u64 {
    BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(key)
}

pub enum Next {
    Send(Batch),
    /// Nothing to send now; something may be due after this long (`None`: not without new rows
    /// or a settled call).
    Wait(Option<Duration>),
}

/// One PutRecords call's worth of rows (their `seq`, in order; the rows stay in the backlog,
/// marked in flight, and the call copies only what it carries).
pub struct Batch {
    pub stream: String,
    pub seqs: Vec<i64>,
}

impl Queue {
    /// A row came, went or changed: the next pick looks again.
    fn changed(&mut self) {
        self.last_pick = None;
    }

    /// Whether the queue may take another row, given what all queues hold (`total`) and the
    /// budget, scaled by `part` (1: to take rows; ½: to start reading back a lagging stream).
    fn has_room(&self, total: usize, budget: usize, part: f64) -> bool {
        let scaled = |n: usize| (n as f64 * part) as usize;
        self.rows.len() < scaled(QUEUE_ROWS)
            && ((self.bytes < scaled(budget / 2) && total < scaled(budget))
                || self.bytes < scaled(budget / 16))
    }

    /// Inserts a row; returns its cost.
    fn insert(&mut self, p: Pending) -> usize {
        let bytes = row_bytes(&p);
        self.bytes += bytes;
        self.changed();
        self.rows.insert(
            p.seq,
            Row {
                key: key_hash(&p.partition_key),
                pending: p,
                inflight: false,
            },
        );
        bytes
    }
}

impl Backlog {
    /// A backlog holding at most `budget` bytes, whose calls on these streams (`*`: all) carry
    /// rows to be aggregated.
    pub fn new(budget: usize, aggregated: &[String], key_bytes: usize) -> Backlog {
        Backlog {
            aggregated: aggregated.to_vec(),
            budget,
            key_bytes,
            ..Backlog::default()
        }
    }

    /// Rows read with `seq > cursor`, in `seq` order (any streams).
    pub fn add(&mut self, rows: Vec<Pending>) {
        let key_bytes = self.key_bytes;
        for p in rows {
            self.cursor = self.cursor.max(p.seq);
            let aggregated = &self.aggregated;
            let q = self
                .streams
                .entry(p.stream.clone())
                .or_insert_with_key(|s| {
                    let many = crate::aggregate::listed(aggregated, s);
                    Queue {
                        max_rows: if many {
                            MAX_AGGREGATED_ROWS
                        } else {
                            MAX_RECORDS
                        },
                        key_bytes: if many { key_bytes } else { 0 },
                        ..Queue::default()
                    }
                });
            if q.lag_from.is_some() {
                q.left += 1; // read back in order later
                continue;
            }
            if !q.has_room(self.bytes, self.budget, 1.0) {
                q.lag_from = Some(p.seq);
                q.left += 1;
                continue;
            }
            self.bytes += q.insert(p);
        }
    }

    /// Streams with rows left in the store and room to take them again: `(stream, from seq)`.
    pub fn lagging(&self) -> Vec<(String, i64)> {
        self.streams
            .iter()
            .filter(|(_, q)| q.has_room(self.bytes, self.budget, 0.5))
            .filter_map(|(s, q)| q.lag_from.map(|from| (s.clone(), from)))
            .collect()
    }

    /// Rows of a lagging stream read back (`from <= seq <= cursor`, in order); `complete` when
    /// the read returned everything in that range.
    pub fn catch_up(&mut self, stream: &str, rows: Vec<Pending>, complete: bool) {
        let Some(q) = self.streams.get_mut(stream) else {
            return;
        };
        let mut next = None;
        for p in rows {
            if next.is_some() || !q.has_room(self.bytes, self.budget, 1.0) {
                next.get_or_insert(p.seq);
                continue;
            }
            let after = p.seq + 1;
            self.bytes += q.insert(p);
            q.left = q.left.saturating_sub(1);
            q.lag_from = Some(after);
        }
        q.lag_from = match next {
            Some(seq) => Some(seq),
            None if complete => None,
            None => q.lag_from,
        };
        if q.lag_from.is_none() {
            q.left = 0;
        }
    }

    /// Per stream: rows waiting (held here or left in the store) and the creation time of the
    /// oldest held. Streams seen since the start stay listed, at 0 once drained. Rows committed
    /// after the last read are not counted yet (the relay reads at least every linger).
    pub fn depths(&self) -> Vec<(&str, usize, Option<i64>)> {
        self.streams
            .iter()
            .map(|(name, q)| {
                let oldest = q.rows.values().map(|r| r.pending.created_ms).min();
                (name.as_str(), q.rows.len() + q.left, oldest)
            })
            .collect()
    }

    /// The next call to make, taking streams in turn, or how long to wait before one may be
    /// due (a retry's time, or a linger running out). With `linger`, a stream whose last call
    /// went out less than `linger` ago only sends a full batch (fewer, larger calls under load).
    /// Chosen rows are marked in flight until `remove`d or `retry_at`.
    pub fn next_batch(&mut self, now_ms: i64, linger: Option<(Instant, Duration)>) -> Next {
        let n = self.streams.len();
        let mut wait: Option<Duration> = None;
        let mut wait_at_most = |d: Duration| wait = Some(wait.map_or(d, |w| w.min(d)));
        for i in 0..n {
            let idx = (self.turn + i) % n;
            let (name, q) = self.streams.iter_mut().nth(idx).expect("index below len");
            // Backing off, or probing with a call already out.
            if q.paused_until_ms > now_ms {
                wait_at_most(Duration::from_millis((q.paused_until_ms - now_ms) as u64));
                continue;
            }
            if q.probing && q.calls > 0 {
                continue;
            }
            let lingering = match (linger, q.last_launch) {
                (Some((now, linger)), Some(last)) => linger.checked_sub(now.duration_since(last)),
                _ => None,
            };
            // Too few rows for a full batch while the stream lingers: no need to walk them.
            if let Some(left) = lingering
                && q.rows.len() < q.max_rows
                && q.bytes <= MAX_CALL_BYTES / 2
            {
                wait_at_most(left);
                continue;
            }
            let p = match q.last_pick.take() {
                Some(p) if p.retry_ms.is_none_or(|at| now_ms < at) => p,
                _ => pick(q, now_ms),
            };
            if let Some(at) = p.retry_ms {
                wait_at_most(Duration::from_millis((at - now_ms).max(1) as u64));
            }
            let full = p.seqs.len() == q.max_rows || p.bytes > MAX_CALL_BYTES / 2;
            if p.seqs.is_empty() {
                q.last_pick = Some(p);
                continue;
            }
            if let Some(left) = lingering
                && !full
            {
                wait_at_most(left);
                q.last_pick = Some(p);
                continue;
            }
            q.last_launch = Some(linger.map_or_else(Instant::now, |(now, _)| now));
            q.calls += 1;
            for seq in &p.seqs {
                q.rows.get_mut(seq).expect("picked from the queue").inflight = true;
            }
            self.turn = idx + 1;
            return Next::Send(Batch {
                stream: name.clone(),
                seqs: p.seqs,
            });
        }
        Next::Wait(wait)
    }

    /// The row, for settling.
    pub fn get(&self, stream: &str, seq: i64) -> Option<&Pending> {
        Some(&self.streams.get(stream)?.rows.get(&seq)?.pending)
    }

    /// Forgets a row that was published or dead-lettered.
    pub fn remove(&mut self, stream: &str, seq: i64) {
        if let Some(q) = self.streams.get_mut(stream)
            && let Some(row) = q.rows.remove(&seq)
        {
            q.changed();
            let bytes = row_bytes(&row.pending);
            q.bytes -= bytes;
            self.bytes -= bytes;
        }
    }

    /// A call of the stream's came back (whatever it says).
    pub fn call_done(&mut self, stream: &str) {
        if let Some(q) = self.streams.get_mut(stream) {
            q.calls = q.calls.saturating_sub(1);
        }
    }

    /// A batch from `next_batch` made no call (every record's shard was at its limit, say): it
    /// is not counted as in flight. Every `Next::Send` ends in exactly one `call_done` or one
    /// `unsent`; a call counted and never made would keep a probing stream from ever sending
    /// its probe.
    pub fn unsent(&mut self, stream: &str, seqs: &[i64]) {
        self.release(stream, seqs);
        if let Some(q) = self.streams.get_mut(stream) {
            q.calls = q.calls.saturating_sub(1);
        }
    }

    /// The relay found the stream stalled (rows waiting, none of its calls in flight, nothing
    /// sent for longer than any back-off): whatever the bookkeeping says, nothing of it is in
    /// flight, so the stream starts afresh (a probe first when it was probing). Returns what the
    /// bookkeeping said, for the log.
    pub fn unstick(&mut self, stream: &str, now_ms: i64) -> String {
        let Some(q) = self.streams.get_mut(stream) else {
            return String::new();
        };
        let inflight = q.rows.values().filter(|r| r.inflight).count();
        let said = format!(
            "calls counted {}, rows marked in flight {inflight}, probing {}, paused for {} ms",
            q.calls,
            q.probing,
            (q.paused_until_ms - now_ms).max(0)
        );
        q.calls = 0;
        q.paused_until_ms = 0;
        q.last_launch = None;
        for row in q.rows.values_mut() {
            row.inflight = false;
        }
        q.changed();
        said
    }

    /// The lowest `seq` of the stream still waiting (held, or left in the store).
    pub fn oldest_seq(&self, stream: &str) -> Option<i64> {
        let q = self.streams.get(stream)?;
        let held = q.rows.keys().next().copied();
        match (held, q.lag_from) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Calls of the stream counted as in flight.
    #[cfg(test)]
    pub fn calls(&self, stream: &str) -> usize {
        self.streams.get(stream).map_or(0, |q| q.calls)
    }

    /// The stream backs off: nothing is sent before `until_ms`, then one call at a time until
    /// one gets through (`resume`).
    pub fn pause(&mut self, stream: &str, until_ms: i64) {
        if let Some(q) = self.streams.get_mut(stream) {
            q.paused_until_ms = q.paused_until_ms.max(until_ms);
            q.probing = true;
            q.changed();
        }
    }

    /// Nothing of the stream goes before `until_ms` (its shards are at their write limits);
    /// unlike `pause`, no probing afterwards.
    pub fn hold(&mut self, stream: &str, until_ms: i64) {
        if let Some(q) = self.streams.get_mut(stream) {
            q.paused_until_ms = q.paused_until_ms.max(until_ms);
            q.changed();
        }
    }

    /// A call got through: the stream sends at full pace again.
    pub fn resume(&mut self, stream: &str) {
        if let Some(q) = self.streams.get_mut(stream)
            && q.probing
        {
            q.paused_until_ms = 0;
            q.probing = false;
            q.changed();
        }
    }

    /// Rows waiting for the stream (held, or left in the store).
    pub fn depth(&self, stream: &str) -> usize {
        self.streams
            .get(stream)
            .map_or(0, |q| q.rows.len() + q.left)
    }

    /// Bytes the queues hold, against the budget.
    #[cfg(test)]
    pub fn bytes_held(&self) -> usize {
        self.bytes
    }

    /// The streams seen so far.
    pub fn stream_names(&self) -> impl Iterator<Item = &String> {
        self.streams.keys()
    }

    /// Rows picked for a call that did not carry them: waiting again, no try counted.
    pub fn release(&mut self, stream: &str, seqs: &[i64]) {
        if let Some(q) = self.streams.get_mut(stream) {
            q.changed();
            for seq in seqs {
                if let Some(row) = q.rows.get_mut(seq) {
                    row.inflight = false;
                }
            }
        }
    }

    /// Schedules a row for another try at `at_ms` (its key waits until then).
    pub fn retry_at(&mut self, stream: &str, seq: i64, at_ms: i64) {
        if let Some(q) = self.streams.get_mut(stream)
            && let Some(row) = q.rows.get_mut(&seq)
        {
            row.inflight = false;
            row.pending.attempts += 1;
            row.pending.next_attempt_ms = at_ms;
            q.changed();
        }
    }

    /// No row held in memory.
    pub fn is_empty(&self) -> bool {
        self.streams.values().all(|q| q.rows.is_empty())
    }

    /// Rows held in memory.
    #[cfg(test)]
    pub fn rows_held(&self) -> usize {
        self.streams.values().map(|q| q.rows.len()).sum()
    }
}

/// What `pick` chose.
struct Pick {
    seqs: Vec<i64>,
    bytes: usize,
    /// The earliest retry time among the keys' first rows that are not due yet.
    retry_ms: Option<i64>,
}

/// The first waiting row of each key, in order, as long as it is due and the call has room (on
/// an aggregated stream, the key's following rows too, up to its first one in flight or not
/// due); a key whose earliest row is in flight or not yet due is skipped whole.
fn pick(q: &mut Queue, now_ms: i64) -> Pick {
    let keys = &mut q.keys;
    keys.clear();
    let mut picked = Vec::new();
    let mut bytes = 0;
    let mut retry_ms: Option<i64> = None;
    for (seq, row) in &q.rows {
        let p = &row.pending;
        // Whether the key still takes rows in this call, and what it has taken.
        let (open, taken) = keys.entry(row.key).or_insert((true, 0));
        if !*open {
            continue;
        }
        if row.inflight {
            *open = false;
            continue;
        }
        if p.next_attempt_ms > now_ms {
            *open = false;
            retry_ms = Some(retry_ms.map_or(p.next_attempt_ms, |r| r.min(p.next_attempt_ms)));
            continue;
        }
        let size = p.payload.len() + p.partition_key.len();
        if picked.len() == q.max_rows || bytes + size > MAX_CALL_BYTES {
            break;
        }
        bytes += size;
        picked.push(*seq);
        *taken += size;
        *open = *taken < q.key_bytes;
    }
    Pick {
        seqs: picked,
        bytes,
        retry_ms,
    }
}
#[cfg(test)]
mod tests;
