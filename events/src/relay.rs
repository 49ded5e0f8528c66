//! The relay: drains the outbox into Kinesis. PutRecords batches of at most 500 records and
//! 5 MiB, one record per partition key per call (so a failed record can never be overtaken by a
//! later one of its key), exponential backoff with full jitter on throttling and per-record
//! failures, dead letters after `max_attempts` tries or `max_age`, and records over Kinesis's
//! 1 MiB limit dead-lettered at once. With PostgreSQL, one replica relays at a time (advisory
//! lock); the others wait to take over.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use crate::kinesis::Client;
use crate::metrics::Metrics;
use crate::outbox::{Outbox, OutboxError, Pending, now_ms};

/// Kinesis limits.
const MAX_RECORDS: usize = 500;
const MAX_CALL_BYTES: usize = 5 * 1024 * 1024;
const MAX_RECORD_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Tries before an event is dead-lettered.
    pub max_attempts: u32,
    /// Age after which a failing event is dead-lettered.
    pub max_age: Duration,
    /// First retry delay; doubles per try up to `max_backoff` (full jitter).
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Wait this long after new events arrive, or after a pass that sent less than full
    /// batches, to fill the next batch (fewer, larger PutRecords calls under load).
    pub linger: Duration,
    /// Poll interval when idle (new events also wake the relay at once).
    pub poll: Duration,
    /// Keep published events this long (for replay); `None` deletes them.
    pub keep_published: Option<Duration>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            max_attempts: 20,
            max_age: Duration::from_secs(24 * 3600),
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            linger: Duration::from_millis(20),
            poll: Duration::from_millis(200),
            keep_published: None,
        }
    }
}

pub struct Relay {
    pub outbox: Outbox,
    pub client: Client,
    pub metrics: Metrics,
    pub cfg: RelayConfig,
    /// Signalled by the producer after an enqueue commits.
    pub wake: Arc<Notify>,
    /// Streams with waiting events, and when that was asked.
    streams: tokio::sync::Mutex<Option<(Instant, Vec<String>)>>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub published: usize,
    pub retried: usize,
    pub dead: usize,
}

impl Pass {
    fn add(&mut self, o: Pass) {
        self.published += o.published;
        self.retried += o.retried;
        self.dead += o.dead;
    }
}

type PutResult = Result<
    aws_sdk_kinesis::operation::put_records::PutRecordsOutput,
    aws_sdk_kinesis::error::SdkError<aws_sdk_kinesis::operation::put_records::PutRecordsError>,
>;

/// Batches sent per stream in one pass before the next stream gets its turn.
const MAX_BATCHES_PER_PASS: usize = 20;

impl Relay {
    pub fn new(
        outbox: Outbox,
        client: Client,
        metrics: Metrics,
        cfg: RelayConfig,
        wake: Arc<Notify>,
    ) -> Relay {
        Relay {
            outbox,
            client,
            metrics,
            cfg,
            wake,
            streams: tokio::sync::Mutex::new(None),
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let _leader = loop {
            tokio::select! {
                r = self.outbox.leader_connection() => match r {
                    Ok(conn) => break conn,
                    Err(e) => {
                        warn!(error = %e, "Relay cannot reach the outbox store; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                _ = shutdown.changed() => return,
            }
        };
        info!(shared = self.outbox.shared, "Relay running");
        let mut last_gauges = Instant::now() - Duration::from_secs(10);
        // Archived events are pruned once a minute, not on every pass.
        let mut last_prune = Instant::now() - Duration::from_secs(3600);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let pass = match self.pass().await {
                Ok(p) => p,
                Err(e) => {
                    warn!(error = %e, "Relay pass failed; retrying");
                    tokio::time::sleep(self.cfg.poll).await;
                    Pass::default()
                }
            };
            if last_gauges.elapsed() >= Duration::from_secs(1) {
                self.update_gauges().await;
                last_gauges = Instant::now();
            }
            if let Some(keep) = self.cfg.keep_published
                && last_prune.elapsed() >= Duration::from_secs(60)
            {
                if let Err(e) = self.outbox.prune_published(keep).await {
                    warn!(error = %e, "Pruning published events failed; will retry");
                }
                last_prune = Instant::now();
            }
            if pass.published == 0 && pass.retried == 0 && pass.dead == 0 {
                tokio::select! {
                    _ = self.wake.notified() => tokio::time::sleep(self.cfg.linger).await,
                    _ = tokio::time::sleep(self.cfg.poll) => {}
                    // A dropped sender counts as shutdown (no busy loop on a closed channel).
                    r = shutdown.changed() => if r.is_err() { return },
                }
            } else if pass.published + pass.retried < MAX_RECORDS {
                // Not saturated: let the next batch fill up rather than send many small ones.
                tokio::time::sleep(self.cfg.linger).await;
            }
        }
    }

    /// One pass over every stream with waiting events.
    pub async fn pass(&self) -> Result<Pass, OutboxError> {
        let mut total = Pass::default();
        // Listing streams scans the outbox: while it is busy, reuse the list for a second.
        let streams = {
            let mut cache = self.streams.lock().await;
            match &*cache {
                Some((at, list)) if at.elapsed() < Duration::from_secs(1) => list.clone(),
                _ => {
                    let list = self.outbox.streams().await?;
                    *cache = Some((Instant::now(), list.clone()));
                    list
                }
            }
        };
        let mut busy = false;
        for stream in streams {
            let p = self.drain_stream(&stream).await?;
            busy |= p != Pass::default();
            total.add(p);
        }
        if !busy {
            *self.streams.lock().await = None; // idle: see new streams at once
        }
        Ok(total)
    }

    /// Sends everything due on one stream, pipelined: while batch N is in flight, the outbox
    /// bookkeeping of batch N-1 (deletes, retry schedules) and the claim of batch N+1 run at the
    /// same time. Rows sent but not yet settled are left out of new claims; later events of their
    /// keys are held back by the claim query itself, so per-key order is kept.
    async fn drain_stream(&self, stream: &str) -> Result<Pass, OutboxError> {
        let mut total = Pass::default();
        let mut inflight: HashSet<i64> = HashSet::new();
        let mut rows = self.outbox.claim(stream, MAX_RECORDS as i64).await?;
        let mut settling: Option<(Vec<Pending>, PutResult)> = None;
        for _ in 0..MAX_BATCHES_PER_PASS {
            let mut batch = self
                .take_batch(stream, std::mem::take(&mut rows), &mut total)
                .await?;
            inflight.extend(batch.iter().map(|r| r.seq));
            let limit = (MAX_RECORDS + inflight.len()) as i64;
            let sending = !batch.is_empty();
            let previous = settling.take();
            let (put, settled, claimed) = tokio::join!(
                async {
                    if sending {
                        Some(self.put(stream, &mut batch).await)
                    } else {
                        None
                    }
                },
                async {
                    match previous {
                        Some((b, r)) => Some(self.settle(stream, &b, r).await.map(|p| (p, b))),
                        None => None,
                    }
                },
                async {
                    if sending {
                        self.outbox.claim(stream, limit).await
                    } else {
                        Ok(Vec::new())
                    }
                },
            );
            // Filter the claim with the in-flight set as it was when the claim ran: rows settled
            // meanwhile may still have been in the outbox then.
            rows = claimed?
                .into_iter()
                .filter(|r| !inflight.contains(&r.seq))
                .take(MAX_RECORDS)
                .collect();
            if let Some(done) = settled {
                let (p, b) = done?;
                total.add(p);
                for r in &b {
                    inflight.remove(&r.seq);
                }
            }
            let Some(put) = put else { break };
            settling = Some((batch, put));
        }
        if let Some((b, r)) = settling.take() {
            total.add(self.settle(stream, &b, r).await?);
        }
        Ok(total)
    }

    /// The rows that fit one PutRecords call (≤ 500, ≤ 5 MiB); records over 1 MiB are
    /// dead-lettered here.
    async fn take_batch(
        &self,
        stream: &str,
        rows: Vec<Pending>,
        pass: &mut Pass,
    ) -> Result<Vec<Pending>, OutboxError> {
        let mut batch = Vec::with_capacity(rows.len());
        let mut bytes = 0;
        for row in rows {
            let size = row.payload.len() + row.partition_key.len();
            if size > MAX_RECORD_BYTES {
                self.outbox
                    .dead_letter(
                        row.seq,
                        &format!("record of {size} bytes is over Kinesis's 1 MiB limit"),
                    )
                    .await?;
                self.metrics
                    .dead_lettered
                    .with_label_values(&[stream, "too_large"])
                    .inc();
                pass.dead += 1;
                continue;
            }
            if bytes + size > MAX_CALL_BYTES || batch.len() == MAX_RECORDS {
                break; // the rest waits for the next call
            }
            bytes += size;
            batch.push(row);
        }
        Ok(batch)
    }

    /// Sends the batch. The payloads move into the request (settling needs only the rows' ids,
    /// keys and tries), so a batch is not copied.
    async fn put(&self, stream: &str, batch: &mut [Pending]) -> PutResult {
        let entries: Vec<PutRecordsRequestEntry> = batch
            .iter_mut()
            .map(|r| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(std::mem::take(&mut r.payload)))
                    .partition_key(&r.partition_key)
                    .build()
                    .expect("data and partition key are set")
            })
            .collect();
        let mut call = self.client.put_records().set_records(Some(entries));
        call = if stream.starts_with("arn:") {
            call.stream_arn(stream)
        } else {
            call.stream_name(stream)
        };
        self.metrics
            .records_per_put
            .with_label_values(&[stream])
            .observe(batch.len() as f64);
        let started = Instant::now();
        let result = call.send().await;
        self.metrics
            .put_duration
            .with_label_values(&[stream])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Records what Kinesis said: deletes (or archives) what it accepted, schedules retries or
    /// dead letters for the rest.
    async fn settle(
        &self,
        stream: &str,
        batch: &[Pending],
        result: PutResult,
    ) -> Result<Pass, OutboxError> {
        let mut pass = Pass::default();
        match result {
            Err(e) => {
                let text = format!("{}", aws_sdk_kinesis::error::DisplayErrorContext(&e));
                let reason = call_reason(&text);
                if reason == "throttled" {
                    self.metrics.throttled.with_label_values(&[stream]).inc();
                }
                warn!(stream, records = batch.len(), reason, error = %text, "PutRecords failed; will retry");
                for row in batch {
                    self.metrics
                        .failed
                        .with_label_values(&[stream, reason])
                        .inc();
                    if self.retry_or_dead(stream, row, reason, &text).await? {
                        pass.dead += 1;
                    } else {
                        pass.retried += 1;
                    }
                }
            }
            Ok(out) => {
                let mut done = Vec::with_capacity(batch.len());
                for (row, entry) in batch.iter().zip(out.records()) {
                    match entry.error_code() {
                        None => done.push(row.seq),
                        Some(code) => {
                            let reason = record_reason(code);
                            if reason == "throttled" {
                                self.metrics.throttled.with_label_values(&[stream]).inc();
                            }
                            self.metrics
                                .failed
                                .with_label_values(&[stream, reason])
                                .inc();
                            let msg = format!("{code}: {}", entry.error_message().unwrap_or(""));
                            if self.retry_or_dead(stream, row, reason, &msg).await? {
                                pass.dead += 1;
                            } else {
                                pass.retried += 1;
                            }
                        }
                    }
                }
                // Records the response does not cover (it never happens with a real server) are
                // retried rather than assumed published.
                for row in batch.iter().skip(out.records().len()) {
                    self.retry_or_dead(stream, row, "missing_result", "no result entry")
                        .await?;
                    pass.retried += 1;
                }
                self.outbox
                    .published(&done, self.cfg.keep_published.is_some())
                    .await?;
                self.metrics
                    .published
                    .with_label_values(&[stream])
                    .inc_by(done.len() as u64);
                pass.published += done.len();
                debug!(
                    stream,
                    published = done.len(),
                    retried = pass.retried,
                    "PutRecords done"
                );
            }
        }
        Ok(pass)
    }

    /// Schedules a retry, or dead-letters the event when it is out of tries or too old. Returns
    /// true when dead-lettered.
    async fn retry_or_dead(
        &self,
        stream: &str,
        row: &Pending,
        reason: &str,
        error: &str,
    ) -> Result<bool, OutboxError> {
        let tries = row.attempts + 1;
        let age = Duration::from_millis((now_ms() - row.created_ms).max(0) as u64);
        if tries >= i64::from(self.cfg.max_attempts) || age >= self.cfg.max_age {
            let why = format!("gave up after {tries} tries over {:.0?}: {error}", age);
            self.outbox.dead_letter(row.seq, &why).await?;
            self.metrics
                .dead_lettered
                .with_label_values(&[stream, reason])
                .inc();
            warn!(stream, id = %row.id, reason, "Event dead-lettered");
            return Ok(true);
        }
        self.outbox
            .retry(row.seq, backoff(&self.cfg, tries), error)
            .await?;
        Ok(false)
    }

    async fn update_gauges(&self) {
        let Ok(depths) = self.outbox.depth().await else {
            return;
        };
        self.metrics.outbox_depth.reset();
        self.metrics.outbox_oldest_age.reset();
        for d in depths {
            self.metrics
                .outbox_depth
                .with_label_values(&[&d.stream])
                .set(d.depth);
            self.metrics
                .outbox_oldest_age
                .with_label_values(&[&d.stream])
                .set(d.oldest_age_seconds);
        }
    }
}

/// Full jitter: uniform in [0, min(max, base · 2^tries)].
fn backoff(cfg: &RelayConfig, tries: i64) -> Duration {
    let exp = cfg
        .base_backoff
        .saturating_mul(1u32 << tries.clamp(0, 20) as u32);
    let cap = exp.min(cfg.max_backoff);
    let r = (uuid::Uuid::new_v4().as_u128() as u64) as f64 / u64::MAX as f64;
    cap.mul_f64(r)
}

fn record_reason(code: &str) -> &'static str {
    match code {
        "ProvisionedThroughputExceededException" => "throttled",
        "InternalFailure" | "InternalFailureException" | "ServiceUnavailable" => "internal_failure",
        c if c.starts_with("KMS") => "kms",
        _ => "other",
    }
}

fn call_reason(text: &str) -> &'static str {
    if text.contains("ProvisionedThroughputExceeded")
        || text.contains("LimitExceeded")
        || text.contains("Throttl")
    {
        "throttled"
    } else if text.contains("ResourceNotFound") {
        "stream_not_found"
    } else if text.contains("KMS") {
        "kms"
    } else {
        "call_error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let cfg = RelayConfig::default();
        for tries in 0..40 {
            assert!(backoff(&cfg, tries) <= cfg.max_backoff);
        }
        let samples: Vec<_> = (0..20).map(|_| backoff(&cfg, 5)).collect();
        assert!(samples.iter().any(|d| *d != samples[0]), "no jitter");
    }

    #[test]
    fn reasons() {
        assert_eq!(
            record_reason("ProvisionedThroughputExceededException"),
            "throttled"
        );
        assert_eq!(record_reason("KMSThrottlingException"), "kms");
        assert_eq!(
            call_reason("service error: LimitExceededException"),
            "throttled"
        );
    }
}
