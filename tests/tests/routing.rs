//! Routing end to end: every matcher kind, weights and stickiness, rewrites and added headers,
//! through the real proxy to real upstreams.

use std::time::Duration;

use strangler_tests::*;

const RULES: &str = r#"
routes:
  - name: by-method-and-template
    match: { methods: [GET], path: { template: "/api/orders/{id}" } }
    target: { service: orders }
  - name: by-exact
    match: { path: { exact: /exact } }
    target: { service: orders }
  - name: by-regex
    match: { path: { regex: "/re/[0-9]+" } }
    target: { service: orders }
  - name: by-host
    match: { host: "*.new.test", path: { prefix: /h } }
    target: { service: orders }
  - name: by-header-present
    match: { path: { prefix: /hdr }, headers: [ { name: x-present } ] }
    target: { service: orders }
  - name: by-header-equals
    match: { path: { prefix: /hdr }, headers: [ { name: x-eq, equals: yes } ] }
    target: { service: orders }
  - name: by-header-regex
    match: { path: { prefix: /hdr }, headers: [ { name: x-re, regex: "v[0-9]" } ] }
    target: { service: orders }
  - name: by-query
    match: { path: { prefix: /q }, query: [ { name: beta, equals: "1" } ] }
    target: { service: orders }
  - name: by-body
    match:
      methods: [POST]
      path: { prefix: /body }
      body: [ { jsonpath: "$.items[?@.qty > 10]" } ]
    target: { service: orders }
  - name: pinned-legacy
    priority: 10
    match: { path: { exact: /api/orders/export } }
    target: { service: legacy }
  - name: rewritten
    match: { path: { prefix: /v1/orders } }
    target:
      service: orders
      rewrite: { replace_prefix: { from: /v1/orders, to: /orders } }
      headers: [ { name: x-migrated, value: "yes" } ]
"#;

async fn setup() -> (Upstream, Upstream, Proxy) {
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let orders = Upstream::start("orders", Behaviour::Echo).await;
    let proxy = ProxyBuilder::new(legacy.addr)
        .service("orders", UpstreamConfig::new(orders.addr))
        .setting("body_buffer_limit", "256KiB")
        .rules("routes.yaml", RULES)
        .start()
        .await;
    (legacy, orders, proxy)
}

#[tokio::test]
async fn each_matcher_kind_routes_to_the_service() {
    let (_l, _o, p) = setup().await;
    let a = p.addr;
    let cases: Vec<(Reply, &str)> = vec![
        (get(a, "/api/orders/7", &[]).await, "orders"),
        (get(a, "/api/orders/7/items", &[]).await, "legacy"),
        (get(a, "/api/orders/export", &[]).await, "legacy"),
        (get(a, "/exact", &[]).await, "orders"),
        (get(a, "/exact/more", &[]).await, "legacy"),
        (get(a, "/re/123", &[]).await, "orders"),
        (get(a, "/re/abc", &[]).await, "legacy"),
        (
            get(a, "/h", &[("host", "eu.new.test:8080")]).await,
            "orders",
        ),
        (get(a, "/h", &[]).await, "legacy"),
        (get(a, "/hdr", &[("x-present", "")]).await, "orders"),
        (get(a, "/hdr", &[("x-eq", "yes")]).await, "orders"),
        (get(a, "/hdr", &[("x-eq", "no")]).await, "legacy"),
        (get(a, "/hdr", &[("x-re", "v2")]).await, "orders"),
        (get(a, "/hdr", &[("x-re", "w2")]).await, "legacy"),
        (get(a, "/q?x=1&beta=1", &[]).await, "orders"),
        (get(a, "/q?beta=2", &[]).await, "legacy"),
        (get(a, "/nothing", &[]).await, "legacy"),
    ];
    for (i, (reply, want)) in cases.iter().enumerate() {
        assert_eq!(reply.status, 200, "case {i}: {}", reply.text());
        assert_eq!(reply.upstream(), *want, "case {i}: {}", reply.text());
    }
    // Host matched with the wildcard, sent on unchanged.
    let r = get(a, "/h", &[("host", "eu.new.test:8080")]).await;
    assert_eq!(
        r.received_header("host").as_deref(),
        Some("eu.new.test:8080")
    );
}

#[tokio::test]
async fn body_predicates_small_large_over_limit_and_not_json() {
    let (_l, _o, p) = setup().await;
    let hit = r#"{"items":[{"qty":1},{"qty":12}]}"#;
    let miss = r#"{"items":[{"qty":1}]}"#;
    let r = post(p.addr, "/body", hit, &[]).await;
    assert_eq!(
        (r.upstream(), r.json()["body_len"].as_u64()),
        ("orders", Some(hit.len() as u64))
    );
    assert_eq!(post(p.addr, "/body", miss, &[]).await.upstream(), "legacy");

    // 150 KB: over pingora's 64 KiB retry buffer, under our 256 KiB limit: still matched, and the
    // upstream gets every byte.
    let pad = "x".repeat(150_000);
    let big = format!(r#"{{"pad":"{pad}","items":[{{"qty":50}}]}}"#);
    let r = post(p.addr, "/body", big.clone(), &[]).await;
    assert_eq!(r.upstream(), "orders");
    assert_eq!(r.json()["body_len"].as_u64(), Some(big.len() as u64));
    assert_eq!(
        r.json()["body_hash"].as_str().unwrap(),
        client::hash(big.as_bytes())
    );

    // 400 KB: over the limit: forwarded intact to the monolith, counted.
    let pad = "y".repeat(400_000);
    let huge = format!(r#"{{"pad":"{pad}","items":[{{"qty":50}}]}}"#);
    let r = post(p.addr, "/body", huge.clone(), &[]).await;
    assert_eq!(r.upstream(), "legacy");
    assert_eq!(
        r.json()["body_hash"].as_str().unwrap(),
        client::hash(huge.as_bytes())
    );
    assert_eq!(
        p.metric(r#"strangler_body_buffer_skipped_total{reason="too_large",route="by-body"}"#)
            .await,
        1.0
    );

    // Empty bodies, with a length and chunked, reach the monolith (nothing to match).
    let r = post(p.addr, "/body", "", &[]).await;
    assert_eq!(
        (r.status, r.upstream(), r.json()["body_len"].as_u64()),
        (200, "legacy", Some(0))
    );
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"POST /body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains("x-upstream: legacy"),
        "{out}"
    );

    // Not JSON: never matches, never fails.
    let r = post(p.addr, "/body", "not json at all", &[]).await;
    assert_eq!((r.status, r.upstream()), (200, "legacy"));
    assert_eq!(
        p.metric(r#"strangler_body_buffer_skipped_total{reason="not_json",route="by-body"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn rewrite_and_added_headers_only_for_the_service() {
    let (_l, _o, p) = setup().await;
    let r = get(p.addr, "/v1/orders/9?expand=1", &[]).await;
    assert_eq!(r.upstream(), "orders");
    assert_eq!(r.json()["uri"], "/orders/9?expand=1");
    assert_eq!(r.received_header("x-migrated").as_deref(), Some("yes"));
}

#[tokio::test]
async fn weights_are_sticky_distributed_and_monotonic() {
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let orders = Upstream::start("orders", Behaviour::Echo).await;
    let rules = |w: u32| {
        format!(
            "routes:\n  - name: orders\n    match: {{ path: {{ prefix: /api/orders }} }}\n    target: {{ service: orders, weight: {w}, sticky: {{ header: x-user-id }} }}\n"
        )
    };
    let p = ProxyBuilder::new(legacy.addr)
        .service("orders", UpstreamConfig::new(orders.addr))
        .rules("r.yaml", &rules(30))
        .start()
        .await;
    let users: Vec<String> = (0..600).map(|i| format!("user-{i}")).collect();
    let mut at30 = Vec::new();
    for u in &users {
        at30.push(
            get(p.addr, "/api/orders", &[("x-user-id", u)])
                .await
                .upstream()
                == "orders",
        );
    }
    let share = at30.iter().filter(|b| **b).count() as f64 / users.len() as f64;
    assert!(
        (share - 0.30).abs() < 0.06,
        "30% weight sent {:.1}% to orders",
        share * 100.0
    );
    // Stable: the same users land on the same side again.
    for (u, was) in users.iter().zip(&at30).take(100) {
        let again = get(p.addr, "/api/orders", &[("x-user-id", u)])
            .await
            .upstream()
            == "orders";
        assert_eq!(again, *was, "{u} moved sides at the same weight");
    }
    // Raise to 60%: only legacy → new moves.
    p.write_rules("r.yaml", &rules(60));
    wait_for("reload to 60%", Duration::from_secs(10), || async {
        p.generation().await == 2
    })
    .await;
    let mut moved = 0;
    for (u, was) in users.iter().zip(&at30) {
        let now = get(p.addr, "/api/orders", &[("x-user-id", u)])
            .await
            .upstream()
            == "orders";
        assert!(!*was || now, "{u} went back to legacy when the weight rose");
        moved += usize::from(now && !*was);
    }
    assert!(
        moved > 100,
        "only {moved} users moved to orders from 30% to 60%"
    );
    assert_eq!(
        p.metric(r#"strangler_route_weight{route="orders"}"#).await,
        60.0
    );
    let served = p
        .metric(r#"strangler_requests_total{route="orders",target="orders"}"#)
        .await;
    assert!(served > 0.0);
}
