//! The request path, in the order pingora calls it: `request_filter` matches the rules (reading
//! the body first when a body predicate or body key needs it) and records the request's
//! [`Decision`] (route, side, upstream, rewrite, publish); `upstream_peer` hands over the
//! decision's upstream; `upstream_request_filter` rewrites the path and adds forwarding and trace
//! headers; `response_filter` (or `forward`) emits a publishing route's event; `fail_to_proxy`
//! turns errors into 502/504 via `errors`; `logging` counts the request per route and side and
//! writes the access-log line.

mod body;
mod forward;
mod headers;
mod publish;
mod shadow;
mod target;
mod tunnel;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use strangler_rules::publish::BodyValue;
use strangler_rules::{Body, Choice, Outcome, Request, Route, Target};
use tracing::{info, warn};

use crate::decision::{Decision, PublishCtx};
use crate::errors;
use crate::metrics::Metrics;
use crate::reload::{LiveRules, Loaded};
use crate::shadow::{ShadowCtx, Shadowing};
use crate::upstream::Serving;
use crate::upstream::{UpstreamPeer, Upstreams};

/// The proxy service: shared, immutable except for the rule set behind `rules`.
pub struct Strangler {
    pub rules: Arc<LiveRules>,
    pub upstreams: Arc<Upstreams>,
    pub metrics: Metrics,
    /// Most bytes of a request body read for body predicates or a body key.
    pub body_limit: usize,
    pub connector: pingora::connectors::http::Connector,
    pub dual_write: Arc<crate::dual_write::DualWrite>,
    pub clients: ClientTimeouts,
    pub shadowing: Arc<Shadowing>,
    pub rollouts: Arc<crate::rollout::Rollouts>,
    /// Requests that failed before a route was chosen (`route="unrouted"`, `target="none"`).
    pub unrouted: crate::metrics::SideStats,
}

/// How long the proxy waits for clients (the header timeout is pingora's, set in `serve`).
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    /// Longest wait for the next piece of a request body: then 408.
    pub body: Duration,
    /// Idle keep-alive connections are closed after this many seconds.
    pub keepalive_secs: u64,
    /// An upgraded connection with no byte either way for this long is closed.
    pub tunnel_idle: Duration,
}

/// Per-request state.
pub struct Ctx {
    start: Instant,
    /// The rule set this request started with; a reload mid-request does not affect it.
    rules: Option<Arc<Loaded>>,
    /// Where the request goes (`request_filter` decides; `None` before that).
    decision: Option<Decision>,
    /// Body bytes read for matching that pingora no longer holds: sent ahead of the rest.
    body_prefix: Option<Bytes>,
    /// The W3C trace context sent upstream (passed on or started); the trace id is part of it.
    traceparent: Option<String>,
    upstream_start: Option<Instant>,
    /// Connects tried for this request (see `may_retry_connect`).
    connect_tries: u8,
    /// How the request failed, as `fail_to_proxy` classified it (for `logging`).
    failure: Option<errors::ErrorReply>,
    /// We answered `Expect: 100-continue` ourselves (to read the body for the rules).
    continue_sent: bool,
    /// A tunnel's handshake time (upstream chosen → `101` sent): its duration for the latency
    /// figures, not the hour the tunnel may then stay open.
    handshake: Option<Duration>,
    /// The shadow copy of this request, when one goes out (boxed: most requests have none, and
    /// the context is moved with every request).
    shadow: Option<Box<ShadowCtx>>,
}

/// Most connects tried for one request (each bounded by `connect_timeout`).
const MAX_CONNECT_TRIES: u8 = 3;

impl Ctx {
    /// After a failed connect: whether to try again. Nothing has left the proxy yet, so it is
    /// safe; up to `MAX_CONNECT_TRIES` while the upstream's `total_timeout` lasts, so one lost
    /// SYN or a full listen backlog is not a 5xx, and a refused connect is not retried in a loop.
    /// The one policy for proxied requests (`fail_to_connect`) and our own (`forward`).
    fn may_retry_connect(&mut self) -> bool {
        self.connect_tries += 1;
        match (self.upstream_start, self.upstream()) {
            (Some(start), Some(up)) => {
                self.connect_tries < MAX_CONNECT_TRIES && start.elapsed() < up.cfg.total_timeout
            }
            _ => false,
        }
    }

    /// The matched route, `None` for the default route or before the decision.
    fn route(&self) -> Option<&Route> {
        let (loaded, d) = (self.rules.as_ref()?, self.decision.as_ref()?);
        Some(&loaded.rules.routes()[d.route?])
    }

    fn route_name(&self) -> &str {
        self.route()
            .map_or(crate::reload::DEFAULT_ROUTE, |r| r.name.as_str())
    }

    fn upstream(&self) -> Option<&Arc<UpstreamPeer>> {
        self.decision.as_ref().map(|d| &d.upstream)
    }

    fn target_name(&self) -> &str {
        self.upstream().map_or("-", |u| u.cfg.name.as_str())
    }

    fn publish(&self) -> Option<&PublishCtx> {
        self.decision.as_ref()?.publish.as_ref()
    }

    /// `00-<trace id>-<parent id>-<flags>`: the trace id is characters 3..35.
    fn trace_id(&self) -> &str {
        self.traceparent
            .as_deref()
            .and_then(|t| t.get(3..35))
            .unwrap_or("-")
    }
}

#[async_trait]
impl ProxyHttp for Strangler {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            rules: None,
            decision: None,
            body_prefix: None,
            traceparent: None,
            upstream_start: None,
            connect_tries: 0,
            failure: None,
            continue_sent: false,
            handshake: None,
            shadow: None,
        }
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        // The rules and the upstream see the same target, or the request is refused (400).
        target::check(session.req_header_mut())?;
        let down = session.as_downstream_mut();
        // RFC 9112 §9.3.2: answer pipelined requests in order (pingora drops them by default).
        down.set_pipelining_enabled(true);
        // pingora keeps an HTTP/1.1 connection for ever unless told otherwise.
        if down.get_keepalive().is_some() {
            down.set_keepalive(Some(self.clients.keepalive_secs));
        }
        down.set_read_timeout(Some(self.clients.body));
        ctx.traceparent = Some(headers::traceparent_of(session.req_header()));
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // Until this replica has read the rollout states and the kill switch once (milliseconds
        // after start), it knows neither: requests wait for that read, a bounded time.
        if !self.rollouts.known() {
            Box::pin(self.rollouts.wait_known(crate::rollout::FIRST_READ_WAIT)).await;
        }
        let loaded = self.rules.current();
        // Most requests are decided without their body: one match, nothing read.
        let body_route = {
            let req = target::view(session.req_header());
            match loaded.rules.find(&req, Body::NotRead) {
                Outcome::NeedsBody { id } => Some(id),
                outcome => {
                    self.choose(ctx, &req, outcome, Body::NotRead);
                    None
                }
            }
        };
        let mut whole_body = None;
        if let Some(id) = body_route {
            let mut json = None;
            let route_hint = &loaded.rules.routes()[id].name;
            // The client may wait for a 100 before it sends the body we are about to read.
            if headers::expects_continue(session.req_header()) {
                session
                    .as_downstream_mut()
                    .write_continue_response()
                    .await?;
                ctx.continue_sent = true;
            }
            // Boxed, like `forward::send` below: paths most requests never take, kept out of
            // this future (pingora boxes it per request and copies it whole).
            match Box::pin(body::read(session, self.body_limit)).await {
                body::Read::Complete(b) => {
                    // Parsed down to what the routes read. An empty body is not an anomaly
                    // worth counting: it just matches nothing.
                    match loaded.rules.body_projection().parse(&b) {
                        Ok(v) => json = Some(v),
                        Err(_) if b.is_empty() => {}
                        Err(_) => self.body_skipped(route_hint, "not_json"),
                    }
                    whole_body = Some(b);
                }
                body::Read::TooLarge(prefix) => {
                    self.body_skipped(route_hint, "too_large");
                    // pingora resends what it buffered itself (up to 64 KiB); beyond that the
                    // prefix is ours to send ahead of the rest of the body.
                    if session.as_downstream().get_retry_buffer().is_none() {
                        ctx.body_prefix = Some(prefix);
                    }
                }
                body::Read::Failed(e) => {
                    self.body_skipped(route_hint, "read_error");
                    return Err(e);
                }
            }
            {
                let req = target::view(session.req_header());
                let body = json.as_ref().map_or(Body::Unavailable, Body::Json);
                let outcome = loaded.rules.find(&req, body);
                self.choose(ctx, &req, outcome, body);
            }
            if let Some(pc) = ctx.decision.as_mut().and_then(|d| d.publish.as_mut()) {
                pc.json = json;
                pc.body = whole_body.clone();
            }
        }
        ctx.rules = Some(loaded);
        // Still unknown (the store did not answer): a route that may go to a new service is
        // refused rather than sent by a weight that may be wrong; the monolith's routes go on.
        if !self.rollouts.known()
            && ctx
                .route()
                .is_some_and(|r| matches!(r.target, Target::Service(_)))
        {
            return Err(Error::explain(
                errors::ROLLOUTS_UNKNOWN,
                "the rollout states have not been read yet",
            ));
        }
        // A WebSocket (or other upgrade) becomes a tunnel with one idle timer (not shadowed:
        // a second live connection to the new service is not a copy of a request).
        if session.is_upgrade_req() && session.is_body_empty() {
            return Box::pin(tunnel::run(self, session, ctx))
                .await
                .map(|()| true);
        }
        self.start_shadow(session, ctx, whole_body.as_ref());
        // A whole body that pingora did not keep (over its 64 KiB retry buffer, or an empty
        // chunked one) cannot be replayed through its pipeline, and an event built from the
        // response body needs that body before the client gets it: send this request ourselves.
        let needs_response = ctx.publish().is_some_and(|p| p.response_body);
        if let Some(b) = whole_body
            && (session.as_downstream().get_retry_buffer().is_none() || needs_response)
        {
            return Box::pin(forward::send(self, session, ctx, b))
                .await
                .map(|()| true);
        }
        Ok(false)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if ctx.may_retry_connect() {
            e.set_retry(true);
        }
        e
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        ctx.upstream_start.get_or_insert_with(Instant::now);
        let up = ctx
            .upstream()
            .ok_or_else(|| Error::new_in(ErrorType::InternalError))?;
        Ok(Box::new(up.peer.clone()))
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(s) = &mut ctx.shadow
            && s.waits_for_body()
        {
            match s.request_chunk(body.as_ref(), end_of_stream) {
                Ok(Some(whole)) => self.shadowing.send(s, whole),
                Ok(None) => {}
                Err(crate::shadow::TooLarge) => {
                    self.shadowing.skipped(ctx.route_name(), "too_large");
                    ctx.shadow = None;
                }
            }
        }
        if let Some(prefix) = ctx.body_prefix.take() {
            *body = Some(match body.take() {
                Some(rest) if !rest.is_empty() => {
                    let mut joined = bytes::BytesMut::with_capacity(prefix.len() + rest.len());
                    joined.extend_from_slice(&prefix);
                    joined.extend_from_slice(&rest);
                    joined.freeze()
                }
                _ => prefix,
            });
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        self.prepare_upstream_request(session, upstream_request, ctx)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        headers::strip_response_hop_by_hop(upstream_response);
        if let Some(s) = &mut ctx.shadow {
            s.served_header(
                upstream_response.status.as_u16(),
                &upstream_response.headers,
            );
        }
        if headers::fit_to_client_version(session.req_header(), upstream_response) {
            session.set_keepalive(None);
        }
        if ctx.publish().is_some_and(|p| !p.response_body) {
            let status = upstream_response.status.as_u16();
            self.emit(
                session.req_header(),
                ctx,
                status,
                &upstream_response.headers,
                BodyValue::Absent,
            )
            .await;
        }
        Ok(())
    }

    /// The served answer's body, teed for a shadow comparison as it streams to the client.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if let (Some(s), Some(b)) = (&mut ctx.shadow, body.as_ref()) {
            s.served_chunk(b);
        }
        Ok(None)
    }

    /// Client faults are not errors of ours: counted and in the access log, not logged at ERROR
    /// by pingora.
    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _error: &Error) -> bool {
        ctx.failure.is_some_and(|f| f.client.is_some())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let body_done = session.as_downstream_mut().is_body_done();
        let failure = errors::classify(e, body_done);
        ctx.failure = Some(failure);
        if failure.status > 0 && session.response_written().is_none() {
            let body = match (ctx.upstream(), failure.kind) {
                (Some(up), Some(_)) => {
                    format!(
                        "strangler: upstream {} ({}) {}\n",
                        up.cfg.name, up.cfg.address, failure.reason
                    )
                }
                _ => format!("strangler: {}\n", failure.reason),
            };
            if let Err(err) = write_plain(session, failure.status, body).await {
                warn!(error = %err, "Could not send the error response");
            }
        }
        FailToProxy {
            error_code: failure.status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let failure = ctx.failure.or_else(|| e.map(|e| errors::classify(e, true)));
        let status = match (session.response_written(), failure) {
            (Some(r), _) => r.status.as_u16(),
            (None, Some(f)) => f.logged_status(),
            (None, None) => 0,
        };
        // The class counts what the client was sent: a client that went away got nothing
        // (`none`), though the access log says 499 as nginx does.
        let sent = session.response_written().map_or(0, |r| r.status.as_u16());
        if let (Some(loaded), Some(d)) = (&ctx.rules, &ctx.decision) {
            let stats = match d.route {
                Some(i) => loaded.route_stats[i].side(d.serving),
                None => &loaded.default_stats,
            };
            stats.requests.inc();
            stats.answered(sent);
            let took = ctx
                .handshake
                .or_else(|| ctx.upstream_start.map(|t| t.elapsed()));
            if let Some(t) = took {
                stats.observe_duration(t.as_secs_f64());
            }
            // A rolled-out context's figures, for its gates.
            if let Some(c) = d.route.and_then(|i| loaded.rules.routes()[i].context())
                && self.rollouts.tracks(c)
            {
                let took = took.unwrap_or_else(|| ctx.start.elapsed());
                self.rollouts
                    .record(c, d.serving == Serving::Service, status, took);
            }
        }
        if ctx.decision.is_none() {
            // Failed before a route was chosen: a refused target, a body the rules waited for
            // that never came (408, 499).
            self.unrouted.requests.inc();
            self.unrouted.answered(sent);
        }
        if let Some(s) = ctx.shadow.take() {
            self.settle_shadow(session, ctx, s, status, failure.is_some() || e.is_some());
        }
        if let Some(kind) = failure.and_then(|f| f.kind) {
            self.metrics
                .upstream_errors
                .with_label_values(&[ctx.route_name(), ctx.target_name(), kind])
                .inc();
        }
        if let Some(kind) = failure.and_then(|f| f.client) {
            self.metrics.downstream_errors.inc(kind);
        }
        // Formatting only when the access log is on (it is off in benchmarks, say).
        if tracing::enabled!(target: "access", tracing::Level::INFO) {
            let req = session.req_header();
            let upstream = ctx
                .upstream()
                .map_or_else(|| "-".to_string(), |u| u.cfg.address.to_string());
            info!(
                target: "access",
                method = %req.method,
                path = req.uri.path(),
                route = ctx.route_name(),
                target = ctx.target_name(),
                upstream = %upstream,
                status,
                duration_ms = (ctx.start.elapsed().as_secs_f64() * 1e6).round() / 1e3,
                choice = %ctx.decision.as_ref().map_or(Choice::Fixed, |d| d.choice),
                trace_id = ctx.trace_id(),
                error = e.map(|e| e.etype().as_str()).unwrap_or("-"),
                "request"
            );
        }
    }
}

impl Strangler {
    /// Records where a matched (or unmatched) request goes (see [`Decision`]).
    fn choose(&self, ctx: &mut Ctx, req: &Request<'_>, outcome: Outcome<'_>, body: Body<'_>) {
        let random = headers::random_u64();
        ctx.decision = Some(Decision::new(
            &self.upstreams,
            &self.rollouts,
            req,
            outcome,
            body,
            random,
        ));
    }

    /// Everything done to the request header on its way upstream (also used by `forward`).
    fn prepare_upstream_request(
        &self,
        session: &Session,
        req: &mut RequestHeader,
        ctx: &Ctx,
    ) -> Result<()> {
        if let Some(uri) = ctx.decision.as_ref().and_then(|d| d.rewrite.as_ref()) {
            let uri = uri
                .parse::<http::Uri>()
                .or_err(ErrorType::InternalError, "rewritten path is not a URI")?;
            req.set_uri(uri);
        }
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        // An HTTPS listener ends TLS here.
        let https = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        headers::add_forwarded(req, client, https)?;
        // Chosen on arrival (`early_request_filter`).
        if let Some(traceparent) = &ctx.traceparent {
            headers::set_traceparent(req, traceparent)?;
        }
        // We answered the client's `Expect` ourselves and now hold the whole body.
        if ctx.continue_sent {
            req.remove_header(&http::header::EXPECT);
        }
        if ctx
            .decision
            .as_ref()
            .is_some_and(|d| d.serving == Serving::Service)
            && let Some(Target::Service(t)) = ctx.route().map(|r| &r.target)
        {
            for (name, value) in &t.add_headers {
                req.insert_header(name.clone(), value.clone())?;
            }
        }
        Ok(())
    }

    fn body_skipped(&self, route: &str, reason: &str) {
        debug_assert!(crate::metrics::BODY_SKIP_REASONS.contains(&reason));
        self.metrics
            .body_buffer_skipped
            .with_label_values(&[route, reason])
            .inc();
    }
}

async fn write_plain(session: &mut Session, status: u16, body: String) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(3))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    // The connection is not reused after a failed request (RFC 9112 §9.6: say so; pingora
    // writes `Connection` from the session's keep-alive).
    session.as_downstream_mut().set_keepalive(None);
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await
}
