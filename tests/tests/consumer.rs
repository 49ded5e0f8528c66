//! The consumer side (strangler-consumer) against kinesis-local and the real proxy: every event
//! a client got a 2xx for is applied once into the consumer's database, across `kill -9` of the
//! consumer and of the proxy, on SQLite and PostgreSQL, polling and through enhanced fan-out, in
//! per-key order; a shard split while it reads loses and duplicates nothing (children after
//! parents, KPL aggregates taken apart).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use sqlx::AnyPool;
use strangler_tests::kinesis::{self, KinesisLocal};
use strangler_tests::*;
use tokio::sync::Mutex;

const RULES: &str = ORDERS_RULES;

/// The consumer's database: a SQLite file in a temp dir, or a scratch PostgreSQL database.
struct ConsumerDb {
    url: String,
    _keep: Store,
}

impl ConsumerDb {
    async fn new(postgres: bool) -> ConsumerDb {
        let store = Store::new(postgres).await;
        let url = match &store {
            Store::Sqlite(d) => format!("sqlite://{}", d.path().join("consumer.db").display()),
            Store::Postgres(db) => db.url.clone(),
        };
        ConsumerDb { url, _keep: store }
    }

    async fn pool(&self) -> AnyPool {
        strangler_consumer::connect(&self.url).await.unwrap()
    }
}

fn count_consumer(db: &ConsumerDb, k: &KinesisLocal, fan_out: bool) -> Process {
    let bin = workspace_binary("strangler-tests", "count-consumer");
    let endpoint = k.endpoint();
    let mut args = vec![
        "--db",
        &db.url,
        "--stream",
        "orders",
        "--endpoint",
        &endpoint,
    ];
    if fan_out {
        args.push("--fan-out");
    }
    Process::start(
        &bin,
        &args,
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    )
}

/// `(marker, partition key, shard, times applied)` per marker, in the order first applied.
async fn applied(pool: &AnyPool) -> Vec<(i64, String, String, i64)> {
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT body, partition_key, shard_id FROM applied ORDER BY seq")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    let mut out: Vec<(i64, String, String, i64)> = Vec::new();
    let mut at: HashMap<i64, usize> = HashMap::new();
    for (body, key, shard) in rows {
        let marker = serde_json::from_str::<Value>(&body).unwrap()["n"]
            .as_i64()
            .unwrap();
        match at.get(&marker) {
            Some(&i) => out[i].3 += 1,
            None => {
                at.insert(marker, out.len());
                out.push((marker, key, shard, 1));
            }
        }
    }
    out
}

/// Clients placing orders as `users` users, each 2xx's marker kept; marker `n` of a user is
/// larger than its earlier ones. The proxy may be down meanwhile (killed): a failed request is
/// simply not acked.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(i64, String)>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(proxy: std::net::SocketAddr, users: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..users)
            .map(|u| {
                let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
                tokio::spawn(async move {
                    let user = format!("user-{u}");
                    let mut n = (u as i64) * 1_000_000;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let body = format!(r#"{{"n":{n}}}"#);
                        let path = format!("/api/users/{user}/orders");
                        let req = hyper::Request::post(&path)
                            .header("host", "shop")
                            .header("content-type", "application/json")
                            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                            .unwrap();
                        if let Ok(r) = request(proxy, req).await
                            && r.status == 200
                        {
                            acked.lock().await.push((n, user.clone()));
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            acked,
            workers,
        }
    }

    async fn acked(&self) -> usize {
        self.acked.lock().await.len()
    }

    /// Stops the clients; what was acked.
    async fn stop(self) -> Vec<(i64, String)> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        self.acked.lock().await.clone()
    }
}

/// kinesis-local with the `orders` stream, a client of it, an echoing monolith, and the proxy
/// publishing to it (`proxy` adds settings).
async fn servers(
    proxy: impl FnOnce(ProxyBuilder) -> ProxyBuilder,
) -> (KinesisLocal, aws_sdk_kinesis::Client, Upstream, Proxy) {
    let k = KinesisLocal::start().await;
    let c = kinesis::client(&k.endpoint());
    kinesis::create_stream(&c, "orders").await;
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let builder = ProxyBuilder::new(legacy.addr)
        .rules("orders.yaml", RULES)
        .kinesis(&k.endpoint());
    let p = proxy(builder).start().await;
    (k, c, legacy, p)
}

/// Waits until the consumer has applied more than `n` events.
async fn applied_over(pool: &AnyPool, n: usize) {
    wait_for(
        "the consumer applying events",
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            async move { applied(&pool).await.len() > n }
        },
    )
    .await;
}

/// Waits until every acked marker is applied, then checks: each applied once, each user's in
/// the order placed.
async fn every_acked_applied_once(pool: &AnyPool, acked: &[(i64, String)], consumer: &Process) {
    let want: HashSet<i64> = acked.iter().map(|(n, _)| *n).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = applied(pool).await;
        let have: HashSet<i64> = got.iter().map(|r| r.0).collect();
        if want.is_subset(&have) {
            break got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} acked events applied after 60 s; consumer log:\n{}",
            want.intersection(&have).count(),
            want.len(),
            consumer.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let twice: Vec<_> = got.iter().filter(|r| r.3 > 1).collect();
    assert!(twice.is_empty(), "applied more than once: {twice:?}");
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    for (n, key, _, _) in &got {
        let prev = last.insert(key, *n).unwrap_or(i64::MIN);
        if prev >= *n {
            let of_key: Vec<_> = got
                .iter()
                .filter(|r| &r.1 == key)
                .map(|r| (r.0, &r.2))
                .collect();
            panic!(
                "user {key}: {n} applied after {prev}; the user's events as applied (marker, shard): {of_key:?}"
            );
        }
    }
}

async fn survives_kill9(postgres: bool, fan_out: bool) {
    let store = Store::new(postgres).await;
    let (k, c, _legacy, mut p) = servers(|b| b.store(&store)).await;
    let db = ConsumerDb::new(postgres).await;
    let mut consumer = count_consumer(&db, &k, fan_out);
    let pool = db.pool().await;
    let load = Load::start(p.addr, 4);
    for round in 0..3 {
        // Kill each while it is busy: after it has applied (or acked) more than before.
        applied_over(&pool, applied(&pool).await.len() + 20).await;
        consumer.kill9();
        if round == 1 {
            let acked_before = load.acked().await;
            wait_for("more requests acked", Duration::from_secs(10), || async {
                load.acked().await > acked_before + 20
            })
            .await;
            p.kill9();
            p.restart().await;
        }
        consumer.restart();
    }
    let acked = load.stop().await;
    assert!(acked.len() > 100, "only {} requests acked", acked.len());
    every_acked_applied_once(&pool, &acked, &consumer).await;
    if fan_out {
        let logs = consumer.logs();
        assert!(
            logs.contains("enhanced_fan_out=true"),
            "the consumer polled:\n{logs}"
        );
        let arn = c
            .describe_stream_summary()
            .stream_name("orders")
            .send()
            .await
            .unwrap()
            .stream_description_summary
            .unwrap()
            .stream_arn;
        let registered = c
            .list_stream_consumers()
            .stream_arn(arn)
            .send()
            .await
            .unwrap();
        let names: Vec<&str> = registered
            .consumers()
            .iter()
            .map(|c| c.consumer_name())
            .collect();
        assert_eq!(names, ["count"]);
    }
}

#[tokio::test]
async fn every_acked_event_is_applied_once_across_kill9_sqlite() {
    survives_kill9(false, false).await;
}

/// The same through enhanced fan-out (SubscribeToShard), which kinesis-local serves.
#[tokio::test]
async fn enhanced_fan_out_applies_every_acked_event_once_across_kill9() {
    survives_kill9(false, true).await;
}

#[tokio::test]
async fn every_acked_event_is_applied_once_across_kill9_postgres() {
    survives_kill9(true, false).await;
}

/// A shard split while events flow (KPL-aggregated): the parent is read to its end before its
/// children, and nothing is lost or applied twice.
#[tokio::test]
async fn a_shard_split_while_reading_loses_and_duplicates_nothing() {
    let (k, c, _legacy, p) =
        servers(|b| b.setting("events", serde_json::json!({ "aggregate": ["orders"] }))).await;
    let db = ConsumerDb::new(false).await;
    let consumer = count_consumer(&db, &k, false);
    let pool = db.pool().await;
    let load = Load::start(p.addr, 8);
    applied_over(&pool, 50).await;

    let shards = c.list_shards().stream_name("orders").send().await.unwrap();
    let parent = shards.shards()[0].clone();
    let range = parent.hash_key_range().unwrap();
    let (lo, hi): (u128, u128) = (
        range.starting_hash_key().parse().unwrap(),
        range.ending_hash_key().parse().unwrap(),
    );
    c.split_shard()
        .stream_name("orders")
        .shard_to_split(parent.shard_id())
        .new_starting_hash_key((lo + (hi - lo) / 2).to_string())
        .send()
        .await
        .unwrap();
    let children: Vec<String> = {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let s = c.list_shards().stream_name("orders").send().await.unwrap();
            let ids: Vec<String> = s
                .shards()
                .iter()
                .filter(|s| s.parent_shard_id() == Some(parent.shard_id()))
                .map(|s| s.shard_id().to_string())
                .collect();
            if ids.len() == 2 {
                break ids;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no children 20 s after the split"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // Events land in the children now; the consumer must get to them.
    wait_for(
        "events applied from a child shard",
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            let children = children.clone();
            async move { applied(&pool).await.iter().any(|r| children.contains(&r.2)) }
        },
    )
    .await;
    let acked = load.stop().await;
    every_acked_applied_once(&pool, &acked, &consumer).await;
    assert!(
        consumer.logs().contains("Shard read to its end"),
        "the parent was not read to its end:\n{}",
        consumer.logs()
    );
}

/// Two instances of one consumer name (a mistake, or a standby started early) on one PostgreSQL
/// database: every event is still applied once (the second transaction to insert an event's id
/// waits for the first and skips it).
#[tokio::test]
async fn two_instances_of_one_consumer_still_apply_each_event_once() {
    let (k, _c, _legacy, p) = servers(|b| b).await;
    let db = ConsumerDb::new(true).await;
    let first = count_consumer(&db, &k, false);
    let _second = count_consumer(&db, &k, false);
    let pool = db.pool().await;
    let load = Load::start(p.addr, 4);
    applied_over(&pool, 200).await;
    let acked = load.stop().await;
    every_acked_applied_once(&pool, &acked, &first).await;
}
