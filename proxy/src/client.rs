//! The HTTP calls the proxy makes for itself, not for a client: the rollout webhook gate
//! (a POST) and the consumers' metrics the console shows (a GET). One request on a fresh
//! connection, the answer's body read up to a limit; every failure is a line of text.

use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

/// A status and the body read (empty when it was not asked for).
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// `method url` with `body` (`None`: no body, else its content type and bytes). With
/// `read: Some(limit)` the answer's body is read, at most `limit` bytes (past it: an error);
/// with `None` only its status. Without a timeout of its own: callers bound it.
pub async fn call(
    method: &str,
    url: &str,
    body: Option<(&str, Bytes)>,
    read: Option<usize>,
) -> Result<Answer, String> {
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
    let mut req = RequestHeader::build(method, path.as_bytes(), None).map_err(|e| e.to_string())?;
    let set = |req: &mut RequestHeader, k: &'static str, v: String| {
        req.insert_header(k, v).map_err(|e| e.to_string())
    };
    let authority = match uri.port_u16() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    };
    set(&mut req, "host", authority)?;
    set(
        &mut req,
        "user-agent",
        concat!("strangler/", env!("CARGO_PKG_VERSION")).into(),
    )?;
    if let Some((content_type, b)) = &body {
        set(&mut req, "content-type", (*content_type).into())?;
        set(&mut req, "content-length", b.len().to_string())?;
    }
    session
        .write_request_header(Box::new(req))
        .await
        .map_err(|e| e.to_string())?;
    if let Some((_, b)) = body {
        session
            .write_request_body(b, true)
            .await
            .map_err(|e| e.to_string())?;
    }
    session
        .finish_request_body()
        .await
        .map_err(|e| e.to_string())?;
    session
        .read_response_header()
        .await
        .map_err(|e| e.to_string())?;
    let status = session.response_header().map_or(0, |h| h.status.as_u16());
    let mut answer = Answer {
        status,
        body: Vec::new(),
    };
    let Some(limit) = read else {
        return Ok(answer);
    };
    while let Some(chunk) = session
        .read_response_body()
        .await
        .map_err(|e| e.to_string())?
    {
        if answer.body.len() + chunk.len() > limit {
            return Err(format!("the answer is larger than {limit} bytes"));
        }
        answer.body.extend_from_slice(&chunk);
    }
    Ok(answer)
}
