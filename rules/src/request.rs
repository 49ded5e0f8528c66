//! The request as rules see it: method, host, path, query and headers borrowed from the proxy's
//! request header, what is known of the body, the path parameters a template captured, and the
//! helpers that read values out of them (query parameters, cookies, the host without its port).

use std::borrow::Cow;

use http::{HeaderMap, Method};
use serde_json::Value;

/// The parts of a request that rules look at. Borrowed from the proxy's request header.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a Method,
    /// Host without port, from the `Host` header or the URI authority.
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// What is known about the request body when matching.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// Not read yet: a route that needs it stops matching with [`crate::Outcome::NeedsBody`].
    NotRead,
    /// Read and parsed.
    Json(&'a Value),
    /// Read but unusable (not JSON, over the buffer limit, empty): body predicates are false.
    Unavailable,
}

/// Path parameters captured by a template route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params<'p>(pub Vec<(&'p str, &'p str)>);

impl<'p> Params<'p> {
    pub fn get(&self, name: &str) -> Option<&'p str> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

/// `host` without its port: `example.com:8080` → `example.com`, `[::1]:8080` → `[::1]`.
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// The first value of query parameter `name` in `qs`, percent- and `+`-decoded.
pub fn query_param<'a>(qs: &'a str, name: &str) -> Option<Cow<'a, str>> {
    qs.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == name).then(|| decode(v))
    })
}

pub(crate) fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then(|| v.trim_matches('"'))
    })
}

fn decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(query_param("a=1&b=x%20y+z", "b").as_deref(), Some("x y z"));
        assert_eq!(query_param("a=1&flag", "flag").as_deref(), Some(""));
        assert_eq!(query_param("a=1", "b"), None);
        assert_eq!(query_param("a=%zz%4", "a").as_deref(), Some("%zz%4"));
        assert_eq!(query_param("a=%41", "a").as_deref(), Some("A"));
    }

    #[test]
    fn cookies() {
        assert_eq!(cookie("a=1; uid=42; b=2", "uid"), Some("42"));
        assert_eq!(cookie("uidx=1", "uid"), None);
    }

    #[test]
    fn ports_are_stripped_from_names_and_bracketed_addresses() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }
}
