//! Validation of a route's `publish` section: raw YAML → [`Publish`], every problem located.

use super::fields::{header_name, jsonpath, redactions};
use crate::diag::{Loc, Reporter};
use crate::path::PathPattern;
use crate::publish::*;
use crate::raw::{RawPublish, RawRef, RawStatus};
use crate::spanned::Spanned;

pub(super) fn compile(
    p: &Spanned<RawPublish>,
    field: &str,
    route: &str,
    path: &Option<PathPattern>,
    has_sticky: bool,
    r: &mut Reporter,
) -> Option<Publish> {
    let raw = &p.value;
    let before = r.count();
    let stream = raw.stream.value.trim().to_string();
    if stream.is_empty() {
        r.report(
            (&raw.stream).into(),
            format!("{field}.stream"),
            "stream is empty",
        );
    } else if stream.starts_with("arn:")
        && !(stream.starts_with("arn:aws")
            && stream.contains(":kinesis:")
            && stream.contains(":stream/"))
    {
        r.report(
            (&raw.stream).into(),
            format!("{field}.stream"),
            "a stream ARN looks like arn:aws:kinesis:REGION:ACCOUNT:stream/NAME",
        );
    }
    if raw.ty.value.trim().is_empty() {
        r.report(
            (&raw.ty).into(),
            format!("{field}.type"),
            "event type is empty",
        );
    }
    let ctx = RefCtx { path, has_sticky };
    let subject = raw
        .subject
        .as_ref()
        .and_then(|s| value_ref(s, &format!("{field}.subject"), &ctx, false, r));
    let partition_key = raw
        .partition_key
        .as_ref()
        .and_then(|s| value_ref(s, &format!("{field}.partition_key"), &ctx, false, r));
    let data = match &raw.data {
        None => Some(Data::One(ValueRef::RequestBody {
            source: "$".into(),
            query: jsonpath_rust::parser::parse_json_path("$").expect("`$` parses"),
        })),
        Some(d) => match &d.value.object {
            Some(fields) => {
                if count_keys(&d.value) > 0 {
                    r.report(
                        d.into(),
                        format!("{field}.data"),
                        "give either `object` or one reference, not both",
                    );
                }
                let mut out = Vec::new();
                for (k, v) in fields {
                    if let Some(vr) =
                        value_ref(v, &format!("{field}.data.object.{k}"), &ctx, false, r)
                    {
                        out.push((k.clone(), vr));
                    }
                }
                Some(Data::Object(out))
            }
            None => value_ref(d, &format!("{field}.data"), &ctx, true, r).map(Data::One),
        },
    };
    let when_status = match &raw.when_status {
        None => vec![StatusMatch::Class(2)],
        Some(list) => {
            if list.value.is_empty() {
                r.report(
                    list.into(),
                    format!("{field}.when_status"),
                    "give at least one status code or class such as 2xx",
                );
            }
            list.value
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let f = format!("{field}.when_status[{i}]");
                    match &s.value {
                        RawStatus::Code(c) if (100..=599).contains(c) => {
                            Some(StatusMatch::Code(*c))
                        }
                        RawStatus::Class(c)
                            if c.len() == 3
                                && c.ends_with("xx")
                                && matches!(&c[..1], "1" | "2" | "3" | "4" | "5") =>
                        {
                            Some(StatusMatch::Class(u16::from(c.as_bytes()[0] - b'0')))
                        }
                        RawStatus::Class(c)
                            if c.parse::<u16>().is_ok_and(|n| (100..=599).contains(&n)) =>
                        {
                            Some(StatusMatch::Code(c.parse().unwrap_or(0)))
                        }
                        _ => {
                            r.report(
                                s.into(),
                                f,
                                "a status is a code from 100 to 599 or a class such as 2xx",
                            );
                            None
                        }
                    }
                })
                .collect()
        }
    };
    let redact = redactions(&raw.redact, &format!("{field}.redact"), r);
    let durability = match raw.durability.as_ref().map(|d| d.value.as_str()) {
        None | Some("sync") => Durability::Sync,
        Some("async") => Durability::Async,
        Some(other) => {
            let at = raw.durability.as_ref().map(Loc::from).unwrap_or_default();
            r.report(
                at,
                format!("{field}.durability"),
                format!("unknown durability `{other}` (expected sync or async)"),
            );
            Durability::Sync
        }
    };
    if r.count() > before {
        return None;
    }
    Some(Publish {
        stream,
        ty: raw.ty.value.trim().to_string(),
        source: raw
            .source
            .as_ref()
            .map_or_else(|| format!("strangler/{route}"), |s| s.value.clone()),
        subject,
        partition_key,
        data: data?,
        when_status,
        redact,
        durability,
    })
}

struct RefCtx<'a> {
    path: &'a Option<PathPattern>,
    has_sticky: bool,
}

fn count_keys(v: &RawRef) -> usize {
    [
        v.request_body.is_some(),
        v.request_header.is_some(),
        v.request_query.is_some(),
        v.path_param.is_some(),
        v.request_path.is_some(),
        v.request_method.is_some(),
        v.response_status.is_some(),
        v.response_header.is_some(),
        v.response_body.is_some(),
        v.sticky_key.is_some(),
        v.literal.is_some(),
    ]
    .into_iter()
    .filter(|b| *b)
    .count()
}

fn value_ref(
    v: &Spanned<RawRef>,
    field: &str,
    ctx: &RefCtx<'_>,
    in_data: bool,
    r: &mut Reporter,
) -> Option<ValueRef> {
    let raw = &v.value;
    if raw.object.is_some() && !in_data {
        r.report(
            v.into(),
            field,
            "`object` is only allowed directly under `data`",
        );
        return None;
    }
    if count_keys(raw) != 1 {
        r.report(v.into(), field,
            "give exactly one of request.body, request.header, request.query, request.path_param, request.path, request.method, response.status, response.header, response.body, sticky_key or literal");
        return None;
    }
    if let Some(p) = &raw.request_body {
        let query = jsonpath(p, &format!("{field}.request.body"), r)?;
        return Some(ValueRef::RequestBody {
            source: p.value.clone(),
            query,
        });
    }
    if let Some(p) = &raw.response_body {
        let query = jsonpath(p, &format!("{field}.response.body"), r)?;
        return Some(ValueRef::ResponseBody {
            source: p.value.clone(),
            query,
        });
    }
    if let Some(h) = &raw.request_header {
        return header_name(h, &format!("{field}.request.header"), r).map(ValueRef::RequestHeader);
    }
    if let Some(h) = &raw.response_header {
        return header_name(h, &format!("{field}.response.header"), r)
            .map(ValueRef::ResponseHeader);
    }
    if let Some(q) = &raw.request_query {
        return Some(ValueRef::RequestQuery(q.value.clone()));
    }
    if let Some(p) = &raw.path_param {
        let known: Vec<&str> = match ctx.path {
            Some(PathPattern::Template(t)) => t.params().collect(),
            _ => Vec::new(),
        };
        if !known.contains(&p.value.as_str()) {
            r.report(
                p.into(),
                format!("{field}.request.path_param"),
                format!(
                    "path parameter `{}` can never be present: the route's path template has {}",
                    p.value,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known
                            .iter()
                            .map(|k| format!("{{{k}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            );
            return None;
        }
        return Some(ValueRef::PathParam(p.value.clone()));
    }
    if raw.sticky_key.is_some() {
        if !ctx.has_sticky {
            r.report(
                v.into(),
                format!("{field}.sticky_key"),
                "the route's target has no sticky key",
            );
            return None;
        }
        return Some(ValueRef::StickyKey);
    }
    if raw.request_path.is_some() {
        return Some(ValueRef::RequestPath);
    }
    if raw.request_method.is_some() {
        return Some(ValueRef::RequestMethod);
    }
    if raw.response_status.is_some() {
        return Some(ValueRef::ResponseStatus);
    }
    raw.literal
        .as_ref()
        .map(|l| ValueRef::Literal(l.value.clone()))
}
