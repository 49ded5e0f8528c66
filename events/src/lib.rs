//! The dual-write event pipeline, independent of the proxy: CloudEvents envelopes
//! ([`envelope`]), the durable outbox in SQLite or PostgreSQL ([`outbox`]), and the relay that
//! drains it into AWS Kinesis with batching, retries, per-key order and dead letters ([`relay`]),
//! optionally KPL-aggregated ([`aggregate`]).
//!
//! The proxy enqueues; the relay publishes; nothing accepted into the outbox is dropped: it is
//! published, or kept as a dead letter with its reason until someone re-drives it.

pub mod aggregate;
pub mod backlog;
pub mod envelope;
pub mod failure;
mod health;
pub mod kinesis;
pub mod metrics;
pub mod outbox;
mod packing;
mod pg_writer;
pub mod relay;
mod sqlite_writer;

pub use envelope::{CloudEvent, Data};
pub use metrics::Metrics;
pub use outbox::{NewEvent, Outbox, OutboxError, Pending};
pub use relay::{Relay, RelayConfig};
