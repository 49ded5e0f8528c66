//! strangler's rules: the rule-file model, its validation with located errors, the compiled
//! matcher (method, host, path, headers, query, JSONPath body predicates) and the sticky weighted
//! choice between the monolith and a new service. A pure library: no sockets, no pingora.
//!
//! The flow: [`read_sources`] → [`compile`] (raw YAML → typed, every error at once) →
//! [`RuleSet::find`] per request → [`Route::decide`] for the side.

mod compile;
pub mod diag;
pub mod path;
mod projection;
pub mod publish;
mod publish_compile;
pub mod raw;
mod route;
mod ruleset;
pub mod sticky;

pub use compile::{Context, SourceFile, compile, read_sources};
pub use diag::{Diagnostic, Diagnostics, Loc, Reporter};
pub use projection::Projection;
pub use route::{
    Body, Choice, LEGACY, Miss, Params, Request, Rewrite, Route, ServiceTarget, Side, Sticky,
    Target,
};
pub use ruleset::{Outcome, RuleSet};

#[cfg(test)]
mod tests;
