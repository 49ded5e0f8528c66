//! The relay: drains the outbox into Kinesis. It takes the rows the outbox's group writer just
//! committed from memory, or reads new rows by `seq` (cheap range reads) when that hand-off does
//! not cover them, keeps them in memory ([`Backlog`]), and sends PutRecords batches of at most 500
//! records and 5 MiB, several calls in flight at once, one record per partition key per call (so
//! a failed record can never be overtaken by a later one of its key). Throttling and per-record
//! failures are retried with exponential backoff and full jitter; events are dead-lettered after
//! `max_attempts` tries or `max_age`, and records over Kinesis's 1 MiB limit at once. With
//! PostgreSQL, one replica relays at a time (advisory lock); the others wait to take over.
//!
//! On streams configured for aggregation, a call's rows are packed into KPL aggregated records
//! ([`crate::aggregate`]), one per shard and up to `max_bytes` each, by the stream's shard map
//! (`ListShards`, refreshed every minute and whenever Kinesis puts an aggregate on another shard
//! than the map said). A row travels and settles with its aggregate: if the aggregate fails, all
//! its rows are retried. Without a shard map (`ListShards` failing) rows go out one per record.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::aggregate::{self, ShardMap};
use crate::backlog::{Backlog, Batch, MAX_RECORDS, Next};
use crate::kinesis::{Client, LazyClient};
use crate::metrics::Metrics;
use crate::outbox::{Outbox, OutboxError, Pending, now_ms};

/// Kinesis's limit for one record.
const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Rows per read of the outbox.
const READ_LIMIT: i64 = 1_000;
/// PutRecords calls in flight at once.
const MAX_CALLS: usize = 4;

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Tries before an event is dead-lettered.
    pub max_attempts: u32,
    /// Age after which a failing event is dead-lettered.
    pub max_age: Duration,
    /// First retry delay; doubles per try up to `max_backoff` (full jitter).
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// New events are read at most this often, and a stream sends a batch that is not full at
    /// most this often (fewer, larger PutRecords calls under load; an idle relay sends the first
    /// event at once).
    pub linger: Duration,
    /// Poll interval when idle (new events also wake the relay at once).
    pub poll: Duration,
    /// Keep published events this long (for replay); `None` deletes them.
    pub keep_published: Option<Duration>,
    /// Streams (names or ARNs as the rules write them; `*`: all) whose events are sent as KPL
    /// aggregated records. Their consumers must deaggregate (the KCL does).
    pub aggregate: Vec<String>,
    /// The most bytes of one aggregated record.
    pub aggregate_max_bytes: usize,
}

impl RelayConfig {
    pub fn aggregates(&self, stream: &str) -> bool {
        aggregate::listed(&self.aggregate, stream)
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            max_attempts: 20,
            max_age: Duration::from_secs(24 * 3600),
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            linger: Duration::from_millis(20),
            poll: Duration::from_millis(200),
            keep_published: None,
            aggregate: Vec::new(),
            aggregate_max_bytes: aggregate::DEFAULT_MAX_BYTES,
        }
    }
}

pub struct Relay {
    pub outbox: Outbox,
    /// Built when the first row arrives: nothing publishes, nothing asks AWS.
    client: LazyClient,
    pub metrics: Metrics,
    pub cfg: RelayConfig,
    backlog: Backlog,
    /// The last read of new rows was full: more may be waiting.
    more: bool,
    /// Aggregated streams' shard maps.
    shards: HashMap<String, Shards>,
}

/// What the relay knows of an aggregated stream's shards.
#[derive(Default)]
struct Shards {
    map: Option<Arc<ShardMap>>,
    /// When `ListShards` was last tried.
    tried: Option<Instant>,
    /// Kinesis put an aggregate on another shard than the map said.
    stale: bool,
}

/// How often an aggregated stream's shard map is fetched again; a failed fetch is retried after
/// `SHARDS_RETRY`.
const SHARDS_REFRESH: Duration = Duration::from_secs(60);
const SHARDS_RETRY: Duration = Duration::from_secs(5);

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub published: usize,
    pub retried: usize,
    pub dead: usize,
}

impl Pass {
    fn add(&mut self, o: Pass) {
        self.published += o.published;
        self.retried += o.retried;
        self.dead += o.dead;
    }
}

type PutResult = Result<
    aws_sdk_kinesis::operation::put_records::PutRecordsOutput,
    aws_sdk_kinesis::error::SdkError<aws_sdk_kinesis::operation::put_records::PutRecordsError>,
>;

/// The rows one PutRecords call carries, record by record.
#[derive(Default)]
struct Carried {
    stream: String,
    /// The rows, in record order.
    seqs: Vec<i64>,
    /// Rows per record, in order.
    counts: Vec<usize>,
    /// The shard each aggregated record was meant for (`None` for a plain record).
    shard_ids: Vec<Option<String>>,
}

/// One PutRecords call: its records and the rows they carry.
#[derive(Default)]
struct Call {
    entries: Vec<PutRecordsRequestEntry>,
    carried: Carried,
}

impl Call {
    fn push(&mut self, entry: PutRecordsRequestEntry, seqs: &[i64], shard_id: Option<&str>) {
        self.entries.push(entry);
        self.carried.seqs.extend_from_slice(seqs);
        self.carried.counts.push(seqs.len());
        self.carried.shard_ids.push(shard_id.map(str::to_string));
    }
}

/// A finished PutRecords call: the rows it carried and what Kinesis said.
struct Sent {
    carried: Carried,
    result: PutResult,
}

impl Relay {
    pub fn new(
        outbox: Outbox,
        client: impl Into<LazyClient>,
        metrics: Metrics,
        cfg: RelayConfig,
    ) -> Relay {
        Relay {
            outbox,
            client: client.into(),
            metrics,
            backlog: Backlog::aggregating(&cfg.aggregate),
            cfg,
            more: false,
            shards: HashMap::new(),
        }
    }

    /// Runs until `shutdown` turns true (or its sender is dropped). Calls in flight then are
    /// waited for (up to 5 s), so what Kinesis accepted is not sent again after a restart.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let _leader = loop {
            tokio::select! {
                r = self.outbox.leader_connection() => match r {
                    Ok(conn) => break conn,
                    Err(e) => {
                        warn!(error = %e, "Relay cannot reach the outbox store; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                _ = shutdown.changed() => return,
            }
        };
        info!(shared = self.outbox.shared, "Relay running");
        let mut calls: JoinSet<Sent> = JoinSet::new();
        // New rows may be waiting in the store (woken by an enqueue, or at start).
        let mut dirty = true;
        let mut last_read = Instant::now() - self.cfg.poll;
        let mut last_gauges = Instant::now() - Duration::from_secs(10);
        // Archived events are pruned once a minute.
        let mut last_prune = Instant::now() - Duration::from_secs(3600);
        while !*shutdown.borrow() {
            let since_read = last_read.elapsed();
            // The idle poll reads the store itself: rows that reached it any other way (another
            // process writing the same file, say) show up within `poll` too.
            let polled = since_read >= self.cfg.poll;
            if (dirty && since_read >= self.cfg.linger) || self.more || polled {
                last_read = Instant::now();
                dirty = false;
                if let Err(e) = self.load(polled).await {
                    warn!(error = %e, "Relay cannot read the outbox; retrying");
                    self.reset(&mut calls).await;
                    tokio::time::sleep(self.cfg.poll).await;
                    continue;
                }
            }
            self.ready_client().await;
            self.refresh_shards().await;
            let send_wait = self.launch(&mut calls, Some(self.cfg.linger));
            if last_gauges.elapsed() >= Duration::from_secs(1) {
                self.update_gauges();
                last_gauges = Instant::now();
            }
            if let Some(keep) = self.cfg.keep_published
                && last_prune.elapsed() >= Duration::from_secs(60)
            {
                if let Err(e) = self.outbox.prune_published(keep).await {
                    warn!(error = %e, "Pruning published events failed; will retry");
                }
                last_prune = Instant::now();
            }
            let since_read = last_read.elapsed();
            let mut wait = self.cfg.poll.saturating_sub(since_read);
            if dirty || self.more {
                wait = wait.min(self.cfg.linger.saturating_sub(since_read));
            }
            if let Some(w) = send_wait {
                wait = wait.min(w);
            }
            tokio::select! {
                Some(done) = calls.join_next(), if !calls.is_empty() => {
                    if let Err(e) = self.settle_joined(done).await {
                        warn!(error = %e, "Relay cannot record a PutRecords result; re-reading the outbox");
                        self.reset(&mut calls).await;
                    }
                }
                _ = self.outbox.committed.notified() => dirty = true,
                _ = tokio::time::sleep(wait) => {}
                // A dropped sender counts as shutdown (no busy loop on a closed channel).
                r = shutdown.changed() => if r.is_err() { break },
            }
        }
        let finish = async {
            while let Some(done) = calls.join_next().await {
                if let Err(e) = self.settle_joined(done).await {
                    warn!(error = %e, "Relay cannot record a PutRecords result at shutdown");
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(5), finish).await {
            Ok(()) => info!("Relay stopped"),
            Err(_) => warn!(
                "Relay stopped with calls unanswered after 5 s; their events stay in the outbox and are sent again"
            ),
        }
    }

    /// Sends everything due now and waits for the answers, without lingering: reads the new
    /// rows, then calls until nothing is due (rows scheduled for a later retry stay queued).
    pub async fn pass(&mut self) -> Result<Pass, OutboxError> {
        let mut calls = JoinSet::new();
        let result = async {
            let mut total = self.load(false).await?;
            loop {
                if self.more {
                    total.add(self.load(false).await?);
                }
                self.ready_client().await;
                self.refresh_shards().await;
                self.launch(&mut calls, None);
                let Some(done) = calls.join_next().await else {
                    return Ok(total);
                };
                total.add(self.settle_joined(done).await?);
            }
        }
        .await;
        if result.is_err() {
            self.reset(&mut calls).await;
        }
        result
    }

    /// Takes new rows (handed over by the writer, or read from the store when the hand-off does
    /// not cover them, or with `from_store`), and rows of lagging streams that have room again.
    /// Records over Kinesis's 1 MiB limit are dead-lettered here.
    async fn load(&mut self, from_store: bool) -> Result<Pass, OutboxError> {
        let handed = self.outbox.handed_over(self.backlog.cursor);
        // After a full read of the store, the rest is read from it too: the hand-off only
        // covers rows the writer committed since it last gave them.
        let rows = match handed.filter(|_| !from_store && !self.more) {
            Some(rows) => {
                self.more = false;
                rows
            }
            None => {
                let rows = self
                    .outbox
                    .read_after(self.backlog.cursor, READ_LIMIT)
                    .await?;
                debug!(
                    cursor = self.backlog.cursor,
                    polled = from_store,
                    rows = rows.len(),
                    "New rows read from the store"
                );
                self.more = rows.len() as i64 == READ_LIMIT;
                rows
            }
        };
        let (rows, mut pass) = self.too_large(rows).await?;
        self.backlog.add(rows);
        for (stream, from) in self.backlog.lagging() {
            let rows = self
                .outbox
                .read_stream(&stream, from, self.backlog.cursor, READ_LIMIT)
                .await?;
            debug!(stream, from, rows = rows.len(), "Lagging stream read back");
            let complete = (rows.len() as i64) < READ_LIMIT;
            let (rows, p) = self.too_large(rows).await?;
            pass.add(p);
            self.backlog.catch_up(&stream, rows, complete);
        }
        Ok(pass)
    }

    /// Dead-letters the rows no PutRecords call can carry; returns the others.
    async fn too_large(&self, rows: Vec<Pending>) -> Result<(Vec<Pending>, Pass), OutboxError> {
        let mut pass = Pass::default();
        let mut kept = Vec::with_capacity(rows.len());
        for row in rows {
            let size = row.payload.len() + row.partition_key.len();
            if size <= MAX_RECORD_BYTES {
                kept.push(row);
                continue;
            }
            self.outbox
                .dead_letter(
                    row.seq,
                    &format!("record of {size} bytes is over Kinesis's 1 MiB limit"),
                )
                .await?;
            self.metrics
                .dead_lettered
                .with_label_values(&[&row.stream, "too_large"])
                .inc();
            pass.dead += 1;
        }
        Ok((kept, pass))
    }

    /// Starts calls while fewer than `MAX_CALLS` are in flight and something is due. Returns
    /// how long until something may be due when nothing is now.
    fn launch(&mut self, calls: &mut JoinSet<Sent>, linger: Option<Duration>) -> Option<Duration> {
        // No client yet: no row yet either (`ready_client`).
        let client = self.client.get()?.clone();
        while calls.len() < MAX_CALLS {
            let gate = linger.map(|l| (Instant::now(), l));
            match self.backlog.next_batch(now_ms(), gate) {
                Next::Send(batch) => {
                    let call = self.prepare(batch);
                    calls.spawn(put(client.clone(), self.metrics.clone(), call));
                }
                Next::Wait(wait) => return wait,
            }
        }
        None
    }

    /// A batch as PutRecords records: aggregated by shard on an aggregated stream with a shard
    /// map, one row per record otherwise. Rows past the call's 500 records are released for the
    /// next call.
    fn prepare(&mut self, batch: Batch) -> Call {
        let map = self
            .shards
            .get(&batch.stream)
            .and_then(|s| s.map.clone())
            .filter(|m| self.cfg.aggregates(&batch.stream) && !m.is_empty());
        let (call, left) = match map {
            Some(map) => {
                let (call, left) = pack(&map, batch, self.cfg.aggregate_max_bytes);
                let per_record = self
                    .metrics
                    .events_per_record
                    .with_label_values(&[&call.carried.stream]);
                for &n in &call.carried.counts {
                    per_record.observe(n as f64);
                }
                (call, left)
            }
            None => plain_call(batch),
        };
        if !left.is_empty() {
            self.backlog.release(&call.carried.stream, &left);
        }
        call
    }

    /// Fetches the shard map of each aggregated stream in the backlog that has none, an old
    /// one, or one Kinesis contradicted.
    /// Builds the Kinesis client once there is something to send.
    async fn ready_client(&mut self) {
        if self.client.get().is_none() && !self.backlog.is_empty() {
            self.client.init().await;
        }
    }

    async fn refresh_shards(&mut self) {
        if self.cfg.aggregate.is_empty() {
            return;
        }
        let Some(client) = self.client.get().cloned() else {
            return;
        };
        let due: Vec<String> = self
            .backlog
            .stream_names()
            .filter(|stream| self.cfg.aggregates(stream))
            .filter(|stream| match self.shards.get(*stream) {
                None => true,
                Some(s) => s.tried.is_none_or(|t| {
                    t.elapsed()
                        >= if s.map.is_none() || s.stale {
                            SHARDS_RETRY
                        } else {
                            SHARDS_REFRESH
                        }
                }),
            })
            .cloned()
            .collect();
        for stream in due {
            self.shards.entry(stream.clone()).or_default().tried = Some(Instant::now());
            match list_shards(&client, &stream).await {
                Ok(map) => {
                    debug!(stream, shards = map.len(), "Shard map fetched");
                    let s = self.shards.entry(stream).or_default();
                    s.map = Some(Arc::new(ShardMap::new(
                        map.iter()
                            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())),
                    )));
                    s.stale = false;
                }
                Err(e) => {
                    warn!(stream, error = %e, "ListShards failed: events go out without aggregation until it works");
                }
            }
        }
    }

    /// After an error the in-memory view may no longer match the store: wait for the calls in
    /// flight, forget everything, and read the outbox again from the start (rows whose outcome
    /// was not recorded are sent again: at least once, deduped by id downstream).
    async fn reset(&mut self, calls: &mut JoinSet<Sent>) {
        while calls.join_next().await.is_some() {}
        self.backlog = Backlog::aggregating(&self.cfg.aggregate);
        self.more = false;
    }

    async fn settle_joined(
        &mut self,
        done: Result<Sent, tokio::task::JoinError>,
    ) -> Result<Pass, OutboxError> {
        match done {
            Ok(sent) => self.settle(sent).await,
            // A panicked call: its rows are in flight for good, so start over.
            Err(e) => Err(OutboxError::Write(format!("PutRecords task failed: {e}"))),
        }
    }

    /// Records what Kinesis said: deletes (or archives) what it accepted, schedules retries or
    /// dead letters for the rest.
    async fn settle(&mut self, sent: Sent) -> Result<Pass, OutboxError> {
        let Sent {
            carried:
                Carried {
                    stream,
                    seqs,
                    counts,
                    shard_ids,
                },
            result,
        } = sent;
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                let text = format!("{}", aws_sdk_kinesis::error::DisplayErrorContext(&e));
                let reason = call_reason(&text);
                warn!(stream, records = seqs.len(), reason, error = %text, "PutRecords failed; will retry");
                let failures: Vec<_> = seqs.iter().map(|&s| (s, reason, text.clone())).collect();
                return self.fail(&stream, &failures).await;
            }
        };
        let mut done = Vec::with_capacity(seqs.len());
        let mut failures = Vec::new();
        let mut rows = seqs.as_slice();
        let mut results = out.records().iter();
        for (i, &n) in counts.iter().enumerate() {
            let (carried, rest) = rows.split_at(n);
            rows = rest;
            // Rows the response does not cover (it never happens with a real server) are
            // retried rather than assumed published.
            let Some(entry) = results.next() else {
                failures.extend(
                    carried
                        .iter()
                        .map(|&s| (s, "missing_result", "no result entry".to_string())),
                );
                continue;
            };
            match entry.error_code() {
                None => {
                    done.extend_from_slice(carried);
                    if let (Some(Some(meant)), Some(got)) = (shard_ids.get(i), entry.shard_id())
                        && meant != got
                    {
                        debug!(
                            stream,
                            meant,
                            got,
                            "Aggregate landed on another shard: refreshing the shard map"
                        );
                        self.shards.entry(stream.clone()).or_default().stale = true;
                    }
                }
                Some(code) => {
                    let text = format!("{code}: {}", entry.error_message().unwrap_or(""));
                    let reason = record_reason(code);
                    failures.extend(carried.iter().map(|&s| (s, reason, text.clone())));
                }
            }
        }
        // Counted when Kinesis accepts them, before their rows leave the outbox: whoever sees
        // the outbox drained also sees the count (a test read it in between and got 54 of 60).
        self.metrics
            .published
            .with_label_values(&[&stream])
            .inc_by(done.len() as u64);
        self.outbox
            .published(&done, self.cfg.keep_published.is_some())
            .await?;
        for &seq in &done {
            self.backlog.remove(&stream, seq);
        }
        let mut pass = self.fail(&stream, &failures).await?;
        pass.published = done.len();
        debug!(
            stream,
            published = done.len(),
            retried = pass.retried,
            "PutRecords done"
        );
        Ok(pass)
    }

    /// Schedules another try for each failed row, or dead-letters it when it is out of tries or
    /// too old. `failures`: `(seq, reason label, error text)`.
    async fn fail(
        &mut self,
        stream: &str,
        failures: &[(i64, &'static str, String)],
    ) -> Result<Pass, OutboxError> {
        let mut pass = Pass::default();
        let now = now_ms();
        let mut retry = Vec::with_capacity(failures.len());
        let mut earliest = i64::MAX;
        for (seq, reason, error) in failures {
            if *reason == "throttled" {
                self.metrics.throttled.with_label_values(&[stream]).inc();
            }
            self.metrics
                .failed
                .with_label_values(&[stream, reason])
                .inc();
            let Some(row) = self.backlog.get(stream, *seq) else {
                continue;
            };
            let tries = row.attempts + 1;
            let age = Duration::from_millis((now - row.created_ms).max(0) as u64);
            if tries >= i64::from(self.cfg.max_attempts) || age >= self.cfg.max_age {
                let id = row.id.clone();
                let why = format!("gave up after {tries} tries over {age:.0?}: {error}");
                self.outbox.dead_letter(*seq, &why).await?;
                self.backlog.remove(stream, *seq);
                self.metrics
                    .dead_lettered
                    .with_label_values(&[stream, reason])
                    .inc();
                warn!(stream, id = %id, reason, "Event dead-lettered");
                pass.dead += 1;
                continue;
            }
            let at = now + backoff(&self.cfg, tries).as_millis() as i64;
            earliest = earliest.min(at);
            self.backlog.retry_at(stream, *seq, at);
            retry.push(*seq);
        }
        if let Some((_, _, error)) = failures.first() {
            self.outbox.retry(&retry, earliest, error).await?;
        }
        pass.retried = retry.len();
        Ok(pass)
    }

    /// Outbox depth and oldest age per stream, from the relay's working set: no query, so the
    /// gauges stay cheap while the outbox grows (a `COUNT(*)` every second scanned it whole).
    fn update_gauges(&self) {
        let now = now_ms();
        for (stream, depth, oldest) in self.backlog.depths() {
            self.metrics
                .outbox_depth
                .with_label_values(&[stream])
                .set(depth as i64);
            let age = oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
            self.metrics
                .outbox_oldest_age
                .with_label_values(&[stream])
                .set(age);
        }
    }
}

fn plain_entry(key: String, payload: Vec<u8>) -> PutRecordsRequestEntry {
    PutRecordsRequestEntry::builder()
        .data(Blob::new(payload))
        .partition_key(key)
        .build()
        .expect("data and partition key are set")
}

/// A batch as plain records, one row each (the payloads move into the records), and the rows
/// past the call's 500 records.
fn plain_call(batch: Batch) -> (Call, Vec<i64>) {
    let Batch {
        stream,
        mut records,
    } = batch;
    // An aggregated stream's batch may hold more rows than plain records fit in a call.
    let left = records
        .drain(records.len().min(MAX_RECORDS)..)
        .map(|(seq, _, _)| seq)
        .collect();
    let mut call = Call::default();
    call.carried.stream = stream;
    for (seq, key, payload) in records {
        call.push(plain_entry(key, payload), &[seq], None);
    }
    (call, left)
}

/// Packs a batch into aggregated records per shard, in `seq` order within each, each record up
/// to `max_bytes` and sent with its first row's hash key as explicit hash key (so it lands on
/// that shard). A row alone in its record, or too large to share one, goes out plain; so does a
/// row whose key falls in no known shard. Returns the call and the rows past its 500 records.
fn pack(map: &ShardMap, batch: Batch, max_bytes: usize) -> (Call, Vec<i64>) {
    /// An aggregate being filled for one shard.
    struct Open {
        builder: aggregate::Builder,
        hash: u128,
        seqs: Vec<i64>,
        /// The row itself while it is alone (sent plain if nothing joins it).
        single: Option<(String, Vec<u8>)>,
    }
    let mut call = Call::default();
    call.carried.stream = batch.stream;
    let mut left = Vec::new();
    let mut close = |call: &mut Call, mut o: Open, shard: Option<usize>| {
        if call.entries.len() == MAX_RECORDS {
            left.extend(o.seqs);
        } else if let Some((key, payload)) = o.single {
            call.push(plain_entry(key, payload), &o.seqs, None);
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
    let mut open: HashMap<usize, Open> = HashMap::new();
    for (seq, key, payload) in batch.records {
        let hash = aggregate::hash_key(&key);
        let alone = aggregate::Builder::default().size_with(&key, &payload) > max_bytes;
        let Some(shard) = map.shard_of(hash).filter(|_| !alone) else {
            let single = Open {
                builder: aggregate::Builder::default(),
                hash,
                seqs: vec![seq],
                single: Some((key, payload)),
            };
            close(&mut call, single, None);
            continue;
        };
        if open
            .get(&shard)
            .is_some_and(|o| o.builder.size_with(&key, &payload) > max_bytes)
        {
            let full = open.remove(&shard).expect("just seen");
            close(&mut call, full, Some(shard));
        }
        let o = open.entry(shard).or_insert_with(|| Open {
            builder: aggregate::Builder::default(),
            hash,
            seqs: Vec::new(),
            single: None,
        });
        o.builder.push(&key, &payload);
        o.single = o.seqs.is_empty().then_some((key, payload));
        o.seqs.push(seq);
    }
    let mut rest: Vec<_> = open.into_iter().collect();
    rest.sort_by_key(|(_, o)| o.seqs[0]);
    for (shard, o) in rest {
        close(&mut call, o, Some(shard));
    }
    (call, left)
}

/// The open shards of a stream: `(starting hash key, ending hash key, shard id)`.
async fn list_shards(
    client: &Client,
    stream: &str,
) -> Result<Vec<(String, String, String)>, String> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut call = client.list_shards();
        call = match &token {
            Some(t) => call.next_token(t),
            None if stream.starts_with("arn:") => call.stream_arn(stream),
            None => call.stream_name(stream),
        };
        let out = call
            .send()
            .await
            .map_err(|e| format!("{}", aws_sdk_kinesis::error::DisplayErrorContext(&e)))?;
        for s in out.shards() {
            let closed = s
                .sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_some();
            if let (false, Some(range)) = (closed, s.hash_key_range()) {
                shards.push((
                    range.starting_hash_key().to_string(),
                    range.ending_hash_key().to_string(),
                    s.shard_id().to_string(),
                ));
            }
        }
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(shards),
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
    let result = call.send().await;
    metrics
        .put_duration
        .with_label_values(&[stream])
        .observe(started.elapsed().as_secs_f64());
    Sent { carried, result }
}

/// Full jitter: uniform in [0, min(max, base · 2^tries)].
fn backoff(cfg: &RelayConfig, tries: i64) -> Duration {
    let exp = cfg
        .base_backoff
        .saturating_mul(1u32 << tries.clamp(0, 20) as u32);
    let cap = exp.min(cfg.max_backoff);
    let r = (uuid::Uuid::new_v4().as_u128() as u64) as f64 / u64::MAX as f64;
    cap.mul_f64(r)
}

fn record_reason(code: &str) -> &'static str {
    match code {
        "ProvisionedThroughputExceededException" => "throttled",
        "InternalFailure" | "InternalFailureException" | "ServiceUnavailable" => "internal_failure",
        c if c.starts_with("KMS") => "kms",
        _ => "other",
    }
}

fn call_reason(text: &str) -> &'static str {
    if text.contains("ProvisionedThroughputExceeded")
        || text.contains("LimitExceeded")
        || text.contains("Throttl")
    {
        "throttled"
    } else if text.contains("ResourceNotFound") {
        "stream_not_found"
    } else if text.contains("KMS") {
        "kms"
    } else {
        "call_error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let cfg = RelayConfig::default();
        for tries in 0..40 {
            assert!(backoff(&cfg, tries) <= cfg.max_backoff);
        }
        let samples: Vec<_> = (0..20).map(|_| backoff(&cfg, 5)).collect();
        assert!(samples.iter().any(|d| *d != samples[0]), "no jitter");
    }

    #[test]
    fn reasons() {
        assert_eq!(
            record_reason("ProvisionedThroughputExceededException"),
            "throttled"
        );
        assert_eq!(record_reason("KMSThrottlingException"), "kms");
        assert_eq!(
            call_reason("service error: LimitExceededException"),
            "throttled"
        );
    }
}
