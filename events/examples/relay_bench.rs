//! Relay throughput against a plain SDK PutRecords loop, on the same Kinesis-compatible server in
//! the same run (bench/relay.sh starts kinesalite and calls this). Both send the same number of
//! ~1 KB records with distinct partition keys in batches of 500; the relay reads them from a
//! pre-filled SQLite outbox and deletes what Kinesis accepted, as in production.
//!
//! Usage: relay_bench ENDPOINT RECORDS

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
    let client = strangler_events::kinesis::client(Some("us-east-1"), Some(&endpoint)).await;
    for s in ["sdk-loop", "relay"] {
        let _ = client
            .create_stream()
            .stream_name(s)
            .shard_count(4)
            .send()
            .await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
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

    // The relay, from a filled outbox.
    let dir = std::env::temp_dir().join(format!("relay-bench-{}", std::process::id()));
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
                stream: "relay".into(),
                partition_key: format!("key-{i}"),
                payload: ev.to_bytes(),
            }
        })
        .collect();
    for chunk in events.chunks(5_000) {
        outbox.enqueue_batch(chunk).await.unwrap();
    }
    let registry = prometheus::Registry::new();
    let mut relay = Relay::new(
        outbox.clone(),
        client,
        Metrics::new(&registry).unwrap(),
        RelayConfig::default(),
    );
    let started = Instant::now();
    let mut sent = 0;
    while sent < n {
        let p = relay.pass().await.unwrap();
        assert_eq!(p.dead, 0);
        sent += p.published;
    }
    let rel = n as f64 / started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);

    println!("| sender | records | records/s | × SDK loop |");
    println!("|---|---|---|---|");
    println!("| plain aws-sdk PutRecords loop (500/call) | {n} | {sdk:.0} | 1.00 |");
    println!(
        "| strangler relay (SQLite outbox → PutRecords) | {n} | {rel:.0} | {:.2} |",
        rel / sdk
    );
}
