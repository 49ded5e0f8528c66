//! The outbox's group commit on PostgreSQL: one connection with a small runtime of its own, so a group's
//! round trip is never kept waiting behind the relay's work or the proxy's (on the events
//! thread, the connection sat "idle in transaction" between statements while the thread packed
//! and signed PutRecords calls). A group is one statement in its own implicit transaction — one
//! round trip and one commit — and replicas' writers commit side by side: they take the enqueue
//! lock shared (see [`crate::Outbox::read_after`] for why it exists). On PostgreSQL only
//! enqueues come here: the relay's deletes and retries go straight to the store.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};
use tokio::runtime::Runtime;
use tokio::sync::{Notify, mpsc};

use super::{Group, Write};
use crate::metrics::WriterMetrics;
use crate::now_ms;
use crate::writer::{self, Commit, Job, WriteError};

/// The longest a (re)connect of the writer may take before its group fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

struct Postgres {
    rt: Runtime,
    options: PgConnectOptions,
    /// Dropped after a failed group; the next group connects again.
    conn: Option<PgConnection>,
}

/// Starts the writer thread.
pub(crate) fn spawn(
    options: PgConnectOptions,
    rx: mpsc::Receiver<Job<Write>>,
    committed: Arc<Notify>,
    metrics: WriterMetrics,
) -> Result<(), WriteError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    writer::spawn(
        Postgres {
            rt,
            options,
            conn: None,
        },
        rx,
        committed,
        metrics,
    )
}

impl Commit for Postgres {
    type Write = Write;

    fn commit(&mut self, writes: Vec<Write>) -> Result<usize, WriteError> {
        let group = Group::split(writes);
        debug_assert!(group.published.is_empty() && group.retries.is_empty() && !group.shrink);
        let Postgres { rt, options, conn } = self;
        let result = rt.block_on(async {
            if conn.is_none() {
                let connect = tokio::time::timeout(CONNECT_TIMEOUT, options.connect());
                *conn = Some(
                    connect
                        .await
                        .map_err(|_| WriteError::ConnectTimeout(CONNECT_TIMEOUT))??,
                );
            }
            let c = conn.as_mut().expect("connected above");
            crate::outbox::insert_pg(c, now_ms(), &group.events).await?;
            Ok(group.events.len())
        });
        if result.is_err() {
            *conn = None;
        }
        result
    }
}
