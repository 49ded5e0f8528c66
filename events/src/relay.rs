//! The relay: drains the outbox into Kinesis. It takes the rows the outbox's group writer just
//! committed from memory, or reads new rows by `seq` (cheap range reads) when that hand-off does
//! not cover them, keeps them in memory ([`Backlog`]), and sends PutRecords batches of at most 500
//! records and 5 MiB, several calls in flight at once, keeping each partition key's order (see
//! `backlog`). Failures are classified ([`Failure`]): an outage, throttling or any other failure
//! about the stream pauses the stream and probes it ([`health`]) without using up the events'
//! tries; only Kinesis rejecting a record uses up one of its `max_attempts` tries (retried with
//! exponential backoff and full jitter). Events are dead-lettered out of tries, at `max_age`, or
//! at once when no call can carry them. With PostgreSQL, one replica relays at a time (advisory
//! lock); the others wait to take over.
//!
//! On streams configured for aggregation, a call's rows are packed into KPL aggregated records
//! ([`crate::aggregate`]), one per shard and up to `max_bytes` each, by the stream's shard map
//! (`ListShards`, refreshed every minute and whenever Kinesis puts an aggregate on another shard
//! than the map said). A row travels and settles with its aggregate: if the aggregate fails, all
//! its rows are retried. Without a shard map (`ListShards` failing) rows go out one per record.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::aggregate::{self, ShardMap};
use crate::backlog::{Backlog, Batch, Next};
use crate::failure::Failure;
use crate::health::{self, Health};
use crate::kinesis::{Client, LazyClient};
use crate::metrics::Metrics;
use crate::outbox::{Outbox, OutboxError, Pending, now_ms};
use crate::packing::{Call, Carried, pack, plain_call};

/// Kinesis's limit for one record.
const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Rows per read of the outbox.
const READ_LIMIT: i64 = 1_000;
/// PutRecords calls in flight at once.
const MAX_CALLS: usize = 4;
/// Events waiting at some point, all streams, after which the drain gives the store's cache
/// memory back (`Outbox::shrink`).
const SHRINK_AFTER: usize = 10_000;

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Tries before an event Kinesis rejects is dead-lettered. Only rejections of the record
    /// use up tries ([`Failure::counts_try`]): outages and throttling back off the stream.
    pub max_attempts: u32,
    /// Age after which a failing event is dead-lettered, whatever the failure.
    pub max_age: Duration,
    /// First retry delay, of a rejected record and of a stream's back-off; doubles per failure
    /// up to `max_backoff` (with jitter).
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
    /// The memory budget for what grows with a backlog (`events.memory`): half for the relay's
    /// working set, the rest for the store's page caches and the writer's hand-off (see
    /// `Outbox::connect_with`).
    pub memory: usize,
}

/// The default memory budget: fits a small VM next to the proxy's own ~50 MB.
pub const DEFAULT_MEMORY: usize = 64 << 20;

impl RelayConfig {
    pub fn aggregates(&self, stream: &str) -> bool {
        aggregate::listed(&self.aggregate, stream)
    }

    /// The relay's working set: half the memory budget.
    fn working_set(&self) -> usize {
        self.memory / 2
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
            memory: DEFAULT_MEMORY,
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
    /// Each stream's failures in a row, up or down, and its incident log lines.
    health: Health,
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
            backlog: Backlog::new(cfg.working_set(), &cfg.aggregate, cfg.aggregate_max_bytes),
            cfg,
            more: false,
            shards: HashMap::new(),
            health: Health::default(),
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
        // The most events waiting since the store's caches were last given back.
        let mut peak = 0;
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
                let waiting = self.update_gauges();
                last_gauges = Instant::now();
                // A large backlog has drained: the store's caches it filled go back.
                peak = peak.max(waiting);
                if waiting == 0 && peak >= SHRINK_AFTER {
                    peak = 0;
                    if let Err(e) = self.outbox.shrink().await {
                        warn!(error = %e, "Giving back the store's cache memory failed");
                    }
                }
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
        let (rows, mut pass) = self.unsendable(rows).await?;
        self.backlog.add(rows);
        for (stream, from) in self.backlog.lagging() {
            let rows = self
                .outbox
                .read_stream(&stream, from, self.backlog.cursor, READ_LIMIT)
                .await?;
            debug!(stream, from, rows = rows.len(), "Lagging stream read back");
            let complete = (rows.len() as i64) < READ_LIMIT;
            let (rows, p) = self.unsendable(rows).await?;
            pass.add(p);
            self.backlog.catch_up(&stream, rows, complete);
        }
        Ok(pass)
    }

    /// Dead-letters the rows Kinesis would reject whatever the try (over its 1 MiB record limit,
    /// a partition key that is empty or over 256 characters); returns the others.
    async fn unsendable(&self, rows: Vec<Pending>) -> Result<(Vec<Pending>, Pass), OutboxError> {
        let mut pass = Pass::default();
        let mut kept = Vec::with_capacity(rows.len());
        for row in rows {
            let size = row.payload.len() + row.partition_key.len();
            let key_chars = row.partition_key.chars().count();
            let (reason, why) = if size > MAX_RECORD_BYTES {
                (
                    "too_large",
                    format!("record of {size} bytes is over Kinesis's 1 MiB limit"),
                )
            } else if !(1..=256).contains(&key_chars) {
                (
                    "invalid_key",
                    format!("partition key of {key_chars} characters: Kinesis takes 1 to 256"),
                )
            } else {
                kept.push(row);
                continue;
            };
            self.outbox.dead_letter(row.seq, &why).await?;
            self.metrics
                .dead_lettered
                .with_label_values(&[&row.stream, reason])
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
        let Batch { stream, seqs } = batch;
        let map = self
            .shards
            .get(&stream)
            .and_then(|s| s.map.clone())
            .filter(|m| self.cfg.aggregates(&stream) && !m.is_empty());
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
        self.backlog = Backlog::new(
            self.cfg.working_set(),
            &self.cfg.aggregate,
            self.cfg.aggregate_max_bytes,
        );
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

    /// Records what Kinesis said: deletes (or archives) what it accepted; rows that failed for
    /// the stream's sake wait for the stream's back-off without using up a try; rows Kinesis
    /// rejected use up a try (retried with their own back-off, or dead-lettered).
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
        self.backlog.call_done(&stream);
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                let failure = Failure::of_call(&e);
                let text = format!("{}", aws_sdk_kinesis::error::DisplayErrorContext(&e));
                let failed: Vec<_> = seqs.iter().map(|&s| (s, failure)).collect();
                return if failure.counts_try() {
                    self.rejected(&stream, &failed, &text).await
                } else {
                    self.stream_failed(&stream, &failed, true, &text).await
                };
            }
        };
        let waiting = self.backlog.depth(&stream);
        self.health.reached(&self.metrics, &stream, waiting);
        let mut done = Vec::with_capacity(seqs.len());
        let mut for_stream = Vec::new();
        let mut rejected = Vec::new();
        let mut stream_error = String::new();
        let mut reject_error = String::new();
        let mut rows = seqs.as_slice();
        let mut results = out.records().iter();
        for (i, &n) in counts.iter().enumerate() {
            let (carried, rest) = rows.split_at(n);
            rows = rest;
            // Rows the response does not cover (it never happens with a real server) are
            // retried rather than assumed published.
            let Some(entry) = results.next() else {
                for_stream.extend(carried.iter().map(|&s| (s, Failure::Internal)));
                stream_error = "no result entry for the record".into();
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
                    let failure = Failure::of_record(code);
                    let text = format!("{code}: {}", entry.error_message().unwrap_or(""));
                    if failure.counts_try() {
                        rejected.extend(carried.iter().map(|&s| (s, failure)));
                        reject_error = text;
                    } else {
                        for_stream.extend(carried.iter().map(|&s| (s, failure)));
                        stream_error = text;
                    }
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
        let mut pass = Pass {
            published: done.len(),
            ..Pass::default()
        };
        if for_stream.is_empty() {
            self.health.succeeded(&stream);
            self.backlog.resume(&stream);
        } else {
            pass.add(
                self.stream_failed(&stream, &for_stream, false, &stream_error)
                    .await?,
            );
        }
        pass.add(self.rejected(&stream, &rejected, &reject_error).await?);
        debug!(
            stream,
            published = done.len(),
            retried = pass.retried,
            "PutRecords done"
        );
        Ok(pass)
    }

    /// Rows that failed for the stream's sake (`whole_call`: the call itself failed): they wait,
    /// no try used, while the stream backs off; only those older than `max_age` are
    /// dead-lettered.
    async fn stream_failed(
        &mut self,
        stream: &str,
        failed: &[(i64, Failure)],
        whole_call: bool,
        error: &str,
    ) -> Result<Pass, OutboxError> {
        let mut pass = Pass::default();
        let Some(&(_, failure)) = failed.first() else {
            return Ok(pass);
        };
        self.count_failures(stream, failed);
        let now = now_ms();
        let mut waiting = Vec::with_capacity(failed.len());
        for &(seq, _) in failed {
            let Some(row) = self.backlog.get(stream, seq) else {
                continue;
            };
            let age = Duration::from_millis((now - row.created_ms).max(0) as u64);
            if age >= self.cfg.max_age {
                let why = format!(
                    "older than max_age ({:.0?}) while the stream failed: {error}",
                    self.cfg.max_age
                );
                self.dead_letter(stream, seq, "expired", &why).await?;
                pass.dead += 1;
                continue;
            }
            waiting.push(seq);
        }
        self.backlog.release(stream, &waiting);
        let depth = self.backlog.depth(stream);
        let streak = self
            .health
            .failed(&self.metrics, stream, failure, whole_call, error, depth);
        let pause = health::pause(self.cfg.base_backoff, self.cfg.max_backoff, streak);
        self.backlog.pause(stream, now + pause.as_millis() as i64);
        pass.retried = waiting.len();
        Ok(pass)
    }

    /// Rows Kinesis rejected: each uses up a try, and is retried after its own back-off or,
    /// out of tries or too old, dead-lettered.
    async fn rejected(
        &mut self,
        stream: &str,
        failed: &[(i64, Failure)],
        error: &str,
    ) -> Result<Pass, OutboxError> {
        let mut pass = Pass::default();
        if failed.is_empty() {
            return Ok(pass);
        }
        self.count_failures(stream, failed);
        let now = now_ms();
        let mut retry = Vec::with_capacity(failed.len());
        let mut earliest = i64::MAX;
        for &(seq, failure) in failed {
            let Some(row) = self.backlog.get(stream, seq) else {
                continue;
            };
            let tries = row.attempts + 1;
            let age = Duration::from_millis((now - row.created_ms).max(0) as u64);
            if tries >= i64::from(self.cfg.max_attempts) || age >= self.cfg.max_age {
                let why = format!("gave up after {tries} tries over {age:.0?}: {error}");
                self.dead_letter(stream, seq, failure.label(), &why).await?;
                pass.dead += 1;
                continue;
            }
            let at = now + backoff(&self.cfg, tries).as_millis() as i64;
            earliest = earliest.min(at);
            self.backlog.retry_at(stream, seq, at);
            retry.push(seq);
        }
        self.outbox.retry(&retry, earliest, error).await?;
        pass.retried = retry.len();
        Ok(pass)
    }

    fn count_failures(&self, stream: &str, failed: &[(i64, Failure)]) {
        let mut by_kind: HashMap<Failure, u64> = HashMap::new();
        for &(_, f) in failed {
            *by_kind.entry(f).or_default() += 1;
        }
        for (f, n) in by_kind {
            if f == Failure::Throttled {
                self.metrics
                    .throttled
                    .with_label_values(&[stream])
                    .inc_by(n);
            }
            self.metrics
                .failed
                .with_label_values(&[stream, f.label()])
                .inc_by(n);
        }
    }

    /// Moves a row to the dead letters (counted; logged as `Health::dead_lettered` allows).
    async fn dead_letter(
        &mut self,
        stream: &str,
        seq: i64,
        reason: &'static str,
        why: &str,
    ) -> Result<(), OutboxError> {
        self.outbox.dead_letter(seq, why).await?;
        let id = self
            .backlog
            .get(stream, seq)
            .map(|r| r.id.clone())
            .unwrap_or_default();
        self.backlog.remove(stream, seq);
        self.metrics
            .dead_lettered
            .with_label_values(&[stream, reason])
            .inc();
        self.health.dead_lettered(stream, &id, reason, why);
        Ok(())
    }

    /// Outbox depth and oldest age per stream, from the relay's working set: no query, so the
    /// gauges stay cheap while the outbox grows (a `COUNT(*)` every second scanned it whole).
    /// Returns the events waiting, all streams.
    fn update_gauges(&mut self) -> usize {
        let now = now_ms();
        let Relay {
            backlog,
            health,
            metrics,
            ..
        } = self;
        let mut total = 0;
        for (stream, depth, oldest) in backlog.depths() {
            total += depth;
            health.waiting(stream, depth);
            metrics
                .outbox_depth
                .with_label_values(&[stream])
                .set(depth as i64);
            let age = oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
            metrics
                .outbox_oldest_age
                .with_label_values(&[stream])
                .set(age);
        }
        total
    }
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
    cap.mul_f64(health::random_unit())
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
}
