//! Validation and compilation: raw rule files → one [`RuleSet`]. Collects every problem in every
//! file (each located `file:line:col: field: message`) instead of stopping at the first; does the
//! cross-checks (unknown service, duplicate names, sticky keys that can never be present).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::Method;

use crate::diag::{Diagnostics, Loc, Reporter};
use crate::raw::*;
use crate::route::*;
use crate::ruleset::RuleSet;
use fields::{RegexCache, compile_host, compile_path, header_name, jsonpath, value_test};
use target::compile_target;

mod context;
mod fields;
mod publish;
mod rollout;
mod salvage;
mod shadow;
mod target;

pub use fields::is_valid_name;

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
pub struct Environment {
    /// Services named in the config; `None` skips the unknown-service check (a rule file checked
    /// on its own).
    pub services: Option<Vec<String>>,
}

/// Reads the rule file or folder at `path` and compiles it: what the proxy, its reloads,
/// `check` and `explain` all do.
pub fn load(path: &Path, ctx: &Environment) -> Result<(RuleSet, usize), Diagnostics> {
    let files = read_sources(path)?;
    Ok((compile(&files, ctx)?, files.len()))
}

/// Validates and compiles every file into one rule set, or returns every problem found. Every
/// file's contexts are read before any route (a route may name a context of another file).
pub fn compile(files: &[SourceFile], env: &Environment) -> Result<RuleSet, Diagnostics> {
    let mut reporters = Vec::with_capacity(files.len());
    let mut raws = Vec::with_capacity(files.len());
    for file in files {
        let mut r = Reporter::new(file.name.clone());
        match serde_saphyr::from_str_with_options::<Option<RawRuleFile>>(&file.text, yaml_options())
        {
            Ok(raw) => raws.push(raw),
            Err(e) => {
                r.yaml_error(&e);
                raws.push(salvage::salvage(&file.text, &e, &mut r));
            }
        }
        reporters.push(r);
    }
    let mut declared = HashMap::new();
    for (raw, r) in raws.iter().zip(&mut reporters) {
        if let Some(raw) = raw
            && let Some(contexts) = raw.contexts.as_deref()
        {
            context::declare(contexts, &raw.numbering, &mut declared, env, r);
        }
    }
    // Sized once: a compiled route is ~700 bytes, and doubling a Vec of 10,000 of them held
    // ~11 MB at the peak of a reload.
    let mut routes = Vec::with_capacity(
        raws.iter()
            .flatten()
            .map(|raw| raw.routes.as_ref().map_or(0, Vec::len))
            .sum(),
    );
    let mut names: HashMap<String, (Arc<str>, Loc)> = HashMap::new();
    let mut regexes = RegexCache::default();
    let mut scope = Scope {
        env,
        contexts: &mut declared,
        regexes: &mut regexes,
    };
    for (raw, r) in raws.iter().zip(&mut reporters) {
        let Some(raw) = raw else { continue };
        for (i, route) in raw.routes.iter().flatten().enumerate() {
            let at = Loc::from(route);
            let field = format!("routes[{}]", raw.numbering.route(i));
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
                names.insert(name, (r.file().clone(), (&route.value.name).into()));
            }
            if let Some(route) = compile_route(&route.value, at, &field, &mut scope, r) {
                routes.push(route);
            }
        }
    }
    let mut contexts = context::finish(declared, &routes, &mut reporters);
    contexts.sort_by(|a, b| a.name.cmp(&b.name));
    let mut diags = Diagnostics::default();
    let mut warnings = Diagnostics::default();
    for r in reporters {
        let (errors, warned) = r.finish_with_warnings();
        diags.extend(errors);
        warnings.extend(warned);
    }
    diags.into_result(()).map(|()| {
        RuleSet::new(routes)
            .with_contexts(contexts)
            .with_warnings(warnings)
    })
}

/// What compiling a route may refer to besides its own text.
struct Scope<'s, 'a> {
    env: &'s Environment,
    contexts: &'s mut HashMap<String, context::Declared<'a>>,
    regexes: &'s mut RegexCache,
}

/// serde-saphyr's default budget (250,000 nodes) stops near 8,000 routes in one file; rule files
/// are the operator's own, so allow far more while keeping its alias/anchor limits (YAML bombs).
fn yaml_options() -> serde_saphyr::Options {
    let budget = serde_saphyr::budget! { max_nodes: 20_000_000, max_events: 80_000_000 };
    serde_saphyr::options! { budget: budget }
}

fn compile_route(
    raw: &RawRoute,
    at: Loc,
    field: &str,
    scope: &mut Scope<'_, '_>,
    r: &mut Reporter,
) -> Option<Route> {
    let (ctx, regexes) = (scope.env, &mut *scope.regexes);
    let before = r.count();
    let name = raw.name.value.clone();
    if !is_valid_name(&name) {
        r.report((&raw.name).into(), format!("{field}.name"),
            "route names must be non-empty and use only letters, digits, '-', '_' and '.' (they become metric labels)");
    }
    let no_match = RawMatch::default();
    let m = raw.matches.as_ref().map_or(&no_match, |m| &m.value);
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
    let target = compile_target(
        &raw.target,
        &format!("{field}.target"),
        &name,
        &path,
        &methods,
        ctx,
        scope.contexts,
        r,
    );
    let context = raw
        .target
        .value
        .context
        .as_ref()
        .and_then(|c| scope.contexts.get_mut(&c.value));
    let has_sticky = raw.target.value.sticky.is_some()
        || context.as_ref().is_some_and(|c| c.raw.sticky.is_some());
    if let Some(c) = context {
        c.shadowed |= raw.shadow.is_some();
    }
    let publish = raw.publish.as_ref().and_then(|p| {
        publish::compile(p, &format!("{field}.publish"), &name, &path, has_sticky, r)
    });
    let shadow = raw.shadow.as_ref().and_then(|s| {
        shadow::compile(
            s,
            &format!("{field}.shadow"),
            &name,
            target.as_ref(),
            publish.is_some(),
            ctx,
            r,
        )
        .map(Arc::new)
    });
    if r.count() > before {
        return None;
    }
    Some(Route {
        name,
        file: r.file().clone(),
        line: at.line,
        priority: raw.priority.as_ref().map_or(0, |p| p.value),
        methods,
        host,
        path,
        headers,
        query,
        body,
        target: target?,
        publish,
        shadow,
    })
}
