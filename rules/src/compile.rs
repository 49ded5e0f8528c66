//! Validation and compilation: raw rule files → one [`RuleSet`]. Collects every problem in every
//! file (each located `file:line:col: field: message`) instead of stopping at the first; does the
//! cross-checks (unknown service, duplicate names, sticky keys that can never be present).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method};
use serde_saphyr::Spanned;

use crate::diag::{Diagnostics, Loc, Reporter};
use crate::path::{PathPattern, Template};
use crate::raw::*;
use crate::route::*;
use crate::ruleset::RuleSet;

/// One rule file's name (as shown in diagnostics) and text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: Arc<str>,
    pub text: String,
}

/// Reads a rule file, or every `*.yaml` / `*.yml` file of a folder in name order.
pub fn read_sources(path: &Path) -> Result<Vec<SourceFile>, Diagnostics> {
    let shown: Arc<str> = path.display().to_string().into();
    let unreadable = |e: std::io::Error| {
        let mut r = Reporter::new(shown.clone());
        r.report(Loc::default(), "", format!("cannot read: {e}"));
        r.finish()
    };
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(unreadable)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
            })
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::with_capacity(files.len());
    let mut diags = Diagnostics::default();
    for f in files {
        let name: Arc<str> = f.display().to_string().into();
        match std::fs::read_to_string(&f) {
            Ok(text) => out.push(SourceFile { name, text }),
            Err(e) => {
                let mut r = Reporter::new(name);
                r.report(Loc::default(), "", format!("cannot read: {e}"));
                diags.extend(r.finish());
            }
        }
    }
    diags.into_result(out)
}

/// What the rules may refer to outside themselves.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Services named in the config; `None` skips the unknown-service check (a rule file checked
    /// on its own).
    pub services: Option<Vec<String>>,
}

/// Validates and compiles every file into one rule set, or returns every problem found.
pub fn compile(files: &[SourceFile], ctx: &Context) -> Result<RuleSet, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut routes = Vec::new();
    let mut names: HashMap<String, (Arc<str>, Loc)> = HashMap::new();
    let mut regexes = RegexCache::default();
    for file in files {
        let mut r = Reporter::new(file.name.clone());
        match serde_saphyr::from_str_with_options::<Option<RawRuleFile>>(&file.text, yaml_options())
        {
            Ok(Some(raw)) => {
                for (i, route) in raw.routes.unwrap_or_default().into_iter().enumerate() {
                    let at = Loc::from(&route);
                    let field = format!("routes[{i}]");
                    let name = route.value.name.value.clone();
                    if let Some((f, l)) = names.get(&name) {
                        r.report(
                            (&route.value.name).into(),
                            format!("{field}.name"),
                            format!(
                                "duplicate route name `{name}` (first defined at {f}:{}:{})",
                                l.line, l.column
                            ),
                        );
                    } else {
                        names.insert(name, (file.name.clone(), (&route.value.name).into()));
                    }
                    if let Some(route) =
                        compile_route(route.value, at, &field, ctx, &mut regexes, &mut r)
                    {
                        routes.push(route);
                    }
                }
            }
            Ok(None) => {}
            Err(e) => r.yaml_error(&e),
        }
        diags.extend(r.finish());
    }
    diags.into_result(()).map(|()| RuleSet::new(routes))
}

/// serde-saphyr's default budget (250,000 nodes) stops near 8,000 routes in one file; rule files
/// are the operator's own, so allow far more while keeping its alias/anchor limits (YAML bombs).
fn yaml_options() -> serde_saphyr::Options {
    let budget = serde_saphyr::budget! { max_nodes: 20_000_000, max_events: 80_000_000 };
    serde_saphyr::options! { budget: budget }
}

/// Compiled regexes by source: thousands of routes often share a pattern, and compiling each once
/// keeps a reload of 10,000 routes fast (a `Regex` clone shares the compiled program).
#[derive(Default)]
struct RegexCache(HashMap<String, regex::Regex>);

fn compile_route(
    raw: RawRoute,
    at: Loc,
    field: &str,
    ctx: &Context,
    regexes: &mut RegexCache,
    r: &mut Reporter,
) -> Option<Route> {
    let before = r.count();
    let name = raw.name.value.clone();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        r.report((&raw.name).into(), format!("{field}.name"),
            "route names must be non-empty and use only letters, digits, '-', '_' and '.' (they become metric labels)");
    }
    let m = raw.matches.map(|m| m.value).unwrap_or_default();
    let methods = m
        .methods
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let upper = s.value.to_ascii_uppercase();
            const KNOWN: [&str; 9] = [
                "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
            ];
            if KNOWN.contains(&upper.as_str()) {
                Method::from_bytes(upper.as_bytes()).ok()
            } else {
                r.report(
                    s.into(),
                    format!("{field}.match.methods[{i}]"),
                    format!(
                        "unknown method `{}` (expected one of {})",
                        s.value,
                        KNOWN.join(", ")
                    ),
                );
                None
            }
        })
        .collect::<Vec<_>>();
    let host = m
        .host
        .as_ref()
        .and_then(|h| compile_host(h, &format!("{field}.match.host"), r));
    let path = m
        .path
        .as_ref()
        .and_then(|p| compile_path(p, &format!("{field}.match.path"), regexes, r));
    let headers = m
        .headers
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let f = format!("{field}.match.headers[{i}]");
            let name = header_name(&h.value.name, &format!("{f}.name"), r)?;
            let test = value_test(&h.value, &f, regexes, r)?;
            Some(ValueMatch { name, test })
        })
        .collect();
    let query = m
        .query
        .iter()
        .enumerate()
        .filter_map(|(i, q)| {
            let f = format!("{field}.match.query[{i}]");
            if q.value.name.value.is_empty() {
                r.report(
                    (&q.value.name).into(),
                    format!("{f}.name"),
                    "query parameter name is empty",
                );
            }
            let test = value_test(&q.value, &f, regexes, r)?;
            Some(ValueMatch {
                name: q.value.name.value.clone(),
                test,
            })
        })
        .collect();
    let body = m
        .body
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            let f = format!("{field}.match.body[{i}].jsonpath");
            let query = jsonpath(&b.value.jsonpath, &f, r)?;
            Some(BodyMatch {
                source: b.value.jsonpath.value.clone(),
                query,
                equals: b.value.equals.as_ref().map(|e| e.value.clone()),
            })
        })
        .collect::<Vec<_>>();
    let publish = raw.publish.as_ref().and_then(|p| {
        crate::publish_compile::compile(
            p,
            &format!("{field}.publish"),
            &name,
            &path,
            &raw.target.value,
            r,
        )
    });
    let target = compile_target(
        &raw.target,
        &format!("{field}.target"),
        &path,
        &methods,
        ctx,
        r,
    );
    if r.count() > before {
        return None;
    }
    Some(Route {
        name,
        file: r.file().clone(),
        line: at.line,
        priority: raw.priority.map_or(0, |p| p.value),
        methods,
        host,
        path,
        headers,
        query,
        body,
        target: target?,
        publish,
    })
}

fn compile_host(h: &Spanned<String>, field: &str, r: &mut Reporter) -> Option<HostMatch> {
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

fn compile_path(
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
                r.report(value.into(), f, e);
                None
            }
        },
        _ => regex(value, &f, regexes, r).map(PathPattern::Regex),
    }
}

/// The one alternative given among `options` (`exact`/`prefix`/…), or a located error.
fn exactly_one<'a>(
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

fn regex(
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

pub(crate) fn jsonpath(
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

pub(crate) fn header_name(
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

fn value_test(
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

fn compile_target(
    t: &Spanned<RawTarget>,
    field: &str,
    path: &Option<PathPattern>,
    methods: &[Method],
    ctx: &Context,
    r: &mut Reporter,
) -> Option<Target> {
    let raw = &t.value;
    let service = raw.service.value.as_str();
    if service == LEGACY {
        for (key, present) in [
            ("weight", raw.weight.as_ref().map(Loc::from)),
            ("sticky", raw.sticky.as_ref().map(Loc::from)),
            ("rewrite", raw.rewrite.as_ref().map(Loc::from)),
        ] {
            if let Some(at) = present {
                r.report(
                    at,
                    format!("{field}.{key}"),
                    format!("`{key}` only applies to a new service, not to `legacy`"),
                );
            }
        }
        if let Some(h) = raw.headers.first() {
            r.report(
                h.into(),
                format!("{field}.headers"),
                "`headers` only applies to a new service, not to `legacy`",
            );
        }
        return Some(Target::Legacy);
    }
    if let Some(known) = &ctx.services
        && !known.iter().any(|s| s == service)
    {
        let mut names: Vec<&str> = known.iter().map(String::as_str).collect();
        names.push(LEGACY);
        r.report(
            (&raw.service).into(),
            format!("{field}.service"),
            format!(
                "unknown service `{service}` (the config names: {})",
                names.join(", ")
            ),
        );
    }
    let weight_bp = match &raw.weight {
        None => 10_000,
        Some(w) => {
            let bp = (w.value * 100.0).round();
            if !(0.0..=100.0).contains(&w.value) || !w.value.is_finite() {
                r.report(
                    w.into(),
                    format!("{field}.weight"),
                    format!("weight {} is out of range 0–100", w.value),
                );
                0
            } else if (bp - w.value * 100.0).abs() > 1e-6 {
                r.report(
                    w.into(),
                    format!("{field}.weight"),
                    format!("weight {} has more than two decimals", w.value),
                );
                0
            } else {
                bp as u16
            }
        }
    };
    let sticky = raw
        .sticky
        .as_ref()
        .and_then(|s| compile_sticky(s, &format!("{field}.sticky"), path, methods, r));
    let rewrite = raw.rewrite.as_ref().and_then(|rw| {
        let f = format!("{field}.rewrite");
        match (&rw.value.strip_prefix, &rw.value.replace_prefix) {
            (Some(p), None) => {
                prefix_value(p, &format!("{f}.strip_prefix"), r).map(Rewrite::StripPrefix)
            }
            (None, Some(rp)) => {
                let from = prefix_value(&rp.value.from, &format!("{f}.replace_prefix.from"), r)?;
                let to = prefix_value(&rp.value.to, &format!("{f}.replace_prefix.to"), r)?;
                Some(Rewrite::ReplacePrefix { from, to })
            }
            _ => {
                r.report(
                    rw.into(),
                    f,
                    "give exactly one of strip_prefix or replace_prefix",
                );
                None
            }
        }
    });
    let add_headers = raw
        .headers
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let f = format!("{field}.headers[{i}]");
            let name = header_name(&h.value.name, &format!("{f}.name"), r)?;
            match HeaderValue::from_str(&h.value.value.value) {
                Ok(v) => Some((name, v)),
                Err(_) => {
                    r.report(
                        (&h.value.value).into(),
                        format!("{f}.value"),
                        "not a valid header value",
                    );
                    None
                }
            }
        })
        .collect();
    Some(Target::Service(ServiceTarget {
        service: service.to_string(),
        weight_bp,
        sticky,
        rewrite,
        add_headers,
    }))
}

fn prefix_value(v: &Spanned<String>, field: &str, r: &mut Reporter) -> Option<String> {
    if v.value.starts_with('/') {
        Some(v.value.clone())
    } else {
        r.report(
            v.into(),
            field,
            format!("`{}` must start with '/'", v.value),
        );
        None
    }
}

fn compile_sticky(
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
