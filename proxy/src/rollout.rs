//! Gated rollouts in the proxy. The request path reads the weight in force for each context
//! ([`Rollouts::weight`]: the stored rollout state, or the monolith for everything while the
//! kill switch is on) and records what each context's requests did ([`Rollouts::record`]).
//! In the background every replica writes its figures to the store and picks up the states
//! there ([`sync`]); one replica at a time (a store lease) runs the decisions ([`controller`]).
//! Commands from people go through [`commands`]. The decisions themselves are
//! `strangler-rollout`'s, pure.

pub mod commands;
pub mod controller;
pub mod sync;
mod webhook;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use strangler_rollout::{Evidence, State};
use strangler_rules::Route;
use strangler_store::Store;

use crate::metrics::RolloutMetrics;

/// What every replica applies: each rolled-out context's weight, and the kill switch.
#[derive(Debug, Default)]
pub struct Overlay {
    /// Contexts with a rollout plan, by name: their stored state.
    pub states: HashMap<String, State>,
    pub kill_switch: bool,
}

/// `host-pid-startms`: tells replicas (and restarts) apart in the evidence table.
fn replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        strangler_store::now_ms()
    )
}

/// The rollout side of the proxy, shared by the request path, the admin API and the background
/// tasks.
pub struct Rollouts {
    pub(crate) store: Store,
    overlay: ArcSwap<Overlay>,
    /// This replica's figures per context since they were last written.
    window: Mutex<HashMap<String, Evidence>>,
    /// Names this replica in the evidence table.
    pub(crate) replica: String,
    pub(crate) metrics: RolloutMetrics,
    /// The store failed at the last sync (its warning was logged once).
    store_failing: std::sync::atomic::AtomicBool,
    /// Whether the stored states and the kill switch have been read once. Until then this
    /// replica is not ready and serves no route that may go to a new service (see `known`).
    known: std::sync::atomic::AtomicBool,
    known_tx: tokio::sync::watch::Sender<bool>,
}

/// How long a request that may go to a new service waits for a replica's first read of the
/// rollout states before it is refused (503); the first read takes milliseconds.
pub const FIRST_READ_WAIT: Duration = Duration::from_secs(5);

/// How often replicas write their figures and read the states (a new weight is in force on
/// every replica within twice this).
pub const SYNC_EVERY: Duration = Duration::from_millis(500);

impl Rollouts {
    pub fn new(store: Store, metrics: RolloutMetrics) -> Arc<Rollouts> {
        Arc::new(Rollouts {
            store,
            overlay: ArcSwap::default(),
            window: Mutex::default(),
            replica: replica_name(),
            metrics,
            store_failing: std::sync::atomic::AtomicBool::new(false),
            known: std::sync::atomic::AtomicBool::new(false),
            known_tx: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Whether this replica has read the stored rollout states and the kill switch at least
    /// once: before that, `weight` knows neither (a context paused at 50 % would look like 0 %).
    pub fn known(&self) -> bool {
        self.known.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits (at most `limit`) for the first read; returns whether it happened.
    pub async fn wait_known(&self, limit: Duration) -> bool {
        if self.known() {
            return true;
        }
        let mut rx = self.known_tx.subscribe();
        matches!(
            tokio::time::timeout(limit, rx.wait_for(|k| *k)).await,
            Ok(Ok(_))
        )
    }

    /// The share of `route`'s traffic to its new service now, in basis points: 0 while the kill
    /// switch is on; a rolled-out context's stored weight (0 until it has one); else the rule's.
    pub fn weight(&self, route: &Route) -> u16 {
        let overlay = self.overlay.load();
        if overlay.kill_switch {
            return 0;
        }
        match route.context().and_then(|c| overlay.states.get(c)) {
            Some(s) => s.weight_bp,
            None => route.weight_bp(),
        }
    }

    /// Whether the kill switch is on.
    pub fn killed(&self) -> bool {
        self.overlay.load().kill_switch
    }

    pub(crate) fn overlay(&self) -> arc_swap::Guard<Arc<Overlay>> {
        self.overlay.load()
    }

    /// The stored states and the kill switch were read (`sync`).
    pub(crate) fn mark_known(&self) {
        if !self.known.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.known_tx.send_replace(true);
        }
    }

    /// Records one request of a rolled-out context: the side that served it, its status (0 when
    /// none was sent) and how long the upstream took.
    pub fn record(&self, context: &str, service: bool, status: u16, took: Duration) {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let e = match w.get_mut(context) {
            Some(e) => e,
            None => w.entry(context.to_string()).or_default(),
        };
        let side = if service {
            &mut e.service
        } else {
            &mut e.legacy
        };
        side.requests += 1;
        if status >= 500 || status == 0 {
            side.errors += 1;
        }
        side.latency
            .record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records one shadow comparison of a rolled-out context's route.
    pub fn record_shadow(&self, context: &str, matched: bool) {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let e = match w.get_mut(context) {
            Some(e) => e,
            None => w.entry(context.to_string()).or_default(),
        };
        e.shadow_compared += 1;
        e.shadow_matched += u64::from(matched);
    }

    /// Whether `context` is rolled out (its figures are worth recording).
    pub fn tracks(&self, context: &str) -> bool {
        self.overlay.load().states.contains_key(context)
    }

    /// Takes the figures gathered since the last call.
    pub(crate) fn take_window(&self) -> HashMap<String, Evidence> {
        std::mem::take(&mut *self.window.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts figures back (their write failed): the next write carries them.
    pub(crate) fn restore_window(&self, figures: HashMap<String, Evidence>) {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        for (c, e) in figures {
            w.entry(c).or_default().merge(&e);
        }
    }
}
