//! The rules area: the routes with their weights and request counts, the last reload's
//! outcome, and a reload on demand.

use std::sync::Arc;

use http::StatusCode;
use serde_json::json;
use strangler_rules::Target;

use super::{Admin, ApiError, Reply, json_reply};

impl Admin {
    /// `GET /api/routes`.
    pub(super) fn routes(&self) -> Reply {
        let loaded = self.rules.current();
        let routes: Vec<_> = loaded
            .rules
            .routes()
            .iter()
            .zip(&loaded.route_stats)
            .map(|(r, stats)| {
                // A route pinned to the monolith has no weight to show: `null`, and `pinned`.
                // The weight in force: a rollout's or the kill switch's when they apply.
                let (service, weight, sticky) = match &r.target {
                    Target::Service(s) => (
                        s.service.as_str(),
                        Some(f64::from(self.rollouts.weight(r)) / 100.0),
                        s.sticky.as_ref().map(|k| k.describe()),
                    ),
                    Target::Legacy => (strangler_rules::LEGACY, None, None),
                };
                let service_requests = match &r.target {
                    Target::Service(_) => stats.service.requests.get(),
                    Target::Legacy => 0,
                };
                json!({
                    "name": r.name,
                    "context": r.context(),
                    "file": format!("{}:{}", r.file, r.line),
                    "priority": r.priority,
                    "target": service,
                    "weight": weight,
                    "pinned": weight.is_none(),
                    "sticky": sticky,
                    "requests": { "legacy": stats.legacy.requests.get(), "service": service_requests },
                })
            })
            .collect();
        Ok(json_reply(
            StatusCode::OK,
            &json!({
                "generation": loaded.generation,
                "routes": routes,
                "default": { "requests": loaded.default_stats.requests.get() },
                "last_reload": self.rules.last_status(),
            }),
        ))
    }

    /// `GET /api/rules`: the last reload's outcome.
    pub(super) fn rules_status(&self) -> Reply {
        Ok(json_reply(StatusCode::OK, &json!(self.rules.last_status())))
    }

    /// `POST /api/reload`: 200 with the new status, 422 with the errors (the last good rules
    /// keep serving).
    pub(super) async fn reload(&self) -> Reply {
        let rules = Arc::clone(&self.rules);
        let result = tokio::task::spawn_blocking(move || rules.reload("admin api"))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        Ok(match result {
            Ok(s) => json_reply(StatusCode::OK, &json!(s)),
            Err(s) => json_reply(StatusCode::UNPROCESSABLE_ENTITY, &json!(s)),
        })
    }
}
