//! The dual-write event pipeline, independent of the proxy: CloudEvents envelopes
//! ([`envelope`]), and the relay that drains the store's outbox (`strangler-store`) into AWS
//! Kinesis with batching, retries, per-key order and dead letters ([`relay`]), optionally
//! KPL-aggregated ([`aggregate`]).
//!
//! The proxy enqueues; the relay publishes; nothing accepted into the outbox is dropped: it is
//! published, or kept as a dead letter with its reason until someone re-drives it.

pub mod aggregate;
pub mod backlog;
pub mod capacity;
pub mod envelope;
pub mod failure;
mod health;
pub mod kinesis;
pub mod metrics;
pub mod relay;

pub use envelope::{CloudEvent, Data};
pub use metrics::Metrics;
pub use relay::{Relay, RelayConfig, RelayError};
pub use strangler_store::{NewEvent, Outbox, Pending, Store, StoreError};

use strangler_store::now_ms;
