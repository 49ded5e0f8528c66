//! `strangler kill-switch on|off|status`: every context to the monolith at once, on every
//! replica, through the admin API.

use anyhow::Result;

use super::admin::call;
use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum KillSwitchCommand {
    /// Every context to the monolith at once, on every replica, until turned off.
    #[command(after_help = "Example:\n  strangler kill-switch on -c strangler.yaml")]
    On,
    /// Back to each context's own weight (the rollouts go on from where they were).
    #[command(after_help = "Example:\n  strangler kill-switch off -c strangler.yaml")]
    Off,
    /// Whether the kill switch is on.
    #[command(after_help = "Example:\n  strangler kill-switch status -c strangler.yaml")]
    Status,
}

pub fn run(cfg: &Config, cmd: &KillSwitchCommand) -> Result<()> {
    let v = match cmd {
        KillSwitchCommand::On => call(cfg, "POST", "/api/kill-switch", None)?,
        KillSwitchCommand::Off => call(cfg, "DELETE", "/api/kill-switch", None)?,
        KillSwitchCommand::Status => call(cfg, "GET", "/api/kill-switch", None)?,
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
