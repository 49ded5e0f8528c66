//! The strangler proxy as a library: the pingora service and everything around it. The
//! `strangler` binary (`main.rs`) only parses the command line and calls in here.
//!
//! One request flows `proxy` (rules → side → upstream) → `errors` (502/504) → `metrics` and the
//! access log; `reload` owns the live rule set, `admin` exposes it, `serve` wires it all up.

pub mod admin;
pub mod cli;
pub mod client;
pub mod config;
pub mod decision;
pub mod dual_write;
pub mod errors;
pub mod listeners;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod replay;
pub mod rollout;
pub mod serve;
pub mod shadow;
pub mod store_runtime;
pub mod stream_check;
pub mod telemetry;
pub mod tls;
pub mod upstream;
