//! The PostgreSQL outbox's group writer: one thread with its own runtime and one connection, so
//! a group's round trip is never kept waiting behind the relay's work or the proxy's (on the
//! events thread, the connection sat "idle in transaction" between statements while the thread
//! packed and signed PutRecords calls). A group is one statement in its own implicit
//! transaction — one round trip and one commit — and replicas' writers commit side by side: they
//! take the enqueue lock shared (see [`crate::outbox`]'s `read_after` for why it exists).

use std::sync::Arc;
use std::time::Duration;

use sqlx::{ConnectOptions, PgConnection};
use tokio::sync::{Notify, mpsc};
use tracing::warn;

use crate::outbox::{GATHER, Group, MAX_GROUP, NewEvent, Write, now_ms, take_waiting};

/// Adds `events` (created at `now`) in one statement: the shared enqueue lock first
/// (`outbox::ENQUEUE_LOCK`; every row
/// it produces needs the lock's row, so the lock is held before the first `seq` is drawn), then
/// the rows, in order (`seq` follows the group's order: `nextval` is evaluated after the sort).
const INSERT: &str = "INSERT INTO strangler_outbox \
    (id, route, stream, partition_key, payload, created_ms, attempts, next_attempt_ms) \
    SELECT u.id, u.route, u.stream, u.key, u.payload, $6, 0, $6 \
    FROM (SELECT pg_advisory_xact_lock_shared($7)) AS l, \
    unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[]) \
    WITH ORDINALITY AS u(id, route, stream, key, payload, n) ORDER BY u.n";

/// Stores `events` in one statement (its own transaction unless `conn` is in one).
pub(crate) async fn insert(
    conn: &mut PgConnection,
    now: i64,
    events: &[NewEvent],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&NewEvent) -> &str| events.iter().map(f).collect::<Vec<&str>>();
    sqlx::query(INSERT)
        .bind(column(|e| &e.id))
        .bind(column(|e| &e.route))
        .bind(column(|e| &e.stream))
        .bind(column(|e| &e.partition_key))
        .bind(
            events
                .iter()
                .map(|e| e.payload.as_slice())
                .collect::<Vec<&[u8]>>(),
        )
        .bind(now)
        .bind(crate::outbox::ENQUEUE_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// Starts the writer thread; it ends when every sender is dropped.
pub(crate) fn spawn(
    options: sqlx::postgres::PgConnectOptions,
    rx: mpsc::Receiver<Write>,
    committed: Arc<Notify>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("strangler-outbox".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    warn!(error = %e, "Outbox writer runtime failed to start");
                    return;
                }
            };
            rt.block_on(run(options, rx, &committed));
        })
        .map(|_| ())
}

/// Group commit: every write waiting (up to `MAX_GROUP`) in one go, after a `GATHER` pause when
/// enqueues overlap; the relay is woken after each group that added events. A failed group
/// drops the connection; the next group connects again.
async fn run(
    options: sqlx::postgres::PgConnectOptions,
    mut rx: mpsc::Receiver<Write>,
    committed: &Notify,
) {
    let mut conn: Option<PgConnection> = None;
    let mut batch = Vec::with_capacity(MAX_GROUP);
    let mut last_group = 0;
    while rx.recv_many(&mut batch, MAX_GROUP).await > 0 {
        if last_group > 1 && batch.len() < MAX_GROUP {
            tokio::time::sleep(GATHER).await;
            take_waiting(&mut rx, &mut batch);
        }
        let group = Group::split(&mut batch);
        last_group = group.events.len();
        let result = async {
            if conn.is_none() {
                let connect = tokio::time::timeout(Duration::from_secs(10), options.connect());
                conn = Some(connect.await.map_err(|_| {
                    sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connecting to PostgreSQL took over 10 s",
                    ))
                })??);
            }
            let c = conn.as_mut().expect("connected above");
            // Only enqueues come here: on PostgreSQL the relay's deletes and retries go
            // straight to the store (`Outbox::published`, `Outbox::retry`).
            debug_assert!(group.published.is_empty() && group.retries.is_empty());
            insert(c, now_ms(), &group.events).await
        }
        .await;
        if result.is_err() {
            conn = None;
        }
        let result = result.map_err(|e| e.to_string());
        let added = result.is_ok() && !group.events.is_empty();
        group.reply(&result);
        if added {
            committed.notify_one();
        }
    }
}
