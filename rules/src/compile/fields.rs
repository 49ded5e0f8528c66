//! Validation of the values a route's fields share: names, hosts, paths, regexes, JSONPaths,
//! header names and value tests. Each reports a located error and returns `None` on a bad value.

use std::collections::HashMap;

use http::{HeaderName, Method};

use super::Environment;
use crate::diag::{Loc, Reporter};
use crate::path::{PathPattern, Template};
use crate::publish::Redact;
use crate::raw::*;
use crate::route::*;
use crate::spanned::Spanned;

/// Route and service names become metric labels and admin URL segments: non-empty, letters,
/// digits, `-`, `_` and `.` only. The one check for every name the rules and the config give.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Compiled regexes by source: thousands of routes often share a pattern, and compiling each once
/// keeps a reload of 10,000 routes fast (a `Regex` clone shares the compiled program).
#[derive(Default)]
pub(super) struct RegexCache(HashMap<String, regex::Regex>);

pub(super) fn compile_host(
    h: &Spanned<String>,
    field: &str,
    r: &mut Reporter,
) -> Option<HostMatch> {
    let v = h.value.trim();
    let bad = |r: &mut Reporter, why: &str| r.report(h.into(), field, why.to_string());
    if v.is_empty() {
        bad(r, "host is empty");
        return None;
    }
    if v.contains("://") || v.contains('/') {
        bad(
            r,
            "host must be a bare host name such as `shop.example.com` (no scheme, no path)",
        );
        return None;
    }
    if let Some(rest) = v.strip_prefix("*.") {
        if rest.is_empty() || rest.contains('*') {
            bad(r, "a wildcard host must look like `*.example.com`");
            return None;
        }
        return Some(HostMatch::Suffix(format!(".{}", rest.to_ascii_lowercase())));
    }
    if v.contains('*') {
        bad(
            r,
            "`*` is only allowed as the first label, as in `*.example.com`",
        );
        return None;
    }
    if v.contains(':') && !v.starts_with('[') {
        bad(
            r,
            "host must not include a port (the port is ignored when matching)",
        );
        return None;
    }
    Some(HostMatch::Exact(v.to_ascii_lowercase()))
}

pub(super) fn compile_path(
    p: &Spanned<RawPath>,
    field: &str,
    regexes: &mut RegexCache,
    r: &mut Reporter,
) -> Option<PathPattern> {
    let raw = &p.value;
    let options = [
        ("exact", &raw.exact),
        ("prefix", &raw.prefix),
        ("template", &raw.template),
        ("regex", &raw.regex),
    ];
    let (kind, value) = exactly_one(&options, p.into(), field, r)?;
    let f = format!("{field}.{kind}");
    let s = value.value.as_str();
    if kind != "regex" && !s.starts_with('/') {
        r.report(value.into(), f, format!("path `{s}` must start with '/'"));
        return None;
    }
    match kind {
        "exact" => Some(PathPattern::Exact(s.to_string())),
        "prefix" => {
            let trimmed = if s.len() > 1 {
                s.trim_end_matches('/')
            } else {
                s
            };
            Some(PathPattern::Prefix(if trimmed.is_empty() {
                "/".into()
            } else {
                trimmed.into()
            }))
        }
        "template" => match Template::parse(s) {
            Ok(t) => Some(PathPattern::Template(t)),
            Err(e) => {
                r.report(value.into(), f, e.to_string());
                None
            }
        },
        _ => regex(value, &f, regexes, r).map(PathPattern::Regex),
    }
}

/// The one alternative given among `options` (`exact`/`prefix`/…), or a located error.
pub(super) fn exactly_one<'a>(
    options: &[(&'static str, &'a Option<Spanned<String>>)],
    at: Loc,
    field: &str,
    r: &mut Reporter,
) -> Option<(&'static str, &'a Spanned<String>)> {
    let mut given = options
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (*k, v)));
    match (given.next(), given.next()) {
        (Some(one), None) => Some(one),
        _ => {
            let names: Vec<&str> = options.iter().map(|(k, _)| *k).collect();
            let (last, rest) = names.split_last().expect("options are never empty");
            r.report(
                at,
                field,
                format!("give exactly one of {} or {last}", rest.join(", ")),
            );
            None
        }
    }
}

pub(super) fn regex(
    v: &Spanned<String>,
    field: &str,
    regexes: &mut RegexCache,
    r: &mut Reporter,
) -> Option<regex::Regex> {
    if let Some(re) = regexes.0.get(&v.value) {
        return Some(re.clone());
    }
    match regex::Regex::new(&format!("^(?:{})$", v.value)) {
        Ok(re) => {
            regexes.0.insert(v.value.clone(), re.clone());
            Some(re)
        }
        Err(e) => {
            let msg = e.to_string();
            let last = msg.lines().last().unwrap_or("invalid regex").trim();
            let last = last.strip_prefix("error: ").unwrap_or(last);
            r.report(
                v.into(),
                field,
                format!("invalid regex `{}`: {last}", v.value),
            );
            None
        }
    }
}

pub(super) fn jsonpath(
    v: &Spanned<String>,
    field: &str,
    r: &mut Reporter,
) -> Option<jsonpath_rust::parser::model::JpQuery> {
    match jsonpath_rust::parser::parse_json_path(&v.value) {
        Ok(q) => Some(q),
        Err(e) => {
            let text = e.to_string();
            // pest renders a multi-line picture; its `= expected …` line is the useful part.
            let msg = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("= "))
                .unwrap_or_else(|| text.lines().next().unwrap_or("parse error"))
                .to_string();
            r.report(
                v.into(),
                field,
                format!("invalid JSONPath `{}`: {msg}", v.value),
            );
            None
        }
    }
}

pub(super) fn header_name(
    v: &Spanned<String>,
    field: &str,
    r: &mut Reporter,
) -> Option<HeaderName> {
    match HeaderName::from_bytes(v.value.as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            r.report(
                v.into(),
                field,
                format!("`{}` is not a valid header name", v.value),
            );
            None
        }
    }
}

pub(super) fn value_test(
    v: &RawValueMatch,
    field: &str,
    regexes: &mut RegexCache,
    r: &mut Reporter,
) -> Option<ValueTest> {
    let count = usize::from(v.present.is_some())
        + usize::from(v.equals.is_some())
        + usize::from(v.regex.is_some());
    if count > 1 {
        r.report(
            (&v.name).into(),
            field,
            "give at most one of present, equals or regex",
        );
        return None;
    }
    Some(if let Some(e) = &v.equals {
        ValueTest::Equals(e.value.clone())
    } else if let Some(re) = &v.regex {
        ValueTest::Regex(regex(re, &format!("{field}.regex"), regexes, r)?)
    } else if v.present.as_ref().is_some_and(|p| !p.value) {
        ValueTest::Absent
    } else {
        ValueTest::Present
    })
}

/// A percentage with at most two decimals (`weight`, `sample`), in basis points; 0 after an error.
pub(super) fn percent_bp(v: &Spanned<f64>, field: &str, what: &str, r: &mut Reporter) -> u16 {
    let bp = (v.value * 100.0).round();
    if !(0.0..=100.0).contains(&v.value) || !v.value.is_finite() {
        r.report(
            v.into(),
            field,
            format!("{what} {} is out of range 0–100", v.value),
        );
        0
    } else if (bp - v.value * 100.0).abs() > 1e-6 {
        r.report(
            v.into(),
            field,
            format!("{what} {} has more than two decimals", v.value),
        );
        0
    } else {
        bp as u16
    }
}

/// A `redact` list (`publish.redact`, `shadow.redact`): JSONPaths to remove or hash.
pub(super) fn redactions(raw: &[Spanned<RawRedact>], field: &str, r: &mut Reporter) -> Vec<Redact> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, x)| {
            let f = format!("{field}[{i}]");
            jsonpath(&x.value.jsonpath, &format!("{f}.jsonpath"), r)?;
            let hash = match x.value.mode.as_ref().map(|m| m.value.as_str()) {
                None | Some("remove") => false,
                Some("hash") => true,
                Some(other) => {
                    let at = x.value.mode.as_ref().map(Loc::from).unwrap_or_default();
                    r.report(
                        at,
                        format!("{f}.mode"),
                        format!("unknown redact mode `{other}` (expected remove or hash)"),
                    );
                    return None;
                }
            };
            Some(Redact {
                jsonpath: x.value.jsonpath.value.clone(),
                hash,
            })
        })
        .collect()
}

/// Whether `service` is a service of the config (always, when the rules are checked alone);
/// reports it otherwise.
pub(super) fn known_service(
    service: &Spanned<String>,
    field: &str,
    ctx: &Environment,
    r: &mut Reporter,
) -> bool {
    let Some(known) = &ctx.services else {
        return true;
    };
    if known.contains(&service.value) {
        return true;
    }
    let mut names: Vec<&str> = known.iter().map(String::as_str).collect();
    names.push(LEGACY);
    r.report(
        service.into(),
        field,
        format!(
            "unknown service `{}` (the config names: {})",
            service.value,
            names.join(", ")
        ),
    );
    false
}

pub(super) fn compile_sticky(
    s: &Spanned<RawSticky>,
    field: &str,
    path: &Option<PathPattern>,
    methods: &[Method],
    r: &mut Reporter,
) -> Option<Sticky> {
    let raw = &s.value;
    let options = [
        ("header", &raw.header),
        ("cookie", &raw.cookie),
        ("query", &raw.query),
        ("path_param", &raw.path_param),
        ("body", &raw.body),
    ];
    let (kind, value) = exactly_one(&options, s.into(), field, r)?;
    let f = format!("{field}.{kind}");
    if value.value.is_empty() {
        r.report(value.into(), f, "sticky key name is empty");
        return None;
    }
    match kind {
        "header" => header_name(value, &f, r).map(Sticky::Header),
        "cookie" => Some(Sticky::Cookie(value.value.clone())),
        "query" => Some(Sticky::Query(value.value.clone())),
        "path_param" => {
            let known: Vec<&str> = match path {
                Some(PathPattern::Template(t)) => t.params().collect(),
                _ => Vec::new(),
            };
            if known.contains(&value.value.as_str()) {
                Some(Sticky::PathParam(value.value.clone()))
            } else if known.is_empty() {
                r.report(value.into(), f, format!(
                    "path parameter `{}` can never be present: the route's path is not a template with parameters",
                    value.value));
                None
            } else {
                r.report(
                    value.into(),
                    f,
                    format!(
                        "path parameter `{}` can never be present: the template has {}",
                        value.value,
                        known
                            .iter()
                            .map(|p| format!("{{{p}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                None
            }
        }
        _ => {
            if !methods.is_empty()
                && methods
                    .iter()
                    .all(|m| matches!(m.as_str(), "GET" | "HEAD" | "OPTIONS" | "TRACE"))
            {
                r.report(value.into(), f, "a body key can never be present: the route only matches methods without a body");
                return None;
            }
            let query = jsonpath(value, &f, r)?;
            Some(Sticky::Body {
                source: value.value.clone(),
                query,
            })
        }
    }
}
