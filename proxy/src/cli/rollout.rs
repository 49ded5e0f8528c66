//! `strangler rollout status|pause|resume|promote|rollback|set-weight|audit`: the admin API's
//! rollout endpoints for a terminal.

use anyhow::Result;
use serde_json::{Value, json};

use super::admin::call;
use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    /// Every context: weight in force, phase, step, and why.
    #[command(after_help = "Example:\n  strangler rollout status -c strangler.yaml")]
    Status,
    /// Hold a context at its weight.
    #[command(after_help = "Example:\n  strangler rollout pause -c strangler.yaml orders")]
    Pause(ContextArg),
    /// Continue a paused rollout (a rolled-back one starts again at the first step).
    #[command(after_help = "Example:\n  strangler rollout resume -c strangler.yaml orders")]
    Resume(ContextArg),
    /// Move past the current step now (out of a `pause` step, say).
    #[command(after_help = "Example:\n  strangler rollout promote -c strangler.yaml orders")]
    Promote(ContextArg),
    /// Send all of a context's traffic back to the monolith, and hold it there.
    #[command(after_help = "Example:\n  strangler rollout rollback -c strangler.yaml orders")]
    Rollback(ContextArg),
    /// Set a context's weight by hand (percent); the plan pauses there.
    #[command(after_help = "Example:\n  strangler rollout set-weight -c strangler.yaml orders 25")]
    SetWeight { context: String, weight: f64 },
    /// The audit log: every transition, newest first.
    #[command(
        after_help = "Example:\n  strangler rollout audit -c strangler.yaml --context orders --limit 50"
    )]
    Audit {
        #[arg(long)]
        context: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(Debug, clap::Args)]
pub struct ContextArg {
    context: String,
}

pub fn run(cfg: &Config, cmd: &RolloutCommand) -> Result<()> {
    use RolloutCommand as C;
    let command = |t: &ContextArg, action: &str| -> Result<()> {
        let v = call(
            cfg,
            "POST",
            &format!("/api/rollouts/{}/{action}", t.context),
            None,
        )?;
        println!("{}", state_line(&t.context, &v["state"]));
        Ok(())
    };
    match cmd {
        C::Status => {
            print!("{}", status(&call(cfg, "GET", "/api/rollouts", None)?));
        }
        C::Pause(t) => command(t, "pause")?,
        C::Resume(t) => command(t, "resume")?,
        C::Promote(t) => command(t, "promote")?,
        C::Rollback(t) => command(t, "rollback")?,
        C::SetWeight { context, weight } => {
            let v = call(
                cfg,
                "POST",
                &format!("/api/rollouts/{context}/weight"),
                Some(&json!({ "weight": weight })),
            )?;
            println!("{}", state_line(context, &v["state"]));
        }
        C::Audit { context, limit } => {
            let mut path = format!("/api/audit?limit={limit}");
            if let Some(c) = context {
                path.push_str(&format!("&context={c}"));
            }
            print!("{}", audit(&call(cfg, "GET", &path, None)?));
        }
    }
    Ok(())
}

fn state_line(context: &str, s: &Value) -> String {
    format!(
        "{context}: {} at {}% (step {}), {}",
        s["phase"].as_str().unwrap_or("?"),
        s["weight_bp"].as_f64().unwrap_or(0.0) / 100.0,
        s["step"].as_u64().map_or(0, |i| i + 1),
        s["reason"].as_str().unwrap_or("")
    )
}

fn status(v: &Value) -> String {
    let mut out = String::new();
    if v["kill_switch"].as_bool() == Some(true) {
        out.push_str("KILL SWITCH ON: every context goes to the monolith\n");
    }
    let contexts = v["contexts"].as_array().cloned().unwrap_or_default();
    if contexts.is_empty() {
        out.push_str("no context in the rules\n");
        return out;
    }
    out.push_str(&format!(
        "{:<20} {:<12} {:>7}  {:<12} {:<16} {}\n",
        "context", "service", "weight", "phase", "step", "reason"
    ));
    for c in contexts {
        let steps: Vec<String> = c["plan"]["steps"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| match s.get("weight") {
                        Some(w) => format!("{}", w.as_f64().unwrap_or(0.0) / 100.0),
                        None => "pause".into(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (phase, step, reason) = match c["state"].as_object() {
            Some(s) => (
                s["phase"].as_str().unwrap_or("?").to_string(),
                format!(
                    "{} of {}",
                    s["step"].as_u64().map_or(0, |i| i + 1),
                    steps.len()
                ),
                s["reason"].as_str().unwrap_or("").to_string(),
            ),
            None if c["plan"].is_null() => {
                ("fixed".into(), "-".into(), "weight from the rules".into())
            }
            None => ("waiting".into(), "-".into(), "no state yet".into()),
        };
        out.push_str(&format!(
            "{:<20} {:<12} {:>6}%  {:<12} {:<16} {}\n",
            c["context"].as_str().unwrap_or("?"),
            c["service"].as_str().unwrap_or("?"),
            c["weight"].as_f64().unwrap_or(0.0),
            phase,
            step,
            reason
        ));
        if !steps.is_empty() {
            out.push_str(&format!("{:<20} plan: {}\n", "", steps.join(" → ")));
        }
        out.push_str(&last_check(&c["state"]["last_check"]));
    }
    out
}

/// The last check under a context's line: the step's evidence, then each gate (its detail
/// holds the figure against the threshold).
fn last_check(check: &Value) -> String {
    let mut out = String::new();
    if let Some(e) = check.get("evidence") {
        out.push_str(&format!(
            "{:<20} evidence: {} of {} {} at this step\n",
            "",
            e["seen"].as_u64().unwrap_or(0),
            e["needed"].as_u64().unwrap_or(0),
            e["counted"].as_str().unwrap_or("")
        ));
    }
    for g in check["gates"].as_array().into_iter().flatten() {
        let verdict = match g["passed"].as_bool() {
            Some(true) => "held",
            Some(false) => "FAILED",
            None => "no data",
        };
        out.push_str(&format!(
            "{:<20} gate {:<12} {:<8} {}\n",
            "",
            g["gate"].as_str().unwrap_or("?"),
            verdict,
            g["detail"].as_str().unwrap_or("")
        ));
    }
    out
}

fn audit(v: &Value) -> String {
    let entries = v["entries"].as_array().cloned().unwrap_or_default();
    if entries.is_empty() {
        return "no transition yet\n".into();
    }
    let mut out = String::new();
    for e in entries {
        let at = e["at_ms"].as_i64().map_or_else(
            || "?".into(),
            |ms| {
                strangler_events::envelope::rfc3339(
                    ms.div_euclid(1000),
                    u32::try_from(ms.rem_euclid(1000)).unwrap_or(0),
                )
            },
        );
        out.push_str(&format!(
            "{at}  {:<12} {:>6}% → {:>6}%  {:<12} {}  ({})\n",
            e["context"].as_str().unwrap_or("?"),
            e["from_weight_bp"].as_f64().unwrap_or(0.0) / 100.0,
            e["to_weight_bp"].as_f64().unwrap_or(0.0) / 100.0,
            e["phase"].as_str().unwrap_or("?"),
            e["reason"].as_str().unwrap_or(""),
            e["actor"].as_str().unwrap_or("?"),
        ));
    }
    out
}
