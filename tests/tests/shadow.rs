//! Shadow comparison through the real proxy. So far: stored mismatches read through the admin
//! API (the proxy does not send copies yet).

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
