//! Dual-write through the real proxy: requests to a publishing route become CloudEvents in a real
//! Kinesis-compatible stream (kinesis-local), via the outbox on SQLite or PostgreSQL; non-2xx
//! answers publish nothing; and neither `kill -9` nor SIGTERM under load loses an event whose
//! request got a 2xx.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use serde_json::{Value, json};
use strangler_tests::kinesis::{self, KinesisLocal};
use strangler_tests::*;
use tokio::sync::Mutex;

const RULES: &str = r#"
routes:
  - name: orders-create
    match: { methods: [POST], path: { template: "/api/users/{user}/orders" } }
    target: { service: legacy }
    publish:
      stream: orders
      type: ORDER_CREATED
      source: shop/orders
      subject: { response.body: "$.uri" }
      partition_key: { request.path_param: user }
      data:
        object:
          order: { request.body: "$" }
          status: { response.status: true }
      redact:
        - { jsonpath: "$.order.card" }
        - { jsonpath: "$.order.email", mode: hash }
"#;

/// kinesis-local with an `orders` stream, a client of it, and an echoing legacy upstream.
async fn servers() -> (KinesisLocal, aws_sdk_kinesis::Client, Upstream) {
    let k = KinesisLocal::start().await;
    let c = kinesis::client(&k.endpoint());
    kinesis::create_stream(&c, "orders").await;
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    (k, c, legacy)
}

/// The proxy with the orders rules, publishing to `k`; `settings`: more config settings.
async fn proxy(legacy: &Upstream, k: &KinesisLocal, settings: &[(&str, Value)]) -> Proxy {
    let mut b = ProxyBuilder::new(legacy.addr)
        .rules("orders.yaml", RULES)
        .kinesis(&k.endpoint());
    for (key, value) in settings {
        b = b.setting(key, value.clone());
    }
    b.start().await
}

async fn events(c: &aws_sdk_kinesis::Client, want: usize) -> Vec<(String, Value)> {
    let mut got = Vec::new();
    for _ in 0..300 {
        got = kinesis::read_all(c, "orders").await;
        if got.len() >= want {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expected {want} events, stream has {}: {got:?}", got.len());
}

/// A proxy whose rules publish nothing asks AWS nothing: no Kinesis client is built, so no
/// instance-metadata lookup of a region at start (off AWS a useless call and a delay).
#[tokio::test]
async fn nothing_publishes_nothing_asks_aws() {
    let imds = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let imds_addr = imds.local_addr().unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&asked);
    tokio::spawn(async move {
        while imds.accept().await.is_ok() {
            a.fetch_add(1, Ordering::SeqCst);
        }
    });
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let p = ProxyBuilder::new(legacy.addr)
        .rules("r.yaml", "routes: []\n")
        .env(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            &format!("http://{imds_addr}"),
        )
        .start()
        .await;
    // Ready means started: the old start-up had asked for a region by now.
    assert_eq!(get(p.addr, "/x", &[]).await.status, 200);
    assert_eq!(
        asked.load(Ordering::SeqCst),
        0,
        "instance metadata was asked"
    );
}

#[tokio::test]
async fn a_2xx_write_becomes_exactly_the_expected_event() {
    let (k, c, legacy) = servers().await;
    let p = proxy(&legacy, &k, &[]).await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = post(
        p.addr,
        "/api/users/u42/orders",
        r#"{"sku":"tea","qty":2,"card":"4111","email":"a@b.c"}"#,
        &[("traceparent", tp)],
    )
    .await;
    assert_eq!(r.status, 200);

    // Non-2xx answers and a non-JSON body, then a marker: when the marker is in, so is anything
    // sent before it.
    for (body, status) in [(r#"{"sku":"fail"}"#, 500), (r#"{"sku":"conflict"}"#, 409)] {
        let r = post(
            p.addr,
            "/api/users/u42/orders",
            body,
            &[("x-reply-status", &status.to_string())],
        )
        .await;
        assert_eq!(r.status, status);
    }
    assert_eq!(
        post(p.addr, "/api/users/u7/orders", "not json", &[])
            .await
            .status,
        200
    );

    let got = events(&c, 2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let (key, ev) = got.iter().find(|(k, _)| k == "u42").expect("u42's event");
    assert_eq!(key, "u42");
    assert_eq!(ev["specversion"], "1.0");
    assert_eq!(ev["type"], "ORDER_CREATED");
    assert_eq!(ev["source"], "shop/orders");
    assert_eq!(ev["subject"], "/api/users/u42/orders");
    assert_eq!(ev["datacontenttype"], "application/json");
    assert_eq!(ev["traceparent"], tp);
    assert_eq!(ev["id"].as_str().unwrap().len(), 36);
    assert!(ev["time"].as_str().unwrap().ends_with('Z'));
    let data = &ev["data"];
    assert_eq!(data["status"], 200);
    assert_eq!(data["order"]["sku"], "tea");
    assert_eq!(data["order"]["qty"], 2);
    assert!(
        data["order"].get("card").is_none(),
        "card was not removed: {data}"
    );
    let email = data["order"]["email"].as_str().unwrap();
    assert_eq!(email.len(), 64, "email not hashed: {data}");
    assert_ne!(email, "a@b.c");
    // A body that is not JSON: `$` carries it as text.
    let (_, raw) = got.iter().find(|(k, _)| k == "u7").expect("u7's event");
    assert_eq!(raw["data"]["order"], "not json");
    assert_eq!(
        p.metric(r#"strangler_events_enqueued_total{route="orders-create",stream="orders"}"#)
            .await,
        2.0
    );
    // The relay counts an event published before its row leaves the outbox: once the outbox is
    // drained, the count is final.
    wait_for("the outbox to drain", Duration::from_secs(10), || async {
        let outbox = p.admin_json("/api/outbox").await;
        outbox["streams"].as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(
        p.metric(r#"strangler_events_published_total{stream="orders"}"#)
            .await,
        2.0
    );
    // The group writer's figures: both events were committed by some commits, and every write
    // handed to the writer (events, their removal after publishing) waited a measured time.
    assert_eq!(p.metric("strangler_outbox_commit_events_sum").await, 2.0);
    let commits = p
        .metric("strangler_outbox_commit_duration_seconds_count")
        .await;
    let waits = p.metric("strangler_outbox_write_wait_seconds_count").await;
    assert!(
        commits >= 2.0 && waits >= commits,
        "commits {commits}, waits {waits}"
    );
}

#[tokio::test]
async fn an_aggregated_stream_carries_many_events_per_record() {
    let (k, c, legacy) = servers().await;
    let p = proxy(
        &legacy,
        &k,
        &[("events", json!({ "aggregate": ["orders"] }))],
    )
    .await;
    // 40 users' orders at once: the relay's linger gathers them into a few calls.
    let p = Arc::new(p);
    let mut tasks = Vec::new();
    for u in 0..40 {
        let p = Arc::clone(&p);
        tasks.push(tokio::spawn(async move {
            let body = format!(r#"{{"sku":"tea","qty":{u}}}"#);
            post(p.addr, &format!("/api/users/u{u}/orders"), &body, &[])
                .await
                .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let got = events(&c, 40).await;
    assert_eq!(got.len(), 40, "{got:?}");
    for u in 0..40 {
        let (_, ev) = got
            .iter()
            .find(|(k, _)| *k == format!("u{u}"))
            .unwrap_or_else(|| panic!("u{u}'s event missing"));
        assert_eq!(ev["data"]["order"]["qty"], u);
    }
    let records = strangler_events::kinesis::read_stream(&c, "orders")
        .await
        .unwrap();
    let kinesis_records: HashSet<_> = records.iter().map(|r| &r.sequence_number).collect();
    assert!(
        kinesis_records.len() < 40,
        "not aggregated: {} records for 40 events",
        kinesis_records.len()
    );
    let per_record_sum = p
        .metric(r#"strangler_kinesis_events_per_record_sum{stream="orders"}"#)
        .await;
    assert_eq!(per_record_sum, 40.0, "every event counted in an aggregate");
}

/// How the proxy is stopped under load.
#[derive(Clone, Copy)]
enum Stop {
    Kill9,
    /// SIGTERM: the proxy exits within its grace period + shutdown timeout, and the relay is
    /// told to stop (it settles or abandons its calls) instead of being cut off.
    Term,
}

async fn stopped_under_load_loses_nothing(store: &Store, how: Stop) {
    let (k, c, legacy) = servers().await;
    let settings = [
        ("store", json!(store.url())),
        (
            "server",
            json!({ "grace_period": "1s", "shutdown_timeout": "5s" }),
        ),
    ];
    let mut p = proxy(&legacy, &k, &settings).await;
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..6 {
        let (acked, stop, addr) = (acked.clone(), stop.clone(), p.addr);
        workers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let n = format!("{w}-{i}");
                let req = Request::post(format!("/api/users/w{w}/orders"))
                    .header("host", "t")
                    .body(Full::new(Bytes::from(json!({"n": n}).to_string())))
                    .unwrap();
                match request(addr, req).await {
                    Ok(r) if r.status == 200 => {
                        acked.lock().await.insert(n);
                    }
                    // The proxy is down (killed / restarting): back off a little.
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        match how {
            Stop::Kill9 => p.kill9(),
            Stop::Term => {
                let stops = p.logs().matches("Relay stopped for shutdown").count();
                p.terminate(Duration::from_secs(8)).await;
                assert_eq!(
                    p.logs().matches("Relay stopped for shutdown").count(),
                    stops + 1,
                    "the relay was not stopped cleanly:\n{}",
                    p.logs()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        p.restart().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    assert!(
        acked.len() > 50,
        "only {} requests acknowledged",
        acked.len()
    );
    let mut missing = acked.clone();
    let mut got = Vec::new();
    for _ in 0..300 {
        got = kinesis::read_all(&c, "orders").await;
        for (_, ev) in &got {
            missing.remove(ev["data"]["order"]["n"].as_str().unwrap());
        }
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged writes have no event (of {}): {:?}",
        missing.len(),
        acked.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    let ids: HashSet<&str> = got.iter().map(|(_, e)| e["id"].as_str().unwrap()).collect();
    eprintln!(
        "{} acknowledged, {} records, {} duplicates by id",
        acked.len(),
        got.len(),
        got.len() - ids.len()
    );
}

#[tokio::test]
async fn kill9_under_load_loses_nothing_sqlite() {
    stopped_under_load_loses_nothing(&Store::sqlite(), Stop::Kill9).await;
}

#[tokio::test]
async fn kill9_under_load_loses_nothing_postgres() {
    stopped_under_load_loses_nothing(&Store::postgres().await, Stop::Kill9).await;
}

#[tokio::test]
async fn sigterm_under_load_stops_the_relay_and_loses_nothing() {
    stopped_under_load_loses_nothing(&Store::sqlite(), Stop::Term).await;
}

/// A Kinesis outage seen by an operator: `strangler_stream_up` drops to 0, the log says so once
/// (however many calls fail), every event waits and goes out when Kinesis is back, and one INFO
/// says how long it was down, how many events waited and how long the drain took.
#[tokio::test]
async fn a_kinesis_outage_logs_one_warn_and_one_info_and_loses_nothing() {
    let (k, c, legacy) = servers().await;
    let mut shim = kinesis::Shim::start(k.addr).await;
    let p = ProxyBuilder::new(legacy.addr)
        .rules("orders.yaml", RULES)
        .kinesis(&shim.endpoint())
        .setting(
            "events",
            json!({ "max_attempts": 2, "max_backoff": "300ms" }),
        )
        .start()
        .await;
    assert_eq!(
        post(p.addr, "/api/users/u0/orders", "{}", &[]).await.status,
        200
    );
    let up = "strangler_stream_up{stream=\"orders\"}";
    wait_for("the stream up", Duration::from_secs(30), || async {
        p.metric(up).await == 1.0
    })
    .await;
    shim.down();
    for i in 1..=20 {
        let path = format!("/api/users/u{}/orders", i % 4);
        assert_eq!(
            post(p.addr, &path, &format!("{{\"n\":{i}}}"), &[])
                .await
                .status,
            200
        );
    }
    wait_for("the stream down", Duration::from_secs(30), || async {
        p.metric(up).await == 0.0
    })
    .await;
    // More failed calls than max_attempts (each failing the 20 events), and none given up.
    let failed = "strangler_events_failed_total{reason=\"unreachable\",stream=\"orders\"}";
    wait_for("three failed calls", Duration::from_secs(60), || async {
        p.metric(failed).await >= 3.0 * 20.0
    })
    .await;
    shim.up().await;
    wait_for("the drain's INFO line", Duration::from_secs(60), || async {
        p.logs().contains("Kinesis stream reachable again")
    })
    .await;
    let logs = p.logs();
    let warns: Vec<_> = logs
        .lines()
        // (The start-up check's note that the stream is unencrypted is not about the outage.)
        .filter(|l| l.contains("WARN") && l.contains("orders") && !l.contains("encryption"))
        .collect();
    assert_eq!(warns.len(), 1, "{warns:#?}");
    assert!(
        warns[0].contains("Kinesis stream unreachable"),
        "{}",
        warns[0]
    );
    let info = logs
        .lines()
        .find(|l| l.contains("Kinesis stream reachable again"))
        .unwrap();
    for field in ["down_for=", "waited=20", "drained_in="] {
        assert!(info.contains(field), "{field} missing: {info}");
    }
    assert_eq!(p.metric(up).await, 1.0);
    assert_eq!(events(&c, 21).await.len(), 21);
    assert!(!logs.contains("dead-lettered"), "{logs}");
}

/// `durability: async` events wait for their outbox write in a bounded buffer
/// (`events.async_buffer`): with the store stalled (this test holds the enqueue lock that every
/// outbox insert needs), answers still go out at once, the buffer takes what fits, and every
/// event past it is counted as `outbox_full`, with one WARN, instead of piling up. Once the store
/// answers, what was buffered is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_events_past_the_buffer_are_counted_when_the_store_stalls() {
    use sqlx::Connection;
    let (k, _c, legacy) = servers().await;
    let store = Store::postgres().await;
    let rules = RULES.replace(
        "      stream: orders\n",
        "      stream: orders\n      durability: async\n",
    );
    let p = ProxyBuilder::new(legacy.addr)
        .rules("orders.yaml", &rules)
        .kinesis(&k.endpoint())
        .store(&store)
        .setting("events", json!({ "async_buffer": "16KiB" }))
        .start()
        .await;
    let mut conn = sqlx::PgConnection::connect(&store.url()).await.unwrap();
    let mut stall = conn.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(strangler_store::lease::Lock::ENQUEUE.key())
        .execute(&mut *stall)
        .await
        .unwrap();
    let body = format!(r#"{{"note":"{}"}}"#, "x".repeat(500));
    for i in 0..200 {
        let r = post(p.addr, &format!("/api/users/u{i}/orders"), &body, &[]).await;
        assert_eq!(r.status, 200);
    }
    let full = r#"strangler_events_failed_total{reason="outbox_full",stream="orders"}"#;
    let enqueued = r#"strangler_events_enqueued_total{route="orders-create",stream="orders"}"#;
    wait_for(
        "events counted as outbox_full",
        Duration::from_secs(10),
        || async { p.metric(full).await >= 150.0 },
    )
    .await;
    let turned_away = p.metric(full).await as usize;
    // Each event is over 500 bytes: at most 32 fit in 16 KiB; nothing was stored meanwhile.
    assert!(
        (168..200).contains(&turned_away),
        "{turned_away} turned away"
    );
    assert_eq!(p.metric(enqueued).await, 0.0);
    stall.rollback().await.unwrap();
    wait_for(
        "the buffered events stored",
        Duration::from_secs(20),
        || async { p.metric(enqueued).await as usize == 200 - turned_away },
    )
    .await;
    let warns = p
        .logs()
        .lines()
        .filter(|l| l.contains("Async events NOT stored"))
        .count();
    assert_eq!(warns, 1, "{}", p.logs());
}
