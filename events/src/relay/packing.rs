//! What one PutRecords call carries: a batch of outbox rows as plain records (one per key) or
//! packed into KPL aggregated records per shard (a key's rows in one record per call, so they
//! are stored whole or not at all and keep their order), and which rows are left for a later
//! call.

use std::collections::{HashMap, HashSet};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

use crate::aggregate::{self, ShardMap};
use crate::backlog::MAX_RECORDS;
use strangler_store::Pending;

/// The rows one PutRecords call carries, record by record.
#[derive(Default)]
pub(crate) struct Carried {
    pub(crate) stream: String,
    /// The rows, in record order.
    pub(crate) seqs: Vec<i64>,
    /// Rows per record, in order.
    pub(crate) counts: Vec<usize>,
    /// The shard each aggregated record was meant for (`None` for a plain record).
    pub(crate) shard_ids: Vec<Option<String>>,
    /// Each record's size as Kinesis counts it (data and partition key).
    pub(crate) bytes: Vec<usize>,
}

/// One PutRecords call: its records and the rows they carry.
#[derive(Default)]
pub(crate) struct Call {
    pub(crate) entries: Vec<PutRecordsRequestEntry>,
    pub(crate) carried: Carried,
}

impl Call {
    pub(crate) fn push(
        &mut self,
        entry: PutRecordsRequestEntry,
        seqs: &[i64],
        shard_id: Option<&str>,
    ) {
        let key = entry.partition_key().map_or(0, str::len);
        self.carried.bytes.push(entry.data().as_ref().len() + key);
        self.entries.push(entry);
        self.carried.seqs.extend_from_slice(seqs);
        self.carried.counts.push(seqs.len());
        self.carried.shard_ids.push(shard_id.map(str::to_string));
    }
}

impl Call {
    /// Keeps the records `keep` says yes to; returns the rows of the others.
    pub(crate) fn retain(&mut self, keep: &[bool]) -> Vec<i64> {
        let mut released = Vec::new();
        let old = std::mem::take(self);
        let mut rows = old.carried.seqs.as_slice();
        self.carried.stream = old.carried.stream;
        for ((((entry, n), shard), _), keep) in old
            .entries
            .into_iter()
            .zip(old.carried.counts)
            .zip(old.carried.shard_ids)
            .zip(old.carried.bytes)
            .zip(keep)
        {
            let (carried, rest) = rows.split_at(n);
            rows = rest;
            if *keep {
                self.push(entry, carried, shard.as_deref());
            } else {
                released.extend_from_slice(carried);
            }
        }
        released
    }
}

fn plain_entry(key: String, payload: Vec<u8>) -> PutRecordsRequestEntry {
    PutRecordsRequestEntry::builder()
        .data(Blob::new(payload))
        .partition_key(key)
        .build()
        .expect("data and partition key are set")
}

/// A batch's rows (in `seq` order) as plain records, one row each, and the rows left for a
/// later call: past the call's 500 records, and every row of a key after its first (PutRecords
/// does not keep the order of records within a call; an aggregated stream's batch may hold
/// several rows of a key, and goes out plain when its shard map is unknown). Only the rows
/// carried are copied.
pub(crate) fn plain_call(stream: &str, rows: &[&Pending]) -> (Call, Vec<i64>) {
    let mut call = Call::default();
    call.carried.stream = stream.to_string();
    let mut left = Vec::new();
    let mut keys = HashSet::new();
    for row in rows {
        let key = row.partition_key.as_str();
        if call.entries.len() == MAX_RECORDS || !keys.insert(key) {
            // Once a key has a row left, its later rows are left too.
            keys.insert(key);
            left.push(row.seq);
            continue;
        }
        call.push(
            plain_entry(key.to_string(), row.payload.clone()),
            &[row.seq],
            None,
        );
    }
    (call, left)
}

/// Packs a batch's rows (in `seq` order) into aggregated records per shard, in `seq` order
/// within each, each record up to `max_bytes` and sent with its first row's hash key as explicit
/// hash key (so it lands on that shard). A row alone in its record, or too large to share one,
/// goes out plain; so does a row whose key falls in no known shard. Each key's rows go in one
/// record of the call (stored whole or not at all, so they cannot be stored out of order): a
/// row of a key whose record is already closed is left for a later call, and so are the rows
/// past the call's 500 records. Returns the call and the rows left.
pub(crate) fn pack(
    map: &ShardMap,
    stream: &str,
    rows: &[&Pending],
    max_bytes: usize,
) -> (Call, Vec<i64>) {
    /// An aggregate being filled for one shard.
    struct Open<'a> {
        builder: aggregate::Builder,
        hash: u128,
        seqs: Vec<i64>,
        /// Its keys' hashes.
        keys: Vec<u128>,
        /// The row itself while it is alone (sent plain if nothing joins it).
        single: Option<&'a Pending>,
    }
    let mut call = Call::default();
    call.carried.stream = stream.to_string();
    let mut left = Vec::new();
    // Keys whose record in this call is closed (sent, or left whole): their later rows wait.
    let mut closed = HashSet::new();
    let mut close =
        |call: &mut Call, closed: &mut HashSet<u128>, mut o: Open<'_>, shard: Option<usize>| {
            closed.extend(o.keys.iter().copied());
            if call.entries.len() == MAX_RECORDS {
                left.extend(o.seqs);
            } else if let Some(row) = o.single {
                call.push(
                    plain_entry(row.partition_key.clone(), row.payload.clone()),
                    &o.seqs,
                    None,
                );
            } else {
                let entry = PutRecordsRequestEntry::builder()
                    .partition_key(o.builder.first_key().unwrap_or_default())
                    .data(Blob::new(o.builder.finish()))
                    .explicit_hash_key(o.hash.to_string())
                    .build()
                    .expect("data and partition key are set");
                call.push(entry, &o.seqs, shard.and_then(|i| map.shard_id(i)));
            }
        };
    let mut open: HashMap<usize, Open<'_>> = HashMap::new();
    let mut later = Vec::new();
    for &row in rows {
        let (seq, key, payload) = (row.seq, row.partition_key.as_str(), row.payload.as_slice());
        let hash = aggregate::hash_key(key);
        if closed.contains(&hash) {
            later.push(seq);
            continue;
        }
        let alone = aggregate::Builder::default().size_with(key, payload) > max_bytes;
        let shard = map.shard_of(hash);
        let Some(shard) = shard.filter(|_| !alone) else {
            // Plain; unless earlier rows of its key wait in an open aggregate.
            if shard.is_some_and(|s| open.get(&s).is_some_and(|o| o.keys.contains(&hash))) {
                closed.insert(hash);
                later.push(seq);
                continue;
            }
            let single = Open {
                builder: aggregate::Builder::default(),
                hash,
                seqs: vec![seq],
                keys: vec![hash],
                single: Some(row),
            };
            close(&mut call, &mut closed, single, None);
            continue;
        };
        if open
            .get(&shard)
            .is_some_and(|o| o.builder.size_with(key, payload) > max_bytes)
        {
            let full = open.remove(&shard).expect("just seen");
            close(&mut call, &mut closed, full, Some(shard));
            if closed.contains(&hash) {
                later.push(seq);
                continue;
            }
        }
        let o = open.entry(shard).or_insert_with(|| Open {
            builder: aggregate::Builder::default(),
            hash,
            seqs: Vec::new(),
            keys: Vec::new(),
            single: None,
        });
        o.builder.push(key, payload);
        o.single = o.seqs.is_empty().then_some(row);
        o.seqs.push(seq);
        if !o.keys.contains(&hash) {
            o.keys.push(hash);
        }
    }
    let mut rest: Vec<_> = open.into_iter().collect();
    rest.sort_by_key(|(_, o)| o.seqs[0]);
    for (shard, o) in rest {
        close(&mut call, &mut closed, o, Some(shard));
    }
    left.extend(later);
    (call, left)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(rows: &[(i64, &str, usize)]) -> Vec<Pending> {
        rows.iter()
            .map(|&(seq, key, len)| Pending {
                seq,
                id: format!("id-{seq}"),
                stream: "s".into(),
                partition_key: key.to_string(),
                payload: vec![b'x'; len],
                attempts: 0,
                created_ms: 0,
                next_attempt_ms: 0,
            })
            .collect()
    }

    fn refs(rows: &[Pending]) -> Vec<&Pending> {
        rows.iter().collect()
    }

    /// The rows each record of a call carries.
    fn records(call: &Call) -> Vec<Vec<i64>> {
        let mut rows = call.carried.seqs.as_slice();
        call.carried
            .counts
            .iter()
            .map(|&n| {
                let (r, rest) = rows.split_at(n);
                rows = rest;
                r.to_vec()
            })
            .collect()
    }

    #[test]
    fn a_keys_rows_share_one_record_per_call() {
        let max = u128::MAX.to_string();
        let map = ShardMap::new([("0", max.as_str(), "shardId-0")]);
        // a's and b's rows fill one aggregate; a's next row would open a second one: left for
        // later, and so is every later row of a and b, while c starts the next aggregate.
        let (call, left) = pack(
            &map,
            "s",
            &refs(&rows(&[
                (1, "a", 400),
                (2, "a", 400),
                (3, "b", 100),
                (4, "a", 400),
                (5, "c", 10),
                (6, "b", 10),
                (7, "c", 10),
            ])),
            1000,
        );
        assert_eq!(records(&call), vec![vec![1, 2, 3], vec![5, 7]]);
        assert_eq!(left, vec![4, 6]);
        // A row too large to share a record goes plain only when no earlier row of its key is
        // in an open aggregate.
        let (call, left) = pack(
            &map,
            "s",
            &refs(&rows(&[(1, "a", 10), (2, "a", 2000), (3, "c", 2000)])),
            1000,
        );
        assert_eq!(records(&call), vec![vec![3], vec![1]]);
        assert_eq!(left, vec![2]);
        // Plain calls: one row per key.
        let (call, left) = plain_call("s", &refs(&rows(&[(1, "a", 1), (2, "a", 1), (3, "b", 1)])));
        assert_eq!(records(&call), vec![vec![1], vec![3]]);
        assert_eq!(left, vec![2]);
    }
}
