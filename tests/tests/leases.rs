//! Fenced leases under a lost database session: two replicas on PostgreSQL, publishing and
//! stepping a rollout under load, have the relay holder's and then the rollout holder's session
//! terminated (`pg_terminate_backend`, as a database restart, failover or idle timeout would).
//! At most one replica acts under each lease at any time, someone holds it again within 5 s,
//! every event arrives in order per key, and no rollout transition is written twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use strangler_store::Lease;
use strangler_tests::kinesis::{self, KinesisLocal};
use strangler_tests::*;

/// The orders route publishing (the harness's), and a checkout context stepping every second.
fn rules() -> String {
    let context = r#"
contexts:
  - name: checkout
    service: checkout
    sticky: { header: x-user }
    rollout:
      steps: [50, 55, 60, 65, 70, 75, 80, 85, 90, 95, 100]
      interval: 1s
"#;
    let checkout = r#"  - name: checkout
    match: { path: { prefix: /checkout } }
    target: { context: checkout }
"#;
    format!("{context}{ORDERS_RULES}{checkout}")
}

const USERS: u64 = 10;

/// `strangler_lease_held{lease}` on each replica.
async fn holders(replicas: &[&Proxy], lease: &str) -> Vec<bool> {
    let mut held = Vec::new();
    for p in replicas {
        let sample = format!("strangler_lease_held{{lease=\"{lease}\"}}");
        held.push(p.metric(&sample).await == 1.0);
    }
    held
}

/// The sessions holding the lease's advisory lock (a bigint key is split into classid and
/// objid, objsubid 1).
async fn lock_holders(db: &sqlx::PgPool, lease: Lease) -> Vec<i32> {
    let key = lease.key();
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
         AND classid::bigint = $1 AND objid::bigint = $2",
    )
    .bind((key >> 32) & 0xffff_ffff)
    .bind(key & 0xffff_ffff)
    .fetch_all(db)
    .await
    .unwrap()
}

/// Terminates the lease holder's session and checks what follows: never two replicas acting
/// under it, and a holder again (in `pg_locks` and in a replica's gauge) within 5 s.
async fn terminate_holder(db: &sqlx::PgPool, replicas: &[&Proxy], lease: Lease, name: &str) {
    wait_for(
        "one holder of the lease",
        Duration::from_secs(15),
        || async {
            lock_holders(db, lease).await.len() == 1
                && holders(replicas, name).await.iter().filter(|h| **h).count() == 1
        },
    )
    .await;
    let before = lock_holders(db, lease).await;
    let killed: Vec<bool> =
        sqlx::query_scalar("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid")
            .bind(&before)
            .fetch_all(db)
            .await
            .unwrap();
    assert_eq!(killed, [true]);
    let since = Instant::now();
    let mut back = None;
    while since.elapsed() < Duration::from_secs(8) {
        let held = holders(replicas, name).await;
        assert!(
            held.iter().filter(|h| **h).count() <= 1,
            "two replicas act under the {name} lease at once"
        );
        let pids = lock_holders(db, lease).await;
        if back.is_none() && pids.len() == 1 && pids != before && held.contains(&true) {
            back = Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let back =
        back.unwrap_or_else(|| panic!("nobody holds the {name} lease 8 s after its session died"));
    assert!(
        back < Duration::from_secs(5),
        "the {name} lease held again only after {back:?}"
    );
}

#[tokio::test]
async fn a_lost_session_never_leaves_two_replicas_acting_or_none() {
    let store = Store::postgres().await;
    let Store::Postgres(scratch) = &store else {
        unreachable!()
    };
    let db = sqlx::PgPool::connect(&scratch.url).await.unwrap();
    let k = KinesisLocal::start().await;
    let c = kinesis::client(&k.endpoint());
    kinesis::create_stream(&c, "orders").await;
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let checkout = Upstream::start("checkout", Behaviour::Echo).await;
    let replica = || {
        ProxyBuilder::new(legacy.addr)
            .service("checkout", UpstreamConfig::new(checkout.addr))
            .rules("r.yaml", &rules())
            .kinesis(&k.endpoint())
            .store(&store)
            .start()
    };
    let a = replica().await;
    let b = replica().await;
    let replicas = [&a, &b];

    // Load: each user's orders numbered in order, through both replicas; checkout reads too.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..USERS)
        .map(|u| {
            let addrs = [a.addr, b.addr];
            let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(SeqCst) {
                    let addr = addrs[(n % 2) as usize];
                    let path = format!("/api/users/u{u}/orders");
                    let r = post(addr, &path, &format!(r#"{{"n":{n}}}"#), &[]).await;
                    assert_eq!(r.status, 200, "{}", r.text());
                    let user = format!("user-{u}");
                    let r = get(addr, "/checkout/cart", &[("x-user", &user)]).await;
                    assert_eq!(r.status, 200, "{}", r.text());
                    sent.fetch_add(1, SeqCst);
                    n += 1;
                    // ~10 orders a second per user: load, not a flood kinesis-local lags behind.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                n
            })
        })
        .collect();

    terminate_holder(&db, &replicas, Lease::RELAY, "relay").await;
    terminate_holder(&db, &replicas, Lease::ROLLOUT, "rollout").await;

    stop.store(true, SeqCst);
    let mut per_user = Vec::new();
    for l in load {
        per_user.push(l.await.unwrap());
    }
    let total: u64 = per_user.iter().sum();
    assert!(total > 0);
    eprintln!("{total} orders sent");

    // Every event arrives, and each key's first copies come in order (consumers skip copies
    // by id, so a late copy of an earlier event never reorders them).
    let distinct = |got: &[(String, serde_json::Value)]| {
        got.iter()
            .map(|(_, e)| e["id"].as_str().unwrap().to_string())
            .collect::<HashSet<_>>()
            .len() as u64
    };
    wait_for(
        "every event in the stream",
        Duration::from_secs(60),
        || async { distinct(&kinesis::read_all(&c, "orders").await) >= total },
    )
    .await;
    let got = kinesis::read_all(&c, "orders").await;
    let mut seen = HashSet::new();
    let mut last: HashMap<String, i64> = HashMap::new();
    for (key, e) in &got {
        if !seen.insert(e["id"].as_str().unwrap().to_string()) {
            continue;
        }
        let n = e["data"]["n"].as_i64().unwrap();
        let prev = last.insert(key.clone(), n);
        assert!(prev.is_none_or(|p| p < n), "key {key}: {n} after {prev:?}");
    }
    for (u, n) in per_user.iter().enumerate() {
        assert_eq!(
            last.get(&format!("u{u}")).map_or(0, |l| l + 1),
            *n as i64,
            "user u{u}"
        );
    }

    // No transition written twice: each step's entry is there once.
    let audit = a.admin_json("/api/audit?context=checkout&limit=1000").await;
    let steps: Vec<(i64, i64)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "controller")
        .map(|e| {
            (
                e["from_weight_bp"].as_i64().unwrap(),
                e["to_weight_bp"].as_i64().unwrap(),
            )
        })
        .collect();
    let unique: HashSet<_> = steps.iter().collect();
    assert_eq!(
        unique.len(),
        steps.len(),
        "a transition written twice: {steps:?}"
    );
    assert!(steps.len() >= 3, "the rollout hardly moved: {steps:?}");
}
