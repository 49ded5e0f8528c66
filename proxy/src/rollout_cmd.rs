//! `strangler rollout status|pause|resume|promote|rollback|set-weight|audit` and
//! `strangler kill-switch on|off|status`: the admin API's rollout endpoints for a terminal.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::{Value, json};

use crate::admin_client::call;
use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    /// Every context: weight in force, phase, step, and why.
    #[command(after_help = "Example:\n  strangler rollout status -c strangler.yaml")]
    Status {
        /// The proxy's config file (strangler.yaml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Hold a context at its weight.
    #[command(after_help = "Example:\n  strangler rollout pause -c strangler.yaml orders")]
    Pause(Target),
    /// Continue a paused rollout (a rolled-back one starts again at the first step).
    #[command(after_help = "Example:\n  strangler rollout resume -c strangler.yaml orders")]
    Resume(Target),
    /// Move past the current step now (out of a `pause` step, say).
    #[command(after_help = "Example:\n  strangler rollout promote -c strangler.yaml orders")]
    Promote(Target),
    /// Send all of a context's traffic back to the monolith, and hold it there.
    #[command(after_help = "Example:\n  strangler rollout rollback -c strangler.yaml orders")]
    Rollback(Target),
    /// Set a context's weight by hand (percent); the plan pauses there.
    #[command(after_help = "Example:\n  strangler rollout set-weight -c strangler.yaml orders 25")]
    SetWeight {
        /// The proxy's config file (strangler.yaml).
        #[arg(long, short)]
        config: PathBuf,
        context: String,
        weight: f64,
    },
    /// The audit log: every transition, newest first.
    #[command(
        after_help = "Example:\n  strangler rollout audit -c strangler.yaml --context orders --limit 50"
    )]
    Audit {
        /// The proxy's config file (strangler.yaml).
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        context: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(Debug, clap::Args)]
pub struct Target {
    /// The proxy's config file (strangler.yaml).
    #[arg(long, short)]
    config: PathBuf,
    context: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum KillSwitchCommand {
    /// Every context to the monolith at once, on every replica, until turned off.
    #[command(after_help = "Example:\n  strangler kill-switch on -c strangler.yaml")]
    On {
        /// The proxy's config file (strangler.yaml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Back to each context's own weight (the rollouts go on from where they were).
    #[command(after_help = "Example:\n  strangler kill-switch off -c strangler.yaml")]
    Off {
        /// The proxy's config file (strangler.yaml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Whether the kill switch is on.
    #[command(after_help = "Example:\n  strangler kill-switch status -c strangler.yaml")]
    Status {
        /// The proxy's config file (strangler.yaml).
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn load(config: &std::path::Path) -> Result<Config> {
    Config::load(config).map_err(|d| anyhow::anyhow!("{d}"))
}

pub fn run(cmd: &RolloutCommand) -> Result<()> {
    use RolloutCommand as C;
    let command = |t: &Target, action: &str| -> Result<()> {
        let cfg = load(&t.config)?;
        let v = call(
            &cfg,
            "POST",
            &format!("/api/rollouts/{}/{action}", t.context),
            None,
        )?;
        println!("{}", state_line(&t.context, &v["state"]));
        Ok(())
    };
    match cmd {
        C::Status { config } => {
            let cfg = load(config)?;
            print!("{}", status(&call(&cfg, "GET", "/api/rollouts", None)?));
        }
        C::Pause(t) => command(t, "pause")?,
        C::Resume(t) => command(t, "resume")?,
        C::Promote(t) => command(t, "promote")?,
        C::Rollback(t) => command(t, "rollback")?,
        C::SetWeight {
            config,
            context,
            weight,
        } => {
            let cfg = load(config)?;
            let v = call(
                &cfg,
                "POST",
                &format!("/api/rollouts/{context}/weight"),
                Some(&json!({ "weight": weight })),
            )?;
            println!("{}", state_line(context, &v["state"]));
        }
        C::Audit {
            config,
            context,
            limit,
        } => {
            let cfg = load(config)?;
            let mut path = format!("/api/audit?limit={limit}");
            if let Some(c) = context {
                path.push_str(&format!("&context={c}"));
            }
            print!("{}", audit(&call(&cfg, "GET", &path, None)?));
        }
    }
    Ok(())
}

pub fn run_kill_switch(cmd: &KillSwitchCommand) -> Result<()> {
    let (KillSwitchCommand::On { config }
    | KillSwitchCommand::Off { config }
    | KillSwitchCommand::Status { config }) = cmd;
    let cfg = load(config)?;
    let v = match cmd {
        KillSwitchCommand::On { .. } => call(&cfg, "POST", "/api/kill-switch", None)?,
        KillSwitchCommand::Off { .. } => call(&cfg, "DELETE", "/api/kill-switch", None)?,
        KillSwitchCommand::Status { .. } => call(&cfg, "GET", "/api/kill-switch", None)?,
    };
    let on = v["kill_switch"]
        .as_bool()
        .or_else(|| v["on"].as_bool())
        .unwrap_or(false);
    let already = if v["changed"].as_bool() == Some(false) {
        " (it already was; nothing changed)"
    } else {
        ""
    };
    println!(
        "kill switch {}{already}",
        if on {
            "ON: every context goes to the monolith, and no rollout moves until it is off"
        } else {
            "off"
        }
    );
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
