//! Every Prometheus metric the proxy exports, in one struct registered against a registry that
//! the caller passes in (tests pass a fresh one). Labels are route and service names, never paths.

use std::sync::atomic::Ordering;

use pingora::protocols::http::v1::server::header_errors;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use crate::upstream::Serving;

#[derive(Clone)]
pub struct Metrics {
    pub requests: IntCounterVec,
    /// `{route,target,class}`: answers by status class (the error gate in Prometheus terms).
    pub responses: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub reloads: IntCounterVec,
    pub routes: IntGauge,
    pub route_weight: prometheus::GaugeVec,
    pub body_buffer_skipped: IntCounterVec,
    pub reload_duration: Histogram,
    pub rules_generation: IntGauge,
    pub downstream_errors: DownstreamErrors,
    /// Upgraded connections (WebSockets) open now.
    pub tunnels_open: IntGauge,
    /// `{reason}`: how tunnels ended (`client_closed`, `upstream_closed`, `idle_timeout`,
    /// `error`).
    pub tunnels_closed: IntCounterVec,
    /// `{result}`: HTTPS certificate reloads (`ok`, `rejected`).
    pub tls_reloads: IntCounterVec,
    pub shadow: ShadowMetrics,
    pub rollout: RolloutMetrics,
}

/// Gated rollouts: the weight in force, the phase, transitions, the gates' last figures, and the
/// kill switch.
#[derive(Clone)]
pub struct RolloutMetrics {
    /// `{context}`: percent of the context's traffic to the new service now.
    pub weight: prometheus::GaugeVec,
    /// `{context,phase}`: 1 for the current phase.
    pub phase: prometheus::IntGaugeVec,
    /// `{context,reason}`: started, step, rollback, plan_edited, and each command.
    pub transitions: IntCounterVec,
    /// `{context,gate}`: the last measured value (match rate, 5xx increase, p99 ratio).
    pub gate: prometheus::GaugeVec,
    pub kill_switch: IntGauge,
}

impl RolloutMetrics {
    pub fn gates(&self, context: &str, gates: &[strangler_rollout::GateResult]) {
        for g in gates {
            if let Some(v) = g.value {
                self.gate
                    .with_label_values(&[context, g.gate.as_str()])
                    .set(v);
            }
        }
    }
}

/// Shadow comparison: outcomes, skips, durations, and the differences by pattern.
#[derive(Clone)]
pub struct ShadowMetrics {
    /// `{route,result}`: match, mismatch, error, timeout.
    pub compared: IntCounterVec,
    /// `{route,reason}`: method, overloaded, too_large, not_comparable.
    pub skipped: IntCounterVec,
    /// `{route,side}`: the served answer and the copy's.
    pub duration: HistogramVec,
    /// `{route,pattern}`: at most 50 patterns per route, the rest as `other`.
    pub differences: IntCounterVec,
    /// Mismatches that could not be stored (store down, or the writer's queue full).
    pub store_failures: IntCounter,
    /// `{route}`: matches / comparisons over the last 5 minutes (set at each comparison).
    pub match_ratio: prometheus::GaugeVec,
}

/// Every `reason` of `strangler_shadow_skipped_total`.
pub const SHADOW_SKIP_REASONS: [&str; 4] = ["method", "overloaded", "too_large", "not_comparable"];

impl Metrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Metrics> {
        let latency_buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "strangler_requests_total",
                    "Requests proxied, by matched route and the side that served them",
                ),
                &["route", "target"],
            )?,
            responses: IntCounterVec::new(
                Opts::new(
                    "strangler_responses_total",
                    "Answers by matched route, the side that served them and status class (1xx-5xx, none)",
                ),
                &["route", "target", "class"],
            )?,
            upstream_duration: HistogramVec::new(
                HistogramOpts::new(
                    "strangler_upstream_duration_seconds",
                    "Time from choosing the upstream to the end of its response",
                )
                .buckets(latency_buckets.clone()),
                &["route", "target"],
            )?,
            upstream_errors: IntCounterVec::new(
                Opts::new(
                    "strangler_upstream_errors_total",
                    "Upstream failures by kind (connect_refused, connect_timeout, read_timeout, …)",
                ),
                &["route", "target", "kind"],
            )?,
            reloads: IntCounterVec::new(
                Opts::new(
                    "strangler_rules_reloads_total",
                    "Rule reloads by result (ok, rejected)",
                ),
                &["result"],
            )?,
            routes: IntGauge::new(
                "strangler_rules_routes",
                "Routes in the rule set now serving",
            )?,
            route_weight: prometheus::GaugeVec::new(
                Opts::new(
                    "strangler_route_weight",
                    "Percent of a route's traffic sent to its new service",
                ),
                &["route"],
            )?,
            body_buffer_skipped: IntCounterVec::new(
                Opts::new(
                    "strangler_body_buffer_skipped_total",
                    "Requests whose body could not be used by body predicates (too_large, not_json, read_error)",
                ),
                &["route", "reason"],
            )?,
            reload_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "strangler_rules_reload_duration_seconds",
                    "Time to read, validate and swap in a rule set",
                )
                .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]),
            )?,
            rules_generation: IntGauge::new(
                "strangler_rules_generation",
                "Rule sets swapped in since start (the first load is 1)",
            )?,
            downstream_errors: DownstreamErrors {
                counted: IntCounterVec::new(DownstreamErrors::opts(), &["kind"])?,
            },
            tunnels_open: IntGauge::new(
                "strangler_tunnels_open",
                "Upgraded connections (WebSockets) open now",
            )?,
            tunnels_closed: IntCounterVec::new(
                Opts::new(
                    "strangler_tunnels_closed_total",
                    "Upgraded connections by how they ended (client_closed, upstream_closed, idle_timeout, error)",
                ),
                &["reason"],
            )?,
            tls_reloads: IntCounterVec::new(
                Opts::new(
                    "strangler_tls_reloads_total",
                    "HTTPS certificate reloads by result (ok, rejected: the last good ones stay)",
                ),
                &["result"],
            )?,
            shadow: ShadowMetrics {
                compared: IntCounterVec::new(
                    Opts::new(
                        "strangler_shadow_total",
                        "Shadow copies compared, by result (match, mismatch, error, timeout)",
                    ),
                    &["route", "result"],
                )?,
                skipped: IntCounterVec::new(
                    Opts::new(
                        "strangler_shadow_skipped_total",
                        "Requests not copied or not compared (method, overloaded, too_large, not_comparable)",
                    ),
                    &["route", "reason"],
                )?,
                duration: HistogramVec::new(
                    HistogramOpts::new(
                        "strangler_shadow_duration_seconds",
                        "Time to each side's whole answer (served: the client's; shadow: the copy's)",
                    )
                    .buckets(latency_buckets.clone()),
                    &["route", "side"],
                )?,
                differences: IntCounterVec::new(
                    Opts::new(
                        "strangler_shadow_differences_total",
                        "Differences found, by pattern (50 per route at most, the rest as `other`)",
                    ),
                    &["route", "pattern"],
                )?,
                store_failures: IntCounter::new(
                    "strangler_shadow_store_failures_total",
                    "Mismatches that could not be stored",
                )?,
                match_ratio: prometheus::GaugeVec::new(
                    Opts::new(
                        "strangler_shadow_match_ratio",
                        "Shadow comparisons that matched over the last 5 minutes (0 to 1)",
                    ),
                    &["route"],
                )?,
            },
            rollout: RolloutMetrics {
                weight: prometheus::GaugeVec::new(
                    Opts::new(
                        "strangler_rollout_weight",
                        "Percent of a context's traffic the new service gets now",
                    ),
                    &["context"],
                )?,
                phase: prometheus::IntGaugeVec::new(
                    Opts::new(
                        "strangler_rollout_phase",
                        "1 for a rolled-out context's current phase",
                    ),
                    &["context", "phase"],
                )?,
                transitions: IntCounterVec::new(
                    Opts::new(
                        "strangler_rollout_transitions_total",
                        "Rollout state changes, by reason",
                    ),
                    &["context", "reason"],
                )?,
                gate: prometheus::GaugeVec::new(
                    Opts::new(
                        "strangler_rollout_gate",
                        "The last value a rollout gate measured (match rate 0-1, 5xx increase as a fraction, p99 ratio)",
                    ),
                    &["context", "gate"],
                )?,
                kill_switch: IntGauge::new(
                    "strangler_kill_switch",
                    "1 while the kill switch sends every context to the monolith",
                )?,
            },
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.responses.clone()))?;
        registry.register(Box::new(m.upstream_duration.clone()))?;
        registry.register(Box::new(m.upstream_errors.clone()))?;
        registry.register(Box::new(m.reloads.clone()))?;
        registry.register(Box::new(m.routes.clone()))?;
        registry.register(Box::new(m.route_weight.clone()))?;
        registry.register(Box::new(m.body_buffer_skipped.clone()))?;
        registry.register(Box::new(m.reload_duration.clone()))?;
        registry.register(Box::new(m.rules_generation.clone()))?;
        registry.register(Box::new(m.tunnels_open.clone()))?;
        registry.register(Box::new(m.tunnels_closed.clone()))?;
        registry.register(Box::new(m.tls_reloads.clone()))?;
        registry.register(Box::new(m.downstream_errors.clone()))?;
        registry.register(Box::new(m.shadow.compared.clone()))?;
        registry.register(Box::new(m.shadow.skipped.clone()))?;
        registry.register(Box::new(m.shadow.duration.clone()))?;
        registry.register(Box::new(m.shadow.differences.clone()))?;
        registry.register(Box::new(m.shadow.store_failures.clone()))?;
        registry.register(Box::new(m.shadow.match_ratio.clone()))?;
        registry.register(Box::new(m.rollout.weight.clone()))?;
        registry.register(Box::new(m.rollout.phase.clone()))?;
        registry.register(Box::new(m.rollout.transitions.clone()))?;
        registry.register(Box::new(m.rollout.gate.clone()))?;
        registry.register(Box::new(m.rollout.kill_switch.clone()))?;
        Ok(m)
    }
}

/// Every `reason` of `strangler_body_buffer_skipped_total`.
pub const BODY_SKIP_REASONS: [&str; 3] = ["too_large", "not_json", "read_error"];

impl Metrics {
    /// Drops the series of a route the rules no longer have (or of a route → target pair they
    /// no longer have, `whole_route` false): they would otherwise stay for ever.
    pub fn drop_route_series(&self, route: &str, target: &str, whole_route: bool) {
        // Absent series are fine: removing them is a no-op error.
        let _ = self.requests.remove_label_values(&[route, target]);
        for class in CLASSES {
            let _ = self.responses.remove_label_values(&[route, target, class]);
        }
        let _ = self.upstream_duration.remove_label_values(&[route, target]);
        for kind in crate::errors::UPSTREAM_KINDS {
            let _ = self
                .upstream_errors
                .remove_label_values(&[route, target, kind]);
        }
        if whole_route {
            for reason in BODY_SKIP_REASONS {
                let _ = self
                    .body_buffer_skipped
                    .remove_label_values(&[route, reason]);
            }
        }
    }
}

/// `strangler_downstream_errors_total{kind}`: client faults, never counted against an upstream.
/// `header_timeout`, and the `bad_request` and `closed` of request headers, happen before any
/// request exists and are counted by the patched pingora-core (`third_party/README.md`); the rest
/// (`body_timeout`, and `bad_request`/`closed` during a request) by the proxy's `logging`.
#[derive(Clone)]
pub struct DownstreamErrors {
    counted: IntCounterVec,
}

impl DownstreamErrors {
    const KINDS: [&'static str; 4] = ["header_timeout", "body_timeout", "closed", "bad_request"];

    fn opts() -> Opts {
        Opts::new(
            "strangler_downstream_errors_total",
            "Client faults by kind (header_timeout, body_timeout, closed, bad_request)",
        )
    }

    /// Counts one client fault seen during a request.
    pub fn inc(&self, kind: &str) {
        self.counted.with_label_values(&[kind]).inc();
    }
}

impl Collector for DownstreamErrors {
    fn desc(&self) -> Vec<&Desc> {
        self.counted.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(total) = IntCounterVec::new(Self::opts(), &["kind"]) else {
            return Vec::new();
        };
        for kind in Self::KINDS {
            let before_request = match kind {
                "header_timeout" => header_errors::TIMEOUT.load(Ordering::Relaxed),
                "bad_request" => header_errors::INVALID.load(Ordering::Relaxed),
                "closed" => header_errors::CLOSED.load(Ordering::Relaxed),
                _ => 0,
            };
            let during = self.counted.with_label_values(&[kind]).get();
            total
                .with_label_values(&[kind])
                .inc_by(during + before_request);
        }
        total.collect()
    }
}

/// One route's statistics, per side that serves it (resolved once per reload: the request path
/// never looks up labels).
pub struct RouteStats {
    pub legacy: SideStats,
    pub service: SideStats,
}

impl RouteStats {
    pub fn side(&self, serving: Serving) -> &SideStats {
        match serving {
            Serving::Legacy => &self.legacy,
            Serving::Service => &self.service,
        }
    }
}

pub struct SideStats {
    pub requests: IntCounter,
    /// `strangler_upstream_duration_seconds{route,target}`, made at the side's first answer:
    /// a histogram is about a kilobyte, and most sides of most routes never serve (a route to
    /// the monolith has a new-service side too).
    duration: std::sync::OnceLock<Histogram>,
    durations: prometheus::HistogramVec,
    /// `strangler_responses_total{route,target,class}`, resolved on first use per class.
    responses: prometheus::IntCounterVec,
    labels: [String; 2],
    classes: [std::sync::OnceLock<IntCounter>; 6],
}

/// Status classes of `strangler_responses_total` (`none`: no response was sent).
pub const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

impl SideStats {
    pub fn new(m: &Metrics, route: &str, target: &str) -> SideStats {
        SideStats {
            requests: m.requests.with_label_values(&[route, target]),
            duration: std::sync::OnceLock::new(),
            durations: m.upstream_duration.clone(),
            responses: m.responses.clone(),
            labels: [route.to_string(), target.to_string()],
            classes: Default::default(),
        }
    }

    /// One upstream exchange's time, from choosing the upstream to the end of its response.
    pub fn observe_duration(&self, seconds: f64) {
        self.duration
            .get_or_init(|| {
                self.durations
                    .with_label_values(&[&self.labels[0], &self.labels[1]])
            })
            .observe(seconds);
    }

    /// Counts one answer by its status class (0: none was sent).
    pub fn answered(&self, status: u16) {
        let i = match status {
            100..=599 => usize::from(status / 100 - 1),
            _ => 5,
        };
        self.classes[i]
            .get_or_init(|| {
                self.responses
                    .with_label_values(&[&self.labels[0], &self.labels[1], CLASSES[i]])
            })
            .inc();
    }
}
