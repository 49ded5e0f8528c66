//! Upgraded connections (WebSockets and other `Upgrade:` protocols) as tunnels. pingora's own
//! path times each direction out on its own (the client side at `client_body_timeout`, the
//! upstream side at the service's `read_timeout`), so a quiet WebSocket was cut after 30 s with no
//! close frame and counted as the client's body timeout. Here the handshake goes to the upstream
//! as usual (its read timeout bounds the answer); after a `101` the bytes are copied both ways with
//! one idle timer, `tunnel_idle_timeout`, that traffic either way resets. A tunnel that ends
//! (either side closes, the idle timer, an error) is counted by reason, never as a client fault.

use std::time::Duration;

use pingora::prelude::*;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use tokio::time::Instant;
use tracing::debug;

use super::{Ctx, Strangler, headers};

/// How a tunnel ended, the `reason` of `strangler_tunnels_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    ClientClosed,
    UpstreamClosed,
    IdleTimeout,
    Error,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::ClientClosed => "client_closed",
            End::UpstreamClosed => "upstream_closed",
            End::IdleTimeout => "idle_timeout",
            End::Error => "error",
        }
    }
}

/// Sends the upgrade request to the chosen upstream and answers the client with what it says;
/// after a `101`, relays bytes both ways until one side closes or neither sends for the idle
/// timeout.
pub(super) async fn run(proxy: &Strangler, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
    let (_, mut client) = super::forward::connect(ctx, proxy).await?;
    let mut req = Box::new(session.req_header().clone());
    // The upgrade itself is the one hop-by-hop header that goes on.
    let upgrade = req.headers.get(http::header::UPGRADE).cloned();
    headers::strip_request_hop_by_hop(&mut req);
    if let Some(u) = upgrade {
        req.insert_header(http::header::UPGRADE, u)?;
        req.insert_header(http::header::CONNECTION, "upgrade")?;
    }
    proxy.prepare_upstream_request(session, &mut req, ctx)?;
    let HttpSession::H1(h1) = &mut client else {
        return Error::e_explain(
            ErrorType::InternalError,
            "an upgrade needs an HTTP/1.1 upstream connection",
        );
    };
    headers::for_h1_upstream(&mut req)?;
    h1.write_request_header(req).await?;
    h1.read_response().await?;
    let mut resp = Box::new(
        h1.resp_header()
            .ok_or_else(|| Error::new_up(ErrorType::InvalidHTTPHeader))?
            .clone(),
    );
    headers::strip_response_hop_by_hop(&mut resp);
    let switched = resp.status == http::StatusCode::SWITCHING_PROTOCOLS && h1.was_upgraded();
    // Not switched: an ordinary answer, relayed whole; the connection is not reused (it was
    // asked to change protocols).
    if !switched {
        let end = h1.is_body_done();
        session.write_response_header(resp, end).await?;
        if !end {
            while let Some(chunk) = h1.read_body_bytes().await? {
                session.write_response_body(Some(chunk), false).await?;
            }
            session.write_response_body(None, true).await?;
        }
        return Ok(());
    }
    session.write_response_header(resp, false).await?;
    ctx.handshake = ctx.upstream_start.map(|t| t.elapsed());
    h1.maybe_upgrade_body_writer();
    // The idle timer below is the only one: no per-direction read timeout.
    h1.read_timeout = None;
    session.as_downstream_mut().set_read_timeout(None);
    let idle = proxy.clients.tunnel_idle;
    let end = {
        // Counted open until it ends, however it ends (a shutdown drops this future).
        let _open = Open::new(&proxy.metrics.tunnels_open);
        relay(session, h1, idle).await
    };
    proxy
        .metrics
        .tunnels_closed
        .with_label_values(&[end.as_str()])
        .inc();
    debug!(reason = end.as_str(), "Tunnel closed");
    // Whatever ended it, the client's connection closes with it (pingora sees the body done).
    let _ = session.write_response_body(None, true).await;
    Ok(())
}

/// `strangler_tunnels_open` while alive.
struct Open<'a>(&'a prometheus::IntGauge);

impl<'a> Open<'a> {
    fn new(g: &'a prometheus::IntGauge) -> Open<'a> {
        g.inc();
        Open(g)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Copies bytes both ways until one side closes, an error, or `idle` without a byte.
async fn relay(
    session: &mut Session,
    up: &mut pingora::protocols::http::v1::client::HttpSession,
    idle: Duration,
) -> End {
    let mut deadline = Instant::now() + idle;
    loop {
        tokio::select! {
            from_client = session.read_request_body() => match from_client {
                Ok(Some(bytes)) => {
                    if up.write_body(&bytes).await.is_err() {
                        return End::Error;
                    }
                    deadline = Instant::now() + idle;
                }
                Ok(None) => {
                    let _ = up.finish_body().await;
                    return End::ClientClosed;
                }
                Err(_) => return End::ClientClosed,
            },
            from_upstream = up.read_body_bytes() => match from_upstream {
                Ok(Some(bytes)) => {
                    if session.write_response_body(Some(bytes), false).await.is_err() {
                        return End::ClientClosed;
                    }
                    deadline = Instant::now() + idle;
                }
                Ok(None) => return End::UpstreamClosed,
                Err(_) => return End::Error,
            },
            () = tokio::time::sleep_until(deadline) => return End::IdleTimeout,
        }
    }
}
