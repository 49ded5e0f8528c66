//! Validation of the `contexts:` sections (every file's, before any route: a route may name a
//! context of another file), and of a route's membership of one.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;
use strangler_rollout::Plan;

use super::Environment;
use super::fields::{compile_sticky, known_service, percent_bp};
use crate::context::Context;
use crate::diag::{Loc, Reporter};
use crate::path::PathPattern;
use crate::raw::RawContext;
use crate::route::{LEGACY, Route, Sticky};
use crate::spanned::Spanned;

/// A context as declared, before its routes are known.
pub(super) struct Declared<'a> {
    pub(super) raw: &'a RawContext,
    pub(super) file: Arc<str>,
    pub(super) line: u64,
    pub(super) weight_bp: u16,
    pub(super) plan: Option<Plan>,
    /// Whether a route of it has a shadow section (the match-rate gate needs one).
    pub(super) shadowed: bool,
}

/// Validates one file's contexts into `declared` (names unique across files).
pub(super) fn declare<'a>(
    contexts: &'a [Spanned<RawContext>],
    numbering: &crate::raw::Numbering,
    declared: &mut HashMap<String, Declared<'a>>,
    env: &Environment,
    r: &mut Reporter,
) {
    for (i, c) in contexts.iter().enumerate() {
        let field = format!("contexts[{}]", numbering.context(i));
        let raw = &c.value;
        let name = &raw.name.value;
        if !super::is_valid_name(name) {
            r.report((&raw.name).into(), format!("{field}.name"),
                "context names must be non-empty and use only letters, digits, '-', '_' and '.' (they become metric labels)");
        }
        if let Some(first) = declared.get(name) {
            r.report(
                (&raw.name).into(),
                format!("{field}.name"),
                format!(
                    "duplicate context name `{name}` (first defined at {}:{})",
                    first.file, first.line
                ),
            );
            continue;
        }
        if raw.service.value == LEGACY {
            r.report(
                (&raw.service).into(),
                format!("{field}.service"),
                "a context moves to a new service: name it, not `legacy`",
            );
        } else {
            known_service(&raw.service, &format!("{field}.service"), env, r);
        }
        let (weight_bp, plan) = match (&raw.weight, &raw.rollout) {
            (Some(w), Some(p)) => {
                r.report(
                    w.into(),
                    format!("{field}.weight"),
                    "give a weight or a rollout plan, not both",
                );
                // Its own problems are worth knowing too.
                super::rollout::compile(p, &format!("{field}.rollout"), r);
                (0, None)
            }
            (Some(w), None) => (percent_bp(w, &format!("{field}.weight"), "weight", r), None),
            (None, Some(p)) => (
                0,
                super::rollout::compile(p, &format!("{field}.rollout"), r),
            ),
            (None, None) => (10_000, None),
        };
        declared.insert(
            name.clone(),
            Declared {
                raw,
                file: r.file().clone(),
                line: Loc::from(&raw.name).line,
                weight_bp,
                plan,
                shadowed: false,
            },
        );
    }
}

/// The sticky key of context `c` for one of its routes (checked against the route's path and
/// methods: a key the route can never carry is an error at the context's `sticky`, in the
/// context's file, naming the route).
pub(super) fn sticky_for_route(
    c: &Declared<'_>,
    route: &str,
    path: &Option<PathPattern>,
    methods: &[Method],
    r: &mut Reporter,
) -> Option<Sticky> {
    let s = c.raw.sticky.as_ref()?;
    let mut there = Reporter::new(c.file.clone());
    let field = format!("routes.{route} → contexts.{}.sticky", c.raw.name.value);
    let sticky = compile_sticky(s, &field, path, methods, &mut there);
    r.absorb(there);
    sticky
}

/// The contexts with their routes; the checks that need every route (a match-rate gate needs
/// a shadowed route; a context without routes is likely a mistake).
pub(super) fn finish(
    declared: HashMap<String, Declared<'_>>,
    routes: &[Route],
    reporters: &mut [Reporter],
) -> Vec<Context> {
    let mut out = Vec::with_capacity(declared.len());
    for (name, c) in declared {
        let Some(r) = reporters.iter_mut().find(|r| *r.file() == c.file) else {
            continue;
        };
        let members: Vec<String> = routes
            .iter()
            .filter(|route| route.context() == Some(name.as_str()))
            .map(|route| route.name.clone())
            .collect();
        if members.is_empty() {
            r.warn(
                (&c.raw.name).into(),
                format!("contexts.{name}"),
                "no route names this context (target: { context: … })",
            );
        }
        let gate = c
            .raw
            .rollout
            .as_ref()
            .and_then(|p| p.value.gates.as_ref())
            .and_then(|g| g.value.match_rate.as_ref());
        let gated = c
            .plan
            .as_ref()
            .is_some_and(|p| p.gates.match_rate.is_some());
        if let Some(gate) = gate
            && gated
            && !c.shadowed
        {
            r.report(
                gate.into(),
                format!("contexts.{name}.rollout.gates.match_rate"),
                "the match-rate gate needs a `shadow` section on at least one of the context's routes",
            );
        }
        out.push(Context {
            name,
            service: c.raw.service.value.clone(),
            weight_bp: c.weight_bp,
            rollout: c.plan,
            file: c.file,
            line: c.line,
            routes: members,
        });
    }
    out
}

#[cfg(test)]
mod tests;
