//! Each stream's health as the relay sees it: how many calls in a row failed for the stream's
//! sake (the stream's back-off), whether it is down (whole calls failing for a reason other than
//! throttling), and what an incident looks like in the log: one WARN when the stream goes down,
//! with the error; one INFO once it is back and the events that waited are published, with how
//! long it was down, how many events waited and how long the drain took. A stream that flaps
//! gets at most one WARN a minute (the next one says how many were left out). Every failed call
//! is also counted in the metrics, and `strangler_stream_up` is the gauge to alert on.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::failure::Failure;
use crate::metrics::Metrics;

/// The least time between two "unreachable" WARNs for one stream, and between two dead-letter
/// WARNs.
const DOWN_WARN_EVERY: Duration = Duration::from_secs(60);
const DEAD_WARN_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(crate) struct Health {
    streams: HashMap<String, StreamHealth>,
}

#[derive(Default)]
struct StreamHealth {
    /// Calls in a row that failed for the stream's sake.
    streak: u32,
    /// Down since, and why.
    down: Option<(Instant, Failure)>,
    /// Back since, after being down this long, with this many events waiting then.
    back: Option<(Instant, Duration, usize)>,
    /// What `strangler_stream_up` says (set on change only).
    up: Option<bool>,
    down_warns: RateLimit,
    dead_warns: RateLimit,
}

/// A log line at most once per period; the next one says how many were left out.
#[derive(Default)]
struct RateLimit {
    last: Option<Instant>,
    left_out: u64,
}

impl RateLimit {
    /// `Some(lines left out since the last one)` when a line may be logged now.
    fn allow(&mut self, every: Duration) -> Option<u64> {
        if self.last.is_some_and(|t| t.elapsed() < every) {
            self.left_out += 1;
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.left_out))
    }
}

impl Health {
    /// The stream's state, created on first sight (the name is copied only then).
    fn stream(&mut self, stream: &str) -> &mut StreamHealth {
        if !self.streams.contains_key(stream) {
            self.streams
                .insert(stream.to_string(), StreamHealth::default());
        }
        self.streams.get_mut(stream).expect("inserted above")
    }

    /// A call failed for the stream's sake (`whole_call`: the call itself, not some of its
    /// records). Returns the streak of such failures, for the stream's back-off.
    pub(crate) fn failed(
        &mut self,
        metrics: &Metrics,
        stream: &str,
        failure: Failure,
        whole_call: bool,
        error: &str,
        waiting: usize,
    ) -> u32 {
        let h = self.stream(stream);
        h.streak = h.streak.saturating_add(1);
        debug!(
            stream,
            reason = failure.label(),
            streak = h.streak,
            error,
            "PutRecords failed; the stream backs off"
        );
        if whole_call && failure.stream_down() && h.down.is_none() {
            h.down = Some((Instant::now(), failure));
            h.back = None;
            h.up = Some(false);
            metrics.stream_up.with_label_values(&[stream]).set(0);
            if let Some(left_out) = h.down_warns.allow(DOWN_WARN_EVERY) {
                warn!(
                    stream,
                    reason = failure.label(),
                    error,
                    waiting,
                    left_out,
                    "Kinesis stream unreachable: events wait in the outbox and are sent when it is back"
                );
            }
        }
        h.streak
    }

    /// A call reached Kinesis and was answered (some records may still have failed).
    pub(crate) fn reached(&mut self, metrics: &Metrics, stream: &str, waiting: usize) {
        let h = self.stream(stream);
        if let Some((since, failure)) = h.down.take() {
            let down_for = since.elapsed();
            debug!(
                stream,
                reason = failure.label(),
                ?down_for,
                waiting,
                "Kinesis stream reachable again; draining"
            );
            h.back = Some((Instant::now(), down_for, waiting));
        }
        if h.up != Some(true) {
            h.up = Some(true);
            metrics.stream_up.with_label_values(&[stream]).set(1);
        }
    }

    /// An event was dead-lettered: one WARN per stream every 10 s at most (the next says how
    /// many were left out; the metric counts each).
    pub(crate) fn dead_lettered(&mut self, stream: &str, id: &str, reason: &str, why: &str) {
        if let Some(left_out) = self.stream(stream).dead_warns.allow(DEAD_WARN_EVERY) {
            warn!(stream, id, reason, why, left_out, "Event dead-lettered");
        }
    }

    /// A call carried records and none failed for the stream's sake: its back-off ends.
    pub(crate) fn succeeded(&mut self, stream: &str) {
        if let Some(h) = self.streams.get_mut(stream) {
            h.streak = 0;
        }
    }

    /// The stream holds `waiting` events: once a stream that was down has drained, the INFO.
    pub(crate) fn waiting(&mut self, stream: &str, waiting: usize) {
        let Some(h) = self.streams.get_mut(stream) else {
            return;
        };
        if waiting == 0
            && let Some((at, down_for, waited)) = h.back.take()
        {
            info!(
                stream,
                down_for = %format_args!("{down_for:.1?}"),
                waited,
                drained_in = %format_args!("{:.1?}", at.elapsed()),
                "Kinesis stream reachable again: every event that waited is published"
            );
        }
    }
}

/// The stream's pause after `streak` failed calls in a row: `base · 2^(streak-1)` capped at
/// `max`, half of it fixed and half random ("equal jitter"), so a stream that is down is probed
/// at a steady pace and replicas do not probe in step.
pub(crate) fn pause(base: Duration, max: Duration, streak: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << streak.saturating_sub(1).min(20));
    let cap = exp.min(max);
    cap / 2 + (cap / 2).mul_f64(random_unit())
}

/// A uniform random number in [0, 1].
pub(crate) fn random_unit() -> f64 {
    (uuid::Uuid::new_v4().as_u128() as u64) as f64 / u64::MAX as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_grows_to_its_cap_with_jitter() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(30));
        let p1 = pause(base, max, 1);
        assert!(p1 >= Duration::from_millis(50) && p1 <= base, "{p1:?}");
        for streak in 1..60 {
            let p = pause(base, max, streak);
            assert!(p <= max, "{p:?}");
        }
        assert!(pause(base, max, 40) >= max / 2);
        let samples: Vec<_> = (0..20).map(|_| pause(base, max, 8)).collect();
        assert!(samples.iter().any(|d| *d != samples[0]), "no jitter");
    }
}
