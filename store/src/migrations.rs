//! Every table the proxy keeps, created here and nowhere else: an ordered list of migrations,
//! each applied once and recorded in `strangler_schema`. Replicas starting together on
//! PostgreSQL apply them one at a time (under the [`Lock::MIGRATE`] lock).
//!
//! A migration's statements are written for both databases, with the few column types that
//! differ filled in per dialect. Add new tables as a new migration at the end; never edit one
//! that has shipped. (Migration 1 uses `IF NOT EXISTS`: stores made before this list existed
//! already hold its tables.)

use crate::lease::Lock;
use crate::{Pool, StoreError, now_ms, on_pool};

/// The column types that differ between the two databases.
struct Dialect {
    /// An auto-incrementing 64-bit primary key.
    serial: &'static str,
    blob: &'static str,
}

struct Migration {
    version: i64,
    name: &'static str,
    statements: fn(&Dialect) -> Vec<String>,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "outbox, dead letters, published archive",
        statements: outbox_tables,
    },
    Migration {
        version: 2,
        name: "shadow mismatches",
        statements: mismatch_tables,
    },
    Migration {
        version: 3,
        name: "rollout state, audit log, evidence windows, kill switch",
        statements: rollout_tables,
    },
    Migration {
        version: 4,
        name: "replays: the archive keeps each event's route; replay jobs",
        statements: replay_tables,
    },
    Migration {
        version: 5,
        name: "stream usage per minute (strangler capacity)",
        statements: |_| {
            vec![
                "CREATE TABLE strangler_stream_usage (stream TEXT NOT NULL, minute_ms BIGINT NOT NULL, \
                 records BIGINT NOT NULL, events BIGINT NOT NULL, bytes BIGINT NOT NULL, \
                 peak_records BIGINT NOT NULL, peak_bytes BIGINT NOT NULL, PRIMARY KEY (stream, minute_ms))"
                    .into(),
            ]
        },
    },
    Migration {
        version: 6,
        name: "fenced leases: each holder's generation and heartbeat",
        statements: |_| {
            vec![
                "CREATE TABLE strangler_leases (name TEXT PRIMARY KEY, generation BIGINT NOT NULL, \
                 holder BIGINT NOT NULL, renewed_ms BIGINT NOT NULL)"
                    .into(),
            ]
        },
    },
    Migration {
        version: 7,
        name: "replayed copies marked with their replay job; replays select originals unless asked",
        statements: |_| {
            vec![
                "ALTER TABLE strangler_outbox ADD COLUMN replay_id BIGINT".into(),
                "ALTER TABLE strangler_published ADD COLUMN replay_id BIGINT".into(),
                "ALTER TABLE strangler_dead_letters ADD COLUMN replay_id BIGINT".into(),
                "ALTER TABLE strangler_replays ADD COLUMN include_replayed BIGINT NOT NULL DEFAULT 0"
                    .into(),
            ]
        },
    },
    Migration {
        version: 8,
        name: "stream usage: first and last send of a minute, arrival peaks, limiter holds",
        statements: |_| {
            [
                "first_ms BIGINT",
                "last_ms BIGINT",
                "arrived_peak_events BIGINT NOT NULL DEFAULT 0",
                "arrived_peak_bytes BIGINT NOT NULL DEFAULT 0",
                "held BIGINT NOT NULL DEFAULT 0",
            ]
            .iter()
            .map(|c| format!("ALTER TABLE strangler_stream_usage ADD COLUMN {c}"))
            .collect()
        },
    },
];

fn replay_tables(d: &Dialect) -> Vec<String> {
    let Dialect { serial, .. } = d;
    vec![
        "ALTER TABLE strangler_published ADD COLUMN route TEXT".into(),
        format!(
            "CREATE TABLE strangler_replays (id {serial}, stream TEXT, route TEXT, type TEXT, \
             since_ms BIGINT NOT NULL, until_ms BIGINT, to_stream TEXT, state TEXT NOT NULL, total BIGINT NOT NULL, \
             done BIGINT NOT NULL, cursor_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL, actor TEXT NOT NULL, \
             error TEXT, created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL)"
        ),
    ]
}

fn rollout_tables(d: &Dialect) -> Vec<String> {
    let Dialect { serial, .. } = d;
    vec![
        "CREATE TABLE strangler_rollouts (context TEXT PRIMARY KEY, state TEXT NOT NULL, plan TEXT NOT NULL, \
         generation BIGINT NOT NULL, updated_ms BIGINT NOT NULL)"
            .into(),
        format!(
            "CREATE TABLE strangler_rollout_audit (id {serial}, at_ms BIGINT NOT NULL, context TEXT NOT NULL, \
             actor TEXT NOT NULL, from_weight_bp BIGINT NOT NULL, to_weight_bp BIGINT NOT NULL, phase TEXT NOT NULL, \
             reason TEXT NOT NULL, gates TEXT NOT NULL)"
        ),
        "CREATE INDEX strangler_rollout_audit_context ON strangler_rollout_audit (context, id)".into(),
        "CREATE TABLE strangler_rollout_evidence (replica TEXT NOT NULL, context TEXT NOT NULL, \
         window_ms BIGINT NOT NULL, figures TEXT NOT NULL, PRIMARY KEY (replica, context, window_ms))"
            .into(),
        "CREATE INDEX strangler_rollout_evidence_window ON strangler_rollout_evidence (context, window_ms)".into(),
        "CREATE TABLE strangler_kill_switch (id BIGINT PRIMARY KEY, on_ BOOLEAN NOT NULL, actor TEXT NOT NULL, \
         at_ms BIGINT NOT NULL)"
            .into(),
    ]
}

fn mismatch_tables(d: &Dialect) -> Vec<String> {
    let Dialect { serial, blob } = d;
    vec![
        format!(
            "CREATE TABLE strangler_mismatches (id {serial}, route TEXT NOT NULL, at_ms BIGINT NOT NULL, \
             trace_id TEXT, method TEXT NOT NULL, path TEXT NOT NULL, \
             request_headers TEXT NOT NULL, request_body {blob} NOT NULL, request_truncated BOOLEAN NOT NULL, \
             expected_status BIGINT NOT NULL, expected_headers TEXT NOT NULL, expected_body {blob} NOT NULL, \
             expected_truncated BOOLEAN NOT NULL, actual_status BIGINT NOT NULL, actual_headers TEXT NOT NULL, \
             actual_body {blob} NOT NULL, actual_truncated BOOLEAN NOT NULL, differences TEXT NOT NULL)"
        ),
        "CREATE INDEX strangler_mismatches_route ON strangler_mismatches (route, id)".into(),
        "CREATE INDEX strangler_mismatches_at ON strangler_mismatches (at_ms)".into(),
        "CREATE TABLE strangler_mismatch_patterns (id BIGINT NOT NULL, route TEXT NOT NULL, pattern TEXT NOT NULL)".into(),
        "CREATE INDEX strangler_mismatch_patterns_id ON strangler_mismatch_patterns (id)".into(),
        "CREATE INDEX strangler_mismatch_patterns_pattern ON strangler_mismatch_patterns (pattern, id)".into(),
    ]
}

fn outbox_tables(d: &Dialect) -> Vec<String> {
    let Dialect { serial, blob } = d;
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS strangler_outbox (seq {serial}, id TEXT NOT NULL, route TEXT NOT NULL, \
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
    ]
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS strangler_schema \
    (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_ms BIGINT NOT NULL)";

/// Applies the migrations the store has not had yet, each in a transaction of its own.
pub(crate) async fn apply(pool: &Pool) -> Result<(), StoreError> {
    let dialect = match pool {
        Pool::Sqlite(_) => Dialect {
            serial: "INTEGER PRIMARY KEY AUTOINCREMENT",
            blob: "BLOB",
        },
        Pool::Postgres(_) => Dialect {
            serial: "BIGSERIAL PRIMARY KEY",
            blob: "BYTEA",
        },
    };
    on_pool!(pool, |p| {
        let mut tx = p.begin().await?;
        if matches!(pool, Pool::Postgres(_)) {
            // Held to the end of the transaction: one replica migrates at a time.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(Lock::MIGRATE.key())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(SCHEMA).execute(&mut *tx).await?;
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM strangler_schema")
            .fetch_all(&mut *tx)
            .await?;
        for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
            for s in (m.statements)(&dialect) {
                sqlx::query(sqlx::AssertSqlSafe(s))
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "INSERT INTO strangler_schema (version, name, applied_ms) VALUES ($1, $2, $3)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_ascending_and_unique() {
        let v: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert!(v.windows(2).all(|w| w[0] < w[1]), "{v:?}");
        assert_eq!(v.first(), Some(&1));
    }

    #[tokio::test]
    async fn applying_twice_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = crate::Store::connect(&url).await.unwrap();
        apply(&store.pool).await.unwrap();
        let Pool::Sqlite(p) = &store.pool else {
            unreachable!()
        };
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM strangler_schema")
            .fetch_one(p)
            .await
            .unwrap();
        assert_eq!(n, MIGRATIONS.len() as i64);
    }
}
