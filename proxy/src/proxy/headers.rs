//! Header work on the way through: `X-Forwarded-*`, W3C `traceparent` (passed on, or started),
//! response hop-by-hop clean-up, and the cheap per-thread random numbers behind trace ids and
//! keyless weighted choices. (pingora itself strips request hop-by-hop headers.)

use std::cell::Cell;
use std::net::IpAddr;

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;

const TRACEPARENT: &str = "traceparent";

/// Appends the client to `X-Forwarded-For`; sets `X-Forwarded-Proto` and `-Host` unless a proxy
/// in front of us already did (we listen on plain HTTP, so our own answer would be `http`).
pub(super) fn add_forwarded(
    req: &mut RequestHeader,
    client: Option<IpAddr>,
    https: bool,
) -> Result<()> {
    if let Some(ip) = client {
        let xff = match req
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if !prev.is_empty() => format!("{prev}, {ip}"),
            _ => ip.to_string(),
        };
        req.insert_header("x-forwarded-for", xff)?;
    }
    if !req.headers.contains_key("x-forwarded-proto") {
        req.insert_header("x-forwarded-proto", if https { "https" } else { "http" })?;
    }
    if !req.headers.contains_key("x-forwarded-host")
        && let Some(host) = req.headers.get(http::header::HOST).cloned()
    {
        req.insert_header("x-forwarded-host", host)?;
    }
    Ok(())
}

/// The trace context of a request: a valid incoming `traceparent`, or a new trace. Chosen when
/// the request arrives, so that failures before any upstream (502/504) carry it too.
pub(super) fn traceparent_of(req: &RequestHeader) -> String {
    if let Some(v) = req.headers.get(TRACEPARENT).and_then(|v| v.to_str().ok())
        && trace_id_of(v).is_some()
    {
        return v.to_string();
    }
    let (a, b, c) = (random_u64(), random_u64(), random_u64() | 1);
    format!("00-{a:016x}{b:016x}-{c:016x}-01")
}

/// Sends the request's trace context upstream.
pub(super) fn set_traceparent(req: &mut RequestHeader, value: &str) -> Result<()> {
    if req
        .headers
        .get(TRACEPARENT)
        .is_none_or(|v| v.as_bytes() != value.as_bytes())
    {
        req.insert_header(TRACEPARENT, value)?;
    }
    Ok(())
}

/// RFC 9112 §6.1: no `Transfer-Encoding` to a client that did not say HTTP/1.1. For an HTTP/1.0
/// client an answer of unknown length is sent close-delimited (pingora would chunk it); returns
/// true when the connection must then close.
pub(super) fn fit_to_client_version(req: &RequestHeader, resp: &mut ResponseHeader) -> bool {
    if req.version >= http::Version::HTTP_11
        || resp.headers.get(http::header::TRANSFER_ENCODING).is_none()
    {
        return false;
    }
    resp.remove_header(&http::header::TRANSFER_ENCODING);
    !resp.headers.contains_key(http::header::CONTENT_LENGTH)
}

/// `Expect: 100-continue` on an HTTP/1.1 request (RFC 9110 §10.1.1).
pub(super) fn expects_continue(req: &RequestHeader) -> bool {
    req.version == http::Version::HTTP_11
        && req
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// The trace id of a well-formed version-00 `traceparent`.
fn trace_id_of(v: &str) -> Option<&str> {
    let mut parts = v.split('-');
    let (ver, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = hex(ver, 2)
        && ver != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && parent.bytes().any(|b| b != b'0')
        && hex(flags, 2);
    ok.then_some(trace)
}

/// Response headers that belong to the upstream connection, not to the client's.
pub(super) fn strip_response_hop_by_hop(resp: &mut ResponseHeader) {
    resp.remove_header("keep-alive");
    resp.remove_header("proxy-connection");
}

/// A request we send ourselves (`forward`, `tunnel`) to an HTTP/1.1 upstream connection goes as
/// HTTP/1.1, as pingora sends proxied ones: an HTTP/2 client's request line would say `HTTP/2`
/// (a server answers 400), its `:authority` becomes `Host` (HTTP/2 needs none, HTTP/1.1 servers
/// do), and its target goes in origin-form.
pub(super) fn for_h1_upstream(req: &mut RequestHeader) -> Result<()> {
    if req.version == http::Version::HTTP_2 {
        if let Some(authority) = req.uri.authority().map(|a| a.as_str().to_string()) {
            req.insert_header(http::header::HOST, authority)?;
        }
        let target = req
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
        let uri = target
            .parse::<http::Uri>()
            .or_err(ErrorType::InternalError, "request target")?;
        req.set_uri(uri);
    }
    req.set_version(http::Version::HTTP_11);
    Ok(())
}

/// Request hop-by-hop headers, for the requests we send ourselves (`forward`).
pub(super) fn strip_request_hop_by_hop(req: &mut RequestHeader) {
    let nominated: Vec<String> = req
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "close" && t != "keep-alive")
        .collect();
    for name in nominated {
        req.remove_header(&name);
    }
    for h in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "http2-settings",
    ] {
        req.remove_header(h);
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let id = format!("{:?}", std::thread::current().id());
    strangler_rules::sticky::hash64(format!("{t}{id}").as_bytes()) | 1
}

/// xorshift64*: fast, per thread, good enough for trace ids and keyless weighted choices (not
/// for anything secret).
pub(super) fn random_u64() -> u64 {
    RNG.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_validation() {
        assert_eq!(
            trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id_of("zz"), None);
        assert_eq!(
            trace_id_of("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            None
        );
    }

    #[test]
    fn started_trace_is_valid() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        let value = traceparent_of(&req);
        set_traceparent(&mut req, &value).unwrap();
        let tp = req
            .headers
            .get(TRACEPARENT)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(tp, value);
        assert_eq!(trace_id_of(&tp), Some(&value[3..35]));
    }

    #[test]
    fn http10_clients_get_no_transfer_encoding() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.set_version(http::Version::HTTP_10);
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("transfer-encoding", "chunked").unwrap();
        assert!(fit_to_client_version(&req, &mut resp));
        assert!(resp.headers.get("transfer-encoding").is_none());
        req.set_version(http::Version::HTTP_11);
        resp.insert_header("transfer-encoding", "chunked").unwrap();
        assert!(!fit_to_client_version(&req, &mut resp));
        assert!(resp.headers.get("transfer-encoding").is_some());
    }
}
