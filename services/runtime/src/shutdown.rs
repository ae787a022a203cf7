//! Graceful shutdown. One `Shutdown` per process: SIGTERM, SIGINT or `POST /drain` cancel its
//! token; every role watches the token, stops taking work, finishes what it holds, flushes and
//! acknowledges, then returns. Tasks are spawned on its tracker, so none is forgotten: the
//! process waits for all of them before it exits.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The process-wide shutdown trigger and the set of tasks it owns.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// The token roles watch; cancelled once when shutdown starts.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Starts shutdown (idempotent).
    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Spawns a task the process will wait for.
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(fut)
    }

    /// Waits until every spawned task has finished.
    pub async fn wait_tasks(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Triggers shutdown on SIGTERM or SIGINT. Runs until one arrives or shutdown starts
    /// otherwise.
    pub async fn watch_signals(&self) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                tracing::error!(
                    "cannot install signal handlers; only /drain can stop this process gracefully"
                );
                self.token.cancelled().await;
                return;
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: draining"),
                _ = int.recv() => tracing::info!("SIGINT: draining"),
                () = self.token.cancelled() => return,
            }
        }
        #[cfg(not(unix))]
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: draining"),
                () = self.token.cancelled() => return,
            }
        }
        self.trigger();
    }
}
