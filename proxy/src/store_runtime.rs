//! The runtime that drives the store: one thread, `strangler-events`, with a current-thread
//! tokio runtime. The store is connected on it (`serve::run`, once), so its connections' sockets,
//! the PostgreSQL pool's upkeep and the lease heartbeats belong to this runtime's I/O driver,
//! which the thread keeps turning for the life of the process. The relay and its Kinesis calls
//! run here too (`DualWrite::start`): the proxy's workers never run store upkeep or relay work.
//! Every other component (workers, the admin API, the rollout tasks, the shadow thread) holds a
//! clone of the one `Store` and awaits its calls from its own runtime.

use std::future::Future;
use std::sync::mpsc;

use anyhow::{Context as _, Result, anyhow};
use tokio::runtime::Handle;

pub struct StoreRuntime {
    handle: Handle,
}

impl StoreRuntime {
    /// Starts the thread; it runs until the process ends.
    pub fn start() -> Result<StoreRuntime> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("strangler-events".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => {
                        let _ = tx.send(Ok(rt.handle().clone()));
                        // Drives every task spawned on the handle, for good.
                        rt.block_on(std::future::pending::<()>());
                    }
                    Err(e) => {
                        let _ = tx.send(Err(anyhow!("events runtime: {e}")));
                    }
                }
            })?;
        let handle = rx.recv().context("events runtime did not start")??;
        Ok(StoreRuntime { handle })
    }

    /// Runs `f` on this runtime and waits for it (from a thread outside any runtime: start-up).
    pub fn block_on<F>(&self, f: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().context("events runtime stopped")
    }

    /// Runs `f` on this runtime in the background.
    pub fn spawn<F>(&self, f: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(f);
    }
}
