//! The store's tables on PostgreSQL (SQLite is covered next to the code): the shadow mismatches'
//! queries use parameters whose types PostgreSQL must be told, `RETURNING` and window functions.

use std::time::Duration;

use serde_json::json;
use strangler_store::mismatches::{Message, Query};
use strangler_store::{NewMismatch, Store as StoreConn};
use strangler_tests::Store;

fn mismatch(route: &str, at_ms: i64, patterns: &[&str]) -> NewMismatch {
    NewMismatch {
        route: route.into(),
        at_ms,
        trace_id: None,
        method: "GET".into(),
        path: "/api/orders/7".into(),
        request: Message::default(),
        expected: Message {
            status: 200,
            body: br#"{"total":10}"#.to_vec(),
            ..Message::default()
        },
        actual: Message {
            status: 500,
            ..Message::default()
        },
        differences: json!([{"kind": "status"}]),
        patterns: patterns.iter().map(|p| (*p).to_string()).collect(),
    }
}

#[tokio::test]
async fn postgres_mismatches_are_stored_filtered_paged_and_pruned() {
    let db = Store::postgres().await;
    let store = StoreConn::connect(&db.url()).await.unwrap();
    let m = store.mismatches();
    let now = strangler_store::now_ms();
    let ids = m
        .insert(&[
            mismatch("orders", now, &["status"]),
            mismatch("orders", now, &["$.total", "status"]),
            mismatch("users", now - 30 * 24 * 3600 * 1000, &["status"]),
        ])
        .await
        .unwrap();
    let q = |route: Option<&str>, pattern: Option<&str>, before: Option<i64>| Query {
        route: route.map(str::to_string),
        pattern: pattern.map(str::to_string),
        before,
        limit: 10,
    };
    assert_eq!(m.list(&q(None, None, None)).await.unwrap().len(), 3);
    let totals = m
        .list(&q(Some("orders"), Some("$.total"), None))
        .await
        .unwrap();
    assert_eq!(totals.len(), 1);
    assert_eq!(totals[0].id, ids[1]);
    assert_eq!(
        m.list(&q(None, None, Some(ids[1]))).await.unwrap()[0].id,
        ids[0]
    );
    let whole = m.get(ids[1]).await.unwrap().unwrap();
    assert_eq!((whole.expected.status, whole.actual.status), (200, 500));
    assert_eq!(whole.expected.body, br#"{"total":10}"#);
    let pruned = m
        .prune(1, Duration::from_secs(7 * 24 * 3600))
        .await
        .unwrap();
    assert_eq!(pruned, 2, "the old `users` one and the older `orders` one");
    let left: Vec<i64> = m
        .list(&q(None, None, None))
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, [ids[1]]);
}
