//! The group writer's figures, for the question "where does a publishing request wait": how
//! long each commit takes, how many events one carries, and how long a write waits from being
//! handed to the writer to the end of the commit that covers it. Registered on the
//! application's registry with [`crate::Store::register_metrics`].
//!
//! | metric | type | |
//! |---|---|---|
//! | `strangler_outbox_commit_duration_seconds` | histogram | one group commit (the transaction and its fsync) |
//! | `strangler_outbox_commit_events` | histogram | events one commit added (commits that added none are left out) |
//! | `strangler_outbox_write_wait_seconds` | histogram | a write handed to the writer → its commit done (queue, gathering, commit) |

use prometheus::{Histogram, HistogramOpts, Registry};

const SECONDS: &[f64] = &[
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const EVENTS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

#[derive(Clone)]
pub(crate) struct WriterMetrics {
    pub(crate) commit: Histogram,
    pub(crate) events: Histogram,
    pub(crate) wait: Histogram,
}

impl WriterMetrics {
    pub(crate) fn new() -> WriterMetrics {
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                .expect("a valid histogram")
        };
        WriterMetrics {
            commit: histogram(
                "strangler_outbox_commit_duration_seconds",
                "One group commit of the outbox's writes (transaction and fsync)",
                SECONDS,
            ),
            events: histogram(
                "strangler_outbox_commit_events",
                "Events one group commit added",
                EVENTS,
            ),
            wait: histogram(
                "strangler_outbox_write_wait_seconds",
                "A write handed to the group writer until the commit covering it was done",
                SECONDS,
            ),
        }
    }

    pub(crate) fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.commit.clone()))?;
        registry.register(Box::new(self.events.clone()))?;
        registry.register(Box::new(self.wait.clone()))
    }
}
