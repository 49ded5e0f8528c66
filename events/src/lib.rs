//! The dual-write event pipeline, independent of the proxy: the relay that drains the store's
//! outbox (`strangler-store`) into AWS Kinesis with batching, retries, per-key order and dead
//! letters ([`relay`]), optionally KPL-aggregated. The bytes it sends (CloudEvents envelope,
//! aggregate format) are `strangler-wire`'s, re-exported here as [`envelope`] and [`aggregate`].
//!
//! The proxy enqueues; the relay publishes; nothing accepted into the outbox is dropped: it is
//! published, or kept as a dead letter with its reason until someone re-drives it.

pub mod backlog;
pub mod capacity;
pub mod failure;
mod health;
pub mod kinesis;
pub mod metrics;
pub mod relay;

pub use metrics::Metrics;
pub use relay::{Relay, RelayConfig, RelayError};
pub use strangler_store::{NewEvent, Outbox, Pending, Store, StoreError};
pub use strangler_wire::{CloudEvent, Data, aggregate, envelope};

use strangler_store::now_ms;
