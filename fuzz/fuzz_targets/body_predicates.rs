//! Any bytes as a request body against JSONPath body predicates and a body sticky key: matching
//! and the side decision never panic, whatever the body is.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use strangler_rules::{Body, Environment, Outcome, Request, RuleSet, SourceFile, compile};

const RULES: &str = r#"
routes:
  - name: nested
    match: { methods: [POST], body: [ { jsonpath: "$.items[?@.qty > 10 && @.sku == 'tea']" } ] }
    target: { service: orders, weight: 50, sticky: { body: "$.user.id" } }
  - name: equals
    match: { methods: [POST], body: [ { jsonpath: "$..kind", equals: "bulk" } ] }
    target: { service: orders }
  - name: functions
    match: { methods: [POST], body: [ { jsonpath: "$.tags[?length(@) > 2]" } ] }
    target: { service: orders, sticky: { body: "$.tags[0]" } }
"#;

fn rules() -> &'static RuleSet {
    static SET: OnceLock<RuleSet> = OnceLock::new();
    SET.get_or_init(|| {
        let files = [SourceFile { name: "r.yaml".into(), text: RULES.into() }];
        compile(&files, &Environment { services: Some(vec!["orders".into()]) }).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let headers = http::HeaderMap::new();
    let req = Request { method: &http::Method::POST, host: None, path: "/", query: None, headers: &headers };
    let json = serde_json::from_slice::<serde_json::Value>(data).ok();
    let body = json.as_ref().map_or(Body::Unavailable, Body::Json);
    if let Outcome::Matched { route, params, .. } = rules().find(&req, body) {
        let key = route.sticky_key(&req, &params, body);
        let _ = route.decide(route.weight_bp(), key.as_deref(), 7);
    }
});
