//! The compiled route model and the per-route check: does this request (and, where a predicate
//! needs it, its JSON body) satisfy the route's match, and which side does it go to. Built only by
//! `compile`; evaluated by `RuleSet`.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use jsonpath_rust::parser::model::JpQuery;
use serde_json::Value;

use crate::path::PathPattern;
use crate::request::{Body, Params, Request, cookie, query_param};
use crate::sticky;

/// The service name that means the monolith.
pub const LEGACY: &str = "legacy";

/// One route, compiled: precompiled regexes, header names and JSONPaths.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub file: Arc<str>,
    pub line: u64,
    pub priority: i64,
    pub(crate) methods: Vec<Method>,
    pub(crate) host: Option<HostMatch>,
    pub(crate) path: Option<PathPattern>,
    pub(crate) headers: Vec<ValueMatch<HeaderName>>,
    pub(crate) query: Vec<ValueMatch<String>>,
    pub(crate) body: Vec<BodyMatch>,
    pub target: Target,
    pub publish: Option<crate::publish::Publish>,
    /// Shared: the comparison of each copy holds it after the request is done.
    pub shadow: Option<std::sync::Arc<crate::shadow::Shadow>>,
}

#[derive(Debug)]
pub(crate) enum HostMatch {
    Exact(String),
    /// `*.example.com`: stored as `.example.com`.
    Suffix(String),
}

#[derive(Debug)]
pub(crate) struct ValueMatch<N> {
    pub(crate) name: N,
    pub(crate) test: ValueTest,
}

#[derive(Debug)]
pub(crate) enum ValueTest {
    Present,
    Absent,
    Equals(String),
    Regex(regex::Regex),
}

#[derive(Debug)]
pub(crate) struct BodyMatch {
    pub(crate) source: String,
    pub(crate) query: JpQuery,
    pub(crate) equals: Option<Value>,
}

/// Where a matching route sends traffic.
#[derive(Debug)]
pub enum Target {
    /// Pinned to the monolith (to carve an exception out of a broader route).
    Legacy,
    Service(ServiceTarget),
}

#[derive(Debug)]
pub struct ServiceTarget {
    pub service: String,
    /// Share of the route's traffic for the service, in basis points (0–10,000).
    pub weight_bp: u16,
    pub sticky: Option<Sticky>,
    pub rewrite: Option<Rewrite>,
    pub add_headers: Vec<(HeaderName, HeaderValue)>,
    /// The bounded context the route belongs to: service, sticky key and weight are its, and
    /// its name salts the sticky hash (a user is on one side for every route of it).
    pub context: Option<Arc<str>>,
}

/// Where the sticky key comes from.
#[derive(Debug)]
pub enum Sticky {
    Header(HeaderName),
    Cookie(String),
    Query(String),
    PathParam(String),
    Body { source: String, query: JpQuery },
}

#[derive(Debug, Clone)]
pub enum Rewrite {
    StripPrefix(String),
    ReplacePrefix { from: String, to: String },
}

/// Why a route did not match a request: the first predicate that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    Method,
    Host,
    Path,
    Header(usize),
    Query(usize),
    Body(usize),
    /// A body predicate was reached before the body was read.
    NeedsBody,
}

/// Which side a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side<'r> {
    Legacy,
    Service(&'r str),
}

/// How the side was chosen, for logs and `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The route pins the monolith, or no route matched.
    Fixed,
    /// Sticky key found: the same key always gets the same bucket.
    Sticky { bucket: u64 },
    /// No key (none configured, or absent from the request): a random bucket.
    Random { bucket: u64 },
}

impl fmt::Display for Choice {
    /// `sticky:BUCKET`, `random:BUCKET` or `fixed`, as in the access log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Choice::Sticky { bucket } => write!(f, "sticky:{bucket}"),
            Choice::Random { bucket } => write!(f, "random:{bucket}"),
            Choice::Fixed => f.write_str("fixed"),
        }
    }
}

impl Route {
    /// Checks every predicate in a fixed order; `Ok` holds the template's path parameters.
    pub fn check<'a>(&'a self, req: &Request<'a>, body: Body<'_>) -> Result<Params<'a>, Miss> {
        if !self.methods.is_empty() && !self.methods.contains(req.method) {
            return Err(Miss::Method);
        }
        if let Some(host) = &self.host
            && !host.matches(req.host)
        {
            return Err(Miss::Host);
        }
        let params = match &self.path {
            None => Params::default(),
            Some(PathPattern::Template(t)) => Params(t.captures(req.path).ok_or(Miss::Path)?),
            Some(p) if p.matches(req.path) => Params::default(),
            Some(_) => return Err(Miss::Path),
        };
        for (i, h) in self.headers.iter().enumerate() {
            if !h.test.check_header(req.headers, &h.name) {
                return Err(Miss::Header(i));
            }
        }
        for (i, q) in self.query.iter().enumerate() {
            let value = req.query.and_then(|qs| query_param(qs, &q.name));
            if !q.test.check(value.as_deref().map(str::as_bytes)) {
                return Err(Miss::Query(i));
            }
        }
        if !self.body.is_empty() {
            let json = match body {
                Body::NotRead => return Err(Miss::NeedsBody),
                Body::Json(v) => Some(v),
                Body::Unavailable => None,
            };
            for (i, b) in self.body.iter().enumerate() {
                if !json.is_some_and(|v| b.matches(v)) {
                    return Err(Miss::Body(i));
                }
            }
        }
        Ok(params)
    }

    /// True when matching or the sticky key needs the request body.
    pub fn needs_body(&self) -> bool {
        !self.body.is_empty()
            || matches!(&self.target, Target::Service(s) if matches!(s.sticky, Some(Sticky::Body { .. })))
            || self
                .publish
                .as_ref()
                .is_some_and(|p| p.needs_request_body())
    }

    /// Adds the body paths this route reads (predicates, sticky key, events) to `p`.
    pub(crate) fn add_body_paths(&self, p: &mut crate::Projection) {
        for b in &self.body {
            p.add(&b.query);
        }
        if let Target::Service(s) = &self.target
            && let Some(Sticky::Body { query, .. }) = &s.sticky
        {
            p.add(query);
        }
        if let Some(publish) = &self.publish {
            publish.add_body_paths(p);
        }
    }

    /// The sticky key of a request, if the route has one and the request carries it.
    pub fn sticky_key<'a>(
        &self,
        req: &Request<'a>,
        params: &Params<'a>,
        body: Body<'a>,
    ) -> Option<Cow<'a, str>> {
        match &self.target {
            Target::Service(s) => s.sticky.as_ref().and_then(|k| k.key(req, params, body)),
            Target::Legacy => None,
        }
    }

    /// The share of traffic the rule itself sends to the new service, in basis points (0 for
    /// a route to the monolith). A rollout may supply another weight to [`Route::decide`].
    pub fn weight_bp(&self) -> u16 {
        match &self.target {
            Target::Service(svc) => svc.weight_bp,
            Target::Legacy => 0,
        }
    }

    /// The context the route belongs to, if any.
    pub fn context(&self) -> Option<&str> {
        match &self.target {
            Target::Service(s) => s.context.as_deref(),
            Target::Legacy => None,
        }
    }

    /// Chooses the side for a matched request at `weight_bp` basis points to the new service
    /// (the rule's own is [`Route::weight_bp`]), from its sticky key (see
    /// [`Route::sticky_key`]); `random` is used only when there is no key. The key is hashed
    /// with the context's name (the route's own when it has none).
    pub fn decide(&self, weight_bp: u16, key: Option<&str>, random: u64) -> (Side<'_>, Choice) {
        let Target::Service(svc) = &self.target else {
            return (Side::Legacy, Choice::Fixed);
        };
        let (bucket, choice) = match key {
            Some(key) => {
                let salt = svc.context.as_deref().unwrap_or(&self.name);
                let bucket = sticky::bucket(salt, key.as_bytes());
                (bucket, Choice::Sticky { bucket })
            }
            None => {
                let bucket = sticky::random_bucket(random);
                (bucket, Choice::Random { bucket })
            }
        };
        let side = if sticky::to_new(bucket, weight_bp) {
            Side::Service(&svc.service)
        } else {
            Side::Legacy
        };
        (side, choice)
    }

    /// Describes the predicate behind a [`Miss`], for `explain --verbose`.
    pub fn describe_miss(&self, miss: &Miss) -> String {
        match miss {
            Miss::Method => format!(
                "method not in [{}]",
                self.methods
                    .iter()
                    .map(Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Miss::Host => format!(
                "host is not {}",
                self.host.as_ref().map_or("?".into(), |h| h.to_string())
            ),
            Miss::Path => format!(
                "path does not match {}",
                self.path.as_ref().map_or("?".into(), describe_path)
            ),
            Miss::Header(i) => format!("header {}", self.headers[*i].describe()),
            Miss::Query(i) => format!("query parameter {}", self.query[*i].describe()),
            Miss::Body(i) => format!(
                "body: {} selects nothing{}",
                self.body[*i].source,
                self.body[*i]
                    .equals
                    .as_ref()
                    .map_or(String::new(), |v| format!(" equal to {v}"))
            ),
            Miss::NeedsBody => "the body is needed and was not given".into(),
        }
    }
}

impl Rewrite {
    /// The upstream path for `path` (which keeps its query string separately).
    pub fn apply<'a>(&self, path: &'a str) -> Cow<'a, str> {
        let (from, to) = match self {
            Rewrite::StripPrefix(p) => (p.as_str(), ""),
            Rewrite::ReplacePrefix { from, to } => (from.as_str(), to.as_str()),
        };
        match path.strip_prefix(from) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') || from.ends_with('/') => {
                let joined = format!("{}{}", to.trim_end_matches('/'), rest);
                if joined.is_empty() {
                    Cow::Borrowed("/")
                } else if !joined.starts_with('/') {
                    Cow::Owned(format!("/{joined}"))
                } else {
                    Cow::Owned(joined)
                }
            }
            _ => Cow::Borrowed(path),
        }
    }
}

impl Sticky {
    /// The key for this request, if present.
    pub fn key<'a>(
        &self,
        req: &Request<'a>,
        params: &Params<'a>,
        body: Body<'a>,
    ) -> Option<Cow<'a, str>> {
        match self {
            Sticky::Header(name) => req
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(Cow::Borrowed),
            Sticky::Cookie(name) => req
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|v| cookie(v, name))
                .map(Cow::Borrowed),
            Sticky::Query(name) => req.query.and_then(|q| query_param(q, name)),
            Sticky::PathParam(name) => params.get(name).map(Cow::Borrowed),
            Sticky::Body { query, .. } => {
                let Body::Json(v) = body else { return None };
                let found = jsonpath_rust::query::js_path_process(query, v).ok()?;
                match found.into_iter().next()?.val() {
                    Value::String(s) => Some(Cow::Borrowed(s.as_str())),
                    Value::Null => None,
                    other => Some(Cow::Owned(other.to_string())),
                }
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Sticky::Header(h) => format!("header {h}"),
            Sticky::Cookie(c) => format!("cookie {c}"),
            Sticky::Query(q) => format!("query parameter {q}"),
            Sticky::PathParam(p) => format!("path parameter {p}"),
            Sticky::Body { source, .. } => format!("body {source}"),
        }
    }
}

impl HostMatch {
    fn matches(&self, host: Option<&str>) -> bool {
        let Some(host) = host else { return false };
        match self {
            HostMatch::Exact(h) => h.eq_ignore_ascii_case(host),
            HostMatch::Suffix(s) => {
                host.len() > s.len()
                    && host.as_bytes()[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
        }
    }
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

impl ValueTest {
    fn check(&self, value: Option<&[u8]>) -> bool {
        match (self, value) {
            (ValueTest::Present, v) => v.is_some(),
            (ValueTest::Absent, v) => v.is_none(),
            (ValueTest::Equals(e), Some(v)) => e.as_bytes() == v,
            (ValueTest::Regex(r), Some(v)) => std::str::from_utf8(v).is_ok_and(|s| r.is_match(s)),
            (_, None) => false,
        }
    }

    fn check_header(&self, headers: &HeaderMap, name: &HeaderName) -> bool {
        let mut values = headers.get_all(name).iter().peekable();
        match self {
            ValueTest::Present => values.peek().is_some(),
            ValueTest::Absent => values.peek().is_none(),
            _ => values.any(|v| self.check(Some(v.as_bytes()))),
        }
    }

    fn describe(&self) -> String {
        match self {
            ValueTest::Present => "is absent (must be present)".into(),
            ValueTest::Absent => "is present (must be absent)".into(),
            ValueTest::Equals(e) => format!("does not equal {e:?}"),
            ValueTest::Regex(r) => format!("does not match /{}/", r.as_str()),
        }
    }
}

impl<N: fmt::Display> ValueMatch<N> {
    fn describe(&self) -> String {
        format!("{} {}", self.name, self.test.describe())
    }
}

impl BodyMatch {
    fn matches(&self, v: &Value) -> bool {
        match jsonpath_rust::query::js_path_process(&self.query, v) {
            Ok(found) => match &self.equals {
                None => !found.is_empty(),
                Some(want) => found.into_iter().any(|r| r.val() == want),
            },
            Err(_) => false,
        }
    }
}

fn describe_path(p: &PathPattern) -> String {
    match p {
        PathPattern::Exact(s) => format!("exact {s}"),
        PathPattern::Prefix(s) => format!("prefix {s}"),
        PathPattern::Template(t) => format!("template {}", t.source),
        PathPattern::Regex(r) => format!("regex /{}/", r.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites() {
        let strip = Rewrite::StripPrefix("/api".into());
        assert_eq!(strip.apply("/api/orders/1"), "/orders/1");
        assert_eq!(strip.apply("/api"), "/");
        assert_eq!(strip.apply("/apix"), "/apix");
        let rep = Rewrite::ReplacePrefix {
            from: "/api/v1".into(),
            to: "/v2".into(),
        };
        assert_eq!(rep.apply("/api/v1/orders"), "/v2/orders");
        assert_eq!(rep.apply("/other"), "/other");
    }
}
