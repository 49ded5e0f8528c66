//! Replays: archived events (`strangler_published`, kept for `events.keep_published`) put back
//! into the outbox with their original ids, so the relay publishes them again with its order,
//! retries and dead letters. A replay is a job with a cursor: each step moves the next chunk of
//! matching events and advances the cursor in the same transaction, so a replay interrupted at
//! any point (even `kill -9`) and resumed moves every selected event exactly once.
//!
//! The selection is fixed when the job is made: events of a stream or a route (and a CloudEvents
//! type) created in `[since, until)`, archived up to then (`last_seq`); what is published while it
//! runs, replayed copies included, is not part of it. Each copy a replay puts in the outbox
//! carries the job's id (`replay_id`, kept through the archive and dead letters); a replay takes
//! only original events unless its selection says `include_replayed`.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::outbox::BeginEnqueue;
use crate::{Store, StoreError, now_ms, on_pool};

/// Which archived events a replay takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// The stream they were published to (as the rules name it)…
    pub stream: Option<String>,
    /// …or the route that published them.
    pub route: Option<String>,
    /// Only events of this CloudEvents type.
    #[serde(rename = "type")]
    pub ty: Option<String>,
    /// Created at or after (ms since the epoch).
    pub since_ms: i64,
    /// Created before (ms since the epoch).
    pub until_ms: Option<i64>,
    /// Publish to this stream instead of the original one.
    pub to_stream: Option<String>,
    /// Also the copies earlier replays published (by default only the original events: a
    /// second replay of a window holds each event once).
    #[serde(default)]
    pub include_replayed: bool,
}

/// Where a replay job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayState {
    Running,
    /// Stored as running, but no step for [`STALLED_MS`]: its process is gone (never stored).
    Interrupted,
    Done,
    Failed,
    Cancelled,
}

impl ReplayState {
    pub const ALL: [ReplayState; 5] = [
        ReplayState::Running,
        ReplayState::Interrupted,
        ReplayState::Done,
        ReplayState::Failed,
        ReplayState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReplayState::Running => "running",
            ReplayState::Interrupted => "interrupted",
            ReplayState::Done => "done",
            ReplayState::Failed => "failed",
            ReplayState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Option<ReplayState> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for ReplayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A replay job as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replay {
    pub id: i64,
    #[serde(flatten)]
    pub selection: Selection,
    pub state: ReplayState,
    pub total: i64,
    /// Events moved to the outbox so far.
    pub done: i64,
    /// The last archived `seq` looked at.
    pub cursor_seq: i64,
    /// The last archived `seq` of the selection.
    pub last_seq: i64,
    pub actor: String,
    pub error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A running job with no step for this long is taken as interrupted (its process died).
pub const STALLED_MS: i64 = 10_000;

/// How a chunk is read: archived rows after the cursor, up to the selection's end.
const CHUNK_SQL: &str = "SELECT seq, id, route, stream, partition_key, payload, created_ms FROM strangler_published \
     WHERE seq > $1 AND seq <= $2 AND created_ms >= $3 AND created_ms < $4 \
     AND ($5 = '' OR stream = $5) AND ($6 = '' OR route = $6) AND ($8 OR replay_id IS NULL) ORDER BY seq LIMIT $7";

const COLUMNS: &str = "id, stream, route, type, since_ms, until_ms, to_stream, state, total, done, cursor_seq, \
     last_seq, actor, error, created_ms, updated_ms, include_replayed";

/// A [`Replay`] from a row of [`COLUMNS`] (either database's row type), by column name; `?` on
/// a missing or mistyped column or a state this build does not know.
macro_rules! replay {
    ($r:expr) => {{
        let stored: String = $r.try_get("state")?;
        let state = ReplayState::parse(&stored).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "state".into(),
            source: format!("unknown replay state `{stored}`").into(),
        })?;
        let updated_ms = $r.try_get("updated_ms")?;
        Replay {
            id: $r.try_get("id")?,
            selection: Selection {
                stream: $r.try_get("stream")?,
                route: $r.try_get("route")?,
                ty: $r.try_get("type")?,
                since_ms: $r.try_get("since_ms")?,
                until_ms: $r.try_get("until_ms")?,
                to_stream: $r.try_get("to_stream")?,
                include_replayed: $r.try_get::<i64, _>("include_replayed")? != 0,
            },
            state: stalled(state, updated_ms),
            total: $r.try_get("total")?,
            done: $r.try_get("done")?,
            cursor_seq: $r.try_get("cursor_seq")?,
            last_seq: $r.try_get("last_seq")?,
            actor: $r.try_get("actor")?,
            error: $r.try_get("error")?,
            created_ms: $r.try_get("created_ms")?,
            updated_ms,
        }
    }};
}

/// The replays table.
#[derive(Clone)]
pub struct Replays {
    store: Store,
}

impl Store {
    pub fn replays(&self) -> Replays {
        Replays {
            store: self.clone(),
        }
    }
}

/// One archived event read back.
struct Archived {
    seq: i64,
    id: String,
    route: Option<String>,
    stream: String,
    partition_key: String,
    payload: Vec<u8>,
}

impl Archived {
    fn matches(&self, s: &Selection) -> bool {
        match &s.ty {
            None => true,
            Some(ty) => {
                #[derive(Deserialize)]
                struct Type<'a> {
                    #[serde(rename = "type", borrow)]
                    ty: Option<std::borrow::Cow<'a, str>>,
                }
                serde_json::from_slice::<Type<'_>>(&self.payload)
                    .ok()
                    .and_then(|t| t.ty)
                    .is_some_and(|t| t == *ty)
            }
        }
    }
}

impl Replays {
    /// How many archived events the selection holds now, and the last one's `seq` (0: none).
    pub async fn count(&self, s: &Selection) -> Result<(i64, i64), StoreError> {
        let (mut cursor, mut n, mut last) = (0, 0, 0);
        loop {
            let rows = self.chunk(s, cursor, i64::MAX, 5000).await?;
            let Some(end) = rows.last().map(|r| r.seq) else {
                return Ok((n, last));
            };
            for r in rows.iter().filter(|r| r.matches(s)) {
                n += 1;
                last = r.seq;
            }
            cursor = end;
        }
    }

    /// Makes a job for the selection (counted now), running.
    pub async fn create(&self, s: &Selection, actor: &str) -> Result<Replay, StoreError> {
        let (total, last_seq) = self.count(s).await?;
        let now = now_ms();
        let state = if total == 0 {
            ReplayState::Done
        } else {
            ReplayState::Running
        };
        let id: i64 = on_pool!(&self.store.pool, |p| {
            sqlx::query_scalar(
            "INSERT INTO strangler_replays (stream, route, type, since_ms, until_ms, to_stream, state, total, \
             done, cursor_seq, last_seq, actor, error, created_ms, updated_ms, include_replayed) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 0, $9, $10, NULL, $11, $11, $12) RETURNING id"
        )
        .bind(&s.stream)
        .bind(&s.route)
        .bind(&s.ty)
        .bind(s.since_ms)
        .bind(s.until_ms)
        .bind(&s.to_stream)
        .bind(state.as_str())
        .bind(total)
        .bind(last_seq)
        .bind(actor)
        .bind(now)
        .bind(i64::from(s.include_replayed))
        .fetch_one(p)
        .await?
        });
        self.existing(id).await
    }

    pub async fn get(&self, id: i64) -> Result<Option<Replay>, StoreError> {
        Ok(self.select(Some(id)).await?.pop())
    }

    /// A job that must be there (one this process just wrote).
    async fn existing(&self, id: i64) -> Result<Replay, StoreError> {
        self.get(id)
            .await?
            .ok_or_else(|| StoreError::Vanished(format!("replay {id}")))
    }

    /// The latest 100 jobs, newest first.
    pub async fn list(&self) -> Result<Vec<Replay>, StoreError> {
        self.select(None).await
    }

    /// One job, or the latest 100.
    async fn select(&self, id: Option<i64>) -> Result<Vec<Replay>, StoreError> {
        let sql = match id {
            Some(_) => format!("SELECT {COLUMNS} FROM strangler_replays WHERE id = $1"),
            None => format!("SELECT {COLUMNS} FROM strangler_replays ORDER BY id DESC LIMIT 100"),
        };
        let rows = on_pool!(&self.store.pool, |p| {
            let query = sqlx::query(sqlx::AssertSqlSafe(sql));
            let query = match id {
                Some(id) => query.bind(id),
                None => query,
            };
            let rows = query.fetch_all(p).await?;
            rows.iter()
                .map(|r| Ok::<_, sqlx::Error>(replay!(r)))
                .collect::<Result<Vec<_>, _>>()?
        });
        Ok(rows)
    }

    /// Moves the next `limit` archived rows' matching events into the outbox and advances the
    /// cursor, in one transaction; returns the job after it (`done` once the cursor reaches the
    /// selection's end). The relay is told about the new rows.
    pub async fn step(&self, job: &Replay, limit: i64) -> Result<Replay, StoreError> {
        let s = &job.selection;
        let rows = self.chunk(s, job.cursor_seq, job.last_seq, limit).await?;
        let cursor = rows.last().map_or(job.last_seq, |r| r.seq);
        let moving: Vec<&Archived> = rows.iter().filter(|r| r.matches(s)).collect();
        let finished = cursor >= job.last_seq;
        let now = now_ms();
        let moved = on_pool!(&self.store.pool, |p| {
            let mut tx = p.begin_enqueue().await?;
            // The cursor first, guarded by its old value: two runners of one job cannot both
            // move a chunk.
            let claimed = sqlx::query(
                "UPDATE strangler_replays SET cursor_seq = $1, done = done + $2, updated_ms = $3, \
                 state = CASE WHEN $4 THEN 'done' ELSE state END \
                 WHERE id = $5 AND cursor_seq = $6 AND state = 'running'",
            )
            .bind(cursor)
            .bind(moving.len() as i64)
            .bind(now)
            .bind(finished)
            .bind(job.id)
            .bind(job.cursor_seq)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed == 1 {
                for r in &moving {
                    sqlx::query(
                        "INSERT INTO strangler_outbox (id, route, stream, partition_key, payload, created_ms, \
                         attempts, next_attempt_ms, replay_id) VALUES ($1, $2, $3, $4, $5, $6, 0, $6, $7)",
                    )
                    .bind(&r.id)
                    .bind(r.route.as_deref().unwrap_or("replay"))
                    .bind(s.to_stream.as_deref().unwrap_or(&r.stream))
                    .bind(&r.partition_key)
                    .bind(&r.payload)
                    .bind(now)
                    .bind(job.id)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
            claimed == 1 && !moving.is_empty()
        });
        if moved {
            self.store.outbox().added_outside_writer();
        }
        self.existing(job.id).await
    }

    /// Sets a job's state (`running` again to resume, `failed` with an error, `cancelled`), and
    /// its heartbeat. Returns false when the job is not in one of `from`.
    pub async fn set_state(
        &self,
        id: i64,
        from: &[ReplayState],
        state: ReplayState,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let job = self.get(id).await?;
        let Some(job) = job else { return Ok(false) };
        if !from.contains(&job.state) {
            return Ok(false);
        }
        let n = on_pool!(&self.store.pool, |p| {
            sqlx::query(
            "UPDATE strangler_replays SET state = $1, error = $2, updated_ms = $3 WHERE id = $4 AND updated_ms = $5"
        )
        .bind(state.as_str())
        .bind(error)
        .bind(now_ms())
        .bind(id)
        .bind(job.updated_ms)
        .execute(p)
        .await?
        .rows_affected()
        });
        Ok(n == 1)
    }

    /// Events waiting in the outbox (every stream): replays wait while it is high.
    pub async fn outbox_depth(&self) -> Result<i64, StoreError> {
        let n = on_pool!(&self.store.pool, |p| sqlx::query_scalar(
            "SELECT COUNT(*) FROM strangler_outbox"
        )
        .fetch_one(p)
        .await?);
        Ok(n)
    }

    /// Marks a running job alive (while it waits for the outbox to drain).
    pub async fn heartbeat(&self, id: i64) -> Result<(), StoreError> {
        on_pool!(&self.store.pool, |p| sqlx::query(
            "UPDATE strangler_replays SET updated_ms = $1 WHERE id = $2 AND state = 'running'"
        )
        .bind(now_ms())
        .bind(id)
        .execute(p)
        .await?
        .rows_affected());
        Ok(())
    }

    async fn chunk(
        &self,
        s: &Selection,
        after: i64,
        up_to: i64,
        limit: i64,
    ) -> Result<Vec<Archived>, StoreError> {
        let rows = on_pool!(&self.store.pool, |p| {
            let rows = sqlx::query(CHUNK_SQL)
                .bind(after)
                .bind(up_to)
                .bind(s.since_ms)
                .bind(s.until_ms.unwrap_or(i64::MAX))
                .bind(s.stream.as_deref().unwrap_or(""))
                .bind(s.route.as_deref().unwrap_or(""))
                .bind(limit)
                .bind(s.include_replayed)
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok::<_, sqlx::Error>(Archived {
                        seq: r.try_get("seq")?,
                        id: r.try_get("id")?,
                        route: r.try_get("route")?,
                        stream: r.try_get("stream")?,
                        partition_key: r.try_get("partition_key")?,
                        payload: r.try_get("payload")?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        });
        Ok(rows)
    }
}

/// A running job with no step for [`STALLED_MS`] reads as `interrupted` (its runner died).
fn stalled(state: ReplayState, updated_ms: i64) -> ReplayState {
    if state == ReplayState::Running && now_ms() - updated_ms > STALLED_MS {
        ReplayState::Interrupted
    } else {
        state
    }
}
