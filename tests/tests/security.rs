//! Security tooling: `strangler iam-policy` for the example's rules against a real
//! Kinesis-compatible server (kinesis-local), which names each stream's ARN.

use std::path::{Path, PathBuf};

use strangler_tests::kinesis::{KinesisLocal, client, create_stream};
use strangler_tests::*;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/shop")
        .canonicalize()
        .unwrap()
}

#[tokio::test]
async fn the_iam_policy_names_every_stream_of_the_example() {
    let k = KinesisLocal::start().await;
    let c = client(&k.endpoint());
    for s in ["shop-orders", "shop-users", "shop-orders-v2"] {
        create_stream(&c, s).await;
    }
    // One stream under a customer-managed key named by alias, one by key id.
    for (s, key) in [
        ("shop-orders", "alias/shop-events"),
        ("shop-users", "1234abcd-12ab-34cd-56ef-1234567890ab"),
    ] {
        c.start_stream_encryption()
            .stream_name(s)
            .encryption_type(aws_sdk_kinesis::types::EncryptionType::Kms)
            .key_id(key)
            .send()
            .await
            .expect("StartStreamEncryption");
    }
    // The example's config with its rules, pointed at this server.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(example().join("strangler.yaml"))
        .unwrap()
        .replace("http://127.0.0.1:4567", &k.endpoint())
        .replace(
            "rules: rules",
            &format!("rules: {}", example().join("rules").display()),
        );
    let config = dir.path().join("strangler.yaml");
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(binary())
        .args(["iam-policy", "--also-stream", "shop-orders-v2", "--config"])
        .arg(&config)
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let policy: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON policy");
    assert_eq!(policy["Version"], "2012-10-17");
    let statement = &policy["Statement"][0];
    assert_eq!(
        statement["Action"],
        serde_json::json!([
            "kinesis:PutRecords",
            "kinesis:ListShards",
            "kinesis:DescribeStreamSummary"
        ])
    );
    let resources: Vec<&str> = statement["Resource"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert_eq!(resources.len(), 3, "{resources:?}");
    for s in ["shop-orders", "shop-users", "shop-orders-v2"] {
        assert!(
            resources
                .iter()
                .any(|r| r.starts_with("arn:aws:kinesis:") && r.ends_with(&format!(":stream/{s}"))),
            "{s} missing from {resources:?}"
        );
    }
    // The key named by id is a key ARN; the alias is never a resource (IAM matches no key by
    // it): the account's keys, on the `kms:ResourceAliases` condition.
    let account = resources[0].split(':').nth(4).unwrap();
    let by_id = &policy["Statement"][1];
    assert_eq!(
        by_id["Resource"],
        serde_json::json!([format!(
            "arn:aws:kms:us-east-1:{account}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        )]),
        "{policy}"
    );
    let by_alias = &policy["Statement"][2];
    assert_eq!(
        by_alias["Resource"],
        serde_json::json!([format!("arn:aws:kms:us-east-1:{account}:key/*")]),
        "{policy}"
    );
    assert_eq!(
        by_alias["Condition"]["ForAnyValue:StringEquals"]["kms:ResourceAliases"],
        serde_json::json!(["alias/shop-events"]),
        "{policy}"
    );
    assert!(!policy.to_string().contains(":alias/"), "{policy}");
    assert!(
        stderr.contains("shop-orders is encrypted with a key named by alias"),
        "{stderr}"
    );
    // Described, not guessed.
    assert!(!stderr.contains("cannot describe"), "{stderr}");
}

#[tokio::test]
async fn streams_without_encryption_are_reported_at_start() {
    let k = KinesisLocal::start().await;
    let c = client(&k.endpoint());
    for s in ["sealed", "open"] {
        create_stream(&c, s).await;
    }
    c.start_stream_encryption()
        .stream_name("sealed")
        .encryption_type(aws_sdk_kinesis::types::EncryptionType::Kms)
        .key_id("alias/aws/kinesis")
        .send()
        .await
        .expect("StartStreamEncryption");
    let rules = r#"
routes:
  - name: a
    match: { methods: [POST], path: { prefix: /a } }
    target: { service: legacy }
    publish: { stream: sealed, type: A, source: test, partition_key: { request.path: true } }
  - name: b
    match: { methods: [POST], path: { prefix: /b } }
    target: { service: legacy }
    publish: { stream: open, type: B, source: test, partition_key: { request.path: true } }
"#;
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let p = ProxyBuilder::new(legacy.addr)
        .rules("r.yaml", rules)
        .kinesis(&k.endpoint())
        .start()
        .await;
    let gauge = |s: &str| format!("strangler_stream_encrypted{{stream=\"{s}\"}}");
    wait_for(
        "both streams checked",
        std::time::Duration::from_secs(20),
        || async {
            let text = get(p.admin, "/metrics", &[]).await.text();
            text.contains(&gauge("sealed")) && text.contains(&gauge("open"))
        },
    )
    .await;
    assert_eq!(p.metric(&gauge("sealed")).await, 1.0);
    assert_eq!(p.metric(&gauge("open")).await, 0.0);
    let logs = p.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("server-side encryption off") && l.contains("open")),
        "{logs}"
    );
}
