//! The controller: on the replica holding the store's rollout lease (at once with SQLite), every
//! [`super::SYNC_EVERY`], each context with a plan is started, rebased after a plan edit, or
//! checked (`strangler_rollout::decide`) on every replica's figures since its last check. Every
//! transition is stored with its audit entry in one transaction, and only if no command changed
//! the state meanwhile (the stored generation is compared).

use std::sync::Arc;

use prometheus::IntGauge;
use strangler_rollout::{Decision, GateResult, Plan, State};
use strangler_store::{Fence, Lease, NewAudit, StoreError, Writer};
use tracing::{info, warn};

use super::Rollouts;
use crate::reload::LiveRules;

/// Evidence windows are kept this long at least (and three intervals of the longest plan).
const KEEP_EVIDENCE_MS: i64 = 3_600_000;

/// Holds the lease, then decides until the process stops. A lost lease (its session gone:
/// terminated, a database restart or failover, an idle timeout) stops the deciding at once, and
/// the replica waits to take it again; the store refuses any transition the old holder still
/// tries to write.
pub async fn run(rollouts: Arc<Rollouts>, rules: Arc<LiveRules>, held: IntGauge) {
    loop {
        let mut lease = loop {
            match rollouts.store.acquire(Lease::ROLLOUT).await {
                Ok(l) => break l,
                Err(e) => {
                    warn!(error = %e, "Cannot take the rollout lease; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        };
        held.set(1);
        info!(replica = %rollouts.replica, "This replica drives the rollouts");
        let fence = lease.fence();
        tokio::select! {
            () = rollouts.drive(&rules, fence.as_ref()) => {}
            () = lease.lost() => {}
        }
        held.set(0);
        drop(lease);
        warn!(replica = %rollouts.replica, "This replica lost the rollout lease and stopped driving the rollouts; taking it again");
    }
}

/// The plan as stored beside a state (to notice an edit).
pub(crate) fn plan_key(plan: &Plan) -> String {
    serde_json::to_string(plan).unwrap_or_default()
}

impl Rollouts {
    /// Decides every [`super::SYNC_EVERY`] until a write finds the lease gone.
    async fn drive(&self, rules: &LiveRules, fence: Option<&Fence>) {
        let mut rounds: u64 = 0;
        loop {
            match self.decide_all(rules, fence).await {
                Ok(()) => {}
                Err(StoreError::LeaseLost(_)) => return,
                Err(e) => warn!(error = %e, "Rollout round failed; retrying"),
            }
            rounds += 1;
            if rounds.is_multiple_of(120) {
                self.prune(rules).await;
            }
            tokio::time::sleep(super::SYNC_EVERY).await;
        }
    }

    async fn decide_all(&self, rules: &LiveRules, fence: Option<&Fence>) -> Result<(), StoreError> {
        let by = Writer::Controller(fence);
        let current = rules.current();
        let store = self.store.rollouts();
        // The kill switch freezes every rollout: nothing starts, steps, rebases or rolls back
        // while it is on, so turning it off never raises a context above where it was.
        if store.kill_switch().await?.on {
            return Ok(());
        }
        let stored = store.all().await?;
        let now = strangler_store::now_ms();
        for c in current.rules.contexts() {
            let Some(plan) = &c.rollout else { continue };
            let key = plan_key(plan);
            let Some(s) = stored.iter().find(|s| s.context == c.name) else {
                let state = State::start(plan, now);
                let audit = self.audit(&c.name, 0, &state, "rollout started", &[]);
                if store
                    .save(&c.name, &state, &key, None, Some(&audit), by)
                    .await?
                {
                    self.transition(&c.name, "started");
                }
                continue;
            };
            if s.plan != key {
                let state = strangler_rollout::rebase(plan, &s.state);
                let audit = (state.weight_bp != s.state.weight_bp || state.phase != s.state.phase)
                    .then(|| {
                        self.audit(
                            &c.name,
                            s.state.weight_bp,
                            &state,
                            "the plan was edited",
                            &[],
                        )
                    });
                if store
                    .save(
                        &c.name,
                        &state,
                        &key,
                        Some(s.state.generation),
                        audit.as_ref(),
                        by,
                    )
                    .await?
                    && audit.is_some()
                {
                    self.transition(&c.name, "plan_edited");
                }
                continue;
            }
            // Progressing contexts are checked; completed ones stay guarded.
            if !matches!(
                s.state.phase,
                strangler_rollout::Phase::Progressing | strangler_rollout::Phase::Completed
            ) {
                continue;
            }
            if !plan.check_due(&s.state, now) {
                continue;
            }
            let mut recent = store.evidence(&c.name, s.state.checked_ms).await?;
            // The whole step's figures: they decide once the step may be left, and until then
            // say how much evidence it has (kept in the state's last check).
            let mut step = if s.state.phase == strangler_rollout::Phase::Progressing {
                store.evidence(&c.name, s.state.since_ms).await?
            } else {
                strangler_rollout::Evidence::default()
            };
            if let Some(w) = &plan.gates.webhook {
                let answer =
                    super::webhook::call(w, &c.name, &s.state, &recent, step.service.requests)
                        .await;
                step.webhook = Some(answer.clone());
                recent.webhook = Some(answer);
            }
            let (decision, gates, next) =
                strangler_rollout::decide(plan, &s.state, &recent, &step, now);
            self.metrics.gates(&c.name, &gates);
            let (reason, audit) = match &decision {
                Decision::Hold { .. } => ("", None),
                Decision::Step { .. } => (
                    "step",
                    Some(self.audit(&c.name, s.state.weight_bp, &next, "every gate held", &gates)),
                ),
                Decision::Rollback { reason } => (
                    "rollback",
                    Some(self.audit(&c.name, s.state.weight_bp, &next, reason, &gates)),
                ),
            };
            if store
                .save(
                    &c.name,
                    &next,
                    &key,
                    Some(s.state.generation),
                    audit.as_ref(),
                    by,
                )
                .await?
                && audit.is_some()
            {
                match &decision {
                    Decision::Rollback { reason } => {
                        warn!(context = %c.name, reason = %reason, "Rollout rolled back");
                    }
                    _ => {
                        info!(context = %c.name, weight = %strangler_rollout::percent(next.weight_bp), "Rollout stepped");
                    }
                }
                self.transition(&c.name, reason);
            }
        }
        Ok(())
    }

    /// An audit entry for a transition the controller made.
    fn audit(
        &self,
        context: &str,
        from: u16,
        to: &State,
        reason: &str,
        gates: &[GateResult],
    ) -> NewAudit {
        NewAudit {
            context: context.to_string(),
            actor: "controller".into(),
            from_weight_bp: from,
            to_weight_bp: to.weight_bp,
            phase: to.phase.as_str().into(),
            reason: reason.into(),
            gates: serde_json::to_value(gates).unwrap_or_default(),
        }
    }

    pub(crate) fn transition(&self, context: &str, reason: &str) {
        self.metrics
            .transitions
            .with_label_values(&[context, reason])
            .inc();
    }

    async fn prune(&self, rules: &LiveRules) {
        let longest = rules
            .current()
            .rules
            .contexts()
            .iter()
            .filter_map(|c| c.rollout.as_ref())
            .map(|p| {
                i64::try_from(p.interval_ms)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(3)
            })
            .max()
            .unwrap_or(0);
        let before = strangler_store::now_ms() - KEEP_EVIDENCE_MS.max(longest);
        if let Err(e) = self.store.rollouts().prune_evidence(before).await {
            warn!(error = %e, "Pruning rollout figures failed; will retry");
        }
    }
}
