//! The gates of a check, each with the figure it measured, so the audit log and the metrics can
//! say what decided.

use serde::{Deserialize, Serialize};

use crate::{Baseline, Evidence, Gates};

/// One gate at one check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    /// `match_rate`, `error_rate`, `p99_latency` or `webhook`.
    pub gate: String,
    /// What was measured (the match rate, the 5xx increase, the p99 ratio), when it could be.
    pub value: Option<f64>,
    /// What it had to stay within.
    pub threshold: Option<f64>,
    /// `None`: no data to judge by yet (the check neither passes nor fails).
    pub passed: Option<bool>,
    pub detail: String,
}

/// Every configured gate against `e`, at `weight_bp`. At 0 % (a shadow-only step) the new
/// service serves nothing: its error and latency gates do not apply and pass. Without monolith
/// traffic in `e` (at 100 %), the new side is compared with the monolith's last known figures
/// (`baseline`); without those, with no errors and no latency bound.
pub fn check_gates(
    g: &Gates,
    e: &Evidence,
    weight_bp: u16,
    baseline: &Baseline,
) -> Vec<GateResult> {
    let mut out = Vec::new();
    let shadow_only = |gate: &str, threshold: f64| GateResult {
        gate: gate.into(),
        value: None,
        threshold: Some(threshold),
        passed: Some(true),
        detail: "does not apply at 0 % (shadow only)".into(),
    };
    if let Some(min) = g.match_rate {
        out.push(if e.shadow_compared == 0 {
            open(
                "match_rate",
                Some(min),
                "no shadow comparison since the last check",
            )
        } else {
            let rate = e.shadow_matched as f64 / e.shadow_compared as f64;
            judged(
                "match_rate",
                rate,
                min,
                rate >= min,
                format!(
                    "{:.2} % of {} comparisons matched, at least {:.2} % needed",
                    rate * 100.0,
                    e.shadow_compared,
                    min * 100.0
                ),
            )
        });
    }
    if let Some(max) = g.error_rate_max_increase {
        out.push(match e.service.error_rate() {
            _ if weight_bp == 0 => shadow_only("error_rate", max),
            None => open("error_rate", Some(max), "the new service served no request"),
            Some(new) => {
                // Without monolith traffic (at 100 %): its last known rate, else no errors.
                let base = e
                    .legacy
                    .error_rate()
                    .or(baseline.error_rate)
                    .unwrap_or(0.0);
                let increase = new - base;
                judged(
                    "error_rate",
                    increase,
                    max,
                    increase <= max + 1e-12,
                    format!(
                        "5xx {:.2} % on the new service against {:.2} % on the monolith, at most +{:.2}pp",
                        new * 100.0,
                        base * 100.0,
                        max * 100.0
                    ),
                )
            }
        });
    }
    if let Some(max) = g.p99_max_ratio {
        let new = e.service.latency.quantile_ms(0.99);
        let base = e.legacy.latency.quantile_ms(0.99).or(baseline.p99_ms);
        out.push(match (new, base) {
            _ if weight_bp == 0 => shadow_only("p99_latency", max),
            (None, _) => open(
                "p99_latency",
                Some(max),
                "the new service served no request",
            ),
            (Some(new), None) => GateResult {
                gate: "p99_latency".into(),
                value: None,
                threshold: Some(max),
                passed: Some(true),
                detail: format!("p99 {new:.1} ms; no monolith traffic to compare with"),
            },
            (Some(new), Some(base)) => {
                let ratio = new / base;
                judged(
                    "p99_latency",
                    ratio,
                    max,
                    ratio <= max,
                    format!("p99 {new:.1} ms against the monolith's {base:.1} ms, at most ×{max}"),
                )
            }
        });
    }
    if let Some(w) = &g.webhook {
        out.push(match &e.webhook {
            None => open("webhook", None, "not called yet"),
            Some(Ok(())) => GateResult {
                gate: "webhook".into(),
                value: None,
                threshold: None,
                passed: Some(true),
                detail: format!("{} answered 2xx", w.url),
            },
            Some(Err(why)) => GateResult {
                gate: "webhook".into(),
                value: None,
                threshold: None,
                passed: Some(false),
                detail: format!("{}: {why}", w.url),
            },
        });
    }
    out
}

fn open(gate: &str, threshold: Option<f64>, detail: &str) -> GateResult {
    GateResult {
        gate: gate.into(),
        value: None,
        threshold,
        passed: None,
        detail: detail.into(),
    }
}

fn judged(gate: &str, value: f64, threshold: f64, ok: bool, detail: String) -> GateResult {
    GateResult {
        gate: gate.into(),
        value: Some(value),
        threshold: Some(threshold),
        passed: Some(ok),
        detail,
    }
}
