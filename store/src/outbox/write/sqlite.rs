//! The outbox's group commit on SQLite: one connection of the writer's own, doing each group's statements
//! itself with prepared statements it keeps. Through sqlx every statement was a round trip to a
//! connection worker thread (several per group, each two thread switches), and a pool spread the
//! groups over connections whose page caches went cold; on a busy core those switches cost more
//! than the SQL. The thread sleeps while SQLite syncs, so a commit blocks no runtime. Reads, dead
//! letters, re-drives and the admin queries stay on sqlx.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::{Notify, mpsc};

use super::{Group, Write};
use crate::metrics::WriterMetrics;
use crate::now_ms;
use crate::outbox::{HandOff, NewEvent, sql};
use crate::pragmas::JOURNAL_SIZE_LIMIT;
use crate::writer::{self, Commit, Job, WriteError};

struct Sqlite {
    conn: Connection,
    handoff: Arc<Mutex<HandOff>>,
}

/// Opens the writer's connection to a store whose tables exist, with a page cache of
/// `cache_size` (SQLite's `cache_size` pragma), and starts the writer thread.
pub(crate) fn spawn(
    path: &Path,
    cache_size: &str,
    rx: mpsc::Receiver<Job<Write>>,
    committed: Arc<Notify>,
    metrics: WriterMetrics,
    handoff: Arc<Mutex<HandOff>>,
) -> Result<(), WriteError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // The database is already in WAL mode (set at connect, kept by the file); FULL is per
    // connection: a commit survives power loss too, not only a killed process.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", cache_size)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    writer::spawn(Sqlite { conn, handoff }, rx, committed, metrics)
}

impl Commit for Sqlite {
    type Write = Write;

    fn commit(&mut self, writes: Vec<Write>) -> Result<usize, WriteError> {
        let group = Group::split(writes);
        let added = group.events.len();
        let now = now_ms();
        let last = write(&mut self.conn, now, &group)?;
        // Handed over before the callers hear of the commit: what a caller saw committed, the
        // relay already holds.
        if let Some(last) = last {
            HandOff::put(&self.handoff, group.events, last, now);
        }
        if group.shrink {
            // After the commit: the page cache a backlog filled goes back.
            let _ = self.conn.execute_batch("PRAGMA shrink_memory");
        }
        Ok(added)
    }
}

/// One transaction: removes (or archives, with `keep`) published rows, records failed tries,
/// then adds the events (created at `now`). Returns the `seq` of the last event added: the
/// events hold the consecutive values ending there, since this connection writes alone inside
/// the transaction and AUTOINCREMENT never reuses a value.
fn write(conn: &mut Connection, now: i64, group: &Group) -> rusqlite::Result<Option<i64>> {
    // IMMEDIATE: take the write lock at BEGIN, so a busy store (a re-drive on another
    // connection) is waited for rather than failing the upgrade from a read.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (seqs, keep) in &group.published {
        if *keep {
            let mut archive = tx.prepare_cached(sql::ARCHIVE_ONE)?;
            for seq in seqs {
                archive.execute(params![now, seq])?;
            }
        }
        let mut delete = tx.prepare_cached(sql::DELETE_ONE)?;
        for seq in seqs {
            delete.execute([seq])?;
        }
    }
    for r in &group.retries {
        let mut update = tx.prepare_cached(sql::RETRY_ONE)?;
        for seq in &r.seqs {
            update.execute(params![r.next_ms, r.error, seq])?;
        }
    }
    let mut last = None;
    if !group.events.is_empty() {
        let mut insert = tx.prepare_cached(sql::INSERT_ONE)?;
        for e in &group.events {
            let NewEvent {
                id,
                route,
                stream,
                partition_key,
                payload,
            } = e;
            insert.execute(params![id, route, stream, partition_key, payload, now])?;
        }
        last = Some(tx.last_insert_rowid());
    }
    tx.commit()?;
    Ok(last)
}
