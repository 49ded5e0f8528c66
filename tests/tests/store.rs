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

/// A lease holder whose session died stops holding within two heartbeats, and once another
/// holder took the lease, nothing it writes under the old fence is committed: not the relay's
/// settling of rows, not a rollout transition.
#[tokio::test]
async fn postgres_writes_under_a_lost_lease_are_refused() {
    use strangler_store::{Lease, NewEvent, Writer};

    let db = Store::postgres().await;
    let first = StoreConn::connect(&db.url()).await.unwrap();
    let second = StoreConn::connect(&db.url()).await.unwrap();
    let outbox = first.outbox();
    outbox
        .enqueue_batch(&[NewEvent {
            id: "e1".into(),
            route: "r".into(),
            stream: "s".into(),
            partition_key: "k".into(),
            payload: b"{}".to_vec(),
        }])
        .await
        .unwrap();
    let seq = outbox.read_after(0, 10).await.unwrap()[0].seq;

    let mut old = first.acquire(Lease::named("test.lease")).await.unwrap();
    let fence = old.fence().expect("PostgreSQL leases are fenced");
    let admin = sqlx::PgPool::connect(&db.url()).await.unwrap();
    let killed: bool = sqlx::query_scalar(
        "SELECT pg_terminate_backend(holder::int) FROM strangler_leases WHERE name = 'test.lease'",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(killed);
    tokio::time::timeout(
        2 * strangler_store::HEARTBEAT + Duration::from_millis(500),
        old.lost(),
    )
    .await
    .expect("the holder did not notice its session's end within two heartbeats");
    assert!(!old.is_held());
    let new = second.acquire(Lease::named("test.lease")).await.unwrap();
    assert!(new.fence().unwrap().generation > fence.generation);

    let fenced = outbox.fenced(Some(fence.clone()));
    assert!(matches!(
        fenced.published(&[seq], false).await,
        Err(strangler_store::StoreError::LeaseLost(_))
    ));
    assert!(matches!(
        fenced.retry(&[seq], 0, "x").await,
        Err(strangler_store::StoreError::LeaseLost(_))
    ));
    assert_eq!(
        outbox.read_after(0, 10).await.unwrap().len(),
        1,
        "a fenced write went through"
    );
    let state = strangler_rollout::State {
        step: 0,
        weight_bp: 1_000,
        phase: strangler_rollout::Phase::Progressing,
        since_ms: 0,
        checked_ms: 0,
        failures: 0,
        reason: "test".into(),
        generation: 1,
        baseline: Default::default(),
        last_check: None,
    };
    assert!(matches!(
        first
            .rollouts()
            .save(
                "c",
                &state,
                "{}",
                None,
                None,
                Writer::Controller(Some(&fence))
            )
            .await,
        Err(strangler_store::StoreError::LeaseLost(_))
    ));
    // Under the new holder's fence both go through.
    let current = outbox.fenced(new.fence());
    current.published(&[seq], false).await.unwrap();
    assert!(
        second
            .rollouts()
            .save(
                "c",
                &state,
                "{}",
                None,
                None,
                Writer::Controller(new.fence().as_ref())
            )
            .await
            .unwrap()
    );
}
