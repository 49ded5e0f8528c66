//! Shadow comparison through the real proxy, real upstreams and the store: copies go to the side
//! that did not serve, answers are compared off the request path, mismatches are stored and read
//! through the admin API, and the client never feels the copy.

use std::time::{Duration, Instant};

use serde_json::json;
use strangler_store::mismatches::Message;
use strangler_store::{NewMismatch, Store as StoreConn};
use strangler_tests::*;

fn mismatch(route: &str, pattern: &str) -> NewMismatch {
    NewMismatch {
        route: route.into(),
        at_ms: strangler_store::now_ms(),
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        method: "GET".into(),
        path: "/api/orders/7".into(),
        request: Message::default(),
        expected: Message {
            status: 200,
            body: br#"{"total":10}"#.to_vec(),
            ..Message::default()
        },
        actual: Message {
            status: 200,
            body: br#"{"total":11}"#.to_vec(),
            ..Message::default()
        },
        differences: json!([{"kind": "value", "location": pattern, "pattern": pattern}]),
        patterns: vec![pattern.into()],
    }
}

#[tokio::test]
async fn mismatches_are_listed_filtered_paged_and_read_whole_through_the_admin_api() {
    let store = Store::sqlite();
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let p = ProxyBuilder::new(legacy.addr)
        .rules("r.yaml", "routes: []\n")
        .store(&store)
        .start()
        .await;
    let m = StoreConn::connect(&store.url()).await.unwrap().mismatches();
    let ids = m
        .insert(&[
            mismatch("orders-read", "$.total"),
            mismatch("orders-read", "$.items[*].price"),
            mismatch("users", "$.name"),
        ])
        .await
        .unwrap();
    let all = p.admin_json("/api/shadow/mismatches").await;
    assert_eq!(all["mismatches"].as_array().unwrap().len(), 3, "{all}");
    assert_eq!(all["mismatches"][0]["id"], ids[2]);
    assert_eq!(all["next_before"], serde_json::Value::Null);
    // `pattern` percent-encoded, as a client sends `$.items[*].price`.
    let by = p
        .admin_json("/api/shadow/mismatches?route=orders-read&pattern=%24.items%5B*%5D.price")
        .await;
    assert_eq!(by["mismatches"].as_array().unwrap().len(), 1, "{by}");
    assert_eq!(by["mismatches"][0]["id"], ids[1]);
    let page = p.admin_json("/api/shadow/mismatches?limit=2").await;
    assert_eq!(page["next_before"], ids[1]);
    let next = p
        .admin_json(&format!("/api/shadow/mismatches?limit=2&before={}", ids[1]))
        .await;
    assert_eq!(next["mismatches"][0]["id"], ids[0]);
    let one = p
        .admin_json(&format!("/api/shadow/mismatches/{}", ids[0]))
        .await;
    assert_eq!(one["expected"]["body"], r#"{"total":10}"#);
    assert_eq!(one["actual"]["body"], r#"{"total":11}"#);
    assert_eq!(one["differences"][0]["location"], "$.total");
    let missing = get(p.admin, "/api/shadow/mismatches/999999", &[]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"], "no mismatch 999999");
    let bad = get(p.admin, "/api/shadow/mismatches?limit=ten", &[]).await;
    assert_eq!(bad.status, 400);
}

/// The legacy and `orders` echo upstreams and the proxy with `rules`, its store in `store`.
pub(crate) async fn shadowed(
    rules: &str,
    orders: Behaviour,
    store: &Store,
) -> (Upstream, Upstream, Proxy) {
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let new = Upstream::start("orders", orders).await;
    let p = ProxyBuilder::new(legacy.addr)
        .service("orders", UpstreamConfig::new(new.addr).read_timeout("5s"))
        // Nothing listens there.
        .service("gone", UpstreamConfig::new(proxy::free_port()))
        .rules("r.yaml", rules)
        .store(store)
        .start()
        .await;
    (legacy, new, p)
}

/// Waits until `strangler_shadow_total{route, result}` reaches `n`.
pub(crate) async fn compared(p: &Proxy, route: &str, result: &str, n: f64) {
    let sample = format!("strangler_shadow_total{{result=\"{result}\",route=\"{route}\"}}");
    wait_for(
        &format!("{n} × {result} on {route}"),
        Duration::from_secs(10),
        || {
            let sample = sample.clone();
            async move { p.metric(&sample).await >= n }
        },
    )
    .await;
}

pub(crate) const ROUTES: &str = r#"
routes:
  - name: same
    match: { methods: [GET], path: { prefix: /same } }
    target: { service: orders, weight: 0 }
    shadow:
      service: orders
      strip_headers: [authorization]
      compare: { ignore: ["$.upstream", "$.headers"] }
  - name: differs
    match: { methods: [GET, POST], path: { prefix: /differs } }
    target: { service: orders, weight: 0 }
    shadow: { service: orders, strip_headers: [authorization] }
  - name: served-by-new
    match: { path: { prefix: /new } }
    target: { service: orders, weight: 100 }
    shadow: { service: orders, methods: [GET, POST], compare: { ignore: ["$.upstream", "$.headers"] } }
  - name: writes
    match: { methods: [POST], path: { prefix: /writes } }
    target: { service: orders, weight: 0 }
    shadow: { service: orders, methods: [POST], compare: { ignore: ["$.upstream", "$.headers"] } }
  - name: capped
    match: { path: { prefix: /capped } }
    target: { service: orders, weight: 0 }
    shadow: { service: orders, limits: { in_flight: 1 }, compare: { ignore: ["$.upstream", "$.headers"] } }
  - name: small
    match: { path: { prefix: /small } }
    target: { service: orders, weight: 0 }
    shadow: { service: orders, limits: { body: 100 } }
  - name: sampled
    match: { path: { prefix: /sampled } }
    target: { service: orders, weight: 0, sticky: { header: x-user } }
    shadow: { service: orders, sample: 50, compare: { ignore: ["$.upstream", "$.headers"] } }
  - name: to-gone
    match: { path: { prefix: /gone } }
    target: { service: gone, weight: 0 }
    shadow: { service: gone }
"#;

#[tokio::test]
async fn copies_are_compared_and_mismatches_stored_with_their_differences() {
    copies_are_compared_and_stored(Store::sqlite()).await;
}

#[tokio::test]
async fn postgres_copies_are_compared_and_mismatches_stored() {
    copies_are_compared_and_stored(Store::postgres().await).await;
}

async fn copies_are_compared_and_stored(store: Store) {
    let (legacy, new, p) = shadowed(ROUTES, Behaviour::Echo, &store).await;
    let r = get(p.addr, "/same/1", &[("authorization", "Bearer secret")]).await;
    assert_eq!((r.status, r.upstream()), (200, "legacy"));
    compared(&p, "same", "match", 1.0).await;
    let r = get(p.addr, "/differs/1", &[("authorization", "Bearer secret")]).await;
    assert_eq!((r.status, r.upstream()), (200, "legacy"));
    compared(&p, "differs", "mismatch", 1.0).await;
    // The new service got both copies, marked, without the stripped header.
    assert_eq!(new.paths(), ["/same/1", "/differs/1"]);
    let listed = async {
        let v = p.admin_json("/api/shadow/mismatches?route=differs").await;
        v["mismatches"]
            .as_array()
            .filter(|a| !a.is_empty())
            .cloned()
    };
    let mut found = None;
    wait_for(
        "the mismatch in the store",
        Duration::from_secs(10),
        || async {
            let v = p.admin_json("/api/shadow/mismatches?route=differs").await;
            !v["mismatches"].as_array().unwrap().is_empty()
        },
    )
    .await;
    if let Some(list) = listed.await {
        found = Some(list[0]["id"].as_i64().unwrap());
    }
    let one = p
        .admin_json(&format!("/api/shadow/mismatches/{}", found.unwrap()))
        .await;
    assert_eq!(one["method"], "GET");
    assert_eq!(one["path"], "/differs/1");
    let locations: Vec<&str> = one["differences"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["location"].as_str())
        .collect();
    assert!(locations.contains(&"$.upstream"), "{locations:?}");
    assert!(
        locations.contains(&"$.headers.x-strangler-shadow"),
        "{locations:?}"
    );
    let got: serde_json::Value =
        serde_json::from_str(one["actual"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(got["headers"]["x-strangler-shadow"], json!(["1"]));
    assert!(got["headers"].get("authorization").is_none(), "{got}");
    assert!(
        one["request"]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h[0] != "authorization")
    );
    // Same trace, another span.
    let sent = got["headers"]["traceparent"][0]
        .as_str()
        .unwrap()
        .to_string();
    let served: serde_json::Value =
        serde_json::from_str(one["expected"]["body"].as_str().unwrap()).unwrap();
    let original = served["headers"]["traceparent"][0].as_str().unwrap();
    assert_eq!(sent[..36], original[..36]);
    assert_ne!(sent[36..52], original[36..52]);
    // The per-route figures.
    let summary = p.admin_json("/api/shadow").await;
    let routes = summary["routes"].as_array().unwrap();
    let of = |name: &str| routes.iter().find(|r| r["route"] == name).unwrap().clone();
    assert_eq!(of("same")["matched"], 1);
    assert_eq!(of("same")["match_rate"], 1.0);
    assert_eq!(of("differs")["mismatched"], 1);
    assert_eq!(of("differs")["match_rate"], 0.0);
    assert_eq!(of("same")["match_rate_5m"], 1.0);
    assert_eq!(
        p.metric("strangler_shadow_match_ratio{route=\"same\"}")
            .await,
        1.0
    );
    assert_eq!(
        p.metric("strangler_shadow_match_ratio{route=\"differs\"}")
            .await,
        0.0
    );
    let differs = of("differs");
    let top: Vec<&str> = differs["top_patterns"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p[0].as_str())
        .collect();
    assert!(top.contains(&"$.upstream"), "{top:?}");
    // The same for a terminal.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(binary())
            .arg("shadow")
            .args(args)
            .arg("--config")
            .arg(&p.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let table = cli(&["summary"]);
    assert!(
        table.contains("differs") && table.contains("$.upstream"),
        "{table}"
    );
    let shown = cli(&["show", &found.unwrap().to_string()]);
    assert!(shown.contains("GET /differs/1"), "{shown}");
    assert!(
        shown.contains("$.upstream: \"legacy\" → \"orders\""),
        "{shown}"
    );
    drop(legacy);
}

#[tokio::test]
async fn writes_are_not_copied_unless_listed_and_never_to_the_monolith() {
    let store = Store::sqlite();
    let (legacy, new, p) = shadowed(ROUTES, Behaviour::Echo, &store).await;
    // Served by the monolith, not listed: no copy.
    assert_eq!(post(p.addr, "/differs/1", "{}", &[]).await.status, 200);
    // Served by the new service, listed: still never copied to the monolith.
    assert_eq!(post(p.addr, "/new/1", "{}", &[]).await.upstream(), "orders");
    // A read served by the new service is copied to the monolith.
    assert_eq!(get(p.addr, "/new/2", &[]).await.upstream(), "orders");
    compared(&p, "served-by-new", "match", 1.0).await;
    // A listed write served by the monolith is copied, body and all (the echoes' body length
    // and hash match).
    let order = format!("{{\"items\": \"{}\"}}", "x".repeat(20_000));
    assert_eq!(post(p.addr, "/writes/1", &order, &[]).await.status, 200);
    compared(&p, "writes", "match", 1.0).await;
    assert_eq!(legacy.paths(), ["/differs/1", "/new/2", "/writes/1"]);
    assert_eq!(new.paths(), ["/new/1", "/new/2", "/writes/1"]);
    let skipped = |route: &str| {
        format!("strangler_shadow_skipped_total{{reason=\"method\",route=\"{route}\"}}")
    };
    assert_eq!(p.metric(&skipped("differs")).await, 1.0);
    assert_eq!(p.metric(&skipped("served-by-new")).await, 1.0);
}

#[tokio::test]
async fn a_down_or_slow_shadow_never_touches_the_client() {
    let store = Store::sqlite();
    let (_legacy, new, p) = shadowed(ROUTES, Behaviour::Slow(Duration::from_secs(2)), &store).await;
    let started = Instant::now();
    let r = get(p.addr, "/same/1", &[]).await;
    assert_eq!((r.status, r.upstream()), (200, "legacy"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the client waited {:?} for a 2 s shadow",
        started.elapsed()
    );
    compared(&p, "same", "match", 1.0).await;
    assert_eq!(new.paths(), ["/same/1"]);
    // A shadow that is down: the client gets its answer, the copy counts as an error.
    let r = get(p.addr, "/gone/1", &[]).await;
    assert_eq!((r.status, r.upstream()), (200, "legacy"));
    compared(&p, "to-gone", "error", 1.0).await;
}

#[tokio::test]
async fn copies_stay_under_the_in_flight_cap_and_the_body_limit() {
    let store = Store::sqlite();
    let (_legacy, new, p) = shadowed(ROUTES, Behaviour::Slow(Duration::from_secs(1)), &store).await;
    // The first copy holds the one slot for a second; the next two find it taken.
    for i in 0..3 {
        assert_eq!(get(p.addr, &format!("/capped/{i}"), &[]).await.status, 200);
    }
    compared(&p, "capped", "match", 1.0).await;
    let overloaded = "strangler_shadow_skipped_total{reason=\"overloaded\",route=\"capped\"}";
    assert_eq!(p.metric(overloaded).await, 2.0);
    assert_eq!(new.paths(), ["/capped/0"]);
    // The answers (echo documents of a few hundred bytes) are over the 100-byte limit.
    assert_eq!(get(p.addr, "/small/1", &[]).await.status, 200);
    let too_large = "strangler_shadow_skipped_total{reason=\"too_large\",route=\"small\"}";
    wait_for("the too_large skip", Duration::from_secs(10), || async {
        p.metric(too_large).await == 1.0
    })
    .await;
    assert_eq!(
        p.metric("strangler_shadow_total{result=\"match\",route=\"small\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn the_sample_follows_the_sticky_key() {
    let store = Store::sqlite();
    let (_legacy, new, p) = shadowed(ROUTES, Behaviour::Echo, &store).await;
    // Three requests from each of 20 users at a 50 % sample: a user's requests are all copied
    // or none are.
    for round in 0..3 {
        for u in 0..20 {
            let path = format!("/sampled/{u}/{round}");
            let user = format!("user-{u}");
            assert_eq!(get(p.addr, &path, &[("x-user", &user)]).await.status, 200);
        }
    }
    // Copies arrive after their clients' answers: wait until every copy that arrived was
    // compared and each user has all or none of their three.
    let rounds_per_user = |copied: &[String]| -> Vec<usize> {
        (0..20)
            .map(|u| {
                let prefix = format!("/sampled/{u}/");
                copied.iter().filter(|p| p.starts_with(&prefix)).count()
            })
            .collect()
    };
    let sample = "strangler_shadow_total{result=\"match\",route=\"sampled\"}";
    wait_for(
        "each user's requests all copied or none",
        Duration::from_secs(10),
        || async {
            let copied = new.paths();
            p.metric(sample).await == copied.len() as f64
                && rounds_per_user(&copied).iter().all(|&n| n == 0 || n == 3)
        },
    )
    .await;
    let copied = new.paths();
    let users = copied.len() / 3;
    assert!(
        (4..=16).contains(&users),
        "{users} of 20 users sampled at 50 %"
    );
}

mod settings;
