//! Raw rule-file structures: a faithful, strict mirror of the YAML format (`deny_unknown_fields`
//! everywhere, so a typo is an error and never a silent misroute). No validation happens here;
//! `compile` turns these into the typed rule set.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::spanned::Spanned;

/// The JSON Schema of a rule file, from these types (`schema/rules.schema.json`; a test in the
/// proxy keeps the committed copy current). Editors use it through a
/// `# yaml-language-server: $schema=…` line.
pub fn json_schema() -> Value {
    let mut s = schemars::schema_for!(RawRuleFile);
    s.insert("title".into(), "strangler rule file".into());
    serde_json::to_value(s).expect("a schema is JSON")
}

/// A whole rule file.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRuleFile {
    /// Bounded contexts: routes that move to one new service together.
    #[serde(default)]
    #[schemars(with = "Option<Vec<RawContext>>")]
    pub contexts: Option<Vec<Spanned<RawContext>>>,
    /// `routes:` with nothing after it means no routes.
    #[serde(default)]
    #[schemars(with = "Option<Vec<RawRoute>>")]
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
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawContext {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    #[schemars(with = "String")]
    pub service: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Option<RawSticky>")]
    pub sticky: Option<Spanned<RawSticky>>,
    /// Percent of the context's traffic to the service (or a `rollout`, not both).
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    pub weight: Option<Spanned<f64>>,
    #[serde(default)]
    #[schemars(with = "Option<RawRollout>")]
    pub rollout: Option<Spanned<RawRollout>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    /// Percentages, or `pause`.
    #[schemars(with = "Vec<Value>")]
    pub steps: Spanned<Vec<Spanned<Value>>>,
    #[schemars(with = "String")]
    pub interval: Spanned<String>,
    /// How often the gates are checked (`3s` by default; at most `interval`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub check_every: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub min_requests: Option<Spanned<u64>>,
    #[serde(default)]
    #[schemars(with = "Option<RawGates>")]
    pub gates: Option<Spanned<RawGates>>,
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub failure_limit: Option<Spanned<u32>>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGates {
    /// `99.5%` (or a number, in percent).
    #[serde(default)]
    #[schemars(with = "Option<Value>")]
    pub match_rate: Option<Spanned<Value>>,
    #[serde(default)]
    #[schemars(with = "Option<RawErrorGate>")]
    pub error_rate: Option<Spanned<RawErrorGate>>,
    #[serde(default)]
    #[schemars(with = "Option<RawLatencyGate>")]
    pub p99_latency: Option<Spanned<RawLatencyGate>>,
    #[serde(default)]
    #[schemars(with = "Option<RawWebhook>")]
    pub webhook: Option<Spanned<RawWebhook>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawErrorGate {
    /// `0.5pp` (or a number, in percentage points).
    #[schemars(with = "Value")]
    pub max_increase: Spanned<Value>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLatencyGate {
    #[schemars(with = "f64")]
    pub max_ratio: Spanned<f64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Higher first; equal priorities keep file order (files in name order).
    #[serde(default)]
    #[schemars(with = "Option<i64>")]
    pub priority: Option<Spanned<i64>>,
    // The parts are boxed: a route is read into a growing Vec, and inline they made each one
    // 6 KB (10,000 routes: 60 MB moved at every doubling, most of a reload's time).
    #[serde(default, rename = "match")]
    #[schemars(with = "Option<RawMatch>")]
    pub matches: Option<Box<Spanned<RawMatch>>>,
    #[schemars(with = "RawTarget")]
    pub target: Box<Spanned<RawTarget>>,
    /// Dual-write: the event each matching exchange becomes.
    #[serde(default)]
    #[schemars(with = "Option<RawPublish>")]
    pub publish: Option<Box<Spanned<RawPublish>>>,
    #[serde(default)]
    #[schemars(with = "Option<RawShadow>")]
    pub shadow: Option<Box<Spanned<RawShadow>>>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub methods: Vec<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub host: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<RawPath>")]
    pub path: Option<Spanned<RawPath>>,
    #[serde(default)]
    #[schemars(with = "Vec<RawValueMatch>")]
    pub headers: Vec<Spanned<RawValueMatch>>,
    #[serde(default)]
    #[schemars(with = "Vec<RawValueMatch>")]
    pub query: Vec<Spanned<RawValueMatch>>,
    #[serde(default)]
    #[schemars(with = "Vec<RawBodyMatch>")]
    pub body: Vec<Spanned<RawBodyMatch>>,
}

/// Exactly one of the four path forms.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPath {
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub exact: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub prefix: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub template: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub regex: Option<Spanned<String>>,
}

/// A header or query parameter test: present (the default when nothing else is given), equals, or
/// regex.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawValueMatch {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub present: Option<Spanned<bool>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub equals: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub regex: Option<Spanned<String>>,
}

/// A JSONPath predicate on the request body: matches when the path selects at least one value
/// (and, with `equals`, when one selected value equals it).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBodyMatch {
    #[schemars(with = "String")]
    pub jsonpath: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub equals: Option<Spanned<serde_json::Value>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// A service named in the config, or `legacy` for the monolith (or a `context`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub service: Option<Spanned<String>>,
    /// The bounded context the route belongs to: its service, sticky key and weight.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub context: Option<Spanned<String>>,
    /// Percent of the route's traffic sent to the service; the rest goes to the monolith.
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    pub weight: Option<Spanned<f64>>,
    #[serde(default)]
    #[schemars(with = "Option<RawSticky>")]
    pub sticky: Option<Spanned<RawSticky>>,
    #[serde(default)]
    #[schemars(with = "Option<RawRewrite>")]
    pub rewrite: Option<Spanned<RawRewrite>>,
    /// Extra request headers sent to the service.
    #[serde(default)]
    #[schemars(with = "Vec<RawHeader>")]
    pub headers: Vec<Spanned<RawHeader>>,
}

/// Exactly one source of the sticky key.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub header: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub cookie: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub query: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub path_param: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub body: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRewrite {
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub strip_prefix: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<RawReplacePrefix>")]
    pub replace_prefix: Option<Spanned<RawReplacePrefix>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawReplacePrefix {
    #[schemars(with = "String")]
    pub from: Spanned<String>,
    #[schemars(with = "String")]
    pub to: Spanned<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHeader {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    #[schemars(with = "String")]
    pub value: Spanned<String>,
}

/// Raw `publish:` section.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPublish {
    /// Stream name or ARN.
    #[schemars(with = "String")]
    pub stream: Spanned<String>,
    #[serde(rename = "type")]
    #[schemars(with = "String")]
    pub ty: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub source: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<RawRef>")]
    pub subject: Option<Spanned<RawRef>>,
    #[serde(default)]
    #[schemars(with = "Option<RawRef>")]
    pub partition_key: Option<Spanned<RawRef>>,
    #[serde(default)]
    #[schemars(with = "Option<RawRef>")]
    pub data: Option<Spanned<RawRef>>,
    #[serde(default)]
    #[schemars(with = "Option<Vec<RawStatus>>")]
    pub when_status: Option<Spanned<Vec<Spanned<RawStatus>>>>,
    #[serde(default)]
    #[schemars(with = "Vec<RawRedact>")]
    pub redact: Vec<Spanned<RawRedact>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub durability: Option<Spanned<String>>,
}

/// A reference into the exchange, or a literal: exactly one key.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRef {
    #[serde(default, rename = "request.body")]
    #[schemars(with = "Option<String>")]
    pub request_body: Option<Spanned<String>>,
    #[serde(default, rename = "request.header")]
    #[schemars(with = "Option<String>")]
    pub request_header: Option<Spanned<String>>,
    #[serde(default, rename = "request.query")]
    #[schemars(with = "Option<String>")]
    pub request_query: Option<Spanned<String>>,
    #[serde(default, rename = "request.path_param")]
    #[schemars(with = "Option<String>")]
    pub path_param: Option<Spanned<String>>,
    #[serde(default, rename = "request.path")]
    #[schemars(with = "Option<bool>")]
    pub request_path: Option<Spanned<bool>>,
    #[serde(default, rename = "request.method")]
    #[schemars(with = "Option<bool>")]
    pub request_method: Option<Spanned<bool>>,
    #[serde(default, rename = "response.status")]
    #[schemars(with = "Option<bool>")]
    pub response_status: Option<Spanned<bool>>,
    #[serde(default, rename = "response.header")]
    #[schemars(with = "Option<String>")]
    pub response_header: Option<Spanned<String>>,
    #[serde(default, rename = "response.body")]
    #[schemars(with = "Option<String>")]
    pub response_body: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub sticky_key: Option<Spanned<bool>>,
    #[serde(default)]
    #[schemars(with = "Option<Value>")]
    pub literal: Option<Spanned<Value>>,
    /// Only in `data`: an object whose fields are references.
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, RawRef>>")]
    pub object: Option<BTreeMap<String, Spanned<RawRef>>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum RawStatus {
    Code(u16),
    Class(String),
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRedact {
    #[schemars(with = "String")]
    pub jsonpath: Spanned<String>,
    /// `remove` (default) or `hash` (salted HMAC-SHA256, so equal values stay joinable).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub mode: Option<Spanned<String>>,
}

/// Raw `shadow:` section of a route.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawShadow {
    /// The new service compared with the monolith.
    #[schemars(with = "String")]
    pub service: Spanned<String>,
    /// % of matching requests copied (default 100).
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    pub sample: Option<Spanned<f64>>,
    /// Copied methods (default: the safe ones).
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub methods: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub strip_headers: Vec<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<RawCompare>")]
    pub compare: Option<Spanned<RawCompare>>,
    #[serde(default)]
    #[schemars(with = "Option<RawNoise>")]
    pub noise: Option<Spanned<RawNoise>>,
    #[serde(default)]
    #[schemars(with = "Option<RawShadowLimits>")]
    pub limits: Option<Spanned<RawShadowLimits>>,
    /// Redacted before a mismatch is stored (same forms as `publish.redact`).
    #[serde(default)]
    #[schemars(with = "Vec<RawRedact>")]
    pub redact: Vec<Spanned<RawRedact>>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCompare {
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub headers: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub ignore: Vec<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Vec<RawUnordered>")]
    pub unordered: Vec<Spanned<RawUnordered>>,
    #[serde(default)]
    #[schemars(with = "Option<RawNumbers>")]
    pub numbers: Option<Spanned<RawNumbers>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUnordered {
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNumbers {
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    pub relative: Option<Spanned<f64>>,
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    pub absolute: Option<Spanned<f64>>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNoise {
    /// A second monolith instance (a service of the config).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub secondary: Option<Spanned<String>>,
    /// Leave suspected noise (learned without a secondary) out of mismatches too.
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub exclude_suspected: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawShadowLimits {
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub in_flight: Option<Spanned<u32>>,
    /// A size such as `1MiB`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub body: Option<Spanned<String>>,
}
