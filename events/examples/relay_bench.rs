//! Relay throughput against a plain SDK PutRecords loop, on the same Kinesis-compatible server in
//! the same run (bench/relay.sh starts kinesalite and calls this). Both send the same number of
//! ~1 KB records with distinct partition keys in batches of 500; the relay reads them from a
//! pre-filled SQLite outbox and deletes what Kinesis accepted, as in production.
//!
//! Then hot keys: the relay with 1, 10 and 50 partition keys (`HOT` events, default 5,000),
//! plain and aggregated: per-key order allows one event of a key per call on a plain stream,
//! and one aggregated record of a key's events per call on an aggregated one.
//!
//! Usage: relay_bench ENDPOINT RECORDS [HOT]

use std::time::Instant;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use strangler_events::{CloudEvent, Metrics, NewEvent, Outbox, Relay, RelayConfig};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let endpoint = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:4567".into());
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let hot: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5_000);
    let client = strangler_events::kinesis::client(Some("us-east-1"), Some(&endpoint)).await;
    create_stream(&client, "sdk-loop").await;
    let payload = |i: usize| {
        CloudEvent::new(
            "bench",
            "BENCH",
            serde_json::json!({"i": i, "pad": "x".repeat(900)}),
        )
    };

    // Plain SDK loop.
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let entries = chunk
            .iter()
            .map(|i| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(payload(*i).to_bytes()))
                    .partition_key(format!("key-{i}"))
                    .build()
                    .unwrap()
            })
            .collect();
        let out = client
            .put_records()
            .stream_name("sdk-loop")
            .set_records(Some(entries))
            .send()
            .await
            .unwrap();
        assert_eq!(out.failed_record_count(), Some(0));
    }
    let sdk = n as f64 / started.elapsed().as_secs_f64();

    // The relay, from a filled outbox: plain, and KPL-aggregated (the same ~1 KB events, then
    // small ones of ~150 bytes).
    // kinesalite does not throttle, and the SDK loop is not limited either: the relay's
    // per-shard limits (Kinesis's 1,000 records/s and 1 MiB/s per shard) are off here, so this
    // measures the relay itself.
    let unlimited = RelayConfig {
        shard_limits: strangler_events::relay::ShardLimits {
            records_per_second: 0,
            bytes_per_second: 0,
        },
        ..RelayConfig::default()
    };
    let (rel, _) = relay(&client, "relay", n, n, &payload, unlimited.clone()).await;
    let aggregated = RelayConfig {
        aggregate: vec!["*".into()],
        ..unlimited
    };
    let (agg, agg_records) = relay(&client, "relay-agg", n, n, &payload, aggregated.clone()).await;
    let small = |i: usize| CloudEvent::new("bench", "BENCH", serde_json::json!({"i": i}));
    let (small_rate, small_records) =
        relay(&client, "relay-agg-small", n, n, small, aggregated.clone()).await;

    println!("| sender | events | events/s | × SDK loop | Kinesis records | events per record |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| plain aws-sdk PutRecords loop (500/call), ~1 KB events | {n} | {sdk:.0} | 1.00 | {n} | 1 |"
    );
    println!(
        "| strangler relay (SQLite outbox → PutRecords), ~1 KB events | {n} | {rel:.0} | {:.2} | {n} | 1 |",
        rel / sdk
    );
    println!(
        "| strangler relay, KPL-aggregated, ~1 KB events | {n} | {agg:.0} | {:.2} | {agg_records} | {:.1} |",
        agg / sdk,
        n as f64 / agg_records as f64
    );
    println!(
        "| strangler relay, KPL-aggregated, ~{} B events | {n} | {small_rate:.0} | {:.2} | {small_records} | {:.1} |",
        small(n).to_bytes().len(),
        small_rate / sdk,
        n as f64 / small_records as f64
    );

    println!();
    println!(
        "| keys | events | plain: events/s | aggregated: events/s | aggregated: events per record |"
    );
    println!("|---|---|---|---|---|");
    for keys in [1, 10, 50] {
        let (plain, _) = relay(
            &client,
            &format!("hot-{keys}"),
            hot,
            keys,
            &payload,
            RelayConfig::default(),
        )
        .await;
        let (agg, records) = relay(
            &client,
            &format!("hot-agg-{keys}"),
            hot,
            keys,
            &payload,
            aggregated.clone(),
        )
        .await;
        println!(
            "| {keys} | {hot} | {plain:.0} | {agg:.0} | {:.1} |",
            hot as f64 / records as f64
        );
    }
}

/// Fills an outbox with `n` events over `keys` partition keys for `stream`, relays them all, and
/// returns events per second and the Kinesis records they took.
async fn relay(
    client: &strangler_events::kinesis::Client,
    stream: &str,
    n: usize,
    keys: usize,
    payload: impl Fn(usize) -> CloudEvent,
    cfg: RelayConfig,
) -> (f64, u64) {
    create_stream(client, stream).await;
    let dir = std::env::temp_dir().join(format!("relay-bench-{}-{stream}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let outbox = Outbox::connect(&format!("sqlite://{}", dir.join("outbox.db").display()))
        .await
        .unwrap();
    let events: Vec<NewEvent> = (0..n)
        .map(|i| {
            let ev = payload(i);
            NewEvent {
                id: ev.id.clone(),
                route: "bench".into(),
                stream: stream.into(),
                partition_key: format!("key-{}", i % keys),
                payload: ev.to_bytes(),
            }
        })
        .collect();
    for chunk in events.chunks(5_000) {
        outbox.enqueue_batch(chunk).await.unwrap();
    }
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).unwrap();
    let aggregated = cfg.aggregates(stream);
    let mut relay = Relay::new(outbox.clone(), client.clone(), metrics.clone(), cfg);
    let started = Instant::now();
    let mut sent = 0;
    while sent < n {
        let p = relay.pass().await.unwrap();
        assert_eq!(p.dead, 0);
        sent += p.published;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    let records = if aggregated {
        metrics
            .events_per_record
            .with_label_values(&[stream])
            .get_sample_count()
    } else {
        n as u64
    };
    (rate, records)
}

/// A 4-shard stream, given time to become active.
async fn create_stream(client: &strangler_events::kinesis::Client, name: &str) {
    let _ = client
        .create_stream()
        .stream_name(name)
        .shard_count(4)
        .send()
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
}
