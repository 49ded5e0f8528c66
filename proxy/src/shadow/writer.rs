//! Mismatches on their way to the store: a bounded queue and a thread of its own that writes
//! them in batches and prunes the table by the config's retention (default: 10,000 per route,
//! 7 days, every minute). A full queue or
//! a failed write is counted (`strangler_shadow_store_failures_total`) and logged, never felt by
//! a client.

use std::time::Instant;

use prometheus::IntCounter;
use strangler_store::{NewMismatch, Store};
use tokio::sync::mpsc;
use tracing::warn;

use crate::config::Retention;

/// Mismatches waiting at most; past it new ones are dropped (counted).
const QUEUE: usize = 1024;
/// The most mismatches in one write.
const BATCH: usize = 64;
pub(super) fn start(
    store: Store,
    retention: Retention,
    failures: IntCounter,
) -> std::io::Result<mpsc::Sender<NewMismatch>> {
    let per_route = i64::try_from(retention.per_route).unwrap_or(i64::MAX);
    let (tx, mut rx) = mpsc::channel::<NewMismatch>(QUEUE);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("strangler-mismatches".into())
        .spawn(move || {
            rt.block_on(async move {
                let m = store.mismatches();
                let mut batch = Vec::with_capacity(BATCH);
                let mut last_prune = Instant::now();
                loop {
                    let got =
                        tokio::time::timeout(retention.every, rx.recv_many(&mut batch, BATCH))
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
                    if last_prune.elapsed() >= retention.every {
                        last_prune = Instant::now();
                        if let Err(e) = m.prune(per_route, retention.max_age).await {
                            warn!(error = %e, "Pruning shadow mismatches failed; will retry");
                        }
                    }
                }
            });
        })?;
    Ok(tx)
}
