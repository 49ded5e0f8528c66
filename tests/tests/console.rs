//! The console in a real browser: Playwright (`@playwright/test` from npm, which `.ci/run`
//! installs under `~/.cache/strangler-npm`) drives Debian's Chromium against a running proxy
//! with real upstreams, a rolled-out context with a shadowed route, and a publishing route to
//! kinesis-local (`tests/console/console.spec.js` says what it checks). `SCREENSHOTS=dir` saves
//! the main views (how `docs/console-*.png` were made).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use strangler_tests::kinesis::{self, KinesisLocal};
use strangler_tests::*;

fn npm_dir() -> PathBuf {
    std::env::var_os("STRANGLER_NPM_DIR").map_or_else(
        || Path::new(&std::env::var("HOME").unwrap()).join(".cache/strangler-npm"),
        PathBuf::from,
    )
}

#[tokio::test]
async fn the_console_shows_the_migration_and_rolls_back_in_a_browser() {
    let modules = npm_dir().join("node_modules");
    let cli = modules.join("@playwright/test/cli.js");
    assert!(
        cli.exists(),
        "{} is missing: `npm install --prefix {} @playwright/test` (.ci/run does)",
        cli.display(),
        npm_dir().display()
    );
    let k = KinesisLocal::start().await;
    let c = kinesis::client(&k.endpoint());
    kinesis::create_stream(&c, "orders").await;
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let orders = Upstream::start("orders", Behaviour::Echo).await;
    let rules = format!(
        "{}    shadow: {{ service: orders, compare: {{ ignore: [\"$.headers\"] }} }}\n{}",
        orders_context(
            "{ steps: [50, 100], interval: 1h, min_requests: 100, gates: { error_rate: { max_increase: 1pp } } }"
        ),
        ORDERS_RULES.trim_start_matches("\nroutes:\n")
    );
    // Kept for the whole test: its folder holds the SQLite file.
    let store = Store::sqlite();
    // The shop's notifier reads the stream and serves its progress: the events view shows it.
    let dir = tempfile::tempdir().unwrap();
    let notifier_metrics = strangler_tests::proxy::free_port();
    let _notifier = notifier(dir.path(), "orders", &k.endpoint(), notifier_metrics);
    let p = ProxyBuilder::new(legacy.addr)
        .service("orders", UpstreamConfig::new(orders.addr))
        .rules("r.yaml", &rules)
        .kinesis(&k.endpoint())
        .store(&store)
        .setting(
            "consumers",
            serde_json::json!({ "notifier": format!("http://{notifier_metrics}/metrics") }),
        )
        .start()
        .await;
    wait_for(
        "the rollout's first step in force",
        Duration::from_secs(15),
        || {
            let p = &p;
            async move { p.admin_json("/api/rollouts").await["contexts"][0]["weight"] == 50.0 }
        },
    )
    .await;
    // Traffic for the map, mismatches for the shadow view (the answers name their upstream),
    // an event for the events view.
    for n in 0..40 {
        let user = format!("user-{n}");
        get(p.addr, &format!("/orders/{n}"), &[("x-user", &user)]).await;
    }
    post(p.addr, "/api/users/alice/orders", r#"{"n":1}"#, &[]).await;
    wait_for("a stored mismatch", Duration::from_secs(15), || {
        let p = &p;
        async move {
            p.admin_json("/api/shadow/mismatches").await["mismatches"]
                .as_array()
                .is_some_and(|m| !m.is_empty())
        }
    })
    .await;

    wait_for(
        "the notifier's progress through the proxy",
        Duration::from_secs(30),
        || {
            let p = &p;
            async move {
                p.admin_json("/api/consumers").await["consumers"][0]["shards"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["applied"].as_f64() >= Some(1.0)))
            }
        },
    )
    .await;
    // A check that saw the new service's answers: the rollout view shows its gate and evidence.
    wait_for(
        "a check that judged the new service's answers",
        Duration::from_secs(15),
        || {
            let p = &p;
            async move {
                let c = &p.rollout_state("orders").await["last_check"];
                c["evidence"]["seen"].as_u64() > Some(0) && c["gates"][0]["passed"] == true
            }
        },
    )
    .await;
    // Gates are judged on what came since the last check: traffic keeps flowing while the
    // browser looks, as in a live migration (else a check with no request in its window shows
    // the gate as "no data" by the time the page is read).
    let addr = p.addr;
    let traffic = tokio::spawn(async move {
        for n in 0u64.. {
            let user = format!("user-{}", n % 40);
            get(addr, &format!("/orders/{}", n % 40), &[("x-user", &user)]).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let spec_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
    let admin = format!("http://{}", p.admin);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(&cli)
            .args(["test", "--config"])
            .arg(spec_dir.join("playwright.config.js"))
            .env("NODE_PATH", &modules)
            .env("STRANGLER_ADMIN", admin)
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    traffic.abort();
    assert!(out.status.success(), "playwright:\n{text}");
    // The click went through the API: the context is at 0 %, rolled back, for every replica.
    let s = p.rollout_state("orders").await;
    assert_eq!(
        (s["weight_bp"].as_i64(), s["phase"].as_str()),
        (Some(0), Some("rolled_back")),
        "{s}"
    );
}
