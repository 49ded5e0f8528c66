//! The consumer side's end-to-end support: the `count-consumer` test binary's database and
//! instances, what it applied read back, clients placing orders through the proxy, and the
//! check that every acked order was applied once and in each user's order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use sqlx::AnyPool;
use tokio::sync::Mutex;

use crate::kinesis::{self, KinesisLocal};
use crate::*;

/// The consumer's database: a SQLite file in a temp dir, or a scratch PostgreSQL database.
pub struct ConsumerDb {
    pub url: String,
    _keep: Store,
}

impl ConsumerDb {
    pub async fn new(postgres: bool) -> ConsumerDb {
        let store = Store::new(postgres).await;
        let url = match &store {
            Store::Sqlite(d) => format!("sqlite://{}", d.path().join("consumer.db").display()),
            Store::Postgres(db) => db.url.clone(),
        };
        ConsumerDb { url, _keep: store }
    }

    pub async fn pool(&self) -> AnyPool {
        strangler_consumer::connect(&self.url).await.unwrap()
    }
}

pub fn count_consumer(db: &ConsumerDb, k: &KinesisLocal, fan_out: bool) -> Process {
    count_instance(db, k, fan_out, None, &[])
}

/// An instance of the `count` consumer, named `instance` in the lease table when given, with
/// `more` arguments.
pub fn count_instance(
    db: &ConsumerDb,
    k: &KinesisLocal,
    fan_out: bool,
    instance: Option<&str>,
    more: &[&str],
) -> Process {
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
    if let Some(name) = instance {
        args.extend(["--instance", name]);
    }
    args.extend(more);
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
pub async fn applied(pool: &AnyPool) -> Vec<(i64, String, String, i64)> {
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
pub struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(i64, String)>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(proxy: std::net::SocketAddr, users: usize) -> Load {
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

    pub async fn acked(&self) -> usize {
        self.acked.lock().await.len()
    }

    /// Stops the clients; what was acked.
    pub async fn stop(self) -> Vec<(i64, String)> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        self.acked.lock().await.clone()
    }
}

/// kinesis-local with the `orders` stream, a client of it, an echoing monolith, and the proxy
/// publishing to it (`proxy` adds settings).
pub async fn servers(
    proxy: impl FnOnce(ProxyBuilder) -> ProxyBuilder,
) -> (KinesisLocal, aws_sdk_kinesis::Client, Upstream, Proxy) {
    let k = KinesisLocal::start().await;
    let c = kinesis::client(&k.endpoint());
    kinesis::create_stream(&c, "orders").await;
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let builder = ProxyBuilder::new(legacy.addr)
        .rules("orders.yaml", ORDERS_RULES)
        .kinesis(&k.endpoint());
    let p = proxy(builder).start().await;
    (k, c, legacy, p)
}

/// Waits until the consumer has applied more than `n` events.
pub async fn applied_over(pool: &AnyPool, n: usize) {
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
/// the order placed. The wait ends in failure once 30 s pass with nothing more applied (the
/// relay may be draining a backlog kinesis-local takes slowly on a busy machine: that is
/// progress), or after 5 minutes in all.
pub async fn every_acked_applied_once(pool: &AnyPool, acked: &[(i64, String)], consumer: &Process) {
    let want: HashSet<i64> = acked.iter().map(|(n, _)| *n).collect();
    let started = std::time::Instant::now();
    let (mut progress_at, mut applied_before) = (started, 0);
    let got = loop {
        let got = applied(pool).await;
        let have: HashSet<i64> = got.iter().map(|r| r.0).collect();
        if want.is_subset(&have) {
            break got;
        }
        if got.len() > applied_before {
            (progress_at, applied_before) = (std::time::Instant::now(), got.len());
        }
        if progress_at.elapsed() >= Duration::from_secs(30)
            || started.elapsed() >= Duration::from_secs(300)
        {
            // Which keys lack events, and the shard their applied ones came from.
            let mut missing: BTreeMap<&str, (usize, Option<i64>, Option<&str>)> = BTreeMap::new();
            for (n, user) in acked.iter().filter(|(n, _)| !have.contains(n)) {
                let m = missing.entry(user).or_default();
                m.0 += 1;
                m.1 = Some(m.1.map_or(*n, |f: i64| f.min(*n)));
            }
            for r in &got {
                if let Some(m) = missing.get_mut(r.1.as_str()) {
                    m.2 = Some(r.2.as_str());
                }
            }
            panic!(
                "{} of {} acked events applied after {:?} (nothing more in the last {:?}); missing per key (count, first, shard): {missing:?}; consumer log:\n{}",
                want.intersection(&have).count(),
                want.len(),
                started.elapsed(),
                progress_at.elapsed(),
                consumer.logs()
            );
        }
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
