//! Compile-and-match tests over whole rule files.

use http::{HeaderMap, Method};
use proptest::prelude::*;
use serde_json::json;

use crate::*;

fn set(yaml: &str) -> RuleSet {
    let files = [SourceFile {
        name: "rules.yaml".into(),
        text: yaml.into(),
    }];
    let ctx = Environment {
        services: Some(vec!["orders".into(), "users".into()]),
    };
    compile(&files, &ctx).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(yaml: &str) -> Vec<String> {
    let files = [SourceFile {
        name: "rules.yaml".into(),
        text: yaml.into(),
    }];
    let ctx = Environment {
        services: Some(vec!["orders".into()]),
    };
    compile(&files, &ctx)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

struct Req {
    method: Method,
    host: Option<String>,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
}

impl Req {
    fn new(method: &str, target: &str) -> Req {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (target.to_string(), None),
        };
        Req {
            method: method.parse().unwrap(),
            host: None,
            path,
            query,
            headers: HeaderMap::new(),
        }
    }
    fn header(mut self, k: &'static str, v: &str) -> Req {
        self.headers.insert(k, v.parse().unwrap());
        self
    }
    fn view(&self) -> Request<'_> {
        Request {
            method: &self.method,
            host: self.host.as_deref(),
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
        }
    }
}

fn matched(rs: &RuleSet, req: &Req, body: Body<'_>) -> Option<String> {
    match rs.find(&req.view(), body) {
        Outcome::Matched { route, .. } => Some(route.name.clone()),
        Outcome::NeedsBody { .. } => Some("<needs body>".into()),
        Outcome::Default => None,
    }
}

const RULES: &str = r#"
routes:
  - name: orders-by-id
    match:
      methods: [GET]
      path: { template: "/api/orders/{id}" }
    target: { service: orders, weight: 50, sticky: { path_param: id } }
  - name: orders-create-bulk
    match:
      methods: [POST]
      path: { exact: /api/orders }
      body:
        - jsonpath: "$.items[?@.qty > 10]"
    target: { service: orders }
  - name: beta-users
    match:
      path: { prefix: /api/users }
      headers:
        - { name: x-beta, equals: "1" }
      query:
        - { name: v, regex: "[23]" }
    target: { service: users, sticky: { header: x-user } }
  - name: pinned
    priority: 10
    match:
      path: { regex: "/api/orders/export.*" }
    target: { service: legacy }
"#;

#[test]
fn matches_each_kind() {
    let rs = set(RULES);
    assert_eq!(
        matched(&rs, &Req::new("GET", "/api/orders/7"), Body::NotRead).as_deref(),
        Some("orders-by-id")
    );
    assert_eq!(
        matched(&rs, &Req::new("DELETE", "/api/orders/7"), Body::NotRead),
        None
    );
    // priority beats file order
    assert_eq!(
        matched(&rs, &Req::new("GET", "/api/orders/export"), Body::NotRead).as_deref(),
        Some("pinned")
    );
    let post = Req::new("POST", "/api/orders");
    assert_eq!(
        matched(&rs, &post, Body::NotRead).as_deref(),
        Some("<needs body>")
    );
    let big = json!({"items": [{"qty": 1}, {"qty": 12}]});
    let small = json!({"items": [{"qty": 1}]});
    assert_eq!(
        matched(&rs, &post, Body::Json(&big)).as_deref(),
        Some("orders-create-bulk")
    );
    assert_eq!(matched(&rs, &post, Body::Json(&small)), None);
    assert_eq!(matched(&rs, &post, Body::Unavailable), None);
    let beta = Req::new("GET", "/api/users/1?v=2").header("x-beta", "1");
    assert_eq!(
        matched(&rs, &beta, Body::NotRead).as_deref(),
        Some("beta-users")
    );
    let beta_v1 = Req::new("GET", "/api/users/1?v=1").header("x-beta", "1");
    assert_eq!(matched(&rs, &beta_v1, Body::NotRead), None);
    assert_eq!(
        matched(&rs, &Req::new("GET", "/api/users/1?v=3"), Body::NotRead),
        None
    );
}

#[test]
fn explain_says_why() {
    let rs = set(RULES);
    let req = Req::new("GET", "/api/users/1?v=3");
    let verdicts = rs.explain(&req.view(), Body::NotRead);
    assert_eq!(verdicts.len(), 4);
    let (route, miss) = &verdicts[3];
    assert_eq!(route.name, "beta-users");
    assert_eq!(
        route.describe_miss(miss.as_ref().unwrap_err()),
        "header x-beta does not equal \"1\""
    );
}

#[test]
fn sticky_path_param_is_stable_and_monotonic() {
    let rs = set(RULES);
    let route = rs.route("orders-by-id").unwrap();
    for id in 0..200 {
        let req = Req::new("GET", &format!("/api/orders/{id}"));
        let view = req.view();
        let Outcome::Matched { params, .. } = rs.find(&view, Body::NotRead) else {
            panic!()
        };
        let key = route.sticky_key(&view, &params, Body::NotRead);
        let (a, choice) = route.decide(route.weight_bp(), key.as_deref(), 1);
        let (b, _) = route.decide(route.weight_bp(), key.as_deref(), 999);
        assert_eq!(a, b, "sticky key ignores the random number");
        assert!(matches!(choice, Choice::Sticky { .. }));
    }
}

#[test]
fn every_error_is_located() {
    let errs = errors(
        r#"
routes:
  - name: a
    match:
      methods: [GTE]
      path: { regex: "(" }
    target: { service: nope, weight: 120 }
  - name: a
    match:
      path: { template: "/x/{id}" }
      body:
        - jsonpath: "$.[["
    target: { service: orders, sticky: { path_param: user } }
"#,
    );
    let joined = errors_text(&errs);
    assert!(
        joined.contains("rules.yaml:5:17: routes[0].match.methods[0]: unknown method `GTE`"),
        "{joined}"
    );
    assert!(
        joined.contains("rules.yaml:6:22: routes[0].match.path.regex: invalid regex"),
        "{joined}"
    );
    assert!(
        joined.contains("routes[0].target.service: unknown service `nope`"),
        "{joined}"
    );
    assert!(
        joined.contains("routes[0].target.weight: weight 120 is out of range"),
        "{joined}"
    );
    assert!(joined.contains("rules.yaml:8:11: routes[1].name: duplicate route name `a` (first defined at rules.yaml:3:11)"), "{joined}");
    assert!(
        joined.contains("routes[1].match.body[0].jsonpath: invalid JSONPath"),
        "{joined}"
    );
    assert!(joined.contains("routes[1].target.sticky.path_param: path parameter `user` can never be present: the template has {id}"), "{joined}");
    assert_eq!(errs.len(), 7, "{joined}");
}

#[test]
fn unknown_field_is_located() {
    let errs = errors("routes:\n  - name: a\n    target: { service: orders }\n    mach: {}\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("rules.yaml:4:5: "), "{}", errs[0]);
    assert!(errs[0].contains("unknown field `mach`"), "{}", errs[0]);
}

#[test]
fn body_sticky_on_get_only_route_is_rejected() {
    let errs = errors(
        "routes:\n  - name: a\n    match: { methods: [GET] }\n    target: { service: orders, sticky: { body: $.user } }\n",
    );
    assert!(errs[0].contains("can never be present"), "{errs:?}");
}

#[test]
fn empty_routes_key_means_no_routes() {
    assert_eq!(set("routes:\n").len(), 0);
    assert_eq!(set("# nothing yet\n").len(), 0);
}

fn errors_text(errs: &[String]) -> String {
    errs.join("\n")
}

fn many_routes(n: usize) -> RuleSet {
    let mut y = String::from("routes:\n");
    for i in 0..n {
        y.push_str(&format!(
            "  - name: r{i}\n    match: {{ path: {{ template: \"/svc{i}/items/{{id}}\" }} }}\n    target: {{ service: orders }}\n"
        ));
    }
    set(&y)
}

#[test]
fn thousands_of_routes_use_the_index() {
    let rs = many_routes(12_000);
    let req = Req::new("GET", "/svc11999/items/5");
    assert_eq!(matched(&rs, &req, Body::NotRead).as_deref(), Some("r11999"));
}

proptest! {
    /// The indexed lookup agrees with checking every route in order.
    #[test]
    fn index_agrees_with_linear_scan(
        segs in proptest::collection::vec(prop_oneof!["api", "orders", "users", "7", "x", ""], 0..5),
        method in prop_oneof![Just("GET"), Just("POST")],
    ) {
        let rs = set(PROP_RULES);
        let path = format!("/{}", segs.join("/"));
        let req = Req::new(method, &path);
        let view = req.view();
        let json = json!({"kind": "big"});
        let linear = rs.explain(&view, Body::Json(&json)).into_iter().find(|(_, v)| v.is_ok()).map(|(r, _)| r.name.clone());
        let indexed = match rs.find(&view, Body::Json(&json)) {
            Outcome::Matched { route, .. } => Some(route.name.clone()),
            _ => None,
        };
        prop_assert_eq!(linear, indexed);
    }

    /// Raising the weight only moves keys from legacy to the new service.
    #[test]
    fn raising_weight_is_monotonic(key in "[a-z0-9]{1,12}", w1 in 0u16..=10_000, w2 in 0u16..=10_000) {
        let (lo, hi) = (w1.min(w2), w1.max(w2));
        let b = sticky::bucket("route", key.as_bytes());
        prop_assert!(!sticky::to_new(b, lo) || sticky::to_new(b, hi));
    }

    /// Matching never panics on arbitrary paths, queries and headers.
    #[test]
    fn matching_never_panics(path in "/[ -~]{0,40}", query in proptest::option::of("[ -~]{0,30}"), hv in "[ -~]{0,20}") {
        let rs = set(RULES);
        let mut req = Req::new("GET", "/");
        req.path = path;
        req.query = query;
        if let Ok(v) = hv.parse() { req.headers.insert("x-beta", v); req.headers.insert("x-user", hv.parse().unwrap()); }
        let _ = rs.find(&req.view(), Body::Unavailable);
    }
}

const PROP_RULES: &str = r#"
routes:
  - { name: a, match: { path: { exact: /api/orders } }, target: { service: orders } }
  - { name: b, match: { path: { template: "/api/{x}/7" }, methods: [POST] }, target: { service: orders } }
  - { name: c, match: { path: { prefix: /api/users } }, target: { service: users } }
  - { name: d, match: { path: { regex: "/api/.*/x" } }, target: { service: users } }
  - { name: e, match: { path: { template: "/{a}/{b}" } }, target: { service: legacy } }
  - { name: f, match: { path: { prefix: / }, body: [ { jsonpath: "$.kind", equals: big } ] }, target: { service: orders } }
  - { name: g, priority: 5, match: { path: { exact: /x } }, target: { service: orders } }
"#;

const PUBLISH: &str = r#"
routes:
  - name: orders-create
    match: { methods: [POST], path: { template: "/api/users/{user}/orders" } }
    target: { service: legacy }
    publish:
      stream: orders
      type: ORDER_CREATED
      subject: { response.body: "$.id" }
      partition_key: { request.path_param: user }
      data:
        object:
          order: { request.body: "$" }
          status: { response.status: true }
          channel: { request.header: x-channel }
      when_status: [2xx, 409]
      redact:
        - { jsonpath: "$.order.card" }
        - { jsonpath: "$.order.email", mode: hash }
"#;

#[test]
fn publish_builds_redacted_fields() {
    use crate::publish::{BodyValue, EventData, Exchange};
    let rs = set(PUBLISH);
    let req = Req::new("POST", "/api/users/u7/orders").header("x-channel", "web");
    let view = req.view();
    let body = serde_json::json!({"sku": "tea", "card": "4111", "email": "a@b.c"});
    let Outcome::Matched { route, params, .. } = rs.find(&view, Body::Json(&body)) else {
        panic!()
    };
    let p = route.publish.as_ref().unwrap();
    assert!(p.publishes(201) && p.publishes(409) && !p.publishes(500));
    assert!(p.needs_request_body() && p.needs_response_body());
    let resp_body = serde_json::json!({"id": 42});
    let headers = HeaderMap::new();
    let ex = Exchange {
        request: &view,
        params: &params,
        request_body: BodyValue::Json(&body),
        request_json_text: None,
        status: 201,
        response_headers: &headers,
        response_body: BodyValue::Json(&resp_body),
        sticky_key: None,
    };
    let f = p.fields(&ex, &|b| format!("hash:{}", b.len()));
    assert_eq!(f.subject.as_deref(), Some("42"));
    assert_eq!(f.partition_key.as_deref(), Some("u7"));
    assert_eq!(
        f.data,
        EventData::Value(
            json!({"order": {"sku": "tea", "email": "hash:5"}, "status": 201, "channel": "web"})
        )
    );
}

#[test]
fn whole_body_data_keeps_the_request_text_unless_redacted() {
    use crate::publish::{BodyValue, EventData, Exchange};
    let rules = |redact: &str| {
        set(&format!(
            "routes:\n  - name: a\n    match: {{ path: {{ prefix: /x }} }}\n    target: {{ service: legacy }}\n    publish: {{ stream: s, type: T{redact} }}\n"
        ))
    };
    let text = br#"{"user": "u1",  "card": "4111"}"#;
    let body: serde_json::Value = serde_json::from_slice(text).unwrap();
    let req = Req::new("POST", "/x");
    let view = req.view();
    let headers = HeaderMap::new();
    for (redact, want_text) in [
        ("", true),
        (", redact: [ { jsonpath: \"$.card\" } ]", false),
    ] {
        let rs = rules(redact);
        let Outcome::Matched { route, params, .. } = rs.find(&view, Body::Json(&body)) else {
            panic!()
        };
        let ex = Exchange {
            request: &view,
            params: &params,
            request_body: BodyValue::Json(&body),
            request_json_text: Some(text),
            status: 200,
            response_headers: &headers,
            response_body: BodyValue::Absent,
            sticky_key: None,
        };
        let f = route
            .publish
            .as_ref()
            .unwrap()
            .fields(&ex, &|_| String::new());
        if want_text {
            assert_eq!(f.data, EventData::JsonText(text));
        } else {
            assert_eq!(f.data, EventData::Value(json!({"user": "u1"})));
        }
    }
}

#[test]
fn publish_errors_are_located() {
    let errs = errors(
        r#"
routes:
  - name: a
    match: { path: { prefix: /x } }
    target: { service: orders }
    publish:
      stream: ""
      type: T
      partition_key: { request.path_param: id }
      subject: { sticky_key: true }
      data: { request.body: "$.[[" }
      when_status: [700, 2xx]
      redact: [ { jsonpath: "$.a", mode: shred } ]
      durability: eventually
"#,
    );
    let joined = errors_text(&errs);
    for want in [
        "rules.yaml:7:15: routes[0].publish.stream: stream is empty",
        "routes[0].publish.partition_key.request.path_param: path parameter `id` can never be present",
        "routes[0].publish.subject.sticky_key: the route's target has no sticky key",
        "routes[0].publish.data.request.body: invalid JSONPath",
        "routes[0].publish.when_status[0]: a status is a code from 100 to 599",
        "routes[0].publish.redact[0].mode: unknown redact mode `shred`",
        "routes[0].publish.durability: unknown durability `eventually`",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
}

#[test]
fn bodies_are_parsed_down_to_what_the_routes_read() {
    let yaml = |redact: &str| {
        format!(
            r#"
routes:
  - name: bulk
    match:
      methods: [POST]
      path: {{ exact: /api/orders }}
      body:
        - jsonpath: "$.items[*].qty"
    target: {{ service: orders, sticky: {{ body: "$.user" }} }}
  - name: orders
    match: {{ methods: [POST], path: {{ prefix: /api/orders }} }}
    target: {{ service: legacy }}
    publish: {{ stream: s, type: T, partition_key: {{ request.body: "$.order.id" }}{redact} }}
"#
        )
    };
    let body = br#"{"user":"u1","items":[{"qty":2}],"order":{"id":7,"at":"x"},"note":"big"}"#;
    let rs = set(&yaml(""));
    assert!(!rs.body_projection().is_all());
    assert_eq!(
        rs.body_projection().parse(body).unwrap(),
        json!({"user": "u1", "items": [{"qty": 2}], "order": {"id": 7}})
    );
    // Redacting the whole body needs all of it.
    let rs = set(&yaml(r#", redact: [ { jsonpath: "$.note" } ]"#));
    assert!(rs.body_projection().is_all());
}

/// A structural error does not hide the rest: every broken item is reported, with an indentation
/// hint where the parser's message is indentation-shaped, and the items that read cleanly are
/// still checked, under their index in the file.
#[test]
fn every_broken_item_is_reported_in_one_round() {
    let errs = errors(
        "routes:
  - name: a
    match: { path: { prefx: /x } }
    target: { service: legacy }
  - name: b
    match: { path: { exact: /y } }
     target: { service: legacy }
  - name: c
    match: { methods: [GETT], path: { exact: /z } }
    target: { service: orders }
",
    );
    let joined = errors_text(&errs);
    assert!(
        joined.contains("rules.yaml:3:22: unknown field `prefx`"),
        "{joined}"
    );
    assert!(joined.contains("rules.yaml:7:6: "), "{joined}");
    assert!(joined.contains("check the indentation here"), "{joined}");
    assert!(
        joined.contains("rules.yaml:9:24: routes[2].match.methods[0]: unknown method `GETT`"),
        "{joined}"
    );
    assert_eq!(errs.len(), 3, "{joined}");
}

#[test]
fn a_plan_of_pauses_is_refused() {
    let errs = errors(
        "contexts:
  - name: ctx
    service: orders
    rollout: { steps: [pause, pause], interval: 10s }
",
    );
    let joined = errors_text(&errs);
    assert!(
        joined.contains("contexts[0].rollout.steps[1]: two pauses in a row"),
        "{joined}"
    );
    assert!(
        joined.contains("contexts[0].rollout.steps: give at least one percentage step"),
        "{joined}"
    );
    let ok = set("contexts:
  - name: ctx
    service: orders
    rollout: { steps: [pause, 10, pause, 50, pause], interval: 10s }
");
    assert_eq!(ok.contexts().len(), 1);
}

/// A huge broken file is read in pieces only up to a budget (each piece is a copy of the file's
/// size), and says where checking stopped.
#[test]
fn a_huge_broken_file_is_read_in_pieces_within_a_budget() {
    let mut text =
        String::from("routes:\n  - name: broken\n    mach: {}\n    target: { service: orders }\n");
    for i in 0..3000 {
        text.push_str(&format!(
            "  - name: r{i}\n    match: {{ path: {{ exact: /r{i}/with/a/longer/path/to/grow/the/file }} }}\n    target: {{ service: orders }}\n"
        ));
    }
    let errs = errors(&text);
    let joined = errors_text(&errs);
    assert!(joined.contains("unknown field `mach`"), "{joined}");
    assert!(joined.contains("not checked from here"), "{joined}");
}

/// A route is read into a Vec that doubles as it grows: its raw form must stay small (inline
/// parts made it 6 KB, and a 10,000-route reload spent most of its time moving them).
#[test]
fn a_raw_route_is_small() {
    let size = std::mem::size_of::<crate::Spanned<crate::raw::RawRoute>>();
    assert!(size <= 256, "a raw route takes {size} bytes");
}
