//! The replays area: re-publishing archived events (`events.keep_published`) with their
//! original ids through the outbox. `POST /api/replays` makes and starts a job (or, with
//! `"dry_run": true`, only counts what it would take); `GET /api/replays[/{id}]` shows progress;
//! `POST /api/replays/{id}/resume|cancel`.

use http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use strangler_store::{ReplayState, Replays, Selection};

use super::{Admin, ApiError, Call, Reply, json_reply};
use crate::replay::parse_time;

/// `POST /api/replays`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewReplay {
    stream: Option<String>,
    route: Option<String>,
    #[serde(rename = "type")]
    ty: Option<String>,
    since: String,
    until: Option<String>,
    to_stream: Option<String>,
    /// Also the copies earlier replays published (default: the original events only).
    #[serde(default)]
    include_replayed: bool,
    #[serde(default)]
    dry_run: bool,
    /// Events per second at most (0 or absent: as fast as the relay takes them).
    #[serde(default)]
    rate: u32,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

impl Admin {
    fn replays(&self) -> Replays {
        self.store.replays()
    }

    /// `GET /api/replays`: the latest 100 jobs, newest first.
    pub(super) async fn list_replays(&self) -> Reply {
        let jobs = self.replays().list().await?;
        Ok(json_reply(StatusCode::OK, &json!({ "replays": jobs })))
    }

    /// `GET /api/replays/{id}`.
    pub(super) async fn replay(&self, id: &str) -> Reply {
        let id = job_id(id)?;
        match self.replays().get(id).await? {
            Some(job) => Ok(json_reply(StatusCode::OK, &json!(job))),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no replay {id}"),
            )),
        }
    }

    /// `POST /api/replays`: `{"stream"|"route": …, "since": …, "until"?, "type"?, "to_stream"?,
    /// "dry_run"?, "rate"?}`. Times: RFC 3339, a date, epoch milliseconds or an age (`2h`).
    pub(super) async fn create_replay(&self, call: &Call<'_>) -> Reply {
        let req: NewReplay = serde_json::from_slice(call.body)
            .map_err(|e| bad(format!("the body must be a replay request: {e}")))?;
        if req.stream.is_some() == req.route.is_some() {
            return Err(bad("give one of `stream` and `route`"));
        }
        let now = strangler_store::now_ms();
        let since_ms = parse_time(&req.since, now).map_err(bad)?;
        let until_ms = req
            .until
            .as_deref()
            .map(|u| parse_time(u, now))
            .transpose()
            .map_err(bad)?;
        if until_ms.is_some_and(|u| u <= since_ms) {
            return Err(bad("`until` must be after `since`"));
        }
        let selection = Selection {
            stream: req.stream,
            route: req.route,
            ty: req.ty,
            since_ms,
            until_ms,
            to_stream: req.to_stream,
            include_replayed: req.include_replayed,
        };
        let replays = self.replays();
        if req.dry_run {
            let (events, _) = replays.count(&selection).await?;
            return Ok(json_reply(
                StatusCode::OK,
                &json!({ "dry_run": true, "selection": selection, "events": events }),
            ));
        }
        let job = replays.create(&selection, call.actor).await?;
        if job.state == ReplayState::Running {
            crate::replay::start(replays, job.clone(), req.rate);
        }
        Ok(json_reply(StatusCode::CREATED, &json!(job)))
    }

    /// `POST /api/replays/{id}/{resume|cancel}`: an interrupted or failed job runs on from its
    /// cursor (`{"rate": N}` optional); a running or interrupted one stops where it is.
    pub(super) async fn replay_command(&self, call: &Call<'_>) -> Reply {
        let (id, action) = match call.params.as_slice() {
            [id, action] => (job_id(id)?, action.as_str()),
            _ => return Err(ApiError::new(StatusCode::NOT_FOUND, "not found")),
        };
        let replays = self.replays();
        let Some(job) = replays.get(id).await? else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no replay {id}"),
            ));
        };
        let (from, to): (&[ReplayState], ReplayState) = match action {
            "resume" => (
                &[ReplayState::Interrupted, ReplayState::Failed][..],
                ReplayState::Running,
            ),
            "cancel" => (
                &[
                    ReplayState::Running,
                    ReplayState::Interrupted,
                    ReplayState::Failed,
                ][..],
                ReplayState::Cancelled,
            ),
            other => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("unknown replay command `{other}` (resume, cancel)"),
                ));
            }
        };
        if !replays.set_state(id, from, to, None).await? {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("replay {id} is {}: it cannot {action}", job.state),
            ));
        }
        let job = replays
            .get(id)
            .await?
            .ok_or_else(|| bad("the job vanished"))?;
        if action == "resume" {
            let rate = serde_json::from_slice::<serde_json::Value>(call.body)
                .ok()
                .and_then(|v| v["rate"].as_u64())
                .unwrap_or(0);
            crate::replay::start(
                replays,
                job.clone(),
                u32::try_from(rate).unwrap_or(u32::MAX),
            );
        }
        Ok(json_reply(StatusCode::OK, &json!(job)))
    }
}

fn job_id(text: &str) -> Result<i64, ApiError> {
    text.parse()
        .map_err(|_| bad(format!("a replay id is a number, got `{text}`")))
}
