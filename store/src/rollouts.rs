//! Gated rollouts' tables: each context's rollout state (with the plan it was decided under),
//! the audit log of every transition, the evidence windows each replica writes for the
//! controller, and the kill switch. The decisions themselves are `strangler-rollout`'s.

use serde::Serialize;
use sqlx::Row;
use strangler_rollout::{Evidence, State};

use crate::lease::CheckFence;
use crate::{Store, StoreError, on_pool};

/// One transition, automatic or by hand.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: i64,
    /// The context, or `*` for the kill switch.
    pub context: String,
    /// `controller` for automatic decisions, else who asked (the admin API's caller).
    pub actor: String,
    pub from_weight_bp: i64,
    pub to_weight_bp: i64,
    pub phase: String,
    pub reason: String,
    /// The gate figures behind an automatic decision.
    pub gates: serde_json::Value,
}

/// A transition to record (its id and time are the store's).
#[derive(Debug, Clone)]
pub struct NewAudit {
    pub context: String,
    pub actor: String,
    pub from_weight_bp: u16,
    pub to_weight_bp: u16,
    pub phase: String,
    pub reason: String,
    pub gates: serde_json::Value,
}

/// A context's stored rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub context: String,
    pub state: State,
    /// The plan the state was decided under (its JSON), to notice a rule edit.
    pub plan: String,
}

/// Who writes a rollout state: a person's command, or the controller under its lease. The
/// controller's writes are refused once its lease is another's (`StoreError::LeaseLost`) and
/// are not made while the kill switch is on (not stored: `save` returns false).
#[derive(Debug, Clone, Copy)]
pub enum Writer<'a> {
    Person,
    Controller(Option<&'a crate::Fence>),
}

/// The kill switch as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KillSwitch {
    pub on: bool,
    pub actor: String,
    pub at_ms: i64,
}

#[derive(Clone)]
pub struct RolloutTables {
    store: Store,
}

impl Store {
    pub fn rollouts(&self) -> RolloutTables {
        RolloutTables {
            store: self.clone(),
        }
    }
}

const AUDIT: &str = "INSERT INTO strangler_rollout_audit (at_ms, context, actor, from_weight_bp, to_weight_bp, \
    phase, reason, gates) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

impl RolloutTables {
    /// Every stored rollout.
    pub async fn all(&self) -> Result<Vec<Stored>, StoreError> {
        const SQL: &str = "SELECT context, state, plan FROM strangler_rollouts ORDER BY context";
        let rows = on_pool!(&self.store.pool, |p| sqlx::query(SQL)
            .fetch_all(p)
            .await?
            .iter()
            .map(|r| Ok::<_, sqlx::Error>((
                r.try_get::<String, _>("context")?,
                r.try_get::<String, _>("state")?,
                r.try_get::<String, _>("plan")?
            )))
            .collect::<Result<Vec<_>, _>>()?);
        Ok(rows
            .into_iter()
            .filter_map(|(context, state, plan)| {
                let state = serde_json::from_str(&state).ok()?;
                Some(Stored {
                    context,
                    state,
                    plan,
                })
            })
            .collect())
    }

    /// Stores a context's state (and the plan it is under) and, in the same transaction, the
    /// transition that led to it, unless another writer got there first: `expected` is the
    /// generation the change was decided from (`None`: the context has no stored state yet).
    /// Returns whether it was stored.
    pub async fn save(
        &self,
        context: &str,
        state: &State,
        plan: &str,
        expected: Option<u64>,
        audit: Option<&NewAudit>,
        writer: Writer<'_>,
    ) -> Result<bool, StoreError> {
        const KILLED: &str = "SELECT on_ FROM strangler_kill_switch WHERE id = 1";
        const INSERT: &str = "INSERT INTO strangler_rollouts (context, state, plan, generation, updated_ms) \
            VALUES ($1, $2, $3, $4, $5) ON CONFLICT (context) DO NOTHING";
        const UPDATE: &str = "UPDATE strangler_rollouts SET state = $2, plan = $3, generation = $4, \
            updated_ms = $5 WHERE context = $1 AND generation = $6";
        let json = serde_json::to_string(state).unwrap_or_default();
        let now = crate::now_ms();
        let generation = i64::try_from(state.generation).unwrap_or(i64::MAX);
        let saved = on_pool!(&self.store.pool, |p| {
            let mut tx = p.begin().await?;
            if let Writer::Controller(fence) = writer {
                if let Some(f) = fence {
                    tx.check_fence(f).await?;
                }
                let killed: Option<bool> =
                    sqlx::query_scalar(KILLED).fetch_optional(&mut *tx).await?;
                if killed == Some(true) {
                    return Ok(false);
                }
            }
            let q = match expected {
                None => sqlx::query(INSERT),
                Some(_) => sqlx::query(UPDATE),
            };
            let mut q = q
                .bind(context)
                .bind(&json)
                .bind(plan)
                .bind(generation)
                .bind(now);
            if let Some(g) = expected {
                q = q.bind(i64::try_from(g).unwrap_or(i64::MAX));
            }
            let saved = q.execute(&mut *tx).await?.rows_affected() == 1;
            if saved && let Some(a) = audit {
                sqlx::query(AUDIT)
                    .bind(now)
                    .bind(&a.context)
                    .bind(&a.actor)
                    .bind(i64::from(a.from_weight_bp))
                    .bind(i64::from(a.to_weight_bp))
                    .bind(&a.phase)
                    .bind(&a.reason)
                    .bind(a.gates.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            saved
        });
        Ok(saved)
    }

    /// The audit log, newest first: `limit` entries (1–1,000) before id `before`, of one
    /// context when given.
    pub async fn audit(
        &self,
        context: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        const SQL: &str = "SELECT id, at_ms, context, actor, from_weight_bp, to_weight_bp, phase, reason, gates \
            FROM strangler_rollout_audit WHERE (CAST($1 AS TEXT) IS NULL OR context = $1) \
            AND (CAST($2 AS BIGINT) IS NULL OR id < $2) ORDER BY id DESC LIMIT $3";
        let limit = limit.clamp(1, 1000);
        let out = on_pool!(&self.store.pool, |p| sqlx::query(SQL)
            .bind(context)
            .bind(before)
            .bind(limit)
            .fetch_all(p)
            .await?
            .iter()
            .map(|r| Ok::<_, sqlx::Error>(AuditEntry {
                id: r.try_get("id")?,
                at_ms: r.try_get("at_ms")?,
                context: r.try_get("context")?,
                actor: r.try_get("actor")?,
                from_weight_bp: r.try_get("from_weight_bp")?,
                to_weight_bp: r.try_get("to_weight_bp")?,
                phase: r.try_get("phase")?,
                reason: r.try_get("reason")?,
                gates: serde_json::from_str(&r.try_get::<String, _>("gates")?)
                    .unwrap_or(serde_json::Value::Null),
            }))
            .collect::<Result<Vec<_>, _>>()?);
        Ok(out)
    }

    /// Writes this replica's figures for the window starting at `window_ms`, per context
    /// (replacing what it wrote for that window before).
    pub async fn record_evidence(
        &self,
        replica: &str,
        window_ms: i64,
        figures: &[(String, Evidence)],
    ) -> Result<(), StoreError> {
        const UPSERT: &str = "INSERT INTO strangler_rollout_evidence (replica, context, window_ms, figures) \
            VALUES ($1, $2, $3, $4) ON CONFLICT (replica, context, window_ms) DO UPDATE SET figures = excluded.figures";
        on_pool!(&self.store.pool, |p| {
            let mut tx = p.begin().await?;
            for (context, e) in figures {
                sqlx::query(UPSERT)
                    .bind(replica)
                    .bind(context)
                    .bind(window_ms)
                    .bind(serde_json::to_string(e).unwrap_or_default())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Every replica's figures for `context` in windows starting at or after `since_ms`, summed.
    pub async fn evidence(&self, context: &str, since_ms: i64) -> Result<Evidence, StoreError> {
        const SQL: &str =
            "SELECT figures FROM strangler_rollout_evidence WHERE context = $1 AND window_ms >= $2";
        let rows: Vec<String> = on_pool!(&self.store.pool, |p| sqlx::query_scalar(SQL)
            .bind(context)
            .bind(since_ms)
            .fetch_all(p)
            .await?);
        let mut sum = Evidence::default();
        for r in rows {
            if let Ok(e) = serde_json::from_str::<Evidence>(&r) {
                sum.merge(&e);
            }
        }
        Ok(sum)
    }

    /// Drops evidence windows older than `before_ms`.
    pub async fn prune_evidence(&self, before_ms: i64) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM strangler_rollout_evidence WHERE window_ms < $1";
        let n = on_pool!(&self.store.pool, |p| sqlx::query(SQL)
            .bind(before_ms)
            .execute(p)
            .await?
            .rows_affected());
        Ok(n)
    }

    /// The kill switch; off when never set.
    pub async fn kill_switch(&self) -> Result<KillSwitch, StoreError> {
        const SQL: &str = "SELECT on_, actor, at_ms FROM strangler_kill_switch WHERE id = 1";
        let row = on_pool!(&self.store.pool, |p| sqlx::query(SQL)
            .fetch_optional(p)
            .await?
            .map(|r| Ok::<_, sqlx::Error>(KillSwitch {
                on: r.try_get::<bool, _>("on_")?,
                actor: r.try_get("actor")?,
                at_ms: r.try_get("at_ms")?,
            }))
            .transpose()?);
        Ok(row.unwrap_or(KillSwitch {
            on: false,
            actor: String::new(),
            at_ms: 0,
        }))
    }

    /// Turns the kill switch on or off and records what that changed in the audit log: one
    /// entry per context, from its weight to 0 (on) or back (off), `contexts` giving each
    /// context's weight and phase; one `*` entry when there are none. Setting it to what it
    /// already is changes nothing and records nothing. Returns whether it changed.
    pub async fn set_kill_switch(
        &self,
        on: bool,
        actor: &str,
        contexts: &[(String, u16, String)],
    ) -> Result<bool, StoreError> {
        // A row that already says `on` is left alone (no entry): two replicas turning it on at
        // once record it once.
        const UPSERT: &str = "INSERT INTO strangler_kill_switch (id, on_, actor, at_ms) VALUES (1, $1, $2, $3) \
            ON CONFLICT (id) DO UPDATE SET on_ = excluded.on_, actor = excluded.actor, at_ms = excluded.at_ms \
            WHERE strangler_kill_switch.on_ <> excluded.on_";
        let now = crate::now_ms();
        let (phase, reason) = if on {
            (
                "kill_switch_on",
                "kill switch on: every context to the monolith",
            )
        } else {
            (
                "kill_switch_off",
                "kill switch off: back to the weight it had",
            )
        };
        let star = [("*".to_string(), 0, phase.to_string())];
        let entries: &[(String, u16, String)] = if contexts.is_empty() { &star } else { contexts };
        let changed = on_pool!(&self.store.pool, |p| {
            let mut tx = p.begin().await?;
            let changed = sqlx::query(UPSERT)
                .bind(on)
                .bind(actor)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if changed {
                for (context, weight, state) in entries {
                    let (from, to) = if on { (*weight, 0) } else { (0, *weight) };
                    sqlx::query(AUDIT)
                        .bind(now)
                        .bind(context)
                        .bind(actor)
                        .bind(i64::from(from))
                        .bind(i64::from(to))
                        .bind(if context == "*" {
                            phase
                        } else {
                            state.as_str()
                        })
                        .bind(reason)
                        .bind("null")
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            changed
        });
        Ok(changed)
    }
}
