//! The relay's per-shard write limits against a shim that enforces Kinesis's (scaled down to 100
//! records per second per shard, so a burst of a few hundred events crosses them): with the
//! relay's limiter every event arrives and the shim refuses nothing; without it, the same burst
//! is refused in part (which proves the shim), and still arrives in the end through retries.

use std::time::Duration;

use serde_json::json;
use strangler_tests::kinesis::{self, KinesisLocal, ShardLimits};
use strangler_tests::*;

const RULES: &str = ORDERS_RULES;

const EVENTS: usize = 600;

/// Sends the burst through a proxy with `events` settings; returns the shim's refusals and the
/// relay's `strangler_kinesis_shard_limited_total` once every event is in the stream.
async fn burst(events: serde_json::Value) -> (usize, f64) {
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
    let p = ProxyBuilder::new(legacy.addr)
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
    (
        shim.faults
            .limited_records
            .load(std::sync::atomic::Ordering::SeqCst),
        limited,
    )
}

#[tokio::test]
async fn with_the_relays_limiter_no_shard_is_throttled() {
    let (refused, held) = burst(json!({ "shard_records_per_second": 100 })).await;
    assert_eq!(
        refused, 0,
        "the shim refused records the limiter let through"
    );
    assert!(
        held > 0.0,
        "the limiter never held a record back: the test proves nothing"
    );
}

#[tokio::test]
async fn without_it_the_same_burst_is_throttled() {
    let (refused, held) =
        burst(json!({ "shard_records_per_second": 0, "shard_bytes_per_second": 0 })).await;
    assert!(
        refused > 0,
        "the shim refused nothing: it does not enforce the limits"
    );
    assert_eq!(held, 0.0);
}
