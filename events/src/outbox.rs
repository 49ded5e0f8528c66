//! The durable outbox: events are committed here (SQLite by default, PostgreSQL for replicas)
//! before the relay sends them to Kinesis. Concurrent enqueues are grouped into one transaction,
//! so throughput grows with concurrency while each caller still waits for its own commit. On
//! SQLite the group writer is a thread with a connection of its own (`sqlite_writer`) that hands
//! the rows it commits straight to the relay ([`HandOff`]); on PostgreSQL it is a task on sqlx,
//! and the relay reads new rows back from the shared store.
//! Published rows are deleted, or archived for a retention period; rows that exhaust their tries
//! move to the dead-letter table with the reason, until re-driven.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox store {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("outbox store: {0}")]
    Db(#[from] sqlx::Error),
    #[error("outbox store {url}: {source}")]
    Writer {
        url: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("outbox writer stopped")]
    Closed,
    #[error("outbox write: {0}")]
    Write(String),
    #[error("store URL `{0}` is neither sqlite:… nor postgres://…")]
    BadUrl(String),
}

/// An event to store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub route: String,
    pub stream: String,
    pub partition_key: String,
    /// The CloudEvents JSON as sent to Kinesis.
    pub payload: Vec<u8>,
}

/// A stored event waiting to be published.
#[derive(Debug, Clone)]
pub struct Pending {
    pub seq: i64,
    pub id: String,
    pub stream: String,
    pub partition_key: String,
    pub payload: Vec<u8>,
    pub attempts: i64,
    pub created_ms: i64,
    pub next_attempt_ms: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamDepth {
    pub stream: String,
    pub depth: i64,
    pub oldest_age_seconds: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    pub seq: i64,
    pub id: String,
    pub stream: String,
    pub partition_key: String,
    pub attempts: i64,
    pub reason: String,
    pub dead_ms: i64,
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same sqlx expression against whichever pool the outbox uses.
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}

/// A `Pending` from a row of `SELECT seq, id, stream, partition_key, payload, attempts,
/// created_ms, next_attempt_ms` (either database's row type).
macro_rules! pending {
    ($r:expr) => {
        Pending {
            seq: $r.get(0),
            id: $r.get(1),
            stream: $r.get(2),
            partition_key: $r.get(3),
            payload: $r.get(4),
            attempts: $r.get(5),
            created_ms: $r.get(6),
            next_attempt_ms: $r.get(7),
        }
    };
}

/// The outbox. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    pool: Pool,
    /// The relay's reads, on connections of their own (its deletes and retries go through the
    /// writer).
    relay_pool: Pool,
    writer: mpsc::Sender<Write>,
    /// Signalled after each group commit (the relay waits on it).
    pub committed: Arc<Notify>,
    /// True when replicas share the store (PostgreSQL): the relay then takes a leader lock.
    pub shared: bool,
    /// Rows the group writer committed, handed to the relay in memory (SQLite: one process, and
    /// `seq` values known at commit), so the relay need not read back what was just written.
    handoff: Option<Arc<Mutex<HandOff>>>,
}

/// The group writer's committed rows on their way to the relay. The store stays the truth: the
/// relay takes these rows only when they continue its cursor without a gap, and reads the store
/// otherwise (rows added by other paths, rows from before a start, rows not kept here because
/// the relay was not taking them).
#[derive(Default)]
pub(crate) struct HandOff {
    rows: Vec<Pending>,
    bytes: usize,
    /// The highest `seq` the group writer committed.
    last_seq: i64,
    /// Rows may have reached the store another way (a start, a re-drive, a bulk load).
    stale: bool,
    /// The most payload bytes it holds (an eighth of the memory budget); beyond that the relay
    /// reads the store.
    max_bytes: usize,
}

/// Rows the hand-off holds at most; beyond that the relay reads the store.
const HANDOFF_ROWS: usize = 8_192;

pub(crate) const MAX_GROUP: usize = 512;

/// What the single writer does, with the caller waiting for its commit.
pub(crate) enum Write {
    /// Store an event.
    Enqueue(NewEvent, oneshot::Sender<Result<(), String>>),
    /// Remove published events (archive them with `keep`).
    Published(Vec<i64>, bool, oneshot::Sender<Result<(), String>>),
    /// Record a failed try of events.
    Retry(Retry, oneshot::Sender<Result<(), String>>),
    /// Give back the writer connection's page cache (after a backlog has drained).
    Shrink(oneshot::Sender<Result<(), String>>),
}

/// A failed try of events: not tried again before `next_ms`.
pub(crate) struct Retry {
    pub seqs: Vec<i64>,
    pub next_ms: i64,
    pub error: String,
}

/// One group commit's work, split from the writes taken.
pub(crate) struct Group {
    pub events: Vec<NewEvent>,
    pub published: Vec<(Vec<i64>, bool)>,
    pub retries: Vec<Retry>,
    /// Give back the page cache after the commit.
    pub shrink: bool,
    replies: Vec<oneshot::Sender<Result<(), String>>>,
}

impl Group {
    pub(crate) fn split(batch: &mut Vec<Write>) -> Group {
        let mut g = Group {
            events: Vec::with_capacity(batch.len()),
            published: Vec::new(),
            retries: Vec::new(),
            shrink: false,
            replies: Vec::with_capacity(batch.len()),
        };
        for w in batch.drain(..) {
            let reply = match w {
                Write::Enqueue(ev, reply) => {
                    g.events.push(ev);
                    reply
                }
                Write::Published(seqs, keep, reply) => {
                    g.published.push((seqs, keep));
                    reply
                }
                Write::Retry(retry, reply) => {
                    g.retries.push(retry);
                    reply
                }
                Write::Shrink(reply) => {
                    g.shrink = true;
                    reply
                }
            };
            g.replies.push(reply);
        }
        g
    }

    /// Tells every caller how the commit went.
    pub(crate) fn reply(self, result: &Result<(), String>) {
        for reply in self.replies {
            let _ = reply.send(result.clone());
        }
    }
}

/// When enqueues overlap (the last group had more than one event), the writer waits this long
/// before committing, so that one commit (one fsync) carries the whole burst instead of a
/// trickle of small groups; a lone enqueue is committed at once.
pub(crate) const GATHER: Duration = Duration::from_millis(1);

/// PostgreSQL advisory lock keys. The enqueue lock is taken shared by every transaction that
/// adds outbox rows, before it draws `seq` values (so replicas' enqueues run side by side), and
/// exclusive by the relay for an instant (`BARRIER`) to learn up to which `seq` every row is
/// visible (see `read_after`). The relay lock is held for its session by the replica that relays.
pub(crate) const ENQUEUE_LOCK: i64 = 7_405_327_111;
const RELAY_LOCK: i64 = 7_405_327_110;

/// Waits for every transaction adding rows to finish (and holds new ones back for an instant),
/// then reads the highest `seq` stored: every row up to it is committed or will never exist,
/// since `seq` values drawn later are higher. One round trip; a transaction that holds the
/// lock for longer than 10 s fails the read (retried) instead of stalling the relay.
static BARRIER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "BEGIN; SET LOCAL lock_timeout = '10s'; SELECT pg_advisory_xact_lock({ENQUEUE_LOCK}); \
         SELECT COALESCE(MAX(seq), 0) FROM strangler_outbox; COMMIT"
    )
});

impl Outbox {
    /// Connects with the default memory budget (see [`Outbox::connect_with`]).
    pub async fn connect(url: &str) -> Result<Outbox, OutboxError> {
        Outbox::connect_with(url, crate::relay::DEFAULT_MEMORY).await
    }

    /// Connects, creates the tables if needed, and starts the group-commit writer. `memory` is
    /// the events memory budget (`events.memory`); the store takes its share of it: on SQLite
    /// an eighth for the writer's page cache, an eighth for the hand-off to the relay, and an
    /// eighth for the relay's read connections (page cache and memory map); the admin
    /// connections keep 1 MiB of cache each. (The relay's working set is the other half.)
    pub async fn connect_with(url: &str, memory: usize) -> Result<Outbox, OutboxError> {
        let kib = |bytes: usize| format!("-{}", (bytes / 1024).max(64));
        let connect_err = |source| OutboxError::Connect {
            url: url.to_string(),
            source,
        };
        let writer_err = |source: Box<dyn std::error::Error + Send + Sync>| OutboxError::Writer {
            url: url.to_string(),
            source,
        };
        // SQLite: the file the group writer opens on its own connection.
        let (pool, relay_pool, shared, sqlite_file) = if url.starts_with("sqlite:") {
            let opts: SqliteConnectOptions = url.parse().map_err(connect_err)?;
            let file = opts.get_filename().to_path_buf();
            if url.contains(":memory:") || url.contains("mode=memory") {
                return Err(writer_err(
                    "an in-memory outbox loses every event on exit: give a file".into(),
                ));
            }
            let opts = opts
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: a commit survives power loss too, not only a killed process.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                // A WAL grown by a backlog is cut back after checkpoints.
                .pragma("journal_size_limit", "67108864");
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts.clone().pragma("cache_size", "-1024"))
                .await
                .map_err(connect_err)?;
            // The relay reads pages through a memory map and a page cache: when it reads rows
            // back (lagging streams, gaps in the hand-off), pread copies were most of its CPU.
            let relay_pool = SqlitePoolOptions::new()
                .max_connections(2)
                .connect_with(
                    opts.pragma("mmap_size", (memory / 32).to_string())
                        .pragma("cache_size", kib(memory / 32)),
                )
                .await
                .map_err(connect_err)?;
            (
                Pool::Sqlite(pool),
                Pool::Sqlite(relay_pool),
                false,
                Some(file),
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .connect(url)
                .await
                .map_err(connect_err)?;
            // The relay's reads, deletes and retries on connections of their own.
            let relay_pool = PgPoolOptions::new()
                .max_connections(2)
                .connect(url)
                .await
                .map_err(connect_err)?;
            (Pool::Postgres(pool), Pool::Postgres(relay_pool), true, None)
        } else {
            return Err(OutboxError::BadUrl(url.to_string()));
        };
        migrate(&pool).await?;
        let (tx, rx) = mpsc::channel(8192);
        let committed = Arc::new(Notify::new());
        let handoff = match sqlite_file {
            // SQLite: the writer thread, which hands its rows to the relay.
            Some(file) => {
                let conn = crate::sqlite_writer::open(&file, &kib(memory / 8))
                    .map_err(|e| writer_err(e.into()))?;
                let handoff = Arc::new(Mutex::new(HandOff {
                    stale: true,
                    max_bytes: memory / 8,
                    ..HandOff::default()
                }));
                crate::sqlite_writer::spawn(conn, rx, Arc::clone(&committed), Arc::clone(&handoff))
                    .map_err(|e| writer_err(e.into()))?;
                Some(handoff)
            }
            None => {
                let options: sqlx::postgres::PgConnectOptions = url.parse().map_err(connect_err)?;
                crate::pg_writer::spawn(options, rx, Arc::clone(&committed))
                    .map_err(|e| writer_err(e.into()))?;
                None
            }
        };
        Ok(Outbox {
            pool,
            relay_pool,
            writer: tx,
            committed,
            shared,
            handoff,
        })
    }

    /// The rows committed since `cursor` when the group writer handed over all of them, in
    /// `seq` order; `None` when the store must be read instead (see [`HandOff`]). Takes what
    /// the hand-off holds either way.
    pub(crate) fn handed_over(&self, cursor: i64) -> Option<Vec<Pending>> {
        let mut h = self.handoff.as_ref()?.lock().ok()?;
        let rows = std::mem::take(&mut h.rows);
        h.bytes = 0;
        if std::mem::take(&mut h.stale) {
            return None;
        }
        let rows: Vec<Pending> = rows.into_iter().filter(|r| r.seq > cursor).collect();
        let whole = match (rows.first(), rows.last()) {
            (Some(first), Some(last)) => {
                first.seq == cursor + 1
                    && last.seq == h.last_seq
                    && (last.seq - first.seq) as usize + 1 == rows.len()
            }
            _ => h.last_seq <= cursor,
        };
        whole.then_some(rows)
    }

    /// Rows reached the store outside the group writer: the relay reads it next time.
    fn mark_stale(&self) {
        if let Some(h) = &self.handoff
            && let Ok(mut h) = h.lock()
        {
            h.stale = true;
        }
    }

    /// Stores one event; returns once it is committed (grouped with concurrent callers).
    pub async fn enqueue(&self, ev: NewEvent) -> Result<(), OutboxError> {
        self.through_writer(|reply| Write::Enqueue(ev, reply)).await
    }

    /// Hands a write to the group writer and waits for its commit.
    async fn through_writer(
        &self,
        write: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Write,
    ) -> Result<(), OutboxError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(write(tx))
            .await
            .map_err(|_| OutboxError::Closed)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(OutboxError::Write(e)),
            Err(_) => Err(OutboxError::Closed),
        }
    }

    /// Stores events in one transaction of their own, outside the group writer (bulk loads).
    pub async fn enqueue_batch(&self, events: &[NewEvent]) -> Result<(), OutboxError> {
        write(&self.pool, now_ms(), events, &[], &[])
            .await
            .map_err(OutboxError::Db)?;
        self.mark_stale();
        self.committed.notify_one();
        Ok(())
    }

    /// Waiting events with `seq > after`, in `seq` order, any stream, such that no row with a
    /// `seq` below the last one returned can still appear: a reader that keeps the last `seq`
    /// it saw misses none. SQLite has one writer, so rows appear in `seq` order. On PostgreSQL
    /// replicas' transactions commit side by side, so a lower `seq` may become visible after a
    /// higher one; the read is bounded by a barrier (`BARRIER`): for an instant the relay takes
    /// the enqueue lock exclusive, which waits for every transaction adding rows, and reads the
    /// highest `seq` then stored. Rows up to it are all visible, and later ones draw higher
    /// numbers.
    pub async fn read_after(&self, after: i64, limit: i64) -> Result<Vec<Pending>, OutboxError> {
        const SQL: &str = "SELECT seq, id, stream, partition_key, payload, attempts, created_ms, next_attempt_ms \
            FROM strangler_outbox WHERE seq > $1 AND seq <= $3 ORDER BY seq LIMIT $2";
        let upto = match &self.relay_pool {
            Pool::Sqlite(_) => i64::MAX,
            Pool::Postgres(p) => {
                let mut conn = p.acquire().await?;
                let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(BARRIER.as_str()))
                    .fetch_all(&mut *conn)
                    .await?;
                match rows.last().map(|r| r.try_get::<i64, _>(0)) {
                    Some(Ok(max)) => max,
                    _ => {
                        return Err(OutboxError::Write(
                            "the read barrier returned no seq".into(),
                        ));
                    }
                }
            }
        };
        if upto <= after {
            return Ok(Vec::new());
        }
        let pending = on_pool!(&self.relay_pool, |p| {
            let rows = sqlx::query(SQL)
                .bind(after)
                .bind(limit)
                .bind(upto)
                .fetch_all(p)
                .await?;
            rows.iter().map(|r| pending!(r)).collect()
        });
        Ok(pending)
    }

    /// Waiting events of one stream with `from <= seq <= to`, in order (a lagging stream read
    /// back, see `backlog`).
    pub async fn read_stream(
        &self,
        stream: &str,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<Pending>, OutboxError> {
        const SQL: &str = "SELECT seq, id, stream, partition_key, payload, attempts, created_ms, next_attempt_ms \
            FROM strangler_outbox WHERE seq >= $1 AND seq <= $3 AND stream = $4 ORDER BY seq LIMIT $2";
        let pending = on_pool!(&self.relay_pool, |p| {
            let rows = sqlx::query(SQL)
                .bind(from)
                .bind(limit)
                .bind(to)
                .bind(stream)
                .fetch_all(p)
                .await?;
            rows.iter().map(|r| pending!(r)).collect()
        });
        Ok(pending)
    }

    /// Removes published events; with `keep` they are archived for replay. On SQLite this goes
    /// through the writer, in the same transactions as enqueues: SQLite has one writer at a
    /// time, and a second connection deleting would make enqueues wait on its lock. On
    /// PostgreSQL it goes straight to the store on the relay's connections, so the group
    /// writer's round trips stay the enqueues' alone.
    pub async fn published(&self, seqs: &[i64], keep: bool) -> Result<(), OutboxError> {
        if seqs.is_empty() {
            return Ok(());
        }
        if let Pool::Postgres(p) = &self.relay_pool {
            let mut conn = p.acquire().await?;
            pg_settle(&mut conn, &[(seqs.to_vec(), keep)], &[]).await?;
            return Ok(());
        }
        self.through_writer(|reply| Write::Published(seqs.to_vec(), keep, reply))
            .await
    }

    /// Records a rejected try of these events (kept across restarts: the count decides when an
    /// event is dead-lettered); they are not tried again before `next_ms`. Goes where the
    /// deletes after publishing go (SQLite: the writer; PostgreSQL: the relay's connections).
    pub async fn retry(&self, seqs: &[i64], next_ms: i64, error: &str) -> Result<(), OutboxError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let retry = Retry {
            seqs: seqs.to_vec(),
            next_ms,
            error: error.to_string(),
        };
        if let Pool::Postgres(p) = &self.relay_pool {
            let mut conn = p.acquire().await?;
            pg_settle(&mut conn, &[], &[retry]).await?;
            return Ok(());
        }
        self.through_writer(|reply| Write::Retry(retry, reply))
            .await
    }

    /// Gives back what the store's caches took while a backlog was read and written (SQLite:
    /// every connection's page cache, `PRAGMA shrink_memory`; PostgreSQL: nothing here). The
    /// relay calls it once a large backlog has drained.
    pub async fn shrink(&self) -> Result<(), OutboxError> {
        let (Pool::Sqlite(pool), Pool::Sqlite(relay_pool)) = (&self.pool, &self.relay_pool) else {
            return Ok(());
        };
        self.through_writer(Write::Shrink).await?;
        for p in [pool, relay_pool] {
            let conns: Vec<_> = (0..p.num_idle()).map_while(|_| p.try_acquire()).collect();
            for mut c in conns {
                sqlx::query("PRAGMA shrink_memory").execute(&mut *c).await?;
            }
        }
        Ok(())
    }

    /// Moves an event to the dead-letter table.
    pub async fn dead_letter(&self, seq: i64, reason: &str) -> Result<(), OutboxError> {
        let now = now_ms();
        let copy = "INSERT INTO strangler_dead_letters (seq, id, route, stream, partition_key, payload, created_ms, attempts, reason, dead_ms) \
                    SELECT seq, id, route, stream, partition_key, payload, created_ms, attempts + 1, $1, $2 FROM strangler_outbox WHERE seq = $3";
        on_pool!(&self.pool, |p| {
            let mut tx = p.begin().await?;
            sqlx::query(copy)
                .bind(reason)
                .bind(now)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM strangler_outbox WHERE seq = $1")
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<DeadLetter>, OutboxError> {
        const SQL: &str = "SELECT seq, id, stream, partition_key, attempts, reason, dead_ms FROM strangler_dead_letters ORDER BY seq LIMIT $1";
        let dead = on_pool!(&self.pool, |p| {
            let rows = sqlx::query(SQL).bind(limit).fetch_all(p).await?;
            rows.iter()
                .map(|r| DeadLetter {
                    seq: r.get(0),
                    id: r.get(1),
                    stream: r.get(2),
                    partition_key: r.get(3),
                    attempts: r.get(4),
                    reason: r.get(5),
                    dead_ms: r.get(6),
                })
                .collect()
        });
        Ok(dead)
    }

    /// Puts dead letters back in the outbox (same id, fresh tries); `None` re-drives them all.
    /// Returns how many moved.
    pub async fn redrive(&self, seqs: Option<&[i64]>) -> Result<u64, OutboxError> {
        let filter = match seqs {
            Some([]) => return Ok(0),
            Some(s) => format!("WHERE seq IN ({})", id_list(s)),
            None => String::new(),
        };
        let now = now_ms();
        let copy = format!(
            "INSERT INTO strangler_outbox (id, route, stream, partition_key, payload, created_ms, attempts, next_attempt_ms) \
             SELECT id, route, stream, partition_key, payload, created_ms, 0, {now} FROM strangler_dead_letters {filter} ORDER BY seq"
        );
        let delete = format!("DELETE FROM strangler_dead_letters {filter}");
        let pg = matches!(self.pool, Pool::Postgres(_));
        let moved = on_pool!(&self.pool, |p| {
            let mut tx = p.begin().await?;
            if pg {
                sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
                    .bind(ENQUEUE_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            let n = sqlx::query(sqlx::AssertSqlSafe(copy.clone()))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query(sqlx::AssertSqlSafe(delete.clone()))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            n
        });
        self.mark_stale();
        self.committed.notify_one();
        Ok(moved)
    }

    /// Waiting events and the age of the oldest, per stream. Scans the table: the admin API
    /// asks on demand; the relay's gauges come from its working set instead.
    pub async fn depth(&self) -> Result<Vec<StreamDepth>, OutboxError> {
        const SQL: &str = "SELECT stream, COUNT(*), MIN(created_ms) FROM strangler_outbox GROUP BY stream ORDER BY stream";
        let now = now_ms();
        let depths = on_pool!(&self.relay_pool, |p| {
            let rows = sqlx::query(SQL).fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    let oldest: i64 = r.get(2);
                    StreamDepth {
                        stream: r.get(0),
                        depth: r.get(1),
                        oldest_age_seconds: (now - oldest).max(0) as f64 / 1000.0,
                    }
                })
                .collect()
        });
        Ok(depths)
    }

    /// Deletes archived events older than `retention`.
    pub async fn prune_published(&self, retention: Duration) -> Result<u64, OutboxError> {
        let cutoff = now_ms() - retention.as_millis() as i64;
        let n = on_pool!(&self.pool, |p| sqlx::query(
            "DELETE FROM strangler_published WHERE published_ms < $1"
        )
        .bind(cutoff)
        .execute(p)
        .await?
        .rows_affected());
        Ok(n)
    }

    /// Waits for the relay leader lock (a PostgreSQL session advisory lock; SQLite: one process,
    /// no lock needed) and returns the connection holding it, detached from the pool so that
    /// dropping it closes the session and frees the lock for another replica.
    pub(crate) async fn leader_connection(
        &self,
    ) -> Result<Option<sqlx::PgConnection>, OutboxError> {
        let Pool::Postgres(p) = &self.pool else {
            return Ok(None);
        };
        loop {
            let mut conn = p.acquire().await?;
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(RELAY_LOCK)
                .fetch_one(&mut *conn)
                .await?;
            if got {
                return Ok(Some(conn.detach()));
            }
            drop(conn);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn migrate(pool: &Pool) -> Result<(), OutboxError> {
    let (seq, blob) = match pool {
        Pool::Sqlite(_) => ("INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"),
        Pool::Postgres(_) => ("BIGSERIAL PRIMARY KEY", "BYTEA"),
    };
    let statements = [
        format!(
            "CREATE TABLE IF NOT EXISTS strangler_outbox (seq {seq}, id TEXT NOT NULL, route TEXT NOT NULL, \
             stream TEXT NOT NULL, partition_key TEXT NOT NULL, payload {blob} NOT NULL, created_ms BIGINT NOT NULL, \
             attempts BIGINT NOT NULL DEFAULT 0, next_attempt_ms BIGINT NOT NULL, last_error TEXT)"
        ),
        // Earlier versions indexed keys and due times for the relay's claim query; the relay now
        // reads by `seq` alone and keeps per-key order in memory, and every index is one more
        // write per enqueued event.
        "DROP INDEX IF EXISTS strangler_outbox_key".into(),
        "DROP INDEX IF EXISTS strangler_outbox_due".into(),
        format!(
            "CREATE TABLE IF NOT EXISTS strangler_dead_letters (seq BIGINT PRIMARY KEY, id TEXT NOT NULL, route TEXT NOT NULL, \
             stream TEXT NOT NULL, partition_key TEXT NOT NULL, payload {blob} NOT NULL, created_ms BIGINT NOT NULL, \
             attempts BIGINT NOT NULL, reason TEXT NOT NULL, dead_ms BIGINT NOT NULL)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS strangler_published (seq BIGINT PRIMARY KEY, id TEXT NOT NULL, stream TEXT NOT NULL, \
             partition_key TEXT NOT NULL, payload {blob} NOT NULL, created_ms BIGINT NOT NULL, published_ms BIGINT NOT NULL)"
        ),
    ];
    for s in &statements {
        on_pool!(pool, |p| {
            sqlx::query(sqlx::AssertSqlSafe(s.clone()))
                .execute(p)
                .await?;
        });
    }
    Ok(())
}

/// One transaction through sqlx: removes (or archives, with `keep`) published rows, records
/// failed tries, then adds `events` (created at `now`). The PostgreSQL group writer and bulk
/// loads use it; SQLite's group writer has its own (`sqlite_writer`).
async fn write(
    pool: &Pool,
    now: i64,
    events: &[NewEvent],
    published: &[(Vec<i64>, bool)],
    retries: &[Retry],
) -> Result<(), sqlx::Error> {
    on_pool!(pool, |p| {
        let mut tx = p.begin().await?;
        for (seqs, keep) in published {
            let list = id_list(seqs);
            if *keep {
                let archive = format!(
                    "INSERT INTO strangler_published (seq, id, stream, partition_key, payload, created_ms, published_ms) \
                     SELECT seq, id, stream, partition_key, payload, created_ms, {now} FROM strangler_outbox WHERE seq IN ({list})"
                );
                sqlx::query(sqlx::AssertSqlSafe(archive))
                    .persistent(false)
                    .execute(&mut *tx)
                    .await?;
            }
            let delete = format!("DELETE FROM strangler_outbox WHERE seq IN ({list})");
            sqlx::query(sqlx::AssertSqlSafe(delete))
                .persistent(false)
                .execute(&mut *tx)
                .await?;
        }
        for r in retries {
            let update = format!(
                "UPDATE strangler_outbox SET attempts = attempts + 1, next_attempt_ms = $1, last_error = $2 WHERE seq IN ({})",
                id_list(&r.seqs)
            );
            sqlx::query(sqlx::AssertSqlSafe(update))
                .persistent(false)
                .bind(r.next_ms)
                .bind(&r.error)
                .execute(&mut *tx)
                .await?;
        }
        if matches!(pool, Pool::Postgres(_)) && !events.is_empty() {
            // Before any `seq` is drawn (see `read_after`).
            sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
                .bind(ENQUEUE_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        for chunk in insert_chunks(events) {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(insert_sql(chunk.len())));
            for e in chunk {
                q = q
                    .bind(&e.id)
                    .bind(&e.route)
                    .bind(&e.stream)
                    .bind(&e.partition_key)
                    .bind(&e.payload)
                    .bind(now);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
    });
    Ok(())
}

/// The relay's writes on PostgreSQL: published rows deleted (or moved to the archive, with
/// `keep`) and failed tries recorded, one statement each, by `seq` array.
pub(crate) async fn pg_settle(
    conn: &mut sqlx::PgConnection,
    published: &[(Vec<i64>, bool)],
    retries: &[Retry],
) -> Result<(), sqlx::Error> {
    const DELETE: &str = "DELETE FROM strangler_outbox WHERE seq = ANY($1)";
    const ARCHIVE: &str = "WITH moved AS (DELETE FROM strangler_outbox WHERE seq = ANY($1) \
        RETURNING seq, id, stream, partition_key, payload, created_ms) \
        INSERT INTO strangler_published (seq, id, stream, partition_key, payload, created_ms, published_ms) \
        SELECT seq, id, stream, partition_key, payload, created_ms, $2 FROM moved";
    const RETRY: &str = "UPDATE strangler_outbox SET attempts = attempts + 1, next_attempt_ms = $1, \
        last_error = $2 WHERE seq = ANY($3)";
    for (seqs, keep) in published {
        if *keep {
            sqlx::query(ARCHIVE)
                .bind(seqs)
                .bind(now_ms())
                .execute(&mut *conn)
                .await?;
        } else {
            sqlx::query(DELETE).bind(seqs).execute(&mut *conn).await?;
        }
    }
    for r in retries {
        sqlx::query(RETRY)
            .bind(r.next_ms)
            .bind(&r.error)
            .bind(&r.seqs)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Splits a group into multi-row INSERTs of power-of-two sizes (at most 256 rows): a round trip
/// per chunk rather than per event, and only nine distinct statements, which stay prepared in
/// the connection's statement cache.
fn insert_chunks(events: &[NewEvent]) -> impl Iterator<Item = &[NewEvent]> {
    let mut rest = events;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = rest.len().min(256);
        let size = 1 << n.ilog2();
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

/// `INSERT … VALUES ($1,…,$6,0,$6), ($7,…)` for `rows` rows (numbered placeholders work on both
/// SQLite and PostgreSQL); built once per size.
fn insert_sql(rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        (0..=8)
            .map(|p| {
                let mut sql = String::from(
                    "INSERT INTO strangler_outbox (id, route, stream, partition_key, payload, created_ms, attempts, next_attempt_ms) VALUES ",
                );
                for r in 0..1usize << p {
                    let b = r * 6;
                    if r > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, 0, ${})",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4,
                        b + 5,
                        b + 6,
                        b + 6
                    ));
                }
                sql
            })
            .collect()
    });
    &all[rows.ilog2() as usize]
}

/// Adds the writes waiting in `rx` to `batch`, up to `MAX_GROUP` (after a `GATHER` pause).
pub(crate) fn take_waiting(rx: &mut mpsc::Receiver<Write>, batch: &mut Vec<Write>) {
    while batch.len() < MAX_GROUP {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
}

/// Passes committed events to the relay as the rows they became (`last` is the `seq` of the
/// final one), or only notes their `seq` when the relay has not taken what it was given.
pub(crate) fn hand_over(handoff: &Mutex<HandOff>, events: Vec<NewEvent>, last: i64, now: i64) {
    let Ok(mut h) = handoff.lock() else {
        return;
    };
    h.last_seq = last;
    let bytes: usize = events.iter().map(|e| e.payload.len()).sum();
    if h.rows.len() + events.len() > HANDOFF_ROWS || h.bytes + bytes > h.max_bytes {
        return;
    }
    h.bytes += bytes;
    let first = last - events.len() as i64 + 1;
    h.rows
        .extend(events.into_iter().enumerate().map(|(i, e)| Pending {
            seq: first + i as i64,
            id: e.id,
            stream: e.stream,
            partition_key: e.partition_key,
            payload: e.payload,
            attempts: 0,
            created_ms: now,
            next_attempt_ms: now,
        }));
}

fn id_list(seqs: &[i64]) -> String {
    seqs.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> NewEvent {
        NewEvent {
            id: format!("id-{n}"),
            route: "orders".into(),
            stream: "orders".into(),
            partition_key: format!("k{n}"),
            payload: format!("{{\"n\":{n}}}").into_bytes(),
        }
    }

    fn seqs(rows: Option<Vec<Pending>>) -> Option<Vec<i64>> {
        rows.map(|r| r.iter().map(|p| p.seq).collect())
    }

    #[tokio::test]
    async fn caches_are_given_back_and_the_store_still_works() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("outbox.db").display());
        let outbox = Outbox::connect(&url).await.unwrap();
        for n in 0..50 {
            outbox.enqueue(event(n)).await.unwrap();
        }
        assert_eq!(outbox.read_after(0, 100).await.unwrap().len(), 50);
        outbox.shrink().await.unwrap();
        outbox.enqueue(event(50)).await.unwrap();
        assert_eq!(outbox.read_after(0, 100).await.unwrap().len(), 51);
    }

    #[tokio::test]
    async fn an_in_memory_store_is_refused() {
        let err = Outbox::connect("sqlite::memory:").await.err().unwrap();
        assert!(err.to_string().contains("in-memory outbox"), "{err}");
    }

    #[tokio::test]
    async fn hands_committed_rows_over_and_sends_the_relay_to_the_store_on_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("outbox.db").display());
        let outbox = Outbox::connect(&url).await.unwrap();
        // At start the store may hold rows from an earlier run: read it first.
        assert_eq!(seqs(outbox.handed_over(0)), None);
        outbox.enqueue(event(1)).await.unwrap();
        outbox.enqueue(event(2)).await.unwrap();
        let rows = outbox.handed_over(0).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[1].seq, rows[1].id.as_str()), (2, "id-2"));
        assert_eq!(rows[1].payload, br#"{"n":2}"#);
        // Nothing new: nothing to read either.
        assert_eq!(seqs(outbox.handed_over(2)), Some(vec![]));
        // A bulk load bypasses the writer: the store holds rows the hand-off does not.
        outbox.enqueue_batch(&[event(3)]).await.unwrap();
        outbox.enqueue(event(4)).await.unwrap();
        assert_eq!(seqs(outbox.handed_over(2)), None);
        // The relay read 3 and 4 from the store; the writer's next rows follow on.
        outbox.enqueue(event(5)).await.unwrap();
        assert_eq!(seqs(outbox.handed_over(4)), Some(vec![5]));
        // A relay behind the hand-off (it started over) reads the store.
        outbox.enqueue(event(6)).await.unwrap();
        assert_eq!(seqs(outbox.handed_over(0)), None);
        // Rows it already has are skipped.
        outbox.enqueue(event(7)).await.unwrap();
        outbox.enqueue(event(8)).await.unwrap();
        assert_eq!(seqs(outbox.handed_over(7)), Some(vec![8]));
        // What the store holds agrees with the hand-off.
        let stored = outbox.read_after(4, 10).await.unwrap();
        assert_eq!(
            stored
                .iter()
                .map(|p| (p.seq, p.id.as_str()))
                .collect::<Vec<_>>(),
            [(5, "id-5"), (6, "id-6"), (7, "id-7"), (8, "id-8")]
        );
    }
}
