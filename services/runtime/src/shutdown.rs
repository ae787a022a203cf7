//! Graceful shutdown. One `Shutdown` per process: SIGTERM, SIGINT or `POST /drain` cancel its
//! token; every role watches the token, stops taking work, finishes what it holds, flushes and
//! acknowledges, then returns. Each role owns and joins its own tasks; the binary bounds the
//! whole drain with a deadline.

use tokio_util::sync::CancellationToken;

/// The process-wide shutdown trigger.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
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
