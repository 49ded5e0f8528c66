//! The other end of strangler's dual-write: a Kinesis consumer that builds a service's state
//! from the events the proxy publishes (CQRS: the read model is a projection of the writes).
//!
//! [`Consumer::run`] reads a stream from every shard: `ListShards`, `GetShardIterator` from the
//! stored checkpoint (`AFTER_SEQUENCE_NUMBER`, else `TRIM_HORIZON`), `GetRecords` with back-off on
//! empty reads and on throttling, child shards only after their parents are read to the end
//! ([`lineage`]); or, with [`Config::enhanced_fan_out`], pushed by `SubscribeToShard` to a
//! registered stream consumer (`fanout`). Each record is taken apart when it is a KPL aggregate ([`event`]); each event
//! whose CloudEvents `id` was applied before is skipped; the others go to the application's
//! [`Handler`] inside one database transaction per batch that also stores the shard's checkpoint
//! and the applied ids ([`checkpoints`]). A crash (even `kill -9`) rolls back the batch it was in
//! and the next run reads it again: nothing is applied twice, nothing is skipped.
//!
//! The database is the application's own (SQLite or PostgreSQL through `sqlx::Any`, so one
//! handler's SQL serves both: write `$1` parameters). The name keys the checkpoints and the
//! applied ids, so two applications (a projector and a notifier) read the same stream
//! independently (fan-out). On PostgreSQL, instances of one name share the shards through leases
//! ([`leases`], decided by [`balance`]): each shard is read by one instance at a time, a dead
//! instance's shards move to the others after [`Config::failover`], and a checkpoint from an
//! instance that lost its lease is refused. On SQLite one instance reads every shard. No network
//! code but Kinesis's and the database's; no proxy code.

pub mod balance;
pub mod checkpoints;
pub mod event;
mod fanout;
pub mod leases;
pub mod lineage;
pub mod metrics;
mod progress;
mod reader;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use sqlx::{AnyConnection, AnyPool};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

pub use event::Event;
pub use metrics::ProgressMetrics;
pub use progress::{Progress, ShardProgress};

/// A handler's error: the batch is rolled back and tried again after a back-off (the shard waits:
/// events of a key are never applied out of order, and none is skipped).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A handler's work on one event: `Box::pin(async move { … })`.
pub type Applying<'a> = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'a>>;

/// What the application does with each event, inside the batch's transaction: write its state
/// through `tx` (and nothing outside it that cannot be done twice).
pub trait Handler: Send + Sync + 'static {
    fn apply<'a>(&'a self, tx: &'a mut AnyConnection, event: &'a Event) -> Applying<'a>;
}

/// How a consumer reads.
#[derive(Debug, Clone)]
pub struct Config {
    /// The stream, by name or ARN.
    pub stream: String,
    /// The consumer's name: it keys the checkpoints and the applied ids.
    pub name: String,
    /// Records per `GetRecords` call (Kinesis allows up to 10,000): the most one transaction
    /// applies.
    pub batch: i32,
    /// The longest wait between two reads of a shard that is caught up (the wait starts at
    /// 200 ms and doubles while reads come back empty). Kinesis allows 5 reads per second per
    /// shard, shared by every consumer of the stream.
    pub idle_wait: Duration,
    /// How often the shard listing is read again for new shards (after a reshard). A shard
    /// read to its end triggers a listing at once.
    pub shard_sync: Duration,
    /// How long applied ids are remembered: an event re-published within it is skipped, after
    /// it applied again. Longer than the stream's retention is enough for retries; a replay of
    /// older events is meant to be applied.
    pub dedupe_for: Duration,
    /// Read through enhanced fan-out (a registered stream consumer named `name`, records pushed
    /// by `SubscribeToShard`, 2 MB/s per shard of its own) instead of polling. A server without
    /// it (or refusing it) is polled, with a warning.
    pub enhanced_fan_out: bool,
    /// This instance's name in the lease table (PostgreSQL): unique among the instances of one
    /// consumer name. Default: the host's name and the process id.
    pub instance: String,
    /// How long a lease whose holder stopped renewing it stays its holder's (PostgreSQL): a
    /// killed instance's shards move after this. Leases are renewed three times in it.
    pub failover: Duration,
}

impl Config {
    pub fn new(stream: impl Into<String>, name: impl Into<String>) -> Config {
        Config {
            stream: stream.into(),
            name: name.into(),
            batch: 1000,
            idle_wait: Duration::from_secs(1),
            shard_sync: Duration::from_secs(10),
            dedupe_for: Duration::from_secs(7 * 86_400),
            enhanced_fan_out: false,
            instance: default_instance(),
            failover: Duration::from_secs(10),
        }
    }

    /// The stream's name (what checkpoints are stored under) whether it is given by name or ARN.
    fn stream_name(&self) -> &str {
        self.stream
            .rsplit_once(":stream/")
            .map_or(self.stream.as_str(), |(_, name)| name)
    }
}

/// The host's name and this process's id.
fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}-{}", std::process::id())
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("consumer database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
}

/// Opens the application's database for a consumer: `sqlite://path` (created when missing, WAL
/// so readers of the state never wait for a batch) or `postgres://…`.
pub async fn connect(url: &str) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    let sqlite = url.starts_with("sqlite:");
    let url = if sqlite && !url.contains("mode=") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}mode=rwc")
    } else {
        url.to_string()
    };
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(if sqlite { 2 } else { 8 })
        .connect(&url)
        .await?;
    if sqlite {
        // Switching a new file to WAL takes it whole for an instant, and SQLite answers "busy"
        // at once (no busy timeout) when another process opens it at the same time (a service
        // and its consumer starting together): try again for up to 10 s.
        let mut tries = 0;
        loop {
            match sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
            {
                Ok(_) => break,
                Err(e) if busy(&e) && tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(pool)
}

/// SQLite's SQLITE_BUSY (5) or one of its extended codes.
fn busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| c & 0xff == 5)
}

/// Whether the pool is PostgreSQL (else SQLite): for the few statements whose SQL differs
/// (`BIGSERIAL` against `INTEGER PRIMARY KEY AUTOINCREMENT`, say).
pub fn is_postgres(pool: &AnyPool) -> bool {
    pool.connect_options()
        .database_url
        .scheme()
        .starts_with("postgres")
}

/// A consumer of one stream.
pub struct Consumer {
    client: Client,
    pool: AnyPool,
    config: Arc<Config>,
    progress: Arc<Progress>,
}

impl Consumer {
    /// A consumer writing to `pool` (its tables are created when missing).
    pub async fn new(
        client: Client,
        pool: AnyPool,
        config: Config,
    ) -> Result<Consumer, ConsumerError> {
        checkpoints::migrate(&pool).await?;
        Ok(Consumer {
            client,
            pool,
            config: Arc::new(config),
            progress: Arc::default(),
        })
    }

    /// Counts and per-shard positions, updated as batches commit.
    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    /// Shows this consumer's progress on `registry` (see [`metrics`]): what the application
    /// serves on its `/metrics` then includes the consumer's lag and counts.
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        registry.register(Box::new(ProgressMetrics::new(
            &self.config.name,
            self.config.stream_name(),
            self.progress(),
        )))
    }

    /// Reads until `shutdown` turns true (each shard stops after the batch it is applying), or
    /// the stream cannot be read at all (deleted, access denied).
    pub async fn run<H: Handler>(
        self,
        handler: H,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), ConsumerError> {
        let handler = Arc::new(handler);
        let stream = self.config.stream_name().to_string();
        let mut running: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
        let mut readers: JoinSet<(String, Result<reader::End, ConsumerError>)> = JoinSet::new();
        let mut last_prune = None::<tokio::time::Instant>;
        let mut listing_failures = 0u32;
        let mut leases = is_postgres(&self.pool).then(|| {
            let failover = u64::try_from(self.config.failover.as_millis()).unwrap_or(u64::MAX);
            leases::Leases::new(
                self.pool.clone(),
                &self.config.name,
                &stream,
                &self.config.instance,
                failover,
            )
        });
        let fan_out: Option<Arc<str>> = if self.config.enhanced_fan_out {
            match fanout::register(&self.client, &self.config.stream, &self.config.name).await {
                Ok(arn) => Some(arn.into()),
                Err(e) => {
                    warn!(stream = %stream, error = %e, "No enhanced fan-out; polling instead");
                    None
                }
            }
        } else {
            None
        };
        info!(stream = %stream, consumer = %self.config.name, enhanced_fan_out = fan_out.is_some(), "Consumer started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            match self.list_shards().await {
                Ok(shards) => {
                    let mut stored = match checkpoints::load(&self.pool, &self.config.name, &stream)
                        .await
                    {
                        Ok(stored) => stored,
                        Err(e) => {
                            listing_failures += 1;
                            warn!(error = %e, "Cannot read the checkpoints; trying again");
                            tokio::time::sleep(Duration::from_secs(1 << listing_failures.min(5)))
                                .await;
                            continue;
                        }
                    };
                    listing_failures = 0;
                    let finished = stored
                        .iter()
                        .filter(|(_, c)| c.finished)
                        .map(|(id, _)| id.clone())
                        .collect();
                    let ready = lineage::ready(&shards, &finished);
                    // With leases: only the shards this instance holds.
                    let held = match &mut leases {
                        None => None,
                        Some(l) => {
                            Some(self.lease_round(l, &ready, &mut running, &mut stored).await)
                        }
                    };
                    for shard in ready {
                        if running.contains_key(&shard.id)
                            || held.as_ref().is_some_and(|h| !h.contains(&shard.id))
                        {
                            continue;
                        }
                        let at = stored.get(&shard.id).cloned().unwrap_or_default();
                        let r = reader::Reader {
                            client: self.client.clone(),
                            pool: self.pool.clone(),
                            config: Arc::clone(&self.config),
                            progress: Arc::clone(&self.progress),
                            shard_id: shard.id.clone(),
                            hash_range: shard.hash_range,
                            lease: leases.as_ref().map(leases::Leases::me),
                        };
                        let (h, stop) = (Arc::clone(&handler), shutdown.clone());
                        let id = shard.id.clone();
                        let arn = fan_out.clone();
                        let task = readers.spawn(async move {
                            let end = match arn {
                                Some(arn) => r.run_fanout(h, at, stop, &arn).await,
                                None => r.run(h, at, stop).await,
                            };
                            (id, end)
                        });
                        running.insert(shard.id.clone(), task);
                    }
                }
                Err(ListError::Fatal(reason)) => {
                    readers.abort_all();
                    return Err(ConsumerError::Stream { stream, reason });
                }
                Err(ListError::Retry(reason)) => {
                    listing_failures += 1;
                    warn!(stream = %stream, error = %reason, failures = listing_failures, "Cannot list the stream's shards; trying again");
                }
            }
            if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
                last_prune = Some(tokio::time::Instant::now());
                let keep = self.config.dedupe_for.as_millis() as i64;
                if let Err(e) = checkpoints::prune(&self.pool, &self.config.name, keep).await {
                    warn!(error = %e, "Cannot forget old applied event ids");
                }
            }
            let wait = if listing_failures > 0 {
                Duration::from_secs(1 << listing_failures.min(5))
            } else if leases.is_some() {
                // Leases are renewed three times within the failover time.
                self.config.shard_sync.min(self.config.failover / 3)
            } else {
                self.config.shard_sync
            };
            tokio::select! {
                Some(done) = readers.join_next() => {
                    let Ok((id, end)) = done else { continue };
                    running.remove(&id);
                    match end {
                        Ok(reader::End::Finished) => info!(shard = %id, "Shard read to its end; its children may start"),
                        Ok(reader::End::Stopped) => {}
                        Err(e) => {
                            readers.abort_all();
                            return Err(e);
                        }
                    }
                }
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
        while readers.join_next().await.is_some() {}
        if let Some(l) = &leases
            && let Err(e) = l.release().await
        {
            warn!(error = %e, "Cannot hand the shard leases back; the others take them after the failover time");
        }
        info!(stream = %stream, consumer = %self.config.name, "Consumer stopped");
        Ok(())
    }

    /// One lease round: the ready shards this instance holds now, after its readers of shards
    /// it no longer holds are stopped (their batch in flight rolls back; the new holder reads it
    /// again). A shard just taken starts from the last batch its previous holder committed, so
    /// `stored` is read again after a take. None held when the table or the checkpoints could
    /// not be read: nothing new starts then, and the fences keep a lease that moved meanwhile
    /// from being checkpointed.
    async fn lease_round(
        &self,
        leases: &mut leases::Leases,
        ready: &[&lineage::Shard],
        running: &mut HashMap<String, tokio::task::AbortHandle>,
        stored: &mut HashMap<String, checkpoints::Checkpoint>,
    ) -> HashSet<String> {
        let ids: Vec<&str> = ready.iter().map(|s| s.id.as_str()).collect();
        let r = match leases.round(&ids).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "Cannot renew or read the shard leases; trying again");
                return HashSet::new();
            }
        };
        self.progress.leases(r.held.len(), r.changes);
        running.retain(|id, task| {
            let keep = r.held.contains(id) || !ids.contains(&id.as_str());
            if !keep {
                info!(shard = %id, "Shard lease moved to another instance; its reader stops");
                task.abort();
            }
            keep
        });
        if r.changes > 0 {
            match checkpoints::load(&self.pool, &self.config.name, self.config.stream_name()).await
            {
                Ok(fresh) => *stored = fresh,
                Err(e) => {
                    warn!(error = %e, "Cannot read the checkpoints; trying again");
                    return HashSet::new();
                }
            }
        }
        r.held
    }

    /// Every shard of the stream (open and closed ones still in retention).
    async fn list_shards(&self) -> Result<Vec<lineage::Shard>, ListError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let call = self.client.list_shards();
            let call = match &token {
                Some(t) => call.next_token(t),
                None if self.config.stream.starts_with("arn:") => {
                    call.stream_arn(&self.config.stream)
                }
                None => call.stream_name(&self.config.stream),
            };
            let page = call.send().await.map_err(|e| {
                let text = aws_sdk_kinesis::error::DisplayErrorContext(&e).to_string();
                match e.as_service_error() {
                    Some(s)
                        if s.is_resource_not_found_exception()
                            || s.is_access_denied_exception() =>
                    {
                        ListError::Fatal(text)
                    }
                    _ => ListError::Retry(text),
                }
            })?;
            out.extend(page.shards().iter().map(|s| lineage::Shard {
                id: s.shard_id().to_string(),
                parent: s.parent_shard_id().map(str::to_string),
                adjacent_parent: s.adjacent_parent_shard_id().map(str::to_string),
                hash_range: s.hash_key_range().and_then(|r| {
                    Some((
                        r.starting_hash_key().parse().ok()?,
                        r.ending_hash_key().parse().ok()?,
                    ))
                }),
            }));
            match page.next_token() {
                Some(t) => token = Some(t.to_string()),
                None => return Ok(out),
            }
        }
    }
}

enum ListError {
    Fatal(String),
    Retry(String),
}

#[cfg(test)]
mod tests {
    /// Several openers of one new SQLite file at once (a service and its consumers starting
    /// together) all get a WAL database; SQLite answers the losers "busy" at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn openers_of_one_new_sqlite_file_at_once_all_succeed() {
        for round in 0..5 {
            let file = std::env::temp_dir().join(format!(
                "strangler-consumer-open-{}-{round}.db",
                std::process::id()
            ));
            let url = format!("sqlite://{}", file.display());
            let opens: Vec<_> = (0..6)
                .map(|_| {
                    let url = url.clone();
                    tokio::spawn(async move { super::connect(&url).await.map(|_| ()) })
                })
                .collect();
            for o in opens {
                o.await.unwrap().unwrap();
            }
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
        }
    }
}
