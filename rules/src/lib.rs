//! strangler's rules: the rule-file model, its validation with located errors, the compiled
//! matcher (method, host, path, headers, query, JSONPath body predicates) and the sticky weighted
//! choice between the monolith and a new service. A pure library: no sockets, no pingora.
//!
//! The flow: [`load`] ([`read_sources`] → [`compile`]: raw YAML → typed, every error at once)
//! → [`RuleSet::find`] per request (a [`Request`] view) → [`Route::decide`] for the side, at the
//! weight the caller gives (the rule's own, or a rollout's).

mod compile;
mod context;
pub mod diag;
pub mod path;
mod projection;
pub mod publish;
pub mod raw;
pub mod request;
mod route;
mod ruleset;
pub mod shadow;
mod spanned;
pub mod sticky;
pub mod units;

pub use compile::{Environment, SourceFile, compile, is_valid_name, load, read_sources};
pub use context::Context;
pub use diag::{Diagnostic, Diagnostics, Loc, Reporter};
pub use projection::Projection;
pub use request::{Body, Params, Request, host_without_port};
pub use route::{Choice, LEGACY, Miss, Rewrite, Route, ServiceTarget, Side, Sticky, Target};
pub use ruleset::{Outcome, RuleSet};
pub use shadow::Shadow;
pub use spanned::Spanned;
pub use units::{parse_duration, parse_size};

#[cfg(test)]
mod tests;
