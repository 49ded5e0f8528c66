//! Stored evidence never holds credentials, and reading it wants the admin token: a shadow route
//! without `strip_headers` stores the request's `Authorization` and `Cookie` masked, and with
//! `admin_token_env` set the endpoints that show stored data answer 401 without the token while
//! `/metrics`, `/healthz` and `/readyz` stay open. Stored answers are readable: a gzip-encoded
//! one is stored decoded, its encoding noted.

use std::time::Duration;

use serde_json::Value;
use strangler_tests::*;

const RULES: &str = r#"
routes:
  - name: differs
    match: { methods: [GET], path: { prefix: /differs } }
    target: { service: orders, weight: 0 }
    shadow: { service: orders }
"#;

const TOKEN: (&str, &str) = ("authorization", "Bearer admin-s3cret");

#[tokio::test]
async fn stored_requests_hold_no_credentials_and_reading_them_wants_the_token() {
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let new = Upstream::start("orders", Behaviour::Echo).await;
    let p = ProxyBuilder::new(legacy.addr)
        .service("orders", UpstreamConfig::new(new.addr))
        .rules("r.yaml", RULES)
        .setting("admin_token_env", "STRANGLER_TEST_TOKEN")
        .env("STRANGLER_TEST_TOKEN", "admin-s3cret")
        .store(&Store::sqlite())
        .start()
        .await;
    let r = get(
        p.addr,
        "/differs/1",
        &[
            ("authorization", "Bearer user-s3cret"),
            ("cookie", "session=user-cookie"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    // The copy still carries them to the other side (no strip_headers here).
    assert_eq!(
        r.json()["headers"]["authorization"][0],
        "Bearer user-s3cret"
    );
    let list = "/api/shadow/mismatches?route=differs";
    wait_for("the mismatch stored", Duration::from_secs(10), || async {
        let v = p.admin_call("GET", list, &[TOKEN]).await.json();
        v["mismatches"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;

    // Without the token: stored data is refused, health and metrics are not.
    let id = p.admin_call("GET", list, &[TOKEN]).await.json()["mismatches"][0]["id"]
        .as_i64()
        .unwrap();
    let one = format!("/api/shadow/mismatches/{id}");
    for path in [
        list,
        one.as_str(),
        "/api/audit",
        "/api/routes",
        "/api/dead-letters",
        "/api/replays",
    ] {
        assert_eq!(p.admin_call("GET", path, &[]).await.status, 401, "{path}");
    }
    for path in [
        "/metrics",
        "/healthz",
        "/readyz",
        "/api/rollouts",
        "/api/rules",
    ] {
        assert_eq!(p.admin_call("GET", path, &[]).await.status, 200, "{path}");
    }

    // With it: the request's credentials are there, masked.
    let m: Value = p.admin_call("GET", &one, &[TOKEN]).await.json();
    let headers = m["request"]["headers"].as_array().unwrap();
    let value = |name: &str| {
        headers
            .iter()
            .find(|h| h[0] == name)
            .and_then(|h| h[1].as_str())
            .map(str::to_string)
    };
    assert_eq!(
        value("authorization").as_deref(),
        Some("[masked by strangler]")
    );
    assert_eq!(value("cookie").as_deref(), Some("[masked by strangler]"));
    let text = serde_json::to_string(&m["request"]).unwrap();
    assert!(
        !text.contains("user-s3cret") && !text.contains("user-cookie"),
        "{text}"
    );
}

#[tokio::test]
async fn a_compressed_answer_is_stored_decoded_with_its_encoding_noted() {
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let new = Upstream::start("orders", Behaviour::Echo).await;
    let p = ProxyBuilder::new(legacy.addr)
        .service("orders", UpstreamConfig::new(new.addr))
        .rules("r.yaml", RULES)
        .store(&Store::sqlite())
        .start()
        .await;
    let r = get(p.addr, "/differs/2", &[("x-reply-gzip", "1")]).await;
    assert_eq!(r.status, 200);
    let list = "/api/shadow/mismatches?route=differs";
    wait_for("the mismatch stored", Duration::from_secs(10), || async {
        let v = p.admin_json(list).await;
        v["mismatches"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let listed = p.admin_json(list).await;
    let id = listed["mismatches"][0]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no mismatch id in {listed}"));
    let m = p.admin_json(&format!("/api/shadow/mismatches/{id}")).await;
    for side in ["expected", "actual"] {
        let body = m[side]["body"].as_str().unwrap();
        let doc: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{side} body is not readable JSON ({e}): {body:?}"));
        assert_eq!(doc["uri"], "/differs/2");
        let headers = m[side]["headers"].as_array().unwrap();
        let has = |name: &str, value: &str| headers.iter().any(|h| h[0] == name && h[1] == value);
        assert!(
            has("x-strangler-decoded-from", "gzip"),
            "{side}: {headers:?}"
        );
        assert!(
            !headers.iter().any(|h| h[0] == "content-encoding"),
            "{side}: {headers:?}"
        );
    }
}
