//! The admin listener (loopback by default): `/metrics`, `/healthz`, `/readyz`, `GET /api/routes`,
//! `GET /api/rules` (last reload status) and `POST /api/reload`. JSON in, JSON out; it never
//! touches the request path's state except through `RulesStore`.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::json;
use strangler_rules::Target;

use crate::reload::RulesStore;

pub struct Admin {
    pub store: Arc<RulesStore>,
    pub registry: Registry,
    pub dual_write: Arc<crate::dual_write::DualWrite>,
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (method, path) = (req.method.clone(), req.uri.path().to_string());
        let query = req.uri.query().map(str::to_string);
        let outbox = &self.dual_write.outbox;
        match (method, path.as_str()) {
            (Method::GET, "/metrics") => {
                let mut buf = Vec::new();
                let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
                reply(StatusCode::OK, "text/plain; version=0.0.4", buf)
            }
            (Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            // Rules are loaded before the listeners start, so serving means ready.
            (Method::GET, "/readyz") => reply(StatusCode::OK, "text/plain", b"ready\n".to_vec()),
            (Method::GET, "/api/routes") => self.routes(),
            (Method::GET, "/api/rules") => {
                json_reply(StatusCode::OK, &json!(self.store.last_status()))
            }
            (Method::GET, "/api/outbox") => {
                store_reply(outbox.depth().await.map(|d| json!({ "streams": d })))
            }
            (Method::GET, "/api/dead-letters") => store_reply(
                outbox
                    .dead_letters(1000)
                    .await
                    .map(|d| json!({ "dead_letters": d })),
            ),
            (Method::POST, "/api/dead-letters/redrive") => {
                // `?seq=1,2,3` re-drives those; no query re-drives them all.
                let seqs: Option<Vec<i64>> = query.as_deref().and_then(|q| {
                    q.split('&')
                        .find_map(|kv| kv.strip_prefix("seq="))
                        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
                });
                store_reply(
                    outbox
                        .redrive(seqs.as_deref())
                        .await
                        .map(|n| json!({ "redriven": n })),
                )
            }
            (Method::POST, "/api/reload") => {
                let store = Arc::clone(&self.store);
                let result = tokio::task::spawn_blocking(move || store.reload("admin api")).await;
                match result {
                    Ok(Ok(s)) => json_reply(StatusCode::OK, &json!(s)),
                    Ok(Err(s)) => json_reply(StatusCode::UNPROCESSABLE_ENTITY, &json!(s)),
                    Err(e) => json_reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &json!({"error": e.to_string()}),
                    ),
                }
            }
            (_, p) if ENDPOINTS.iter().any(|(_, known)| *known == p) => json_reply(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "method not allowed"}),
            ),
            _ => json_reply(
                StatusCode::NOT_FOUND,
                &json!({
                    "error": "not found",
                    "paths": ENDPOINTS.iter().map(|(m, p)| format!("{m} {p}")).collect::<Vec<_>>(),
                }),
            ),
        }
    }
}

/// Every endpoint, for 405 and for the 404 listing.
const ENDPOINTS: [(&str, &str); 9] = [
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/api/routes"),
    ("GET", "/api/rules"),
    ("POST", "/api/reload"),
    ("GET", "/api/outbox"),
    ("GET", "/api/dead-letters"),
    ("POST", "/api/dead-letters/redrive"),
];

/// An outbox answer, or 503 when the store cannot be read.
fn store_reply(r: Result<serde_json::Value, strangler_events::OutboxError>) -> Response<Vec<u8>> {
    match r {
        Ok(v) => json_reply(StatusCode::OK, &v),
        Err(e) => json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": e.to_string()}),
        ),
    }
}

impl Admin {
    fn routes(&self) -> Response<Vec<u8>> {
        let loaded = self.store.current();
        let routes: Vec<_> = loaded
            .rules
            .routes()
            .iter()
            .zip(&loaded.route_stats)
            .map(|(r, stats)| {
                // A route pinned to the monolith has no weight to show: `null`, and `pinned`.
                let (service, weight, sticky) = match &r.target {
                    Target::Service(s) => (s.service.as_str(), Some(f64::from(s.weight_bp) / 100.0), s.sticky.as_ref().map(|k| k.describe())),
                    Target::Legacy => (strangler_rules::LEGACY, None, None),
                };
                json!({
                    "name": r.name,
                    "file": format!("{}:{}", r.file, r.line),
                    "priority": r.priority,
                    "target": service,
                    "weight": weight,
                    "pinned": weight.is_none(),
                    "sticky": sticky,
                    "requests": { "legacy": stats[0].requests.get(), "service": if service == strangler_rules::LEGACY { 0 } else { stats[1].requests.get() } },
                })
            })
            .collect();
        let status = self.store.last_status();
        json_reply(
            StatusCode::OK,
            &json!({
                "generation": loaded.generation,
                "routes": routes,
                "default": { "requests": loaded.default_stats.requests.get() },
                "last_reload": status,
            }),
        )
    }
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .expect("static response parts are valid")
}

fn json_reply(status: StatusCode, v: &serde_json::Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    reply(status, "application/json", body)
}
