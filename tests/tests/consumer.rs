//! The consumer side (strangler-consumer) against kinesis-local and the real proxy: every event
//! a client got a 2xx for is applied once into the consumer's database, across `kill -9` of the
//! consumer and of the proxy, on SQLite and PostgreSQL, polling and through enhanced fan-out, in
//! per-key order; a shard split while it reads loses and duplicates nothing (children after
//! parents, KPL aggregates taken apart).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::AnyPool;
use strangler_tests::consumers::*;
use strangler_tests::*;

async fn survives_kill9(postgres: bool, fan_out: bool) {
    let store = Store::new(postgres).await;
    let (k, c, _legacy, mut p) = servers(|b| b.store(&store)).await;
    let db = ConsumerDb::new(postgres).await;
    let mut consumer = count_consumer(&db, &k, fan_out);
    let pool = db.pool().await;
    let load = Load::start(p.addr, 4);
    for round in 0..3 {
        // Kill each while it is busy: after it has applied (or acked) more than before.
        applied_over(&pool, applied(&pool).await.len() + 20).await;
        consumer.kill9();
        if round == 1 {
            let acked_before = load.acked().await;
            wait_for("more requests acked", Duration::from_secs(10), || async {
                load.acked().await > acked_before + 20
            })
            .await;
            p.kill9();
            p.restart().await;
        }
        consumer.restart();
    }
    let acked = load.stop().await;
    assert!(acked.len() > 100, "only {} requests acked", acked.len());
    every_acked_applied_once(&pool, &acked, &consumer).await;
    if fan_out {
        let logs = consumer.logs();
        assert!(
            logs.contains("enhanced_fan_out=true"),
            "the consumer polled:\n{logs}"
        );
        let arn = c
            .describe_stream_summary()
            .stream_name("orders")
            .send()
            .await
            .unwrap()
            .stream_description_summary
            .unwrap()
            .stream_arn;
        let registered = c
            .list_stream_consumers()
            .stream_arn(arn)
            .send()
            .await
            .unwrap();
        let names: Vec<&str> = registered
            .consumers()
            .iter()
            .map(|c| c.consumer_name())
            .collect();
        assert_eq!(names, ["count"]);
    }
}

#[tokio::test]
async fn every_acked_event_is_applied_once_across_kill9_sqlite() {
    survives_kill9(false, false).await;
}

/// The same through enhanced fan-out (SubscribeToShard), which kinesis-local serves.
#[tokio::test]
async fn enhanced_fan_out_applies_every_acked_event_once_across_kill9() {
    survives_kill9(false, true).await;
}

#[tokio::test]
async fn every_acked_event_is_applied_once_across_kill9_postgres() {
    survives_kill9(true, false).await;
}

/// Splits `parent` in two halves; its children's ids once they are listed.
async fn split(c: &aws_sdk_kinesis::Client, parent: &str) -> Vec<String> {
    let shards = c.list_shards().stream_name("orders").send().await.unwrap();
    let shard = shards
        .shards()
        .iter()
        .find(|s| s.shard_id() == parent)
        .expect("the shard to split is listed");
    let range = shard.hash_key_range().unwrap();
    let (lo, hi): (u128, u128) = (
        range.starting_hash_key().parse().unwrap(),
        range.ending_hash_key().parse().unwrap(),
    );
    c.split_shard()
        .stream_name("orders")
        .shard_to_split(parent)
        .new_starting_hash_key((lo + (hi - lo) / 2).to_string())
        .send()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = c.list_shards().stream_name("orders").send().await.unwrap();
        let ids: Vec<String> = s
            .shards()
            .iter()
            .filter(|s| s.parent_shard_id() == Some(parent))
            .map(|s| s.shard_id().to_string())
            .collect();
        let active = c
            .describe_stream_summary()
            .stream_name("orders")
            .send()
            .await
            .unwrap()
            .stream_description_summary()
            .is_some_and(|d| d.stream_status().as_str() == "ACTIVE");
        // Active again: the next split (or reshard) may follow.
        if ids.len() == 2 && active {
            return ids;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no children (or the stream not active) 20 s after the split"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A shard split while events flow (KPL-aggregated): the parent is read to its end before its
/// children, and nothing is lost or applied twice.
#[tokio::test]
async fn a_shard_split_while_reading_loses_and_duplicates_nothing() {
    let (k, c, _legacy, p) =
        servers(|b| b.setting("events", serde_json::json!({ "aggregate": ["orders"] }))).await;
    let db = ConsumerDb::new(false).await;
    let consumer = count_consumer(&db, &k, false);
    let pool = db.pool().await;
    let load = Load::start(p.addr, 8);
    applied_over(&pool, 50).await;

    let shards = c.list_shards().stream_name("orders").send().await.unwrap();
    let children = split(&c, shards.shards()[0].shard_id()).await;
    // Events land in the children now; the consumer must get to them.
    wait_for(
        "events applied from a child shard",
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            let children = children.clone();
            async move { applied(&pool).await.iter().any(|r| children.contains(&r.2)) }
        },
    )
    .await;
    let acked = load.stop().await;
    every_acked_applied_once(&pool, &acked, &consumer).await;
    assert!(
        consumer.logs().contains("Shard read to its end"),
        "the parent was not read to its end:\n{}",
        consumer.logs()
    );
}

/// Two instances of one consumer name on one PostgreSQL database, started together: they share
/// the shards through the lease table, and every event is applied once.
#[tokio::test]
async fn two_instances_of_one_consumer_still_apply_each_event_once() {
    let (k, _c, _legacy, p) = servers(|b| b).await;
    let db = ConsumerDb::new(true).await;
    let first = count_consumer(&db, &k, false);
    let _second = count_consumer(&db, &k, false);
    let pool = db.pool().await;
    let load = Load::start(p.addr, 4);
    applied_over(&pool, 200).await;
    let acked = load.stop().await;
    every_acked_applied_once(&pool, &acked, &first).await;
}

/// Who holds each of `shards` in the lease table (`None`: nobody).
async fn holders(pool: &AnyPool, shards: &[String]) -> BTreeMap<String, Option<String>> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT shard_id, owner FROM strangler_consumer_leases WHERE consumer = 'count'",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    shards
        .iter()
        .map(|s| {
            let owner = rows.iter().find(|r| &r.0 == s).and_then(|r| r.1.clone());
            (s.clone(), owner)
        })
        .collect()
}

/// Three instances of one consumer name on PostgreSQL share four shards through the lease
/// table, each holding some; `kill -9` of one moves its shards to the other two within a
/// bounded time (its leases stop being renewed: 2 s failover here), a split while that happens
/// is followed, and every acked event is applied once, each user's in order.
#[tokio::test]
async fn instances_share_the_shards_and_take_over_a_killed_ones() {
    let (k, c, _legacy, p) = servers(|b| b).await;
    // Four open shards: both of the stream's two split.
    let first = c.list_shards().stream_name("orders").send().await.unwrap();
    let mut open = Vec::new();
    for s in first.shards() {
        open.extend(split(&c, s.shard_id()).await);
    }
    assert_eq!(open.len(), 4);
    let db = ConsumerDb::new(true).await;
    let a = count_instance(&db, &k, false, Some("a"), &[]);
    let mut b = count_instance(&db, &k, false, Some("b"), &[]);
    let _c = count_instance(&db, &k, false, Some("c"), &[]);
    let pool = db.pool().await;
    let load = Load::start(p.addr, 8);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let h = holders(&pool, &open).await;
        let per = |i: &str| h.values().filter(|o| o.as_deref() == Some(i)).count();
        if h.values().all(Option::is_some)
            && ["a", "b", "c"].iter().all(|i| (1..=2).contains(&per(i)))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after 30 s the open shards are held so: {h:?}; a's log:\n{}",
            a.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    applied_over(&pool, 100).await;
    let of_b: Vec<String> = holders(&pool, &open)
        .await
        .into_iter()
        .filter(|(_, o)| o.as_deref() == Some("b"))
        .map(|(s, _)| s)
        .collect();
    b.kill9();
    let killed = std::time::Instant::now();
    // A split while b's shards move: one of a's or c's shards, or b's own.
    let children = split(&c, &open[0]).await;
    wait_for(
        "the killed instance's shards taken over",
        Duration::from_secs(20),
        || {
            let (pool, of_b) = (pool.clone(), of_b.clone());
            async move {
                let h = holders(&pool, &of_b).await;
                h.values().all(|o| matches!(o.as_deref(), Some("a" | "c")))
            }
        },
    )
    .await;
    let moved_in = killed.elapsed();
    wait_for(
        "events applied from the split's children",
        Duration::from_secs(30),
        || {
            let (pool, children) = (pool.clone(), children.clone());
            async move { applied(&pool).await.iter().any(|r| children.contains(&r.2)) }
        },
    )
    .await;
    let acked = load.stop().await;
    every_acked_applied_once(&pool, &acked, &a).await;
    assert!(
        moved_in < Duration::from_secs(20),
        "b's shards moved after {moved_in:?}"
    );
}

/// A lease taken from under an instance fences its checkpoints: once another owner (here the
/// test, renewing the lease as `intruder`) holds a shard, the instance's next batch of it is
/// refused at its checkpoint and rolled back, and nothing more of that shard is applied while
/// its other shard goes on. Lease rounds are 30 s apart here and the lease is taken just after
/// one, so it is the fence in the batch's transaction that stops the reader, not the next round
/// noticing the lease moved. Handed
/// back, the shard is taken again and every acked event ends up applied once, in order.
#[tokio::test]
async fn a_checkpoint_is_refused_once_the_lease_moved() {
    let (k, c, _legacy, p) = servers(|b| b).await;
    let db = ConsumerDb::new(true).await;
    // Lease rounds every 30 s (a third of the failover time, and the shard sync).
    let slow_rounds = ["--failover", "90000", "--shard-sync", "30000"];
    let a = count_instance(&db, &k, false, Some("a"), &slow_rounds);
    let pool = db.pool().await;
    let load = Load::start(p.addr, 4);
    applied_over(&pool, 50).await;
    let shards: Vec<String> = c
        .list_shards()
        .stream_name("orders")
        .send()
        .await
        .unwrap()
        .shards()
        .iter()
        .map(|s| s.shard_id().to_string())
        .collect();
    let taken = shards[0].clone();
    assert_eq!(holders(&pool, &shards).await[&taken].as_deref(), Some("a"));
    // Just after a lease round (a's renewal bumps its leases' counters), so the next is 30 s
    // away: the intruder takes the lease and keeps it live (as a renewing owner would).
    let counter = |pool: AnyPool, shard: String| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT counter FROM strangler_consumer_leases WHERE consumer = 'count' AND shard_id = $1",
        )
        .bind(shard)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let seen = counter(pool.clone(), shards[1].clone()).await;
    wait_for("a lease round", Duration::from_secs(40), || {
        let next = counter(pool.clone(), shards[1].clone());
        async move { next.await != seen }
    })
    .await;
    let renew = "UPDATE strangler_consumer_leases SET owner = 'intruder', counter = counter + 1
                 WHERE consumer = 'count' AND shard_id = $1";
    sqlx::query(renew)
        .bind(&taken)
        .execute(&pool)
        .await
        .unwrap();
    let stop_renewing = Arc::new(AtomicBool::new(false));
    let renewing = {
        let (pool, taken, stop) = (pool.clone(), taken.clone(), Arc::clone(&stop_renewing));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                sqlx::query(renew)
                    .bind(&taken)
                    .execute(&pool)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    wait_for(
        "the instance's batch refused at its checkpoint",
        Duration::from_secs(10),
        || async { a.logs().contains("Shard lease lost") },
    )
    .await;
    let of_taken =
        |rows: &[(i64, String, String, i64)]| rows.iter().filter(|r| r.2 == taken).count();
    let before = applied(&pool).await;
    let stopped_at = of_taken(&before);
    // The other shard goes on; the lost one gets nothing more.
    applied_over(&pool, before.len() + 40).await;
    assert_eq!(
        of_taken(&applied(&pool).await),
        stopped_at,
        "events of {taken} applied after its lease moved"
    );
    // Handed back: the instance takes it again and catches up.
    stop_renewing.store(true, Ordering::Relaxed);
    renewing.await.unwrap();
    sqlx::query(
        "UPDATE strangler_consumer_leases SET owner = NULL, counter = counter + 1
         WHERE consumer = 'count' AND shard_id = $1",
    )
    .bind(&taken)
    .execute(&pool)
    .await
    .unwrap();
    let acked = load.stop().await;
    every_acked_applied_once(&pool, &acked, &a).await;
    assert_eq!(holders(&pool, &shards).await[&taken].as_deref(), Some("a"));
}
