//! The Grafana dashboard against a real Prometheus: Debian's `prometheus` scrapes a running
//! proxy (a context under a rollout, a shadowed route, a publishing route to kinesis-local, a
//! route to a service that refuses connections) under a little load, and the shop's notifier
//! (a `strangler-consumer` serving its progress) reading the published stream; every query of
//! `deploy/grafana/strangler.json` runs without error, and every panel shows series.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use strangler_tests::kinesis::{self, KinesisLocal};
use strangler_tests::proxy::{dead_port, free_port};
use strangler_tests::*;

/// The panels' queries, Grafana's variables given the values a dashboard would.
fn panels() -> Vec<(String, Vec<String>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/strangler.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let exprs = p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    t["expr"]
                        .as_str()
                        .unwrap()
                        .replace("$__rate_interval", "1m")
                })
                .collect();
            (p["title"].as_str().unwrap().to_string(), exprs)
        })
        .collect()
}

/// `GET /api/v1/query?query=…` on Prometheus: its status and result.
async fn query(prometheus: SocketAddr, expr: &str) -> (String, Vec<Value>) {
    let mut url = String::from("/api/v1/query?query=");
    for b in expr.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    let v = get(prometheus, &url, &[]).await.json();
    let status = v["status"].as_str().unwrap_or("?").to_string();
    let error = v["error"].as_str().map(str::to_string);
    let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
    (error.map_or(status, |e| format!("error: {e}")), result)
}

#[tokio::test]
async fn every_dashboard_query_runs_against_prometheus_and_every_panel_shows_series() {
    let Some(prometheus_bin) = which("prometheus") else {
        panic!("Debian's `prometheus` package is needed (.ci/run installs it)");
    };
    let k = KinesisLocal::start().await;
    let c = kinesis::client(&k.endpoint());
    kinesis::create_stream(&c, "orders").await;
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let orders = Upstream::start("orders", Behaviour::Echo).await;
    let (_held, refused) = dead_port();
    let rules = format!(
        "{}    shadow: {{ service: orders }}\n  - name: broken\n    match: {{ path: {{ prefix: /broken }} }}\n    target: {{ service: broken }}\n{}",
        orders_context("{ steps: [50, 100], interval: 1h }"),
        ORDERS_RULES.trim_start_matches("\nroutes:\n")
    );
    // Kept for the whole test: its folder holds the SQLite file.
    let store = Store::sqlite();
    let p = ProxyBuilder::new(legacy.addr)
        .service("orders", UpstreamConfig::new(orders.addr))
        .service("broken", UpstreamConfig::new(refused))
        .rules("r.yaml", &rules)
        .kinesis(&k.endpoint())
        .store(&store)
        .start()
        .await;

    let dir = tempfile::tempdir().unwrap();
    let consumer_metrics = free_port();
    let _notifier = notifier(dir.path(), "orders", &k.endpoint(), consumer_metrics);
    let web = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nscrape_configs:\n  - job_name: strangler\n    static_configs: [{{ targets: ['{}'] }}]\n  - job_name: notifier\n    static_configs: [{{ targets: ['{}'] }}]\n",
            p.admin, consumer_metrics
        ),
    )
    .unwrap();
    let _prometheus = Process::start(
        &prometheus_bin,
        &[
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            &format!("--web.listen-address={web}"),
        ],
        &[],
    );

    // Listening comes before ready (its storage opens in between): 503 until then.
    wait_for(
        "Prometheus to be ready",
        Duration::from_secs(30),
        || async move {
            tokio::net::TcpStream::connect(web).await.is_ok()
                && get(web, "/-/ready", &[]).await.status == 200
        },
    )
    .await;

    // A little load of every kind, until the end of the test.
    let addr = p.addr;
    let load = tokio::spawn(async move {
        for n in 0u64.. {
            let user = format!("user-{}", n % 20);
            get(addr, &format!("/orders/{n}"), &[("x-user", &user)]).await;
            post(
                addr,
                &format!("/api/users/{user}/orders"),
                format!(r#"{{"n":{n}}}"#),
                &[],
            )
            .await;
            get(addr, "/broken", &[]).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    let panels = panels();
    assert!(panels.len() >= 15, "{} panels", panels.len());
    // Series appear as Prometheus scrapes (every second) and rates need two samples.
    wait_for(
        "every panel to show series",
        Duration::from_secs(90),
        || {
            let panels = panels.clone();
            async move {
                for (_, exprs) in &panels {
                    let mut any = false;
                    for e in exprs {
                        any |= !query(web, e).await.1.is_empty();
                    }
                    if !any {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await;
    let mut problems = Vec::new();
    for (title, exprs) in &panels {
        let mut shown = 0;
        for e in exprs {
            let (status, result) = query(web, e).await;
            if status != "success" {
                problems.push(format!("{title}: `{e}`: {status}"));
            }
            shown += result.len();
        }
        if shown == 0 {
            problems.push(format!("{title}: no series"));
        }
    }
    load.abort();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}
