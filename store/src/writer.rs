//! The group writer: one thread that commits every write waiting in one transaction, so
//! throughput grows with concurrency while each caller still waits for its own commit. The loop
//! ([`run`]) knows nothing of tables: what a write is and how a group is committed belong to the
//! table module that uses it (the outbox's, `outbox::write`), per database.
//!
//! When writes overlap (the last group added more than one row), the loop waits [`GATHER`]
//! before committing, so that one commit (one fsync) carries the whole burst instead of a
//! trickle of small groups; a lone write is committed at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};

/// Why a group commit failed. Every caller of the group gets the same error (shared).
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("SQLite: {0}")]
    Sqlite(Arc<rusqlite::Error>),
    #[error("PostgreSQL: {0}")]
    Postgres(Arc<sqlx::Error>),
    #[error("connecting to PostgreSQL took over {0:?}")]
    ConnectTimeout(Duration),
    #[error("the writer failed to start: {0}")]
    Start(Arc<std::io::Error>),
}

impl From<rusqlite::Error> for WriteError {
    fn from(e: rusqlite::Error) -> Self {
        WriteError::Sqlite(Arc::new(e))
    }
}

impl From<sqlx::Error> for WriteError {
    fn from(e: sqlx::Error) -> Self {
        WriteError::Postgres(Arc::new(e))
    }
}

impl From<std::io::Error> for WriteError {
    fn from(e: std::io::Error) -> Self {
        WriteError::Start(Arc::new(e))
    }
}

/// Where the writer tells a caller how its commit went.
pub(crate) type Reply = oneshot::Sender<Result<(), WriteError>>;

/// A database's and a table's side of the group writer.
pub(crate) trait Commit: Send + 'static {
    /// One caller's write.
    type Write: Send + 'static;

    /// Commits `writes` in one transaction; returns how many rows it added (a reader waiting
    /// on the writer's `Notify` is woken when that is not zero).
    fn commit(&mut self, writes: Vec<Self::Write>) -> Result<usize, WriteError>;
}

/// The most writes in one group.
pub(crate) const MAX_GROUP: usize = 512;

/// The pause before a commit when writes overlap.
pub(crate) const GATHER: Duration = Duration::from_millis(1);

/// Starts the writer thread; it ends when every sender is dropped.
pub(crate) fn spawn<C: Commit>(
    commit: C,
    rx: mpsc::Receiver<(C::Write, Reply)>,
    committed: Arc<Notify>,
) -> Result<(), WriteError> {
    std::thread::Builder::new()
        .name("strangler-store".into())
        .spawn(move || run(commit, rx, &committed))?;
    Ok(())
}

/// Group commit: every write waiting (up to [`MAX_GROUP`]) in one transaction, after a
/// [`GATHER`] pause when writes overlap; then the replies, and the readers' wake-up when the
/// group added rows.
fn run<C: Commit>(mut commit: C, mut rx: mpsc::Receiver<(C::Write, Reply)>, committed: &Notify) {
    let mut batch = Vec::with_capacity(MAX_GROUP);
    let mut last_added = 0;
    while rx.blocking_recv_many(&mut batch, MAX_GROUP) > 0 {
        if last_added > 1 && batch.len() < MAX_GROUP {
            std::thread::sleep(GATHER);
            while batch.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
        }
        let (writes, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        let result = commit.commit(writes);
        last_added = *result.as_ref().unwrap_or(&0);
        for reply in replies {
            let _ = reply.send(result.clone().map(|_| ()));
        }
        if last_added > 0 {
            committed.notify_one();
        }
    }
}
