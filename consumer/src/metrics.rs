//! A consumer's progress as Prometheus metrics, read from [`Progress`] at each scrape (nothing
//! is counted twice, nothing on the apply path): register [`ProgressMetrics`] on the
//! application's registry with [`crate::Consumer::register_metrics`].
//!
//! | metric | labels | |
//! |---|---|---|
//! | `strangler_consumer_events_applied_total` | consumer, stream, shard | events handed to the handler and committed |
//! | `strangler_consumer_duplicates_skipped_total` | consumer, stream, shard | events skipped as applied before |
//! | `strangler_consumer_behind_latest_seconds` | consumer, stream, shard | how far the last read was behind the shard's newest record (Kinesis's `MillisBehindLatest`); shards read to their end are left out |
//! | `strangler_consumer_unreadable_total` | consumer, stream | records that were not CloudEvents |
//! | `strangler_consumer_batches_total` | consumer, stream | transactions committed |
//! | `strangler_consumer_leases_held` | consumer, stream | shard leases this instance holds (PostgreSQL; see [`crate::leases`]) |
//! | `strangler_consumer_lease_changes_total` | consumer, stream | shard leases this instance took or stole |
//!
//! The last sequence number applied per shard is in [`Progress::shards`], not a metric: a
//! Kinesis sequence number has up to 128 digits, more than a Prometheus sample holds.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts};

use crate::Progress;

pub struct ProgressMetrics {
    consumer: String,
    stream: String,
    progress: Arc<Progress>,
    /// Only their descriptions are used: every scrape builds its values afresh.
    templates: Families,
}

struct Families {
    applied: IntCounterVec,
    duplicates: IntCounterVec,
    behind: GaugeVec,
    unreadable: IntCounterVec,
    batches: IntCounterVec,
    leases_held: IntGaugeVec,
    lease_changes: IntCounterVec,
}

impl Families {
    fn new() -> Families {
        const SHARD: &[&str] = &["consumer", "stream", "shard"];
        const STREAM: &[&str] = &["consumer", "stream"];
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric")
        };
        Families {
            applied: counter(
                "strangler_consumer_events_applied_total",
                "Events handed to the handler and committed, per shard",
                SHARD,
            ),
            duplicates: counter(
                "strangler_consumer_duplicates_skipped_total",
                "Events skipped because their id was applied before, per shard",
                SHARD,
            ),
            behind: GaugeVec::new(
                Opts::new(
                    "strangler_consumer_behind_latest_seconds",
                    "How far the last read was behind the shard's newest record",
                ),
                SHARD,
            )
            .expect("a valid metric"),
            unreadable: counter(
                "strangler_consumer_unreadable_total",
                "Records that were not CloudEvents (passed over, logged)",
                STREAM,
            ),
            batches: counter(
                "strangler_consumer_batches_total",
                "Transactions committed",
                STREAM,
            ),
            leases_held: IntGaugeVec::new(
                Opts::new(
                    "strangler_consumer_leases_held",
                    "Shard leases this instance holds",
                ),
                STREAM,
            )
            .expect("a valid metric"),
            lease_changes: counter(
                "strangler_consumer_lease_changes_total",
                "Shard leases this instance took or stole",
                STREAM,
            ),
        }
    }
}

impl ProgressMetrics {
    pub fn new(consumer: &str, stream: &str, progress: Arc<Progress>) -> ProgressMetrics {
        ProgressMetrics {
            consumer: consumer.to_string(),
            stream: stream.to_string(),
            progress,
            templates: Families::new(),
        }
    }
}

impl Collector for ProgressMetrics {
    fn desc(&self) -> Vec<&Desc> {
        let t = &self.templates;
        [
            t.applied.desc(),
            t.duplicates.desc(),
            t.behind.desc(),
            t.unreadable.desc(),
            t.batches.desc(),
            t.leases_held.desc(),
            t.lease_changes.desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let f = Families::new();
        let (c, s) = (self.consumer.as_str(), self.stream.as_str());
        for (shard, p) in self.progress.shards() {
            let labels = [c, s, shard.as_str()];
            f.applied.with_label_values(&labels).inc_by(p.applied);
            f.duplicates.with_label_values(&labels).inc_by(p.duplicates);
            if !p.finished {
                f.behind
                    .with_label_values(&labels)
                    .set(p.millis_behind as f64 / 1000.0);
            }
        }
        f.unreadable
            .with_label_values(&[c, s])
            .inc_by(self.progress.unreadable());
        f.batches
            .with_label_values(&[c, s])
            .inc_by(self.progress.batches());
        f.leases_held
            .with_label_values(&[c, s])
            .set(i64::try_from(self.progress.leases_held()).unwrap_or(i64::MAX));
        f.lease_changes
            .with_label_values(&[c, s])
            .inc_by(self.progress.lease_changes());
        [
            f.applied.collect(),
            f.duplicates.collect(),
            f.behind.collect(),
            f.unreadable.collect(),
            f.batches.collect(),
            f.leases_held.collect(),
            f.lease_changes.collect(),
        ]
        .concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_as_metrics_per_shard() {
        let progress = Arc::new(Progress::default());
        progress.committed("shard-0", 5, 1, 2);
        progress.committed("shard-1", 3, 0, 0);
        progress.shard("shard-0", |p| p.millis_behind = 1500);
        progress.shard("shard-1", |p| p.finished = true);
        let registry = prometheus::Registry::new();
        registry
            .register(Box::new(ProgressMetrics::new(
                "projector",
                "orders",
                progress,
            )))
            .unwrap();
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        for line in [
            r#"strangler_consumer_events_applied_total{consumer="projector",shard="shard-0",stream="orders"} 5"#,
            r#"strangler_consumer_events_applied_total{consumer="projector",shard="shard-1",stream="orders"} 3"#,
            r#"strangler_consumer_duplicates_skipped_total{consumer="projector",shard="shard-0",stream="orders"} 1"#,
            r#"strangler_consumer_behind_latest_seconds{consumer="projector",shard="shard-0",stream="orders"} 1.5"#,
            r#"strangler_consumer_unreadable_total{consumer="projector",stream="orders"} 2"#,
            r#"strangler_consumer_batches_total{consumer="projector",stream="orders"} 2"#,
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        // A shard read to its end has no lag to show.
        assert!(!text.contains(r#"behind_latest_seconds{consumer="projector",shard="shard-1""#));
    }
}
