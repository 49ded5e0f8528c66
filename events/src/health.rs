//! Each stream's health as the relay sees it: how many calls in a row failed for the stream's
//! sake (the stream's back-off), whether it is down (whole calls failing for a reason other than
//! throttling), whether it is stalled, and what an incident looks like in the log.
//!
//! An incident is one WARN when the stream goes down, with the error, and one INFO once it is
//! back and every event that waited when it came back is published, with how long it was down
//! (from the first failure to the last recovery, across flaps) and how long those events took to
//! go out. A stream that goes down again before they are out is the same incident. A new incident
//! within a minute of the last WARN is not warned again (the next WARN says how many were left
//! out). Every failed call is also counted in the metrics; `strangler_stream_up` is the gauge to
//! alert on.
//!
//! A stall is a stream with events waiting, none of its calls in flight and none made or
//! answered for longer than any back-off can last: the relay's own bookkeeping went wrong. It is
//! counted (`strangler_stream_stalled`, `strangler_stream_stalls_total`), logged once, and the
//! relay starts the stream afresh (`Backlog::unstick`). The calls in flight counted here are the
//! relay's spawned tasks, not the backlog's bookkeeping, so one cannot hide the other's error.

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
    /// The stream went down and what waited then is not all published yet.
    incident: Option<Incident>,
    /// What `strangler_stream_up` says (set on change only).
    up: Option<bool>,
    down_warns: RateLimit,
    dead_warns: RateLimit,
    /// Calls in flight (spawned and not yet settled).
    calls: usize,
    /// When a call was last made or answered.
    last_call: Option<Instant>,
    /// Since when events have waited with no call in flight.
    idle_since: Option<Instant>,
    /// A stall was found and not yet ended by a call.
    stalled: bool,
}

struct Incident {
    since: Instant,
    reason: Failure,
    /// Down now (no call reached Kinesis since the last failure).
    down: bool,
    /// When the last call got through after being down.
    back: Option<Instant>,
    /// The highest `seq` read when the stream came back: the incident ends once no event of the
    /// stream up to it waits.
    mark: i64,
    /// The most events waiting while down.
    waited: usize,
    /// Whether its WARN was logged (so its INFO is too).
    warned: bool,
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

/// What `Health::check_stall` found.
pub(crate) struct Stall {
    pub(crate) idle_for: Duration,
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
        if !(whole_call && failure.stream_down()) {
            return h.streak;
        }
        if h.up != Some(false) {
            h.up = Some(false);
            metrics.stream_up.with_label_values(&[stream]).set(0);
        }
        match &mut h.incident {
            Some(i) => {
                i.down = true;
                i.waited = i.waited.max(waiting);
            }
            None => {
                let warned = h.down_warns.allow(DOWN_WARN_EVERY);
                if let Some(left_out) = warned {
                    warn!(
                        stream,
                        reason = failure.label(),
                        error,
                        waiting,
                        left_out,
                        "Kinesis stream unreachable: events wait in the outbox and are sent when it is back"
                    );
                }
                h.incident = Some(Incident {
                    since: Instant::now(),
                    reason: failure,
                    down: true,
                    back: None,
                    mark: 0,
                    waited: waiting,
                    warned: warned.is_some(),
                });
            }
        }
        h.streak
    }

    /// A call reached Kinesis and was answered (some records may still have failed); `cursor`
    /// is the highest `seq` the relay has read, `waiting` the events waiting for the stream.
    pub(crate) fn reached(&mut self, metrics: &Metrics, stream: &str, cursor: i64, waiting: usize) {
        let h = self.stream(stream);
        if let Some(i) = h.incident.as_mut().filter(|i| i.down) {
            i.down = false;
            i.back = Some(Instant::now());
            i.mark = cursor;
            i.waited = i.waited.max(waiting);
            debug!(
                stream,
                reason = i.reason.label(),
                down_for = ?i.since.elapsed(),
                waiting,
                "Kinesis stream reachable again; draining"
            );
        }
        if h.up != Some(true) {
            h.up = Some(true);
            metrics.stream_up.with_label_values(&[stream]).set(1);
        }
    }

    /// Events were published: `oldest` is the stream's lowest `seq` still waiting. Once nothing
    /// that waited when the stream came back waits any more, the incident's INFO.
    pub(crate) fn published(&mut self, stream: &str, oldest: Option<i64>) {
        let Some(h) = self.streams.get_mut(stream) else {
            return;
        };
        let Some(i) = h.incident.as_ref() else {
            return;
        };
        let Some(back) = i.back.filter(|_| !i.down) else {
            return;
        };
        if oldest.is_some_and(|seq| seq <= i.mark) {
            return;
        }
        let down_for = back.duration_since(i.since);
        let drained_in = back.elapsed();
        if i.warned {
            info!(
                stream,
                reason = i.reason.label(),
                down_for = %format_args!("{down_for:.1?}"),
                waited = i.waited,
                drained_in = %format_args!("{drained_in:.1?}"),
                "Kinesis stream reachable again: every event that waited is published"
            );
        } else {
            debug!(
                stream,
                ?down_for,
                waited = i.waited,
                ?drained_in,
                "Kinesis stream back and drained"
            );
        }
        h.incident = None;
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

    /// A call of the stream was made.
    pub(crate) fn call_out(&mut self, stream: &str) {
        let h = self.stream(stream);
        h.calls += 1;
        h.last_call = Some(Instant::now());
        h.idle_since = None;
    }

    /// A call of the stream came back (whatever it says); ends a stall.
    pub(crate) fn call_back(&mut self, metrics: &Metrics, stream: &str) {
        let h = self.stream(stream);
        h.calls = h.calls.saturating_sub(1);
        h.last_call = Some(Instant::now());
        if std::mem::take(&mut h.stalled) {
            metrics.stream_stalled.with_label_values(&[stream]).set(0);
            info!(stream, "Kinesis stream sending again after a stall");
        }
    }

    /// Every call in flight was given up (the relay starts over).
    pub(crate) fn calls_dropped(&mut self) {
        for h in self.streams.values_mut() {
            h.calls = 0;
        }
    }

    /// Whether the stream, with `waiting` events, is stalled at `now`: events waiting, no call
    /// in flight, none made or answered for `after`. Counted and logged once per stall (the
    /// caller starts the stream afresh); `None` otherwise.
    pub(crate) fn check_stall(
        &mut self,
        metrics: &Metrics,
        stream: &str,
        waiting: usize,
        now: Instant,
        after: Duration,
    ) -> Option<Stall> {
        let h = self.stream(stream);
        if waiting == 0 || h.calls > 0 {
            h.idle_since = None;
            if waiting == 0 && std::mem::take(&mut h.stalled) {
                metrics.stream_stalled.with_label_values(&[stream]).set(0);
            }
            return None;
        }
        let idle_since = *h.idle_since.get_or_insert(now);
        let since = h.last_call.map_or(idle_since, |t| t.max(idle_since));
        let idle_for = now.saturating_duration_since(since);
        if idle_for < after {
            return None;
        }
        // Counted once per stall; the clock starts again so a stream that stays stuck after
        // being started afresh is found again.
        h.idle_since = Some(now);
        h.last_call = None;
        metrics.stream_stalls.with_label_values(&[stream]).inc();
        if !std::mem::replace(&mut h.stalled, true) {
            metrics.stream_stalled.with_label_values(&[stream]).set(1);
        }
        Some(Stall { idle_for })
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

/// How long a stream may wait with events and no call before it counts as stalled: longer than
/// its longest back-off and a row's longest retry delay (both `max_backoff`), twice over, and
/// a shard's write-limit window; at least 5 s.
pub(crate) fn stall_after(max_backoff: Duration) -> Duration {
    (max_backoff * 2 + Duration::from_secs(2)).max(Duration::from_secs(5))
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

    fn metrics() -> Metrics {
        Metrics::new(&prometheus::Registry::new()).unwrap()
    }

    #[test]
    fn a_stream_waiting_with_no_call_for_too_long_is_a_stall_counted_once() {
        let m = metrics();
        let mut h = Health::default();
        let after = Duration::from_secs(5);
        let t0 = Instant::now();
        // A call in flight: never a stall, however long.
        h.call_out("s");
        assert!(h.check_stall(&m, "s", 10, t0 + after * 10, after).is_none());
        h.call_back(&m, "s");
        // Nothing waiting: never a stall.
        assert!(h.check_stall(&m, "s", 0, t0 + after * 20, after).is_none());
        // Waiting with no call: not yet, then a stall, counted once.
        let t1 = Instant::now() + after * 30;
        assert!(h.check_stall(&m, "s", 10, t1, after).is_none());
        assert!(h.check_stall(&m, "s", 10, t1 + after / 2, after).is_none());
        let stall = h.check_stall(&m, "s", 10, t1 + after, after).unwrap();
        assert!(stall.idle_for >= after);
        assert_eq!(m.stream_stalled.with_label_values(&["s"]).get(), 1);
        assert!(
            h.check_stall(&m, "s", 10, t1 + after + after / 2, after)
                .is_none()
        );
        assert_eq!(m.stream_stalls.with_label_values(&["s"]).get(), 1);
        // Still stuck after being started afresh: found again.
        assert!(h.check_stall(&m, "s", 10, t1 + after * 2, after).is_some());
        assert_eq!(m.stream_stalls.with_label_values(&["s"]).get(), 2);
        // A call ends it.
        h.call_out("s");
        h.call_back(&m, "s");
        assert_eq!(m.stream_stalled.with_label_values(&["s"]).get(), 0);
    }

    #[test]
    fn an_incident_spans_flaps_and_ends_when_what_waited_is_out() {
        let m = metrics();
        let mut h = Health::default();
        h.failed(&m, "s", Failure::Unreachable, true, "refused", 5);
        h.reached(&m, "s", 100, 40);
        // Down again before what waited is out: the same incident.
        h.failed(&m, "s", Failure::Unreachable, true, "refused", 40);
        assert!(h.streams["s"].incident.as_ref().unwrap().down);
        h.reached(&m, "s", 120, 60);
        // Rows up to 120 waited; newer ones do not hold the incident open.
        h.published("s", Some(90));
        assert!(h.streams["s"].incident.is_some());
        h.published("s", Some(121));
        assert!(h.streams["s"].incident.is_none());
        assert_eq!(m.stream_up.with_label_values(&["s"]).get(), 1);
    }
}
