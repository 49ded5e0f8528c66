//! Raw rule-file structures: a faithful, strict mirror of the YAML format (`deny_unknown_fields`
//! everywhere, so a typo is an error and never a silent misroute). No validation happens here;
//! `compile` turns these into the typed rule set.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

/// A whole rule file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuleFile {
    /// Bounded contexts: routes that move to one new service together.
    #[serde(default)]
    pub contexts: Option<Vec<Spanned<RawContext>>>,
    /// `routes:` with nothing after it means no routes.
    #[serde(default)]
    pub routes: Option<Vec<Spanned<RawRoute>>>,
    /// Not in the file: where items were left out after a structural error.
    #[serde(skip)]
    pub numbering: Numbering,
}

/// Each kept item's index in its list in the file, when items were left out (a file read in
/// pieces after a structural error); empty when the file was read whole.
#[derive(Debug, Default)]
pub struct Numbering {
    pub contexts: Vec<usize>,
    pub routes: Vec<usize>,
}

impl Numbering {
    /// The file's index of the `i`-th kept route.
    pub fn route(&self, i: usize) -> usize {
        self.routes.get(i).copied().unwrap_or(i)
    }

    /// The file's index of the `i`-th kept context.
    pub fn context(&self, i: usize) -> usize {
        self.contexts.get(i).copied().unwrap_or(i)
    }
}

/// A bounded context: its routes share the service, the sticky key (and its salt, the context's
/// name), and the weight or the rollout plan.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawContext {
    pub name: Spanned<String>,
    pub service: Spanned<String>,
    #[serde(default)]
    pub sticky: Option<Spanned<RawSticky>>,
    /// Percent of the context's traffic to the service (or a `rollout`, not both).
    #[serde(default)]
    pub weight: Option<Spanned<f64>>,
    #[serde(default)]
    pub rollout: Option<Spanned<RawRollout>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    /// Percentages, or `pause`.
    pub steps: Spanned<Vec<Spanned<Value>>>,
    pub interval: Spanned<String>,
    /// How often the gates are checked (`3s` by default; at most `interval`).
    #[serde(default)]
    pub check_every: Option<Spanned<String>>,
    #[serde(default)]
    pub min_requests: Option<Spanned<u64>>,
    #[serde(default)]
    pub gates: Option<Spanned<RawGates>>,
    #[serde(default)]
    pub failure_limit: Option<Spanned<u32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGates {
    /// `99.5%` (or a number, in percent).
    #[serde(default)]
    pub match_rate: Option<Spanned<Value>>,
    #[serde(default)]
    pub error_rate: Option<Spanned<RawErrorGate>>,
    #[serde(default)]
    pub p99_latency: Option<Spanned<RawLatencyGate>>,
    #[serde(default)]
    pub webhook: Option<Spanned<RawWebhook>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawErrorGate {
    /// `0.5pp` (or a number, in percentage points).
    pub max_increase: Spanned<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLatencyGate {
    pub max_ratio: Spanned<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub url: Spanned<String>,
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Spanned<String>,
    /// Higher first; equal priorities keep file order (files in name order).
    #[serde(default)]
    pub priority: Option<Spanned<i64>>,
    #[serde(default, rename = "match")]
    pub matches: Option<Spanned<RawMatch>>,
    pub target: Spanned<RawTarget>,
    /// Dual-write: the event each matching exchange becomes.
    #[serde(default)]
    pub publish: Option<Spanned<RawPublish>>,
    #[serde(default)]
    pub shadow: Option<Spanned<RawShadow>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    #[serde(default)]
    pub host: Option<Spanned<String>>,
    #[serde(default)]
    pub path: Option<Spanned<RawPath>>,
    #[serde(default)]
    pub headers: Vec<Spanned<RawValueMatch>>,
    #[serde(default)]
    pub query: Vec<Spanned<RawValueMatch>>,
    #[serde(default)]
    pub body: Vec<Spanned<RawBodyMatch>>,
}

/// Exactly one of the four path forms.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPath {
    #[serde(default)]
    pub exact: Option<Spanned<String>>,
    #[serde(default)]
    pub prefix: Option<Spanned<String>>,
    #[serde(default)]
    pub template: Option<Spanned<String>>,
    #[serde(default)]
    pub regex: Option<Spanned<String>>,
}

/// A header or query parameter test: present (the default when nothing else is given), equals, or
/// regex.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawValueMatch {
    pub name: Spanned<String>,
    #[serde(default)]
    pub present: Option<Spanned<bool>>,
    #[serde(default)]
    pub equals: Option<Spanned<String>>,
    #[serde(default)]
    pub regex: Option<Spanned<String>>,
}

/// A JSONPath predicate on the request body: matches when the path selects at least one value
/// (and, with `equals`, when one selected value equals it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBodyMatch {
    pub jsonpath: Spanned<String>,
    #[serde(default)]
    pub equals: Option<Spanned<serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// A service named in the config, or `legacy` for the monolith (or a `context`).
    #[serde(default)]
    pub service: Option<Spanned<String>>,
    /// The bounded context the route belongs to: its service, sticky key and weight.
    #[serde(default)]
    pub context: Option<Spanned<String>>,
    /// Percent of the route's traffic sent to the service; the rest goes to the monolith.
    #[serde(default)]
    pub weight: Option<Spanned<f64>>,
    #[serde(default)]
    pub sticky: Option<Spanned<RawSticky>>,
    #[serde(default)]
    pub rewrite: Option<Spanned<RawRewrite>>,
    /// Extra request headers sent to the service.
    #[serde(default)]
    pub headers: Vec<Spanned<RawHeader>>,
}

/// Exactly one source of the sticky key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    #[serde(default)]
    pub header: Option<Spanned<String>>,
    #[serde(default)]
    pub cookie: Option<Spanned<String>>,
    #[serde(default)]
    pub query: Option<Spanned<String>>,
    #[serde(default)]
    pub path_param: Option<Spanned<String>>,
    #[serde(default)]
    pub body: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRewrite {
    #[serde(default)]
    pub strip_prefix: Option<Spanned<String>>,
    #[serde(default)]
    pub replace_prefix: Option<Spanned<RawReplacePrefix>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReplacePrefix {
    pub from: Spanned<String>,
    pub to: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeader {
    pub name: Spanned<String>,
    pub value: Spanned<String>,
}

/// Raw `publish:` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPublish {
    /// Stream name or ARN.
    pub stream: Spanned<String>,
    #[serde(rename = "type")]
    pub ty: Spanned<String>,
    #[serde(default)]
    pub source: Option<Spanned<String>>,
    #[serde(default)]
    pub subject: Option<Spanned<RawRef>>,
    #[serde(default)]
    pub partition_key: Option<Spanned<RawRef>>,
    #[serde(default)]
    pub data: Option<Spanned<RawRef>>,
    #[serde(default)]
    pub when_status: Option<Spanned<Vec<Spanned<RawStatus>>>>,
    #[serde(default)]
    pub redact: Vec<Spanned<RawRedact>>,
    #[serde(default)]
    pub durability: Option<Spanned<String>>,
}

/// A reference into the exchange, or a literal: exactly one key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRef {
    #[serde(default, rename = "request.body")]
    pub request_body: Option<Spanned<String>>,
    #[serde(default, rename = "request.header")]
    pub request_header: Option<Spanned<String>>,
    #[serde(default, rename = "request.query")]
    pub request_query: Option<Spanned<String>>,
    #[serde(default, rename = "request.path_param")]
    pub path_param: Option<Spanned<String>>,
    #[serde(default, rename = "request.path")]
    pub request_path: Option<Spanned<bool>>,
    #[serde(default, rename = "request.method")]
    pub request_method: Option<Spanned<bool>>,
    #[serde(default, rename = "response.status")]
    pub response_status: Option<Spanned<bool>>,
    #[serde(default, rename = "response.header")]
    pub response_header: Option<Spanned<String>>,
    #[serde(default, rename = "response.body")]
    pub response_body: Option<Spanned<String>>,
    #[serde(default)]
    pub sticky_key: Option<Spanned<bool>>,
    #[serde(default)]
    pub literal: Option<Spanned<Value>>,
    /// Only in `data`: an object whose fields are references.
    #[serde(default)]
    pub object: Option<BTreeMap<String, Spanned<RawRef>>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawStatus {
    Code(u16),
    Class(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedact {
    pub jsonpath: Spanned<String>,
    /// `remove` (default) or `hash` (salted HMAC-SHA256, so equal values stay joinable).
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
}

/// Raw `shadow:` section of a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShadow {
    /// The new service compared with the monolith.
    pub service: Spanned<String>,
    /// % of matching requests copied (default 100).
    #[serde(default)]
    pub sample: Option<Spanned<f64>>,
    /// Copied methods (default: the safe ones).
    #[serde(default)]
    pub methods: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub strip_headers: Vec<Spanned<String>>,
    #[serde(default)]
    pub compare: Option<Spanned<RawCompare>>,
    #[serde(default)]
    pub noise: Option<Spanned<RawNoise>>,
    #[serde(default)]
    pub limits: Option<Spanned<RawShadowLimits>>,
    /// Redacted before a mismatch is stored (same forms as `publish.redact`).
    #[serde(default)]
    pub redact: Vec<Spanned<RawRedact>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompare {
    #[serde(default)]
    pub headers: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub ignore: Vec<Spanned<String>>,
    #[serde(default)]
    pub unordered: Vec<Spanned<RawUnordered>>,
    #[serde(default)]
    pub numbers: Option<Spanned<RawNumbers>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUnordered {
    pub path: Spanned<String>,
    #[serde(default)]
    pub key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNumbers {
    #[serde(default)]
    pub relative: Option<Spanned<f64>>,
    #[serde(default)]
    pub absolute: Option<Spanned<f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNoise {
    /// A second monolith instance (a service of the config).
    #[serde(default)]
    pub secondary: Option<Spanned<String>>,
    /// Leave suspected noise (learned without a secondary) out of mismatches too.
    #[serde(default)]
    pub exclude_suspected: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShadowLimits {
    #[serde(default)]
    pub in_flight: Option<Spanned<u32>>,
    /// A size such as `1MiB`.
    #[serde(default)]
    pub body: Option<Spanned<String>>,
}
