//! Gated rollouts through the real proxy, real upstreams whose answers change at run time, and
//! the store: a healthy context steps to 100 % with users only ever moving to the new side; a
//! failing one rolls back on its own and stays back; people's commands (CLI and admin API), the
//! kill switch, the admin token; a restart resumes at the stored step.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use strangler_tests::*;

/// A context over `/orders`, sticky by `x-user`, stepping every `interval` through `steps`.
fn rules(steps: &str, interval: &str) -> String {
    format!(
        r#"
contexts:
  - name: orders
    service: orders
    sticky: {{ header: x-user }}
    rollout:
      steps: {steps}
      interval: {interval}
      min_requests: 5
      gates:
        error_rate: {{ max_increase: 1pp }}
      failure_limit: 2
routes:
  - name: orders-read
    match: {{ methods: [GET], path: {{ prefix: /orders }} }}
    target: {{ context: orders }}
  - name: orders-write
    match: {{ methods: [POST], path: {{ prefix: /orders }} }}
    target: {{ context: orders }}
"#
    )
}

async fn start(rules: &str, store: &Store) -> (Upstream, Upstream, Proxy) {
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let new = Upstream::start("orders", Behaviour::Echo).await;
    let p = ProxyBuilder::new(legacy.addr)
        .service("orders", UpstreamConfig::new(new.addr))
        .rules("r.yaml", rules)
        .store(store)
        .start()
        .await;
    (legacy, new, p)
}

/// The context's state as `GET /api/rollouts` shows it.
async fn state(p: &Proxy) -> Value {
    p.rollout_state("orders").await
}

async fn wait_state(p: &Proxy, what: &str, limit: Duration, f: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        last = state(p).await;
        if f(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{what} not reached within {limit:?}; last state {last}\n{}",
        p.logs()
    );
}

/// One request per user: the users the new service served. Panics on a failed request that is
/// not the new service's own 500.
async fn round(p: &Proxy, users: usize) -> BTreeSet<usize> {
    let mut on_new = BTreeSet::new();
    for u in 0..users {
        let user = format!("user-{u}");
        let r = get(p.addr, &format!("/orders/{u}"), &[("x-user", &user)]).await;
        // No request fails because a weight changed under it: every answer is a 200, or the
        // new service's own 500 (when a test makes it fail).
        assert!(
            r.status == 200 || (r.status == 500 && r.upstream() == "orders"),
            "{u}: {} from {}",
            r.status,
            r.upstream()
        );
        if r.upstream() == "orders" {
            on_new.insert(u);
        }
    }
    on_new
}

#[tokio::test]
async fn a_healthy_context_steps_to_completion_moving_users_one_way() {
    let store = Store::sqlite();
    let (_legacy, _new, p) = start(&rules("[10, 50, 100]", "1s"), &store).await;
    // Traffic while it steps: per weight in force on the replica before and after a round,
    // who was on the new side.
    let in_force = || async {
        let v = p.admin_json("/api/rollouts").await;
        (v["contexts"][0]["weight"].as_f64().unwrap() * 100.0).round() as u64
    };
    let mut seen: BTreeMap<u64, BTreeSet<usize>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let before = in_force().await;
        let on_new = round(&p, 60).await;
        if in_force().await == before {
            seen.entry(before).or_default().extend(on_new);
        }
        if before == 10_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not completed: {}\n{}",
            state(&p).await,
            p.logs()
        );
    }
    assert_eq!(state(&p).await["phase"], "completed");
    assert_eq!(
        round(&p, 60).await.len(),
        60,
        "everyone on the new service at 100 %"
    );
    // Raising the weight only moved users legacy → new.
    let sets: Vec<(&u64, &BTreeSet<usize>)> = seen.iter().collect();
    assert!(sets.len() >= 2, "weights seen: {:?}", seen.keys());
    for pair in sets.windows(2) {
        let ((w1, a), (w2, b)) = (pair[0], pair[1]);
        assert!(
            a.is_subset(b),
            "users on the new side at {w1} bp are not all there at {w2} bp"
        );
    }
    let audit = p.admin_json("/api/audit?context=orders").await;
    let reasons: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert_eq!(reasons.last(), Some(&"rollout started"), "{reasons:?}");
    assert_eq!(
        reasons.iter().filter(|r| **r == "every gate held").count(),
        2,
        "{reasons:?}"
    );
    assert_eq!(
        p.metric("strangler_rollout_weight{context=\"orders\"}")
            .await,
        100.0
    );
}

#[tokio::test]
async fn a_failing_service_is_rolled_back_and_stays_back() {
    rolled_back(Store::sqlite()).await;
}

#[tokio::test]
async fn postgres_a_failing_service_is_rolled_back_and_stays_back() {
    rolled_back(Store::postgres().await).await;
}

async fn rolled_back(store: Store) {
    let (_legacy, new, p) = start(&rules("[20, 50, 100]", "1s"), &store).await;
    let load = async {
        loop {
            round(&p, 40).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let check = async {
        wait_state(&p, "step 2", Duration::from_secs(20), |s| {
            s["weight_bp"] == 5_000
        })
        .await;
        // The new service starts failing at step 2.
        new.switch(Behaviour::Status(500));
        let failing = Instant::now();
        let s = wait_state(&p, "the rollback", Duration::from_secs(10), |s| {
            s["phase"] == "rolled_back"
        })
        .await;
        // Within interval × failure_limit + 2 s.
        assert!(
            failing.elapsed() < Duration::from_secs(4),
            "{:?}",
            failing.elapsed()
        );
        assert_eq!(s["weight_bp"], 0);
        assert!(s["reason"].as_str().unwrap().contains("error_rate"), "{s}");
        s
    };
    let s = tokio::select! {
        s = check => s,
        () = load => unreachable!(),
    };
    // Everyone is back on the monolith within 2 s, and stays there.
    wait_for(
        "everyone back on the monolith",
        Duration::from_secs(2),
        || async { round(&p, 40).await.is_empty() },
    )
    .await;
    new.switch(Behaviour::Echo);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = state(&p).await;
    assert_eq!(
        (later["phase"].clone(), later["generation"].clone()),
        (s["phase"].clone(), s["generation"].clone())
    );
    let audit = p.admin_json("/api/audit?context=orders&limit=1").await;
    let last = &audit["entries"][0];
    assert_eq!(
        (last["actor"].as_str(), last["to_weight_bp"].as_i64()),
        (Some("controller"), Some(0))
    );
    assert!(last["gates"][0]["gate"] == "error_rate", "{last}");
}

#[tokio::test]
async fn commands_the_kill_switch_and_a_restart() {
    let store = Store::sqlite();
    // An hour per step: only people move it here.
    let (_legacy, _new, mut p) = start(&rules("[10, pause, 50, 100]", "1h"), &store).await;
    wait_state(&p, "the first step", Duration::from_secs(10), |s| {
        s["weight_bp"] == 1_000
    })
    .await;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(binary())
            .args(args)
            .arg("--config")
            .arg(&p.config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    // Each check keeps what it measured: the gate against its threshold, and the requests the
    // new service served at this step against min_requests.
    wait_for(
        "10 % in force on the replica",
        Duration::from_secs(10),
        || async { p.admin_json("/api/rollouts").await["contexts"][0]["weight"] == 10.0 },
    )
    .await;
    let served = round(&p, 100).await.len() as u64;
    assert!(served > 0, "nobody of 100 users on the new side at 10 %");
    let s = wait_state(
        &p,
        "a check that counted the step's requests",
        Duration::from_secs(15),
        |s| {
            let c = &s["last_check"];
            c["evidence"]["seen"].as_u64() == Some(served) && c["gates"][0]["passed"] == true
        },
    )
    .await;
    let gate = &s["last_check"]["gates"][0];
    assert_eq!(
        (&gate["gate"], &gate["value"], &gate["threshold"]),
        (
            &Value::from("error_rate"),
            &Value::from(0.0),
            &Value::from(0.01)
        ),
        "{s}"
    );
    assert_eq!(s["last_check"]["evidence"]["needed"], 5, "{s}");
    let (ok, text) = cli(&["rollout", "status"]);
    assert!(
        ok && text.contains("orders") && text.contains("progressing"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "evidence: {served} of 5 requests served by the new service at this step"
        )) && text.contains("gate error_rate   held"),
        "{text}"
    );
    let (ok, text) = cli(&["rollout", "pause", "orders"]);
    assert!(ok && text.contains("paused at 10%"), "{text}");
    let (ok, text) = cli(&["rollout", "pause", "orders"]);
    assert!(!ok && text.contains("409"), "{text}");
    let (ok, text) = cli(&["rollout", "set-weight", "orders", "30"]);
    assert!(ok && text.contains("paused at 30%"), "{text}");
    // A status read right after shows the weight the command set, in force on this replica.
    let (ok, text) = cli(&["rollout", "status"]);
    let row = text.lines().find(|l| l.starts_with("orders")).unwrap_or("");
    assert!(
        ok && row.contains("30%") && row.contains("paused"),
        "{text}"
    );
    let (ok, text) = cli(&["rollout", "promote", "orders"]);
    assert!(ok && text.contains("at 50%"), "{text}");
    let (ok, text) = cli(&["rollout", "rollback", "orders"]);
    assert!(ok && text.contains("rolled_back at 0%"), "{text}");
    let (ok, text) = cli(&["rollout", "resume", "orders"]);
    assert!(ok && text.contains("progressing at 10%"), "{text}");
    let (ok, text) = cli(&["rollout", "promote", "orders"]);
    assert!(ok && text.contains("paused at 10%"), "a pause step: {text}");
    let (ok, text) = cli(&["rollout", "promote", "orders"]);
    assert!(ok && text.contains("progressing at 50%"), "{text}");
    // The weight is in force on this replica within its next sync.
    wait_for(
        "half the users on the new side",
        Duration::from_secs(5),
        || async {
            let n = round(&p, 40).await.len();
            (10..=30).contains(&n)
        },
    )
    .await;
    // The kill switch: everyone to the monolith, until it is off.
    let (ok, text) = cli(&["kill-switch", "on"]);
    assert!(ok && text.contains("ON"), "{text}");
    // In force at once on the replica that took the command.
    assert!(round(&p, 40).await.is_empty());
    assert_eq!(p.metric("strangler_kill_switch").await, 1.0);
    let (ok, _) = cli(&["kill-switch", "off"]);
    assert!(ok);
    wait_for(
        "users back on the new side",
        Duration::from_secs(2),
        || async { !round(&p, 40).await.is_empty() },
    )
    .await;
    let (ok, text) = cli(&["rollout", "audit"]);
    assert!(
        ok && text.contains("kill switch on") && text.contains("(admin API)"),
        "{text}"
    );
    // A restarted proxy resumes where the store says.
    p.terminate(Duration::from_secs(15)).await;
    p.restart().await;
    let s = wait_state(&p, "the stored state", Duration::from_secs(5), |s| {
        !s.is_null()
    })
    .await;
    assert_eq!(
        (s["weight_bp"].as_u64(), s["step"].as_u64()),
        (Some(5_000), Some(2))
    );
    wait_for(
        "the stored weight in force",
        Duration::from_secs(5),
        || async { !round(&p, 40).await.is_empty() },
    )
    .await;
}

#[tokio::test]
async fn mutating_admin_calls_want_the_token() {
    let store = Store::sqlite();
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let new = Upstream::start("orders", Behaviour::Echo).await;
    let p = ProxyBuilder::new(legacy.addr)
        .service("orders", UpstreamConfig::new(new.addr))
        .rules("r.yaml", &rules("[10, 100]", "1h"))
        .setting("admin_token_env", "STRANGLER_TEST_TOKEN")
        .env("STRANGLER_TEST_TOKEN", "s3cret")
        .store(&store)
        .start()
        .await;
    let bare = p.admin_call("POST", "/api/kill-switch", &[]).await;
    assert_eq!(bare.status, 401);
    let wrong = p
        .admin_call(
            "POST",
            "/api/kill-switch",
            &[("authorization", "Bearer nope")],
        )
        .await;
    assert_eq!(wrong.status, 401);
    let right = p
        .admin_call(
            "POST",
            "/api/kill-switch",
            &[("authorization", "Bearer s3cret")],
        )
        .await;
    assert_eq!(right.status, 200);
    // Reading stays open.
    assert_eq!(get(p.admin, "/api/rollouts", &[]).await.status, 200);
    assert_eq!(get(p.admin, "/metrics", &[]).await.status, 200);
    // Off loopback without a token: refused at start.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.yaml"), "routes: []\n").unwrap();
    let config = dir.path().join("s.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: [\"127.0.0.1:0\"]\nadmin: \"0.0.0.0:{}\"\nlegacy: {{ address: \"{}\" }}\nrules: r.yaml\nstore: \"sqlite://s.db\"\n",
            proxy::free_port().port(),
            legacy.addr
        ),
    )
    .unwrap();
    let out = std::process::Command::new(binary())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("not on loopback and no admin token"), "{err}");
}

#[tokio::test]
async fn a_plan_edit_never_raises_the_weight() {
    let store = Store::sqlite();
    let (_legacy, _new, p) = start(&rules("[10, 50, 100]", "1h"), &store).await;
    wait_state(&p, "the first step", Duration::from_secs(10), |s| {
        s["weight_bp"] == 1_000
    })
    .await;
    let promoted = p
        .admin_call("POST", "/api/rollouts/orders/promote", &[])
        .await;
    assert_eq!(promoted.status, 200, "{}", promoted.text());
    // 50 is no longer a step: the nearest lower one, 30.
    let before = p.generation().await;
    p.write_rules("r.yaml", &rules("[10, 30, 100]", "1h"));
    wait_for("the reload", Duration::from_secs(10), || async {
        p.generation().await > before
    })
    .await;
    let s = wait_state(&p, "the rebased state", Duration::from_secs(5), |s| {
        s["weight_bp"] == 3_000
    })
    .await;
    assert_eq!(
        (s["step"].as_u64(), s["phase"].as_str()),
        (Some(1), Some("progressing"))
    );
    // A plan with higher steps only: the weight does not jump up to them.
    let before = p.generation().await;
    p.write_rules("r.yaml", &rules("[60, 100]", "1h"));
    wait_for("the reload", Duration::from_secs(10), || async {
        p.generation().await > before
    })
    .await;
    wait_state(&p, "the rebased state", Duration::from_secs(5), |s| {
        s["reason"] == "the plan was edited" && s["weight_bp"].as_u64() <= Some(3_000)
    })
    .await;
    let audit = p.admin_json("/api/audit?context=orders&limit=5").await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "the plan was edited" && e["to_weight_bp"] == 3_000),
        "{audit}"
    );
}
