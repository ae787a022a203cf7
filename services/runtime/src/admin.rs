//! The admin HTTP server every role runs: `/healthz` (liveness), `/readyz` (readiness),
//! `/metrics` (Prometheus text), `/health` (JSON detail), `POST /drain` (the preStop hook),
//! and `/config` (the effective configuration, secrets redacted).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{Health, Shutdown, telemetry};

#[derive(Clone)]
struct AdminState {
    health: Health,
    shutdown: Shutdown,
    config: Value,
}

/// The admin server, bound and ready to serve.
pub struct AdminServer {
    listener: TcpListener,
    router: Router,
}

impl AdminServer {
    /// Binds the admin address (port 0 picks a free one).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(
        addr: SocketAddr,
        health: Health,
        shutdown: Shutdown,
        config: Value,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let state = AdminState {
            health,
            shutdown,
            config,
        };
        let router = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/health", get(health_report))
            .route("/config", get(config_dump))
            .route("/drain", post(drain))
            .with_state(state);
        Ok(Self { listener, router })
    }

    /// The address actually bound.
    ///
    /// # Errors
    /// When the socket has no local address (never for a bound TCP listener).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` is cancelled. The admin server outlives the roles' drain, so that
    /// `/readyz` reports draining and `/metrics` stays scrapeable until the very end.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn serve(self, stop: CancellationToken) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    }
}

/// Liveness: answering at all proves the runtime is not wedged.
async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if s.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else if s.health.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        telemetry::metrics().render(),
    )
}

async fn health_report(State(s): State<AdminState>) -> Json<Value> {
    Json(s.health.report())
}

async fn config_dump(State(s): State<AdminState>) -> Json<Value> {
    Json(s.config.clone())
}

/// Stops intake and reports not-ready; the process drains and exits as on SIGTERM.
async fn drain(State(s): State<AdminState>) -> (StatusCode, Json<Value>) {
    tracing::info!("POST /drain: draining");
    s.health.set_draining();
    s.shutdown.trigger();
    (StatusCode::ACCEPTED, Json(json!({"status": "draining"})))
}
