//! The outbox table: events are committed here before the relay sends them to Kinesis.
//! Enqueues go through the store's group writer ([`write`]); on SQLite it hands the rows
//! it commits straight to the relay ([`HandOff`]), on PostgreSQL the relay reads new rows back.
//! Published rows are deleted, or archived for a retention period; rows that exhaust their
//! tries move to the dead-letter table with the reason, until re-driven ([`admin`]).

mod admin;
mod handoff;
pub(crate) mod sql;
pub(crate) mod write;

use std::time::Duration;

use sqlx::{PgConnection, Row};

pub(crate) use handoff::HandOff;
pub(crate) use write::Write;

use crate::lease::{CheckFence, Lock};
use crate::{Pool, Store, StoreError, now_ms, on_pool};
use write::Retry;

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

/// The `Pending`s of rows of [`sql::PENDING_COLUMNS`] (either database's row type), by column
/// name; `?` on a missing or mistyped column.
macro_rules! pending_rows {
    ($rows:expr) => {
        $rows
            .iter()
            .map(|r| {
                Ok::<_, sqlx::Error>(Pending {
                    seq: r.try_get("seq")?,
                    id: r.try_get("id")?,
                    stream: r.try_get("stream")?,
                    partition_key: r.try_get("partition_key")?,
                    payload: r.try_get("payload")?,
                    attempts: r.try_get("attempts")?,
                    created_ms: r.try_get("created_ms")?,
                    next_attempt_ms: r.try_get("next_attempt_ms")?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
}

/// The outbox table of a [`Store`]. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    store: Store,
    /// The relay's lease: settling rows (published, retried, dead-lettered) is refused once
    /// another replica holds it.
    fence: Option<crate::Fence>,
}

impl Outbox {
    pub(crate) fn new(store: Store) -> Outbox {
        Outbox { store, fence: None }
    }

    /// This outbox with its settling writes fenced by a lease (see [`crate::Fence`]).
    pub fn fenced(&self, fence: Option<crate::Fence>) -> Outbox {
        Outbox {
            store: self.store.clone(),
            fence,
        }
    }

    /// Connects a store with the default memory budget and returns its outbox.
    pub async fn connect(url: &str) -> Result<Outbox, StoreError> {
        Ok(Store::connect(url).await?.outbox())
    }

    /// The store the table lives in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stores one event; returns once it is committed (grouped with concurrent callers).
    pub async fn enqueue(&self, ev: NewEvent) -> Result<(), StoreError> {
        self.store.through_writer(Write::Enqueue(ev)).await
    }

    /// Stores events in one transaction of their own, outside the group writer (bulk loads).
    pub async fn enqueue_batch(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        let now = now_ms();
        match &self.store.pool {
            Pool::Sqlite(p) => {
                let mut tx = p.begin().await?;
                for chunk in sql::chunks(events) {
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql::insert_rows(chunk.len())));
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
            }
            Pool::Postgres(p) => insert_pg(&mut *p.acquire().await?, now, events).await?,
        }
        self.added_outside_writer();
        Ok(())
    }

    /// Waiting events with `seq > after`, in `seq` order, any stream, such that no row with a
    /// `seq` below the last one returned can still appear: a reader that keeps the last `seq`
    /// it saw misses none. SQLite has one writer, so rows appear in `seq` order. On PostgreSQL
    /// replicas' transactions commit side by side, so a lower `seq` may become visible after a
    /// higher one; the read is bounded by a barrier ([`barrier`]).
    pub async fn read_after(&self, after: i64, limit: i64) -> Result<Vec<Pending>, StoreError> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "SELECT {} FROM strangler_outbox WHERE seq > $1 AND seq <= $3 ORDER BY seq LIMIT $2",
                sql::PENDING_COLUMNS
            )
        });
        let upto = match &self.store.reads {
            Pool::Sqlite(_) => i64::MAX,
            Pool::Postgres(p) => barrier(&mut *p.acquire().await?).await?,
        };
        if upto <= after {
            return Ok(Vec::new());
        }
        let pending = on_pool!(&self.store.reads, |p| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(SQL.as_str()))
                .bind(after)
                .bind(limit)
                .bind(upto)
                .fetch_all(p)
                .await?;
            pending_rows!(rows)
        });
        Ok(pending)
    }

    /// Waiting events of one stream with `from <= seq <= to`, in order (a lagging stream read
    /// back).
    pub async fn read_stream(
        &self,
        stream: &str,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<Pending>, StoreError> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "SELECT {} FROM strangler_outbox WHERE seq >= $1 AND seq <= $3 AND stream = $4 ORDER BY seq LIMIT $2",
                sql::PENDING_COLUMNS
            )
        });
        let pending = on_pool!(&self.store.reads, |p| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(SQL.as_str()))
                .bind(from)
                .bind(limit)
                .bind(to)
                .bind(stream)
                .fetch_all(p)
                .await?;
            pending_rows!(rows)
        });
        Ok(pending)
    }

    /// A transaction on the relay's PostgreSQL connections, fenced by the relay's lease (its
    /// writes are refused once another replica holds it).
    async fn begin_fenced(
        &self,
        p: &sqlx::PgPool,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        let mut tx = p.begin().await?;
        if let Some(f) = &self.fence {
            tx.check_fence(f).await?;
        }
        Ok(tx)
    }

    /// Removes published events; with `keep` they are archived for replay. On SQLite this goes
    /// through the writer, in the same transactions as enqueues: SQLite has one writer at a
    /// time, and a second connection deleting would make enqueues wait on its lock. On
    /// PostgreSQL it goes straight to the store on the relay's connections, so the group
    /// writer's round trips stay the enqueues' alone.
    pub async fn published(&self, seqs: &[i64], keep: bool) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        if let Pool::Postgres(p) = &self.store.reads {
            let mut tx = self.begin_fenced(p).await?;
            if keep {
                sqlx::query(sql::ARCHIVE_ANY)
                    .bind(seqs)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query(sql::DELETE_ANY)
                    .bind(seqs)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            return Ok(());
        }
        self.store
            .through_writer(Write::Published(seqs.to_vec(), keep))
            .await
    }

    /// Records a rejected try of these events (kept across restarts: the count decides when an
    /// event is dead-lettered); they are not tried again before `next_ms`. Goes where the
    /// deletes after publishing go (SQLite: the writer; PostgreSQL: the relay's connections).
    pub async fn retry(&self, seqs: &[i64], next_ms: i64, error: &str) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        if let Pool::Postgres(p) = &self.store.reads {
            let mut tx = self.begin_fenced(p).await?;
            sqlx::query(sql::RETRY_ANY)
                .bind(next_ms)
                .bind(error)
                .bind(seqs)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(());
        }
        let retry = Retry {
            seqs: seqs.to_vec(),
            next_ms,
            error: error.to_string(),
        };
        self.store.through_writer(Write::Retry(retry)).await
    }

    /// Deletes archived events older than `retention`.
    pub async fn prune_published(&self, retention: Duration) -> Result<u64, StoreError> {
        let cutoff = now_ms() - retention.as_millis() as i64;
        let n = on_pool!(&self.store.pool, |p| sqlx::query(
            "DELETE FROM strangler_published WHERE published_ms < $1"
        )
        .bind(cutoff)
        .execute(p)
        .await?
        .rows_affected());
        Ok(n)
    }
}

/// Adds `events` (created at `now`) in one statement (its own transaction unless `conn` is in
/// one): PostgreSQL's group writer and bulk loads.
pub(crate) async fn insert_pg(
    conn: &mut PgConnection,
    now: i64,
    events: &[NewEvent],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&NewEvent) -> &str| events.iter().map(f).collect::<Vec<&str>>();
    sqlx::query(sql::INSERT_ANY)
        .bind(column(|e| &e.id))
        .bind(column(|e| &e.route))
        .bind(column(|e| &e.stream))
        .bind(column(|e| &e.partition_key))
        .bind(
            events
                .iter()
                .map(|e| e.payload.as_slice())
                .collect::<Vec<&[u8]>>(),
        )
        .bind(now)
        .bind(Lock::ENQUEUE.key())
        .execute(conn)
        .await?;
    Ok(())
}

/// A transaction that adds outbox rows other than through the group writer (re-drives, replay
/// steps). On PostgreSQL it takes the enqueue lock shared before any `seq` is drawn, so the
/// relay's read barrier ([`barrier`]) waits for it; SQLite has one writer at a time anyway.
pub(crate) trait BeginEnqueue {
    type Db: sqlx::Database;
    fn begin_enqueue(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>>
    + Send;
}

impl BeginEnqueue for sqlx::SqlitePool {
    type Db = sqlx::Sqlite;
    async fn begin_enqueue(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin().await
    }
}

impl BeginEnqueue for sqlx::PgPool {
    type Db = sqlx::Postgres;
    async fn begin_enqueue(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(Lock::ENQUEUE.key())
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

/// The highest `seq` below which every outbox row is visible (PostgreSQL). For an instant it
/// takes the enqueue lock exclusive, which waits for every transaction adding rows (they hold
/// it shared from before they draw a `seq`), and reads the highest `seq` then stored: rows up to
/// it are committed or will never exist, since `seq` values drawn later are higher. One round
/// trip; a transaction that holds the lock for longer than 10 s fails the read (retried)
/// instead of stalling the relay.
async fn barrier(conn: &mut PgConnection) -> Result<i64, StoreError> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "BEGIN; SET LOCAL lock_timeout = '10s'; SELECT pg_advisory_xact_lock({}); \
             SELECT COALESCE(MAX(seq), 0) AS max_seq FROM strangler_outbox; COMMIT",
            Lock::ENQUEUE.key()
        )
    });
    let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(SQL.as_str()))
        .fetch_all(conn)
        .await?;
    match rows.last().map(|r| r.try_get::<i64, _>("max_seq")) {
        Some(Ok(max)) => Ok(max),
        _ => Err(StoreError::Barrier),
    }
}

#[cfg(test)]
mod tests;
