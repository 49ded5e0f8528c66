//! Shadow traffic on the request path: a copy of a matching request goes to the side that did
//! not serve the client ([`copy`]), the served answer is teed as it streams to the client, and
//! once both are complete the two are compared off the request path ([`settle`]). The client
//! never waits for the copy: a shadow that is down, slow or failing only shows in the metrics.
//!
//! Bounded everywhere: at most the route's `in_flight` copies at once (past it: skipped,
//! `overloaded`), bodies up to its `body` limit (past it: `too_large`), and mismatches go to the
//! store through a bounded queue written in batches (`writer`).

mod copy;
mod settle;
mod window;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::HeaderMap;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use strangler_rules::Shadow;
use strangler_shadow::Noise;
use strangler_store::Store;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::ShadowMetrics;
use crate::upstream::UpstreamPeer;

pub use copy::Copied;
pub use settle::ComparedRequest;

/// Idle connections the copies' pool keeps.
const POOL: usize = 1024;

/// Hashes a redacted value (`mode: hash`).
pub type Hasher = Arc<dyn Fn(&[u8]) -> String + Send + Sync>;

/// A copy's request body went past the route's limit.
#[derive(Debug)]
pub struct TooLarge;

/// The shadow machinery shared by every request.
pub struct Shadowing {
    /// Copies are sent and compared on a thread of their own: the request path only hands
    /// them over, so their I/O and the comparisons never wait in a worker's event loop.
    rt: tokio::runtime::Handle,
    /// Copies have a connection pool of their own: they never take the served side's.
    connector: Arc<Connector>,
    metrics: ShadowMetrics,
    /// What is kept per route, across reloads.
    routes: Mutex<HashMap<String, RouteState>>,
    /// Mismatches on their way to the store.
    writer: mpsc::Sender<strangler_store::NewMismatch>,
    /// Hashes redacted values (`mode: hash`): the same salted HMAC as events.
    hash: Hasher,
    /// Rolled-out contexts count their routes' comparisons.
    rollouts: Arc<crate::rollout::Rollouts>,
}

/// One route's shadow state.
#[derive(Default)]
struct RouteState {
    /// Copies in flight (shared with their permits, used outside the lock).
    in_flight: Arc<AtomicU32>,
    /// Learned noise.
    noise: Noise,
    /// The match rate over the last 5 minutes.
    window: window::Window,
    /// The patterns labelled so far (the metric's label cap).
    labelled: Vec<String>,
}

/// The request body a copy carries.
pub enum CopyBody {
    /// Already read (or none): the copy goes at once.
    Known(Bytes),
    /// Still coming, of this length when the request says: the copy waits for it.
    Coming(Option<usize>),
}

/// Holds one of a route's in-flight slots; frees it when dropped.
pub struct Permit(Arc<AtomicU32>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One side's answer as captured: status, headers, body (still content-encoded).
#[derive(Debug, Clone, Default)]
pub struct Captured {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Where a request's copy goes, and as what.
pub struct Outgoing {
    pub to: Arc<UpstreamPeer>,
    /// The copy goes to the new service (else to the monolith).
    pub to_service: bool,
    /// The copy's header as the target should get it.
    pub header: RequestHeader,
    /// The request as the monolith's secondary instance gets it (`noise.secondary`), sent
    /// alongside under the same in-flight slot.
    pub secondary: Option<(Arc<UpstreamPeer>, RequestHeader)>,
}

/// What came back for one request's copies.
pub struct Answers {
    pub copy: Copied,
    pub secondary: Option<Copied>,
}

/// One request's shadow copy, from the decision to the comparison.
pub struct ShadowCtx {
    /// Where the copy goes, and whether that is the new service.
    to: Arc<UpstreamPeer>,
    to_service: bool,
    /// The copy's request header, ready to send.
    req: Option<RequestHeader>,
    /// The request body read so far, while it is still coming.
    body: Option<Vec<u8>>,
    /// What the copy carried, for a mismatch record.
    pub(crate) sent_headers: HeaderMap,
    pub(crate) sent_body: Bytes,
    limit: usize,
    permit: Option<Permit>,
    /// The same request for the monolith's secondary instance (`noise.secondary`), sent with
    /// the copy: its answer against the monolith's is what noise is learned from.
    secondary: Option<(Arc<UpstreamPeer>, RequestHeader)>,
    /// The copy's answer (and the secondary's), once it was sent.
    answer: Option<oneshot::Receiver<Answers>>,
    /// The served answer, teed.
    served: Captured,
    /// The served body went past the limit: nothing to compare.
    served_too_large: bool,
}

impl Shadowing {
    /// Starts the mismatch writer (a thread of its own) on `store`.
    pub fn start(
        store: Store,
        retention: crate::config::Retention,
        metrics: ShadowMetrics,
        hash: Hasher,
        rollouts: Arc<crate::rollout::Rollouts>,
    ) -> std::io::Result<Shadowing> {
        let writer = writer::start(store, retention, metrics.store_failures.clone())?;
        let rt = runtime()?;
        Ok(Shadowing {
            rt,
            // Room to keep a connection per copy in flight to a slow target (the default pool
            // keeps 128, and a copy past it would open and close a connection each time).
            connector: Arc::new(Connector::new(Some(
                pingora::connectors::ConnectorOptions::new(POOL),
            ))),
            metrics,
            routes: Mutex::default(),
            writer,
            hash,
            rollouts,
        })
    }

    pub(crate) fn skipped(&self, route: &str, reason: &str) {
        debug_assert!(crate::metrics::SHADOW_SKIP_REASONS.contains(&reason));
        self.metrics
            .skipped
            .with_label_values(&[route, reason])
            .inc();
    }

    /// Runs `f` on `route`'s state (created on first use: only then is its name copied).
    fn with_route<T>(&self, route: &str, f: impl FnOnce(&mut RouteState) -> T) -> T {
        let mut routes = self
            .routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(state) = routes.get_mut(route) {
            return f(state);
        }
        f(routes.entry(route.to_string()).or_default())
    }

    /// A slot for one more copy of `route`, unless `max` are in flight.
    fn permit(&self, route: &str, max: u32) -> Option<Permit> {
        let counter = self.with_route(route, |s| Arc::clone(&s.in_flight));
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(counter))
    }

    /// Starts the copy of a request (`header` is its header as the target should get it) when a
    /// slot is free and its body fits the route's limit; counts the skip otherwise. A known body
    /// goes at once; a coming one is kept as it arrives ([`ShadowCtx::request_chunk`]).
    pub fn copy(
        &self,
        route: &str,
        shadow: &Shadow,
        out: Outgoing,
        body: CopyBody,
    ) -> Option<Box<ShadowCtx>> {
        let Outgoing {
            to,
            to_service,
            header,
            secondary,
        } = out;
        let length = match &body {
            CopyBody::Known(b) => Some(b.len()),
            CopyBody::Coming(n) => *n,
        };
        if length.is_some_and(|n| n > shadow.body_limit) {
            self.skipped(route, "too_large");
            return None;
        }
        let Some(permit) = self.permit(route, shadow.in_flight) else {
            self.skipped(route, "overloaded");
            return None;
        };
        let mut ctx = Box::new(ShadowCtx {
            to,
            to_service,
            sent_headers: header.headers.clone(),
            sent_body: Bytes::new(),
            req: Some(header),
            secondary,
            body: matches!(body, CopyBody::Coming(_)).then(Vec::new),
            limit: shadow.body_limit,
            permit: Some(permit),
            answer: None,
            served: Captured::default(),
            served_too_large: false,
        });
        if let CopyBody::Known(b) = body {
            self.send(&mut ctx, b);
        }
        Some(ctx)
    }

    /// Sends the copy now, with `body`.
    pub fn send(&self, ctx: &mut ShadowCtx, body: Bytes) {
        let (Some(req), Some(permit)) = (ctx.req.take(), ctx.permit.take()) else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        ctx.answer = Some(rx);
        ctx.sent_body = body.clone();
        let (connector, to, limit) = (Arc::clone(&self.connector), Arc::clone(&ctx.to), ctx.limit);
        let secondary = ctx.secondary.take();
        self.rt.spawn(async move {
            // Boxed: an exchange's future is kilobytes, and would be copied at each move.
            let copy = Box::pin(copy::send(&connector, &to, req, body.clone(), limit));
            let answers = match secondary {
                Some((peer, req)) => {
                    let second = Box::pin(copy::send(&connector, &peer, req, body, limit));
                    let (copy, second) = tokio::join!(copy, second);
                    Answers {
                        copy,
                        secondary: Some(second),
                    }
                }
                None => Answers {
                    copy: copy.await,
                    secondary: None,
                },
            };
            drop(permit);
            let _ = tx.send(answers);
        });
    }
}

impl ShadowCtx {
    /// Whether the copy still waits for the request body.
    pub fn waits_for_body(&self) -> bool {
        self.req.is_some() && self.body.is_some()
    }

    /// A piece of the request body: kept for the copy. Returns the whole body once it is
    /// complete, `None` while more is to come or when it went past the limit (then the copy is
    /// dropped: `too_large`).
    pub fn request_chunk(
        &mut self,
        chunk: Option<&Bytes>,
        end: bool,
    ) -> Result<Option<Bytes>, TooLarge> {
        let Some(body) = &mut self.body else {
            return Ok(None);
        };
        if let Some(c) = chunk {
            if body.len() + c.len() > self.limit {
                self.req = None;
                self.permit = None;
                return Err(TooLarge);
            }
            body.extend_from_slice(c);
        }
        Ok(end.then(|| Bytes::from(std::mem::take(body))))
    }

    /// The served answer's status and headers.
    pub fn served_header(&mut self, status: u16, headers: &HeaderMap) {
        self.served.status = status;
        self.served.headers = headers.clone();
    }

    /// A piece of the served answer's body.
    pub fn served_chunk(&mut self, chunk: &[u8]) {
        if self.served_too_large {
            return;
        }
        if self.served.body.len() + chunk.len() > self.limit {
            self.served_too_large = true;
            self.served.body = Vec::new();
            return;
        }
        self.served.body.extend_from_slice(chunk);
    }
}

/// One route's shadow figures for the admin API.
#[derive(Debug, serde::Serialize)]
pub struct RouteSummary {
    pub route: String,
    pub compared: u64,
    pub matched: u64,
    pub mismatched: u64,
    pub errors: u64,
    pub timeouts: u64,
    /// Skips by reason.
    pub skipped: std::collections::BTreeMap<&'static str, u64>,
    /// matched / (matched + mismatched) since start; `None` before the first comparison.
    pub match_rate: Option<f64>,
    /// The same over the last 5 minutes.
    pub match_rate_5m: Option<f64>,
    /// The 10 most frequent difference patterns, with their counts.
    pub top_patterns: Vec<(String, u64)>,
    pub noise: Vec<strangler_shadow::NoiseEntry>,
}

impl Shadowing {
    /// The figures of each of `routes` since start.
    pub fn summary(&self, routes: &[String]) -> Vec<RouteSummary> {
        let m = &self.metrics;
        let count = |route: &str, result: &str| {
            m.compared
                .get_metric_with_label_values(&[route, result])
                .map_or(0, |c| c.get())
        };
        let now = now_secs();
        let states = self
            .routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        routes
            .iter()
            .map(|route| {
                let (matched, mismatched) = (count(route, "match"), count(route, "mismatch"));
                let skipped = crate::metrics::SHADOW_SKIP_REASONS
                    .iter()
                    .map(|r| {
                        let n = m
                            .skipped
                            .get_metric_with_label_values(&[route.as_str(), r])
                            .map_or(0, |c| c.get());
                        (*r, n)
                    })
                    .collect();
                let state = states.get(route);
                let mut top_patterns: Vec<(String, u64)> = state
                    .map(|s| s.labelled.as_slice())
                    .unwrap_or_default()
                    .iter()
                    .map(String::as_str)
                    .chain(["other"])
                    .filter_map(|p| {
                        let n = m
                            .differences
                            .get_metric_with_label_values(&[route.as_str(), p])
                            .map_or(0, |c| c.get());
                        (n > 0).then(|| (p.to_string(), n))
                    })
                    .collect();
                top_patterns.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                top_patterns.truncate(10);
                RouteSummary {
                    route: route.clone(),
                    compared: matched + mismatched,
                    matched,
                    mismatched,
                    errors: count(route, "error"),
                    timeouts: count(route, "timeout"),
                    skipped,
                    match_rate: (matched + mismatched > 0)
                        .then(|| matched as f64 / (matched + mismatched) as f64),
                    match_rate_5m: state.and_then(|s| s.window.ratio(now)),
                    top_patterns,
                    noise: state.map(|s| s.noise.report()).unwrap_or_default(),
                }
            })
            .collect()
    }
}

/// A current-thread runtime on a thread of its own (`strangler-shadow`, at the lowest CPU
/// priority), kept running for the process's life; its handle spawns copies and comparisons.
fn runtime() -> std::io::Result<tokio::runtime::Handle> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name("strangler-shadow".into())
        .spawn(move || {
            lowest_priority();
            rt.block_on(std::future::pending::<()>());
        })?;
    Ok(handle)
}

/// Puts the calling thread last for the CPU (SCHED_BATCH, nice 19): when the proxy is busy, its
/// workers (the clients' requests) go first and copies wait; past the in-flight cap they are
/// skipped, never queued without bound. With idle CPU they run at once.
fn lowest_priority() {
    use thread_priority::ThreadPriority;
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id,
    };
    if let Err(e) = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch),
    ) {
        tracing::warn!(error = ?e, "Cannot lower the shadow thread's CPU priority; copies compete with requests");
    }
}

/// Seconds since the Unix epoch (the store's clock).
fn now_secs() -> u64 {
    u64::try_from(strangler_store::now_ms() / 1000).unwrap_or(0)
}
