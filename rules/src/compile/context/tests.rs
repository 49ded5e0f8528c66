use strangler_rollout::{Step, Webhook};

use crate::{Environment, RuleSet, Side, SourceFile, compile};

fn files(texts: &[(&str, &str)]) -> Vec<SourceFile> {
    texts
        .iter()
        .map(|(name, text)| SourceFile {
            name: (*name).into(),
            text: (*text).into(),
        })
        .collect()
}

fn env() -> Environment {
    Environment {
        services: Some(vec!["orders".into(), "users".into()]),
    }
}

fn set(texts: &[(&str, &str)]) -> RuleSet {
    compile(&files(texts), &env()).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(texts: &[(&str, &str)]) -> String {
    compile(&files(texts), &env()).unwrap_err().to_string()
}

const CONTEXTS: &str = r#"
contexts:
  - name: orders
    service: orders
    sticky: { header: x-user-id }
    weight: 30
"#;

const ROUTES: &str = r#"
routes:
  - name: orders-create
    match: { methods: [POST], path: { exact: /api/orders } }
    target: { context: orders }
  - name: orders-read
    match: { methods: [GET], path: { template: "/api/orders/{id}" } }
    target: { context: orders, rewrite: { strip_prefix: /api } }
"#;

#[test]
fn a_user_is_on_one_side_for_every_route_of_a_context() {
    // Contexts in one file, routes in another.
    let rules = set(&[("a.yaml", CONTEXTS), ("b.yaml", ROUTES)]);
    let c = rules.context("orders").unwrap();
    assert_eq!((c.service.as_str(), c.weight_bp), ("orders", 3_000));
    assert_eq!(c.routes, ["orders-create", "orders-read"]);
    assert!(c.rollout.is_none());
    let (create, read) = (&rules.routes()[0], &rules.routes()[1]);
    assert_eq!(create.context(), Some("orders"));
    let mut on_new = 0;
    for u in 0..500 {
        let user = format!("user-{u}");
        let a = create.decide(3_000, Some(&user), 0).0;
        let b = read.decide(3_000, Some(&user), 0).0;
        assert_eq!(a, b, "{user} split between the context's routes");
        on_new += usize::from(a == Side::Service("orders"));
    }
    assert!((100..200).contains(&on_new), "{on_new} of 500 at 30 %");
}

#[test]
fn a_rollout_plan_is_compiled() {
    let text = r#"
contexts:
  - name: orders
    service: orders
    rollout:
      steps: [1, 5, pause, 25, 50, 100]
      interval: 10m
      min_requests: 500
      gates:
        match_rate: 99.5%
        error_rate: { max_increase: 0.5pp }
        p99_latency: { max_ratio: 1.2 }
        webhook: { url: "http://127.0.0.1:1/check", timeout: 2s }
routes:
  - name: orders-read
    match: { path: { prefix: /api/orders } }
    target: { context: orders }
    shadow: { service: orders }
"#;
    let rules = set(&[("r.yaml", text)]);
    let c = rules.context("orders").unwrap();
    let plan = c.rollout.as_ref().unwrap();
    assert_eq!(c.weight_bp, 0);
    assert_eq!(
        plan.steps,
        [
            Step::Weight(100),
            Step::Weight(500),
            Step::Pause,
            Step::Weight(2_500),
            Step::Weight(5_000),
            Step::Weight(10_000)
        ]
    );
    assert_eq!(
        (plan.interval_ms, plan.min_requests, plan.failure_limit),
        (600_000, 500, 2)
    );
    assert!((plan.gates.match_rate.unwrap() - 0.995).abs() < 1e-12);
    assert!((plan.gates.error_rate_max_increase.unwrap() - 0.005).abs() < 1e-12);
    assert_eq!(plan.gates.p99_max_ratio, Some(1.2));
    assert_eq!(
        plan.gates.webhook,
        Some(Webhook {
            url: "http://127.0.0.1:1/check".into(),
            timeout_ms: 2_000
        })
    );
}

#[test]
fn context_mistakes_are_located() {
    let err = errors(&[(
        "r.yaml",
        r#"
contexts:
  - name: orders
    service: legacy
    weight: 10
  - name: orders
    service: orders
  - name: carts
    service: orders
    weight: 10
    rollout: { steps: [10, 5, 200, wait], interval: soon, failure_limit: 0 }
  - name: plan
    service: orders
    rollout:
      steps: [10]
      interval: 1m
      gates: { match_rate: high, error_rate: { max_increase: 1% }, webhook: { url: "ftp://x" } }
routes:
  - name: a
    match: { path: { prefix: /a } }
    target: { context: nope }
  - name: b
    match: { path: { prefix: /b } }
    target: { context: orders, weight: 50, sticky: { header: x } }
  - name: c
    match: { path: { prefix: /c } }
    target: { context: orders, service: orders }
  - name: d
    match: { path: { prefix: /d } }
    target: { rewrite: { strip_prefix: /d } }
  - name: e
    match: { path: { prefix: /e } }
    target: { context: plan }
"#,
    )]);
    for want in [
        "r.yaml:4:14: contexts[0].service: a context moves to a new service",
        "r.yaml:6:11: contexts[1].name: duplicate context name `orders` (first defined at r.yaml:3)",
        "r.yaml:10:13: contexts[2].weight: give a weight or a rollout plan, not both",
        "r.yaml:11:28: contexts[2].rollout.steps[1]: steps must rise: 5 follows 10",
        "r.yaml:11:31: contexts[2].rollout.steps[2]: step 200 is out of range",
        "r.yaml:11:36: contexts[2].rollout.steps[3]: a step is a percentage (such as 25) or `pause`",
        "r.yaml:11:53: contexts[2].rollout.interval: `soon` is not a duration",
        "contexts[2].rollout.failure_limit: failure_limit must be at least 1",
        "contexts[3].rollout.gates.match_rate: expected a match rate such as 99.5%",
        "contexts[3].rollout.gates.error_rate.max_increase: expected percentage points such as 0.5pp",
        "contexts[3].rollout.gates.webhook.url: the webhook is an http:// or https:// URL",
        "r.yaml:21:24: routes[0].target.context: unknown context `nope` (declared: carts, orders, plan)",
        "routes[1].target.weight: a context's routes share its weight: set it on context `orders`",
        "routes[1].target.sticky: a context's routes share its sticky: set it on context `orders`",
        "routes[2].target.context: give a service or a context, not both",
        "routes[3].target: give a service (or `legacy`) or a context",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    // A gate that did not parse is not reported again for wanting a shadow.
    assert!(
        !err.contains("contexts.plan.rollout.gates.match_rate"),
        "{err}"
    );
}

#[test]
fn a_context_key_a_route_cannot_carry_is_an_error_at_the_context() {
    let contexts = r#"
contexts:
  - name: orders
    service: orders
    sticky: { path_param: id }
"#;
    let routes = r#"
routes:
  - name: list
    match: { path: { exact: /api/orders } }
    target: { context: orders }
"#;
    let err = errors(&[("a.yaml", contexts), ("b.yaml", routes)]);
    assert!(
        err.contains("a.yaml:5:27: routes.list → contexts.orders.sticky.path_param: path parameter `id` can never be present"),
        "{err}"
    );
}

#[test]
fn a_match_rate_gate_needs_a_shadowed_route_and_an_unused_context_is_warned() {
    let text = r#"
contexts:
  - name: orders
    service: orders
    rollout: { steps: [10, 100], interval: 1m, gates: { match_rate: 99% } }
  - name: idle
    service: users
routes:
  - name: o
    match: { path: { prefix: /o } }
    target: { context: orders }
"#;
    let err = errors(&[("r.yaml", text)]);
    assert!(
        err.contains("r.yaml:5:69: contexts.orders.rollout.gates.match_rate: the match-rate gate needs a `shadow` section"),
        "{err}"
    );
    let fine = text.replace("gates: { match_rate: 99% }", "gates: {}");
    let rules = set(&[("r.yaml", &fine)]);
    let warned = rules.warnings().to_string();
    assert!(
        warned.contains("contexts.idle: no route names this context"),
        "{warned}"
    );
}
