//! The `shadow` section through the whole compiler: defaults, located errors, the warning.

use http::Method;

use crate::{Environment, RuleSet, SourceFile, compile};

fn files(yaml: &str) -> [SourceFile; 1] {
    [SourceFile {
        name: "rules.yaml".into(),
        text: yaml.into(),
    }]
}

fn ctx() -> Environment {
    Environment {
        services: Some(vec!["orders".into(), "legacy-2".into()]),
    }
}

fn set(yaml: &str) -> RuleSet {
    compile(&files(yaml), &ctx()).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(yaml: &str) -> String {
    compile(&files(yaml), &ctx()).unwrap_err().to_string()
}

const ROUTE: &str = r#"
routes:
  - name: orders-read
    match: { methods: [GET], path: { template: "/api/orders/{id}" } }
    target: { service: orders, weight: 0 }
"#;

#[test]
fn defaults_copy_safe_methods_of_every_request_and_compare_content_type() {
    let s = set(&format!("{ROUTE}    shadow: {{ service: orders }}\n"));
    let sh = s.routes()[0].shadow.as_ref().unwrap();
    assert_eq!(sh.sample_bp, 10_000);
    assert_eq!(
        sh.methods,
        [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE]
    );
    assert_eq!(sh.compare.headers, [http::header::CONTENT_TYPE]);
    assert_eq!((sh.in_flight, sh.body_limit), (64, 1 << 20));
    assert!(sh.secondary.is_none() && !sh.exclude_suspected);
    assert_eq!(sh.salt, "orders-read/shadow");
}

#[test]
fn a_full_section_compiles() {
    let yaml = format!(
        r#"{ROUTE}    shadow:
      service: orders
      sample: 20
      methods: [get, HEAD]
      strip_headers: [authorization, cookie]
      compare:
        headers: [content-type, cache-control]
        ignore: ["$.generated_at", "$.items[*].etag"]
        unordered: [{{ path: "$.items", key: "$.sku" }}]
        numbers: {{ relative: 1e-9 }}
      noise: {{ secondary: legacy-2, exclude_suspected: true }}
      limits: {{ in_flight: 8, body: 64KiB }}
      redact: [{{ jsonpath: "$.card" }}]
"#
    );
    let s = set(&yaml);
    let sh = s.routes()[0].shadow.as_ref().unwrap();
    assert_eq!(sh.sample_bp, 2_000);
    assert_eq!(sh.methods, [Method::GET, Method::HEAD]);
    assert_eq!(sh.strip_headers.len(), 2);
    assert_eq!(sh.compare.json.ignore.len(), 2);
    assert_eq!(sh.compare.json.unordered.len(), 1);
    assert_eq!(sh.compare.json.numbers.relative, 1e-9);
    assert_eq!(sh.secondary.as_deref(), Some("legacy-2"));
    assert!(sh.exclude_suspected);
    assert_eq!((sh.in_flight, sh.body_limit), (8, 64 << 10));
    assert_eq!(sh.compare.max_body, 64 << 10);
    assert_eq!(sh.redact.len(), 1);
    assert!(s.warnings().is_empty());
}

#[test]
fn every_bad_value_is_located() {
    let yaml = format!(
        r#"{ROUTE}    shadow:
      service: users
      sample: 120
      methods: ["NOT A METHOD"]
      strip_headers: ["bad header"]
      compare:
        ignore: ["items"]
        unordered: [{{ path: "$.items", key: "$.items[*].sku" }}]
        numbers: {{ relative: -1 }}
      noise: {{ secondary: legacy }}
      limits: {{ in_flight: 0, body: lots }}
"#
    );
    let e = errors(&yaml);
    for want in [
        "rules.yaml:7:16: routes[0].shadow.service: unknown service `users`",
        "routes[0].shadow.sample: sample 120 is out of range 0–100",
        "routes[0].shadow.methods[0]: `NOT A METHOD` is not an HTTP method",
        "routes[0].shadow.strip_headers[0]: `bad header` is not a valid header name",
        "routes[0].shadow.compare.ignore[0]: a path starts with `$`",
        "routes[0].shadow.compare.unordered[0].key: the key is one place in each element",
        "routes[0].shadow.compare.numbers.relative: relative must be a number of 0 or more",
        "routes[0].shadow.noise.secondary: the secondary is a second monolith instance",
        "routes[0].shadow.limits.in_flight: in_flight must be at least 1",
        "routes[0].shadow.limits.body: `lots` is not a size",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

#[test]
fn the_shadow_service_is_the_routes_own() {
    let yaml = r#"
routes:
  - name: r
    match: { path: { prefix: /a } }
    target: { service: orders }
    shadow: { service: legacy-2 }
"#;
    assert!(
        errors(yaml).contains("the route's target is `orders`: its shadow compares that service")
    );
    let pinned = r#"
routes:
  - name: r
    match: { path: { prefix: /a } }
    target: { service: legacy }
    shadow: { service: legacy }
"#;
    assert!(errors(pinned).contains("not `legacy`"));
}

#[test]
fn shadowed_writes_on_a_publishing_route_are_warned_about() {
    let yaml = r#"
routes:
  - name: create
    match: { methods: [POST], path: { exact: /api/orders } }
    target: { service: orders, weight: 0 }
    publish: { stream: orders, type: ORDER_CREATED }
    shadow: { service: orders, methods: [POST] }
"#;
    let s = set(yaml);
    let w = s.warnings().to_string();
    assert!(
        w.contains("routes[0].shadow.methods: `POST` is copied to the new service on a route that also publishes"),
        "{w}"
    );
}
