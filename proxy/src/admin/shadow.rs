//! The shadow area: each shadowed route's figures, stored mismatches newest first, and one
//! whole.

use http::StatusCode;
use serde_json::json;
use strangler_store::mismatches::Query;

use super::{Admin, ApiError, Reply, json_reply};

impl Admin {
    /// `GET /api/shadow`: per shadowed route, comparisons by result, skips by reason, the match
    /// rate since start, the 10 most frequent difference patterns, and the noise learned.
    pub(super) fn shadow(&self) -> Reply {
        let loaded = self.rules.current();
        let routes: Vec<String> = loaded
            .rules
            .routes()
            .iter()
            .filter(|r| r.shadow.is_some())
            .map(|r| r.name.clone())
            .collect();
        Ok(json_reply(
            StatusCode::OK,
            &json!({ "routes": self.shadowing.summary(&routes) }),
        ))
    }

    /// `GET /api/shadow/mismatches?route=&pattern=&limit=&before=`: newest first; `before` is
    /// the last id of the previous page (`next_before` in the answer).
    pub(super) async fn mismatches(&self, query: Option<&str>) -> Reply {
        let params = super::Params(query);
        let q = Query {
            route: params.text("route"),
            pattern: params.text("pattern"),
            before: params.number("before")?,
            limit: params.number("limit")?.unwrap_or(50),
        };
        let found = self.store.mismatches().list(&q).await?;
        let next = (found.len() as i64 == q.limit.clamp(1, 1000))
            .then(|| found.last().map(|m| m.id))
            .flatten();
        Ok(json_reply(
            StatusCode::OK,
            &json!({ "mismatches": found, "next_before": next }),
        ))
    }

    /// `GET /api/shadow/mismatches/{id}`: one mismatch, whole.
    pub(super) async fn mismatch(&self, id: &str) -> Reply {
        let id: i64 = id.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("`{id}` is not a mismatch id"),
            )
        })?;
        match self.store.mismatches().get(id).await? {
            Some(m) => Ok(json_reply(StatusCode::OK, &json!(m))),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no mismatch {id}"),
            )),
        }
    }
}
