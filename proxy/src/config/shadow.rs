//! The `shadow:` section of the config file: how long and how many mismatches the store keeps.
//! What a route shadows is in its rule file, not here.

use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;
use strangler_rules::Reporter;

use super::values::positive_duration;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShadow {
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    keep_per_route: Option<Spanned<u64>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    keep_for: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    prune_interval: Option<Spanned<String>>,
}

/// Retention of stored mismatches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The newest this many are kept per route (default 10,000).
    pub per_route: u64,
    /// None older than this (default 7 days).
    pub max_age: Duration,
    /// How often the table is pruned (default every minute).
    pub every: Duration,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            per_route: 10_000,
            max_age: Duration::from_secs(7 * 24 * 3600),
            every: Duration::from_secs(60),
        }
    }
}

pub(super) fn retention(raw: Option<RawShadow>, r: &mut Reporter) -> Retention {
    let raw = raw.unwrap_or_default();
    let d = Retention::default();
    let per_route = match &raw.keep_per_route {
        Some(n) if n.value == 0 => {
            r.report(
                n.into(),
                "shadow.keep_per_route",
                "keep_per_route must be at least 1",
            );
            d.per_route
        }
        Some(n) => n.value,
        None => d.per_route,
    };
    Retention {
        per_route,
        max_age: positive_duration(raw.keep_for.as_ref(), "shadow.keep_for", d.max_age, r),
        every: positive_duration(
            raw.prune_interval.as_ref(),
            "shadow.prune_interval",
            d.every,
            r,
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn config(shadow: &str) -> Result<Config, String> {
        let text = format!(
            "listen: [\"127.0.0.1:0\"]\nlegacy: {{ address: \"127.0.0.1:1\" }}\nrules: .\n{shadow}"
        );
        Config::parse(Path::new("s.yaml"), &text).map_err(|e| e.to_string())
    }

    #[test]
    fn retention_defaults_and_errors() {
        let d = config("").unwrap().mismatch_retention;
        assert_eq!((d.per_route, d.max_age.as_secs()), (10_000, 7 * 24 * 3600));
        let set = config("shadow: { keep_per_route: 50, keep_for: 2h, prune_interval: 5s }\n")
            .unwrap()
            .mismatch_retention;
        assert_eq!(
            (set.per_route, set.max_age.as_secs(), set.every.as_secs()),
            (50, 7200, 5)
        );
        let err = config("shadow:\n  keep_per_route: 0\n  keep_for: soon\n").unwrap_err();
        assert!(
            err.contains("s.yaml:5:19: shadow.keep_per_route: keep_per_route must be at least 1"),
            "{err}"
        );
        assert!(err.contains("s.yaml:6:13: shadow.keep_for"), "{err}");
        assert!(config("shadow: { keep: 1 }\n").is_err());
    }
}
