//! `strangler capacity` from what the relay really sent: the relay records per-minute usage in
//! the store (written at shutdown at the latest), and the command sizes the stream from it next
//! to the stream's real shard count and mode (kinesis-local).

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use strangler_tests::kinesis::{self, KinesisLocal};
use strangler_tests::*;

const RULES: &str = ORDERS_RULES;

#[tokio::test]
async fn capacity_sizes_the_stream_from_what_the_relay_sent() {
    let k = KinesisLocal::start().await;
    let c = kinesis::client(&k.endpoint());
    kinesis::create_stream(&c, "orders").await;
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let mut p = ProxyBuilder::new(legacy.addr)
        .rules("orders.yaml", RULES)
        .kinesis(&k.endpoint())
        .start()
        .await;
    for i in 0..50 {
        let r = post(
            p.addr,
            &format!("/api/users/u{i}/orders"),
            r#"{"sku":"tea"}"#,
            &[],
        )
        .await;
        assert_eq!(r.status, 200);
    }
    wait_for("every event published", Duration::from_secs(30), || async {
        p.metric("strangler_events_published_total{stream=\"orders\"}")
            .await
            >= 50.0
    })
    .await;
    // A clean stop writes the usage not yet written.
    p.terminate(Duration::from_secs(10)).await;

    let out = Command::new(binary())
        .args(["capacity", "--json", "--config"])
        .arg(&p.config)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    let s = &v["streams"][0];
    assert_eq!(s["stream"], "orders", "{v:#}");
    assert_eq!(
        (s["shards"].as_i64(), s["mode"].as_str()),
        (Some(2), Some("PROVISIONED")),
        "{v:#}"
    );
    let u = &s["usage"];
    // Averaged over the window from the first send to the end of the last send's second.
    let seconds =
        ((u["to_ms"].as_i64().unwrap() - u["from_ms"].as_i64().unwrap()) / 1000 + 1) as f64;
    let events = u["avg_events"].as_f64().unwrap() * seconds;
    assert!(
        events >= 49.0,
        "the usage does not hold the 50 events: {u:#}"
    );
    assert_eq!(u["shards_needed"], 1, "{u:#}");
    assert!(u["peak_records"].as_i64().unwrap() >= 1, "{u:#}");
    assert!(u["provisioned_month"].as_f64().unwrap() > 10.0, "{u:#}");
    assert!(u["on_demand_month"].as_f64().unwrap() > 29.0, "{u:#}");

    // The table form says the same in words.
    let out = Command::new(binary())
        .args(["capacity", "--config"])
        .arg(&p.config)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("2 open shards, PROVISIONED") && text.contains("needs        1 shard"),
        "{text}"
    );
}
