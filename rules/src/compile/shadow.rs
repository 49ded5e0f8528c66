//! Validation of a route's `shadow` section: raw YAML → [`Shadow`], every problem located.

use http::Method;
use strangler_shadow::{JsonRules, Pattern, Tolerance, Unordered};

use super::Environment;
use super::fields::{header_name, known_service, percent_bp, redactions};
use crate::diag::{Loc, Reporter};
use crate::raw::{RawCompare, RawNoise, RawShadow, RawShadowLimits};
use crate::route::{LEGACY, Target};
use crate::shadow::{SAFE_METHODS, Shadow};
use crate::spanned::Spanned;
use crate::units::parse_size;

/// Copies in flight per route when the rule does not say.
const IN_FLIGHT: u32 = 64;
/// The largest body a copy carries or compares when the rule does not say.
const BODY_LIMIT: usize = 1 << 20;

pub(super) fn compile(
    s: &Spanned<RawShadow>,
    field: &str,
    route: &str,
    target: Option<&Target>,
    publishes: bool,
    ctx: &Environment,
    r: &mut Reporter,
) -> Option<Shadow> {
    let raw = &s.value;
    let before = r.count();
    let service = &raw.service;
    if service.value == LEGACY {
        r.report(
            service.into(),
            format!("{field}.service"),
            "the shadow service is the new service compared with the monolith, not `legacy`",
        );
    } else if known_service(service, &format!("{field}.service"), ctx, r)
        && let Some(Target::Service(t)) = target
        && t.service != service.value
    {
        r.report(
            service.into(),
            format!("{field}.service"),
            format!(
                "the route's target is `{}`: its shadow compares that service (got `{}`)",
                t.service, service.value
            ),
        );
    }
    let sample_bp = raw.sample.as_ref().map_or(10_000, |v| {
        percent_bp(v, &format!("{field}.sample"), "sample", r)
    });
    let methods = match &raw.methods {
        None => SAFE_METHODS.to_vec(),
        Some(list) => list
            .value
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let upper = m.value.to_ascii_uppercase();
                match Method::from_bytes(upper.as_bytes()) {
                    Ok(method) => Some(method),
                    Err(_) => {
                        r.report(
                            m.into(),
                            format!("{field}.methods[{i}]"),
                            format!("`{}` is not an HTTP method", m.value),
                        );
                        None
                    }
                }
            })
            .collect(),
    };
    if publishes
        && let Some(list) = &raw.methods
        && let Some(w) = methods.iter().find(|m| !SAFE_METHODS.contains(m))
    {
        r.warn(
            list.into(),
            format!("{field}.methods"),
            format!(
                "`{w}` is copied to the new service on a route that also publishes: if the new service consumes the events, it applies the write twice"
            ),
        );
    }
    let strip_headers = raw
        .strip_headers
        .iter()
        .enumerate()
        .filter_map(|(i, h)| header_name(h, &format!("{field}.strip_headers[{i}]"), r))
        .collect();
    let (headers, json) = match &raw.compare {
        Some(c) => compare(&c.value, &format!("{field}.compare"), r),
        None => compare(&RawCompare::default(), &format!("{field}.compare"), r),
    };
    let noise = raw.noise.as_ref().map(|n| &n.value);
    let secondary = noise.and_then(|n| n.secondary.as_ref()).and_then(|sec| {
        let f = format!("{field}.noise.secondary");
        if sec.value == LEGACY {
            r.report(
                sec.into(),
                f,
                "the secondary is a second monolith instance: configure it as a service",
            );
            return None;
        }
        known_service(sec, &f, ctx, r).then(|| sec.value.clone())
    });
    let exclude_suspected = noise
        .and_then(|n: &RawNoise| n.exclude_suspected.as_ref())
        .is_some_and(|b| b.value);
    let limits = raw.limits.as_ref().map(|l| &l.value);
    let in_flight = match limits.and_then(|l: &RawShadowLimits| l.in_flight.as_ref()) {
        Some(n) if n.value == 0 => {
            r.report(
                n.into(),
                format!("{field}.limits.in_flight"),
                "in_flight must be at least 1",
            );
            IN_FLIGHT
        }
        Some(n) => n.value,
        None => IN_FLIGHT,
    };
    let body_limit = match limits.and_then(|l| l.body.as_ref()) {
        Some(b) => match parse_size(&b.value) {
            Ok(n) if n > 0 => n,
            Ok(_) => {
                r.report(
                    b.into(),
                    format!("{field}.limits.body"),
                    "body must be at least 1 byte",
                );
                BODY_LIMIT
            }
            Err(e) => {
                r.report(b.into(), format!("{field}.limits.body"), e.to_string());
                BODY_LIMIT
            }
        },
        None => BODY_LIMIT,
    };
    let redact = redactions(&raw.redact, &format!("{field}.redact"), r);
    if r.count() > before {
        return None;
    }
    Some(Shadow {
        service: service.value.clone(),
        sample_bp,
        methods,
        strip_headers,
        compare: strangler_shadow::Rules {
            headers,
            json,
            max_body: body_limit,
        },
        secondary,
        exclude_suspected,
        in_flight,
        body_limit,
        redact,
        salt: format!("{route}/shadow"),
    })
}

/// The `compare` part: compared headers and the JSON rules.
fn compare(raw: &RawCompare, field: &str, r: &mut Reporter) -> (Vec<http::HeaderName>, JsonRules) {
    let headers = match &raw.headers {
        None => vec![http::header::CONTENT_TYPE],
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, h)| header_name(h, &format!("{field}.headers[{i}]"), r))
            .collect(),
    };
    let pattern = |p: &Spanned<String>, f: String, r: &mut Reporter| match Pattern::parse(&p.value)
    {
        Ok(p) => Some(p),
        Err(e) => {
            r.report(p.into(), f, e.to_string());
            None
        }
    };
    let ignore = raw
        .ignore
        .iter()
        .enumerate()
        .filter_map(|(i, p)| pattern(p, format!("{field}.ignore[{i}]"), r))
        .collect();
    let unordered = raw
        .unordered
        .iter()
        .enumerate()
        .filter_map(|(i, u)| {
            let f = format!("{field}.unordered[{i}]");
            let path = pattern(&u.value.path, format!("{f}.path"), r)?;
            let key = match &u.value.key {
                None => None,
                Some(k) => {
                    let key = pattern(k, format!("{f}.key"), r)?;
                    if !key.is_plain() {
                        r.report(
                            k.into(),
                            format!("{f}.key"),
                            "the key is one place in each element (no `*` or `..`), such as `$.sku`",
                        );
                        return None;
                    }
                    Some(key)
                }
            };
            Some(Unordered { path, key })
        })
        .collect();
    let mut numbers = Tolerance::default();
    if let Some(n) = &raw.numbers {
        for (name, v, slot) in [
            ("relative", &n.value.relative, &mut numbers.relative),
            ("absolute", &n.value.absolute, &mut numbers.absolute),
        ] {
            if let Some(v) = v {
                if v.value.is_finite() && v.value >= 0.0 {
                    *slot = v.value;
                } else {
                    r.report(
                        Loc::from(v),
                        format!("{field}.numbers.{name}"),
                        format!("{name} must be a number of 0 or more (got {})", v.value),
                    );
                }
            }
        }
    }
    (
        headers,
        JsonRules {
            ignore,
            unordered,
            numbers,
        },
    )
}

#[cfg(test)]
mod tests;
