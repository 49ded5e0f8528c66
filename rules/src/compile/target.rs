//! Validation of a route's `target`: the side (monolith, a named service, or a context's), weight,
//! sticky key, path rewrite and added headers.

use std::collections::HashMap;

use http::{HeaderValue, Method};

use super::Environment;
use super::context::Declared;
use super::fields::{compile_sticky, header_name, known_service, percent_bp};
use crate::diag::{Loc, Reporter};
use crate::path::PathPattern;
use crate::raw::*;
use crate::route::*;
use crate::spanned::Spanned;

#[allow(clippy::too_many_arguments)]
pub(super) fn compile_target(
    t: &Spanned<RawTarget>,
    field: &str,
    route: &str,
    path: &Option<PathPattern>,
    methods: &[Method],
    ctx: &Environment,
    contexts: &HashMap<String, Declared<'_>>,
    r: &mut Reporter,
) -> Option<Target> {
    let raw = &t.value;
    let service = match (&raw.service, &raw.context) {
        (Some(s), None) => s,
        (None, Some(c)) => {
            return in_context(c, raw, field, route, path, methods, contexts, r);
        }
        (Some(_), Some(c)) => {
            r.report(
                c.into(),
                format!("{field}.context"),
                "give a service or a context, not both (a context names its service)",
            );
            return None;
        }
        (None, None) => {
            r.report(t.into(), field, "give a service (or `legacy`) or a context");
            return None;
        }
    };
    if service.value == LEGACY {
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
    known_service(service, &format!("{field}.service"), ctx, r);
    let (rewrite, add_headers) = rewrite_and_headers(raw, field, r);
    let weight_bp = raw.weight.as_ref().map_or(10_000, |w| {
        percent_bp(w, &format!("{field}.weight"), "weight", r)
    });
    let sticky = raw
        .sticky
        .as_ref()
        .and_then(|s| compile_sticky(s, &format!("{field}.sticky"), path, methods, r));
    Some(Target::Service(ServiceTarget {
        service: service.value.clone(),
        weight_bp,
        sticky,
        rewrite,
        add_headers,
        context: None,
    }))
}

/// A route of a context: the context's service, sticky key and weight; its own rewrite and
/// headers.
#[allow(clippy::too_many_arguments)]
fn in_context(
    name: &Spanned<String>,
    raw: &RawTarget,
    field: &str,
    route: &str,
    path: &Option<PathPattern>,
    methods: &[Method],
    contexts: &HashMap<String, Declared<'_>>,
    r: &mut Reporter,
) -> Option<Target> {
    for (key, present) in [
        ("weight", raw.weight.as_ref().map(Loc::from)),
        ("sticky", raw.sticky.as_ref().map(Loc::from)),
    ] {
        if let Some(at) = present {
            r.report(
                at,
                format!("{field}.{key}"),
                format!(
                    "a context's routes share its {key}: set it on context `{}`",
                    name.value
                ),
            );
        }
    }
    let (rewrite, add_headers) = rewrite_and_headers(raw, field, r);
    let Some(c) = contexts.get(&name.value) else {
        let mut known: Vec<&str> = contexts.keys().map(String::as_str).collect();
        known.sort_unstable();
        r.report(
            name.into(),
            format!("{field}.context"),
            if known.is_empty() {
                format!(
                    "unknown context `{}` (no rule file declares contexts)",
                    name.value
                )
            } else {
                format!(
                    "unknown context `{}` (declared: {})",
                    name.value,
                    known.join(", ")
                )
            },
        );
        return None;
    };
    let sticky = super::context::sticky_for_route(c, route, path, methods, r);
    Some(Target::Service(ServiceTarget {
        service: c.raw.service.value.clone(),
        weight_bp: c.weight_bp,
        sticky,
        rewrite,
        add_headers,
        context: Some(name.value.as_str().into()),
    }))
}

/// A target's `rewrite` and `headers`.
fn rewrite_and_headers(
    raw: &RawTarget,
    field: &str,
    r: &mut Reporter,
) -> (Option<Rewrite>, Vec<(http::HeaderName, HeaderValue)>) {
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
    (rewrite, add_headers)
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
