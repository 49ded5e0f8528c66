//! The lease table (PostgreSQL only: a SQLite database belongs to one instance): one row per
//! shard of a consumer name and stream, with the instance holding it and a counter its holder
//! bumps at every renewal. Every round an instance renews what it holds, reads the table, and
//! takes or steals what [`crate::balance::plan`] says, each by a write conditional on the
//! counter it read (of two instances reaching for one lease, one wins). A batch's transaction
//! fences its checkpoint with [`fence`]: it commits only while the row still names this
//! instance, and the row stays locked until it commits, so a lease moves only between batches.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use sqlx::{AnyConnection, AnyPool};

use crate::balance::{self, Expiry, Lease};

pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS strangler_consumer_leases (
        consumer TEXT NOT NULL,
        stream TEXT NOT NULL,
        shard_id TEXT NOT NULL,
        owner TEXT,
        counter BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (consumer, stream, shard_id))";

/// A batch's checkpoint was refused: the shard's lease is no longer this instance's.
#[derive(Debug, thiserror::Error)]
#[error("the lease of shard {0} moved to another instance: the batch was not committed")]
pub struct LeaseLost(pub String);

/// One instance's side of the table.
pub(crate) struct Leases {
    pool: AnyPool,
    consumer: String,
    stream: String,
    me: Arc<str>,
    expiry: Expiry,
    started: Instant,
}

/// What a round left this instance with.
pub(crate) struct Round {
    pub held: HashSet<String>,
    /// Leases taken or stolen in this round.
    pub changes: u64,
}

impl Leases {
    pub(crate) fn new(
        pool: AnyPool,
        consumer: &str,
        stream: &str,
        me: &str,
        failover_ms: u64,
    ) -> Leases {
        Leases {
            pool,
            consumer: consumer.into(),
            stream: stream.into(),
            me: me.into(),
            expiry: Expiry::new(failover_ms),
            started: Instant::now(),
        }
    }

    /// This instance's name in the table.
    pub(crate) fn me(&self) -> Arc<str> {
        Arc::clone(&self.me)
    }

    /// Renews this instance's leases, adds rows for ready shards that have none, and takes or
    /// steals what the plan says. Returns the ready shards this instance holds.
    pub(crate) async fn round(&mut self, ready: &[&str]) -> Result<Round, sqlx::Error> {
        let (consumer, stream, me) = (&self.consumer, &self.stream, &*self.me);
        sqlx::query(
            "UPDATE strangler_consumer_leases SET counter = counter + 1
             WHERE consumer = $1 AND stream = $2 AND owner = $3",
        )
        .bind(consumer)
        .bind(stream)
        .bind(me)
        .execute(&self.pool)
        .await?;
        let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
            "SELECT shard_id, owner, counter FROM strangler_consumer_leases
             WHERE consumer = $1 AND stream = $2",
        )
        .bind(consumer)
        .bind(stream)
        .fetch_all(&self.pool)
        .await?;
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut leases: Vec<(Lease, bool)> = rows
            .into_iter()
            .map(|(shard, owner, counter)| {
                let lease = Lease {
                    shard,
                    owner,
                    counter,
                };
                let live = self.expiry.live(&lease, now);
                (lease, live)
            })
            .collect();
        self.expiry
            .retain(leases.iter().map(|(l, _)| l.shard.as_str()));
        // A ready shard the table does not know yet (new, or after a split) gets a free row.
        for shard in ready {
            if leases.iter().any(|(l, _)| l.shard == *shard) {
                continue;
            }
            sqlx::query(
                "INSERT INTO strangler_consumer_leases (consumer, stream, shard_id, owner, counter)
                 VALUES ($1, $2, $3, NULL, 0) ON CONFLICT (consumer, stream, shard_id) DO NOTHING",
            )
            .bind(consumer)
            .bind(stream)
            .bind(*shard)
            .execute(&self.pool)
            .await?;
            let free = Lease {
                shard: shard.to_string(),
                owner: None,
                counter: 0,
            };
            leases.push((free, false));
        }
        let plan = balance::plan(me, ready, &leases);
        let mut held: HashSet<String> = leases
            .iter()
            .filter(|(l, _)| l.owner.as_deref() == Some(me))
            .map(|(l, _)| l.shard.clone())
            .collect();
        let mut changes = 0;
        for shard in plan.take.iter().chain(plan.steal.iter()) {
            let Some((seen, _)) = leases.iter().find(|(l, _)| &l.shard == shard) else {
                continue;
            };
            let won = sqlx::query(
                "UPDATE strangler_consumer_leases SET owner = $4, counter = counter + 1
                 WHERE consumer = $1 AND stream = $2 AND shard_id = $3 AND counter = $5",
            )
            .bind(consumer)
            .bind(stream)
            .bind(shard)
            .bind(me)
            .bind(seen.counter)
            .execute(&self.pool)
            .await?
            .rows_affected()
                == 1;
            if won {
                tracing::info!(shard = %shard, from = ?seen.owner, instance = %me, "Shard lease taken");
                held.insert(shard.clone());
                changes += 1;
            }
        }
        held.retain(|s| ready.contains(&s.as_str()));
        Ok(Round { held, changes })
    }

    /// Hands this instance's leases back (a graceful stop): the others take them at their next
    /// round instead of waiting out the failover time.
    pub(crate) async fn release(&self) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE strangler_consumer_leases SET owner = NULL, counter = counter + 1
             WHERE consumer = $1 AND stream = $2 AND owner = $3",
        )
        .bind(&self.consumer)
        .bind(&self.stream)
        .bind(&*self.me)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// In a batch's transaction, before its checkpoint: whether the shard's lease is still `me`'s.
/// The update locks the row until the transaction ends, so a take or steal of it waits for the
/// batch (and then reads the batch's checkpoint), or wins first and this batch is refused.
pub(crate) async fn fence(
    tx: &mut AnyConnection,
    consumer: &str,
    stream: &str,
    shard: &str,
    me: &str,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE strangler_consumer_leases SET owner = owner
         WHERE consumer = $1 AND stream = $2 AND shard_id = $3 AND owner = $4",
    )
    .bind(consumer)
    .bind(stream)
    .bind(shard)
    .bind(me)
    .execute(tx)
    .await?
    .rows_affected();
    Ok(n == 1)
}
