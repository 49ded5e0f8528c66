//! The request path's side of shadow traffic: preparing the copy once the decision is made
//! (sent at once, or when the request body is complete), and handing both answers to the
//! comparison in `logging`. What happens to the copy is `crate::shadow`.

use std::sync::Arc;

use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use strangler_rules::shadow::{NoCopy, SAFE_METHODS, SHADOW_HEADER};
use strangler_rules::{LEGACY, Target};

use super::{Ctx, Strangler, headers};
use crate::shadow::{CopyBody, Outgoing, ShadowCtx};

impl Strangler {
    /// Prepares this request's copy when the decision says one goes out: the copy's header is
    /// the request's, minus hop-by-hop and stripped headers, with `x-strangler-shadow: 1`, the
    /// request's trace id under a new span id, and — towards the new service — its rewrite and
    /// added headers. Sent at once when there is no body to wait for (or it was read already).
    pub(super) fn start_shadow(
        &self,
        session: &Session,
        ctx: &mut Ctx,
        whole_body: Option<&Bytes>,
    ) {
        let Some(copy) = ctx.decision.as_ref().and_then(|d| d.shadow) else {
            return;
        };
        let Some(route) = ctx.route() else {
            return;
        };
        let to_service = match copy {
            Ok(to_service) => to_service,
            Err(NoCopy::Method) => {
                self.shadowing.skipped(&route.name, "method");
                return;
            }
            Err(NoCopy::Sample) => return,
        };
        let Some(shadow) = &route.shadow else {
            return;
        };
        let Ok(header) = self.copy_header(session, ctx, to_service) else {
            return;
        };
        let to = if to_service {
            Arc::clone(self.upstreams.get(Some(&shadow.service)))
        } else {
            Arc::clone(self.upstreams.get(None))
        };
        // The secondary monolith instance gets what the monolith gets, safe methods only (a
        // write must never reach a monolith twice).
        let secondary = shadow
            .secondary
            .as_ref()
            .filter(|_| SAFE_METHODS.contains(&session.req_header().method))
            .and_then(|name| {
                let header = self.copy_header(session, ctx, false).ok()?;
                Some((Arc::clone(self.upstreams.get(Some(name))), header))
            });
        let body = match whole_body {
            Some(b) => CopyBody::Known(b.clone()),
            None => request_body(session.req_header()),
        };
        let out = Outgoing {
            to,
            to_service,
            header,
            secondary,
        };
        let Some(s) = self.shadowing.copy(&route.name, shadow, out, body) else {
            return;
        };
        ctx.shadow = Some(s);
    }

    /// The copy's request header.
    fn copy_header(
        &self,
        session: &Session,
        ctx: &Ctx,
        to_service: bool,
    ) -> pingora::Result<RequestHeader> {
        let route = ctx
            .route()
            .ok_or_else(|| pingora::Error::new(pingora::ErrorType::InternalError))?;
        let mut req = session.req_header().clone();
        headers::strip_request_hop_by_hop(&mut req);
        if let Some(s) = &route.shadow {
            for h in &s.strip_headers {
                req.remove_header(h);
            }
        }
        req.insert_header(SHADOW_HEADER, "1")?;
        if let Some(tp) = &ctx.traceparent {
            // Same trace, a span of its own: `00-<trace>-<span>-<flags>`.
            let span = format!("{:016x}", headers::random_u64());
            let copy = match (tp.get(..36), tp.get(52..)) {
                (Some(head), Some(flags)) => format!("{head}{span}{flags}"),
                _ => tp.clone(),
            };
            headers::set_traceparent(&mut req, &copy)?;
        }
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let https = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        headers::add_forwarded(&mut req, client, https)?;
        if to_service && let Target::Service(t) = &route.target {
            if let Some(rw) = &t.rewrite {
                let path = rw.apply(req.uri.path());
                let uri = match req.uri.query() {
                    Some(q) => format!("{path}?{q}"),
                    None => path.into_owned(),
                };
                if let Ok(uri) = uri.parse::<http::Uri>() {
                    req.set_uri(uri);
                }
            }
            for (name, value) in &t.add_headers {
                req.insert_header(name.clone(), value.clone())?;
            }
        }
        Ok(req)
    }

    /// Hands the served answer and the copy to the comparison, unless the served side failed or
    /// gave no complete answer (then there is nothing to compare: `not_comparable`).
    pub(super) fn settle_shadow(
        &self,
        session: &Session,
        ctx: &Ctx,
        s: Box<ShadowCtx>,
        status: u16,
        failed: bool,
    ) {
        let Some(route) = ctx.route() else {
            return;
        };
        let Some(shadow) = route.shadow.clone() else {
            return;
        };
        if failed || status == 0 {
            self.shadowing.skipped(&route.name, "not_comparable");
            return;
        }
        let req = session.req_header();
        let trace_id = ctx.trace_id();
        let request = crate::shadow::ComparedRequest {
            route: route.name.clone(),
            context: match &route.target {
                Target::Service(t) => t.context.clone(),
                Target::Legacy => None,
            },
            method: req.method.to_string(),
            path: req
                .uri
                .path_and_query()
                .map_or_else(|| req.uri.path().to_string(), |p| p.as_str().to_string()),
            trace_id: (trace_id != "-").then(|| trace_id.to_string()),
            headers: s.sent_headers.clone(),
            body: s.sent_body.clone(),
            served_in: ctx
                .upstream_start
                .map_or(ctx.start.elapsed(), |t| t.elapsed()),
        };
        debug_assert!(shadow.service != LEGACY);
        self.shadowing.settle(s, shadow, request);
    }
}

/// What the request says of its body: none, or one still to come (of a known length or
/// chunked).
fn request_body(req: &RequestHeader) -> CopyBody {
    let length = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = req.headers.contains_key(http::header::TRANSFER_ENCODING);
    if chunked || length.is_some_and(|n| n > 0) {
        CopyBody::Coming(length)
    } else {
        CopyBody::Known(Bytes::new())
    }
}
