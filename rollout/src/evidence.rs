//! What a check looks at: per side, requests, 5xx answers and a latency histogram; the shadow
//! comparisons of the context's routes; the webhook's answer. Figures from several replicas and
//! windows add up ([`Evidence::merge`]).

use serde::{Deserialize, Serialize};

/// Latency buckets: bucket `i` holds latencies up to `FIRST_US × GROWTH^i` µs (the last one
/// everything above): 8 % apart, so a p99 read from it is within 8 % of the true one.
const FIRST_US: f64 = 50.0;
const GROWTH: f64 = 1.08;
const BUCKETS: usize = 200;

/// A mergeable latency histogram.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    /// Counts per bucket, trailing empty buckets left out.
    pub counts: Vec<u64>,
}

impl LatencyHistogram {
    pub fn record(&mut self, micros: u64) {
        let i = bucket(micros);
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0–1) in milliseconds: the upper bound of its bucket. `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(upper_us(i) / 1000.0);
            }
        }
        None
    }
}

fn bucket(micros: u64) -> usize {
    if (micros as f64) <= FIRST_US {
        return 0;
    }
    let i = ((micros as f64 / FIRST_US).ln() / GROWTH.ln()).ceil() as usize;
    i.min(BUCKETS - 1)
}

fn upper_us(i: usize) -> f64 {
    FIRST_US * GROWTH.powi(i32::try_from(i).unwrap_or(i32::MAX))
}

/// One side's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideFigures {
    pub requests: u64,
    /// Answers with a 5xx status (and requests that got no answer).
    pub errors: u64,
    pub latency: LatencyHistogram,
}

impl SideFigures {
    pub fn merge(&mut self, other: &SideFigures) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency.merge(&other.latency);
    }

    /// 5xx per request, `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }
}

/// The monolith's figures at the last check that had monolith traffic: what a context at 100 %
/// (no monolith traffic any more) is compared with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Its 5xx rate.
    pub error_rate: Option<f64>,
    /// Its p99 latency, ms.
    pub p99_ms: Option<f64>,
}

impl Baseline {
    /// The last known figures: these, where `legacy` had traffic; else the ones before.
    pub fn updated(&self, legacy: &SideFigures) -> Baseline {
        Baseline {
            error_rate: legacy.error_rate().or(self.error_rate),
            p99_ms: legacy.latency.quantile_ms(0.99).or(self.p99_ms),
        }
    }
}

/// The figures a check decides on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Since the last check, per side.
    pub legacy: SideFigures,
    pub service: SideFigures,
    /// Shadow comparisons since the last check.
    pub shadow_matched: u64,
    pub shadow_compared: u64,
    /// The webhook gate's answer at this check: `Ok` for a 2xx, else why not; `None` when it
    /// was not called.
    #[serde(skip)]
    pub webhook: Option<Result<(), String>>,
}

impl Evidence {
    /// Adds another replica's or window's figures (not the webhook's answer).
    pub fn merge(&mut self, other: &Evidence) {
        self.legacy.merge(&other.legacy);
        self.service.merge(&other.service);
        self.shadow_matched += other.shadow_matched;
        self.shadow_compared += other.shadow_compared;
    }
}
