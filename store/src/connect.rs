//! Opening the store: the URL decides the database, the pragmas decide durability and memory.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{Notify, mpsc};

use crate::outbox::{HandOff, Write, write};
use crate::pragmas::{JOURNAL_SIZE_LIMIT, cache_size};
use crate::writer::Reply;
use crate::{Pool, Store, StoreError, migrations};

impl Store {
    /// Connects with the default memory budget (see [`Store::connect_with`]).
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, crate::DEFAULT_MEMORY).await
    }

    /// Connects, applies the migrations, and starts the group writer. `memory` is the events
    /// memory budget (`events.memory`); the store takes its share of it: on SQLite an eighth
    /// for the writer's page cache, an eighth for the hand-off to the relay, and an eighth for
    /// the relay's read connections (page cache and memory map); the admin connections keep
    /// 1 MiB of cache each. (The relay's working set is the other half.)
    pub async fn connect_with(url: &str, memory: usize) -> Result<Store, StoreError> {
        let connect_err = |source| StoreError::Connect {
            url: url.to_string(),
            source,
        };
        let open_err = |reason: String| StoreError::Open {
            url: url.to_string(),
            reason,
        };
        let (tx, rx) = mpsc::channel(8192);
        let writer_metrics = crate::metrics::WriterMetrics::new();
        let committed = Arc::new(Notify::new());
        if url.starts_with("sqlite:") {
            if url.contains(":memory:") || url.contains("mode=memory") {
                return Err(open_err(
                    "an in-memory outbox loses every event on exit: give a file".into(),
                ));
            }
            let opts: SqliteConnectOptions = url.parse().map_err(connect_err)?;
            let file = opts.get_filename().to_path_buf();
            // SQLite would say only "unable to open database file".
            if let Some(dir) = file.parent()
                && !dir.as_os_str().is_empty()
                && !dir.is_dir()
            {
                let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
                return Err(open_err(format!(
                    "the folder {} does not exist: create it, or point the store elsewhere",
                    dir.display()
                )));
            }
            let opts = opts
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: a commit survives power loss too, not only a killed process.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .pragma("journal_size_limit", JOURNAL_SIZE_LIMIT.to_string());
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts.clone().pragma("cache_size", "-1024"))
                .await
                .map_err(connect_err)?;
            // The relay reads pages through a memory map and a page cache: when it reads rows
            // back (lagging streams, gaps in the hand-off), pread copies were most of its CPU.
            let reads = SqlitePoolOptions::new()
                .max_connections(2)
                .connect_with(
                    opts.pragma("mmap_size", (memory / 32).to_string())
                        .pragma("cache_size", cache_size(memory / 32)),
                )
                .await
                .map_err(connect_err)?;
            let pool = Pool::Sqlite(pool);
            migrations::apply(&pool).await?;
            let handoff = Arc::new(Mutex::new(HandOff::new(memory / 8)));
            write::sqlite::spawn(
                &file,
                &cache_size(memory / 8),
                rx,
                Arc::clone(&committed),
                writer_metrics.clone(),
                Arc::clone(&handoff),
            )
            .map_err(|e| open_err(format!("group writer: {e}")))?;
            Ok(Store {
                pool,
                reads: Pool::Sqlite(reads),
                writer: tx,
                writer_metrics,
                committed,
                handoff: Some(handoff),
            })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options: PgConnectOptions = url.parse().map_err(connect_err)?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .connect_with(options.clone())
                .await
                .map_err(connect_err)?;
            // The relay's reads, deletes and retries on connections of their own.
            let reads = PgPoolOptions::new()
                .max_connections(2)
                .connect_with(options.clone())
                .await
                .map_err(connect_err)?;
            let pool = Pool::Postgres(pool);
            migrations::apply(&pool).await?;
            write::postgres::spawn(options, rx, Arc::clone(&committed), writer_metrics.clone())
                .map_err(|e| open_err(format!("group writer: {e}")))?;
            Ok(Store {
                pool,
                reads: Pool::Postgres(reads),
                writer: tx,
                writer_metrics,
                committed,
                handoff: None,
            })
        } else {
            Err(StoreError::BadUrl(url.to_string()))
        }
    }

    /// Gives back what the store's caches took while a backlog was read and written (SQLite:
    /// every connection's page cache, `PRAGMA shrink_memory`; PostgreSQL: nothing here). The
    /// relay calls it once a large backlog has drained.
    pub async fn shrink(&self) -> Result<(), StoreError> {
        let (Pool::Sqlite(pool), Pool::Sqlite(reads)) = (&self.pool, &self.reads) else {
            return Ok(());
        };
        self.through_writer(Write::Shrink).await?;
        for p in [pool, reads] {
            let conns: Vec<_> = (0..p.num_idle()).map_while(|_| p.try_acquire()).collect();
            for mut c in conns {
                sqlx::query("PRAGMA shrink_memory").execute(&mut *c).await?;
            }
        }
        Ok(())
    }

    /// Hands a write to the group writer and waits for its commit.
    pub(crate) async fn through_writer(&self, write: Write) -> Result<(), StoreError> {
        let (tx, rx): (Reply, _) = tokio::sync::oneshot::channel();
        self.writer
            .send((write, tx, std::time::Instant::now()))
            .await
            .map_err(|_| StoreError::Closed)?;
        match rx.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(StoreError::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Store, StoreError};

    #[tokio::test]
    async fn a_missing_folder_is_named() {
        let d = std::env::temp_dir().join(format!("strangler-absent-{}", std::process::id()));
        let url = format!("sqlite://{}/store.db", d.display());
        let err = Store::connect(&url)
            .await
            .err()
            .expect("opened in a missing folder");
        assert!(matches!(err, StoreError::Open { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("the folder {} does not exist", d.display())),
            "{text}"
        );
    }
}
