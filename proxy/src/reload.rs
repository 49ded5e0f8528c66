//! The live rule set and everything that replaces it: file watching (debounced), SIGHUP and the
//! admin API all call [`LiveRules::reload`], which builds the new set off the request path and
//! swaps it in with one atomic store. In-flight requests keep the `Arc` they started with; an
//! invalid edit is logged with its locations, counted, kept as the last error, and the last good
//! set keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use strangler_rules::{Diagnostics, Environment, RuleSet, Target};
use tracing::{error, info, warn};

use crate::metrics::{Metrics, RouteStats, SideStats};

/// A rule set plus the metric handles of each of its routes, resolved once per reload so the
/// request path never looks up labels.
pub struct Loaded {
    pub rules: RuleSet,
    pub generation: u64,
    /// Per route (same order as `rules.routes()`).
    pub route_stats: Vec<RouteStats>,
    /// Requests no route matched.
    pub default_stats: SideStats,
}

/// The outcome of the last reload attempt, for the admin API.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadStatus {
    pub ok: bool,
    pub trigger: String,
    pub at_unix_ms: u128,
    pub generation: u64,
    pub routes: usize,
    pub errors: Vec<String>,
}

pub struct LiveRules {
    current: ArcSwap<Loaded>,
    path: PathBuf,
    ctx: Environment,
    metrics: Metrics,
    last: Mutex<ReloadStatus>,
    /// Serialises reloads so two triggers never race to store older rules last.
    reload_lock: Mutex<()>,
}

/// Where the default route's stats are labelled.
pub const DEFAULT_ROUTE: &str = "default";
/// The `route` label of requests that failed before a route was chosen.
pub const UNROUTED: &str = "unrouted";

impl LiveRules {
    /// Loads the rules for the first time; fails with every diagnostic if they are invalid.
    pub fn load(
        path: &Path,
        services: Vec<String>,
        metrics: Metrics,
    ) -> Result<Arc<LiveRules>, Diagnostics> {
        let started = Instant::now();
        let ctx = Environment {
            services: Some(services),
        };
        let rules = build(path, &ctx)?;
        let live = LiveRules {
            current: ArcSwap::new(Arc::new(attach_stats(RuleSet::default(), 0, &metrics))),
            path: path.to_path_buf(),
            ctx,
            metrics,
            last: Mutex::new(ReloadStatus::default()),
            reload_lock: Mutex::new(()),
        };
        live.install(rules, "start", started);
        Ok(Arc::new(live))
    }

    /// The rule set now serving. Cheap: one atomic load and an `Arc` clone.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.load_full()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn last_status(&self) -> ReloadStatus {
        self.last.lock().unwrap().clone()
    }

    /// Re-reads every rule file; swaps the new set in, or keeps the old one and reports why.
    pub fn reload(&self, trigger: &str) -> Result<ReloadStatus, ReloadStatus> {
        let _serial = self.reload_lock.lock().unwrap();
        let started = Instant::now();
        let diags = match build(&self.path, &self.ctx) {
            Ok(rules) => return Ok(self.install(rules, trigger, started)),
            Err(diags) => diags,
        };
        let current = self.current.load();
        self.metrics.reloads.with_label_values(&["rejected"]).inc();
        for d in &diags.0 {
            error!(trigger, error = %d, "Rule reload rejected");
        }
        warn!(
            trigger,
            errors = diags.len(),
            generation = current.generation,
            "Invalid rules: the last good set keeps serving"
        );
        let status = ReloadStatus {
            ok: false,
            trigger: trigger.into(),
            at_unix_ms: now_ms(),
            generation: current.generation,
            routes: current.rules.len(),
            errors: diags.0.iter().map(ToString::to_string).collect(),
        };
        *self.last.lock().unwrap() = status.clone();
        give_back_freed_memory();
        Err(status)
    }

    /// Swaps a valid rule set in (the next generation), publishes its gauges, counts and logs it.
    fn install(&self, rules: RuleSet, trigger: &str, started: Instant) -> ReloadStatus {
        let generation = self.current.load().generation + 1;
        let loaded = Arc::new(attach_stats(rules, generation, &self.metrics));
        publish_gauges(&loaded, &self.metrics);
        drop_gone_series(&self.current.load(), &loaded, &self.metrics);
        let routes = loaded.rules.len();
        self.current.store(loaded);
        self.metrics.reloads.with_label_values(&["ok"]).inc();
        let took = started.elapsed();
        self.metrics.reload_duration.observe(took.as_secs_f64());
        info!(
            trigger,
            generation,
            routes,
            took_ms = took.as_secs_f64() * 1e3,
            "Rules loaded"
        );
        let status = ReloadStatus {
            ok: true,
            trigger: trigger.into(),
            at_unix_ms: now_ms(),
            generation,
            routes,
            errors: Vec::new(),
        };
        *self.last.lock().unwrap() = status.clone();
        give_back_freed_memory();
        status
    }

    /// Watches the rules path and reloads after edits settle (`debounce` without further events).
    /// Watches the folder (or the file's folder), so editors that save by rename are seen too.
    pub fn watch(self: &Arc<Self>, debounce: Duration) -> notify::Result<()> {
        use notify::{RecursiveMode, Watcher};
        let (tx, rx) = std::sync::mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev
                && !ev.kind.is_access()
            {
                let _ = tx.send(ev.paths);
            }
        })?;
        let dir = if self.path.is_dir() {
            self.path.clone()
        } else {
            self.path
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        };
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        let live = Arc::clone(self);
        let only_file = (!self.path.is_dir())
            .then(|| self.path.file_name().map(ToOwned::to_owned))
            .flatten();
        std::thread::Builder::new()
            .name("rules-watch".into())
            .spawn(move || {
                let _watcher = watcher; // dropped (and stopped) with the thread
                let relevant = |paths: &[PathBuf]| match &only_file {
                    Some(name) => paths
                        .iter()
                        .any(|p| p.file_name() == Some(name.as_os_str())),
                    // Any change in a rules folder: Kubernetes ConfigMap mounts swap a `..data`
                    // symlink rather than touching the *.yaml names.
                    None => !paths.is_empty(),
                };
                while let Ok(paths) = rx.recv() {
                    if !relevant(&paths) {
                        continue;
                    }
                    // Debounce: wait until no event has arrived for `debounce`.
                    while rx.recv_timeout(debounce).is_ok() {}
                    let _ = live.reload("file change");
                }
            })?;
        Ok(())
    }
}

fn build(path: &Path, ctx: &Environment) -> Result<RuleSet, Diagnostics> {
    strangler_rules::load(path, ctx).map(|(rules, _)| rules)
}

fn attach_stats(rules: RuleSet, generation: u64, m: &Metrics) -> Loaded {
    let route_stats = rules
        .routes()
        .iter()
        .map(|r| {
            let service = match &r.target {
                Target::Service(s) => s.service.as_str(),
                Target::Legacy => strangler_rules::LEGACY,
            };
            RouteStats {
                legacy: SideStats::new(m, &r.name, strangler_rules::LEGACY),
                service: SideStats::new(m, &r.name, service),
            }
        })
        .collect();
    Loaded {
        default_stats: SideStats::new(m, DEFAULT_ROUTE, strangler_rules::LEGACY),
        rules,
        generation,
        route_stats,
    }
}

/// The (route, target) pairs a rule set's metrics are labelled with: each route's legacy side and
/// its service side.
fn series(loaded: &Loaded) -> std::collections::HashSet<(&str, &str)> {
    loaded
        .rules
        .routes()
        .iter()
        .flat_map(|r| {
            let service = match &r.target {
                Target::Service(s) => s.service.as_str(),
                Target::Legacy => strangler_rules::LEGACY,
            };
            [
                (r.name.as_str(), strangler_rules::LEGACY),
                (r.name.as_str(), service),
            ]
        })
        .collect()
}

/// Drops the metric series of routes (and route → service pairs) that `new` no longer has.
/// Requests still running on the old set count into detached series: a few lost increments.
fn drop_gone_series(old: &Loaded, new: &Loaded, m: &Metrics) {
    let kept = series(new);
    let kept_routes: std::collections::HashSet<&str> = kept.iter().map(|(r, _)| *r).collect();
    for (route, target) in series(old).difference(&kept) {
        m.drop_route_series(route, target, !kept_routes.contains(route));
    }
}

fn publish_gauges(loaded: &Loaded, m: &Metrics) {
    m.routes.set(loaded.rules.len() as i64);
    m.rules_generation.set(loaded.generation as i64);
    m.route_weight.reset();
    for r in loaded.rules.routes() {
        let w = match &r.target {
            Target::Service(s) => f64::from(s.weight_bp) / 100.0,
            Target::Legacy => 0.0,
        };
        m.route_weight.with_label_values(&[&r.name]).set(w);
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// A load's garbage (the parsed YAML, the rule set it replaced: tens of MB for 10,000 routes) is
/// freed by now, but mimalloc (the binary's allocator) keeps freed pages until this thread
/// allocates again, and a loading thread then sits idle: a proxy with 10,000 routes held ~11 MB
/// more than it used at idle and ~25 MB more after reloads (`bench/routes.sh`). `mi_collect`
/// hands them back to the OS. It runs after a reload's duration is taken; a load is rare.
#[allow(unsafe_code)]
fn give_back_freed_memory() {
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any time; with
    // another global allocator (the library's tests) it finds nothing to collect.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
