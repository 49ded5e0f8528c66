//! The bytes of a strangler event, written by the relay (`strangler-events`) and read by the
//! consumer (`strangler-consumer`), defined once:
//!
//! - [`envelope`]: the CloudEvents 1.0 structured-mode JSON envelope — [`CloudEvent`] to write
//!   one, [`envelope::read`] to read one back;
//! - [`aggregate`]: the KPL aggregated-record format (encode and decode) and the partition-key
//!   hashing that places a key in a shard ([`aggregate::hash_key`], [`aggregate::ShardMap`]).
//!
//! Pure code: no I/O, no runtime, no AWS SDK.

pub mod aggregate;
pub mod envelope;

pub use envelope::{CloudEvent, Data, Envelope};
