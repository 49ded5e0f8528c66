//! Fenced leases on PostgreSQL.
//!
//! Under a lost database session: two replicas, publishing and stepping a rollout under load,
//! have the `orders` stream's relay holder's and then the rollout holder's session terminated
//! (`pg_terminate_backend`, as a database restart, failover or idle timeout would). At most one
//! replica acts under each lease at any time, someone holds it again within 5 s, every event
//! arrives in order per key, and no rollout transition is written twice.
//!
//! Shared out: three replicas publishing to six streams each relay two of them, each stream by
//! one; a replica killed with `kill -9` has its streams relayed by the others within seconds,
//! and every acked event arrives, each key's first copies in order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use strangler_store::Lease;
use strangler_store::lease_set::lease_key;
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

/// The sessions holding the advisory lock `key` (a bigint key is split into classid and objid,
/// objsubid 1).
async fn lock_holders(db: &sqlx::PgPool, key: i64) -> Vec<i32> {
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
async fn terminate_holder(db: &sqlx::PgPool, replicas: &[&Proxy], lease: i64, name: &str) {
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

    let relay = "relay:orders";
    terminate_holder(&db, &replicas, lease_key(relay), relay).await;
    terminate_holder(&db, &replicas, Lease::ROLLOUT.key(), "rollout").await;

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

/// The six streams of the shared-out test, and a route publishing to each
/// (`POST /api/<stream>/users/<user>/orders`, keyed by user).
const STREAMS: [&str; 6] = ["s0", "s1", "s2", "s3", "s4", "s5"];

fn six_streams() -> String {
    let mut rules = String::from("routes:\n");
    for s in STREAMS {
        rules.push_str(&format!(
            r#"  - name: {s}
    match: {{ methods: [POST], path: {{ template: "/api/{s}/users/{{user}}/orders" }} }}
    target: {{ service: legacy }}
    publish:
      stream: {s}
      type: ORDER_CREATED
      source: shop/orders
      partition_key: {{ request.path_param: user }}
      data: {{ request.body: "$" }}
"#
        ));
    }
    rules
}

/// Which of `replicas` relays each stream (by `strangler_lease_held{lease="relay:<s>"}`).
async fn relayers(replicas: &[&Proxy]) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    for s in STREAMS {
        let mut by = Vec::new();
        for (i, p) in replicas.iter().enumerate() {
            let sample = format!("strangler_lease_held{{lease=\"relay:{s}\"}}");
            if p.metric(&sample).await == 1.0 {
                by.push(i);
            }
        }
        out.push(by);
    }
    out
}

/// Waits (20 s at most) until every stream is relayed by exactly one of `replicas`; returns how
/// long that took.
async fn all_relayed_again(what: &str, replicas: &[&Proxy]) -> Duration {
    let since = Instant::now();
    wait_for(what, Duration::from_secs(20), || async {
        relayers(replicas).await.iter().all(|r| r.len() == 1)
    })
    .await;
    since.elapsed()
}

/// Waits until `n` more orders than now are acked.
async fn more_acked(acked: &AtomicU64, n: u64) {
    let from = acked.load(SeqCst);
    wait_for("more orders acked", Duration::from_secs(30), || async {
        acked.load(SeqCst) > from + n
    })
    .await;
}

#[tokio::test]
async fn replicas_share_the_streams_and_take_over_a_killed_ones() {
    let store = Store::postgres().await;
    let k = KinesisLocal::start().await;
    let c = kinesis::client(&k.endpoint());
    for s in STREAMS {
        kinesis::create_stream(&c, s).await;
    }
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let replica = || {
        ProxyBuilder::new(legacy.addr)
            .rules("r.yaml", &six_streams())
            .kinesis(&k.endpoint())
            .store(&store)
            .setting(
                "server",
                serde_json::json!({ "grace_period": "2s", "shutdown_timeout": "5s" }),
            )
            .start()
    };
    let a = replica().await;
    let mut b = replica().await;
    let mut dying = replica().await;

    // Load: a client per stream and user, numbering its orders, sent through the live replicas
    // in turn (the first `live` of a, b, dying); what got a 2xx is acked.
    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(AtomicU64::new(3));
    let acked = Arc::new(AtomicU64::new(0));
    let addrs = [a.addr, b.addr, dying.addr];
    let load: Vec<_> = STREAMS
        .iter()
        .flat_map(|s| (0..3).map(move |u| (*s, u)))
        .map(|(s, u)| {
            let (stop, live, acked) = (Arc::clone(&stop), Arc::clone(&live), Arc::clone(&acked));
            tokio::spawn(async move {
                let mut mine: Vec<i64> = Vec::new();
                let mut n = 0i64;
                let path = format!("/api/{s}/users/u{u}/orders");
                while !stop.load(SeqCst) {
                    let addr = addrs[(n as usize) % live.load(SeqCst) as usize];
                    let req = hyper::Request::post(&path)
                        .header("host", "shop")
                        .header("content-type", "application/json")
                        .body(http_body_util::Full::new(bytes::Bytes::from(format!(
                            r#"{{"n":{n}}}"#
                        ))))
                        .unwrap();
                    if let Ok(r) = request(addr, req).await
                        && r.status == 200
                    {
                        mine.push(n);
                        acked.fetch_add(1, SeqCst);
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (s, format!("u{u}"), mine)
            })
        })
        .collect();

    // Each stream relayed by exactly one replica, two streams each.
    let all = [&a, &b, &dying];
    wait_for(
        "each stream relayed by one replica, two each",
        Duration::from_secs(30),
        || async {
            let by = relayers(&all).await;
            by.iter().all(|r| r.len() == 1)
                && (0..3).all(|i| by.iter().filter(|r| r[0] == i).count() == 2)
        },
    )
    .await;
    let before = relayers(&all).await;
    more_acked(&acked, 300).await;

    // kill -9 one: its streams move to the other two.
    live.store(2, SeqCst);
    dying.kill9();
    let moved = all_relayed_again(
        "the killed replica's streams relayed by the others",
        &[&a, &b],
    )
    .await;
    eprintln!("streams relayed before: {before:?}; all relayed again {moved:?} after the kill");
    assert!(
        moved < Duration::from_secs(10),
        "the streams moved only after {moved:?}"
    );
    more_acked(&acked, 200).await;

    // SIGTERM: b stops accepting, relays what its last requests enqueued through the grace
    // period, settles its calls and hands its leases back; a relays every stream at its next
    // round (a handed-back lease needs no quiet time; the bound leaves room for a busy machine).
    live.store(1, SeqCst);
    b.terminate(Duration::from_secs(20)).await;
    let handed = all_relayed_again(
        "the stopped replica's streams relayed by the last one",
        &[&a],
    )
    .await;
    eprintln!("all relayed by one replica {handed:?} after the other's exit");
    assert!(
        handed < Duration::from_secs(5),
        "handed-back streams taken only after {handed:?}"
    );
    more_acked(&acked, 100).await;
    stop.store(true, SeqCst);
    let mut sent: HashMap<&str, Vec<(String, Vec<i64>)>> = HashMap::new();
    for l in load {
        let (s, user, mine) = l.await.unwrap();
        sent.entry(s).or_default().push((user, mine));
    }

    // Every acked order in its stream; each key's first copies in the order sent. (A request
    // that failed after the proxy enqueued its event may be there too.)
    let firsts = |got: &[(String, serde_json::Value)]| {
        let mut seen = HashSet::new();
        let mut per_key: HashMap<String, Vec<i64>> = HashMap::new();
        for (key, e) in got {
            if seen.insert(e["id"].as_str().unwrap().to_string()) {
                per_key
                    .entry(key.clone())
                    .or_default()
                    .push(e["data"]["n"].as_i64().unwrap());
            }
        }
        per_key
    };
    for s in STREAMS {
        let missing = |got: &HashMap<String, Vec<i64>>| -> Vec<(String, i64)> {
            let mut out = Vec::new();
            for (user, mine) in &sent[s] {
                let have: HashSet<i64> = got.get(user).into_iter().flatten().copied().collect();
                out.extend(
                    mine.iter()
                        .filter(|n| !have.contains(n))
                        .map(|n| (user.clone(), *n)),
                );
            }
            out
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let got = loop {
            let got = firsts(&kinesis::read_all(&c, s).await);
            let lost = missing(&got);
            if lost.is_empty() {
                break got;
            }
            assert!(
                Instant::now() < deadline,
                "{s}: {} acked events missing after 60 s, first {:?}",
                lost.len(),
                &lost[..lost.len().min(10)]
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        for (user, order) in &got {
            assert!(
                order.windows(2).all(|w| w[0] < w[1]),
                "{s} key {user}: out of order: {order:?}"
            );
        }
    }
}
