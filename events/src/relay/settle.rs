//! Settling a finished call: what Kinesis accepted leaves the outbox; rows that failed for the
//! stream's sake wait for the stream's back-off without using up a try; rows Kinesis rejected
//! use up a try and are retried after their own back-off, or dead-lettered.

use std::collections::HashMap;
use std::time::Duration;

use tracing::debug;

use super::calls::Sent;
use super::packing::Carried;
use super::{Pass, Relay, RelayConfig, RelayError};
use crate::failure::Failure;
use crate::health;
use crate::now_ms;

impl Relay {
    pub(super) async fn settle_joined(
        &mut self,
        done: Result<Sent, tokio::task::JoinError>,
    ) -> Result<Pass, RelayError> {
        match done {
            Ok(sent) => self.settle(sent).await,
            // A panicked call: its rows are in flight for good, so start over.
            Err(e) => Err(RelayError::Call(e)),
        }
    }

    /// Records what Kinesis said: deletes (or archives) what it accepted; rows that failed for
    /// the stream's sake wait for the stream's back-off without using up a try; rows Kinesis
    /// rejected use up a try (retried with their own back-off, or dead-lettered).
    async fn settle(&mut self, sent: Sent) -> Result<Pass, RelayError> {
        let Sent {
            carried:
                Carried {
                    stream,
                    seqs,
                    counts,
                    shard_ids,
                    bytes,
                },
            result,
            sent_ms,
        } = sent;
        self.backlog.call_done(&stream);
        self.health.call_back(&self.metrics, &stream);
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                let failure = Failure::of_call(&e);
                let text = format!("{}", aws_sdk_kinesis::error::DisplayErrorContext(&e));
                let failed: Vec<_> = seqs.iter().map(|&s| (s, failure)).collect();
                return if failure.counts_try() {
                    self.rejected(&stream, &failed, &text).await
                } else {
                    self.stream_failed(&stream, &failed, true, &text).await
                };
            }
        };
        let waiting = self.backlog.depth(&stream);
        let cursor = self.backlog.cursor;
        self.health.reached(&self.metrics, &stream, cursor, waiting);
        let mut done = Vec::with_capacity(seqs.len());
        let mut for_stream = Vec::new();
        let mut rejected = Vec::new();
        let mut misplaced = Vec::new();
        let mut stream_error = String::new();
        let mut reject_error = String::new();
        let mut rows = seqs.as_slice();
        let mut results = out.records().iter();
        let (mut accepted, mut accepted_bytes) = (0, 0);
        for (i, &n) in counts.iter().enumerate() {
            let (carried, rest) = rows.split_at(n);
            rows = rest;
            // Rows the response does not cover (it never happens with a real server) are
            // retried rather than assumed published.
            let Some(entry) = results.next() else {
                for_stream.extend(carried.iter().map(|&s| (s, Failure::Internal)));
                stream_error = "no result entry for the record".into();
                continue;
            };
            match entry.error_code() {
                None => match (shard_ids.get(i), entry.shard_id()) {
                    // An aggregate on another shard than the map said (the stream was
                    // resharded): its events whose keys belong elsewhere are in the wrong
                    // shard, where consumers drop them (the KCL's rule: a sub-record outside
                    // the shard's hash range is not the shard's). Its rows are sent again,
                    // plain until the map is fetched again, no try used; the copies of those
                    // that were in the right place are duplicates consumers skip by id.
                    (Some(Some(meant)), Some(got)) if meant != got => {
                        debug!(
                            stream,
                            meant,
                            got,
                            "Aggregate landed on another shard: sending its events again and refreshing the shard map"
                        );
                        self.shards.entry(stream.clone()).or_default().stale = true;
                        misplaced.extend_from_slice(carried);
                    }
                    _ => {
                        done.extend_from_slice(carried);
                        accepted += 1;
                        accepted_bytes += bytes.get(i).copied().unwrap_or(0) as i64;
                    }
                },
                Some(code) => {
                    let failure = Failure::of_record(code);
                    let text = format!("{code}: {}", entry.error_message().unwrap_or(""));
                    if failure.counts_try() {
                        rejected.extend(carried.iter().map(|&s| (s, failure)));
                        reject_error = text;
                    } else {
                        for_stream.extend(carried.iter().map(|&s| (s, failure)));
                        stream_error = text;
                    }
                }
            }
        }
        self.usage.sent(
            &stream,
            accepted,
            done.len() as i64,
            accepted_bytes,
            sent_ms,
        );
        // Counted when Kinesis accepts them, before their rows leave the outbox: whoever sees
        // the outbox drained also sees the count (a test read it in between and got 54 of 60).
        self.metrics
            .published
            .with_label_values(&[&stream])
            .inc_by(done.len() as u64);
        self.outbox_for(&stream)
            .published(&done, self.cfg.keep_published.is_some())
            .await?;
        for &seq in &done {
            self.backlog.remove(&stream, seq);
        }
        self.backlog.release(&stream, &misplaced);
        self.health
            .published(&stream, self.backlog.oldest_seq(&stream));
        let mut pass = Pass {
            published: done.len(),
            retried: misplaced.len(),
            ..Pass::default()
        };
        if for_stream.is_empty() {
            self.health.succeeded(&stream);
            self.backlog.resume(&stream);
        } else {
            pass.add(
                self.stream_failed(&stream, &for_stream, false, &stream_error)
                    .await?,
            );
        }
        pass.add(self.rejected(&stream, &rejected, &reject_error).await?);
        debug!(
            stream,
            published = done.len(),
            retried = pass.retried,
            "PutRecords done"
        );
        Ok(pass)
    }

    /// Rows that failed for the stream's sake (`whole_call`: the call itself failed): they wait,
    /// no try used, while the stream backs off; only those older than `max_age` are
    /// dead-lettered.
    async fn stream_failed(
        &mut self,
        stream: &str,
        failed: &[(i64, Failure)],
        whole_call: bool,
        error: &str,
    ) -> Result<Pass, RelayError> {
        let mut pass = Pass::default();
        let Some(&(_, failure)) = failed.first() else {
            return Ok(pass);
        };
        self.count_failures(stream, failed);
        let now = now_ms();
        let mut waiting = Vec::with_capacity(failed.len());
        for &(seq, _) in failed {
            let Some(row) = self.backlog.get(stream, seq) else {
                continue;
            };
            let age = Duration::from_millis((now - row.created_ms).max(0) as u64);
            if age >= self.cfg.max_age {
                let why = format!(
                    "older than max_age ({:.0?}) while the stream failed: {error}",
                    self.cfg.max_age
                );
                self.dead_letter(stream, seq, "expired", &why).await?;
                pass.dead += 1;
                continue;
            }
            waiting.push(seq);
        }
        self.backlog.release(stream, &waiting);
        let depth = self.backlog.depth(stream);
        let streak = self
            .health
            .failed(&self.metrics, stream, failure, whole_call, error, depth);
        let pause = health::pause(self.cfg.base_backoff, self.cfg.max_backoff, streak);
        self.backlog.pause(stream, now + pause.as_millis() as i64);
        pass.retried = waiting.len();
        Ok(pass)
    }

    /// Rows Kinesis rejected: each uses up a try, and is retried after its own back-off or,
    /// out of tries or too old, dead-lettered.
    async fn rejected(
        &mut self,
        stream: &str,
        failed: &[(i64, Failure)],
        error: &str,
    ) -> Result<Pass, RelayError> {
        let mut pass = Pass::default();
        if failed.is_empty() {
            return Ok(pass);
        }
        self.count_failures(stream, failed);
        let now = now_ms();
        let mut retry = Vec::with_capacity(failed.len());
        let mut earliest = i64::MAX;
        for &(seq, failure) in failed {
            let Some(row) = self.backlog.get(stream, seq) else {
                continue;
            };
            let tries = row.attempts + 1;
            let age = Duration::from_millis((now - row.created_ms).max(0) as u64);
            if tries >= i64::from(self.cfg.max_attempts) || age >= self.cfg.max_age {
                let why = format!("gave up after {tries} tries over {age:.0?}: {error}");
                self.dead_letter(stream, seq, failure.label(), &why).await?;
                pass.dead += 1;
                continue;
            }
            let at = now + backoff(&self.cfg, tries).as_millis() as i64;
            earliest = earliest.min(at);
            self.backlog.retry_at(stream, seq, at);
            retry.push(seq);
        }
        self.outbox_for(stream)
            .retry(&retry, earliest, error)
            .await?;
        pass.retried = retry.len();
        Ok(pass)
    }

    fn count_failures(&self, stream: &str, failed: &[(i64, Failure)]) {
        let mut by_kind: HashMap<Failure, u64> = HashMap::new();
        for &(_, f) in failed {
            *by_kind.entry(f).or_default() += 1;
        }
        for (f, n) in by_kind {
            if f == Failure::Throttled {
                self.metrics
                    .throttled
                    .with_label_values(&[stream])
                    .inc_by(n);
            }
            self.metrics
                .failed
                .with_label_values(&[stream, f.label()])
                .inc_by(n);
        }
    }

    /// Moves a row to the dead letters (counted; logged as `Health::dead_lettered` allows).
    async fn dead_letter(
        &mut self,
        stream: &str,
        seq: i64,
        reason: &'static str,
        why: &str,
    ) -> Result<(), RelayError> {
        self.outbox_for(stream).dead_letter(seq, why).await?;
        let id = self
            .backlog
            .get(stream, seq)
            .map(|r| r.id.clone())
            .unwrap_or_default();
        self.backlog.remove(stream, seq);
        self.metrics
            .dead_lettered
            .with_label_values(&[stream, reason])
            .inc();
        self.health.dead_lettered(stream, &id, reason, why);
        Ok(())
    }
}

/// Full jitter: uniform in [0, min(max, base · 2^tries)].
fn backoff(cfg: &RelayConfig, tries: i64) -> Duration {
    let exp = cfg
        .base_backoff
        .saturating_mul(1u32 << tries.clamp(0, 20) as u32);
    let cap = exp.min(cfg.max_backoff);
    cap.mul_f64(health::random_unit())
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
}
