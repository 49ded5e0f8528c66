//! The shadow mismatches table: every comparison that found a difference, kept with the request
//! and both answers (bodies up to [`BODY_KEPT`]) and the difference list, for people to read
//! through the admin API. Written in batches by a background task (never on the request path);
//! bounded by a count per route and an age ([`Mismatches::prune`]). Redaction happens before a
//! record gets here.

use std::time::Duration;

use serde::Serialize;
use sqlx::Row;

use crate::{Store, StoreError, now_ms, on_pool};

/// The most bytes of each body kept.
pub const BODY_KEPT: usize = 64 << 10;

/// One side of the exchange: the request, the monolith's answer or the new service's.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Message {
    /// The status of an answer; 0 for the request.
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Up to [`BODY_KEPT`] bytes, as text when it is UTF-8 (else base64 is not attempted: the
    /// bytes are shown lossily).
    #[serde(serialize_with = "as_text")]
    pub body: Vec<u8>,
    /// The body was longer than what is kept.
    pub truncated: bool,
}

fn as_text<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

/// A mismatch to store.
#[derive(Debug, Clone)]
pub struct NewMismatch {
    pub route: String,
    pub at_ms: i64,
    pub trace_id: Option<String>,
    pub method: String,
    pub path: String,
    pub request: Message,
    pub expected: Message,
    pub actual: Message,
    /// The difference list (JSON array).
    pub differences: serde_json::Value,
    /// The differences' patterns (for filtering), without repeats.
    pub patterns: Vec<String>,
}

/// A stored mismatch, whole.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mismatch {
    pub id: i64,
    pub route: String,
    pub at_ms: i64,
    pub trace_id: Option<String>,
    pub method: String,
    pub path: String,
    pub request: Message,
    pub expected: Message,
    pub actual: Message,
    pub differences: serde_json::Value,
}

/// A stored mismatch in a list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MismatchSummary {
    pub id: i64,
    pub route: String,
    pub at_ms: i64,
    pub trace_id: Option<String>,
    pub method: String,
    pub path: String,
    pub differences: usize,
    pub patterns: Vec<String>,
}

/// Which mismatches to list: newest first, `before` an id for the next page.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub route: Option<String>,
    pub pattern: Option<String>,
    pub before: Option<i64>,
    pub limit: i64,
}

/// The mismatches table of a [`Store`].
#[derive(Clone)]
pub struct Mismatches {
    store: Store,
}

impl Store {
    pub fn mismatches(&self) -> Mismatches {
        Mismatches {
            store: self.clone(),
        }
    }
}

fn cut(m: &Message) -> (String, &[u8], bool) {
    let headers = serde_json::to_string(&m.headers).unwrap_or_else(|_| "[]".into());
    let kept = &m.body[..m.body.len().min(BODY_KEPT)];
    (headers, kept, m.truncated || m.body.len() > BODY_KEPT)
}

fn message(status: i64, headers: &str, body: Vec<u8>, truncated: bool) -> Message {
    Message {
        status: u16::try_from(status).unwrap_or(0),
        headers: serde_json::from_str(headers).unwrap_or_default(),
        body,
        truncated,
    }
}

impl Mismatches {
    /// Stores a batch in one transaction; returns their ids, in order.
    pub async fn insert(&self, batch: &[NewMismatch]) -> Result<Vec<i64>, StoreError> {
        const ROW: &str = "INSERT INTO strangler_mismatches (route, at_ms, trace_id, method, path, \
            request_headers, request_body, request_truncated, expected_status, expected_headers, expected_body, \
            expected_truncated, actual_status, actual_headers, actual_body, actual_truncated, differences) \
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) RETURNING id";
        const PATTERN: &str =
            "INSERT INTO strangler_mismatch_patterns (id, route, pattern) VALUES ($1, $2, $3)";
        let mut ids = Vec::with_capacity(batch.len());
        on_pool!(&self.store.pool, |p| {
            let mut tx = p.begin().await?;
            for m in batch {
                let (rh, rb, rt) = cut(&m.request);
                let (eh, eb, et) = cut(&m.expected);
                let (ah, ab, at) = cut(&m.actual);
                let id: i64 = sqlx::query_scalar(ROW)
                    .bind(&m.route)
                    .bind(m.at_ms)
                    .bind(&m.trace_id)
                    .bind(&m.method)
                    .bind(&m.path)
                    .bind(rh)
                    .bind(rb)
                    .bind(rt)
                    .bind(i64::from(m.expected.status))
                    .bind(eh)
                    .bind(eb)
                    .bind(et)
                    .bind(i64::from(m.actual.status))
                    .bind(ah)
                    .bind(ab)
                    .bind(at)
                    .bind(m.differences.to_string())
                    .fetch_one(&mut *tx)
                    .await?;
                for pattern in &m.patterns {
                    sqlx::query(PATTERN)
                        .bind(id)
                        .bind(&m.route)
                        .bind(pattern)
                        .execute(&mut *tx)
                        .await?;
                }
                ids.push(id);
            }
            tx.commit().await?;
        });
        Ok(ids)
    }

    /// Newest first, filtered by route and pattern, `limit` at most (1 to 1,000).
    pub async fn list(&self, q: &Query) -> Result<Vec<MismatchSummary>, StoreError> {
        const SQL: &str = "SELECT m.id, m.route, m.at_ms, m.trace_id, m.method, m.path, m.differences \
            FROM strangler_mismatches m \
            WHERE (CAST($1 AS TEXT) IS NULL OR m.route = $1) AND (CAST($2 AS BIGINT) IS NULL OR m.id < $2) \
            AND (CAST($3 AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM strangler_mismatch_patterns p WHERE p.id = m.id AND p.pattern = $3)) \
            ORDER BY m.id DESC LIMIT $4";
        const PATTERNS: &str =
            "SELECT pattern FROM strangler_mismatch_patterns WHERE id = $1 ORDER BY pattern";
        let limit = q.limit.clamp(1, 1000);
        let rows = on_pool!(&self.store.pool, |p| {
            let rows = sqlx::query(SQL)
                .bind(&q.route)
                .bind(q.before)
                .bind(&q.pattern)
                .bind(limit)
                .fetch_all(p)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let id: i64 = r.try_get("id")?;
                let differences: String = r.try_get("differences")?;
                let patterns: Vec<String> =
                    sqlx::query_scalar(PATTERNS).bind(id).fetch_all(p).await?;
                out.push(MismatchSummary {
                    id,
                    route: r.try_get("route")?,
                    at_ms: r.try_get("at_ms")?,
                    trace_id: r.try_get("trace_id")?,
                    method: r.try_get("method")?,
                    path: r.try_get("path")?,
                    differences: serde_json::from_str::<Vec<serde_json::Value>>(&differences)
                        .map_or(0, |d| d.len()),
                    patterns,
                });
            }
            out
        });
        Ok(rows)
    }

    /// One mismatch, whole.
    pub async fn get(&self, id: i64) -> Result<Option<Mismatch>, StoreError> {
        const SQL: &str = "SELECT id, route, at_ms, trace_id, method, path, request_headers, request_body, \
            request_truncated, expected_status, expected_headers, expected_body, expected_truncated, \
            actual_status, actual_headers, actual_body, actual_truncated, differences \
            FROM strangler_mismatches WHERE id = $1";
        let found = on_pool!(&self.store.pool, |p| {
            match sqlx::query(SQL).bind(id).fetch_optional(p).await? {
                None => None,
                Some(r) => {
                    let text = |c: &str| r.try_get::<String, _>(c);
                    Some(Mismatch {
                        id: r.try_get("id")?,
                        route: r.try_get("route")?,
                        at_ms: r.try_get("at_ms")?,
                        trace_id: r.try_get("trace_id")?,
                        method: r.try_get("method")?,
                        path: r.try_get("path")?,
                        request: message(
                            0,
                            &text("request_headers")?,
                            r.try_get("request_body")?,
                            r.try_get("request_truncated")?,
                        ),
                        expected: message(
                            r.try_get("expected_status")?,
                            &text("expected_headers")?,
                            r.try_get("expected_body")?,
                            r.try_get("expected_truncated")?,
                        ),
                        actual: message(
                            r.try_get("actual_status")?,
                            &text("actual_headers")?,
                            r.try_get("actual_body")?,
                            r.try_get("actual_truncated")?,
                        ),
                        differences: serde_json::from_str(&text("differences")?)
                            .unwrap_or_default(),
                    })
                }
            }
        });
        Ok(found)
    }

    /// Keeps at most `per_route` mismatches per route and none older than `max_age`; returns how
    /// many were deleted.
    pub async fn prune(&self, per_route: i64, max_age: Duration) -> Result<u64, StoreError> {
        let cutoff = now_ms() - i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        const OLD: &str = "DELETE FROM strangler_mismatches WHERE at_ms < $1";
        const OVER: &str = "DELETE FROM strangler_mismatches WHERE id IN (SELECT id FROM \
            (SELECT id, ROW_NUMBER() OVER (PARTITION BY route ORDER BY id DESC) AS n FROM strangler_mismatches) AS ranked \
            WHERE n > $1)";
        const ORPHANS: &str = "DELETE FROM strangler_mismatch_patterns WHERE id NOT IN (SELECT id FROM strangler_mismatches)";
        let n = on_pool!(&self.store.pool, |p| {
            let mut tx = p.begin().await?;
            let old = sqlx::query(OLD)
                .bind(cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let over = sqlx::query(OVER)
                .bind(per_route.max(0))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query(ORPHANS).execute(&mut *tx).await?;
            tx.commit().await?;
            old + over
        });
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
