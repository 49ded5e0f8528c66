//! Every replica, every [`super::SYNC_EVERY`]: writes the figures its requests gathered to the
//! store (the controller, wherever it runs, decides on every replica's), and applies the stored
//! states and the kill switch to its own requests.

use std::collections::HashMap;
use std::sync::Arc;

use std::sync::atomic::Ordering;

use strangler_rules::RuleSet;
use tracing::{debug, info, warn};

use super::{Overlay, Rollouts};
use crate::reload::LiveRules;

impl Rollouts {
    /// One round: figures out, states in. Errors are logged; the previous states stay in force.
    pub async fn sync(&self, rules: &LiveRules) {
        let figures = self.take_window();
        if !figures.is_empty() {
            let rows: Vec<_> = figures
                .iter()
                .map(|(c, e)| (c.clone(), e.clone()))
                .collect();
            if let Err(e) = self
                .store
                .rollouts()
                .record_evidence(&self.replica, strangler_store::now_ms(), &rows)
                .await
            {
                self.store_trouble(&e, "Rollout figures not written; kept for the next try");
                self.restore_window(figures);
                return;
            }
        }
        match self.read_overlay(rules).await {
            Ok(o) => {
                if self.store_failing.swap(false, Ordering::Relaxed) {
                    info!("Rollout states read again");
                }
                self.put_in_force(o, &rules.current().rules);
                self.mark_known();
            }
            Err(e) => {
                self.store_trouble(&e, "Rollout states not read; the last ones stay in force");
            }
        }
    }

    /// Puts `o` in force on this replica's requests, and shows it in the rollout metrics.
    pub(super) fn put_in_force(&self, o: Overlay, rules: &RuleSet) {
        let m = &self.metrics;
        m.kill_switch.set(i64::from(o.kill_switch));
        for c in rules.contexts() {
            let (bp, phase) = match o.states.get(&c.name) {
                Some(s) => (s.weight_bp, Some(s.phase)),
                None => (c.weight_bp, None),
            };
            let bp = if o.kill_switch { 0 } else { bp };
            m.weight
                .with_label_values(&[c.name.as_str()])
                .set(f64::from(bp) / 100.0);
            if let Some(phase) = phase {
                for p in strangler_rollout::Phase::ALL {
                    m.phase
                        .with_label_values(&[c.name.as_str(), p.as_str()])
                        .set(i64::from(p == phase));
                }
            }
        }
        self.overlay.store(Arc::new(o));
    }

    /// Logs a store failure once when it starts (every 500 ms would flood the log), then at
    /// debug level until the store answers again.
    fn store_trouble(&self, e: &strangler_store::StoreError, what: &str) {
        if self.store_failing.swap(true, Ordering::Relaxed) {
            debug!(error = %e, "{what}");
        } else {
            warn!(error = %e, "{what}");
        }
    }

    /// The stored states of the contexts the rules give a plan, and the kill switch.
    async fn read_overlay(
        &self,
        rules: &LiveRules,
    ) -> Result<Overlay, strangler_store::StoreError> {
        let r = self.store.rollouts();
        let kill = r.kill_switch().await?;
        let current = rules.current();
        let planned: Vec<&str> = current
            .rules
            .contexts()
            .iter()
            .filter(|c| c.rollout.is_some())
            .map(|c| c.name.as_str())
            .collect();
        let mut states = HashMap::new();
        for s in r.all().await? {
            if planned.contains(&s.context.as_str()) {
                states.insert(s.context, s.state);
            }
        }
        // A planned context without a stored state yet is at 0 % (never the rules' weight).
        for c in planned {
            states
                .entry(c.to_string())
                .or_insert_with(|| strangler_rollout::State {
                    step: 0,
                    weight_bp: 0,
                    phase: strangler_rollout::Phase::Paused,
                    since_ms: 0,
                    checked_ms: 0,
                    failures: 0,
                    reason: "waiting for the controller".into(),
                    generation: 0,
                    baseline: Default::default(),
                    last_check: None,
                });
        }
        Ok(Overlay {
            states,
            kill_switch: kill.on,
        })
    }
}

/// Runs [`Rollouts::sync`] until the process stops.
pub async fn run(rollouts: Arc<Rollouts>, rules: Arc<LiveRules>) {
    loop {
        rollouts.sync(&rules).await;
        tokio::time::sleep(super::SYNC_EVERY).await;
    }
}
