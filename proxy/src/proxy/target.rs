//! The request line and framing as RFC 9112 has them, checked before the rules look at the
//! request, so the rules and the upstream always see the same target: an origin-form target
//! (`/path?query`) of bytes a URI may hold is taken as it is; an absolute-form one
//! (`http://host/path`, which a server must accept) becomes origin-form with its authority as
//! `Host`; anything else (raw UTF-8 or other bytes a URI may not hold, no leading slash, `*` but
//! for `OPTIONS`) and an HTTP/1.1 request without `Host` are refused with 400. Repeated
//! identical `Content-Length` lines are folded into one (different ones pingora refuses).
//! [`view`] is what the rules then see of it. Not here: matching or routing.

use pingora::http::RequestHeader;
use pingora::prelude::*;
use strangler_rules::Request;

/// Checks and normalises the request header; `Err` is a client error (400). Allocates only
/// for the rare forms it rewrites (absolute-form, repeated `Content-Length`).
pub(super) fn check(req: &mut RequestHeader) -> Result<()> {
    let absolute_form = {
        let raw = req.raw_path();
        if raw == b"*" {
            if req.method != http::Method::OPTIONS {
                return refuse("`*` is a target for OPTIONS only");
            }
            None
        } else if !raw.iter().copied().all(uri_byte) {
            return refuse("the request target holds bytes a URI may not hold");
        } else if let Some(rest) = absolute(raw) {
            Some(rest.to_vec())
        } else if raw.first() != Some(&b'/') {
            return refuse("the request target is neither origin-form (/path) nor absolute-form");
        } else {
            None
        }
    };
    if let Some(rest) = absolute_form {
        // RFC 9112 §3.2.2: the target's authority replaces Host.
        let (authority, path) = match rest.iter().position(|&b| b == b'/' || b == b'?') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (&rest[..], &b"/"[..]),
        };
        if authority.is_empty() || authority.contains(&b'@') {
            return refuse("the absolute-form target has no valid authority");
        }
        let path = if path.first() == Some(&b'?') {
            [b"/", path].concat()
        } else {
            path.to_vec()
        };
        req.set_raw_path(&path)?;
        let host = String::from_utf8_lossy(authority).into_owned();
        req.insert_header(http::header::HOST, host)?;
    }
    // RFC 9112 §3.2: a client MUST send Host in an HTTP/1.1 request.
    if req.version == http::Version::HTTP_11 && !req.headers.contains_key(http::header::HOST) {
        return refuse("an HTTP/1.1 request without Host");
    }
    fold_content_length(req)
}

/// `http://` or `https://` (any case): the rest of the target.
fn absolute(raw: &[u8]) -> Option<&[u8]> {
    ["http://", "https://"].iter().find_map(|scheme| {
        (raw.len() > scheme.len() && raw[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes()))
            .then(|| &raw[scheme.len()..])
    })
}

/// A byte a request target may hold as it is (RFC 3986: unreserved, sub-delims, `:@/?%` and
/// `[]`, which query strings use). Not: controls, space, non-ASCII, `" < > \ ^ \` { | }`.
fn uri_byte(b: u8) -> bool {
    b.is_ascii_graphic()
        && !matches!(
            b,
            b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
        )
}

/// Identical `Content-Length` lines become one (RFC 9112 §6.3 allows either that or a 400).
fn fold_content_length(req: &mut RequestHeader) -> Result<()> {
    let mut lines = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
    let (Some(first), Some(_)) = (lines.next(), lines.next()) else {
        return Ok(());
    };
    let first = first.clone();
    if req
        .headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .any(|v| *v != first)
    {
        return refuse("Content-Length lines that disagree");
    }
    req.remove_header(&http::header::CONTENT_LENGTH);
    req.insert_header(http::header::CONTENT_LENGTH, first)?;
    Ok(())
}

/// The rules' view of a request header (its target checked by [`check`] first).
pub(super) fn view(h: &RequestHeader) -> Request<'_> {
    let host = h
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| h.uri.host())
        .map(strangler_rules::host_without_port);
    Request {
        method: &h.method,
        host,
        path: h.uri.path(),
        query: h.uri.query(),
        headers: &h.headers,
    }
}

fn refuse(why: &'static str) -> Result<()> {
    let mut e = Error::explain(ErrorType::InvalidHTTPHeader, why);
    e.as_down();
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &[u8], host: bool) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/", None).unwrap();
        r.set_raw_path(target).unwrap();
        if host {
            r.insert_header("host", "t").unwrap();
        }
        r
    }

    #[test]
    fn targets_the_rules_and_the_upstream_would_see_differently_are_refused() {
        for bad in [
            &b"/caf\xc3\xa9"[..],
            b"get",
            b"anything",
            b"/a{b}",
            b"/a|b",
            b"/a\\b",
            b"/a^b",
            b"/a\"b",
        ] {
            assert!(check(&mut req("GET", bad, true)).is_err(), "{bad:?}");
        }
        assert!(check(&mut req("GET", b"*", true)).is_err());
        assert!(check(&mut req("OPTIONS", b"*", true)).is_ok());
        assert!(check(&mut req("GET", b"/a/b?c=%20d&e[]=1", true)).is_ok());
        assert!(check(&mut req("GET", b"/a", false)).is_err(), "no Host");
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_its_host() {
        let mut r = req("GET", b"http://example.com:8080/x/y?z=1", false);
        check(&mut r).unwrap();
        assert_eq!(r.raw_path(), b"/x/y?z=1");
        assert_eq!(r.uri.path(), "/x/y");
        assert_eq!(r.headers["host"], "example.com:8080");
        let mut r = req("GET", b"HTTP://example.com?q", true);
        check(&mut r).unwrap();
        assert_eq!(r.raw_path(), b"/?q");
        assert!(check(&mut req("GET", b"http:///nohost", true)).is_err());
    }
}
