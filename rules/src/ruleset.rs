//! The compiled rule set: routes in precedence order plus the path index, and the lookup that
//! answers "which route does this request match" without scanning every route.

use crate::diag::Diagnostics;
use crate::path::PathIndex;
use crate::projection::Projection;
use crate::request::{Body, Params, Request};
use crate::route::{Miss, Route};

thread_local! {
    /// Candidate route ids of the request being matched, reused so matching does not allocate.
    static CANDIDATES: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Every route from every rule file, ready to match. Immutable: reloads build a new one.
#[derive(Debug, Default)]
pub struct RuleSet {
    /// Sorted by priority (highest first), then file order; a route's id is its position.
    routes: Vec<Route>,
    index: PathIndex,
    /// Routes the index cannot answer for (regex paths, no path): checked for every request.
    unindexed: Vec<u32>,
    /// What of a JSON request body any route can look at.
    projection: Projection,
    /// Valid but likely mistakes (`check` prints them).
    warnings: Diagnostics,
    /// Bounded contexts, by name.
    contexts: Vec<crate::Context>,
}

/// The result of matching one request.
#[derive(Debug)]
pub enum Outcome<'a> {
    Matched {
        id: usize,
        route: &'a Route,
        params: Params<'a>,
    },
    /// The first route whose other predicates match (id given) needs the body; read it and
    /// match again.
    NeedsBody { id: usize },
    /// No route matched: the monolith.
    Default,
}

impl RuleSet {
    pub(crate) fn new(mut routes: Vec<Route>) -> RuleSet {
        // Stable sort keeps file order among equal priorities.
        routes.sort_by_key(|r| std::cmp::Reverse(r.priority));
        let mut index = PathIndex::default();
        let mut unindexed = Vec::new();
        let mut projection = Projection::default();
        for (id, r) in routes.iter().enumerate() {
            r.add_body_paths(&mut projection);
            let id = id as u32;
            let indexed = r.path.as_ref().is_some_and(|p| index.insert(id, p));
            if !indexed {
                unindexed.push(id);
            }
        }
        RuleSet {
            routes,
            index,
            unindexed,
            projection,
            warnings: Diagnostics::default(),
            contexts: Vec::new(),
        }
    }

    /// What of a JSON request body the routes can look at: parse bodies with it for
    /// [`RuleSet::find`], sticky keys and events (see [`Projection`]).
    pub fn body_projection(&self) -> &Projection {
        &self.projection
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Every stream a route publishes to (as the rules write it: name or ARN), sorted, once each.
    pub fn publish_streams(&self) -> Vec<String> {
        let mut s: Vec<String> = self
            .routes
            .iter()
            .filter_map(|r| r.publish.as_ref().map(|p| p.stream.clone()))
            .collect();
        s.sort();
        s.dedup();
        s
    }

    /// The bounded contexts, by name.
    pub fn contexts(&self) -> &[crate::Context] {
        &self.contexts
    }

    pub fn context(&self, name: &str) -> Option<&crate::Context> {
        self.contexts
            .binary_search_by(|c| c.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.contexts[i])
    }

    pub(crate) fn with_contexts(mut self, contexts: Vec<crate::Context>) -> RuleSet {
        self.contexts = contexts;
        self
    }

    pub(crate) fn with_warnings(mut self, warnings: Diagnostics) -> RuleSet {
        self.warnings = warnings;
        self
    }

    /// What `check` warns about: valid, but likely a mistake.
    pub fn warnings(&self) -> &Diagnostics {
        &self.warnings
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// The first route (in precedence order) that matches. With `Body::NotRead`, stops with
    /// `NeedsBody` as soon as the deciding route needs the body.
    pub fn find<'a>(&'a self, req: &Request<'a>, body: Body<'_>) -> Outcome<'a> {
        CANDIDATES.with_borrow_mut(|ids| {
            ids.clear();
            self.index.candidates(req.path, ids);
            ids.extend_from_slice(&self.unindexed);
            ids.sort_unstable();
            ids.dedup();
            for &id in ids.iter() {
                let route = &self.routes[id as usize];
                let id = id as usize;
                match route.check(req, body) {
                    Ok(_) if matches!(body, Body::NotRead) && route.needs_body() => {
                        return Outcome::NeedsBody { id };
                    }
                    Ok(params) => return Outcome::Matched { id, route, params },
                    Err(Miss::NeedsBody) => return Outcome::NeedsBody { id },
                    Err(_) => {}
                }
            }
            Outcome::Default
        })
    }

    /// Every route in precedence order with its verdict, up to and including the one that
    /// matches: what `strangler explain --verbose` prints. Scans all routes (no index) on purpose,
    /// so it also checks the index.
    pub fn explain<'a>(
        &'a self,
        req: &Request<'a>,
        body: Body<'_>,
    ) -> Vec<(&'a Route, Result<Params<'a>, Miss>)> {
        let mut out = Vec::new();
        for route in &self.routes {
            let verdict = route.check(req, body);
            let done = verdict.is_ok();
            out.push((route, verdict));
            if done {
                break;
            }
        }
        out
    }
}
