//! `strangler check FILE…`: validates config and rule files without starting anything. Prints
//! every error as `file:line:col: field: message` (exit 1), or one summary line per file (exit 0);
//! warnings (valid but likely mistakes) go to stderr as `warning: file:line:col: …` either way.

use std::path::{Path, PathBuf};

use strangler_rules::{Diagnostics, Environment, RuleSet};

use super::Reported;
use crate::config::Config;

/// The files' findings are printed here: an error says only that there were some.
pub fn run(files: &[PathBuf]) -> Result<(), Reported> {
    let mut diags = Diagnostics::default();
    let mut warnings = Diagnostics::default();
    let mut summaries = Vec::new();
    let mut services: Option<Vec<String>> = None;
    let (configs, rules): (Vec<&PathBuf>, Vec<&PathBuf>) =
        files.iter().partition(|p| !is_rule_file(p));
    for path in configs {
        match Config::load(path) {
            Ok(cfg) => {
                let names = cfg.service_names();
                services
                    .get_or_insert_with(Vec::new)
                    .extend(names.iter().cloned());
                match check_rules(&cfg.rules, &Environment { services: Some(names.clone()) }, &mut warnings) {
                    Ok((set, nfiles)) => match crate::dual_write::missing_region(&cfg, &set) {
                        Some(d) => diags.extend(d),
                        None => summaries.push(format!(
                            "ok: {}: {} listener(s), {} service(s) ({}); {} route(s) in {nfiles} rule file(s) under {}",
                            path.display(), cfg.listen.len(), names.len(), names.join(", "), set.len(), cfg.rules.display()
                        )),
                    },
                    Err(d) => diags.extend(d),
                }
            }
            Err(d) => diags.extend(d),
        }
    }
    for path in rules {
        let ctx = Environment {
            services: services.clone(),
        };
        match check_rules(path, &ctx, &mut warnings) {
            Ok((set, _)) => summaries.push(format!(
                "ok: {}: {} route(s){}",
                path.display(),
                set.len(),
                if services.is_none() {
                    " (service names not checked: also pass the config)"
                } else {
                    ""
                }
            )),
            Err(d) => diags.extend(d),
        }
    }
    // A rule file named on its own and also under a config's `rules` folder is read twice:
    // each finding is shown once.
    dedup(&mut diags);
    dedup(&mut warnings);
    // Valid but likely mistakes: shown, never fatal.
    for w in &warnings.0 {
        eprintln!("warning: {w}");
    }
    if diags.is_empty() {
        for s in summaries {
            println!("{s}");
        }
        Ok(())
    } else {
        for d in &diags.0 {
            eprintln!("{d}");
        }
        eprintln!("{} error(s)", diags.len());
        Err(Reported)
    }
}

/// The compiled rules and how many files they came from; their warnings go to `warnings`.
fn check_rules(
    path: &Path,
    ctx: &Environment,
    warnings: &mut Diagnostics,
) -> Result<(RuleSet, usize), Diagnostics> {
    let (set, files) = strangler_rules::load(path, ctx)?;
    warnings.extend(set.warnings().clone());
    Ok((set, files))
}

/// Drops repeated findings, keeping the first of each in order.
fn dedup(d: &mut Diagnostics) {
    let mut seen = std::collections::HashSet::new();
    d.0.retain(|x| seen.insert(x.to_string()));
}

/// A rule file has a top-level `routes:` key; anything else is taken for a config.
fn is_rule_file(path: &Path) -> bool {
    path.is_dir()
        || std::fs::read_to_string(path)
            .map(|t| t.lines().any(|l| l.starts_with("routes:")))
            .unwrap_or(false)
}
