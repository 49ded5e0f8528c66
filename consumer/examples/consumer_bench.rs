//! The consumer's throughput into a read model against a plain GetRecords loop on the same
//! server, with and without KPL aggregation. `bench/consumer.sh` runs it against kinesalite.
//!
//! `consumer_bench ENDPOINT [EVENTS] [DB_URL]`: fills two 4-shard streams with EVENTS CloudEvents
//! (~300 bytes each) — one record per event, and KPL aggregates of 100 — then times (1) a loop
//! of GetRecords over every shard that counts the events (taking aggregates apart), and (2) the
//! consumer applying every event into a table (SQLite in a temp dir, or DB_URL) with its
//! checkpoint and dedupe, one transaction per batch. Prints a Markdown table.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use sqlx::AnyConnection;
use strangler_consumer::{Applying, Config, Consumer, Event, Handler};
use strangler_wire::aggregate::Builder;

const SHARDS: i32 = 4;

fn event(i: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "specversion": "1.0", "id": format!("0193a000-0000-7000-8000-{i:012}"),
        "source": "shop/orders", "type": "ORDER_CREATED", "time": "2026-11-30T10:00:00.000Z",
        "datacontenttype": "application/json",
        "data": {"order_id": i, "user_id": format!("user-{}", i % 1000), "items": [{"sku": "tea", "qty": 2}],
                 "total_cents": 900, "served_by": "legacy-shop"}
    }))
    .unwrap()
}

async fn fill(c: &Client, stream: &str, n: usize, aggregate: bool) {
    c.create_stream()
        .stream_name(stream)
        .shard_count(SHARDS)
        .send()
        .await
        .unwrap();
    loop {
        let d = c
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .unwrap();
        if d.stream_description_summary()
            .unwrap()
            .stream_status()
            .as_str()
            == "ACTIVE"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut entries = Vec::new();
    if aggregate {
        // 100 events of one key per aggregate (keys spread over the shards).
        for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
            let key = format!("user-{}", chunk[0]);
            let mut b = Builder::default();
            for &i in chunk {
                b.push(&key, &event(i));
            }
            entries.push((key, b.finish()));
        }
    } else {
        entries = (0..n).map(|i| (format!("user-{i}"), event(i))).collect();
    }
    // PutRecords takes 500 records and 5 MiB per call: aggregates of ~33 KB go 100 at a time.
    let per_call = if aggregate { 100 } else { 500 };
    for batch in entries.chunks(per_call) {
        let records = batch
            .iter()
            .map(|(k, d)| {
                PutRecordsRequestEntry::builder()
                    .partition_key(k)
                    .data(Blob::new(d.clone()))
                    .build()
                    .unwrap()
            })
            .collect();
        let out = c
            .put_records()
            .stream_name(stream)
            .set_records(Some(records))
            .send()
            .await
            .unwrap();
        assert_eq!(out.failed_record_count(), Some(0));
    }
}

/// A plain loop: every shard from TRIM_HORIZON, GetRecords until caught up, events counted.
async fn plain_loop(c: &Client, stream: &str) -> usize {
    let shards = c.list_shards().stream_name(stream).send().await.unwrap();
    let mut events = 0;
    for s in shards.shards() {
        let mut it = c
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(s.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator
            .unwrap();
        loop {
            let out = c
                .get_records()
                .shard_iterator(&it)
                .limit(1000)
                .send()
                .await
                .unwrap();
            for r in out.records() {
                events += match strangler_wire::aggregate::decode(r.data().as_ref()) {
                    Ok(Some(sub)) => sub.len(),
                    _ => 1,
                };
            }
            match out.next_shard_iterator {
                Some(next) if !out.records.is_empty() => it = next,
                _ => break,
            }
        }
    }
    events
}

struct Insert;

impl Handler for Insert {
    fn apply<'a>(&'a self, tx: &'a mut AnyConnection, e: &'a Event) -> Applying<'a> {
        Box::pin(async move {
            sqlx::query("INSERT INTO orders (id, user_id, total_cents) VALUES ($1, $2, $3)")
                .bind(e.data["order_id"].as_i64())
                .bind(e.data["user_id"].as_str())
                .bind(e.data["total_cents"].as_i64())
                .execute(&mut *tx)
                .await?;
            Ok(())
        })
    }
}

async fn consume(c: &Client, stream: &str, n: usize, db: &str) -> Duration {
    let pool = strangler_consumer::connect(db).await.unwrap();
    sqlx::query("DROP TABLE IF EXISTS orders")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE orders (id BIGINT PRIMARY KEY, user_id TEXT, total_cents BIGINT)")
        .execute(&pool)
        .await
        .unwrap();
    let mut config = Config::new(stream, format!("bench-{stream}"));
    config.idle_wait = Duration::from_millis(50);
    let consumer = Consumer::new(c.clone(), pool.clone(), config)
        .await
        .unwrap();
    let progress = consumer.progress();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let task = tokio::spawn(consumer.run(Insert, stopped));
    while (progress.applied() as usize) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    let _ = stop.send(true);
    task.await.unwrap().unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows as usize, n);
    took
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let endpoint = args
        .get(1)
        .expect("consumer_bench ENDPOINT [EVENTS] [DB_URL]");
    let n: usize = args.get(2).map_or(20_000, |a| a.parse().unwrap());
    let dir = std::env::temp_dir().join(format!("consumer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = format!("sqlite://{}", dir.join("read-model.db").display());
    let db = args.get(3).cloned().unwrap_or(sqlite);
    let c = strangler_events::kinesis::client(Some("us-east-1"), Some(endpoint)).await;
    let tag = std::process::id();
    println!("| reader | records | events | seconds | events/s | × GetRecords loop |");
    println!("|---|---|---|---|---|---|");
    for aggregate in [false, true] {
        let stream = format!("bench-{}-{tag}", if aggregate { "agg" } else { "plain" });
        fill(&c, &stream, n, aggregate).await;
        let records = if aggregate { n.div_ceil(100) } else { n };
        let started = Instant::now();
        let counted = plain_loop(&c, &stream).await;
        let loop_time = started.elapsed();
        assert_eq!(counted, n);
        let took = consume(&c, &stream, n, &db).await;
        let loop_rate = n as f64 / loop_time.as_secs_f64();
        let rate = n as f64 / took.as_secs_f64();
        let kind = if aggregate {
            "aggregated ×100"
        } else {
            "one event per record"
        };
        println!(
            "| GetRecords loop (count only), {kind} | {records} | {n} | {:.2} | {loop_rate:.0} | 1.00 |",
            loop_time.as_secs_f64()
        );
        println!(
            "| strangler-consumer into {}, {kind} | {records} | {n} | {:.2} | {rate:.0} | {:.2} |",
            if db.starts_with("postgres") {
                "PostgreSQL"
            } else {
                "SQLite"
            },
            took.as_secs_f64(),
            rate / loop_rate
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
