//! The webhook gate: the controller POSTs the context's state and figures as JSON to the team's
//! URL; a 2xx answer within the timeout passes, anything else fails.

use std::time::Duration;

use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use strangler_rollout::{Evidence, State, Webhook};

/// Calls the webhook once: `Ok` for a 2xx, else why not.
pub(super) async fn call(
    w: &Webhook,
    context: &str,
    state: &State,
    e: &Evidence,
    step_requests: u64,
) -> Result<(), String> {
    let body = serde_json::json!({
        "context": context,
        "state": state,
        "figures": {
            "legacy": { "requests": e.legacy.requests, "errors": e.legacy.errors,
                        "p99_ms": e.legacy.latency.quantile_ms(0.99) },
            "service": { "requests": e.service.requests, "errors": e.service.errors,
                         "p99_ms": e.service.latency.quantile_ms(0.99) },
            "shadow": { "compared": e.shadow_compared, "matched": e.shadow_matched },
            "step_requests": step_requests,
        },
    });
    let timeout = Duration::from_millis(w.timeout_ms);
    match tokio::time::timeout(timeout, post(&w.url, body.to_string().into())).await {
        Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
        Ok(Ok(status)) => Err(format!("answered {status}")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn post(url: &str, body: Bytes) -> Result<u16, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let tls = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or("the URL has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to nothing"))?;
    let peer = HttpPeer::new(addr, tls, host.clone());
    let connector = Connector::new(None);
    let (mut session, _) = connector
        .get_http_session(&peer)
        .await
        .map_err(|e| e.to_string())?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = RequestHeader::build("POST", path.as_bytes(), None).map_err(|e| e.to_string())?;
    let set = |req: &mut RequestHeader, k: &'static str, v: String| {
        req.insert_header(k, v).map_err(|e| e.to_string())
    };
    set(&mut req, "host", host)?;
    set(&mut req, "content-type", "application/json".into())?;
    set(&mut req, "content-length", body.len().to_string())?;
    set(
        &mut req,
        "user-agent",
        concat!("strangler/", env!("CARGO_PKG_VERSION")).into(),
    )?;
    session
        .write_request_header(Box::new(req))
        .await
        .map_err(|e| e.to_string())?;
    session
        .write_request_body(body, true)
        .await
        .map_err(|e| e.to_string())?;
    session
        .finish_request_body()
        .await
        .map_err(|e| e.to_string())?;
    session
        .read_response_header()
        .await
        .map_err(|e| e.to_string())?;
    Ok(session.response_header().map_or(0, |h| h.status.as_u16()))
}
