//! Outbox enqueue throughput without a proxy in front: `tasks` concurrent callers (as many
//! requests in flight) enqueue ~1 KB events, each waiting for its commit, through one or more
//! outbox handles on the same store (handles stand for replicas). No relay runs.
//!
//! Usage: outbox_bench STORE_URL [events, 20000] [tasks, 64] [handles, 1]

use std::time::{Duration, Instant};

use strangler_events::{CloudEvent, NewEvent, Outbox};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .expect("usage: outbox_bench STORE_URL [events] [tasks] [handles]");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let tasks: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(64);
    let handles: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut outboxes = Vec::new();
    for _ in 0..handles {
        outboxes.push(Outbox::connect(url).await.expect("connect"));
    }
    let started = Instant::now();
    let mut joins = Vec::new();
    for t in 0..tasks {
        let outbox = outboxes[t % handles].clone();
        let per_task = n / tasks;
        joins.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let ev = CloudEvent::new(
                    "bench",
                    "BENCH",
                    serde_json::json!({"i": i, "pad": "x".repeat(900)}),
                );
                let e = NewEvent {
                    id: ev.id.clone(),
                    route: "bench".into(),
                    stream: "bench".into(),
                    partition_key: format!("user-{}", (t * 7 + i) % 1000),
                    payload: ev.to_bytes(),
                };
                let s = Instant::now();
                outbox.enqueue(e).await.expect("enqueue");
                lat.push(s.elapsed());
            }
            lat
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for j in joins {
        lat.extend(j.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    println!(
        "{} events, {tasks} tasks, {handles} handle(s): {:.0} events/s, p50 {:?}, p99 {:?}",
        lat.len(),
        lat.len() as f64 / secs,
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
}
