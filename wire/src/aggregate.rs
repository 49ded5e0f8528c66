//! KPL-compatible record aggregation: many events in one Kinesis record, in the format the Kinesis
//! Producer Library writes and the Kinesis Client Library (and every KPL deaggregator) reads: the
//! magic `F3 89 9A C2`, a protobuf `AggregatedRecord`, and the MD5 of that protobuf.
//!
//! ```text
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;
//! }
//! ```
//!
//! Kinesis places a record by the MD5 of its partition key; an aggregate carries events of many
//! keys, so it may only hold events whose keys fall in the same shard, and it is sent with that
//! shard's hash (the first event's) as its explicit hash key. [`ShardMap`] says which shard a key
//! falls in. Pure code: the relay fetches the shards and sends the records.

use md5::{Digest, Md5};

/// The first bytes of an aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;
/// KPL's default `AggregationMaxSize`: the most bytes of one aggregated record.
pub const DEFAULT_MAX_BYTES: usize = 51_200;

/// Whether a stream is in a configured list of aggregated streams (names or ARNs as the rules
/// write them; `*` matches every stream).
pub fn listed(streams: &[String], stream: &str) -> bool {
    streams.iter().any(|a| a == "*" || a == stream)
}

/// Where Kinesis puts a partition key: the MD5 of its UTF-8 bytes as a big-endian 128-bit number.
pub fn hash_key(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// Builds one aggregated record, event by event, knowing its size as it grows.
#[derive(Debug, Default)]
pub struct Builder {
    keys: Vec<u8>,
    records: Vec<u8>,
    count: usize,
    first_key: Option<String>,
}

impl Builder {
    /// The encoded size with one more event of this key and data.
    pub fn size_with(&self, partition_key: &str, data: &[u8]) -> usize {
        self.size() + key_entry_len(partition_key) + record_entry_len(self.count, data)
    }

    /// The encoded size so far (magic, protobuf, digest).
    pub fn size(&self) -> usize {
        MAGIC.len() + self.keys.len() + self.records.len() + DIGEST_LEN
    }

    /// The first event's partition key: the aggregate's own.
    pub fn first_key(&self) -> Option<&str> {
        self.first_key.as_deref()
    }

    /// Adds an event. Every event gets its own partition key entry (the relay sends one event
    /// per key per call, so a table entry is never shared).
    pub fn push(&mut self, partition_key: &str, data: &[u8]) {
        let index = self.count as u64;
        put_len_delimited(&mut self.keys, 1, partition_key.as_bytes());
        // Record { partition_key_index = 1; data = 3 }
        let body_len = 1 + varint_len(index) + 1 + varint_len(data.len() as u64) + data.len();
        put_key(&mut self.records, 3, WIRE_LEN);
        put_varint(&mut self.records, body_len as u64);
        put_key(&mut self.records, 1, WIRE_VARINT);
        put_varint(&mut self.records, index);
        put_len_delimited(&mut self.records, 3, data);
        if self.first_key.is_none() {
            self.first_key = Some(partition_key.to_string());
        }
        self.count += 1;
    }

    /// The record's bytes; the builder is empty again.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size());
        out.extend_from_slice(&MAGIC);
        let body_start = out.len();
        out.append(&mut self.keys);
        out.append(&mut self.records);
        let digest = Md5::digest(&out[body_start..]);
        out.extend_from_slice(&digest);
        self.count = 0;
        self.first_key = None;
        out
    }
}

/// One event taken out of an aggregated record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed aggregated record: {0}")]
pub struct AggregateError(&'static str);

/// The events of an aggregated Kinesis record; `Ok(None)` when the record is not one (no magic,
/// or a digest that does not match: a plain record that happens to start with the magic, which
/// is how the KCL tells them apart). An error means the digest matched and the protobuf is
/// broken.
pub fn decode(record: &[u8]) -> Result<Option<Vec<UserRecord>>, AggregateError> {
    if record.len() < MAGIC.len() + DIGEST_LEN || record[..MAGIC.len()] != MAGIC {
        return Ok(None);
    }
    let (body, digest) = record[MAGIC.len()..].split_at(record.len() - MAGIC.len() - DIGEST_LEN);
    if Md5::digest(body)[..] != *digest {
        return Ok(None);
    }
    let mut keys = Vec::new();
    let mut hash_keys = Vec::new();
    let mut records = Vec::new();
    let mut r = Reader(body);
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, WIRE_LEN) => keys.push(r.string()?),
            (2, WIRE_LEN) => hash_keys.push(r.string()?),
            (3, WIRE_LEN) => records.push(r.bytes()?),
            _ => r.skip(wire)?,
        }
    }
    records
        .into_iter()
        .map(|body| {
            let mut r = Reader(body);
            let (mut pk, mut ehk, mut data) = (None, None, None);
            while let Some((field, wire)) = r.key()? {
                match (field, wire) {
                    (1, WIRE_VARINT) => pk = Some(r.varint()?),
                    (2, WIRE_VARINT) => ehk = Some(r.varint()?),
                    (3, WIRE_LEN) => data = Some(r.bytes()?.to_vec()),
                    _ => r.skip(wire)?,
                }
            }
            let at = |table: &Vec<String>, i: u64| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| table.get(i))
                    .cloned()
                    .ok_or(AggregateError("table index out of range"))
            };
            Ok(UserRecord {
                partition_key: at(
                    &keys,
                    pk.ok_or(AggregateError("record without a key index"))?,
                )?,
                explicit_hash_key: ehk.map(|i| at(&hash_keys, i)).transpose()?,
                data: data.ok_or(AggregateError("record without data"))?,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The open shards of a stream by hash key range, as `ListShards` gave them.
#[derive(Debug, Clone, Default)]
pub struct ShardMap {
    /// `(first hash key, last hash key, shard id)`, sorted, not overlapping.
    shards: Vec<(u128, u128, String)>,
}

impl ShardMap {
    /// From `(starting hash key, ending hash key, shard id)` of the open shards, the keys as
    /// decimal strings (as Kinesis writes them). Shards whose range does not parse are left out:
    /// their keys are then sent without aggregation.
    pub fn new<'a>(shards: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) -> ShardMap {
        let mut shards: Vec<_> = shards
            .into_iter()
            .filter_map(|(start, end, id)| {
                Some((start.parse().ok()?, end.parse().ok()?, id.into()))
            })
            .collect();
        shards.sort();
        ShardMap { shards }
    }

    /// The shard a hash key falls in, as an index into this map.
    pub fn shard_of(&self, hash: u128) -> Option<usize> {
        let i = self.shards.partition_point(|(start, _, _)| *start <= hash);
        let (_, end, _) = self.shards.get(i.checked_sub(1)?)?;
        (hash <= *end).then_some(i - 1)
    }

    pub fn shard_id(&self, index: usize) -> Option<&str> {
        self.shards.get(index).map(|(_, _, id)| id.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }
}

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_I32: u8 = 5;

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u8, wire: u8) {
    out.push((field << 3) | wire);
}

fn put_len_delimited(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    put_key(out, field, WIRE_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn key_entry_len(key: &str) -> usize {
    1 + varint_len(key.len() as u64) + key.len()
}

fn record_entry_len(index: usize, data: &[u8]) -> usize {
    let body = 1 + varint_len(index as u64) + 1 + varint_len(data.len() as u64) + data.len();
    1 + varint_len(body as u64) + body
}

/// A protobuf reader over a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, AggregateError> {
        let mut v = 0u64;
        for (i, &b) in self.0.iter().enumerate().take(10) {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.0 = &self.0[i + 1..];
                return Ok(v);
            }
        }
        Err(AggregateError("bad varint"))
    }

    /// The next field's number and wire type, `None` at the end.
    fn key(&mut self) -> Result<Option<(u64, u8)>, AggregateError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let k = self.varint()?;
        Ok(Some((k >> 3, (k & 7) as u8)))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], AggregateError> {
        let n = usize::try_from(n).map_err(|_| AggregateError("length out of range"))?;
        if n > self.0.len() {
            return Err(AggregateError("field runs past the end"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn bytes(&mut self) -> Result<&'a [u8], AggregateError> {
        let n = self.varint()?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, AggregateError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| AggregateError("key is not UTF-8"))
    }

    fn skip(&mut self, wire: u8) -> Result<(), AggregateError> {
        match wire {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_I64 => self.take(8).map(drop),
            WIRE_LEN => self.bytes().map(drop),
            WIRE_I32 => self.take(4).map(drop),
            _ => Err(AggregateError("unknown wire type")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn aggregate(events: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = Builder::default();
        for (k, d) in events {
            let expected = b.size_with(k, d);
            b.push(k, d);
            assert_eq!(b.size(), expected);
        }
        let size = b.size();
        let out = b.finish();
        assert_eq!(out.len(), size);
        out
    }

    #[test]
    fn round_trip() {
        let out = aggregate(&[("user-1", b"{\"a\":1}"), ("user-2", b"")]);
        assert_eq!(out[..4], MAGIC);
        let got = decode(&out).unwrap().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].partition_key, "user-1");
        assert_eq!(got[0].data, b"{\"a\":1}");
        assert_eq!(got[1].partition_key, "user-2");
        assert_eq!(got[1].explicit_hash_key, None);
    }

    /// A record laid out as the KPL writes one (the key table, then the records; one record
    /// with an empty tag), built by hand from the .proto: keys "a" and "b", data "1" and "2".
    #[test]
    fn reads_the_kpl_layout() {
        let mut body = vec![0x0a, 1, b'a', 0x0a, 1, b'b'];
        body.extend([0x1a, 5, 0x08, 0, 0x1a, 1, b'1']);
        body.extend([0x1a, 7, 0x08, 1, 0x1a, 1, b'2', 0x22, 0]); // with an empty tag
        let mut rec = MAGIC.to_vec();
        rec.extend(&body);
        rec.extend(Md5::digest(&body));
        let got = decode(&rec).unwrap().unwrap();
        assert_eq!(
            got.iter()
                .map(|r| (r.partition_key.as_str(), r.data.as_slice()))
                .collect::<Vec<_>>(),
            vec![("a", &b"1"[..]), ("b", &b"2"[..])]
        );
        assert_eq!(aggregate(&[("a", b"1"), ("b", b"2")])[4..12], body[..8]);
    }

    #[test]
    fn plain_records_are_not_aggregates() {
        assert_eq!(decode(b"{\"specversion\":\"1.0\"}"), Ok(None));
        let mut fake = MAGIC.to_vec();
        fake.extend([0u8; 30]);
        assert_eq!(decode(&fake), Ok(None), "digest does not match");
    }

    #[test]
    fn broken_protobuf_with_a_good_digest_is_an_error() {
        let body = [0x1a, 9, 0x08];
        let mut rec = MAGIC.to_vec();
        rec.extend(body);
        rec.extend(Md5::digest(body));
        assert!(decode(&rec).is_err());
    }

    #[test]
    fn hash_key_is_md5_big_endian() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(hash_key(""), 0xd41d8cd98f00b204e9800998ecf8427e);
    }

    #[test]
    fn shard_map_finds_ranges() {
        let max = u128::MAX.to_string();
        let half = (u128::MAX / 2).to_string();
        let half1 = (u128::MAX / 2 + 1).to_string();
        let m = ShardMap::new([
            (half1.as_str(), max.as_str(), "shard-1"),
            ("0", half.as_str(), "shard-0"),
        ]);
        assert_eq!(m.shard_id(m.shard_of(0).unwrap()), Some("shard-0"));
        assert_eq!(m.shard_id(m.shard_of(u128::MAX).unwrap()), Some("shard-1"));
        assert_eq!(
            m.shard_id(m.shard_of(u128::MAX / 2 + 1).unwrap()),
            Some("shard-1")
        );
        let gap = ShardMap::new([("10", "20", "s")]);
        assert_eq!(gap.shard_of(5), None);
        assert_eq!(gap.shard_of(21), None);
        assert_eq!(gap.shard_of(20), Some(0));
    }

    proptest! {
        #[test]
        fn any_events_round_trip(events in proptest::collection::vec(("\\PC{0,40}", proptest::collection::vec(any::<u8>(), 0..300)), 1..40)) {
            let refs: Vec<(&str, &[u8])> = events.iter().map(|(k, d)| (k.as_str(), d.as_slice())).collect();
            let got = decode(&aggregate(&refs)).unwrap().unwrap();
            prop_assert_eq!(got.len(), events.len());
            for (g, (k, d)) in got.iter().zip(&events) {
                prop_assert_eq!(&g.partition_key, k);
                prop_assert_eq!(&g.data, d);
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut rec = MAGIC.to_vec();
            rec.extend(&bytes);
            rec.extend(Md5::digest(&bytes));
            let _ = decode(&rec);
            let _ = decode(&bytes);
        }
    }
}
