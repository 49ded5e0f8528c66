//! What the relay sent each stream, minute by minute (`strangler_stream_usage`): Kinesis records
//! (an aggregate is one), events and bytes, the busiest second's records and bytes within the
//! minute, its first and last send, and the demand: the busiest second of events arriving and
//! the calls the shard limiter held back. `strangler capacity` sizes streams from it. Kept 35 days.

use serde::Serialize;
use sqlx::Row;

use crate::{Pool, Store, StoreError, now_ms, on_pool};

/// One minute of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Minute {
    pub stream: String,
    /// The minute's start (ms since the epoch).
    pub minute_ms: i64,
    pub records: i64,
    pub events: i64,
    pub bytes: i64,
    /// The busiest second's records and bytes.
    pub peak_records: i64,
    pub peak_bytes: i64,
    /// The first and last call of the minute that sent something (ms since the epoch).
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    /// The busiest second of events arriving (by creation time): what the stream was asked to
    /// carry, which the shard limiter may have held back.
    pub arrived_peak_events: i64,
    pub arrived_peak_bytes: i64,
    /// Calls the shard limiter held back (the stream's shards were at their write limits).
    pub held: i64,
}

const KEEP_MS: i64 = 35 * 86_400_000;

#[derive(Clone)]
pub struct Usage {
    store: Store,
}

impl Store {
    pub fn usage(&self) -> Usage {
        Usage {
            store: self.clone(),
        }
    }
}

impl Usage {
    /// Adds minutes to what is stored (a minute written twice sums its counts and keeps the
    /// larger peak), and forgets minutes older than 35 days.
    pub async fn add(&self, minutes: &[Minute]) -> Result<(), StoreError> {
        let (greatest, least) = match self.store.pool {
            Pool::Sqlite(_) => ("MAX", "MIN"),
            Pool::Postgres(_) => ("GREATEST", "LEAST"),
        };
        // A NULL first/last (no send in that write) leaves the other side's.
        let keep = |col: &str, f: &str| {
            format!(
                "{col} = {f}(COALESCE(strangler_stream_usage.{col}, excluded.{col}), \
                 COALESCE(excluded.{col}, strangler_stream_usage.{col}))"
            )
        };
        let sql = format!(
            "INSERT INTO strangler_stream_usage (stream, minute_ms, records, events, bytes, peak_records, peak_bytes, \
             first_ms, last_ms, arrived_peak_events, arrived_peak_bytes, held) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (stream, minute_ms) DO UPDATE SET \
             records = strangler_stream_usage.records + excluded.records, \
             events = strangler_stream_usage.events + excluded.events, \
             bytes = strangler_stream_usage.bytes + excluded.bytes, \
             peak_records = {greatest}(strangler_stream_usage.peak_records, excluded.peak_records), \
             peak_bytes = {greatest}(strangler_stream_usage.peak_bytes, excluded.peak_bytes), \
             {}, {}, \
             arrived_peak_events = {greatest}(strangler_stream_usage.arrived_peak_events, excluded.arrived_peak_events), \
             arrived_peak_bytes = {greatest}(strangler_stream_usage.arrived_peak_bytes, excluded.arrived_peak_bytes), \
             held = strangler_stream_usage.held + excluded.held",
            keep("first_ms", least),
            keep("last_ms", greatest)
        );
        on_pool!(&self.store.pool, |p| {
            let mut tx = p.begin().await?;
            for m in minutes {
                sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(&m.stream)
                    .bind(m.minute_ms)
                    .bind(m.records)
                    .bind(m.events)
                    .bind(m.bytes)
                    .bind(m.peak_records)
                    .bind(m.peak_bytes)
                    .bind(m.first_ms)
                    .bind(m.last_ms)
                    .bind(m.arrived_peak_events)
                    .bind(m.arrived_peak_bytes)
                    .bind(m.held)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("DELETE FROM strangler_stream_usage WHERE minute_ms < $1")
                .bind(now_ms() - KEEP_MS)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Every stored minute since `since_ms`, by stream and time.
    pub async fn since(&self, since_ms: i64) -> Result<Vec<Minute>, StoreError> {
        const SQL: &str = "SELECT stream, minute_ms, records, events, bytes, peak_records, peak_bytes, \
             first_ms, last_ms, arrived_peak_events, arrived_peak_bytes, held FROM strangler_stream_usage WHERE minute_ms >= $1 ORDER BY stream, minute_ms";
        let rows = on_pool!(&self.store.pool, |p| {
            let rows = sqlx::query(SQL).bind(since_ms).fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    Ok::<_, sqlx::Error>(Minute {
                        stream: r.try_get("stream")?,
                        minute_ms: r.try_get("minute_ms")?,
                        records: r.try_get("records")?,
                        events: r.try_get("events")?,
                        bytes: r.try_get("bytes")?,
                        peak_records: r.try_get("peak_records")?,
                        peak_bytes: r.try_get("peak_bytes")?,
                        first_ms: r.try_get("first_ms")?,
                        last_ms: r.try_get("last_ms")?,
                        arrived_peak_events: r.try_get("arrived_peak_events")?,
                        arrived_peak_bytes: r.try_get("arrived_peak_bytes")?,
                        held: r.try_get("held")?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        });
        Ok(rows)
    }
}
