//! The kill switch freezes every rollout: while it is on, no command that would send more
//! traffic to a new service applies (409), the controller moves nothing even when a step is
//! due, turning it off never raises a context above its weight when it went on, and the audit
//! log says what it changed, once.

use std::time::{Duration, Instant};

use serde_json::Value;
use strangler_tests::*;

/// A context over `/orders` with no gates: only the interval holds a step.
fn rules(interval: &str) -> String {
    orders_context(&format!("{{ steps: [10, 50, 100], interval: {interval} }}"))
}

async fn weight(p: &Proxy) -> u64 {
    p.rollout_state("orders").await["weight_bp"]
        .as_u64()
        .unwrap_or(0)
}

async fn command(p: &Proxy, method: &str, path: &str, body: &str) -> Reply {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    request(p.admin, req).await.unwrap()
}

async fn audit(p: &Proxy) -> Vec<Value> {
    p.admin_json("/api/audit?context=orders").await["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn the_kill_switch_freezes_rollouts_and_records_what_it_changed() {
    let store = Store::sqlite();
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let new = Upstream::start("orders", Behaviour::Echo).await;
    let p = ProxyBuilder::new(legacy.addr)
        .service("orders", UpstreamConfig::new(new.addr))
        .rules("r.yaml", &rules("1h"))
        .store(&store)
        .start()
        .await;
    wait_for("the first step", Duration::from_secs(10), || async {
        weight(&p).await == 1_000
    })
    .await;

    let on = command(&p, "POST", "/api/kill-switch", "").await;
    assert_eq!(on.json()["changed"], true, "{}", on.text());
    let again = command(&p, "POST", "/api/kill-switch", "").await;
    assert_eq!(again.json()["changed"], false, "{}", again.text());

    // Commands that would move traffic to the new service: refused, saying why.
    for (path, body) in [
        ("/api/rollouts/orders/promote", ""),
        ("/api/rollouts/orders/weight", r#"{"weight": 50}"#),
    ] {
        let r = command(&p, "POST", path, body).await;
        assert_eq!(r.status, 409, "{path}: {}", r.text());
        assert!(r.text().contains("kill switch is on"), "{}", r.text());
    }
    // Pausing still applies (it moves nothing), and resuming is then refused.
    assert_eq!(
        command(&p, "POST", "/api/rollouts/orders/pause", "")
            .await
            .status,
        200
    );
    let r = command(&p, "POST", "/api/rollouts/orders/resume", "").await;
    assert_eq!(r.status, 409, "{}", r.text());

    // A due step under the switch: the controller moves nothing. (Without the switch the
    // 1 s interval would step 10 → 50 → 100 within these 4 s; see the end.)
    assert_eq!(
        command(&p, "DELETE", "/api/kill-switch", "").await.status,
        200
    );
    assert_eq!(
        command(&p, "POST", "/api/rollouts/orders/resume", "")
            .await
            .status,
        200
    );
    assert_eq!(
        command(&p, "POST", "/api/kill-switch", "").await.status,
        200
    );
    let before = weight(&p).await;
    let generation = p.generation().await;
    p.write_rules("r.yaml", &rules("1s"));
    wait_for(
        "the faster plan loaded",
        Duration::from_secs(10),
        || async { p.generation().await > generation },
    )
    .await;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(
            weight(&p).await,
            before,
            "a rollout moved under the kill switch"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The audit log: what the switch took away, each time it changed, once.
    let entries = audit(&p).await;
    let ons: Vec<_> = entries
        .iter()
        .filter(|e| {
            e["reason"]
                .as_str()
                .unwrap_or("")
                .starts_with("kill switch on")
        })
        .collect();
    assert_eq!(ons.len(), 2, "{entries:#?}");
    assert_eq!(ons[0]["from_weight_bp"], before);
    assert_eq!(ons[0]["to_weight_bp"], 0);

    // Off: back to where it was, no higher; then the rollout goes on.
    let off = command(&p, "DELETE", "/api/kill-switch", "").await;
    assert_eq!(off.json()["changed"], true);
    assert!(weight(&p).await <= before);
    let entries = audit(&p).await;
    assert!(
        entries[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("kill switch off")
            && entries[0]["to_weight_bp"] == before,
        "{:#?}",
        entries[0]
    );
    // (A step is left on evidence only: users read their orders.)
    wait_for(
        "the rollout moving again",
        Duration::from_secs(15),
        || async {
            for u in 0..20 {
                let user = format!("user-{u}");
                get(p.addr, "/orders/1", &[("x-user", &user)]).await;
            }
            weight(&p).await > before
        },
    )
    .await;
}
