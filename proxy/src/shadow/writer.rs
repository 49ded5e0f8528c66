//! Mismatches on their way to the store: a bounded queue and a thread of its own that writes
//! them in batches and prunes the table (10,000 per route, 7 days) every minute. A full queue or
//! a failed write is counted (`strangler_shadow_store_failures_total`) and logged, never felt by
//! a client.

use std::time::{Duration, Instant};

use prometheus::IntCounter;
use strangler_store::{NewMismatch, Store};
use tokio::sync::mpsc;
use tracing::warn;

/// Mismatches waiting at most; past it new ones are dropped (counted).
const QUEUE: usize = 1024;
/// The most mismatches in one write.
const BATCH: usize = 64;
/// Kept per route, and for how long.
const PER_ROUTE: i64 = 10_000;
const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

pub(super) fn start(
    store: Store,
    failures: IntCounter,
) -> std::io::Result<mpsc::Sender<NewMismatch>> {
    let (tx, mut rx) = mpsc::channel::<NewMismatch>(QUEUE);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("strangler-shadow".into())
        .spawn(move || {
            rt.block_on(async move {
                let m = store.mismatches();
                let mut batch = Vec::with_capacity(BATCH);
                let mut last_prune = Instant::now();
                loop {
                    let got = tokio::time::timeout(
                        Duration::from_secs(60),
                        rx.recv_many(&mut batch, BATCH),
                    )
                    .await;
                    if matches!(got, Ok(0)) {
                        return; // every sender is gone
                    }
                    if !batch.is_empty() {
                        if let Err(e) = m.insert(&batch).await {
                            failures.inc_by(batch.len() as u64);
                            warn!(error = %e, mismatches = batch.len(), "Shadow mismatches not stored");
                        }
                        batch.clear();
                    }
                    if last_prune.elapsed() >= Duration::from_secs(60) {
                        last_prune = Instant::now();
                        if let Err(e) = m.prune(PER_ROUTE, MAX_AGE).await {
                            warn!(error = %e, "Pruning shadow mismatches failed; will retry");
                        }
                    }
                }
            });
        })?;
    Ok(tx)
}
