//! Rollbacks as fast as the evidence, and no step without it: the gates are checked every few
//! seconds (`check_every`) whatever the step's interval, so a service turning to 5xx at a
//! ten-minute step is rolled back within seconds; a step with no evidence (no request, no
//! comparison) is never left; and a completed context stays guarded, rolled back when the new
//! service fails at 100 %.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use serde_json::Value;
use strangler_tests::*;

fn rules(steps: &str, interval: &str, gates: &str) -> String {
    orders_context(&format!(
        "{{ steps: {steps}, interval: {interval}, min_requests: 5{gates} }}"
    ))
}

const ERROR_GATE: &str = ", gates: { error_rate: { max_increase: 1pp } }";

async fn start(rules: &str) -> (Upstream, Upstream, Proxy) {
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let new = Upstream::start("orders", Behaviour::Echo).await;
    let p = ProxyBuilder::new(legacy.addr)
        .service("orders", UpstreamConfig::new(new.addr))
        .rules("r.yaml", rules)
        .store(&Store::sqlite())
        .start()
        .await;
    (legacy, new, p)
}

/// 40 users reading their orders until `stop`, a round every 50 ms.
fn traffic(p: &Proxy) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let addr = p.addr;
    let flag = Arc::clone(&stop);
    let task = tokio::spawn(async move {
        while !flag.load(SeqCst) {
            for u in 0..40 {
                let user = format!("user-{u}");
                get(addr, &format!("/orders/{u}"), &[("x-user", &user)]).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (stop, task)
}

async fn state(p: &Proxy) -> Value {
    p.rollout_state("orders").await
}

async fn wait_state(p: &Proxy, what: &str, limit: Duration, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let s = state(p).await;
        if f(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: still {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_5xx_storm_at_a_ten_minute_step_is_rolled_back_within_15_s() {
    let (_legacy, new, p) = start(&rules("[10, 50, 100]", "10m", ERROR_GATE)).await;
    let (stop, task) = traffic(&p);
    wait_state(&p, "the first step", Duration::from_secs(10), |s| {
        s["weight_bp"] == 1_000
    })
    .await;
    new.switch(Behaviour::Status(500));
    let started = Instant::now();
    let s = wait_state(&p, "rolled back", Duration::from_secs(15), |s| {
        s["phase"] == "rolled_back"
    })
    .await;
    let took = started.elapsed();
    stop.store(true, SeqCst);
    task.await.unwrap();
    assert_eq!(s["weight_bp"], 0);
    assert!(s["reason"].as_str().unwrap().contains("error_rate"), "{s}");
    eprintln!("rolled back {took:?} after the service turned to 500s");
}

#[tokio::test]
async fn a_step_with_no_evidence_is_never_left() {
    // A 0 % first step and nobody asking: no request served, nothing compared.
    let (_legacy, _new, p) = start(&rules("[0, 10, 100]", "1s", "")).await;
    wait_state(&p, "the first step", Duration::from_secs(10), |s| {
        s["phase"] == "progressing"
    })
    .await;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let s = state(&p).await;
        assert_eq!(s["weight_bp"], 0, "left a step on no evidence: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The controller says why it holds at its next check (every 3 s; later on a loaded
    // machine), still at 0 %.
    wait_state(&p, "the no-evidence reason", Duration::from_secs(15), |s| {
        assert_eq!(s["weight_bp"], 0, "left a step on no evidence: {s}");
        s["reason"]
            .as_str()
            .unwrap_or("")
            .contains("0 of 5 shadow comparisons")
    })
    .await;
}

#[tokio::test]
async fn a_completed_context_stays_guarded_and_rolls_back_when_the_service_fails() {
    let (_legacy, new, p) = start(&rules("[50, 100]", "1s", ERROR_GATE)).await;
    let (stop, task) = traffic(&p);
    let s = wait_state(&p, "completed", Duration::from_secs(20), |s| {
        s["phase"] == "completed" && s["reason"].as_str().unwrap_or("").contains("guarded")
    })
    .await;
    assert!(
        s["reason"].as_str().unwrap().contains("every gate held"),
        "{s}"
    );
    new.switch(Behaviour::Status(500));
    let s = wait_state(&p, "rolled back from 100 %", Duration::from_secs(15), |s| {
        s["phase"] == "rolled_back"
    })
    .await;
    stop.store(true, SeqCst);
    task.await.unwrap();
    assert_eq!(s["weight_bp"], 0);
    let audit = p.admin_json("/api/audit?context=orders").await;
    let last = &audit["entries"][0];
    assert_eq!(last["from_weight_bp"], 10_000, "{last}");
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .starts_with("guard: error_rate failed"),
        "{last}"
    );
    // Status never says a gate held when it did not.
    assert!(!s["reason"].as_str().unwrap().contains("held"), "{s}");
}
