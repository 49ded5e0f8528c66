//! Dual-write wiring: starts the relay on the store's runtime (`store_runtime`: a thread of its
//! own, so the proxy's workers never run relay work), and turns a matched exchange into a stored
//! CloudEvent. What an event contains is decided by the rules (`publish`); how it is stored and
//! sent is `strangler-events`.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::Result;
use prometheus::Registry;
use strangler_events::{CloudEvent, Data, NewEvent, Outbox, Relay, Store, StoreError};
use strangler_rules::publish::{EventData, Exchange, Publish};
use strangler_rules::{Diagnostics, Loc, Reporter, RuleSet};
use tracing::{error, warn};

use crate::config::Config;
use crate::store_runtime::StoreRuntime;

pub struct DualWrite {
    pub outbox: Outbox,
    pub metrics: strangler_events::Metrics,
    /// Bytes of `durability: async` events waiting for their outbox write (see
    /// [`DualWrite::enqueue_async`]).
    pending: Arc<tokio::sync::Semaphore>,
    pending_cap: usize,
    /// Set while async events are being turned away (one WARN per episode).
    full: std::sync::atomic::AtomicBool,
    salt: ring::hmac::Key,
    /// Tells the relay to stop (see `stop_relay`).
    stop: tokio::sync::watch::Sender<bool>,
    /// Disconnected when the relay has ended.
    stopped: Mutex<mpsc::Receiver<()>>,
}

impl DualWrite {
    /// Starts the relay on the store's runtime (see `store_runtime`), sending what `store`'s
    /// outbox holds.
    pub fn start(
        cfg: &Config,
        store: &Store,
        runtime: &StoreRuntime,
        registry: &Registry,
    ) -> Result<Arc<DualWrite>> {
        let metrics = strangler_events::Metrics::new(registry)?;
        let salt = match std::env::var(&cfg.redact_salt_env) {
            Ok(s) if !s.is_empty() => s.into_bytes(),
            _ => {
                warn!(env = %cfg.redact_salt_env, "No redaction salt set: hashed values change at every restart");
                ring::rand::generate::<[u8; 32]>(&ring::rand::SystemRandom::new())
                    .map(|k| k.expose().to_vec())
                    .unwrap_or_default()
            }
        };
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (ended, stopped) = mpsc::channel::<()>();
        let outbox = store.outbox();
        // Built when the first event is to be sent.
        let client = strangler_events::kinesis::LazyClient::new(
            cfg.kinesis_region.clone(),
            cfg.kinesis_endpoint.clone(),
        );
        let relay = Relay::new(outbox.clone(), client, metrics.clone(), cfg.relay.clone());
        runtime.spawn(async move {
            relay.run(stop_rx).await;
            // `stop_relay` waits for this.
            drop(ended);
        });
        let pending_cap = cfg.async_buffer.min(tokio::sync::Semaphore::MAX_PERMITS);
        Ok(Arc::new(DualWrite {
            outbox,
            metrics,
            pending: Arc::new(tokio::sync::Semaphore::new(pending_cap)),
            pending_cap,
            full: std::sync::atomic::AtomicBool::new(false),
            salt: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &salt),
            stop,
            stopped: Mutex::new(stopped),
        }))
    }

    /// Stops the relay and waits (blocking, up to `timeout`) until it has settled or abandoned
    /// its calls in flight (at most 5 s): what Kinesis accepted is recorded, the rest stays in
    /// the outbox for the next start. Returns whether it stopped in time.
    pub fn stop_relay(&self, timeout: Duration) -> bool {
        let _ = self.stop.send(true);
        let stopped = self
            .stopped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Nothing is ever sent: the relay ending disconnects the channel.
        stopped.recv_timeout(timeout) != Err(mpsc::RecvTimeoutError::Timeout)
    }

    /// The salted hash of redacted values (`mode: hash`), the same for events and shadow
    /// mismatches.
    pub fn hash(&self, b: &[u8]) -> String {
        hex(ring::hmac::sign(&self.salt, b).as_ref())
    }

    /// The event for one exchange, redacted, ready to store.
    pub fn event(
        &self,
        route: &str,
        publish: &Publish,
        ex: &Exchange<'_>,
        traceparent: Option<&str>,
    ) -> NewEvent {
        let hash = |b: &[u8]| self.hash(b);
        let (ev, partition_key) = build_event(publish, ex, &hash, traceparent);
        NewEvent {
            partition_key: partition_key.unwrap_or_else(|| ev.id.clone()),
            id: ev.id.clone(),
            route: route.to_string(),
            stream: publish.stream.clone(),
            payload: ev.to_bytes(),
        }
    }

    /// Commits an event to the outbox (grouped with concurrent ones; the commit wakes the relay).
    pub async fn enqueue(&self, ev: NewEvent) -> Result<(), StoreError> {
        let (route, stream) = (ev.route.clone(), ev.stream.clone());
        match self.outbox.enqueue(ev).await {
            Ok(()) => {
                self.metrics
                    .enqueued
                    .with_label_values(&[&route, &stream])
                    .inc();
                Ok(())
            }
            Err(e) => {
                self.metrics
                    .failed
                    .with_label_values(&[&stream, "outbox_write"])
                    .inc();
                error!(route = %route, stream = %stream, error = %e, "Event NOT stored: the outbox write failed");
                Err(e)
            }
        }
    }
}

impl DualWrite {
    /// Stores an event in the background (`durability: async`): the answer does not wait. What
    /// waits is bounded by `events.async_buffer` bytes; past it (a stalled store, say) the
    /// event is not stored but counted in `strangler_events_failed_total{reason="outbox_full"}`,
    /// with one WARN until there is room again, instead of piling up tasks and memory.
    pub fn enqueue_async(self: &Arc<Self>, ev: NewEvent) {
        use std::sync::atomic::Ordering;
        let size = u32::try_from(ev.payload.len().clamp(1, self.pending_cap)).unwrap_or(u32::MAX);
        let Ok(permit) = Arc::clone(&self.pending).try_acquire_many_owned(size) else {
            self.metrics
                .failed
                .with_label_values(&[&ev.stream, "outbox_full"])
                .inc();
            if !self.full.swap(true, Ordering::Relaxed) {
                warn!(
                    route = %ev.route,
                    stream = %ev.stream,
                    buffer_bytes = self.pending_cap,
                    "Async events NOT stored: the outbox writes waiting fill events.async_buffer (is the store stalled?); counted as outbox_full until there is room"
                );
            }
            return;
        };
        if self.pending.available_permits() > self.pending_cap / 2
            && self.full.swap(false, Ordering::Relaxed)
        {
            tracing::info!("Async events are stored again");
        }
        let dw = Arc::clone(self);
        tokio::spawn(async move {
            let _ = dw.enqueue(ev).await;
            drop(permit);
        });
    }
}

/// When a route publishes and no AWS region is set anywhere (config, environment, AWS profile;
/// instance metadata is not asked), the located error that `check` and `run` give.
pub fn missing_region(cfg: &Config, rules: &RuleSet) -> Option<Diagnostics> {
    let route = rules.routes().iter().find(|r| r.publish.is_some())?;
    let region = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
        .block_on(strangler_events::kinesis::region(
            cfg.kinesis_region.as_deref(),
        ));
    if region.is_some() {
        return None;
    }
    let mut r = Reporter::new(route.file.to_string());
    r.report(
        Loc {
            line: route.line,
            column: 1,
        },
        "publish",
        format!(
            "route `{}` publishes events, but no AWS region is set: set `kinesis.region` in {}, or AWS_REGION / AWS_DEFAULT_REGION, or a region in the AWS profile",
            route.name,
            cfg.file.display()
        ),
    );
    Some(r.finish())
}

/// The CloudEvent a publishing route emits for one exchange, and the partition key the route
/// names (`None`: the event's id is the key). `hash` is the redaction hash of `mode: hash`.
/// `DualWrite::event` stores it; `strangler explain` shows it.
pub fn build_event<'a>(
    publish: &Publish,
    ex: &Exchange<'a>,
    hash: &dyn Fn(&[u8]) -> String,
    traceparent: Option<&str>,
) -> (CloudEvent<Data<'a>>, Option<String>) {
    let fields = publish.fields(ex, hash);
    let data = match fields.data {
        EventData::Value(v) => Data::Value(v),
        EventData::JsonText(text) => Data::json_text(text),
    };
    let mut ev = CloudEvent::new(publish.source.clone(), publish.ty.clone(), data);
    ev.subject = fields.subject;
    ev.traceparent = traceparent.map(str::to_string);
    (ev, fields.partition_key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
