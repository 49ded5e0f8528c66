//! The rollouts area: each context's plan, state and weight in force; the commands that move
//! it (pause, resume, promote, rollback, weight); the audit log; the kill switch.

use http::StatusCode;
use serde_json::json;
use strangler_rollout::Command;

use super::{Admin, ApiError, Call, Reply, json_reply};
use crate::rollout::commands::CommandError;

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> ApiError {
        let status = match &e {
            CommandError::NoContext(_) => StatusCode::NOT_FOUND,
            CommandError::NoPlan(_)
            | CommandError::Refused(_)
            | CommandError::Conflict
            | CommandError::Frozen => StatusCode::CONFLICT,
            CommandError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}

impl Admin {
    /// `GET /api/rollouts`: every context, its plan, stored state and weight in force.
    pub(super) async fn rollouts(&self) -> Reply {
        let loaded = self.rules.current();
        let contexts = self.rollouts.status(&loaded.rules).await?;
        Ok(json_reply(
            StatusCode::OK,
            &json!({ "kill_switch": self.rollouts.killed(), "contexts": contexts }),
        ))
    }

    /// `POST /api/rollouts/{context}/{pause|resume|promote|rollback|weight}`; `weight` takes
    /// `{"weight": 25}` (percent) and pauses the plan there.
    pub(super) async fn rollout_command(&self, call: &Call<'_>) -> Reply {
        let (context, action) = match call.params.as_slice() {
            [c, a] => (c.as_str(), a.as_str()),
            _ => return Err(ApiError::new(StatusCode::NOT_FOUND, "not found")),
        };
        let cmd = match action {
            "pause" => Command::Pause,
            "resume" => Command::Resume,
            "promote" => Command::Promote,
            "rollback" => Command::Rollback,
            "weight" => Command::SetWeight(weight_of(call.body)?),
            other => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!(
                        "unknown rollout command `{other}` (pause, resume, promote, rollback, weight)"
                    ),
                ));
            }
        };
        let loaded = self.rules.current();
        let state = self
            .rollouts
            .command(&loaded.rules, context, cmd, call.actor)
            .await?;
        Ok(json_reply(
            StatusCode::OK,
            &json!({ "context": context, "state": state }),
        ))
    }

    /// `GET /api/audit?context=&limit=&before=`: transitions newest first.
    pub(super) async fn audit(&self, query: Option<&str>) -> Reply {
        let params = super::Params(query);
        let limit = params.number("limit")?.unwrap_or(50);
        let entries = self
            .rollouts
            .store
            .rollouts()
            .audit(
                params.text("context").as_deref(),
                params.number("before")?,
                limit,
            )
            .await?;
        let next = (entries.len() as i64 == limit.clamp(1, 1000))
            .then(|| entries.last().map(|e| e.id))
            .flatten();
        Ok(json_reply(
            StatusCode::OK,
            &json!({ "entries": entries, "next_before": next }),
        ))
    }

    /// `GET /api/kill-switch`.
    pub(super) async fn kill_switch(&self) -> Reply {
        let k = self.rollouts.store.rollouts().kill_switch().await?;
        Ok(json_reply(StatusCode::OK, &json!(k)))
    }

    /// `POST` / `DELETE /api/kill-switch`: every context to the monolith on every replica (each
    /// within its next sync), until turned off.
    pub(super) async fn set_kill_switch(&self, on: bool, actor: &str) -> Reply {
        let rules = self.rules.current();
        let changed = self
            .rollouts
            .set_kill_switch(&rules.rules, on, actor)
            .await?;
        Ok(json_reply(
            StatusCode::OK,
            &json!({ "kill_switch": on, "changed": changed }),
        ))
    }
}

/// `{"weight": 25}` → basis points.
fn weight_of(body: &[u8]) -> Result<u16, ApiError> {
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            r#"send {"weight": N} with N from 0 to 100"#,
        )
    };
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| bad())?;
    let w = v
        .get("weight")
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(bad)?;
    if !(0.0..=100.0).contains(&w) {
        return Err(bad());
    }
    Ok((w * 100.0).round() as u16)
}
