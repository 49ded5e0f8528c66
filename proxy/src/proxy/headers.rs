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
pub(super) fn add_forwarded(req: &mut RequestHeader, client: Option<IpAddr>) -> Result<()> {
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
        req.insert_header("x-forwarded-proto", "http")?;
    }
    if !req.headers.contains_key("x-forwarded-host")
        && let Some(host) = req.headers.get(http::header::HOST).cloned()
    {
        req.insert_header("x-forwarded-host", host)?;
    }
    Ok(())
}

/// Keeps a valid incoming `traceparent`; otherwise starts a trace. Returns the value sent on.
pub(super) fn ensure_traceparent(req: &mut RequestHeader) -> Result<String> {
    if let Some(v) = req.headers.get(TRACEPARENT).and_then(|v| v.to_str().ok())
        && trace_id_of(v).is_some()
    {
        return Ok(v.to_string());
    }
    let (a, b, c) = (random_u64(), random_u64(), random_u64() | 1);
    let value = format!("00-{a:016x}{b:016x}-{c:016x}-01");
    req.insert_header(TRACEPARENT, value.clone())?;
    Ok(value)
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
        let value = ensure_traceparent(&mut req).unwrap();
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
}
