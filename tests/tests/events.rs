//! The event pipeline against real servers: kinesis-local (through the fault shim where faults
//! are wanted), and the outbox on SQLite (temp dir) and on PostgreSQL (a scratch database).
//! Every accepted event must arrive, by id none missing, in order per partition key.
//!
//! Over 600 lines on purpose: one list of scenarios sharing the helpers at the top (relay in the
//! background, drained, keyed events); split by area, each part would repeat them.

use std::collections::HashMap;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use serde_json::Value;
use strangler_events::kinesis::StreamRecord;
use strangler_events::{Metrics, NewEvent, Outbox, Relay, RelayConfig};
use strangler_tests::kinesis::{self, KinesisLocal, Shim};
use strangler_tests::{ScratchDb, Store};

/// kinesis-local with an `orders` stream, and a client of it.
async fn orders_stream() -> (KinesisLocal, aws_sdk_kinesis::Client) {
    let k = KinesisLocal::start().await;
    let c = kinesis::client(&k.endpoint());
    kinesis::create_stream(&c, "orders").await;
    (k, c)
}

/// The fault shim in front of kinesis-local, throttling every `throttle`-th call whole and failing
/// every `fail`-th record.
async fn faulty_shim(k: &KinesisLocal, throttle: usize, fail: usize) -> Shim {
    let shim = Shim::start(k.addr).await;
    shim.faults.throttle_every_call.store(throttle, SeqCst);
    shim.faults.fail_every_record.store(fail, SeqCst);
    shim
}

/// Every event of the `orders` stream, aggregates taken apart: (partition key, event), and the
/// records they came from.
async fn read_events(c: &aws_sdk_kinesis::Client) -> (Vec<(String, Value)>, Vec<StreamRecord>) {
    let records = strangler_events::kinesis::read_stream(c, "orders")
        .await
        .unwrap();
    (kinesis::as_events(&records), records)
}

fn event(stream: &str, key: &str, n: u64) -> NewEvent {
    kinesis::order_event(stream, key, n)
}

fn fast() -> RelayConfig {
    RelayConfig {
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        poll: Duration::from_millis(20),
        ..RelayConfig::default()
    }
}

fn relay(
    outbox: &Outbox,
    endpoint: &str,
    cfg: RelayConfig,
) -> (Relay, Metrics, prometheus::Registry) {
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).unwrap();
    let r = Relay::new(
        outbox.clone(),
        kinesis::client(endpoint),
        metrics.clone(),
        cfg,
    );
    (r, metrics, registry)
}

/// Runs relay passes until the outbox is empty (or `limit` passes).
async fn drain(r: &mut Relay, limit: usize) {
    for _ in 0..limit {
        r.pass().await.unwrap();
        if r.outbox.depth().await.unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("outbox not drained: {:?}", r.outbox.depth().await.unwrap());
}

/// A relay running in the background until `stop`.
struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(relay: Relay) -> Running {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        Running {
            stop,
            task: tokio::spawn(relay.run(stop_rx)),
        }
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
    }
}

/// Waits until the outbox holds no event (`what`: the wait's name).
async fn drained(what: &str, outbox: &Outbox) {
    strangler_tests::wait_for(what, Duration::from_secs(60), || async {
        outbox.depth().await.unwrap().is_empty()
    })
    .await;
}

/// `n` events of the `orders` stream over `keys` keys named `{prefix}{k}`, each key's `n`
/// ascending.
fn keyed(prefix: &str, keys: u64, n: u64) -> Vec<NewEvent> {
    (0..n)
        .map(|i| event("orders", &format!("{prefix}{}", i % keys), i / keys))
        .collect()
}

/// Every sent id arrived; per key the `n` values arrive ascending. Returns duplicates seen.
fn check(sent: &[NewEvent], got: &[(String, Value)]) -> usize {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut last_n: HashMap<String, u64> = HashMap::new();
    for (key, ev) in got {
        assert_eq!(ev["specversion"], "1.0");
        *seen
            .entry(ev["id"].as_str().unwrap().to_string())
            .or_default() += 1;
        let n = ev["data"]["n"].as_u64().unwrap();
        if let Some(prev) = last_n.insert(key.clone(), n) {
            assert!(
                n > prev || seen[ev["id"].as_str().unwrap()] > 1,
                "key {key}: event {n} arrived after {prev}"
            );
        }
    }
    for e in sent {
        assert!(seen.contains_key(&e.id), "event {} never arrived", e.id);
    }
    seen.values().map(|c| c - 1).sum()
}

async fn enqueue_concurrently(
    outbox: &Outbox,
    stream: &str,
    keys: usize,
    per_key: u64,
) -> Vec<NewEvent> {
    enqueue_keys(outbox, stream, "user", keys, per_key).await
}

/// Enqueues `per_key` events for each of `keys` keys named `{prefix}-{k}`, one task per key.
async fn enqueue_keys(
    outbox: &Outbox,
    stream: &str,
    prefix: &str,
    keys: usize,
    per_key: u64,
) -> Vec<NewEvent> {
    let mut all = Vec::new();
    let mut tasks = Vec::new();
    for k in 0..keys {
        let (o, s) = (outbox.clone(), stream.to_string());
        let evs: Vec<NewEvent> = (0..per_key)
            .map(|n| event(&s, &format!("{prefix}-{k}"), n))
            .collect();
        all.extend(evs.clone());
        // One task per key, in order: per-key order is the enqueue order.
        tasks.push(tokio::spawn(async move {
            for e in evs {
                o.enqueue(e).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    all
}

async fn delivers_everything_in_key_order(postgres: bool) {
    let (k, c) = orders_stream().await;
    let store = Store::new(postgres).await;
    let outbox = store.outbox().await;
    let sent = enqueue_concurrently(&outbox, "orders", 12, 15).await;
    assert_eq!(outbox.depth().await.unwrap()[0].depth, 180);
    let (mut r, m, _) = relay(&outbox, &k.endpoint(), fast());
    drain(&mut r, 200).await;
    let got = kinesis::read_all(&c, "orders").await;
    assert_eq!(check(&sent, &got), 0);
    assert_eq!(got.len(), sent.len());
    assert_eq!(m.published.with_label_values(&["orders"]).get(), 180);
}

#[tokio::test]
async fn sqlite_outbox_delivers_everything_in_key_order() {
    delivers_everything_in_key_order(false).await;
}

#[tokio::test]
async fn postgres_outbox_delivers_everything_in_key_order() {
    delivers_everything_in_key_order(true).await;
}

async fn survives_throttling_and_failed_records(postgres: bool) {
    let (k, c) = orders_stream().await;
    let shim = faulty_shim(&k, 3, 4).await;
    let store = Store::new(postgres).await;
    let outbox = store.outbox().await;
    let sent = enqueue_concurrently(&outbox, "orders", 10, 12).await;
    let (mut r, m, _) = relay(&outbox, &shim.endpoint(), fast());
    drain(&mut r, 2_000).await;
    let got = kinesis::read_all(&c, "orders").await;
    assert_eq!(check(&sent, &got), 0, "records were duplicated");
    assert!(shim.faults.throttled_calls.load(SeqCst) > 0);
    assert!(shim.faults.failed_records.load(SeqCst) > 0);
    assert!(m.throttled.with_label_values(&["orders"]).get() > 0);
    assert!(m.failed.with_label_values(&["orders", "throttled"]).get() > 0);
}

#[tokio::test]
async fn sqlite_outbox_survives_throttling_and_failed_records() {
    survives_throttling_and_failed_records(false).await;
}

#[tokio::test]
async fn postgres_outbox_survives_throttling_and_failed_records() {
    survives_throttling_and_failed_records(true).await;
}

async fn outage_then_recovery(postgres: bool) {
    let (k, c) = orders_stream().await;
    let mut shim = Shim::start(k.addr).await;
    shim.down();
    let store = Store::new(postgres).await;
    let outbox = store.outbox().await;
    let sent = enqueue_concurrently(&outbox, "orders", 5, 10).await;
    let (r, m, registry) = relay(&outbox, &shim.endpoint(), fast());
    let outbox2 = outbox.clone();
    let running = Running::start(r);
    // Kinesis unreachable: nothing leaves, the outbox holds everything and says so.
    strangler_tests::wait_for("failed publish attempts", Duration::from_secs(30), || {
        let failed = m.failed.with_label_values(&["orders", "unreachable"]).get();
        async move { failed > 0 }
    })
    .await;
    assert_eq!(outbox2.depth().await.unwrap()[0].depth, 50);
    // The gauges follow at their next refresh (once a second).
    strangler_tests::wait_for("the depth gauge at 50", Duration::from_secs(5), || {
        let depth = m.outbox_depth.with_label_values(&["orders"]).get();
        async move { depth == 50 }
    })
    .await;
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert!(
        text.contains("strangler_outbox_depth{stream=\"orders\"} 50"),
        "{text}"
    );
    assert!(m.outbox_oldest_age.with_label_values(&["orders"]).get() > 0.0);
    assert_eq!(m.stream_up.with_label_values(&["orders"]).get(), 0);
    // Back: everything arrives.
    shim.up().await;
    drained("the outbox to drain", &outbox2).await;
    strangler_tests::wait_for(
        "the gauges back to 0 and up",
        Duration::from_secs(5),
        || {
            let done = m.outbox_depth.with_label_values(&["orders"]).get() == 0
                && m.outbox_oldest_age.with_label_values(&["orders"]).get() == 0.0
                && m.stream_up.with_label_values(&["orders"]).get() == 1;
            async move { done }
        },
    )
    .await;
    assert_eq!(m.outbox_depth.with_label_values(&["orders"]).get(), 0);
    assert_eq!(
        m.outbox_oldest_age.with_label_values(&["orders"]).get(),
        0.0
    );
    assert_eq!(m.stream_up.with_label_values(&["orders"]).get(), 1);
    running.stop().await;
    let got = kinesis::read_all(&c, "orders").await;
    let dups = check(&sent, &got);
    assert!(dups <= 50, "{dups} duplicates");
}

#[tokio::test]
async fn sqlite_outbox_holds_events_through_an_outage() {
    outage_then_recovery(false).await;
}

#[tokio::test]
async fn postgres_outbox_holds_events_through_an_outage() {
    outage_then_recovery(true).await;
}

#[tokio::test]
async fn an_outage_longer_than_every_try_dead_letters_nothing() {
    // Kinesis refuses connections for many times what `max_attempts` tries would last, while
    // events keep coming: the stream backs off, no try is used up, nothing is dead-lettered,
    // and every event arrives once Kinesis is back.
    let (k, c) = orders_stream().await;
    let mut shim = Shim::start(k.addr).await;
    shim.down();
    let store = Store::new(false).await;
    let outbox = store.outbox().await;
    let cfg = RelayConfig {
        max_attempts: 3,
        ..fast()
    };
    let (r, m, _) = relay(&outbox, &shim.endpoint(), cfg);
    let running = Running::start(r);
    let mut sent = enqueue_keys(&outbox, "orders", "early", 8, 10).await;
    // Calls keep failing: at least ten times max_attempts of them.
    let calls = m.put_duration.with_label_values(&["orders"]);
    strangler_tests::wait_for("30 failed calls", Duration::from_secs(60), || {
        let n = calls.get_sample_count();
        async move { n >= 30 }
    })
    .await;
    sent.extend(enqueue_keys(&outbox, "orders", "late", 8, 10).await);
    assert_eq!(m.published.with_label_values(&["orders"]).get(), 0);
    assert_eq!(m.stream_up.with_label_values(&["orders"]).get(), 0);
    assert!(outbox.dead_letters(10).await.unwrap().is_empty());
    shim.up().await;
    drained("the outbox to drain", &outbox).await;
    running.stop().await;
    assert!(outbox.dead_letters(10).await.unwrap().is_empty());
    let dead: u64 = strangler_events::failure::Failure::ALL
        .iter()
        .map(|f| {
            m.dead_lettered
                .with_label_values(&["orders", f.label()])
                .get()
        })
        .sum();
    assert_eq!(dead, 0);
    assert!(m.failed.with_label_values(&["orders", "unreachable"]).get() >= 30);
    assert_eq!(m.stream_up.with_label_values(&["orders"]).get(), 1);
    let got = kinesis::read_all(&c, "orders").await;
    assert_eq!(check(&sent, &got), 0, "duplicates");
    assert_eq!(got.len(), 160);
}

#[tokio::test]
async fn calls_cut_after_they_were_sent_are_sent_again_never_dead_lettered() {
    // The shim passes calls on to Kinesis, then cuts the connection: the records are stored,
    // the relay cannot know. With one try allowed, nothing may be dead-lettered: the events are
    // sent again (duplicates, deduped downstream by id) and all arrive.
    let (k, c) = orders_stream().await;
    let shim = Shim::start(k.addr).await;
    shim.faults.cut_every_call.store(1, SeqCst);
    let store = Store::new(false).await;
    let outbox = store.outbox().await;
    let sent = enqueue_concurrently(&outbox, "orders", 10, 5).await;
    let cfg = RelayConfig {
        max_attempts: 1,
        ..fast()
    };
    let (r, m, _) = relay(&outbox, &shim.endpoint(), cfg);
    let running = Running::start(r);
    let failed = m.failed.with_label_values(&["orders", "unreachable"]);
    strangler_tests::wait_for("two failed calls", Duration::from_secs(60), || {
        let n = failed.get();
        async move { n >= 2 }
    })
    .await;
    shim.faults.cut_every_call.store(0, SeqCst);
    drained("the outbox to drain", &outbox).await;
    running.stop().await;
    assert!(outbox.dead_letters(10).await.unwrap().is_empty());
    assert!(shim.faults.cut_calls.load(SeqCst) > 0);
    let got = kinesis::read_all(&c, "orders").await;
    let dups = check(&sent, &got);
    assert!(
        dups > 0,
        "the cut calls' records were stored, so some arrive twice"
    );
}

#[tokio::test]
async fn hot_keys_on_an_aggregated_stream_keep_up() {
    // Ten keys, thousands of events: an aggregated record carries many events of a key, in
    // order, so the calls are far fewer than one per key per event.
    let (k, c) = orders_stream().await;
    let store = Store::new(false).await;
    let outbox = store.outbox().await;
    let sent = keyed("hot-", 10, 3_000);
    for chunk in sent.chunks(500) {
        outbox.enqueue_batch(chunk).await.unwrap();
    }
    let cfg = RelayConfig {
        aggregate: vec!["orders".into()],
        ..fast()
    };
    let (mut r, m, _) = relay(&outbox, &k.endpoint(), cfg);
    drain(&mut r, 500).await;
    let got = kinesis::read_all(&c, "orders").await;
    assert_eq!(check(&sent, &got), 0, "duplicates");
    assert_eq!(got.len(), 3_000);
    let calls = m
        .records_per_put
        .with_label_values(&["orders"])
        .get_sample_count();
    assert!(
        calls <= 30,
        "{calls} PutRecords calls for 3,000 events of 10 keys"
    );
}

#[tokio::test]
async fn dead_letters_and_redrive() {
    let (k, c) = orders_stream().await;
    let shim = Shim::start(k.addr).await;
    let store = Store::new(false).await;
    let outbox = store.outbox().await;
    // Over Kinesis's 1 MiB record limit: dead at once, never sent.
    let mut huge = event("orders", "big", 0);
    huge.payload = vec![b'x'; 1024 * 1024 + 1];
    outbox.enqueue(huge).await.unwrap();
    // Rejected every time: dead after max_attempts.
    shim.faults.reject_all_records.store(true, SeqCst);
    let doomed = event("orders", "user-1", 0);
    outbox.enqueue(doomed.clone()).await.unwrap();
    let cfg = RelayConfig {
        max_attempts: 3,
        ..fast()
    };
    let (mut r, m, _) = relay(&outbox, &shim.endpoint(), cfg);
    drain(&mut r, 500).await;
    let dead = outbox.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(
        dead.iter()
            .any(|d| d.reason.contains("over Kinesis's 1 MiB limit"))
    );
    assert!(dead.iter().any(|d| d.id == doomed.id
        && d.attempts == 3
        && d.reason.contains("gave up after 3 tries")));
    assert_eq!(
        m.dead_lettered
            .with_label_values(&["orders", "too_large"])
            .get(),
        1
    );
    // Kinesis healthy again: re-drive the failed one; it arrives with its original id.
    shim.faults.reject_all_records.store(false, SeqCst);
    let seq = dead.iter().find(|d| d.id == doomed.id).unwrap().seq;
    assert_eq!(outbox.redrive(Some(&[seq])).await.unwrap(), 1);
    drain(&mut r, 200).await;
    let got = kinesis::read_all(&c, "orders").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1["id"], doomed.id.as_str());
    assert_eq!(outbox.dead_letters(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn postgres_replicas_relay_one_at_a_time_and_take_over() {
    let (k, c) = orders_stream().await;
    let db = ScratchDb::create().await;
    // Two replicas: separate outbox handles (pools) on one database, a relay each.
    let a = Outbox::connect(&db.url).await.unwrap();
    let b = Outbox::connect(&db.url).await.unwrap();
    let (ra, _, _) = relay(&a, &k.endpoint(), fast());
    let (rb, mb, _) = relay(&b, &k.endpoint(), fast());
    let ta = Running::start(ra);
    tokio::time::sleep(Duration::from_millis(300)).await; // a takes the lock first
    let tb = Running::start(rb);
    let mut sent = enqueue_concurrently(&a, "orders", 6, 10).await;
    drained("replica a to drain", &a).await;
    assert_eq!(
        mb.published.with_label_values(&["orders"]).get(),
        0,
        "the standby relayed too"
    );
    // a stops (its session closes); b takes over and relays what b's clients enqueue.
    ta.stop().await;
    sent.extend(enqueue_keys(&b, "orders", "later", 6, 10).await);
    drained("replica b to take over", &b).await;
    assert_eq!(mb.published.with_label_values(&["orders"]).get(), 60);
    tb.stop().await;
    let got = kinesis::read_all(&c, "orders").await;
    assert_eq!(check(&sent, &got), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reads_wait_for_rows_still_being_added() {
    // Replicas commit side by side, so a lower seq can become visible after a higher one. The
    // relay's read must not step over a row whose transaction is still open.
    use sqlx::Connection;
    let db = ScratchDb::create().await;
    let outbox = Outbox::connect(&db.url).await.unwrap();
    // Another replica's enqueue, still open: it drew its seq first.
    let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut tx = other.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(strangler_store::lease::Lock::ENQUEUE.key())
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO strangler_outbox (id, route, stream, partition_key, payload, created_ms, attempts, next_attempt_ms) \
         VALUES ('slow', 'r', 'orders', 'k', '\\x7b7d', 0, 0, 0)",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    // This replica's enqueue commits after it, with a higher seq.
    outbox.enqueue(event("orders", "k2", 0)).await.unwrap();
    let o = outbox.clone();
    let mut read = tokio::spawn(async move { o.read_after(0, 100).await.unwrap() });
    // The read waits for the open transaction rather than return the later row alone.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut read)
            .await
            .is_err(),
        "the read returned while a lower seq was still being added"
    );
    tx.commit().await.unwrap();
    let rows = read.await.unwrap();
    let ids: Vec<_> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], "slow");
}

#[tokio::test]
async fn postgres_replicas_enqueue_side_by_side_and_lose_nothing() {
    // Two replicas enqueue at once (their commits interleave) while one relays: every event
    // arrives, in key order.
    let (k, c) = orders_stream().await;
    let db = ScratchDb::create().await;
    let a = Outbox::connect(&db.url).await.unwrap();
    let b = Outbox::connect(&db.url).await.unwrap();
    let (ra, _, _) = relay(&a, &k.endpoint(), fast());
    let running = Running::start(ra);
    let (sa, sb) = tokio::join!(
        enqueue_keys(&a, "orders", "a", 20, 15),
        enqueue_keys(&b, "orders", "b", 20, 15)
    );
    drained("the outbox to drain", &a).await;
    running.stop().await;
    let sent: Vec<NewEvent> = sa.into_iter().chain(sb).collect();
    let got = kinesis::read_all(&c, "orders").await;
    assert_eq!(check(&sent, &got), 0);
    assert_eq!(got.len(), 600);
}

#[tokio::test]
async fn pipelined_batches_send_each_event_once() {
    let (k, c) = orders_stream().await;
    let store = Store::new(false).await;
    let outbox = store.outbox().await;
    // 2,400 events over 800 keys: several 500-record calls in flight back to back.
    let sent = keyed("k", 800, 2_400);
    for chunk in sent.chunks(600) {
        outbox.enqueue_batch(chunk).await.unwrap();
    }
    let (mut r, m, _) = relay(&outbox, &k.endpoint(), fast());
    drain(&mut r, 200).await;
    let got = kinesis::read_all(&c, "orders").await;
    assert_eq!(check(&sent, &got), 0, "duplicates sent");
    assert_eq!(got.len(), 2_400);
    assert_eq!(m.published.with_label_values(&["orders"]).get(), 2_400);
}

#[tokio::test]
async fn rows_handed_over_and_rows_read_back_all_arrive_once() {
    // The relay takes what the group writer commits from memory, and reads the store for rows
    // that reached it another way (bulk loads here) between the writer's commits.
    let (k, c) = orders_stream().await;
    let store = Store::new(false).await;
    let outbox = store.outbox().await;
    let (mut r, m, _) = relay(&outbox, &k.endpoint(), fast());
    let mut sent = Vec::new();
    for round in 0..3 {
        sent.extend(enqueue_keys(&outbox, "orders", &format!("w{round}"), 4, 5).await);
        let bulk: Vec<NewEvent> = (0..30u64)
            .map(|i| event("orders", &format!("b{round}-{}", i % 7), i / 7))
            .collect();
        outbox.enqueue_batch(&bulk).await.unwrap();
        sent.extend(bulk);
        sent.extend(enqueue_keys(&outbox, "orders", &format!("x{round}"), 3, 4).await);
        r.pass().await.unwrap();
    }
    drain(&mut r, 200).await;
    let got = kinesis::read_all(&c, "orders").await;
    assert_eq!(check(&sent, &got), 0, "duplicates sent");
    assert_eq!(got.len(), sent.len());
    assert_eq!(
        m.published.with_label_values(&["orders"]).get(),
        sent.len() as u64
    );
}

#[tokio::test]
async fn aggregated_records_arrive_whole_on_their_keys_shards_through_faults() {
    // KPL aggregation: many events per Kinesis record, each aggregate on the shard its events'
    // keys hash to; aggregates throttled whole or failed as one record are retried whole, and
    // every event arrives once, in key order.
    let (k, c) = orders_stream().await;
    let shim = faulty_shim(&k, 3, 2).await;
    let store = Store::new(false).await;
    let outbox = store.outbox().await;
    let sent = keyed("user-", 60, 600);
    outbox.enqueue_batch(&sent).await.unwrap();
    let cfg = RelayConfig {
        aggregate: vec!["orders".into()],
        // Small aggregates, so a call holds several per shard and some fail while others pass.
        aggregate_max_bytes: 4096,
        ..fast()
    };
    let (mut r, m, _) = relay(&outbox, &shim.endpoint(), cfg);
    drain(&mut r, 2_000).await;
    let (got, records) = read_events(&c).await;
    assert_eq!(check(&sent, &got), 0, "events duplicated");
    assert_eq!(got.len(), 600);
    // Each event sits on the shard its own key hashes to.
    let shards = c.list_shards().stream_name("orders").send().await.unwrap();
    let map = strangler_events::aggregate::ShardMap::new(shards.shards().iter().map(|s| {
        let r = s.hash_key_range().unwrap();
        (r.starting_hash_key(), r.ending_hash_key(), s.shard_id())
    }));
    for rec in &records {
        let shard = map.shard_of(strangler_events::aggregate::hash_key(&rec.partition_key));
        assert_eq!(
            map.shard_id(shard.unwrap()),
            Some(rec.shard_id.as_str()),
            "{} on the wrong shard",
            rec.partition_key
        );
    }
    // Aggregated: far fewer Kinesis records than events.
    let kinesis_records: std::collections::HashSet<_> =
        records.iter().map(|r| &r.sequence_number).collect();
    assert!(
        kinesis_records.len() * 5 <= records.len(),
        "{} Kinesis records for {} events",
        kinesis_records.len(),
        records.len()
    );
    let per_record = m.events_per_record.with_label_values(&["orders"]);
    assert!(per_record.get_sample_sum() / per_record.get_sample_count() as f64 > 2.0);
    assert!(shim.faults.failed_records.load(SeqCst) > 0);
    assert!(m.failed.with_label_values(&["orders", "throttled"]).get() > 0);
    assert_eq!(m.published.with_label_values(&["orders"]).get(), 600);
}

#[tokio::test]
async fn an_aggregated_stream_without_a_shard_map_sends_plain_records() {
    // ListShards denied: no shard map, so no aggregates; a call still carries at most 500
    // records, and the rest of an aggregated stream's larger batch goes in the next calls.
    let (k, c) = orders_stream().await;
    let shim = Shim::start(k.addr).await;
    shim.faults.deny_list_shards.store(true, SeqCst);
    let store = Store::new(false).await;
    let outbox = store.outbox().await;
    let sent: Vec<NewEvent> = (0..1_200u64)
        .map(|i| event("orders", &format!("k{i}"), 0))
        .collect();
    outbox.enqueue_batch(&sent).await.unwrap();
    let cfg = RelayConfig {
        aggregate: vec!["orders".into()],
        ..fast()
    };
    let (mut r, m, _) = relay(&outbox, &shim.endpoint(), cfg);
    drain(&mut r, 200).await;
    let (got, records) = read_events(&c).await;
    assert!(records.iter().all(|r| r.sub_sequence_number.is_none()));
    assert_eq!(check(&sent, &got), 0);
    assert_eq!(got.len(), 1_200);
    assert_eq!(m.published.with_label_values(&["orders"]).get(), 1_200);
    let per_put = m.records_per_put.with_label_values(&["orders"]);
    assert!(per_put.get_sample_count() >= 3, "calls of at most 500");
}
