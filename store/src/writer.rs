//! The group writer: one thread that commits every write waiting in one transaction, so
//! throughput grows with concurrency while each caller still waits for its own commit. The loop
//! ([`run`]) knows nothing of tables: what a write is and how a group is committed belong to the
//! table module that uses it (the outbox's, `outbox::write`), per database.
//!
//! When writes overlap (the last group added more than one row) and fewer than half as many as
//! it carried are waiting, the loop waits [`GATHER`] before committing, so that one commit (one
//! fsync) carries the whole burst instead of a trickle of small groups; a lone write, or a
//! group about as large as the last, is committed at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot};

use crate::metrics::WriterMetrics;

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

/// A caller's write, where to answer, and when it was handed over (for its wait).
pub(crate) type Job<W> = (W, Reply, Instant);

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
    rx: mpsc::Receiver<Job<C::Write>>,
    committed: Arc<Notify>,
    metrics: WriterMetrics,
) -> Result<(), WriteError> {
    std::thread::Builder::new()
        .name("strangler-store".into())
        .spawn(move || run(commit, rx, &committed, &metrics))?;
    Ok(())
}

/// Group commit: every write waiting (up to [`MAX_GROUP`]) in one transaction, after a
/// [`GATHER`] pause when writes overlap; then the replies, and the readers' wake-up when the
/// group added rows. Each commit is timed, and each write's wait.
fn run<C: Commit>(
    mut commit: C,
    mut rx: mpsc::Receiver<Job<C::Write>>,
    committed: &Notify,
    metrics: &WriterMetrics,
) {
    let mut batch = Vec::with_capacity(MAX_GROUP);
    let mut last_added = 0;
    while rx.blocking_recv_many(&mut batch, MAX_GROUP) > 0 {
        // Fewer writes waiting than half the last group carried: more are on their way (their
        // requests' answers are arriving), and one commit should take them all. As many already
        // waiting: commit at once, a pause would only add to every caller's wait.
        if last_added > 1 && batch.len() < last_added.min(MAX_GROUP) / 2 {
            std::thread::sleep(GATHER);
            while batch.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
        }
        let mut writes = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for (write, reply, at) in batch.drain(..) {
            writes.push(write);
            replies.push((reply, at));
        }
        let started = Instant::now();
        let result = commit.commit(writes);
        let done = Instant::now();
        metrics
            .commit
            .observe(done.duration_since(started).as_secs_f64());
        last_added = *result.as_ref().unwrap_or(&0);
        if last_added > 0 {
            metrics.events.observe(last_added as f64);
        }
        for (reply, at) in replies {
            metrics.wait.observe(done.duration_since(at).as_secs_f64());
            let _ = reply.send(result.clone().map(|_| ()));
        }
        if last_added > 0 {
            committed.notify_one();
        }
    }
}
