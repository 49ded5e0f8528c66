//! Shadow settings through the proxy: noise learned from a secondary, retention, a reload with
//! copies in flight, chunked request bodies, and the comparison's ignore / unordered / number
//! rules.

use std::time::Duration;

use serde_json::json;
use strangler_tests::*;

use super::{ROUTES, compared, shadowed};

#[tokio::test]
async fn noise_is_learned_from_a_secondary_and_left_out() {
    let store = Store::sqlite();
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let secondary = Upstream::start("legacy-2", Behaviour::Echo).await;
    let new = Upstream::start("orders", Behaviour::Echo).await;
    // `$.upstream` differs between the two monolith instances as it does with the new service:
    // with the secondary it is noise; without, a mismatch.
    let rules = r#"
routes:
  - name: with-secondary
    match: { path: { prefix: /with } }
    target: { service: orders, weight: 0 }
    shadow:
      service: orders
      methods: [GET, POST]
      compare: { ignore: ["$.headers"] }
      noise: { secondary: legacy-2 }
  - name: without
    match: { path: { prefix: /without } }
    target: { service: orders, weight: 0 }
    shadow: { service: orders, compare: { ignore: ["$.headers"] } }
"#;
    let p = ProxyBuilder::new(legacy.addr)
        .service("orders", UpstreamConfig::new(new.addr))
        .service("legacy-2", UpstreamConfig::new(secondary.addr))
        .rules("r.yaml", rules)
        .store(&store)
        .start()
        .await;
    for i in 0..3 {
        let r = get(p.addr, &format!("/with/{i}"), &[]).await;
        assert_eq!(r.upstream(), "legacy");
    }
    compared(&p, "with-secondary", "match", 3.0).await;
    assert_eq!(get(p.addr, "/without/1", &[]).await.status, 200);
    compared(&p, "without", "mismatch", 1.0).await;
    // A listed write goes to the new service, never to a second monolith.
    assert_eq!(post(p.addr, "/with/w", "{}", &[]).await.status, 200);
    compared(&p, "with-secondary", "match", 4.0).await;
    // Copies go out on the shadow's own thread: they arrive in any order.
    let sorted = |mut paths: Vec<String>| {
        paths.sort();
        paths
    };
    assert_eq!(sorted(secondary.paths()), ["/with/0", "/with/1", "/with/2"]);
    assert_eq!(
        sorted(new.paths()),
        ["/with/0", "/with/1", "/with/2", "/with/w", "/without/1"]
    );
    let summary = p.admin_json("/api/shadow").await;
    let routes = summary["routes"].as_array().unwrap();
    let of = |name: &str| routes.iter().find(|r| r["route"] == name).unwrap().clone();
    let noise = of("with-secondary")["noise"].clone();
    assert_eq!(
        noise,
        json!([{"pattern": "$.upstream", "kind": "learned", "differed": 3, "of": 3}])
    );
    assert_eq!(of("without")["mismatched"], 1);
    assert_eq!(of("without")["noise"], json!([]));
}

#[tokio::test]
async fn mismatches_past_the_retention_are_pruned() {
    let store = Store::sqlite();
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let new = Upstream::start("orders", Behaviour::Echo).await;
    let p = ProxyBuilder::new(legacy.addr)
        .service("orders", UpstreamConfig::new(new.addr))
        .service("gone", UpstreamConfig::new(proxy::free_port()))
        .rules("r.yaml", ROUTES)
        .setting(
            "shadow",
            json!({ "keep_per_route": 2, "prune_interval": "100ms" }),
        )
        .store(&store)
        .start()
        .await;
    // One at a time, so the store gets them in order.
    for i in 0..5 {
        assert_eq!(get(p.addr, &format!("/differs/{i}"), &[]).await.status, 200);
        compared(&p, "differs", "mismatch", f64::from(i + 1)).await;
    }
    let kept = || async {
        let v = p.admin_json("/api/shadow/mismatches?route=differs").await;
        v["mismatches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["path"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    wait_for(
        "the two newest mismatches kept",
        Duration::from_secs(10),
        || async { kept().await == ["/differs/4", "/differs/3"] },
    )
    .await;
}

#[tokio::test]
async fn a_reload_leaves_copies_in_flight_to_the_settings_they_started_with() {
    let store = Store::sqlite();
    let (_legacy, new, p) = shadowed(ROUTES, Behaviour::Slow(Duration::from_secs(3)), &store).await;
    let before = p.generation().await;
    // In flight for 3 s under `same`'s settings (the echo's differing fields ignored)…
    assert_eq!(get(p.addr, "/same/1", &[]).await.status, 200);
    // …while a reload drops the ignore list and caps the route at one copy.
    let edited = ROUTES.replace(
        "      strip_headers: [authorization]\n      compare: { ignore: [\"$.upstream\", \"$.headers\"] }",
        "      strip_headers: [authorization]\n      limits: { in_flight: 1 }",
    );
    assert_ne!(edited, ROUTES);
    p.write_rules("r.yaml", &edited);
    wait_for("the reload", Duration::from_secs(10), || async {
        p.generation().await > before
    })
    .await;
    // The copy started before the reload holds the route's one slot: this one is skipped.
    assert_eq!(get(p.addr, "/same/2", &[]).await.status, 200);
    let overloaded = "strangler_shadow_skipped_total{reason=\"overloaded\",route=\"same\"}";
    assert_eq!(p.metric(overloaded).await, 1.0);
    // The first copy is compared as it started: a match.
    compared(&p, "same", "match", 1.0).await;
    // Once it is done, a new copy is compared with the new settings: a mismatch.
    assert_eq!(get(p.addr, "/same/3", &[]).await.status, 200);
    compared(&p, "same", "mismatch", 1.0).await;
    assert_eq!(new.paths(), ["/same/1", "/same/3"]);
}

#[tokio::test]
async fn a_chunked_request_body_goes_with_its_copy() {
    let store = Store::sqlite();
    let (_legacy, new, p) = shadowed(ROUTES, Behaviour::Echo, &store).await;
    let answer = raw_exchange(
        p.addr,
        b"POST /writes/1 HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\
          Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(&format!(
            "\"body_hash\":\"{}\"",
            client::hash(b"hello world")
        )),
        "{answer}"
    );
    // The echoes' body length and hash are compared: the copy carried the same 11 bytes.
    compared(&p, "writes", "match", 1.0).await;
    assert_eq!(new.paths(), ["/writes/1"]);
}

#[tokio::test]
async fn ignore_unordered_and_number_tolerance_hold_through_the_proxy() {
    let store = Store::sqlite();
    let rules = r#"
routes:
  - name: lenient
    match: { path: { prefix: /lenient } }
    target: { service: orders, weight: 0 }
    shadow:
      service: orders
      compare:
        ignore: ["$.generated_at"]
        unordered: [{ path: "$.items", key: "$.sku" }]
        numbers: { relative: 0.01 }
"#;
    let (_legacy, _new, p) = shadowed(rules, Behaviour::Echo, &store).await;
    let legacy = r#"{"items":[{"sku":"a","cents":100},{"sku":"b","cents":250}],"total":350.0,"generated_at":"10:00"}"#;
    // The same items in another order, a total within 1 %, another time: a match.
    let close = r#"{"items":[{"sku":"b","cents":250},{"sku":"a","cents":100}],"total":352.0,"generated_at":"10:01"}"#;
    // A total 10 % off and an item's price changed: a mismatch, located.
    let off = r#"{"items":[{"sku":"b","cents":260},{"sku":"a","cents":100}],"total":385.0,"generated_at":"10:02"}"#;
    for (i, new) in [close, off].iter().enumerate() {
        let r = get(
            p.addr,
            &format!("/lenient/{i}"),
            &[
                ("x-reply-body-legacy", legacy),
                ("x-reply-body-orders", new),
            ],
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.json()["total"],
            350.0,
            "the client gets the monolith's answer"
        );
    }
    compared(&p, "lenient", "match", 1.0).await;
    compared(&p, "lenient", "mismatch", 1.0).await;
    wait_for("the mismatch stored", Duration::from_secs(10), || async {
        let listed = p.admin_json("/api/shadow/mismatches?route=lenient").await;
        listed["mismatches"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;
    let listed = p.admin_json("/api/shadow/mismatches?route=lenient").await;
    let id = listed["mismatches"][0]["id"].as_i64().unwrap();
    let one = p.admin_json(&format!("/api/shadow/mismatches/{id}")).await;
    let mut locations: Vec<&str> = one["differences"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["location"].as_str())
        .collect();
    locations.sort_unstable();
    // A paired element is compared at the monolith's index.
    assert_eq!(locations, ["$.items[1].cents", "$.total"], "{one}");
}
