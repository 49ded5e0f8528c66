//! Streams' shard maps (aggregated streams, and every stream while per-shard limits are on):
//! fetched with `ListShards` when a stream first has rows, refreshed every minute, and soon
//! after Kinesis puts an aggregate on another shard than the map said.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::Relay;
use crate::aggregate::ShardMap;
use crate::kinesis::Client;

/// What the relay knows of an aggregated stream's shards.
#[derive(Default)]
pub(super) struct Shards {
    pub(super) map: Option<Arc<ShardMap>>,
    /// When `ListShards` was last tried.
    tried: Option<Instant>,
    /// Kinesis put an aggregate on another shard than the map said.
    pub(super) stale: bool,
    /// `ListShards` has failed since then (one WARN when it starts, one INFO when it ends).
    failing_since: Option<Instant>,
}

/// How often an aggregated stream's shard map is fetched again; a failed fetch is retried after
/// `SHARDS_RETRY`.
const SHARDS_REFRESH: Duration = Duration::from_secs(60);
const SHARDS_RETRY: Duration = Duration::from_secs(5);

impl Relay {
    /// The stream's shard map when there is one to trust: a map Kinesis contradicted is not used
    /// until it is fetched again (rows go out plain, each by its own key, and unlimited
    /// meanwhile).
    pub(super) fn shard_map(&self, stream: &str) -> Option<Arc<ShardMap>> {
        self.shards
            .get(stream)
            .filter(|s| !s.stale)
            .and_then(|s| s.map.clone())
            .filter(|m| !m.is_empty())
    }

    /// Fetches the shard map of each aggregated stream in the backlog that has none, an old
    /// one, or one Kinesis contradicted.
    pub(super) async fn refresh_shards(&mut self) {
        let limited = !self.cfg.shard_limits.is_off();
        if self.cfg.aggregate.is_empty() && !limited {
            return;
        }
        let Some(client) = self.client.get().cloned() else {
            return;
        };
        let due: Vec<String> = self
            .backlog
            .stream_names()
            .filter(|stream| limited || self.cfg.aggregates(stream))
            .filter(|stream| match self.shards.get(*stream) {
                None => true,
                Some(s) => s.tried.is_none_or(|t| {
                    t.elapsed()
                        >= if s.map.is_none() || s.stale {
                            SHARDS_RETRY
                        } else {
                            SHARDS_REFRESH
                        }
                }),
            })
            .cloned()
            .collect();
        for stream in due {
            self.shards.entry(stream.clone()).or_default().tried = Some(Instant::now());
            match list_shards(&client, &stream).await {
                Ok(map) => {
                    debug!(stream, shards = map.len(), "Shard map fetched");
                    let s = self.shards.entry(stream.clone()).or_default();
                    if let Some(since) = s.failing_since.take() {
                        info!(
                            stream,
                            shards = map.len(),
                            failed_for = %format_args!("{:.1?}", since.elapsed()),
                            "ListShards works again"
                        );
                    }
                    s.map = Some(Arc::new(ShardMap::new(
                        map.iter()
                            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())),
                    )));
                    s.stale = false;
                }
                Err(e) => {
                    let kept = self.shard_map(&stream);
                    let s = self.shards.entry(stream.clone()).or_default();
                    if s.failing_since.is_some() {
                        debug!(stream, error = %e, "ListShards failed again");
                        continue;
                    }
                    s.failing_since = Some(Instant::now());
                    match kept {
                        Some(map) => warn!(
                            stream,
                            error = %e,
                            shards = map.len(),
                            "ListShards failed: the last shard map is kept until it works"
                        ),
                        None => warn!(
                            stream,
                            error = %e,
                            "ListShards failed: events go out one per record, without per-shard limits, until it works"
                        ),
                    }
                }
            }
        }
    }
}

/// The open shards of a stream: `(starting hash key, ending hash key, shard id)`.
async fn list_shards(
    client: &Client,
    stream: &str,
) -> Result<Vec<(String, String, String)>, String> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut call = client.list_shards();
        call = match &token {
            Some(t) => call.next_token(t),
            None if stream.starts_with("arn:") => call.stream_arn(stream),
            None => call.stream_name(stream),
        };
        let out = call
            .send()
            .await
            .map_err(|e| format!("{}", aws_sdk_kinesis::error::DisplayErrorContext(&e)))?;
        for s in out.shards() {
            let closed = s
                .sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_some();
            if let (false, Some(range)) = (closed, s.hash_key_range()) {
                shards.push((
                    range.starting_hash_key().to_string(),
                    range.ending_hash_key().to_string(),
                    s.shard_id().to_string(),
                ));
            }
        }
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(shards),
        }
    }
}
