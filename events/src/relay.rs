//! The relay: drains the outbox into Kinesis. It takes the rows the outbox's group writer just
//! committed from memory, or reads new rows by `seq` (cheap range reads) when that hand-off does
//! not cover them, keeps them in memory ([`Backlog`]), and sends PutRecords batches of at most 500
//! records and 5 MiB, several calls in flight at once, keeping each partition key's order (see
//! `backlog`). Failures are classified ([`crate::failure::Failure`]): an outage, throttling or any other failure
//! about the stream pauses the stream and probes it ([`health`]) without using up the events'
//! tries; only Kinesis rejecting a record uses up one of its `max_attempts` tries (retried with
//! exponential backoff and full jitter). Events are dead-lettered out of tries, at `max_age`, or
//! at once when no call can carry them. With PostgreSQL, each stream is relayed by the one
//! replica holding its lease, and the streams are shared out among the replicas ([`leases`]).
//!
//! The parts: this module is the run loop (reading the outbox into the [`Backlog`], starting
//! calls, settling them as they finish); [`leases`] shares the streams out; [`calls`] turns a
//! batch into a PutRecords call and sends it, [`packing`] lays rows out as records (KPL
//! aggregates by shard, or one per row), [`shards`] keeps the streams' shard maps, [`limits`]
//! keeps each shard under Kinesis's write limits, and [`settle`] records what Kinesis said.
//!
//! On streams configured for aggregation, a call's rows are packed into KPL aggregated records
//! ([`crate::aggregate`]), one per shard and up to `max_bytes` each, by the stream's shard map
//! (`ListShards`, refreshed every minute and whenever Kinesis puts an aggregate on another shard
//! than the map said). A row travels and settles with its aggregate: if the aggregate fails, all
//! its rows are retried. Without a shard map (`ListShards` failing) rows go out one per record.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use strangler_store::{LeaseSet, Outbox, Pending, StoreError};

use crate::aggregate;
use crate::backlog::Backlog;
use crate::health::{self, Health};
use crate::kinesis::LazyClient;
use crate::metrics::Metrics;
use crate::now_ms;
use calls::Sent;
pub use limits::ShardLimits;
use shards::Shards;

mod calls;
mod leases;
mod limits;
mod packing;
mod settle;
mod shards;
mod usage;

/// Kinesis's limit for one record.
const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Rows per read of the outbox.
const READ_LIMIT: i64 = 1_000;
/// PutRecords calls in flight at once.
const MAX_CALLS: usize = 4;
/// The kind of the relay's leases in the store: one per stream, `relay:<stream>`.
const RELAY: &str = "relay";
/// How often the relay renews its view of the streams' leases, takes its share and hands back
/// what is over it.
const BALANCE_EVERY: Duration = Duration::from_secs(1);
/// Events waiting at some point, all streams, after which the drain gives the store's cache
/// memory back (`Store::shrink`).
const SHRINK_AFTER: usize = 10_000;

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Tries before an event Kinesis rejects is dead-lettered. Only rejections of the record
    /// use up tries ([`crate::failure::Failure::counts_try`]): outages and throttling back off the stream.
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
    /// `Store::connect_with`).
    pub memory: usize,
    /// Each shard's write limits (`events.shard_records_per_second`, `shard_bytes_per_second`;
    /// Kinesis's 1,000 records and 1 MiB per second by default).
    pub shard_limits: ShardLimits,
}

/// Why the relay started over: the store failed, or a call's task did.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("PutRecords task failed: {0}")]
    Call(#[from] tokio::task::JoinError),
}

impl RelayError {
    /// The relay's lease is another replica's now: stop, do not retry.
    fn lease_lost(&self) -> bool {
        matches!(self, RelayError::Store(StoreError::LeaseLost(_)))
    }
}

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
            memory: strangler_store::DEFAULT_MEMORY,
            shard_limits: ShardLimits::default(),
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
    /// Streams' shard maps (aggregated streams, and every stream under per-shard limits).
    shards: HashMap<String, Shards>,
    /// Each shard's room under its write limits.
    buckets: limits::Buckets,
    /// What was sent each stream, not yet written to the store.
    usage: usage::Meter,
    /// Each stream's failures in a row, up or down, and its incident log lines.
    health: Health,
    /// The streams' leases while running (PostgreSQL: this replica's share; SQLite: all).
    leases: Option<LeaseSet>,
    /// The streams this replica relays; `None`: every stream (SQLite, or [`Relay::pass`]).
    relaying: Option<HashSet<String>>,
    /// Streams seen in the outbox and added to the leases' set, and those not added yet.
    known: HashSet<String>,
    unknown: HashSet<String>,
}

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
            buckets: limits::Buckets::default(),
            usage: usage::Meter::default(),
            health: Health::default(),
            leases: None,
            relaying: None,
            known: HashSet::new(),
            unknown: HashSet::new(),
        }
    }

    /// Runs until `shutdown` turns true (or its sender is dropped). Calls in flight then are
    /// waited for (up to 5 s), so what Kinesis accepted is not sent again after a restart, and
    /// the streams' leases are handed back. With PostgreSQL it relays only the streams whose
    /// leases it holds (see [`balance`](Relay::balance)); a lost session loses them all and
    /// stops it at once (calls in flight abandoned, their rows sent again by the leases' next
    /// holders, which wait until this replica has stopped), and it joins again.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let set = loop {
                tokio::select! {
                    r = self.outbox.store().lease_set(RELAY) => match r {
                        Ok(set) => break set,
                        Err(e) => {
                            warn!(error = %e, "Relay cannot reach the outbox store; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    },
                    _ = shutdown.changed() => return,
                }
            };
            let lost = set.on_lost();
            let shared = self.outbox.store().shared();
            // Shared store: nothing is relayed before a round hands this replica its streams.
            self.relaying = shared.then(HashSet::new);
            self.leases = Some(set);
            info!(shared, "Relay running");
            let mut calls: JoinSet<Sent> = JoinSet::new();
            let stopped = tokio::select! {
                stopped = self.relay(&mut shutdown, &mut calls) => stopped,
                () = lost => false,
            };
            if stopped {
                self.finish(calls).await;
                self.hand_back().await;
                return;
            }
            calls.abort_all();
            self.reset(&mut calls).await;
            self.show_leases(&[], false);
            self.leases = None;
            warn!("Relay lost its leases and stopped sending; joining again");
        }
    }

    /// The relay's loop, while the leases are held: returns `true` on shutdown, `false` when a
    /// write finds a lease gone.
    async fn relay(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        calls: &mut JoinSet<Sent>,
    ) -> bool {
        // New rows may be waiting in the store (woken by an enqueue, or at start).
        let mut dirty = true;
        let mut last_read = Instant::now() - self.cfg.poll;
        let mut last_gauges = Instant::now() - Duration::from_secs(10);
        // The most events waiting since the store's caches were last given back.
        let mut peak = 0;
        // Archived events are pruned once a minute.
        let mut last_prune = Instant::now() - Duration::from_secs(3600);
        let mut last_usage = Instant::now();
        let mut last_round = Instant::now() - BALANCE_EVERY;
        while !*shutdown.borrow() {
            // A stream seen for the first time gets its lease at once.
            let due = if self.unknown.is_empty() {
                BALANCE_EVERY
            } else {
                self.cfg.linger
            };
            if last_round.elapsed() >= due {
                last_round = Instant::now();
                match self.balance(calls).await {
                    Ok(true) => dirty = true,
                    Ok(false) => {}
                    Err(e) if e.lease_lost() => return false,
                    Err(e) => {
                        warn!(error = %e, "Relay cannot renew or share out the streams' leases; trying again");
                    }
                }
            }
            let since_read = last_read.elapsed();
            // The idle poll reads the store itself: rows that reached it any other way (another
            // process writing the same file, say) show up within `poll` too.
            let polled = since_read >= self.cfg.poll;
            if (dirty && since_read >= self.cfg.linger) || self.more || polled {
                last_read = Instant::now();
                dirty = false;
                if let Err(e) = self.load(polled).await {
                    if e.lease_lost() {
                        return false;
                    }
                    warn!(error = %e, "Relay cannot read the outbox; retrying");
                    self.reset(calls).await;
                    tokio::time::sleep(self.cfg.poll).await;
                    continue;
                }
            }
            self.ready_client().await;
            self.refresh_shards().await;
            let send_wait = self.launch(calls, Some(self.cfg.linger));
            if last_gauges.elapsed() >= Duration::from_secs(1) {
                let waiting = self.update_gauges();
                last_gauges = Instant::now();
                // A large backlog has drained: the store's caches it filled go back.
                peak = peak.max(waiting);
                if waiting == 0 && peak >= SHRINK_AFTER {
                    peak = 0;
                    if let Err(e) = self.outbox.store().shrink().await {
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
            if last_usage.elapsed() >= Duration::from_secs(10) {
                self.write_usage().await;
                last_usage = Instant::now();
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
                        if e.lease_lost() {
                            return false;
                        }
                        warn!(error = %e, "Relay cannot record a PutRecords result; re-reading the outbox");
                        self.reset(calls).await;
                    }
                }
                _ = self.outbox.store().committed().notified() => dirty = true,
                _ = tokio::time::sleep(wait) => {}
                // A dropped sender counts as shutdown (no busy loop on a closed channel).
                r = shutdown.changed() => if r.is_err() { break },
            }
        }
        true
    }

    /// At shutdown: settles the calls in flight (up to 5 s) and writes the usage figures.
    async fn finish(&mut self, mut calls: JoinSet<Sent>) {
        let finish = async {
            while let Some(done) = calls.join_next().await {
                if let Err(e) = self.settle_joined(done).await {
                    warn!(error = %e, "Relay cannot record a PutRecords result at shutdown");
                }
            }
            self.write_usage().await;
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
    pub async fn pass(&mut self) -> Result<Pass, RelayError> {
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
    async fn load(&mut self, from_store: bool) -> Result<Pass, RelayError> {
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
        let read_to = rows.last().map(|r| r.seq);
        let rows = self.own(rows);
        let (rows, mut pass) = self.unsendable(rows).await?;
        self.arrived(&rows);
        self.backlog.add(rows);
        // Rows of other replicas' streams are read past too.
        if let Some(to) = read_to {
            self.backlog.cursor = self.backlog.cursor.max(to);
        }
        for (stream, from) in self.backlog.lagging() {
            let rows = self
                .outbox
                .read_stream(&stream, from, self.backlog.cursor, READ_LIMIT)
                .await?;
            debug!(stream, from, rows = rows.len(), "Lagging stream read back");
            let complete = (rows.len() as i64) < READ_LIMIT;
            let (rows, p) = self.unsendable(rows).await?;
            pass.add(p);
            self.arrived(&rows);
            self.backlog.catch_up(&stream, rows, complete);
        }
        Ok(pass)
    }

    /// Counts rows entering the relay as the streams' demand (`strangler capacity`).
    fn arrived(&mut self, rows: &[Pending]) {
        for r in rows {
            let bytes = (r.payload.len() + r.partition_key.len()) as i64;
            self.usage.arrived(&r.stream, r.created_ms, bytes);
        }
    }

    /// Dead-letters the rows Kinesis would reject whatever the try (over its 1 MiB record limit,
    /// a partition key that is empty or over 256 characters); returns the others.
    async fn unsendable(&self, rows: Vec<Pending>) -> Result<(Vec<Pending>, Pass), RelayError> {
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
            self.outbox_for(&row.stream)
                .dead_letter(row.seq, &why)
                .await?;
            self.metrics
                .dead_lettered
                .with_label_values(&[&row.stream, reason])
                .inc();
            pass.dead += 1;
        }
        Ok((kept, pass))
    }

    /// Writes what was sent since the last write to the store's usage table (lost on a crash:
    /// at most 10 s of figures, which are estimates anyway).
    async fn write_usage(&mut self) {
        let minutes = self.usage.take();
        if minutes.is_empty() {
            return;
        }
        if let Err(e) = self.outbox.store().usage().add(&minutes).await {
            warn!(error = %e, "Cannot record the streams' usage; it is left out of `strangler capacity`");
        }
    }

    /// After an error the in-memory view may no longer match the store: wait for the calls in
    /// flight, forget everything, and read the outbox again from the start (rows whose outcome
    /// was not recorded are sent again: at least once, deduped by id downstream).
    async fn reset(&mut self, calls: &mut JoinSet<Sent>) {
        while calls.join_next().await.is_some() {}
        self.health.calls_dropped();
        self.backlog = Backlog::new(
            self.cfg.working_set(),
            &self.cfg.aggregate,
            self.cfg.aggregate_max_bytes,
        );
        self.more = false;
    }

    /// Outbox depth and oldest age per stream, from the relay's working set: no query, so the
    /// gauges stay cheap while the outbox grows (a `COUNT(*)` every second scanned it whole).
    /// A stalled stream (see `health`) is logged and started afresh. Returns the events waiting,
    /// all streams.
    fn update_gauges(&mut self) -> usize {
        let now = now_ms();
        let stall_after = health::stall_after(self.cfg.max_backoff);
        let Relay {
            backlog,
            health,
            metrics,
            ..
        } = self;
        let mut total = 0;
        let mut stalled = Vec::new();
        for (stream, depth, oldest) in backlog.depths() {
            total += depth;
            if let Some(stall) =
                health.check_stall(metrics, stream, depth, Instant::now(), stall_after)
            {
                stalled.push((stream.to_string(), depth, stall));
            }
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
        for (stream, waiting, stall) in stalled {
            let said = backlog.unstick(&stream, now);
            warn!(
                stream,
                waiting,
                idle_for = %format_args!("{:.1?}", stall.idle_for),
                bookkeeping = said,
                "Kinesis stream stalled: events wait and no call was made; sending starts afresh"
            );
        }
        total
    }
}
