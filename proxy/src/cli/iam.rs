//! `strangler iam-policy --config F`: the least-privilege IAM policy for what the rules need:
//! `kinesis:PutRecords` and `kinesis:ListShards` (the relay: records, and the shard maps that
//! aggregation and the per-shard write limits use) and `kinesis:DescribeStreamSummary` (the
//! start-up checks) on the exact stream ARNs, and `kms:GenerateDataKey` on each customer-managed
//! key the streams are encrypted with. ARNs and keys come from DescribeStreamSummary; a stream it
//! cannot describe gets an ARN built from the region with a `*` account, and a note on stderr.
//! A key the stream names by alias is granted through the `kms:ResourceAliases` condition on the
//! account's keys (IAM does not take an alias ARN as a key's resource, and resolving it would need
//! `kms:DescribeKey` rights of whoever runs this). `--also-stream` adds streams the rules do not
//! publish to (a replay's `--to-stream`).

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct IamPolicyArgs {
    /// Also a stream the rules do not publish to (a replay's `--to-stream`, say); repeat for
    /// more.
    #[arg(long = "also-stream", value_name = "STREAM")]
    also: Vec<String>,
}

/// What DescribeStreamSummary said of one stream.
struct Described {
    arn: String,
    /// A customer-managed KMS key, when the stream is encrypted with one.
    key: Option<String>,
}

pub fn run(cfg: &Config, args: &IamPolicyArgs) -> Result<()> {
    let rules = super::rules(cfg)?;
    let mut streams = rules.publish_streams();
    for s in &args.also {
        if !streams.contains(s) {
            streams.push(s.clone());
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (arns, keys) = rt.block_on(async {
        let region = strangler_events::kinesis::region(cfg.kinesis_region.as_deref()).await;
        let client = strangler_events::kinesis::client(
            cfg.kinesis_region.as_deref(),
            cfg.kinesis_endpoint.as_deref(),
        )
        .await;
        let mut arns = Vec::new();
        let mut keys = Vec::new();
        for s in &streams {
            match describe(&client, s).await {
                Ok(d) => {
                    if let Some(alias) = d.key.as_deref().and_then(|k| k.split_once(":alias/")) {
                        eprintln!(
                            "note: {s} is encrypted with a key named by alias (alias/{}): granted \
                             on the account's keys under the kms:ResourceAliases condition; for \
                             the key's own ARN instead: aws kms describe-key --key-id alias/{}",
                            alias.1, alias.1
                        );
                    }
                    arns.push(d.arn);
                    keys.extend(d.key);
                }
                Err(e) => {
                    let arn = if s.starts_with("arn:") {
                        s.clone()
                    } else {
                        format!(
                            "arn:aws:kinesis:{}:*:stream/{s}",
                            region.as_deref().unwrap_or("*")
                        )
                    };
                    eprintln!(
                        "note: cannot describe {s} ({e}); using {arn} (set the account, and add \
                         kms:GenerateDataKey if the stream uses a customer-managed key)"
                    );
                    arns.push(arn);
                }
            }
        }
        keys.sort();
        keys.dedup();
        (arns, keys)
    });
    println!("{}", serde_json::to_string_pretty(&policy(&arns, &keys))?);
    Ok(())
}

/// The policy document for these stream ARNs and KMS keys (key or alias ARNs).
fn policy(arns: &[String], keys: &[String]) -> serde_json::Value {
    let (aliases, keys): (Vec<&String>, Vec<&String>) =
        keys.iter().partition(|k| k.contains(":alias/"));
    let mut statements = Vec::new();
    if !arns.is_empty() {
        statements.push(json!({
            "Sid": "PublishEvents",
            "Effect": "Allow",
            "Action": ["kinesis:PutRecords", "kinesis:ListShards", "kinesis:DescribeStreamSummary"],
            "Resource": arns,
        }));
    }
    if !keys.is_empty() {
        statements.push(json!({
            "Sid": "EncryptEvents",
            "Effect": "Allow",
            "Action": ["kms:GenerateDataKey"],
            "Resource": keys,
        }));
    }
    if !aliases.is_empty() {
        // arn:aws:kms:REGION:ACCOUNT:alias/NAME → the account's keys, named by that alias.
        let mut accounts = Vec::new();
        let mut names = Vec::new();
        for a in aliases {
            if let Some((account, name)) = a.split_once(":alias/") {
                accounts.push(format!("{account}:key/*"));
                names.push(format!("alias/{name}"));
            }
        }
        accounts.sort();
        accounts.dedup();
        names.sort();
        names.dedup();
        statements.push(json!({
            "Sid": "EncryptEventsKeysNamedByAlias",
            "Effect": "Allow",
            "Action": ["kms:GenerateDataKey"],
            "Resource": accounts,
            "Condition": { "ForAnyValue:StringEquals": { "kms:ResourceAliases": names } },
        }));
    }
    json!({ "Version": "2012-10-17", "Statement": statements })
}

async fn describe(client: &aws_sdk_kinesis::Client, stream: &str) -> Result<Described, String> {
    let d = strangler_events::kinesis::describe(client, stream, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    // The AWS-managed key (`alias/aws/kinesis`) needs no grant of its own.
    let key = d
        .key_id()
        .filter(|k| !k.is_empty() && *k != "alias/aws/kinesis")
        .map(key_arn(d.stream_arn()));
    Ok(Described {
        arn: d.stream_arn().to_string(),
        key,
    })
}

/// A key id as an ARN for the policy (a bare id or alias gets the stream's region and account).
fn key_arn(stream_arn: &str) -> impl Fn(&str) -> String + '_ {
    move |key: &str| {
        if key.starts_with("arn:") {
            return key.to_string();
        }
        // arn:aws:kinesis:REGION:ACCOUNT:stream/NAME
        let parts: Vec<&str> = stream_arn.split(':').collect();
        let (partition, region, account) = match parts.as_slice() {
            [_, p, _, r, a, ..] => (*p, *r, *a),
            _ => ("aws", "*", "*"),
        };
        if let Some(alias) = key.strip_prefix("alias/") {
            format!("arn:{partition}:kms:{region}:{account}:alias/{alias}")
        } else {
            format!("arn:{partition}:kms:{region}:{account}:key/{key}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_arns_and_the_policy_names_every_stream() {
        let arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/shop-orders";
        assert_eq!(
            key_arn(arn)("1234abcd-12ab"),
            "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab"
        );
        assert_eq!(
            key_arn(arn)("alias/orders"),
            "arn:aws:kms:eu-west-1:123456789012:alias/orders"
        );
        let p = policy(&[arn.into()], &["arn:aws:kms:eu-west-1:1:key/k".into()]);
        assert_eq!(p["Statement"][0]["Resource"][0], arn);
        assert_eq!(p["Statement"][1]["Action"][0], "kms:GenerateDataKey");
        assert_eq!(policy(&[], &[])["Statement"], json!([]));
        // An alias is never a key's resource: the account's keys, on the alias condition.
        let p = policy(
            &[arn.into()],
            &["arn:aws:kms:eu-west-1:123456789012:alias/orders".into()],
        );
        assert_eq!(p["Statement"].as_array().unwrap().len(), 2, "{p}");
        let s = &p["Statement"][1];
        assert_eq!(
            s["Resource"],
            json!(["arn:aws:kms:eu-west-1:123456789012:key/*"])
        );
        assert_eq!(
            s["Condition"]["ForAnyValue:StringEquals"]["kms:ResourceAliases"],
            json!(["alias/orders"])
        );
    }
}
