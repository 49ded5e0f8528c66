//! Everything the proxy keeps, in one store: SQLite by default (one process), PostgreSQL when
//! replicas share it. This crate owns the connection and its pragmas ([`Store::connect`]), every
//! table's migration ([`migrations`]), the named leases that let one replica at a time do a job
//! ([`lease`]), the group writer that commits concurrent writes together ([`writer`]), and one
//! typed module per table: the events outbox ([`outbox`]), the shadow mismatches
//! ([`mismatches`]) and the rollouts' state, audit log, evidence and kill switch ([`rollouts`]).
//!
//! No network code beyond the database's own: the proxy and the relay call it.

mod connect;
pub mod lease;
pub mod lease_set;
mod metrics;
mod migrations;
pub mod mismatches;
pub mod outbox;
mod pragmas;
pub mod replays;
pub mod rollouts;
pub mod usage;
mod writer;

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use tokio::sync::{Notify, mpsc};

pub use lease::{Fence, HEARTBEAT, Lease, LeaseGuard};
pub use lease_set::LeaseSet;
pub use mismatches::{Mismatch, MismatchSummary, Mismatches, NewMismatch};
pub use outbox::{DeadLetter, NewEvent, Outbox, Pending, StreamDepth};
pub use replays::{Replay, ReplayState, Replays, Selection};
pub use rollouts::{AuditEntry, KillSwitch, NewAudit, RolloutTables, Stored, Writer};
pub use usage::{Minute, Usage};
pub use writer::WriteError;

/// The memory budget for events when the configuration does not set one (`events.memory`): fits
/// a small VM next to the proxy's own ~50 MB.
pub const DEFAULT_MEMORY: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("store: {0}")]
    Db(#[from] sqlx::Error),
    #[error("store {url}: {reason}")]
    Open { url: String, reason: String },
    #[error("store writer stopped")]
    Closed,
    #[error("store write: {0}")]
    Write(#[from] WriteError),
    #[error("store: the read barrier returned no seq")]
    Barrier,
    #[error("store: {0} vanished while it was being written")]
    Vanished(String),
    #[error("store URL `{0}` is neither sqlite:… nor postgres://…")]
    BadUrl(String),
    #[error("the lease {0} is no longer this replica's: the write was refused")]
    LeaseLost(String),
}

#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same sqlx expression against whichever pool the store uses.
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            $crate::Pool::Sqlite($p) => $body,
            $crate::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool;

/// The store. Cheap to clone: every clone shares the pools and the writer.
#[derive(Clone)]
pub struct Store {
    /// Admin queries, dead letters, re-drives, bulk loads, leases.
    pool: Pool,
    /// The relay's reads, on connections of their own (SQLite: with a memory map and a larger
    /// page cache; PostgreSQL: its deletes and retries too).
    reads: Pool,
    /// The group writer (see [`writer`]), committing the outbox's writes.
    writer: mpsc::Sender<writer::Job<outbox::Write>>,
    /// The group writer's figures (see [`metrics`]).
    writer_metrics: metrics::WriterMetrics,
    /// Signalled after each group commit that added events (the relay waits on it).
    committed: Arc<Notify>,
    /// SQLite: rows the group writer committed, on their way to the relay (see
    /// [`outbox::HandOff`]).
    handoff: Option<Arc<Mutex<outbox::HandOff>>>,
}

impl Store {
    /// True when replicas share the store (PostgreSQL): jobs that must run once then take a
    /// [`Lease`].
    pub fn shared(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// The outbox table.
    pub fn outbox(&self) -> Outbox {
        Outbox::new(self.clone())
    }

    /// Notified after each group commit that added events.
    pub fn committed(&self) -> &Notify {
        &self.committed
    }

    /// Puts the group writer's figures (commit time, events per commit, a write's wait) on
    /// `registry`.
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        self.writer_metrics.register(registry)
    }
}

/// Milliseconds since the Unix epoch: the store's clock (`created_ms`, `next_attempt_ms`, …).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
