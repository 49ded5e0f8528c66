//! The `strangler` commands other than `run`, one file each: `check` and `explain` work on the
//! files alone; `stream` and `iam-policy` ask Kinesis; `capacity` reads the store; `shadow`,
//! `rollout`, `kill-switch` and `events` ask the running proxy's admin API (`admin`).
//!
//! Every command returns a `Result`: `main` turns it into the exit status (0 done, 1 failed with
//! the reason on stderr; clap's 2 for bad usage).

pub mod admin;
pub mod capacity;
pub mod check;
pub mod events;
pub mod explain;
pub mod iam;
pub mod kill_switch;
pub mod rollout;
pub mod shadow;
pub mod stream;

use std::path::Path;

use strangler_rules::{Environment, RuleSet};

use crate::config::Config;

/// A failure the command has already explained on stderr (`check`'s findings): the exit status
/// says it failed, nothing more is printed.
#[derive(Debug)]
pub struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed (see above)")
    }
}

impl std::error::Error for Reported {}

/// The config a command works with, its errors as one message (each `file:line:col: …`).
pub fn load(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|d| anyhow::anyhow!("{d}"))
}

/// The rules under `cfg`'s rule folder, checked against its services, as the proxy loads them.
pub fn rules(cfg: &Config) -> anyhow::Result<RuleSet> {
    let env = Environment {
        services: Some(cfg.service_names()),
    };
    let (rules, _) = strangler_rules::load(&cfg.rules, &env).map_err(|d| anyhow::anyhow!("{d}"))?;
    Ok(rules)
}
