//! The event pipeline's Prometheus metrics, registered against the registry the caller passes.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub enqueued: IntCounterVec,
    pub published: IntCounterVec,
    pub failed: IntCounterVec,
    pub dead_lettered: IntCounterVec,
    pub outbox_depth: prometheus::IntGaugeVec,
    pub outbox_oldest_age: prometheus::GaugeVec,
    /// 1 while Kinesis takes the stream's calls, 0 while whole calls fail (throttling aside).
    pub stream_up: prometheus::IntGaugeVec,
    /// 1 while the stream is stalled: events waiting, no call in flight, none for longer than
    /// any back-off (the relay starts it afresh; see `health`).
    pub stream_stalled: prometheus::IntGaugeVec,
    pub stream_stalls: IntCounterVec,
    /// 1 when the stream has server-side encryption on, 0 when off (checked at start and reload).
    pub stream_encrypted: prometheus::IntGaugeVec,
    pub put_duration: HistogramVec,
    pub throttled: IntCounterVec,
    pub records_per_put: HistogramVec,
    /// Events per aggregated Kinesis record (aggregated streams only).
    pub events_per_record: HistogramVec,
    /// Records held back because their shard was at its write limit.
    pub shard_limited: IntCounterVec,
    /// 1 while this process holds the lease (`relay`, `rollout`): every lease of the process,
    /// registered here once.
    pub lease_held: prometheus::IntGaugeVec,
}

impl Metrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Metrics> {
        let m = Metrics {
            enqueued: IntCounterVec::new(
                Opts::new(
                    "strangler_events_enqueued_total",
                    "Events written to the outbox",
                ),
                &["route", "stream"],
            )?,
            published: IntCounterVec::new(
                Opts::new(
                    "strangler_events_published_total",
                    "Events Kinesis accepted",
                ),
                &["stream"],
            )?,
            failed: IntCounterVec::new(
                Opts::new(
                    "strangler_events_failed_total",
                    "Events whose publish attempt failed, by reason: unreachable, throttled, internal_failure, kms, stream_not_found, denied (the stream backs off; no try is used up) or rejected (uses up one of the event's tries)",
                ),
                &["stream", "reason"],
            )?,
            dead_lettered: IntCounterVec::new(
                Opts::new(
                    "strangler_events_dead_lettered_total",
                    "Events moved to the dead-letter table",
                ),
                &["stream", "reason"],
            )?,
            outbox_depth: prometheus::IntGaugeVec::new(
                Opts::new("strangler_outbox_depth", "Events waiting in the outbox"),
                &["stream"],
            )?,
            outbox_oldest_age: prometheus::GaugeVec::new(
                Opts::new(
                    "strangler_outbox_oldest_age_seconds",
                    "Age of the oldest waiting event",
                ),
                &["stream"],
            )?,
            stream_up: prometheus::IntGaugeVec::new(
                Opts::new(
                    "strangler_stream_up",
                    "1 while Kinesis answers the stream's calls, 0 while it is unreachable (throttling aside)",
                ),
                &["stream"],
            )?,
            stream_stalled: prometheus::IntGaugeVec::new(
                Opts::new(
                    "strangler_stream_stalled",
                    "1 while the stream has events waiting and no call in flight for longer than any back-off (the relay restarts its sending)",
                ),
                &["stream"],
            )?,
            stream_stalls: IntCounterVec::new(
                Opts::new(
                    "strangler_stream_stalls_total",
                    "Stalls found on the stream (events waiting, no call in flight for longer than any back-off)",
                ),
                &["stream"],
            )?,
            stream_encrypted: prometheus::IntGaugeVec::new(
                Opts::new(
                    "strangler_stream_encrypted",
                    "1 when the stream has server-side encryption on, 0 when off (DescribeStreamSummary at start and after reloads)",
                ),
                &["stream"],
            )?,
            put_duration: HistogramVec::new(
                HistogramOpts::new(
                    "strangler_kinesis_put_duration_seconds",
                    "PutRecords call time",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
                &["stream"],
            )?,
            throttled: IntCounterVec::new(
                Opts::new(
                    "strangler_kinesis_throttled_total",
                    "Throttled calls and records",
                ),
                &["stream"],
            )?,
            records_per_put: HistogramVec::new(
                HistogramOpts::new(
                    "strangler_kinesis_records_per_put",
                    "Records in one PutRecords call",
                )
                .buckets(vec![1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0]),
                &["stream"],
            )?,
            events_per_record: HistogramVec::new(
                HistogramOpts::new(
                    "strangler_kinesis_events_per_record",
                    "Events in one Kinesis record of an aggregated stream",
                )
                .buckets(vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 500.0]),
                &["stream"],
            )?,
            shard_limited: IntCounterVec::new(
                Opts::new(
                    "strangler_kinesis_shard_limited_total",
                    "Records held back because their shard was at its write limit (events.shard_records_per_second, shard_bytes_per_second)",
                ),
                &["stream"],
            )?,
            lease_held: prometheus::IntGaugeVec::new(
                Opts::new(
                    "strangler_lease_held",
                    "1 while this replica holds the lease, 0 for one it knows another replica holds (relay:<stream>: it sends that stream's events to Kinesis; rollout: it drives the rollouts)",
                ),
                &["lease"],
            )?,
        };
        registry.register(Box::new(m.lease_held.clone()))?;
        registry.register(Box::new(m.enqueued.clone()))?;
        registry.register(Box::new(m.published.clone()))?;
        registry.register(Box::new(m.failed.clone()))?;
        registry.register(Box::new(m.dead_lettered.clone()))?;
        registry.register(Box::new(m.outbox_depth.clone()))?;
        registry.register(Box::new(m.outbox_oldest_age.clone()))?;
        registry.register(Box::new(m.stream_up.clone()))?;
        registry.register(Box::new(m.stream_stalled.clone()))?;
        registry.register(Box::new(m.stream_stalls.clone()))?;
        registry.register(Box::new(m.stream_encrypted.clone()))?;
        registry.register(Box::new(m.put_duration.clone()))?;
        registry.register(Box::new(m.throttled.clone()))?;
        registry.register(Box::new(m.records_per_put.clone()))?;
        registry.register(Box::new(m.events_per_record.clone()))?;
        registry.register(Box::new(m.shard_limited.clone()))?;
        Ok(m)
    }
}
