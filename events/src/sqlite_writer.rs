//! The SQLite outbox's group writer: one thread with one connection of its own, doing each
//! group's statements itself with prepared statements it keeps. Through sqlx every statement was
//! a round trip to a connection worker thread (several per group, each two thread switches), and
//! a pool spread the groups over connections whose page caches went cold; on a busy core those
//! switches cost more than the SQL. The thread sleeps while SQLite syncs, so a commit blocks no
//! runtime. Reads, dead letters, re-drives and the admin queries stay on sqlx.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::{Notify, mpsc};

use crate::outbox::{
    GATHER, Group, HandOff, MAX_GROUP, NewEvent, Retry, Write, hand_over, now_ms, take_waiting,
};

/// Opens the writer's connection to a store whose tables exist, with a page cache of
/// `cache_size` (SQLite's `cache_size` pragma: `-N` is N KiB).
pub(crate) fn open(path: &Path, cache_size: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // The database is already in WAL mode (set at connect, kept by the file); FULL is per
    // connection: a commit survives power loss too, not only a killed process.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", cache_size)?;
    conn.pragma_update(None, "journal_size_limit", 64 << 20)?;
    Ok(conn)
}

/// Starts the writer thread. It ends when every sender is dropped.
pub(crate) fn spawn(
    conn: Connection,
    rx: mpsc::Receiver<Write>,
    committed: Arc<Notify>,
    handoff: Arc<Mutex<HandOff>>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("strangler-outbox".into())
        .spawn(move || run(conn, rx, &committed, &handoff))
        .map(|_| ())
}

/// Group commit, as `outbox::group_writer` does it for PostgreSQL: every write waiting (up to
/// `MAX_GROUP`) in one transaction, after a `GATHER` pause when enqueues overlap; then the
/// hand-over of the new rows, the replies, and the relay's wake-up.
fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Write>,
    committed: &Notify,
    handoff: &Mutex<HandOff>,
) {
    let mut batch = Vec::with_capacity(MAX_GROUP);
    let mut last_group = 0;
    while rx.blocking_recv_many(&mut batch, MAX_GROUP) > 0 {
        if last_group > 1 && batch.len() < MAX_GROUP {
            std::thread::sleep(GATHER);
            take_waiting(&mut rx, &mut batch);
        }
        let mut group = Group::split(&mut batch);
        last_group = group.events.len();
        let now = now_ms();
        let result = write(
            &mut conn,
            now,
            &group.events,
            &group.published,
            &group.retries,
        )
        .map_err(|e| e.to_string());
        // Handed over before the callers hear of the commit: what a caller saw committed, the
        // relay already holds.
        let added = matches!(result, Ok(Some(_)));
        if let Ok(Some(last)) = result {
            hand_over(handoff, std::mem::take(&mut group.events), last, now);
        }
        if group.shrink {
            // After the commit: the page cache a backlog filled goes back.
            let _ = conn.execute_batch("PRAGMA shrink_memory");
        }
        group.reply(&result.map(|_| ()));
        if added {
            committed.notify_one();
        }
    }
}

/// One transaction: removes (or archives, with `keep`) published rows, records failed tries,
/// then adds `events` (created at `now`). Returns the `seq` of the last event added: the events
/// hold the consecutive values ending there, since this connection writes alone inside the
/// transaction and AUTOINCREMENT never reuses a value.
fn write(
    conn: &mut Connection,
    now: i64,
    events: &[NewEvent],
    published: &[(Vec<i64>, bool)],
    retries: &[Retry],
) -> rusqlite::Result<Option<i64>> {
    // IMMEDIATE: take the write lock at BEGIN, so a busy store (a re-drive on another
    // connection) is waited for rather than failing the upgrade from a read.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (seqs, keep) in published {
        if *keep {
            let mut archive = tx.prepare_cached(
                "INSERT INTO strangler_published (seq, id, stream, partition_key, payload, created_ms, published_ms) \
                 SELECT seq, id, stream, partition_key, payload, created_ms, ?1 FROM strangler_outbox WHERE seq = ?2",
            )?;
            for seq in seqs {
                archive.execute(params![now, seq])?;
            }
        }
        let mut delete = tx.prepare_cached("DELETE FROM strangler_outbox WHERE seq = ?1")?;
        for seq in seqs {
            delete.execute([seq])?;
        }
    }
    for r in retries {
        let mut update = tx.prepare_cached(
            "UPDATE strangler_outbox SET attempts = attempts + 1, next_attempt_ms = ?1, last_error = ?2 WHERE seq = ?3",
        )?;
        for seq in &r.seqs {
            update.execute(params![r.next_ms, r.error, seq])?;
        }
    }
    let mut last = None;
    if !events.is_empty() {
        let mut insert = tx.prepare_cached(
            "INSERT INTO strangler_outbox (id, route, stream, partition_key, payload, created_ms, attempts, next_attempt_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?6)",
        )?;
        for e in events {
            insert.execute(params![
                e.id,
                e.route,
                e.stream,
                e.partition_key,
                e.payload,
                now
            ])?;
        }
        last = Some(tx.last_insert_rowid());
    }
    tx.commit()?;
    Ok(last)
}
