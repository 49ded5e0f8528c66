//! A rollout's gates through the real proxy: the shadow match rate (at a shadow-only 0 % step),
//! the new side's p99 against the monolith's, and a team's webhook; two replicas on PostgreSQL
//! share the kill switch, and the other replica takes over the decisions when the one holding
//! them is killed.

use std::time::{Duration, Instant};

use serde_json::Value;
use strangler_tests::*;

async fn state(p: &Proxy, context: &str) -> Value {
    p.rollout_state(context).await
}

/// Sends requests to `paths` as 20 users each until `done` holds for every context named, or
/// `limit` passes (then panics with the states).
async fn drive(p: &Proxy, paths: &[&str], limit: Duration, done: &[(&str, &str)]) {
    let deadline = Instant::now() + limit;
    loop {
        for path in paths {
            for u in 0..20 {
                let user = format!("user-{u}");
                let _ = get(p.addr, &format!("{path}/{u}"), &[("x-user", &user)]).await;
            }
        }
        let mut all = true;
        let mut states = Vec::new();
        for (context, phase) in done {
            let s = state(p, context).await;
            all &= s["phase"] == *phase;
            states.push(s);
        }
        if all {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not reached within {limit:?}: {states:?}\n{}",
            p.logs()
        );
    }
}

#[tokio::test]
async fn the_match_rate_latency_and_webhook_gates_decide() {
    let store = Store::sqlite();
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let new = Upstream::start("orders", Behaviour::Echo).await;
    let slow = Upstream::start("slow", Behaviour::Slow(Duration::from_millis(60))).await;
    let hook_ok = Upstream::start("hook", Behaviour::Echo).await;
    let hook_no = Upstream::start("hook", Behaviour::Status(503)).await;
    let rules = format!(
        r#"
contexts:
  - name: same
    service: orders
    sticky: {{ header: x-user }}
    rollout: {{ steps: [0, 100], interval: 1s, gates: {{ match_rate: 90% }} }}
  - name: differs
    service: orders
    sticky: {{ header: x-user }}
    rollout: {{ steps: [0, 100], interval: 1s, gates: {{ match_rate: 90% }} }}
  - name: slow
    service: slow
    sticky: {{ header: x-user }}
    rollout: {{ steps: [20, 100], interval: 1s, gates: {{ p99_latency: {{ max_ratio: 2 }} }} }}
  - name: hooked
    service: orders
    sticky: {{ header: x-user }}
    rollout: {{ steps: [20, 100], interval: 1s, gates: {{ webhook: {{ url: "http://{ok}/check" }} }} }}
  - name: refused
    service: orders
    sticky: {{ header: x-user }}
    rollout: {{ steps: [20, 100], interval: 1s, gates: {{ webhook: {{ url: "http://{no}/check", timeout: 1s }} }} }}
routes:
  - name: same
    match: {{ path: {{ prefix: /same }} }}
    target: {{ context: same }}
    shadow: {{ service: orders, compare: {{ ignore: ["$.upstream", "$.headers"] }} }}
  - name: differs
    match: {{ path: {{ prefix: /differs }} }}
    target: {{ context: differs }}
    shadow: {{ service: orders }}
  - name: slow
    match: {{ path: {{ prefix: /slow }} }}
    target: {{ context: slow }}
  - name: hooked
    match: {{ path: {{ prefix: /hooked }} }}
    target: {{ context: hooked }}
  - name: refused
    match: {{ path: {{ prefix: /refused }} }}
    target: {{ context: refused }}
"#,
        ok = hook_ok.addr,
        no = hook_no.addr
    );
    let p = ProxyBuilder::new(legacy.addr)
        .service("orders", UpstreamConfig::new(new.addr))
        .service("slow", UpstreamConfig::new(slow.addr))
        .rules("r.yaml", &rules)
        .store(&store)
        .start()
        .await;
    drive(
        &p,
        &["/same", "/differs", "/slow", "/hooked", "/refused"],
        Duration::from_secs(30),
        &[
            ("same", "completed"),
            ("differs", "rolled_back"),
            ("slow", "rolled_back"),
            ("hooked", "completed"),
            ("refused", "rolled_back"),
        ],
    )
    .await;
    let reason = |s: Value| s["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason(state(&p, "differs").await).contains("match_rate"));
    assert!(reason(state(&p, "slow").await).contains("p99_latency"));
    let refused = reason(state(&p, "refused").await);
    assert!(
        refused.contains("webhook") && refused.contains("503"),
        "{refused}"
    );
    assert!(hook_ok.paths().iter().all(|p| p == "/check") && hook_ok.hits() >= 1);
    // The gates' last figures are exported.
    let ratio = p
        .metric("strangler_rollout_gate{context=\"slow\",gate=\"p99_latency\"}")
        .await;
    assert!(ratio > 2.0, "{ratio}");
    assert_eq!(
        p.metric("strangler_rollout_gate{context=\"differs\",gate=\"match_rate\"}")
            .await,
        0.0
    );
}

fn replica_rules(steps: &str, interval: &str) -> String {
    format!(
        r#"
contexts:
  - name: orders
    service: orders
    sticky: {{ header: x-user }}
    rollout: {{ steps: {steps}, interval: {interval} }}
routes:
  - name: orders
    match: {{ path: {{ prefix: /orders }} }}
    target: {{ context: orders }}
"#
    )
}

async fn replica(legacy: &Upstream, new: &Upstream, rules: &str, store: &Store) -> Proxy {
    ProxyBuilder::new(legacy.addr)
        .service("orders", UpstreamConfig::new(new.addr))
        .rules("r.yaml", rules)
        .store(store)
        .start()
        .await
}

/// Users (of 40) the new service served through `p`.
async fn on_new(p: &Proxy) -> usize {
    let mut n = 0;
    for u in 0..40 {
        let user = format!("user-{u}");
        let r = get(p.addr, &format!("/orders/{u}"), &[("x-user", &user)]).await;
        assert_eq!(r.status, 200);
        n += usize::from(r.upstream() == "orders");
    }
    n
}

#[tokio::test]
async fn postgres_replicas_share_the_kill_switch_and_the_decisions() {
    let store = Store::postgres().await;
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let new = Upstream::start("orders", Behaviour::Echo).await;
    let rules = replica_rules("[10, pause, 50, 100]", "2s");
    let mut a = replica(&legacy, &new, &rules, &store).await;
    let b = replica(&legacy, &new, &rules, &store).await;
    wait_for(
        "the rollout's first step",
        Duration::from_secs(10),
        || async { state(&b, "orders").await["weight_bp"] == 1_000 },
    )
    .await;
    // The kill switch, turned on through A, reaches B within 2 s.
    let on = a.admin_call("POST", "/api/kill-switch", &[]).await;
    assert_eq!(on.status, 200);
    let started = Instant::now();
    wait_for(
        "B sends everyone to the monolith",
        Duration::from_secs(2),
        || async { on_new(&b).await == 0 },
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let off = b.admin_call("DELETE", "/api/kill-switch", &[]).await;
    assert_eq!(off.status, 200);
    wait_for(
        "A serves the new side again",
        Duration::from_secs(2),
        || async { on_new(&a).await > 0 },
    )
    .await;
    // Held at the pause; promoted through A, which then dies (it holds the decisions: it came
    // up first). B goes on from the stored step.
    wait_for("the pause step", Duration::from_secs(10), || async {
        state(&b, "orders").await["phase"] == "paused"
    })
    .await;
    let promoted = a
        .admin_call("POST", "/api/rollouts/orders/promote", &[])
        .await;
    assert_eq!(promoted.status, 200, "{}", promoted.text());
    a.kill9();
    let deadline = Instant::now() + Duration::from_secs(20);
    while state(&b, "orders").await["phase"] != "completed" {
        on_new(&b).await;
        assert!(
            Instant::now() < deadline,
            "{}\n{}",
            state(&b, "orders").await,
            b.logs()
        );
    }
    assert!(
        b.logs().contains("This replica drives the rollouts"),
        "{}",
        b.logs()
    );
    let audit = b.admin_json("/api/audit?context=orders").await;
    let reasons: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "controller")
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert_eq!(
        reasons,
        ["every gate held", "every gate held", "rollout started"],
        "started once, stepped twice"
    );
    wait_for(
        "everyone on the new side through B",
        Duration::from_secs(2),
        || async { on_new(&b).await == 40 },
    )
    .await;
}
