//! The durable outbox: events are committed here (SQLite by default, PostgreSQL for replicas)
//! before the relay sends them to Kinesis. Concurrent enqueues are grouped into one transaction,
//! so throughput grows with concurrency while each caller still waits for its own commit.
//! Published rows are deleted, or archived for a retention period; rows that exhaust their tries
//! move to the dead-letter table with the reason, until re-driven.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox store {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("outbox store: {0}")]
    Db(#[from] sqlx::Error),
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

/// The outbox. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    pool: Pool,
    /// The relay's bookkeeping (claims, deletes after publishing, retry schedules). On SQLite a
    /// connection with `synchronous=NORMAL`: losing such a commit to a power cut only means an
    /// event is sent again (at-least-once, deduped by id), and it keeps fsync off the relay's
    /// path. Enqueues keep `FULL`.
    relay_pool: Pool,
    writer: mpsc::Sender<(NewEvent, oneshot::Sender<Result<(), String>>)>,
    /// True when replicas share the store (PostgreSQL): the relay then takes a leader lock.
    pub shared: bool,
}

const MAX_GROUP: usize = 512;

impl Outbox {
    /// Connects, creates the tables if needed, and starts the group-commit writer.
    pub async fn connect(url: &str) -> Result<Outbox, OutboxError> {
        let connect_err = |source| OutboxError::Connect {
            url: url.to_string(),
            source,
        };
        let (pool, relay_pool, shared) = if url.starts_with("sqlite:") {
            let opts: SqliteConnectOptions = url.parse().map_err(connect_err)?;
            let opts = opts
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: a commit survives power loss too, not only a killed process.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                // Read pages through a memory map and keep a larger page cache: the relay's claim
                // query walks the key index continuously, and pread copies were most of its CPU.
                .pragma("mmap_size", "268435456")
                .pragma("cache_size", "-32768");
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts.clone())
                .await
                .map_err(connect_err)?;
            let relay_pool = SqlitePoolOptions::new()
                .max_connections(2)
                .connect_with(opts.synchronous(SqliteSynchronous::Normal))
                .await
                .map_err(connect_err)?;
            (Pool::Sqlite(pool), Pool::Sqlite(relay_pool), false)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .connect(url)
                .await
                .map_err(connect_err)?;
            (Pool::Postgres(pool.clone()), Pool::Postgres(pool), true)
        } else {
            return Err(OutboxError::BadUrl(url.to_string()));
        };
        migrate(&pool).await?;
        let (tx, rx) = mpsc::channel(8192);
        tokio::spawn(group_writer(pool.clone(), rx));
        Ok(Outbox {
            pool,
            relay_pool,
            writer: tx,
            shared,
        })
    }

    /// Stores one event; returns once it is committed (grouped with concurrent callers).
    pub async fn enqueue(&self, ev: NewEvent) -> Result<(), OutboxError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send((ev, tx))
            .await
            .map_err(|_| OutboxError::Closed)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(OutboxError::Write(e)),
            Err(_) => Err(OutboxError::Closed),
        }
    }

    /// Stores events in one transaction.
    pub async fn enqueue_batch(&self, events: &[NewEvent]) -> Result<(), OutboxError> {
        insert(&self.pool, events).await.map_err(OutboxError::Db)
    }

    /// Streams with waiting events.
    pub async fn streams(&self) -> Result<Vec<String>, OutboxError> {
        let streams = on_pool!(&self.relay_pool, |p| {
            let rows = sqlx::query("SELECT DISTINCT stream FROM strangler_outbox")
                .fetch_all(p)
                .await?;
            rows.iter().map(|r| r.get::<String, _>(0)).collect()
        });
        Ok(streams)
    }

    /// Due events of `stream` in order, at most one per partition key: the oldest waiting one.
    /// A later event of a key is never returned while an earlier one waits (even for a retry),
    /// which keeps per-key order across retries.
    pub async fn claim(&self, stream: &str, limit: i64) -> Result<Vec<Pending>, OutboxError> {
        const SQL: &str = "SELECT seq, id, stream, partition_key, payload, attempts, created_ms \
            FROM strangler_outbox o WHERE o.stream = $1 AND o.next_attempt_ms <= $2 \
            AND NOT EXISTS (SELECT 1 FROM strangler_outbox p WHERE p.stream = o.stream \
                            AND p.partition_key = o.partition_key AND p.seq < o.seq) \
            ORDER BY o.seq LIMIT $3";
        let now = now_ms();
        let pending = on_pool!(&self.relay_pool, |p| {
            let rows = sqlx::query(SQL)
                .bind(stream)
                .bind(now)
                .bind(limit)
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(|r| Pending {
                    seq: r.get(0),
                    id: r.get(1),
                    stream: r.get(2),
                    partition_key: r.get(3),
                    payload: r.get(4),
                    attempts: r.get(5),
                    created_ms: r.get(6),
                })
                .collect()
        });
        Ok(pending)
    }

    /// Removes published events; with `keep` they are archived for replay.
    pub async fn published(&self, seqs: &[i64], keep: bool) -> Result<(), OutboxError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let list = id_list(seqs);
        let now = now_ms();
        let archive = format!(
            "INSERT INTO strangler_published (seq, id, stream, partition_key, payload, created_ms, published_ms) \
             SELECT seq, id, stream, partition_key, payload, created_ms, {now} FROM strangler_outbox WHERE seq IN ({list})"
        );
        let delete = format!("DELETE FROM strangler_outbox WHERE seq IN ({list})");
        on_pool!(&self.relay_pool, |p| {
            let mut tx = p.begin().await?;
            if keep {
                sqlx::query(sqlx::AssertSqlSafe(archive.clone()))
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(sqlx::AssertSqlSafe(delete.clone()))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Schedules another try.
    pub async fn retry(&self, seq: i64, after: Duration, error: &str) -> Result<(), OutboxError> {
        const SQL: &str = "UPDATE strangler_outbox SET attempts = attempts + 1, next_attempt_ms = $1, last_error = $2 WHERE seq = $3";
        let next = now_ms() + after.as_millis() as i64;
        on_pool!(&self.relay_pool, |p| {
            sqlx::query(SQL)
                .bind(next)
                .bind(error)
                .bind(seq)
                .execute(p)
                .await?;
        });
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
        let moved = on_pool!(&self.pool, |p| {
            let mut tx = p.begin().await?;
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
        Ok(moved)
    }

    /// Waiting events and the age of the oldest, per stream.
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
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(7405327110)")
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
        "CREATE INDEX IF NOT EXISTS strangler_outbox_key ON strangler_outbox (stream, partition_key, seq)".into(),
        "CREATE INDEX IF NOT EXISTS strangler_outbox_due ON strangler_outbox (stream, next_attempt_ms, seq)".into(),
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

async fn insert(pool: &Pool, events: &[NewEvent]) -> Result<(), sqlx::Error> {
    let now = now_ms();
    on_pool!(pool, |p| {
        let mut tx = p.begin().await?;
        // One multi-row INSERT per 500 events: a round trip per group, not per event.
        for chunk in events.chunks(500) {
            let sql = insert_sql(chunk.len());
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
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

/// `INSERT … VALUES ($1,…,$6,0,$6), ($7,…)` for `rows` rows (numbered placeholders work on both
/// SQLite and PostgreSQL).
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO strangler_outbox (id, route, stream, partition_key, payload, created_ms, attempts, next_attempt_ms) VALUES ",
    );
    for r in 0..rows {
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
}

/// Group commit: takes every enqueue waiting (up to `MAX_GROUP`) into one transaction.
async fn group_writer(
    pool: Pool,
    mut rx: mpsc::Receiver<(NewEvent, oneshot::Sender<Result<(), String>>)>,
) {
    let mut batch = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut batch, MAX_GROUP).await > 0 {
        let (events, replies): (Vec<NewEvent>, Vec<_>) = batch.drain(..).unzip();
        let result = insert(&pool, &events).await.map_err(|e| e.to_string());
        for reply in replies {
            let _ = reply.send(result.clone());
        }
    }
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
