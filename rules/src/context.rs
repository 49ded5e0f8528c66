//! Bounded contexts, compiled: the routes that move to one new service together. A user is on
//! one side for the whole context: its routes share the sticky key, its salt (the context's
//! name) and the weight, which a rollout plan may drive instead of a fixed number.

use std::sync::Arc;

use strangler_rollout::Plan;

#[derive(Debug)]
pub struct Context {
    pub name: String,
    pub service: String,
    /// The weight the rules give, in basis points; with a plan, the weight before the rollout
    /// controller has a say (0).
    pub weight_bp: u16,
    pub rollout: Option<Plan>,
    pub file: Arc<str>,
    pub line: u64,
    /// Its routes' names, in precedence order.
    pub routes: Vec<String>,
}
