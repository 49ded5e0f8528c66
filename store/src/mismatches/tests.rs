use serde_json::json;

use super::*;

fn mismatch(route: &str, at_ms: i64, patterns: &[&str]) -> NewMismatch {
    NewMismatch {
        route: route.into(),
        at_ms,
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        method: "GET".into(),
        path: "/api/orders/7".into(),
        request: Message {
            headers: vec![("x-user".into(), "u1".into())],
            ..Message::default()
        },
        expected: Message {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: br#"{"total":10}"#.to_vec(),
            truncated: false,
        },
        actual: Message {
            status: 200,
            headers: vec![],
            body: vec![b'x'; BODY_KEPT + 10],
            truncated: false,
        },
        differences: json!([{"kind": "value", "location": "$.total"}]),
        patterns: patterns.iter().map(|p| (*p).to_string()).collect(),
    }
}

#[tokio::test]
async fn stored_listed_read_back_and_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = Store::connect(&url).await.unwrap();
    let m = store.mismatches();
    let now = now_ms();
    let ids = m
        .insert(&[
            mismatch("orders", now, &["$.total"]),
            mismatch("orders", now, &["$.at", "$.total"]),
            mismatch("users", now, &["$.name"]),
        ])
        .await
        .unwrap();
    assert_eq!(ids.len(), 3);
    let all = m
        .list(&Query {
            limit: 10,
            ..Query::default()
        })
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|s| s.id).collect::<Vec<_>>(),
        [ids[2], ids[1], ids[0]]
    );
    let by_pattern = m
        .list(&Query {
            route: Some("orders".into()),
            pattern: Some("$.at".into()),
            limit: 10,
            ..Query::default()
        })
        .await
        .unwrap();
    assert_eq!(by_pattern.len(), 1);
    assert_eq!(by_pattern[0].patterns, ["$.at", "$.total"]);
    let page = m
        .list(&Query {
            before: Some(ids[2]),
            limit: 1,
            ..Query::default()
        })
        .await
        .unwrap();
    assert_eq!(page[0].id, ids[1]);
    let whole = m.get(ids[0]).await.unwrap().unwrap();
    assert_eq!(whole.expected.status, 200);
    assert_eq!(whole.expected.body, br#"{"total":10}"#);
    assert_eq!(
        whole.request.headers,
        [("x-user".to_string(), "u1".to_string())]
    );
    assert_eq!(
        (whole.actual.body.len(), whole.actual.truncated),
        (BODY_KEPT, true)
    );
    assert_eq!(whole.differences[0]["location"], "$.total");
    assert!(m.get(ids[2] + 100).await.unwrap().is_none());
    // One per route at most: the oldest `orders` one goes; an old one goes whatever its route.
    m.insert(&[mismatch("users", now - 8 * 24 * 3600 * 1000, &["$.old"])])
        .await
        .unwrap();
    let pruned = m
        .prune(1, Duration::from_secs(7 * 24 * 3600))
        .await
        .unwrap();
    assert_eq!(pruned, 2);
    let left: Vec<_> = m
        .list(&Query {
            limit: 10,
            ..Query::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, [ids[2], ids[1]]);
    assert!(
        m.list(&Query {
            pattern: Some("$.old".into()),
            limit: 10,
            ..Query::default()
        })
        .await
        .unwrap()
        .is_empty()
    );
}
