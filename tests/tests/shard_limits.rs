//! The relay's per-shard write limits against a shim that enforces Kinesis's (scaled down to 100
//! records per second per shard, so a burst of a few hundred events crosses them): with the
//! relay's limiter every event arrives and the shim refuses nothing; without it, the same burst
//! is refused in part (which proves the shim), and still arrives in the end through retries.
//! And the soak's stall: a drain that meets the limiter, then a second outage, still delivers
//! everything (the held batches once counted calls that were never made, and the paused stream
//! then never sent its probe).

use std::time::Duration;

use serde_json::json;
use strangler_events::relay::ShardLimits as Limits;
use strangler_events::{Metrics, NewEvent, Relay, RelayConfig};
use strangler_tests::kinesis::{self, KinesisLocal, ShardLimits};
use strangler_tests::*;

const RULES: &str = ORDERS_RULES;

const EVENTS: usize = 600;

/// Sends the burst through a proxy with `events` settings; returns the shim's refusals, the
/// relay's `strangler_kinesis_shard_limited_total` once every event is in the stream, and
/// `strangler capacity --json`'s usage of the stream after the proxy stopped.
async fn burst(events: serde_json::Value) -> (usize, f64, serde_json::Value) {
    let k = KinesisLocal::start().await;
    let c = kinesis::client(&k.endpoint());
    kinesis::create_stream(&c, "orders").await;
    let shim = kinesis::Shim::start(k.addr).await;
    *shim.faults.shard_limits.lock().unwrap() = Some(ShardLimits::new(
        100,
        100 << 10,
        kinesis::shard_ranges(&c, "orders").await,
    ));
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let mut p = ProxyBuilder::new(legacy.addr)
        .rules("orders.yaml", RULES)
        .kinesis(&shim.endpoint())
        .setting("events", events)
        .start()
        .await;
    let sends: Vec<_> = (0..8)
        .map(|w| {
            let addr = p.addr;
            tokio::spawn(async move {
                for i in (w..EVENTS).step_by(8) {
                    let path = format!("/api/users/u{}/orders", i % 40);
                    let r = post(addr, &path, &format!(r#"{{"n":{i}}}"#), &[]).await;
                    assert_eq!(r.status, 200);
                }
            })
        })
        .collect();
    for s in sends {
        s.await.unwrap();
    }
    let published = "strangler_events_published_total{stream=\"orders\"}";
    wait_for("every event published", Duration::from_secs(60), || async {
        p.metric(published).await as usize >= EVENTS
    })
    .await;
    let got = kinesis::read_all(&c, "orders").await;
    let mut markers: Vec<i64> = got
        .iter()
        .map(|(_, e)| e["data"]["n"].as_i64().unwrap())
        .collect();
    markers.sort_unstable();
    markers.dedup();
    assert_eq!(markers.len(), EVENTS, "events missing from the stream");
    let limited = p
        .metric("strangler_kinesis_shard_limited_total{stream=\"orders\"}")
        .await;
    // A clean stop writes the usage not yet written.
    p.terminate(Duration::from_secs(10)).await;
    let out = std::process::Command::new(binary())
        .args(["capacity", "--json", "--config"])
        .arg(&p.config)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        shim.faults
            .limited_records
            .load(std::sync::atomic::Ordering::SeqCst),
        limited,
        v["streams"][0]["usage"].clone(),
    )
}

#[tokio::test]
async fn with_the_relays_limiter_no_shard_is_throttled() {
    let (refused, held, usage) = burst(json!({ "shard_records_per_second": 100 })).await;
    assert_eq!(
        refused, 0,
        "the shim refused records the limiter let through"
    );
    assert!(
        held > 0.0,
        "the limiter never held a record back: the test proves nothing"
    );
    // `capacity` says the limiter held the stream, and sizes it from what arrived: never less
    // than what was sent, and no second sent more than the limiter lets through (2 shards ×
    // 100 records) — counted when the call went out, not when Kinesis answered.
    assert!(usage["held_minutes"].as_i64().unwrap() >= 1, "{usage:#}");
    let (sent, demand) = (
        usage["peak_records"].as_i64().unwrap(),
        usage["demand_peak_records"].as_i64().unwrap(),
    );
    assert!(sent <= 200 && demand >= sent, "{usage:#}");
}

#[tokio::test]
async fn without_it_the_same_burst_is_throttled() {
    let (refused, held, usage) =
        burst(json!({ "shard_records_per_second": 0, "shard_bytes_per_second": 0 })).await;
    assert_eq!(usage["held_minutes"], 0, "{usage:#}");
    assert!(
        refused > 0,
        "the shim refused nothing: it does not enforce the limits"
    );
    assert_eq!(held, 0.0);
}

/// Events of the drain-and-second-outage test (at 10 records per shard and second).
const HELD: usize = 200;

#[tokio::test]
async fn a_drain_that_meets_the_limiter_then_a_second_outage_delivers_everything() {
    let k = KinesisLocal::start().await;
    let c = kinesis::client(&k.endpoint());
    kinesis::create_stream(&c, "orders").await;
    let mut shim = kinesis::Shim::start(k.addr).await;
    let store = Store::new(false).await;
    let outbox = store.outbox().await;
    let registry = prometheus::Registry::new();
    let m = Metrics::new(&registry).unwrap();
    // A low limit, so the limiter holds batches however slowly the server answers.
    let cfg = RelayConfig {
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        poll: Duration::from_millis(20),
        shard_limits: Limits {
            records_per_second: 10,
            bytes_per_second: 100 << 10,
        },
        ..RelayConfig::default()
    };
    let relay = Relay::new(
        outbox.clone(),
        kinesis::client(&shim.endpoint()),
        m.clone(),
        cfg,
    );
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(relay.run(stop_rx));
    let published = || m.published.with_label_values(&["orders"]).get();
    // One event first: the relay fetches the shard map (kept through the outages), so the
    // limiter is on from the first event after them.
    outbox
        .enqueue_batch(&[kinesis::order_event("orders", "warm-up", 0)])
        .await
        .unwrap();
    wait_for(
        "the first event published",
        Duration::from_secs(30),
        || async { published() == 1 },
    )
    .await;
    // The first outage, with the events coming in: the stream pauses and probes. Two keys: a
    // call carries one row of each, so the limiter often holds a whole batch.
    shim.down();
    let events: Vec<NewEvent> = (0..HELD as u64)
        .map(|n| kinesis::order_event("orders", &format!("user-{}", n % 2), n))
        .collect();
    outbox.enqueue_batch(&events).await.unwrap();
    let unreachable = || m.failed.with_label_values(&["orders", "unreachable"]).get();
    wait_for("the first outage seen", Duration::from_secs(30), || async {
        unreachable() > 0
    })
    .await;
    // Back: the drain meets the limiter (100 events per shard and second).
    shim.up().await;
    wait_for(
        "the limiter holding records back",
        Duration::from_secs(30),
        // A few seconds of it: a batch held back whole is then all but certain.
        || async { m.shard_limited.with_label_values(&["orders"]).get() > 0 && published() > 60 },
    )
    .await;
    // The second outage, with events still waiting.
    let before = unreachable();
    shim.down();
    wait_for(
        "the second outage seen",
        Duration::from_secs(30),
        || async { unreachable() > before },
    )
    .await;
    assert!(
        published() < 1 + HELD as u64,
        "drained before the second outage: the test proves nothing"
    );
    shim.up().await;
    wait_for(
        "every event published after the second outage",
        Duration::from_secs(60),
        || async { outbox.depth().await.unwrap().iter().all(|d| d.depth == 0) },
    )
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(
        m.stream_stalls.with_label_values(&["orders"]).get(),
        0,
        "delivered only because the stall was found, not because none happened"
    );
    let got = kinesis::read_all(&c, "orders").await;
    let mut ns: Vec<i64> = got
        .iter()
        .map(|(_, e)| e["data"]["n"].as_i64().unwrap())
        .collect();
    ns.sort_unstable();
    ns.dedup();
    assert_eq!(ns.len(), HELD, "events missing from the stream");
}
