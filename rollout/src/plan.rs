//! A rollout plan as the rules give it: steps, the time and traffic each needs, the gates.

use serde::Serialize;

use crate::State;

/// One step of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// This share of the context's traffic to the new service, in basis points.
    Weight(u16),
    /// Hold the weight reached until someone promotes.
    Pause,
}

impl Step {
    pub fn weight_bp(self) -> Option<u16> {
        match self {
            Step::Weight(bp) => Some(bp),
            Step::Pause => None,
        }
    }
}

/// What a rollout checks at each step.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Gates {
    /// Least shadow match rate (0–1) of the context's routes.
    pub match_rate: Option<f64>,
    /// Most the new side's 5xx rate may exceed the monolith's, as a fraction (0.005 = 0.5pp).
    pub error_rate_max_increase: Option<f64>,
    /// Most the new side's p99 latency may be, as a multiple of the monolith's.
    pub p99_max_ratio: Option<f64>,
    /// The team's own check: POSTed the context's state and figures; 2xx passes.
    pub webhook: Option<Webhook>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Webhook {
    pub url: String,
    pub timeout_ms: u64,
}

/// A context's rollout plan (validated by the rules: steps rise, end at most at 100 %).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Least time at a step.
    pub interval_ms: u64,
    /// Time between checks of the gates (at most `interval_ms`): a failing service is rolled
    /// back within `failure_limit` of these, whatever the interval.
    pub check_every_ms: u64,
    /// Least requests the new service serves at a step before it is left.
    pub min_requests: u64,
    pub gates: Gates,
    /// Failing checks in a row that roll the context back.
    pub failure_limit: u32,
}

fn millis(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// `check_every` when the rules do not say.
pub const DEFAULT_CHECK_EVERY_MS: u64 = 3_000;

impl Plan {
    /// The time between checks in force: `check_every`, never longer than the interval.
    pub fn check_every_ms(&self) -> u64 {
        self.check_every_ms.min(self.interval_ms).max(1)
    }

    /// Whether a check of `state` is due at `now_ms`.
    pub fn check_due(&self, state: &State, now_ms: i64) -> bool {
        now_ms.saturating_sub(state.checked_ms) >= millis(self.check_every_ms())
    }

    /// How long the current step of `state` still has to last at `now_ms` (0: it may be left).
    pub fn step_left_ms(&self, state: &State, now_ms: i64) -> i64 {
        millis(self.interval_ms)
            .saturating_sub(now_ms.saturating_sub(state.since_ms))
            .max(0)
    }

    /// The highest weight the plan reaches.
    pub fn max_weight_bp(&self) -> u16 {
        self.steps
            .iter()
            .filter_map(|s| s.weight_bp())
            .max()
            .unwrap_or(0)
    }

    /// The index of the highest weight step at or below `bp` (the first step when none is).
    pub fn step_at_or_below(&self, bp: u16) -> usize {
        self.steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.weight_bp().is_some_and(|w| w <= bp))
            .map(|(i, _)| i)
            .next_back()
            .unwrap_or(0)
    }

    /// The step a promotion from step `at` (at weight `bp`) goes to: the next weight above
    /// `bp`, or a pause before it that holds a weight at least `bp` (a pause left behind by a
    /// weight set by hand is skipped).
    pub fn next_weight_step(&self, at: usize, bp: u16) -> Option<usize> {
        let mut reached = 0;
        for (i, s) in self.steps.iter().enumerate() {
            match s {
                Step::Weight(w) => {
                    if i > at && *w > bp {
                        return Some(i);
                    }
                    reached = *w;
                }
                Step::Pause if i > at && reached >= bp => return Some(i),
                Step::Pause => {}
            }
        }
        None
    }
}
