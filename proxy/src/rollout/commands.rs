//! What people do to rollouts (the admin API and `strangler rollout …` call these): pause,
//! resume, promote, roll back, set a weight, and the kill switch. Each change is stored with
//! its audit entry; one that raced with the controller is retried on the fresh state.

use serde::Serialize;
use strangler_rollout::{Command, Plan, State};
use strangler_rules::RuleSet;
use strangler_store::{NewAudit, StoreError, Stored};

use super::Rollouts;
use super::controller::plan_key;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("no context `{0}`")]
    NoContext(String),
    #[error("context `{0}` has no rollout plan (its weight is set in the rule file)")]
    NoPlan(String),
    #[error(transparent)]
    Refused(#[from] strangler_rollout::Refused),
    #[error("the rollout kept changing under the command; try again")]
    Conflict,
    #[error(
        "the kill switch is on: no rollout moves traffic until it is off (pause and rollback still apply)"
    )]
    Frozen,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One context as `GET /api/rollouts` shows it.
#[derive(Debug, Serialize)]
pub struct ContextStatus {
    pub context: String,
    pub service: String,
    pub routes: Vec<String>,
    /// In force on this replica now, percent (0 under the kill switch).
    pub weight: f64,
    pub plan: Option<Plan>,
    pub state: Option<State>,
}

impl Rollouts {
    /// Applies `cmd` to `context`'s rollout as `actor`.
    pub async fn command(
        &self,
        rules: &RuleSet,
        context: &str,
        cmd: Command,
        actor: &str,
    ) -> Result<State, CommandError> {
        let c = rules
            .context(context)
            .ok_or_else(|| CommandError::NoContext(context.into()))?;
        let plan = c
            .rollout
            .as_ref()
            .ok_or_else(|| CommandError::NoPlan(context.into()))?;
        let store = self.store.rollouts();
        // The kill switch freezes every rollout: what would send more traffic to a new service
        // once it is off is refused; what only holds or takes traffic back goes on.
        let raises = !matches!(cmd, Command::Pause | Command::Rollback);
        if raises && store.kill_switch().await?.on {
            return Err(CommandError::Frozen);
        }
        for _ in 0..5 {
            let now = strangler_store::now_ms();
            let stored = store
                .all()
                .await?
                .into_iter()
                .find(|s| s.context == context);
            let (current, expected) = match &stored {
                Some(s) => (s.state.clone(), Some(s.state.generation)),
                None => (State::start(plan, now), None),
            };
            let next = strangler_rollout::command(plan, &current, cmd, now)
                .map_err(CommandError::Refused)?;
            let audit = NewAudit {
                context: context.into(),
                actor: actor.into(),
                from_weight_bp: current.weight_bp,
                to_weight_bp: next.weight_bp,
                phase: next.phase.as_str().into(),
                reason: next.reason.clone(),
                gates: serde_json::Value::Null,
            };
            if store
                .save(
                    context,
                    &next,
                    &plan_key(plan),
                    expected,
                    Some(&audit),
                    strangler_store::Writer::Person,
                )
                .await?
            {
                self.transition(context, command_name(cmd));
                // In force here at once (other replicas take it at their next sync), so a
                // status read right after shows what the command did.
                let o = self.overlay();
                let mut states = o.states.clone();
                states.insert(context.to_string(), next.clone());
                let o = super::Overlay {
                    states,
                    kill_switch: o.kill_switch,
                };
                self.put_in_force(o, rules);
                return Ok(next);
            }
        }
        Err(CommandError::Conflict)
    }

    /// Every context with its plan and stored state.
    pub async fn status(&self, rules: &RuleSet) -> Result<Vec<ContextStatus>, StoreError> {
        let stored = self.store.rollouts().all().await?;
        let overlay = self.overlay();
        let kill = overlay.kill_switch;
        Ok(rules
            .contexts()
            .iter()
            .map(|c| {
                let state = stored_state(c, &stored).cloned();
                // What this replica applies (a stored change is in force at its next sync).
                let bp = match overlay.states.get(&c.name) {
                    _ if kill => 0,
                    Some(s) => s.weight_bp,
                    None => c.weight_bp,
                };
                ContextStatus {
                    context: c.name.clone(),
                    service: c.service.clone(),
                    routes: c.routes.clone(),
                    weight: f64::from(bp) / 100.0,
                    plan: c.rollout.clone(),
                    state,
                }
            })
            .collect())
    }

    /// Turns the kill switch on or off for every replica (each applies it at its next sync;
    /// this one at once). The audit log gets each context's weight it took away (or gave
    /// back); setting it to what it is changes nothing. Returns whether it changed.
    pub async fn set_kill_switch(
        &self,
        rules: &RuleSet,
        on: bool,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let store = self.store.rollouts();
        let stored = store.all().await?;
        let contexts: Vec<(String, u16, String)> = rules
            .contexts()
            .iter()
            .map(|c| match stored_state(c, &stored) {
                Some(s) => (c.name.clone(), s.weight_bp, s.phase.as_str().to_string()),
                None if c.rollout.is_some() => (c.name.clone(), 0, "paused".into()),
                None => (c.name.clone(), c.weight_bp, "fixed".into()),
            })
            .collect();
        let changed = store.set_kill_switch(on, actor, &contexts).await?;
        let states = self.overlay().states.clone();
        self.put_in_force(
            super::Overlay {
                states,
                kill_switch: on,
            },
            rules,
        );
        Ok(changed)
    }
}

/// A context's stored rollout state, when its rules give it a plan (a state left from a plan
/// since removed does not count).
fn stored_state<'a>(c: &strangler_rules::Context, stored: &'a [Stored]) -> Option<&'a State> {
    stored
        .iter()
        .find(|s| s.context == c.name)
        .filter(|_| c.rollout.is_some())
        .map(|s| &s.state)
}

fn command_name(cmd: Command) -> &'static str {
    match cmd {
        Command::Pause => "pause",
        Command::Resume => "resume",
        Command::Promote => "promote",
        Command::Rollback => "manual_rollback",
        Command::SetWeight(_) => "set_weight",
    }
}
