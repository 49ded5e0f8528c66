//! Gated rollouts, decided without side effects: given a context's [`Plan`], its stored
//! [`State`], the [`Evidence`] gathered since the last check and the time, [`decide`] says
//! whether to hold, step up, roll back or finish. Manual commands ([`command`]) and rule edits
//! ([`rebase`]) are the only other ways a state changes. No sockets, no clock, no store: the
//! proxy's controller runs these and keeps the state.
//!
//! The semantics, as Flagger and Argo Rollouts users expect:
//! - The gates are checked every `check_every` (3 s unless the plan says; never less often than
//!   once per `interval`), over what happened since the last check. A check passes when every
//!   gate holds.
//! - A step is left (to the next one) at a passing check once it has lasted `interval` and has
//!   evidence: the new service served `min_requests` at it (at least one), or, at a 0 %
//!   (shadow-only) step, that many shadow comparisons were made. No evidence, no step.
//! - A failing check counts; `failure_limit` failing checks in a row roll the context back to
//!   0 % at once (within `failure_limit × check_every`, however long the interval), and it stays
//!   there until someone resumes it. A passing check resets the count.
//! - A completed context (100 %) stays guarded: its gates keep being checked, the new side
//!   against the monolith's last known error rate and p99 ([`Baseline`]) and the shadow (reads
//!   are still copied to the monolith), and failing ones roll it back like any step.
//! - A `pause` step holds the weight reached until someone promotes.
//! - Weights only rise along the plan; a rule edit never raises one ([`rebase`]).

mod evidence;
mod gates;
mod plan;

#[cfg(test)]
mod tests;

pub use evidence::{Baseline, Evidence, LatencyHistogram, SideFigures};
pub use gates::{GateResult, check_gates};
pub use plan::{DEFAULT_CHECK_EVERY_MS, Gates, Plan, Step, Webhook};

use serde::{Deserialize, Serialize};

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Checked every interval, stepping up on passing checks.
    Progressing,
    /// Held at its weight (a `pause` step, a manual pause or a weight set by hand).
    Paused,
    /// At 0 % after failing checks or a manual rollback, until resumed.
    RolledBack,
    /// At the last step (100 %), guarded: its gates are still checked and failing ones roll
    /// it back.
    Completed,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Progressing,
        Phase::Paused,
        Phase::RolledBack,
        Phase::Completed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::RolledBack => "rolled_back",
            Phase::Completed => "completed",
        }
    }
}

/// A context's rollout state, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Index of the current step in the plan.
    pub step: usize,
    /// The weight in force, basis points to the new service (0–10,000).
    pub weight_bp: u16,
    pub phase: Phase,
    /// When the current step (or phase) began, and when it was last checked (ms since epoch).
    pub since_ms: i64,
    pub checked_ms: i64,
    /// Failing checks in a row.
    pub failures: u32,
    /// Why the state is what it is.
    pub reason: String,
    /// Bumped at every change: replicas apply a weight once per generation.
    pub generation: u64,
    /// The monolith's last known figures, for checks at 100 %.
    #[serde(default)]
    pub baseline: Baseline,
    /// What the last check measured (none before the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<LastCheck>,
}

/// What a check measured, kept with the state so people can see each gate's figure against its
/// threshold and how much of the evidence a step needs it has (`rollout status`, the console).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastCheck {
    pub at_ms: i64,
    /// The gates as judged at that check: over the whole step when the step could be left,
    /// else over the figures since the check before.
    pub gates: Vec<GateResult>,
    /// While progressing: the evidence gathered at the current step against what leaving it
    /// needs (0 right after a step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<StepEvidence>,
}

/// Evidence at a step: `seen` of `needed` `counted` (requests the new service served, or at
/// 0 % shadow comparisons).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepEvidence {
    pub seen: u64,
    pub needed: u64,
    pub counted: String,
}

impl StepEvidence {
    /// What leaving a step at `weight_bp` needs, and how much of it `step` holds.
    fn at(plan: &Plan, weight_bp: u16, step: &Evidence) -> StepEvidence {
        let (seen, counted) = if weight_bp > 0 {
            (step.service.requests, "requests served by the new service")
        } else {
            (step.shadow_compared, "shadow comparisons")
        };
        StepEvidence {
            seen,
            needed: plan.min_requests.max(1),
            counted: counted.into(),
        }
    }
}

impl State {
    /// A new rollout at the plan's first step.
    pub fn start(plan: &Plan, now_ms: i64) -> State {
        let mut s = State {
            step: 0,
            weight_bp: 0,
            phase: Phase::Progressing,
            since_ms: now_ms,
            checked_ms: now_ms,
            failures: 0,
            reason: "started".into(),
            generation: 1,
            baseline: Baseline::default(),
            last_check: None,
        };
        s.enter(plan, 0, now_ms);
        s
    }

    /// Moves to step `i` (its weight, or a pause at the weight reached).
    fn enter(&mut self, plan: &Plan, i: usize, now_ms: i64) {
        self.step = i;
        match plan.steps[i] {
            Step::Weight(bp) => {
                self.weight_bp = bp;
                self.phase = if i + 1 == plan.steps.len() && bp == 10_000 {
                    Phase::Completed
                } else {
                    Phase::Progressing
                };
            }
            Step::Pause => self.phase = Phase::Paused,
        }
        self.since_ms = now_ms;
        self.checked_ms = now_ms;
        self.failures = 0;
    }
}

/// What a check decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing changes (not due, not enough requests, a gate without data, a failing check
    /// under the limit, or not progressing).
    Hold { reason: String },
    /// To the next step.
    Step { to: usize, weight_bp: u16 },
    /// To 0 %, rolled back.
    Rollback { reason: String },
}

/// One check of a progressing or completed (guarded) rollout, on `recent` (the figures since
/// the last check) and `step` (since the current step began). Returns the decision, the gate
/// figures behind it and the new state (the same as `state` when nothing changed but the
/// check's bookkeeping, which keeps what the check measured in [`State::last_check`]).
pub fn decide(
    plan: &Plan,
    state: &State,
    recent: &Evidence,
    step: &Evidence,
    now_ms: i64,
) -> (Decision, Vec<GateResult>, State) {
    let (decision, gates, mut next) = judge(plan, state, recent, step, now_ms);
    let checked = matches!(state.phase, Phase::Progressing | Phase::Completed)
        && plan.check_due(state, now_ms);
    if checked {
        let evidence = (next.phase == Phase::Progressing).then(|| {
            let mut e = StepEvidence::at(plan, next.weight_bp, step);
            if matches!(decision, Decision::Step { .. }) {
                e.seen = 0;
            }
            e
        });
        next.last_check = Some(LastCheck {
            at_ms: now_ms,
            gates: gates.clone(),
            evidence,
        });
    }
    (decision, gates, next)
}

fn judge(
    plan: &Plan,
    state: &State,
    recent: &Evidence,
    step: &Evidence,
    now_ms: i64,
) -> (Decision, Vec<GateResult>, State) {
    let mut next = state.clone();
    let hold = |reason: &str| Decision::Hold {
        reason: reason.into(),
    };
    let guarded = state.phase == Phase::Completed;
    if !(state.phase == Phase::Progressing || guarded) {
        return (hold(state.phase.as_str()), Vec::new(), next);
    }
    if !plan.check_due(state, now_ms) {
        return (hold("the check is not due"), Vec::new(), next);
    }
    next.checked_ms = now_ms;
    next.baseline = state.baseline.updated(&recent.legacy);
    let gates = check_gates(&plan.gates, recent, state.weight_bp, &state.baseline);
    // Said of a completed context: it is at 100 % and guarded.
    let guard = if guarded { "guard: " } else { "" };
    if let Some(failed) = gates.iter().find(|g| g.passed == Some(false)) {
        next.failures += 1;
        if next.failures >= plan.failure_limit {
            let reason = format!(
                "{guard}{} failed {} checks in a row ({})",
                failed.gate, next.failures, failed.detail
            );
            next.weight_bp = 0;
            next.phase = Phase::RolledBack;
            next.since_ms = now_ms;
            next.reason = reason.clone();
            next.generation += 1;
            return (Decision::Rollback { reason }, gates, next);
        }
        let reason = format!(
            "{guard}{} failed ({}), {} of {} failures",
            failed.gate, failed.detail, next.failures, plan.failure_limit
        );
        next.reason = reason.clone();
        return (Decision::Hold { reason }, gates, next);
    }
    next.failures = 0;
    let open = gates.iter().find(|g| g.passed.is_none());
    if guarded {
        let reason = match open {
            Some(g) => format!(
                "completed and guarded: {} has no data since the last check ({})",
                g.gate, g.detail
            ),
            None if gates.is_empty() => "completed; no gate to guard it".into(),
            None => "completed and guarded: every gate held at the last check".into(),
        };
        next.reason = reason.clone();
        return (Decision::Hold { reason }, gates, next);
    }
    let left = plan.step_left_ms(state, now_ms);
    if left > 0 {
        let so_far = match open {
            Some(g) => format!("{} has no data since the last check", g.gate),
            None => "no gate failed".into(),
        };
        let reason = format!("{so_far}; {} s more at this step", (left + 999) / 1_000);
        next.reason = reason.clone();
        return (Decision::Hold { reason }, gates, next);
    }
    // A step is left on evidence only: requests the new service served at it, or at 0 % (where
    // it serves nothing) shadow comparisons; and every gate holds over the whole step.
    let StepEvidence {
        seen,
        needed,
        counted,
    } = StepEvidence::at(plan, state.weight_bp, step);
    if seen < needed {
        let reason = format!("{seen} of {needed} {counted} at this step");
        next.reason = reason.clone();
        return (Decision::Hold { reason }, gates, next);
    }
    let gates = check_gates(&plan.gates, step, state.weight_bp, &state.baseline);
    if let Some(g) = gates.iter().find(|g| g.passed != Some(true)) {
        let reason = match g.passed {
            None => format!("{} has no data at this step yet ({})", g.gate, g.detail),
            _ => format!("{} does not hold over this step ({})", g.gate, g.detail),
        };
        next.reason = reason.clone();
        return (Decision::Hold { reason }, gates, next);
    }
    // Below its own step (an edited plan whose lowest step is above the weight reached): that
    // step comes next; else the one after it.
    let below = plan.steps[state.step]
        .weight_bp()
        .is_some_and(|w| w > state.weight_bp);
    let to = if below { state.step } else { state.step + 1 };
    if to >= plan.steps.len() {
        // The last step is not 100 % (else the state would be completed): it holds.
        return (hold("at the plan's last step"), gates, next);
    }
    next.enter(plan, to, now_ms);
    next.reason = "every gate held".into();
    next.generation += 1;
    (
        Decision::Step {
            to: next.step,
            weight_bp: next.weight_bp,
        },
        gates,
        next,
    )
}

/// A person's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Hold at the current weight.
    Pause,
    /// Continue: a paused rollout where it is, a rolled-back one from the first step.
    Resume,
    /// Past the current step now (out of a `pause` step, or skipping the wait).
    Promote,
    /// To 0 %, rolled back.
    Rollback,
    /// To this weight (basis points), paused there.
    SetWeight(u16),
}

/// Why a command does not apply (the state is left as it was).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the rollout is {}, not progressing", .0.as_str())]
    NotProgressing(Phase),
    #[error("the rollout is {}: nothing to resume", .0.as_str())]
    NothingToResume(Phase),
    #[error("the rollout is {}: resume it first", .0.as_str())]
    ResumeFirst(Phase),
    #[error("already at the plan's last step")]
    LastStep,
    #[error("a weight is at most 100 %")]
    OverHundred,
}

/// Applies a command; `Err` says why it does not apply (the state is unchanged).
pub fn command(plan: &Plan, state: &State, cmd: Command, now_ms: i64) -> Result<State, Refused> {
    let mut next = state.clone();
    match cmd {
        Command::Pause => {
            if state.phase != Phase::Progressing {
                return Err(Refused::NotProgressing(state.phase));
            }
            next.phase = Phase::Paused;
            next.reason = "paused by hand".into();
        }
        Command::Resume => match state.phase {
            Phase::Paused => {
                next.phase = Phase::Progressing;
                next.since_ms = now_ms;
                next.checked_ms = now_ms;
                next.failures = 0;
                next.reason = "resumed".into();
                // A weight set by hand may sit between steps: continue from the highest step
                // at or below it (never above what is in force).
                if plan.steps[state.step].weight_bp() != Some(state.weight_bp) {
                    next.step = plan.step_at_or_below(state.weight_bp);
                }
            }
            Phase::RolledBack => {
                next.enter(plan, 0, now_ms);
                next.reason = "resumed from the first step".into();
            }
            p => return Err(Refused::NothingToResume(p)),
        },
        Command::Promote => {
            if matches!(state.phase, Phase::Completed | Phase::RolledBack) {
                return Err(Refused::ResumeFirst(state.phase));
            }
            let Some(i) = plan.next_weight_step(state.step, state.weight_bp) else {
                return Err(Refused::LastStep);
            };
            next.enter(plan, i, now_ms);
            next.reason = "promoted by hand".into();
        }
        Command::Rollback => {
            next.weight_bp = 0;
            next.phase = Phase::RolledBack;
            next.since_ms = now_ms;
            next.failures = 0;
            next.reason = "rolled back by hand".into();
        }
        Command::SetWeight(bp) => {
            if bp > 10_000 {
                return Err(Refused::OverHundred);
            }
            next.weight_bp = bp;
            next.phase = Phase::Paused;
            next.step = plan.step_at_or_below(bp);
            next.since_ms = now_ms;
            next.failures = 0;
            next.reason = format!("weight set by hand to {}", percent(bp));
        }
    }
    next.generation += 1;
    Ok(next)
}

/// The state under an edited plan: the current step when its weight is still in the plan,
/// otherwise the nearest lower one; a rule edit never raises the weight.
pub fn rebase(new: &Plan, state: &State) -> State {
    let mut next = state.clone();
    let i = new.step_at_or_below(state.weight_bp);
    next.step = i;
    if matches!(state.phase, Phase::Progressing | Phase::Completed) {
        let bp = new.steps[i].weight_bp().unwrap_or(0).min(state.weight_bp);
        if bp != state.weight_bp || state.phase == Phase::Completed {
            next.weight_bp = bp;
            next.phase = if bp == 10_000 && i + 1 == new.steps.len() {
                Phase::Completed
            } else {
                Phase::Progressing
            };
        }
    }
    if next != *state {
        next.reason = "the plan was edited".into();
        next.generation += 1;
    }
    next
}

/// `12.5 %`, `30 %`.
pub fn percent(bp: u16) -> String {
    if bp.is_multiple_of(100) {
        format!("{} %", bp / 100)
    } else {
        format!("{} %", f64::from(bp) / 100.0)
    }
}
