//! Dead letters and depth: events that will not be published, and what is waiting, as the relay
//! records them and the admin API shows and re-drives them.

use sqlx::Row;

use super::{BeginEnqueue, DeadLetter, Outbox, StreamDepth};
use crate::lease::CheckFence;
use crate::{StoreError, now_ms, on_pool};

impl Outbox {
    /// Moves an event to the dead-letter table.
    pub async fn dead_letter(&self, seq: i64, reason: &str) -> Result<(), StoreError> {
        const COPY: &str = "INSERT INTO strangler_dead_letters (seq, id, route, stream, partition_key, payload, created_ms, attempts, reason, dead_ms, replay_id) \
            SELECT seq, id, route, stream, partition_key, payload, created_ms, attempts + 1, $1, $2, replay_id FROM strangler_outbox WHERE seq = $3";
        let now = now_ms();
        on_pool!(&self.store.pool, |p| {
            let mut tx = p.begin().await?;
            // Fenced by the relay's lease, in the same transaction.
            if let Some(f) = &self.fence {
                tx.check_fence(f).await?;
            }
            sqlx::query(COPY)
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

    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<DeadLetter>, StoreError> {
        const SQL: &str = "SELECT seq, id, stream, partition_key, attempts, reason, dead_ms FROM strangler_dead_letters ORDER BY seq LIMIT $1";
        let dead = on_pool!(&self.store.pool, |p| {
            let rows = sqlx::query(SQL).bind(limit).fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    Ok::<_, sqlx::Error>(DeadLetter {
                        seq: r.try_get("seq")?,
                        id: r.try_get("id")?,
                        stream: r.try_get("stream")?,
                        partition_key: r.try_get("partition_key")?,
                        attempts: r.try_get("attempts")?,
                        reason: r.try_get("reason")?,
                        dead_ms: r.try_get("dead_ms")?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        });
        Ok(dead)
    }

    /// Puts dead letters back in the outbox (same id, fresh tries); `None` re-drives them all.
    /// Returns how many moved.
    pub async fn redrive(&self, seqs: Option<&[i64]>) -> Result<u64, StoreError> {
        let filter = match seqs {
            Some([]) => return Ok(0),
            Some(s) => {
                let list: Vec<String> = s.iter().map(i64::to_string).collect();
                format!("WHERE seq IN ({})", list.join(","))
            }
            None => String::new(),
        };
        let now = now_ms();
        let copy = format!(
            "INSERT INTO strangler_outbox (id, route, stream, partition_key, payload, created_ms, attempts, next_attempt_ms, replay_id) \
             SELECT id, route, stream, partition_key, payload, created_ms, 0, {now}, replay_id FROM strangler_dead_letters {filter} ORDER BY seq"
        );
        let delete = format!("DELETE FROM strangler_dead_letters {filter}");
        let moved = on_pool!(&self.store.pool, |p| {
            let mut tx = p.begin_enqueue().await?;
            let n = sqlx::query(sqlx::AssertSqlSafe(copy))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query(sqlx::AssertSqlSafe(delete))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            n
        });
        self.added_outside_writer();
        Ok(moved)
    }

    /// Waiting events and the age of the oldest, per stream. Scans the table: the admin API
    /// asks on demand; the relay's gauges come from its working set instead.
    pub async fn depth(&self) -> Result<Vec<StreamDepth>, StoreError> {
        const SQL: &str = "SELECT stream, COUNT(*) AS depth, MIN(created_ms) AS oldest_ms FROM strangler_outbox GROUP BY stream ORDER BY stream";
        let now = now_ms();
        let depths = on_pool!(&self.store.reads, |p| {
            let rows = sqlx::query(SQL).fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    let oldest: i64 = r.try_get("oldest_ms")?;
                    Ok::<_, sqlx::Error>(StreamDepth {
                        stream: r.try_get("stream")?,
                        depth: r.try_get("depth")?,
                        oldest_age_seconds: (now - oldest).max(0) as f64 / 1000.0,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        });
        Ok(depths)
    }
}
