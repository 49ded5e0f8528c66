//! The consumers area: the progress of each consumer the config names (`consumers:`, a name →
//! its metrics URL), read from its Prometheus metrics at each call, so the console can show
//! lag per shard beside the outbox. A consumer that does not answer within [`SCRAPE_TIMEOUT`]
//! is shown as not answering, with why.

use std::collections::BTreeMap;
use std::time::Duration;

use http::StatusCode;
use serde::Serialize;
use serde_json::json;

use super::{Admin, Reply, json_reply};

const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// The most bytes of a consumer's metrics read (a few hundred shards fit in far less).
const SCRAPE_LIMIT: usize = 4 << 20;

/// One shard as a consumer reports it.
#[derive(Debug, Default, PartialEq, Serialize)]
struct ShardProgress {
    consumer: String,
    stream: String,
    shard: String,
    /// `strangler_consumer_behind_latest_seconds`; absent for a shard read to its end.
    behind_seconds: Option<f64>,
    applied: f64,
    duplicates: f64,
}

#[derive(Debug, Serialize)]
struct ConsumerStatus {
    name: String,
    url: String,
    /// Why its metrics could not be read; `None` when they were.
    error: Option<String>,
    shards: Vec<ShardProgress>,
}

impl Admin {
    /// `GET /api/consumers`: every configured consumer's shards, read now.
    pub(super) async fn consumers(&self) -> Reply {
        // Read at once, answered in the config's order.
        let reads: Vec<_> = self
            .consumers
            .values()
            .map(|url| tokio::spawn(scrape(url.clone())))
            .collect();
        let mut consumers = Vec::with_capacity(reads.len());
        for ((name, url), read) in self.consumers.iter().zip(reads) {
            let (error, shards) = match read.await {
                Ok(Ok(shards)) => (None, shards),
                Ok(Err(e)) => (Some(e), Vec::new()),
                Err(e) => (Some(format!("reading {url} failed: {e}")), Vec::new()),
            };
            consumers.push(ConsumerStatus {
                name: name.clone(),
                url: url.clone(),
                error,
                shards,
            });
        }
        Ok(json_reply(
            StatusCode::OK,
            &json!({ "consumers": consumers }),
        ))
    }
}

async fn scrape(url: String) -> Result<Vec<ShardProgress>, String> {
    let call = crate::client::call("GET", &url, None, Some(SCRAPE_LIMIT));
    let answer = match tokio::time::timeout(SCRAPE_TIMEOUT, call).await {
        Ok(Ok(a)) if a.status == 200 => a,
        Ok(Ok(a)) => return Err(format!("{url} answered {}", a.status)),
        Ok(Err(e)) => return Err(format!("{url}: {e}")),
        Err(_) => return Err(format!("{url} did not answer within {SCRAPE_TIMEOUT:?}")),
    };
    Ok(shards(&String::from_utf8_lossy(&answer.body)))
}

/// The per-shard families of `strangler-consumer`'s metrics in a scrape, one entry a shard.
fn shards(text: &str) -> Vec<ShardProgress> {
    let mut by_shard: BTreeMap<(String, String, String), ShardProgress> = BTreeMap::new();
    for s in samples(text) {
        let set: fn(&mut ShardProgress, f64) = match s.name {
            "strangler_consumer_behind_latest_seconds" => |p, v| p.behind_seconds = Some(v),
            "strangler_consumer_events_applied_total" => |p, v| p.applied = v,
            "strangler_consumer_duplicates_skipped_total" => |p, v| p.duplicates = v,
            _ => continue,
        };
        let label = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
        let key = (label("consumer"), label("stream"), label("shard"));
        let shard = by_shard
            .entry(key.clone())
            .or_insert_with(|| ShardProgress {
                consumer: key.0,
                stream: key.1,
                shard: key.2,
                ..Default::default()
            });
        set(shard, s.value);
    }
    by_shard.into_values().collect()
}

/// One sample of Prometheus's text format.
#[derive(Debug, PartialEq)]
struct Sample<'a> {
    name: &'a str,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a text-format scrape (`name{label="value",…} value [timestamp]`); comments
/// and lines that do not read are passed over.
fn samples(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines().filter_map(|line| {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
        let (name, mut rest) = line.split_at(end);
        let mut labels = BTreeMap::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let (read, after) = label_set(inner)?;
            labels = read;
            rest = after;
        }
        let value = rest.split_whitespace().next()?.parse().ok()?;
        Some(Sample {
            name,
            labels,
            value,
        })
    })
}

/// `label="value",…}` → the labels and what follows the `}`.
fn label_set(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = s.find('=')?;
        let name = s[..eq].trim().to_string();
        let mut chars = s[eq + 1..].trim_start().strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let close = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        let after_open = s[eq + 1..].trim_start();
        s = &after_open[1 + close + 1..];
        labels.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumers_scrape_reads_as_shards() {
        let text = r#"# HELP strangler_consumer_behind_latest_seconds How far
# TYPE strangler_consumer_behind_latest_seconds gauge
strangler_consumer_behind_latest_seconds{consumer="projector",shard="shardId-000000000001",stream="orders"} 2.5
strangler_consumer_events_applied_total{consumer="projector",shard="shardId-000000000001",stream="orders"} 120
strangler_consumer_events_applied_total{consumer="projector",shard="shardId-000000000000",stream="orders"} 7 1700000000000
strangler_consumer_duplicates_skipped_total{consumer="projector",shard="shardId-000000000000",stream="orders"} 1
strangler_consumer_batches_total{consumer="projector",stream="orders"} 9
process_open_fds 12
"#;
        let got = shards(text);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            ShardProgress {
                consumer: "projector".into(),
                stream: "orders".into(),
                shard: "shardId-000000000000".into(),
                behind_seconds: None,
                applied: 7.0,
                duplicates: 1.0,
            }
        );
        assert_eq!((got[1].behind_seconds, got[1].applied), (Some(2.5), 120.0));
    }

    #[test]
    fn label_values_with_escapes_commas_and_braces_read_whole() {
        let s: Vec<Sample<'_>> = samples(
            "m{a=\"x\\\"y\",b = \"p,q}r\\\\\",c=\"line\\nnext\",} +Inf\nbroken{a=\"open 1\n",
        )
        .collect();
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].name, "m");
        assert_eq!(s[0].labels["a"], "x\"y");
        assert_eq!(s[0].labels["b"], "p,q}r\\");
        assert_eq!(s[0].labels["c"], "line\nnext");
        assert_eq!(s[0].value, f64::INFINITY);
    }
}
