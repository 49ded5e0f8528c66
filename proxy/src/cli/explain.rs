//! `strangler explain`: which route a request would match, where it would go and why, without
//! sending anything. Uses the same matcher and sticky choice as the proxy.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use strangler_rules::publish::Durability;
use strangler_rules::{Body, Choice, Outcome, Request, Side, Target};

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Path, optionally with `?query`.
    #[arg(long)]
    pub path: String,
    /// Query string (without `?`), added to any in --path.
    #[arg(long)]
    pub query: Option<String>,
    /// `Name: value`; repeat for more.
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Host header value.
    #[arg(long)]
    pub host: Option<String>,
    /// A file holding the request body.
    #[arg(long)]
    pub body: Option<PathBuf>,
    /// Also say why each earlier route did not match.
    #[arg(long, short)]
    pub verbose: bool,
    /// The monolith's answer status, to show the event a publishing route would emit.
    #[arg(long, default_value_t = 200)]
    pub response_status: u16,
    /// A file holding the monolith's answer body (for `response.body` references).
    #[arg(long)]
    pub response_body: Option<PathBuf>,
}

pub fn run(cfg: &Config, a: &ExplainArgs) -> Result<()> {
    let rules = super::rules(cfg)?;

    let method: Method = a
        .method
        .to_ascii_uppercase()
        .parse()
        .context("invalid --method")?;
    let (path, mut query) = match a.path.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (a.path.clone(), None),
    };
    if let Some(q) = &a.query {
        query = Some(match query {
            Some(prev) => format!("{prev}&{q}"),
            None => q.clone(),
        });
    }
    let mut headers = HeaderMap::new();
    for h in &a.headers {
        let Some((k, v)) = h.split_once(':') else {
            bail!("--header `{h}` is not `Name: value`")
        };
        headers.append(
            HeaderName::from_bytes(k.trim().as_bytes())
                .with_context(|| format!("bad header name in `{h}`"))?,
            HeaderValue::from_str(v.trim())
                .with_context(|| format!("bad header value in `{h}`"))?,
        );
    }
    if let Some(host) = &a.host {
        headers.insert(
            http::header::HOST,
            HeaderValue::from_str(host).context("bad --host")?,
        );
    }
    let host = a.host.as_deref().map(strangler_rules::host_without_port);
    let req = Request {
        method: &method,
        host,
        path: &path,
        query: query.as_deref(),
        headers: &headers,
    };
    let body_text = match &a.body {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let json = body_text
        .as_deref()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok());
    let body = match (&body_text, &json) {
        (_, Some(v)) => Body::Json(v),
        (Some(_), None) => Body::Unavailable,
        (None, None) => Body::Unavailable,
    };

    println!(
        "request:  {method} {path}{}",
        query
            .as_deref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default()
    );
    if body_text.is_some() && json.is_none() {
        println!("body:     not JSON: body predicates do not match");
    }
    if a.verbose {
        for (route, verdict) in rules.explain(&req, body) {
            if let Err(miss) = verdict {
                println!(
                    "  skip {} ({}:{}): {}",
                    route.name,
                    route.file,
                    route.line,
                    route.describe_miss(&miss)
                );
            }
        }
    }
    match rules.find(&req, body) {
        Outcome::Matched { route, params, .. } => {
            println!(
                "route:    {} ({}:{}, priority {})",
                route.name, route.file, route.line, route.priority
            );
            if !params.0.is_empty() {
                let p: Vec<String> = params.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("params:   {}", p.join(", "));
            }
            let key = route.sticky_key(&req, &params, body);
            let (side, choice) = route.decide(route.weight_bp(), key.as_deref(), 0);
            match &route.target {
                Target::Legacy => println!("target:   legacy (pinned by the route)"),
                Target::Service(t) => {
                    println!(
                        "target:   service {} at weight {}%",
                        t.service,
                        f64::from(t.weight_bp) / 100.0
                    );
                    if let Some(c) = t.context.as_deref().and_then(|c| rules.context(c)) {
                        match &c.rollout {
                            Some(plan) => {
                                let steps: Vec<String> = plan
                                    .steps
                                    .iter()
                                    .map(|s| match s.weight_bp() {
                                        Some(bp) => strangler_rollout::percent(bp),
                                        None => "pause".into(),
                                    })
                                    .collect();
                                println!(
                                    "context:  {} (rollout {}; the weight in force is the controller's: `strangler rollout status`; shown here at 0 %)",
                                    c.name,
                                    steps.join(" → ")
                                );
                            }
                            None => println!(
                                "context:  {} (its routes share the weight and the sticky key)",
                                c.name
                            ),
                        }
                    }
                    let sticky = t
                        .sticky
                        .as_ref()
                        .map_or("none (per request)".into(), |s| s.describe());
                    println!("sticky:   {sticky}");
                    match (&choice, key.as_deref()) {
                        (Choice::Sticky { bucket }, Some(key)) => println!(
                            "key:      {key:?} → bucket {bucket} of {} → {} (new service below bucket {})",
                            strangler_rules::sticky::BUCKETS,
                            side_name(side),
                            t.weight_bp
                        ),
                        _ => println!(
                            "key:      absent → each request draws a random bucket: {}% go to {}",
                            f64::from(t.weight_bp) / 100.0,
                            t.service
                        ),
                    }
                    if let Some(rw) = &t.rewrite
                        && matches!(side, Side::Service(_))
                    {
                        println!("rewrite:  {path} → {}", rw.apply(&path));
                    }
                }
            }
            let upstream = match side {
                Side::Service(name) => cfg.services.get(name).map(|u| (name, u.address)),
                Side::Legacy => Some(("legacy", cfg.legacy.address)),
            };
            if let (Some((name, addr)), false) = (upstream, matches!(choice, Choice::Random { .. }))
            {
                println!("upstream: {name} ({addr})");
            }
            if let Some(s) = &route.shadow {
                explain_shadow(s, &method, matches!(side, Side::Service(_)), key.as_deref());
            }
            if let Some(p) = &route.publish {
                explain_publish(
                    a,
                    p,
                    &req,
                    &params,
                    key.as_deref(),
                    body_text.as_deref(),
                    json.as_ref(),
                )?;
            }
        }
        Outcome::NeedsBody { .. } => println!("route:    needs the request body: pass --body FILE"),
        Outcome::Default => println!(
            "route:    none matched → default: legacy ({})",
            cfg.legacy.address
        ),
    }
    Ok(())
}

/// The `shadow` section: where this request's copy would go (or why none), and what is compared.
fn explain_shadow(
    s: &strangler_rules::Shadow,
    method: &Method,
    to_service: bool,
    key: Option<&str>,
) {
    use strangler_rules::shadow::{CopyTo, NoCopy};
    let methods: Vec<&str> = s.methods.iter().map(Method::as_str).collect();
    println!(
        "shadow:   service {}, {}% sampled{}, methods {}",
        s.service,
        f64::from(s.sample_bp) / 100.0,
        if key.is_some() {
            " by the sticky key"
        } else {
            " per request"
        },
        methods.join(", ")
    );
    let copy = match s.copy_to(method, to_service, key, 0) {
        Ok(CopyTo::Service(name)) => format!("a copy goes to {name} (the monolith serves)"),
        Ok(CopyTo::Legacy) => "a copy goes to the monolith (the new service serves)".into(),
        Err(NoCopy::Method) if to_service => {
            format!("no copy: {method} is not copied to the monolith (only safe methods, listed)")
        }
        Err(NoCopy::Method) => format!("no copy: {method} is not listed"),
        Err(NoCopy::Sample) => "no copy: not in the sample".into(),
    };
    println!("copy:     {copy}");
    let headers: Vec<&str> = s.compare.headers.iter().map(|h| h.as_str()).collect();
    let ignore: Vec<String> = s
        .compare
        .json
        .ignore
        .iter()
        .map(ToString::to_string)
        .collect();
    println!(
        "compare:  status, headers [{}], body{}{}",
        headers.join(", "),
        if ignore.is_empty() {
            String::new()
        } else {
            format!(" ignoring {}", ignore.join(", "))
        },
        match &s.secondary {
            Some(sec) => format!("; noise learned against {sec}"),
            None => String::new(),
        }
    );
}

fn explain_publish(
    a: &ExplainArgs,
    p: &strangler_rules::publish::Publish,
    req: &Request<'_>,
    params: &strangler_rules::Params<'_>,
    sticky: Option<&str>,
    body_text: Option<&[u8]>,
    json: Option<&serde_json::Value>,
) -> Result<()> {
    use strangler_rules::publish::{BodyValue, Exchange};
    let resp_text = match &a.response_body {
        Some(f) => Some(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?),
        None => None,
    };
    let resp_json = resp_text
        .as_deref()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok());
    fn value<'a>(j: Option<&'a serde_json::Value>, t: Option<&'a [u8]>) -> BodyValue<'a> {
        match (j, t) {
            (Some(v), _) => BodyValue::Json(v),
            (None, Some(b)) => BodyValue::Raw(b),
            (None, None) => BodyValue::Absent,
        }
    }
    let headers = HeaderMap::new();
    let ex = Exchange {
        request: req,
        params,
        request_body: value(json, body_text),
        request_json_text: json.and(body_text),
        status: a.response_status,
        response_headers: &headers,
        response_body: value(resp_json.as_ref(), resp_text.as_deref()),
        sticky_key: sticky,
    };
    let durability = match p.durability {
        Durability::Sync => "durability: sync, stored before the answer is released",
        Durability::Async => "durability: async, stored after the answer",
    };
    println!("publish:  stream {} type {} ({durability})", p.stream, p.ty);
    if !p.publishes(a.response_status) {
        println!(
            "event:    none: status {} is not in when_status",
            a.response_status
        );
        return Ok(());
    }
    let hash = |b: &[u8]| format!("<hash of {} bytes>", b.len());
    let (ev, partition_key) = crate::dual_write::build_event(p, &ex, &hash, None);
    println!(
        "partition key: {}",
        partition_key.as_deref().unwrap_or("<the event id>")
    );
    println!("event:    {}", serde_json::to_string_pretty(&ev)?);
    Ok(())
}

fn side_name(side: Side<'_>) -> String {
    match side {
        Side::Legacy => "legacy".into(),
        Side::Service(s) => s.into(),
    }
}
