//! The end-to-end harness: real HTTP upstreams on port 0 ([`Upstream`]), the real `strangler`
//! binary ([`ProxyBuilder`]: typed config, rules in a temp dir), Kinesis (kinesis-local and a
//! fault shim, [`kinesis`]) and the store ([`Store`]: SQLite or a scratch PostgreSQL database),
//! with one HTTP client ([`client`]). Nothing is mocked: tests talk HTTP to the proxy and read
//! what the upstreams and Kinesis received.

pub mod client;
pub mod consumers;
pub mod kinesis;
pub mod process;
pub mod proxy;
pub mod store;
pub mod upstream;

pub use client::{Reply, get, post, raw_exchange, read_until_closed, request};
pub use process::{Process, notifier, workspace_binary};
pub use proxy::{Proxy, ProxyBuilder, UpstreamConfig, binary};
pub use store::{ScratchDb, Store};
pub use upstream::{Behaviour, Upstream};

/// Rules with one publishing route: `POST /api/users/{user}/orders` to the monolith, published
/// to the `orders` stream as `ORDER_CREATED` keyed by the user, the request body as data. More
/// routes can be appended (each a `  - name: …` item).
pub const ORDERS_RULES: &str = r#"
routes:
  - name: orders-create
    match: { methods: [POST], path: { template: "/api/users/{user}/orders" } }
    target: { service: legacy }
    publish:
      stream: orders
      type: ORDER_CREATED
      source: shop/orders
      partition_key: { request.path_param: user }
      data: { request.body: "$" }
"#;

/// `POST /orders` on a route whose rules read the body (`$.items`): the proxy reads such
/// requests whole before routing, and sends them upstream itself.
pub const BODY_ROUTE: &str = r#"
routes:
  - name: wholesale
    match: { methods: [POST], path: { exact: /orders }, body: [{ jsonpath: "$.items" }] }
    target: { service: legacy }
"#;

/// An `orders` context (service `orders`, sticky by `x-user`) over `GET /orders…`, moved by
/// the rollout plan given as a YAML flow mapping (`{ steps: [10, 100], interval: 1s }`).
pub fn orders_context(rollout: &str) -> String {
    format!(
        r#"
contexts:
  - name: orders
    service: orders
    sticky: {{ header: x-user }}
    rollout: {rollout}
routes:
  - name: orders-read
    match: {{ methods: [GET], path: {{ prefix: /orders }} }}
    target: {{ context: orders }}
"#
    )
}

/// The value after `name` on this process's command line (the test binaries' `--flag value`).
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

use std::future::Future;
use std::time::{Duration, Instant};

/// Waits until `check` returns true, polling every 20 ms; panics after `timeout` with `what`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}
