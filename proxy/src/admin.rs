//! The admin listener (loopback by default): the console page (`/`, [`console`]), `/metrics`,
//! `/healthz`, `/readyz`, and the JSON API, one module per area: [`rules`] (routes, reload
//! status, reload), [`events`] (outbox depth, dead letters, re-drive), [`replays`] (re-publishing
//! archived events), [`shadow`] (figures per route, stored mismatches) and [`rollouts`] (rollout
//! status and commands, the audit log, the kill switch) and [`consumers`] (the configured
//! consumers' progress, read from their metrics). JSON in, JSON out.
//!
//! Endpoints that change anything (every method but GET) want `Authorization: Bearer <token>`
//! when the config names a token (`admin_token_env`); `/metrics`, `/healthz` and `/readyz`, like
//! every GET, stay open.
//!
//! Requests are routed by a table ([`ENDPOINTS`]) compiled into a `matchit` router: a path
//! known for another method answers 405 with `Allow`, an unknown path 404 listing every
//! endpoint. Every error is the same JSON shape ([`ApiError`]): `{"error": "…"}`.

mod console;
mod consumers;
mod events;
mod replays;
mod rollouts;
mod rules;
mod shadow;

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::json;

use crate::reload::LiveRules;

pub struct Admin {
    pub rules: Arc<LiveRules>,
    pub registry: Registry,
    pub dual_write: Arc<crate::dual_write::DualWrite>,
    /// The one store (built in `serve::run`): mismatches, replays, dead letters.
    pub store: strangler_store::Store,
    pub shadowing: Arc<crate::shadow::Shadowing>,
    pub rollouts: Arc<crate::rollout::Rollouts>,
    /// Mutating endpoints want `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// The proxy's listeners: ready only while each accepts.
    pub listeners: Vec<std::net::SocketAddr>,
    /// Consumers whose progress `/api/consumers` reads: name → metrics URL.
    pub consumers: std::collections::BTreeMap<String, String>,
}

/// What an endpoint answers: a response, or an error in the shared shape.
type Reply = Result<Response<Vec<u8>>, ApiError>;

/// An admin API error: its status and message, sent as `{"error": message, …extra}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// More members of the error object (the known paths of a 404, say).
    extra: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            extra: serde_json::Map::new(),
        }
    }

    fn with(mut self, key: &str, value: serde_json::Value) -> ApiError {
        self.extra.insert(key.to_string(), value);
        self
    }

    fn into_response(self) -> Response<Vec<u8>> {
        let mut body = serde_json::Map::new();
        body.insert("error".into(), self.message.into());
        body.extend(self.extra);
        json_reply(self.status, &serde_json::Value::Object(body))
    }
}

/// The store could not answer: 503, the proxy itself still serves.
impl From<strangler_events::StoreError> for ApiError {
    fn from(e: strangler_events::StoreError) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

/// Every endpoint the admin listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Metrics,
    Healthz,
    Readyz,
    Routes,
    RulesStatus,
    Reload,
    Console(console::Asset),
    Outbox,
    DeadLetters,
    Redrive,
    Shadow,
    Mismatches,
    Mismatch,
    Rollouts,
    RolloutCommand,
    Audit,
    KillSwitch,
    KillSwitchOn,
    KillSwitchOff,
    Replays,
    Replay,
    NewReplay,
    ReplayCommand,
    Consumers,
}

impl Endpoint {
    /// What the proxy stored from traffic and people (requests and answers, upstream
    /// addresses, the audit log, events): with a token configured, reading it wants the token.
    /// `/metrics`, `/healthz`, `/readyz`, the rules' status, the outbox depths, the shadow
    /// summary and the rollout states stay open.
    fn shows_stored_data(self) -> bool {
        matches!(
            self,
            Endpoint::Routes
                | Endpoint::DeadLetters
                | Endpoint::Mismatches
                | Endpoint::Mismatch
                | Endpoint::Audit
                | Endpoint::Replays
                | Endpoint::Replay
        )
    }
}

/// The routing table: method, path (`matchit` syntax, `{name}` for a parameter), endpoint.
const ENDPOINTS: &[(Method, &str, Endpoint)] = &[
    (Method::GET, "/", Endpoint::Console(console::Asset::Page)),
    (
        Method::GET,
        "/console.js",
        Endpoint::Console(console::Asset::Script),
    ),
    (
        Method::GET,
        "/console.css",
        Endpoint::Console(console::Asset::Style),
    ),
    (Method::GET, "/metrics", Endpoint::Metrics),
    (Method::GET, "/healthz", Endpoint::Healthz),
    (Method::GET, "/readyz", Endpoint::Readyz),
    (Method::GET, "/api/routes", Endpoint::Routes),
    (Method::GET, "/api/rules", Endpoint::RulesStatus),
    (Method::POST, "/api/reload", Endpoint::Reload),
    (Method::GET, "/api/outbox", Endpoint::Outbox),
    (Method::GET, "/api/dead-letters", Endpoint::DeadLetters),
    (Method::POST, "/api/dead-letters/redrive", Endpoint::Redrive),
    (Method::GET, "/api/shadow", Endpoint::Shadow),
    (Method::GET, "/api/shadow/mismatches", Endpoint::Mismatches),
    (
        Method::GET,
        "/api/shadow/mismatches/{id}",
        Endpoint::Mismatch,
    ),
    (Method::GET, "/api/rollouts", Endpoint::Rollouts),
    (
        Method::POST,
        "/api/rollouts/{context}/{action}",
        Endpoint::RolloutCommand,
    ),
    (Method::GET, "/api/audit", Endpoint::Audit),
    (Method::GET, "/api/kill-switch", Endpoint::KillSwitch),
    (Method::POST, "/api/kill-switch", Endpoint::KillSwitchOn),
    (Method::DELETE, "/api/kill-switch", Endpoint::KillSwitchOff),
    (Method::GET, "/api/replays", Endpoint::Replays),
    (Method::POST, "/api/replays", Endpoint::NewReplay),
    (Method::GET, "/api/replays/{id}", Endpoint::Replay),
    (
        Method::POST,
        "/api/replays/{id}/{action}",
        Endpoint::ReplayCommand,
    ),
    (Method::GET, "/api/consumers", Endpoint::Consumers),
];

/// Path → the methods it answers, with their endpoints.
static ROUTER: LazyLock<matchit::Router<Vec<(Method, Endpoint)>>> = LazyLock::new(|| {
    let mut paths: Vec<(&str, Vec<(Method, Endpoint)>)> = Vec::new();
    for (method, path, endpoint) in ENDPOINTS {
        match paths.iter_mut().find(|(p, _)| p == path) {
            Some((_, methods)) => methods.push((method.clone(), *endpoint)),
            None => paths.push((path, vec![(method.clone(), *endpoint)])),
        }
    }
    let mut router = matchit::Router::new();
    for (path, methods) in paths {
        router
            .insert(path, methods)
            .expect("the endpoint table has no conflicting paths");
    }
    router
});

/// The endpoint for a request and its path parameters (`{id}`, `{context}/{action}`), or the
/// 404 / 405 error.
fn route(method: &Method, path: &str) -> Result<(Endpoint, Vec<String>), ApiError> {
    let Ok(found) = ROUTER.at(path) else {
        let paths: Vec<String> = ENDPOINTS
            .iter()
            .map(|(m, p, _)| format!("{m} {p}"))
            .collect();
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not found").with("paths", json!(paths)));
    };
    let params = found.params.iter().map(|(_, v)| v.to_string()).collect();
    match found.value.iter().find(|(m, _)| m == method) {
        Some((_, endpoint)) => Ok((*endpoint, params)),
        None => {
            let allow: Vec<&str> = found.value.iter().map(|(m, _)| m.as_str()).collect();
            Err(
                ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
                    .with("allow", json!(allow)),
            )
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let query = req.uri.query().map(str::to_string);
        let method = req.method.clone();
        let caller = Caller::of(req);
        let reply = match route(&method, req.uri.path()) {
            Ok(_) if method != Method::GET && !self.authorised(&caller) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this endpoint changes the proxy: send Authorization: Bearer <the admin token>",
            )),
            Ok((endpoint, _)) if endpoint.shows_stored_data() && !self.authorised(&caller) => {
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "this endpoint shows stored requests and answers: send Authorization: Bearer <the admin token>",
                ))
            }
            Ok((endpoint, params)) => {
                let body = if method == Method::GET {
                    Vec::new()
                } else {
                    read_body(session).await
                };
                let call = Call {
                    params,
                    query: query.as_deref(),
                    body: &body,
                    actor: &caller.actor,
                };
                self.serve(endpoint, call).await
            }
            Err(e) => Err(e),
        };
        reply.unwrap_or_else(|e| {
            let allow = e.extra.get("allow").and_then(|a| a.as_array()).map(|a| {
                a.iter()
                    .filter_map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            let unauthorised = e.status == StatusCode::UNAUTHORIZED;
            let mut resp = e.into_response();
            if unauthorised {
                resp.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer realm=\"strangler admin\""),
                );
            }
            // RFC 9110 §15.5.6: a 405 says which methods the path has.
            if let Some(allow) = allow
                && let Ok(v) = http::HeaderValue::from_str(&allow)
            {
                resp.headers_mut().insert(http::header::ALLOW, v);
            }
            resp
        })
    }
}

/// Who called, from the request: the bearer token they sent, and the name the audit log gets
/// (`x-strangler-actor`, which the CLI fills with the user's name; else `admin-api`).
struct Caller {
    token: Option<String>,
    actor: String,
}

impl Caller {
    fn of(req: &pingora::http::RequestHeader) -> Caller {
        let header = |name: &str| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let token = header("authorization")
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(|t| t.trim().to_string());
        let actor = header("x-strangler-actor")
            .filter(|a| !a.is_empty() && a.len() <= 100)
            .map_or_else(|| "admin-api".to_string(), |a| format!("{a} (admin API)"));
        Caller { token, actor }
    }
}

/// One call's inputs.
struct Call<'a> {
    params: Vec<String>,
    query: Option<&'a str>,
    body: &'a [u8],
    actor: &'a str,
}

/// A query string's parameters, read the same way by every endpoint.
struct Params<'a>(Option<&'a str>);

impl Params<'_> {
    fn text(&self, name: &str) -> Option<String> {
        self.0
            .and_then(|q| strangler_rules::request::query_param(q, name))
            .map(|v| v.into_owned())
    }

    /// A whole number, or a 400 naming the parameter.
    fn number(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.text(name)
            .map(|v| {
                v.parse().map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("`{name}` must be a whole number, got `{v}`"),
                    )
                })
            })
            .transpose()
    }
}

/// The most request-body bytes an admin call reads (its JSON is small).
const BODY_LIMIT: usize = 64 << 10;

async fn read_body(session: &mut ServerSession) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = session.read_request_body().await {
        if body.len() + chunk.len() > BODY_LIMIT {
            break;
        }
        body.extend_from_slice(&chunk);
    }
    body
}

impl Admin {
    /// Whether the caller may change things: always when no token is configured (the listener
    /// is then on loopback: `serve` refuses to start otherwise), else with the token.
    fn authorised(&self, caller: &Caller) -> bool {
        match &self.token {
            None => true,
            Some(t) => caller
                .token
                .as_deref()
                .is_some_and(|given| constant_time_eq(given.as_bytes(), t.as_bytes())),
        }
    }

    /// 200 only when every listener accepts and the rollout states and kill switch have been
    /// read (rules are loaded before the server starts); else 503 with what is missing.
    async fn readyz(&self) -> Response<Vec<u8>> {
        let missing = if let Some(addr) = crate::listeners::first_closed(&self.listeners).await {
            format!("not ready: the listener {addr} does not accept connections\n")
        } else if !self.rollouts.known() {
            "not ready: the rollout states and the kill switch have not been read yet\n".into()
        } else {
            return reply(StatusCode::OK, "text/plain", b"ready\n".to_vec());
        };
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            missing.into_bytes(),
        )
    }

    async fn serve(&self, endpoint: Endpoint, call: Call<'_>) -> Reply {
        let (param, query) = (call.params.first().cloned(), call.query);
        match endpoint {
            Endpoint::Metrics => {
                let mut buf = Vec::new();
                let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
                Ok(reply(StatusCode::OK, "text/plain; version=0.0.4", buf))
            }
            Endpoint::Healthz => Ok(reply(StatusCode::OK, "text/plain", b"ok\n".to_vec())),
            Endpoint::Console(asset) => Ok(console::serve(asset)),
            Endpoint::Readyz => Ok(self.readyz().await),
            Endpoint::Routes => self.routes(),
            Endpoint::RulesStatus => self.rules_status(),
            Endpoint::Reload => self.reload().await,
            Endpoint::Outbox => self.outbox().await,
            Endpoint::DeadLetters => self.dead_letters().await,
            Endpoint::Redrive => self.redrive(query).await,
            Endpoint::Shadow => self.shadow(),
            Endpoint::Mismatches => self.mismatches(query).await,
            Endpoint::Mismatch => self.mismatch(param.as_deref().unwrap_or_default()).await,
            Endpoint::Rollouts => self.rollouts().await,
            Endpoint::RolloutCommand => self.rollout_command(&call).await,
            Endpoint::Audit => self.audit(query).await,
            Endpoint::KillSwitch => self.kill_switch().await,
            Endpoint::KillSwitchOn => self.set_kill_switch(true, call.actor).await,
            Endpoint::KillSwitchOff => self.set_kill_switch(false, call.actor).await,
            Endpoint::Replays => self.list_replays().await,
            Endpoint::Replay => self.replay(param.as_deref().unwrap_or_default()).await,
            Endpoint::NewReplay => self.create_replay(&call).await,
            Endpoint::ReplayCommand => self.replay_command(&call).await,
            Endpoint::Consumers => self.consumers().await,
        }
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

/// Compares without stopping at the first differing byte (the token's length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_is_routed_and_other_methods_are_refused() {
        for (method, path, endpoint) in ENDPOINTS {
            let path = path
                .replace("{id}", "7")
                .replace("{context}", "orders")
                .replace("{action}", "pause");
            assert_eq!(
                route(method, &path).unwrap().0,
                *endpoint,
                "{method} {path}"
            );
        }
        assert_eq!(
            route(&Method::GET, "/api/shadow/mismatches/42").unwrap(),
            (Endpoint::Mismatch, vec!["42".to_string()])
        );
        assert_eq!(
            route(&Method::POST, "/api/rollouts/orders/pause").unwrap(),
            (
                Endpoint::RolloutCommand,
                vec!["orders".to_string(), "pause".to_string()]
            )
        );
        let e = route(&Method::DELETE, "/api/reload").unwrap_err();
        assert_eq!(e.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(e.extra["allow"], json!(["POST"]));
        let e = route(&Method::GET, "/nope").unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.extra["paths"].as_array().unwrap().len(), ENDPOINTS.len());
    }
}
