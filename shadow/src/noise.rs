//! Noise: places whose difference says nothing about the new service (timestamps, generated ids,
//! random order). Learned per route and pattern, kept per field rather than all-or-nothing:
//!
//! - **With a secondary** (a second monolith instance answering the same request), every pattern
//!   that differs between the two monolith answers is noise: it is left out of mismatches and
//!   listed with how often it differed ([`Noise::learn`]).
//! - **Without one**, a pattern whose new-vs-monolith difference is present in every comparison
//!   since it first appeared, with a value that changes every time, is *suspected* noise
//!   ([`Noise::observe`]): listed, and left out only when the rule says so.
//!
//! Bounded: at most [`MAX_PATTERNS`] patterns are tracked per route, and a few value hashes per
//! pattern.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde::Serialize;

use crate::Difference;

/// Patterns tracked per route at most; past it new patterns are not learned.
pub const MAX_PATTERNS: usize = 1_000;
/// Comparisons a pattern must have differed in, every time, before it is suspected.
pub const MIN_SAMPLES: u64 = 10;
/// Recent values remembered per pattern to tell "always changing" from "always the same".
const VALUES: usize = 8;

/// What is known of one pattern.
#[derive(Debug, Clone, Default)]
struct PatternNoise {
    /// Comparisons with the secondary in which it differed.
    secondary_differed: u64,
    /// Comparisons with the new service since it first differed, and in how many it differed.
    seen_since: u64,
    differed: u64,
    /// Hashes of the monolith's recent values at this pattern.
    recent: Vec<u64>,
    /// A value repeated among the recent ones: not "always changing".
    repeated: bool,
}

/// How a pattern is classed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseKind {
    /// Differed between two monolith answers.
    Learned,
    /// Always differs from the monolith with a changing value (no secondary to confirm).
    Suspected,
}

/// One entry of the noise report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoiseEntry {
    pub pattern: String,
    pub kind: NoiseKind,
    /// How many comparisons it differed in, of how many.
    pub differed: u64,
    pub of: u64,
}

/// One route's learned noise.
#[derive(Debug, Clone, Default)]
pub struct Noise {
    patterns: HashMap<String, PatternNoise>,
    /// Comparisons between the monolith and its secondary.
    secondary_comparisons: u64,
}

impl Noise {
    /// Learns from the differences between the monolith's answer and the secondary's.
    pub fn learn(&mut self, monolith_vs_secondary: &[Difference]) {
        self.secondary_comparisons += 1;
        let mut seen: Vec<&str> = monolith_vs_secondary
            .iter()
            .map(|d| d.pattern.as_str())
            .collect();
        seen.sort_unstable();
        seen.dedup();
        for pattern in seen {
            if let Some(p) = self.entry(pattern) {
                p.secondary_differed += 1;
            }
        }
    }

    /// Observes one comparison with the new service (for suspected noise).
    pub fn observe(&mut self, new_vs_monolith: &[Difference]) {
        let mut differed: HashMap<&str, u64> = HashMap::new();
        for d in new_vs_monolith {
            let mut h = DefaultHasher::new();
            d.expected.as_ref().map(ToString::to_string).hash(&mut h);
            differed
                .entry(d.pattern.as_str())
                .or_insert_with(|| h.finish());
        }
        // Every pattern already tracked sees this comparison, differing or not.
        for (pattern, p) in &mut self.patterns {
            if p.differed > 0 && !differed.contains_key(pattern.as_str()) {
                p.seen_since += 1;
            }
        }
        for (pattern, value) in differed {
            let Some(p) = self.entry(pattern) else {
                continue;
            };
            p.seen_since += 1;
            p.differed += 1;
            if p.recent.contains(&value) {
                p.repeated = true;
            }
            if p.recent.len() == VALUES {
                p.recent.remove(0);
            }
            p.recent.push(value);
        }
    }

    fn entry(&mut self, pattern: &str) -> Option<&mut PatternNoise> {
        if !self.patterns.contains_key(pattern) && self.patterns.len() >= MAX_PATTERNS {
            return None;
        }
        Some(self.patterns.entry(pattern.to_string()).or_default())
    }

    /// How `pattern` is classed, if it is noise.
    pub fn kind(&self, pattern: &str) -> Option<NoiseKind> {
        let p = self.patterns.get(pattern)?;
        if p.secondary_differed > 0 {
            Some(NoiseKind::Learned)
        } else if p.differed >= MIN_SAMPLES && p.differed == p.seen_since && !p.repeated {
            Some(NoiseKind::Suspected)
        } else {
            None
        }
    }

    /// Splits differences into those that count and those that are noise (learned noise always;
    /// suspected noise when `exclude_suspected`).
    pub fn split(
        &self,
        diffs: Vec<Difference>,
        exclude_suspected: bool,
    ) -> (Vec<Difference>, Vec<Difference>) {
        diffs
            .into_iter()
            .partition(|d| match self.kind(&d.pattern) {
                Some(NoiseKind::Learned) => false,
                Some(NoiseKind::Suspected) => !exclude_suspected,
                None => true,
            })
    }

    /// Every noisy pattern, most frequent first.
    pub fn report(&self) -> Vec<NoiseEntry> {
        let mut out: Vec<NoiseEntry> = self
            .patterns
            .iter()
            .filter_map(|(pattern, p)| {
                let kind = self.kind(pattern)?;
                let (differed, of) = match kind {
                    NoiseKind::Learned => (p.secondary_differed, self.secondary_comparisons),
                    NoiseKind::Suspected => (p.differed, p.seen_since),
                };
                Some(NoiseEntry {
                    pattern: pattern.clone(),
                    kind,
                    differed,
                    of,
                })
            })
            .collect();
        out.sort_by(|a, b| b.differed.cmp(&a.differed).then(a.pattern.cmp(&b.pattern)));
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::Kind;

    fn diff(pattern: &str, expected: serde_json::Value) -> Difference {
        Difference {
            kind: Kind::Value,
            location: pattern.replace("[*]", "[0]"),
            pattern: pattern.into(),
            expected: Some(expected),
            actual: Some(json!("other")),
        }
    }

    #[test]
    fn what_differs_between_two_monolith_answers_is_noise() {
        let mut n = Noise::default();
        n.learn(&[diff("$.generated_at", json!("t1"))]);
        n.learn(&[]);
        let (kept, noise) = n.split(
            vec![
                diff("$.generated_at", json!("t2")),
                diff("$.total", json!(10)),
            ],
            false,
        );
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].pattern, "$.total");
        assert_eq!(noise.len(), 1);
        assert_eq!(
            n.report(),
            [NoiseEntry {
                pattern: "$.generated_at".into(),
                kind: NoiseKind::Learned,
                differed: 1,
                of: 2
            }]
        );
    }

    #[test]
    fn always_different_and_always_changing_is_suspected() {
        let mut n = Noise::default();
        for i in 0..MIN_SAMPLES {
            // A timestamp: a new value each time. A wrong total: the same value each time.
            n.observe(&[
                diff("$.at", json!(format!("t{i}"))),
                diff("$.total", json!(10)),
            ]);
        }
        assert_eq!(n.kind("$.at"), Some(NoiseKind::Suspected));
        assert_eq!(n.kind("$.total"), None);
        // Suspected noise is listed but still counts unless the rule excludes it.
        let (kept, _) = n.split(vec![diff("$.at", json!("t99"))], false);
        assert_eq!(kept.len(), 1);
        let (kept, _) = n.split(vec![diff("$.at", json!("t99"))], true);
        assert!(kept.is_empty());
        // Once it matches, it is not "always different" any more.
        n.observe(&[]);
        assert_eq!(n.kind("$.at"), None);
    }

    #[test]
    fn the_patterns_tracked_are_bounded() {
        let mut n = Noise::default();
        for i in 0..(MAX_PATTERNS + 50) {
            n.learn(&[diff(&format!("$.f{i}"), json!(1))]);
        }
        assert_eq!(n.patterns.len(), MAX_PATTERNS);
    }
}
