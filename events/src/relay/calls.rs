//! Sending: a due batch becomes a PutRecords call (packed by [`super::packing`]), run as a task
//! of its own so that several are in flight.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::packing::{Call, Carried, pack, plain_call};
use super::{MAX_CALLS, Relay};
use crate::aggregate;
use crate::backlog::{Batch, Next};
use crate::kinesis::Client;
use crate::metrics::Metrics;
use crate::now_ms;
use strangler_store::Pending;

type PutResult = Result<
    aws_sdk_kinesis::operation::put_records::PutRecordsOutput,
    aws_sdk_kinesis::error::SdkError<aws_sdk_kinesis::operation::put_records::PutRecordsError>,
>;

/// A finished PutRecords call: the rows it carried and what Kinesis said.
pub(super) struct Sent {
    pub(super) carried: Carried,
    pub(super) result: PutResult,
    /// When the call went out (ms since the epoch).
    pub(super) sent_ms: i64,
}

impl Relay {
    /// Starts calls while fewer than `MAX_CALLS` are in flight and something is due. Returns
    /// how long until something may be due when nothing is now.
    pub(super) fn launch(
        &mut self,
        calls: &mut JoinSet<Sent>,
        linger: Option<Duration>,
    ) -> Option<Duration> {
        // No client yet: no row yet either (`ready_client`).
        let client = self.client.get()?.clone();
        while calls.len() < MAX_CALLS {
            let gate = linger.map(|l| (Instant::now(), l));
            match self.backlog.next_batch(now_ms(), gate) {
                Next::Send(batch) => {
                    let (call, room_in) = self.prepare(batch);
                    let stream = &call.carried.stream;
                    if call.entries.is_empty() {
                        // Every record's shard is at its limit: no call, and the stream waits
                        // for room (other streams go on).
                        self.backlog.unsent(stream, &call.carried.seqs);
                        let wait = room_in.unwrap_or(Duration::from_millis(5));
                        let until = now_ms() + wait.as_millis().max(1) as i64;
                        self.backlog.hold(stream, until);
                        continue;
                    }
                    self.health.call_out(stream);
                    calls.spawn(put(client.clone(), self.metrics.clone(), call));
                }
                Next::Wait(wait) => return wait,
            }
        }
        None
    }

    /// A batch as PutRecords records: aggregated by shard on an aggregated stream with a shard
    /// map, one row per record otherwise. Rows past the call's 500 records, and those whose
    /// shard is at its write limit, are released for a later call; with the latter, how long
    /// until their shards have room.
    fn prepare(&mut self, batch: Batch) -> (Call, Option<Duration>) {
        let Batch { stream, seqs } = batch;
        let map = self
            .shard_map(&stream)
            .filter(|_| self.cfg.aggregates(&stream));
        let rows: Vec<&Pending> = seqs
            .iter()
            .filter_map(|&seq| self.backlog.get(&stream, seq))
            .collect();
        let (call, left) = match map {
            Some(map) => {
                let (call, left) = pack(&map, &stream, &rows, self.cfg.aggregate_max_bytes);
                let per_record = self.metrics.events_per_record.with_label_values(&[&stream]);
                for &n in &call.carried.counts {
                    per_record.observe(n as f64);
                }
                (call, left)
            }
            None => plain_call(&stream, &rows),
        };
        if !left.is_empty() {
            self.backlog.release(&stream, &left);
        }
        self.limit(call)
    }

    /// Holds back the records whose shard is at its write limit (see [`super::limits`]); their
    /// rows wait in the backlog. Returns the call and, when it held any back, how long until
    /// the first of their shards has room.
    fn limit(&mut self, mut call: Call) -> (Call, Option<Duration>) {
        let limits = self.cfg.shard_limits;
        let stream = call.carried.stream.clone();
        let map = self.shard_map(&stream);
        let (Some(map), false) = (map, limits.is_off()) else {
            return (call, None);
        };
        let now = Instant::now();
        let mut keep = Vec::with_capacity(call.entries.len());
        let mut wait: Option<Duration> = None;
        for (i, entry) in call.entries.iter().enumerate() {
            let key = entry.partition_key().unwrap_or_default();
            // An aggregate's shard is known; a plain record's follows from its key.
            let shard = call.carried.shard_ids.get(i).and_then(Option::as_deref);
            let shard = shard.or_else(|| {
                map.shard_of(aggregate::hash_key(key))
                    .and_then(|i| map.shard_id(i))
            });
            let Some(shard) = shard else {
                keep.push(true);
                continue;
            };
            // Kinesis counts the data and the partition key.
            let bytes = entry.data().as_ref().len() + key.len();
            match self.buckets.take(&limits, &stream, shard, bytes, now) {
                Ok(()) => keep.push(true),
                Err(w) => {
                    keep.push(false);
                    wait = Some(wait.map_or(w, |x| x.min(w)));
                }
            }
        }
        if wait.is_some() {
            let held = call.retain(&keep);
            self.metrics
                .shard_limited
                .with_label_values(&[&stream])
                .inc_by(held.len() as u64);
            self.usage.held(&stream, now_ms());
            self.backlog.release(&stream, &held);
        }
        (call, wait)
    }

    /// Builds the Kinesis client once there is something to send.
    pub(super) async fn ready_client(&mut self) {
        if self.client.get().is_none() && !self.backlog.is_empty() {
            self.client.init().await;
        }
    }
}

/// One PutRecords call (run as a task of its own, so several are in flight).
async fn put(client: Client, metrics: Metrics, call: Call) -> Sent {
    let Call { entries, carried } = call;
    let stream = carried.stream.as_str();
    let records = entries.len();
    let mut call = client.put_records().set_records(Some(entries));
    call = if stream.starts_with("arn:") {
        call.stream_arn(stream)
    } else {
        call.stream_name(stream)
    };
    metrics
        .records_per_put
        .with_label_values(&[stream])
        .observe(records as f64);
    let started = Instant::now();
    let sent_ms = now_ms();
    let result = call.send().await;
    metrics
        .put_duration
        .with_label_values(&[stream])
        .observe(started.elapsed().as_secs_f64());
    Sent {
        carried,
        result,
        sent_ms,
    }
}
