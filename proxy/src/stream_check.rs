//! Security checks of the streams the rules publish to: at start and after each reload that
//! names a stream not checked yet, DescribeStreamSummary says whether server-side encryption is
//! on; off is logged as a warning, and `strangler_stream_encrypted{stream}` shows it. A stream
//! that cannot be described is logged once and tried again, less and less often (5 s doubling
//! to 5 min).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strangler_events::Metrics;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::reload::LiveRules;

/// How often the rules are looked at for streams not checked yet.
const EVERY: Duration = Duration::from_secs(2);
/// A stream that could not be described is tried again after this, doubling up to `MAX_WAIT`.
const FIRST_WAIT: Duration = Duration::from_secs(5);
const MAX_WAIT: Duration = Duration::from_secs(300);

/// Runs until the process stops.
pub async fn run(cfg: Config, rules: Arc<LiveRules>, metrics: Metrics) {
    let mut checked: HashSet<String> = HashSet::new();
    // Streams that could not be described: when to try again, and the wait after that.
    let mut failing: HashMap<String, (Instant, Duration)> = HashMap::new();
    let mut client = None;
    loop {
        let now = Instant::now();
        let streams: Vec<String> = {
            let current = rules.current();
            let mut s = current.rules.publish_streams();
            s.retain(|s| !checked.contains(s) && failing.get(s).is_none_or(|(at, _)| *at <= now));
            s
        };
        if !streams.is_empty() {
            let c = match &client {
                Some(c) => c,
                None => client.insert(
                    strangler_events::kinesis::client(
                        cfg.kinesis_region.as_deref(),
                        cfg.kinesis_endpoint.as_deref(),
                    )
                    .await,
                ),
            };
            for s in streams {
                match check(c, &s).await {
                    Ok(encrypted) => {
                        metrics
                            .stream_encrypted
                            .with_label_values(&[&s])
                            .set(i64::from(encrypted));
                        if encrypted {
                            info!(stream = %s, "Stream is encrypted at rest");
                        } else {
                            warn!(stream = %s, "Stream has server-side encryption off: events are stored unencrypted at rest (turn on KMS encryption)");
                        }
                        failing.remove(&s);
                        checked.insert(s);
                    }
                    // Said once per stream (then at debug level), retried less and less often.
                    Err(e) => {
                        let wait = match failing.get(&s) {
                            Some((_, wait)) => {
                                debug!(stream = %s, error = %e, "Cannot check the stream's encryption; will retry");
                                (*wait * 2).min(MAX_WAIT)
                            }
                            None => {
                                warn!(stream = %s, error = %e, "Cannot check the stream's encryption; will retry");
                                FIRST_WAIT
                            }
                        };
                        failing.insert(s, (Instant::now() + wait, wait));
                    }
                }
            }
        }
        tokio::time::sleep(EVERY).await;
    }
}

async fn check(c: &aws_sdk_kinesis::Client, stream: &str) -> Result<bool, String> {
    let d = strangler_events::kinesis::describe(c, stream, Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    Ok(d.encryption_type()
        .is_some_and(|t| *t != aws_sdk_kinesis::types::EncryptionType::None))
}
