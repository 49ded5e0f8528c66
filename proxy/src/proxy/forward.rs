//! Sends a request whose whole body we already read to the chosen upstream ourselves, through
//! pingora's pooled connector, and streams the answer back. Used when pingora cannot replay the
//! body (over its 64 KiB retry buffer) and when a route's event needs the response body: then
//! the answer is read (bounded) and the event committed before the client gets it. The rest of
//! the request path (headers, errors, logging) is the same as for proxied requests.

use std::sync::Arc;

use bytes::Bytes;
use pingora::prelude::*;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use strangler_rules::publish::BodyValue;

use super::{Ctx, Strangler, headers};
use crate::errors;
use crate::upstream::UpstreamPeer;

/// A connection to the chosen upstream for a request we send ourselves (here and `tunnel`),
/// from the pooled connector, connects tried again as for proxied requests
/// (`Ctx::may_retry_connect`); the upstream's clock starts here.
pub(super) async fn connect(
    ctx: &mut Ctx,
    proxy: &Strangler,
) -> Result<(Arc<UpstreamPeer>, HttpSession)> {
    let up = ctx
        .upstream()
        .cloned()
        .ok_or_else(|| Error::new_in(ErrorType::InternalError))?;
    ctx.upstream_start = Some(std::time::Instant::now());
    loop {
        match proxy.connector.get_http_session(&up.peer).await {
            Ok((client, _reused)) => return Ok((up, client)),
            Err(e) if errors::is_connect_failure(&e) && ctx.may_retry_connect() => {}
            Err(e) => return Err(e),
        }
    }
}

pub(super) async fn send(
    proxy: &Strangler,
    session: &mut Session,
    ctx: &mut Ctx,
    body: Bytes,
) -> Result<()> {
    let (up, mut client) = connect(ctx, proxy).await?;
    let mut req = Box::new(session.req_header().clone());
    headers::strip_request_hop_by_hop(&mut req);
    req.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    proxy.prepare_upstream_request(session, &mut req, ctx)?;
    if let HttpSession::H1(_) = &client {
        headers::for_h1_upstream(&mut req)?;
    }
    client.write_request_header(req).await?;
    client.write_request_body(body, true).await?;
    client.finish_request_body().await?;
    client.read_response_header().await?;
    let mut resp = Box::new(
        client
            .response_header()
            .ok_or_else(|| Error::new_up(ErrorType::InvalidHTTPHeader))?
            .clone(),
    );
    headers::strip_response_hop_by_hop(&mut resp);
    if let Some(s) = &mut ctx.shadow {
        s.served_header(resp.status.as_u16(), &resp.headers);
    }
    if headers::fit_to_client_version(session.req_header(), &mut resp) {
        session.set_keepalive(None);
    }
    let mut end = client.response_done();
    let mut held = Vec::new();
    if let Some(pc) = ctx.publish() {
        let status = resp.status.as_u16();
        if pc.response_body && !end {
            // The event needs the whole answer before the client sees it (bounded by the same
            // limit as request bodies; past it the event gets no response body).
            let mut size = 0;
            let mut complete = false;
            while let Some(chunk) = client.read_response_body().await? {
                size += chunk.len();
                held.push(chunk);
                if size > proxy.body_limit {
                    break;
                }
            }
            if size <= proxy.body_limit {
                complete = true;
                end = true;
            }
            let whole: Vec<u8> = if complete { held.concat() } else { Vec::new() };
            let json = serde_json::from_slice::<serde_json::Value>(&whole).ok();
            let body = match (&json, complete) {
                (Some(v), _) => BodyValue::Json(v),
                (None, true) => BodyValue::Raw(&whole),
                (None, false) => BodyValue::Absent,
            };
            proxy
                .emit(session.req_header(), ctx, status, &resp.headers, body)
                .await;
        } else {
            proxy
                .emit(
                    session.req_header(),
                    ctx,
                    status,
                    &resp.headers,
                    BodyValue::Absent,
                )
                .await;
        }
    }
    session
        .write_response_header(resp, end && held.is_empty())
        .await?;
    let held_any = !held.is_empty();
    for chunk in held {
        if let Some(s) = &mut ctx.shadow {
            s.served_chunk(&chunk);
        }
        session.write_response_body(Some(chunk), false).await?;
    }
    if !end {
        while let Some(chunk) = client.read_response_body().await? {
            if let Some(s) = &mut ctx.shadow {
                s.served_chunk(&chunk);
            }
            session.write_response_body(Some(chunk), false).await?;
        }
    }
    if !end || held_any {
        session.write_response_body(None, true).await?;
    }
    proxy
        .connector
        .release_http_session(client, &up.peer, Some(up.cfg.idle_timeout))
        .await;
    Ok(())
}
