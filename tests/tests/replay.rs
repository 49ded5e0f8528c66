//! Replay through the real proxy and CLI against kinesis-local: archived events
//! (`keep_published`) of a selection go out again with their original ids — exactly the selected
//! range, type and stream — and a replay whose proxy is killed midway resumes from its cursor and
//! moves every event once.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use strangler_tests::kinesis::{self, KinesisLocal};
use strangler_tests::*;

/// The orders route, and a second route publishing `ORDER_CANCELLED` to the same stream.
fn rules() -> String {
    format!(
        r#"{ORDERS_RULES}  - name: orders-cancel
    match: {{ methods: [POST], path: {{ template: "/api/users/{{user}}/cancel" }} }}
    target: {{ service: legacy }}
    publish:
      stream: orders
      type: ORDER_CANCELLED
      source: shop/orders
      partition_key: {{ request.path_param: user }}
      data: {{ request.body: "$" }}
"#
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A time strictly after every event made so far (the store's clock is milliseconds).
async fn boundary() -> i64 {
    let t = now_ms() + 1;
    while now_ms() < t {
        tokio::task::yield_now().await;
    }
    t
}

async fn setup(store: &Store) -> (KinesisLocal, aws_sdk_kinesis::Client, Upstream, Proxy) {
    let k = KinesisLocal::start().await;
    let c = kinesis::client(&k.endpoint());
    kinesis::create_stream(&c, "orders").await;
    kinesis::create_stream(&c, "replayed").await;
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let p = ProxyBuilder::new(legacy.addr)
        .rules("orders.yaml", &rules())
        .kinesis(&k.endpoint())
        .setting("events", json!({ "keep_published": "1h" }))
        .store(store)
        .start()
        .await;
    (k, c, legacy, p)
}

/// Sends `n` requests of a kind; returns their markers.
async fn send(p: &Proxy, what: &str, from: i64, n: i64) -> Vec<i64> {
    let mut markers = Vec::new();
    for i in from..from + n {
        let user = format!("u{}", i % 5);
        let r = post(
            p.addr,
            &format!("/api/users/{user}/{what}"),
            &format!(r#"{{"n":{i}}}"#),
            &[],
        )
        .await;
        assert_eq!(r.status, 200);
        markers.push(i);
    }
    markers
}

/// Waits until the stream holds `want` events; returns them as (id, type, marker).
async fn stream_events(
    c: &aws_sdk_kinesis::Client,
    stream: &str,
    want: usize,
) -> Vec<(String, String, i64)> {
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while got.len() < want {
        assert!(
            std::time::Instant::now() < deadline,
            "{want} events not in {stream} within 30 s: {}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        got = kinesis::read_all(c, stream).await;
    }
    got.into_iter()
        .map(|(_, e)| {
            (
                e["id"].as_str().unwrap().to_string(),
                e["type"].as_str().unwrap().to_string(),
                e["data"]["n"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// `strangler events replay …` against the proxy; its exit status and output.
fn cli(p: &Proxy, args: &[&str]) -> (bool, String) {
    let out = Command::new(binary())
        .args(["events", "replay", "--config"])
        .arg(&p.config)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn outbox_empty(p: &Proxy) -> bool {
    let v = p.admin_json("/api/outbox").await;
    v["streams"]
        .as_array()
        .is_none_or(|s| s.iter().all(|d| d["depth"] == 0))
}

#[tokio::test]
async fn a_replay_republishes_exactly_the_selected_range_and_type_with_original_ids_sqlite() {
    selected_range(&Store::sqlite()).await;
}

#[tokio::test]
async fn a_replay_republishes_exactly_the_selected_range_and_type_with_original_ids_postgres() {
    selected_range(&Store::postgres().await).await;
}

async fn selected_range(store: &Store) {
    let (_k, c, _legacy, p) = setup(store).await;
    send(&p, "orders", 0, 10).await;
    let since = boundary().await;
    let created = send(&p, "orders", 100, 12).await;
    send(&p, "cancel", 200, 5).await;
    let until = boundary().await;
    send(&p, "orders", 300, 10).await;
    let original = stream_events(&c, "orders", 37).await;
    assert_eq!(original.len(), 37);
    wait_for(
        "the outbox drained (every event archived)",
        Duration::from_secs(20),
        || outbox_empty(&p),
    )
    .await;

    let (since, until) = (since.to_string(), until.to_string());
    let selection = [
        "--stream",
        "orders",
        "--since",
        &since,
        "--until",
        &until,
        "--type",
        "ORDER_CREATED",
        "--to-stream",
        "replayed",
    ];
    let (ok, out) = cli(&p, &[&selection[..], &["--dry-run"]].concat());
    assert!(ok, "{out}");
    assert!(out.contains("12 events would be replayed"), "{out}");
    let (ok, out) = cli(&p, &selection);
    assert!(ok, "{out}");
    assert!(out.contains("done: 12 events"), "{out}");

    let replayed = stream_events(&c, "replayed", 12).await;
    let markers: BTreeSet<i64> = replayed.iter().map(|e| e.2).collect();
    assert_eq!(markers, created.iter().copied().collect(), "{replayed:?}");
    assert_eq!(replayed.len(), 12, "{replayed:?}");
    // The original ids, unchanged.
    for (id, ty, n) in &replayed {
        assert_eq!(ty, "ORDER_CREATED");
        assert!(
            original.iter().any(|o| &o.0 == id && o.2 == *n),
            "replayed event {n} has a new id {id}"
        );
    }
    // A job that selects nothing says so; a route selects only its own events.
    let (ok, out) = cli(
        &p,
        &["--route", "orders-cancel", "--since", "0", "--dry-run"],
    );
    assert!(ok && out.contains("5 events would be replayed"), "{out}");
    // Replayed for real, the copies are archived too; a second replay of the window takes the
    // five originals again, not ten, unless it asks for the copies.
    let (ok, out) = cli(&p, &["--route", "orders-cancel", "--since", "0"]);
    assert!(ok && out.contains("done: 5 events"), "{out}");
    stream_events(&c, "orders", 42).await;
    wait_for(
        "the replayed copies archived",
        Duration::from_secs(20),
        || outbox_empty(&p),
    )
    .await;
    let (ok, out) = cli(
        &p,
        &["--route", "orders-cancel", "--since", "0", "--dry-run"],
    );
    assert!(ok && out.contains("5 events would be replayed"), "{out}");
    let (ok, out) = cli(
        &p,
        &[
            "--route",
            "orders-cancel",
            "--since",
            "0",
            "--include-replayed",
            "--dry-run",
        ],
    );
    assert!(ok && out.contains("10 events would be replayed"), "{out}");
    let (ok, out) = cli(&p, &["--stream", "orders", "--since", "yesterday"]);
    assert!(!ok && out.contains("is not a time"), "{out}");
}

#[tokio::test]
async fn a_replay_killed_midway_resumes_and_moves_every_event_once() {
    let store = Store::sqlite();
    let (_k, c, _legacy, mut p) = setup(&store).await;
    let since = boundary().await.to_string();
    let created = send(&p, "orders", 0, 300).await;
    stream_events(&c, "orders", 300).await;
    wait_for(
        "the outbox drained (every event archived)",
        Duration::from_secs(20),
        || outbox_empty(&p),
    )
    .await;

    let (ok, out) = cli(
        &p,
        &[
            "--stream",
            "orders",
            "--since",
            &since,
            "--to-stream",
            "replayed",
            "--rate",
            "100",
            "--detach",
        ],
    );
    assert!(ok, "{out}");
    let id: i64 = out
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no job id in: {out}"));
    let job = |p: &Proxy| {
        let path = format!("/api/replays/{id}");
        let admin = p.admin;
        async move { get(admin, &path, &[]).await.json() }
    };
    wait_for("the replay halfway", Duration::from_secs(20), || {
        let j = job(&p);
        async move { j.await["done"].as_i64().unwrap_or(0) >= 100 }
    })
    .await;
    p.kill9();
    p.restart().await;
    // Its runner died with the proxy: after 10 s without a step the job reads as interrupted.
    wait_for(
        "the job seen as interrupted",
        Duration::from_secs(20),
        || {
            let j = job(&p);
            async move { j.await["state"] == "interrupted" }
        },
    )
    .await;
    let stopped_at: Value = job(&p).await;
    assert!(stopped_at["done"].as_i64().unwrap() < 300, "{stopped_at}");
    let (ok, out) = cli(&p, &["--resume", &id.to_string()]);
    assert!(ok, "{out}");
    let end = job(&p).await;
    assert_eq!(
        (end["state"].as_str(), end["done"].as_i64()),
        (Some("done"), Some(300)),
        "{end}"
    );

    // Every selected event in the target stream (the relay may send one twice around the
    // kill: at least once, same id, so what is waited for is every marker, not 300 records),
    // none missing, none from outside the selection.
    let want: BTreeSet<i64> = created.iter().copied().collect();
    wait_for(
        "every selected event in the target stream",
        Duration::from_secs(30),
        || {
            let (c, want) = (&c, &want);
            async move {
                let got: BTreeSet<i64> = kinesis::read_all(c, "replayed")
                    .await
                    .iter()
                    .filter_map(|(_, e)| e["data"]["n"].as_i64())
                    .collect();
                want.is_subset(&got)
            }
        },
    )
    .await;
    let replayed = stream_events(&c, "replayed", 300).await;
    let markers: BTreeSet<i64> = replayed.iter().map(|e| e.2).collect();
    assert_eq!(markers, want);
    let ids: BTreeSet<&str> = replayed.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(ids.len(), 300);
}
