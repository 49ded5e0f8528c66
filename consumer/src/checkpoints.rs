//! The consumer's own tables, in the application's database next to its state: where each shard
//! was read to (`strangler_consumer_shards`) and which event ids were applied
//! (`strangler_consumer_applied`). Both are written in the transaction that applies a batch, so
//! the state and the checkpoint never disagree after a crash.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{AnyConnection, AnyPool};

const SCHEMA: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS strangler_consumer_shards (
        consumer TEXT NOT NULL,
        stream TEXT NOT NULL,
        shard_id TEXT NOT NULL,
        sequence_number TEXT,
        finished BIGINT NOT NULL DEFAULT 0,
        updated_ms BIGINT NOT NULL,
        PRIMARY KEY (consumer, stream, shard_id))",
    "CREATE TABLE IF NOT EXISTS strangler_consumer_applied (
        consumer TEXT NOT NULL,
        event_id TEXT NOT NULL,
        applied_ms BIGINT NOT NULL,
        PRIMARY KEY (consumer, event_id))",
    "CREATE INDEX IF NOT EXISTS strangler_consumer_applied_age
        ON strangler_consumer_applied (consumer, applied_ms)",
];

/// A shard's stored progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last record applied (whole: every event of an aggregate); `None`: nothing yet.
    pub sequence_number: Option<String>,
    /// Read to its end (a closed shard after a split or merge): its children may start.
    pub finished: bool,
}

/// Creates the consumer's tables when missing. On PostgreSQL under an advisory lock, so
/// consumers starting together do not race on the catalog.
pub(crate) async fn migrate(pool: &AnyPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    if crate::is_postgres(pool) {
        // "strangler-consumer" as a 64-bit key.
        sqlx::query("SELECT pg_advisory_xact_lock(7363021459815133799)")
            .execute(&mut *tx)
            .await?;
    }
    for ddl in SCHEMA.into_iter().chain([crate::leases::SCHEMA]) {
        sqlx::query(ddl).execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// Every stored shard of one consumer on one stream.
pub(crate) async fn load(
    pool: &AnyPool,
    consumer: &str,
    stream: &str,
) -> Result<HashMap<String, Checkpoint>, sqlx::Error> {
    let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
        "SELECT shard_id, sequence_number, finished FROM strangler_consumer_shards
         WHERE consumer = $1 AND stream = $2",
    )
    .bind(consumer)
    .bind(stream)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(shard, sequence_number, finished)| {
            let finished = finished != 0;
            (
                shard,
                Checkpoint {
                    sequence_number,
                    finished,
                },
            )
        })
        .collect())
}

/// Records an event id as applied; false when it already was (the event is then skipped).
pub(crate) async fn first_time(
    tx: &mut AnyConnection,
    consumer: &str,
    event_id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO strangler_consumer_applied (consumer, event_id, applied_ms) VALUES ($1, $2, $3)
         ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id)
    .bind(now_ms())
    .execute(tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Stores a shard's position (and whether it was read to its end).
pub(crate) async fn save(
    tx: &mut AnyConnection,
    consumer: &str,
    stream: &str,
    shard_id: &str,
    at: &Checkpoint,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO strangler_consumer_shards
             (consumer, stream, shard_id, sequence_number, finished, updated_ms)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (consumer, stream, shard_id) DO UPDATE SET
             sequence_number = excluded.sequence_number,
             finished = excluded.finished,
             updated_ms = excluded.updated_ms",
    )
    .bind(consumer)
    .bind(stream)
    .bind(shard_id)
    .bind(at.sequence_number.as_deref())
    .bind(i64::from(at.finished))
    .bind(now_ms())
    .execute(tx)
    .await?;
    Ok(())
}

/// Forgets applied ids older than `keep_ms` (an event re-published after that is applied again).
pub(crate) async fn prune(
    pool: &AnyPool,
    consumer: &str,
    keep_ms: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM strangler_consumer_applied WHERE consumer = $1 AND applied_ms < $2",
    )
    .bind(consumer)
    .bind(now_ms() - keep_ms)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
