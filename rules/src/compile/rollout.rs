//! Validation of a context's `rollout` plan: steps, interval, least requests, gates, failure
//! limit, each problem located.

use serde_json::Value;
use strangler_rollout::{Gates, Plan, Step, Webhook};

use crate::diag::Reporter;
use crate::raw::{RawGates, RawRollout};
use crate::spanned::Spanned;
use crate::units::parse_duration;

pub(super) fn compile(p: &Spanned<RawRollout>, field: &str, r: &mut Reporter) -> Option<Plan> {
    let raw = &p.value;
    let before = r.count();
    let mut steps = Vec::new();
    let mut last = 0u16;
    if raw.steps.value.is_empty() {
        r.report(
            (&raw.steps).into(),
            format!("{field}.steps"),
            "give at least one step",
        );
    }
    for (i, s) in raw.steps.value.iter().enumerate() {
        let f = format!("{field}.steps[{i}]");
        match &s.value {
            Value::String(w) if w == "pause" => {
                if matches!(steps.last(), Some(Step::Pause)) {
                    r.report(
                        s.into(),
                        f,
                        "two pauses in a row: the second stops the rollout again right after its resume; keep one",
                    );
                }
                steps.push(Step::Pause);
            }
            Value::Number(n) => {
                let pct = n.as_f64().unwrap_or(f64::NAN);
                let bp = (pct * 100.0).round();
                // 0 % (shadow only, say) may open a plan.
                if !(pct > 0.0 || (pct == 0.0 && i == 0)) || pct > 100.0 {
                    r.report(
                        s.into(),
                        f,
                        format!(
                            "step {pct} is out of range: above 0 (0 opens a plan only), at most 100"
                        ),
                    );
                } else if (bp - pct * 100.0).abs() > 1e-6 {
                    r.report(
                        s.into(),
                        f,
                        format!("step {pct} has more than two decimals"),
                    );
                } else if i > 0 && bp as u16 <= last {
                    r.report(
                        s.into(),
                        f,
                        format!("steps must rise: {pct} follows {}", f64::from(last) / 100.0),
                    );
                } else {
                    last = bp as u16;
                    steps.push(Step::Weight(last));
                }
            }
            _ => r.report(
                s.into(),
                f,
                "a step is a percentage (such as 25) or `pause`",
            ),
        }
    }
    if !raw.steps.value.is_empty() && !steps.iter().any(|s| matches!(s, Step::Weight(_))) {
        r.report(
            (&raw.steps).into(),
            format!("{field}.steps"),
            "give at least one percentage step (pauses alone move no traffic)",
        );
    }
    let interval = match parse_duration(&raw.interval.value) {
        Ok(d) if d.is_zero() => {
            r.report(
                (&raw.interval).into(),
                format!("{field}.interval"),
                "interval must be above 0",
            );
            0
        }
        Ok(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
        Err(e) => {
            r.report(
                (&raw.interval).into(),
                format!("{field}.interval"),
                e.to_string(),
            );
            0
        }
    };
    let check_every = match &raw.check_every {
        None => strangler_rollout::DEFAULT_CHECK_EVERY_MS,
        Some(v) => match parse_duration(&v.value) {
            Ok(d) if d.is_zero() => {
                r.report(
                    v.into(),
                    format!("{field}.check_every"),
                    "check_every must be above 0",
                );
                0
            }
            Ok(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            Err(e) => {
                r.report(v.into(), format!("{field}.check_every"), e.to_string());
                0
            }
        },
    };
    let failure_limit = match &raw.failure_limit {
        Some(n) if n.value == 0 => {
            r.report(
                n.into(),
                format!("{field}.failure_limit"),
                "failure_limit must be at least 1",
            );
            1
        }
        Some(n) => n.value,
        None => 2,
    };
    let gates = raw
        .gates
        .as_ref()
        .map(|g| gates(&g.value, &format!("{field}.gates"), r))
        .unwrap_or_default();
    (r.count() == before).then(|| Plan {
        steps,
        interval_ms: interval,
        check_every_ms: check_every,
        min_requests: raw.min_requests.as_ref().map_or(0, |n| n.value),
        gates,
        failure_limit,
    })
}

fn gates(g: &RawGates, field: &str, r: &mut Reporter) -> Gates {
    let match_rate = g.match_rate.as_ref().and_then(|v| {
        let f = format!("{field}.match_rate");
        let pct = number_with_unit(v, "%", &f, "a match rate such as 99.5%", r)?;
        if (0.0..=100.0).contains(&pct) {
            Some(pct / 100.0)
        } else {
            r.report(v.into(), f, "a match rate is between 0% and 100%");
            None
        }
    });
    let error_rate_max_increase = g.error_rate.as_ref().and_then(|e| {
        let v = &e.value.max_increase;
        let f = format!("{field}.error_rate.max_increase");
        let pp = number_with_unit(v, "pp", &f, "percentage points such as 0.5pp", r)?;
        if (0.0..=100.0).contains(&pp) {
            Some(pp / 100.0)
        } else {
            r.report(v.into(), f, "an increase is between 0pp and 100pp");
            None
        }
    });
    let p99_max_ratio = g.p99_latency.as_ref().and_then(|l| {
        let v = &l.value.max_ratio;
        if v.value.is_finite() && v.value > 0.0 {
            Some(v.value)
        } else {
            r.report(
                v.into(),
                format!("{field}.p99_latency.max_ratio"),
                "max_ratio must be above 0 (1.2: at most 20 % slower)",
            );
            None
        }
    });
    let webhook = g.webhook.as_ref().and_then(|w| {
        let f = format!("{field}.webhook");
        let url = &w.value.url;
        if !(url.value.starts_with("http://") || url.value.starts_with("https://")) {
            r.report(
                url.into(),
                format!("{f}.url"),
                "the webhook is an http:// or https:// URL",
            );
            return None;
        }
        let timeout_ms = match &w.value.timeout {
            None => 5_000,
            Some(t) => match parse_duration(&t.value) {
                Ok(d) if !d.is_zero() => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                Ok(_) => {
                    r.report(t.into(), format!("{f}.timeout"), "timeout must be above 0");
                    return None;
                }
                Err(e) => {
                    r.report(t.into(), format!("{f}.timeout"), e.to_string());
                    return None;
                }
            },
        };
        Some(Webhook {
            url: url.value.clone(),
            timeout_ms,
        })
    });
    Gates {
        match_rate,
        error_rate_max_increase,
        p99_max_ratio,
        webhook,
    }
}

/// `99.5%` / `0.5pp`, or a bare number in the same unit.
fn number_with_unit(
    v: &Spanned<Value>,
    unit: &str,
    field: &str,
    expected: &str,
    r: &mut Reporter,
) -> Option<f64> {
    let n = match &v.value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s
            .trim()
            .strip_suffix(unit)
            .and_then(|n| n.trim().parse::<f64>().ok()),
        _ => None,
    };
    match n {
        Some(n) if n.is_finite() => Some(n),
        _ => {
            r.report(v.into(), field, format!("expected {expected}"));
            None
        }
    }
}
