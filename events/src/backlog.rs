//! The relay's working set: the outbox rows it has read and not yet settled, one queue per
//! stream, in `seq` order. It decides what the next PutRecords call carries, so the store only
//! sees cheap range reads (`seq > cursor`) and deletes by primary key — no per-key queries.
//!
//! Order per partition key: a row is sent only when no earlier row of its key is waiting (in
//! flight, or scheduled for a retry), and a call carries at most one row per key, so a failed
//! record is never overtaken by a later one of its key.
//!
//! Memory is bounded per stream: when a stream's queue is full, its further rows are left in the
//! store (`lag_from`) and read back by `seq` range once the queue has room, so one stalled stream
//! (throttled, deleted, one hot key) neither grows the process nor holds up the others.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use crate::outbox::Pending;

/// Kinesis limits for one PutRecords call.
pub const MAX_RECORDS: usize = 500;
pub const MAX_CALL_BYTES: usize = 5 * 1024 * 1024;
/// Rows one call carries at most on a stream whose records are aggregated (the 500 records are
/// then aggregates of many rows; the 5 MiB still bound the call).
pub const MAX_AGGREGATED_ROWS: usize = 10_000;
/// Per-stream queue bounds. The bytes bound the memory; the rows are enough for a couple of
/// seconds of a busy stream: a key has one row in flight at a time, so a stream whose rows share
/// few keys queues some even when Kinesis keeps up, and rows past the bound are read back from
/// the store (at 5,000 rows, nearly every event of a 10,000 events/s stream over 1,000 keys was).
pub const QUEUE_ROWS: usize = 20_000;
pub const QUEUE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Default)]
pub struct Backlog {
    /// Every outbox row with `seq <= cursor` has been read: it is queued, settled, or (for a
    /// lagging stream) left to be read back by `seq` range.
    pub cursor: i64,
    streams: BTreeMap<String, Queue>,
    /// Round-robin start for `next_batch`, so busy streams take turns.
    turn: usize,
    /// Streams whose calls carry aggregated records (`*`: all), so up to `MAX_AGGREGATED_ROWS`.
    aggregated: Vec<String>,
}

#[derive(Default)]
struct Queue {
    /// Rows per call at most.
    max_rows: usize,
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
    /// `pick`'s set of keys seen, kept to reuse its allocation.
    keys: HashSet<u64, BuildHasherDefault<KeyHash>>,
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

/// One PutRecords call's worth of rows: `(seq, partition key, payload)`.
pub struct Batch {
    pub stream: String,
    pub records: Vec<(i64, String, Vec<u8>)>,
}

impl Queue {
    /// A row came, went or changed: the next pick looks again.
    fn changed(&mut self) {
        self.last_pick = None;
    }

    fn has_room(&self) -> bool {
        self.rows.len() < QUEUE_ROWS && self.bytes < QUEUE_BYTES
    }

    fn insert(&mut self, p: Pending) {
        self.bytes += p.payload.len();
        self.changed();
        self.rows.insert(
            p.seq,
            Row {
                key: key_hash(&p.partition_key),
                pending: p,
                inflight: false,
            },
        );
    }
}

impl Backlog {
    /// A backlog whose calls on these streams (`*`: all) carry rows to be aggregated.
    pub fn aggregating(streams: &[String]) -> Backlog {
        Backlog {
            aggregated: streams.to_vec(),
            ..Backlog::default()
        }
    }

    /// Rows read with `seq > cursor`, in `seq` order (any streams).
    pub fn add(&mut self, rows: Vec<Pending>) {
        for p in rows {
            self.cursor = self.cursor.max(p.seq);
            let aggregated = &self.aggregated;
            let q = self
                .streams
                .entry(p.stream.clone())
                .or_insert_with_key(|s| Queue {
                    max_rows: if crate::aggregate::listed(aggregated, s) {
                        MAX_AGGREGATED_ROWS
                    } else {
                        MAX_RECORDS
                    },
                    ..Queue::default()
                });
            if q.lag_from.is_some() {
                q.left += 1; // read back in order later
                continue;
            }
            if !q.has_room() {
                q.lag_from = Some(p.seq);
                q.left += 1;
                continue;
            }
            q.insert(p);
        }
    }

    /// Streams with rows left in the store and room to take them again: `(stream, from seq)`.
    pub fn lagging(&self) -> Vec<(String, i64)> {
        self.streams
            .iter()
            .filter(|(_, q)| q.rows.len() < QUEUE_ROWS / 2 && q.bytes < QUEUE_BYTES / 2)
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
            if next.is_some() || !q.has_room() {
                next.get_or_insert(p.seq);
                continue;
            }
            let after = p.seq + 1;
            q.insert(p);
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
            let records = p
                .seqs
                .iter()
                .map(|seq| {
                    let row = q.rows.get_mut(seq).expect("picked from the queue");
                    row.inflight = true;
                    let p = &row.pending;
                    (p.seq, p.partition_key.clone(), p.payload.clone())
                })
                .collect();
            self.turn = idx + 1;
            return Next::Send(Batch {
                stream: name.clone(),
                records,
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
            q.bytes -= row.pending.payload.len();
        }
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

/// The first waiting row of each key, in order, as long as it is due and the call has room; a
/// key whose earliest row is in flight or not yet due is skipped whole.
fn pick(q: &mut Queue, now_ms: i64) -> Pick {
    let keys = &mut q.keys;
    keys.clear();
    let mut picked = Vec::new();
    let mut bytes = 0;
    let mut retry_ms: Option<i64> = None;
    for (seq, row) in &q.rows {
        let p = &row.pending;
        if !keys.insert(row.key) || row.inflight {
            continue;
        }
        if p.next_attempt_ms > now_ms {
            retry_ms = Some(retry_ms.map_or(p.next_attempt_ms, |r| r.min(p.next_attempt_ms)));
            continue;
        }
        let size = p.payload.len() + p.partition_key.len();
        if picked.len() == q.max_rows || bytes + size > MAX_CALL_BYTES {
            break;
        }
        bytes += size;
        picked.push(*seq);
    }
    Pick {
        seqs: picked,
        bytes,
        retry_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64, stream: &str, key: &str) -> Pending {
        Pending {
            seq,
            id: format!("id-{seq}"),
            stream: stream.into(),
            partition_key: key.into(),
            payload: vec![b'x'; 10],
            attempts: 0,
            created_ms: 0,
            next_attempt_ms: 0,
        }
    }

    fn send(n: Next) -> Batch {
        match n {
            Next::Send(b) => b,
            Next::Wait(w) => panic!("nothing to send (wait {w:?})"),
        }
    }

    fn idle(n: &Next) -> bool {
        matches!(n, Next::Wait(_))
    }

    fn seqs(b: &Batch) -> Vec<i64> {
        b.records.iter().map(|r| r.0).collect()
    }

    #[test]
    fn one_row_per_key_per_call_and_held_behind_in_flight() {
        let mut b = Backlog::default();
        b.add(vec![row(1, "s", "a"), row(2, "s", "a"), row(3, "s", "b")]);
        let first = send(b.next_batch(0, None));
        assert_eq!(seqs(&first), vec![1, 3]);
        // 2 waits for 1, which is in flight.
        assert!(idle(&b.next_batch(0, None)));
        b.remove("s", 1);
        assert_eq!(seqs(&send(b.next_batch(0, None))), vec![2]);
    }

    #[test]
    fn a_retry_holds_its_key_until_due() {
        let mut b = Backlog::default();
        b.add(vec![row(1, "s", "a"), row(2, "s", "a"), row(3, "s", "b")]);
        send(b.next_batch(0, None));
        b.retry_at("s", 1, 100);
        b.remove("s", 3);
        assert!(
            matches!(b.next_batch(50, None), Next::Wait(Some(d)) if d == Duration::from_millis(50)),
            "2 overtook 1, or the wait is not the retry's"
        );
        assert_eq!(seqs(&send(b.next_batch(100, None))), vec![1]);
        assert_eq!(b.get("s", 1).unwrap().attempts, 1);
    }

    #[test]
    fn a_queue_waiting_for_retries_rests_until_due_or_changed() {
        let mut b = Backlog::default();
        b.add(vec![row(1, "s", "a")]);
        send(b.next_batch(0, None));
        b.retry_at("s", 1, 100);
        assert!(
            matches!(b.next_batch(10, None), Next::Wait(Some(d)) if d == Duration::from_millis(90))
        );
        // Resting: still the same wait, without a walk of the queue.
        assert!(
            matches!(b.next_batch(60, None), Next::Wait(Some(d)) if d == Duration::from_millis(40))
        );
        // A new row wakes it up.
        b.add(vec![row(2, "s", "b")]);
        assert_eq!(seqs(&send(b.next_batch(60, None))), vec![2]);
        assert_eq!(seqs(&send(b.next_batch(100, None))), vec![1]);
    }

    #[test]
    fn linger_holds_small_batches_but_not_full_ones() {
        let mut b = Backlog::default();
        let now = Instant::now();
        let linger = Some((now, Duration::from_millis(20)));
        b.add(vec![row(1, "s", "a")]);
        send(b.next_batch(0, linger)); // the first call goes at once
        b.add(vec![row(2, "s", "b")]);
        assert!(
            matches!(b.next_batch(0, linger), Next::Wait(Some(d)) if d == Duration::from_millis(20)),
            "small batch within linger"
        );
        let later = Some((now + Duration::from_millis(25), Duration::from_millis(20)));
        send(b.next_batch(0, later));
        b.add(
            (3..3 + MAX_RECORDS as i64)
                .map(|i| row(i, "s", &format!("k{i}")))
                .collect(),
        );
        assert_eq!(send(b.next_batch(0, later)).records.len(), MAX_RECORDS);
    }

    #[test]
    fn a_full_queue_lags_and_catches_up_in_order() {
        let mut b = Backlog::default();
        let rows: Vec<_> = (1..=QUEUE_ROWS as i64 + 10)
            .map(|i| Pending {
                created_ms: i,
                ..row(i, "s", "hot")
            })
            .collect();
        b.add(rows);
        b.add(vec![row(QUEUE_ROWS as i64 + 11, "t", "x")]);
        assert_eq!(b.cursor, QUEUE_ROWS as i64 + 11);
        assert_eq!(b.rows_held(), QUEUE_ROWS + 1, "other streams keep flowing");
        assert_eq!(
            b.depths(),
            vec![("s", QUEUE_ROWS + 10, Some(1)), ("t", 1, Some(0))],
            "rows left in the store count"
        );
        assert!(b.lagging().is_empty(), "no room yet");
        for seq in 1..=QUEUE_ROWS as i64 / 2 + 1 {
            b.remove("s", seq);
        }
        let lag = b.lagging();
        assert_eq!(lag, vec![("s".to_string(), QUEUE_ROWS as i64 + 1)]);
        let back: Vec<_> = (QUEUE_ROWS as i64 + 1..=QUEUE_ROWS as i64 + 5)
            .map(|i| row(i, "s", "hot"))
            .collect();
        b.catch_up("s", back, false);
        let depth = QUEUE_ROWS / 2 - 1 + 10;
        assert_eq!(
            b.depths()[0].1,
            depth,
            "read back: held now, not counted twice"
        );
        let back: Vec<_> = (QUEUE_ROWS as i64 + 6..=QUEUE_ROWS as i64 + 10)
            .map(|i| row(i, "s", "hot"))
            .collect();
        b.catch_up("s", back, true);
        assert!(b.lagging().is_empty());
        assert_eq!(b.rows_held(), QUEUE_ROWS / 2 - 1 + 10 + 1);
        assert_eq!(b.depths()[0].1, depth);
        for seq in QUEUE_ROWS as i64 / 2 + 2..=QUEUE_ROWS as i64 + 10 {
            b.remove("s", seq);
        }
        assert_eq!(
            b.depths()[0],
            ("s", 0, None),
            "a drained stream stays listed"
        );
    }

    #[test]
    fn streams_take_turns() {
        let mut b = Backlog::default();
        b.add(vec![row(1, "s", "a"), row(2, "t", "a")]);
        let x = send(b.next_batch(0, None)).stream;
        let y = send(b.next_batch(0, None)).stream;
        assert_ne!(x, y);
    }
}
