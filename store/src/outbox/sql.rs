//! The outbox's write statements, each written once. SQLite's group writer runs the `_ONE`
//! forms with prepared statements of its own (rusqlite); PostgreSQL's writer and the relay's
//! settling there run the `_ANY` forms (a `seq` array or column arrays per statement); bulk
//! loads on SQLite use [`insert_rows`].

/// One event (SQLite writer): `?6` is both the creation and the first due time.
pub(crate) const INSERT_ONE: &str = "INSERT INTO strangler_outbox \
    (id, route, stream, partition_key, payload, created_ms, attempts, next_attempt_ms) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?6)";
/// One published event copied to the archive at `?1`.
pub(crate) const ARCHIVE_ONE: &str = "INSERT INTO strangler_published \
    (seq, id, route, stream, partition_key, payload, created_ms, published_ms, replay_id) \
    SELECT seq, id, route, stream, partition_key, payload, created_ms, ?1, replay_id FROM strangler_outbox WHERE seq = ?2";
pub(crate) const DELETE_ONE: &str = "DELETE FROM strangler_outbox WHERE seq = ?1";
pub(crate) const RETRY_ONE: &str = "UPDATE strangler_outbox SET attempts = attempts + 1, \
    next_attempt_ms = ?1, last_error = ?2 WHERE seq = ?3";

/// Events from column arrays, in one statement (PostgreSQL): the shared enqueue lock first
/// (`$7`, [`crate::lease::Lock::ENQUEUE`]; every row it produces needs the lock's row, so the
/// lock is held before the first `seq` is drawn), then the rows, in order (`seq` follows the
/// arrays' order: `nextval` is evaluated after the sort).
pub(crate) const INSERT_ANY: &str = "INSERT INTO strangler_outbox \
    (id, route, stream, partition_key, payload, created_ms, attempts, next_attempt_ms) \
    SELECT u.id, u.route, u.stream, u.key, u.payload, $6, 0, $6 \
    FROM (SELECT pg_advisory_xact_lock_shared($7)) AS l, \
    unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[]) \
    WITH ORDINALITY AS u(id, route, stream, key, payload, n) ORDER BY u.n";
pub(crate) const DELETE_ANY: &str = "DELETE FROM strangler_outbox WHERE seq = ANY($1)";
/// Published events moved to the archive at `$2`.
pub(crate) const ARCHIVE_ANY: &str = "WITH moved AS (DELETE FROM strangler_outbox WHERE seq = ANY($1) \
    RETURNING seq, id, route, stream, partition_key, payload, created_ms, replay_id) \
    INSERT INTO strangler_published (seq, id, route, stream, partition_key, payload, created_ms, published_ms, replay_id) \
    SELECT seq, id, route, stream, partition_key, payload, created_ms, $2, replay_id FROM moved";
pub(crate) const RETRY_ANY: &str = "UPDATE strangler_outbox SET attempts = attempts + 1, \
    next_attempt_ms = $1, last_error = $2 WHERE seq = ANY($3)";

/// The columns a [`super::Pending`] is read from, in its fields' order.
pub(crate) const PENDING_COLUMNS: &str =
    "seq, id, stream, partition_key, payload, attempts, created_ms, next_attempt_ms";

/// `INSERT … VALUES ($1,…,$6,0,$6), ($7,…)` for `rows` rows, a power of two up to 256 (SQLite
/// bulk loads); built once per size, so the nine statements stay prepared.
pub(crate) fn insert_rows(rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        (0..=8)
            .map(|p| {
                let mut sql = String::from(
                    "INSERT INTO strangler_outbox (id, route, stream, partition_key, payload, created_ms, attempts, next_attempt_ms) VALUES ",
                );
                for r in 0..1usize << p {
                    let b = r * 6;
                    if r > 0 {
                        sql.push_str(", ");
                    }
                    let n = |i: usize| b + i;
                    sql.push_str(&format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, 0, ${})",
                        n(1),
                        n(2),
                        n(3),
                        n(4),
                        n(5),
                        n(6),
                        n(6)
                    ));
                }
                sql
            })
            .collect()
    });
    &all[rows.ilog2() as usize]
}

/// Splits `items` into chunks of power-of-two sizes (at most 256), for [`insert_rows`].
pub(crate) fn chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = 1 << rest.len().min(256).ilog2();
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}
