//! The gateway role: live cross-exchange spreads to people and programs over HTTP.
//!
//! One feed task reads `MD_SPREADS` (`md.spread.>`) from the bus and offers every point to the
//! WebSocket clients whose subscriptions select it (`fanout`). Each client has its own
//! bounded drop-oldest queue, so a slow client loses its own oldest points (counted) and is
//! disconnected past a limit, and never slows anyone else (`ws`). `GET /` serves a small
//! self-contained dashboard ([`dashboard`]). The protocol is in [`protocol`] and
//! `docs/gateway-websocket.md`.
//!
//! Routes: `GET /` (dashboard), `GET /ws` (WebSocket), `GET /api/symbols` (symbols seen).
//! Metrics: `spreadagg_gateway_clients`, `spreadagg_gateway_client_queue_depth_max`,
//! `spreadagg_gateway_dropped_total`, `spreadagg_gateway_slow_disconnects_total`,
//! `spreadagg_gateway_rejected_total{reason}`, `spreadagg_gateway_points_total`,
//! `spreadagg_gateway_feed_rejected_total{reason}`, `spreadagg_gateway_feed_errors_total`.

pub mod dashboard;
mod fanout;
pub mod protocol;
mod queue;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use spreadagg_bus::Bus;
use spreadagg_runtime::Health;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::fanout::{CloseCause, Registry};

/// How long `run` lets in-flight plain HTTP requests finish after `stop` before it stops
/// waiting for them (WebSocket sessions are closed separately, within about a second).
const HTTP_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The gateway's configuration; each field's comment is its user documentation.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Address of the dashboard, WebSocket and REST endpoints (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Spread points queued per client before its oldest are dropped. 1024 points (about
    /// 450 KB) absorb a burst of a second or more for a client that is briefly behind.
    pub client_queue: usize,
    /// A client that loses this many points without its queue ever running empty in
    /// between is disconnected (Close 1008 "too slow"). The count starts over whenever the
    /// client catches up, so only a client persistently slower than the feed is dropped,
    /// not one with an occasional hiccup.
    pub slow_client_drop_limit: u64,
    /// Concurrent WebSocket clients; further upgrades get HTTP 503.
    pub max_clients: usize,
    /// Distinct subscriptions one client may hold; more get a `too_many_subscriptions` error.
    pub max_subscriptions_per_client: usize,
    /// Largest client-to-server message, in bytes; larger ones close the connection (1009).
    pub max_frame_bytes: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            client_queue: 1024,
            slow_client_drop_limit: 10_000,
            max_clients: 1000,
            max_subscriptions_per_client: 256,
            max_frame_bytes: 4096,
        }
    }
}

impl GatewayConfig {
    /// Checks every limit is usable.
    ///
    /// # Errors
    /// [`GatewayError::Config`] naming the first bad field.
    pub fn validate(&self) -> Result<(), GatewayError> {
        let bad = |field: &str, rule: &str| Err(GatewayError::Config(format!("{field} {rule}")));
        if self.client_queue == 0 {
            return bad("client_queue", "must be at least 1");
        }
        if self.slow_client_drop_limit == 0 {
            return bad("slow_client_drop_limit", "must be at least 1");
        }
        if self.max_clients == 0 || self.max_clients > Semaphore::MAX_PERMITS {
            return bad("max_clients", "must be at least 1 (and below 2^61)");
        }
        if self.max_subscriptions_per_client == 0 {
            return bad("max_subscriptions_per_client", "must be at least 1");
        }
        if self.max_frame_bytes < 128 {
            return bad("max_frame_bytes", "must be at least 128");
        }
        Ok(())
    }
}

/// What can stop the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid gateway configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gateway HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// State shared by every request handler.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) registry: Arc<Registry>,
    pub(crate) config: Arc<GatewayConfig>,
    /// One permit per connected WebSocket client (`max_clients`).
    pub(crate) slots: Arc<Semaphore>,
    /// Owns every session: `run` waits for all of them.
    pub(crate) tracker: TaskTracker,
    /// Cancelled when the gateway stops.
    pub(crate) stop: CancellationToken,
    pub(crate) next_client: Arc<AtomicU64>,
}

/// The gateway, bound and ready to serve.
#[derive(Debug)]
pub struct Gateway {
    listener: TcpListener,
    local_addr: SocketAddr,
    config: GatewayConfig,
}

impl Gateway {
    /// Validates the configuration and binds `config.listen`.
    ///
    /// # Errors
    /// On an invalid configuration or when the address cannot be bound.
    pub async fn bind(config: GatewayConfig) -> Result<Gateway, GatewayError> {
        config.validate()?;
        let bind_err = |source| GatewayError::Bind {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        Ok(Gateway {
            listener,
            local_addr,
            config,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `stop` is cancelled: then stops accepting, closes every client with
    /// Close 1001, joins all tasks and returns (within about two seconds).
    ///
    /// # Errors
    /// When the HTTP server fails; clients are closed and tasks joined first.
    pub async fn run(
        self,
        bus: Bus,
        health: Health,
        stop: CancellationToken,
    ) -> Result<(), GatewayError> {
        // Our own token, so that a server failure stops the feed and sessions too.
        let stop = stop.child_token();
        let tracker = TaskTracker::new();
        let registry = Arc::new(Registry::new(self.config.max_subscriptions_per_client));
        metrics::gauge!("spreadagg_gateway_clients").set(0.0);
        tracker.spawn(fanout::run_feed(
            bus,
            Arc::clone(&registry),
            health.register("gateway.feed"),
            stop.clone(),
        ));
        let state = AppState {
            registry: Arc::clone(&registry),
            slots: Arc::new(Semaphore::new(self.config.max_clients)),
            config: Arc::new(self.config),
            tracker: tracker.clone(),
            stop: stop.clone(),
            next_client: Arc::new(AtomicU64::new(1)),
        };
        let router = Router::new()
            .route("/", get(dashboard::index))
            .route("/api/symbols", get(dashboard::symbols))
            .route("/ws", get(ws::upgrade))
            .with_state(state);
        tracing::info!(addr = %self.local_addr, "gateway listening");

        let graceful = stop.clone();
        let server = axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { graceful.cancelled().await });
        let serve = async {
            let served = tokio::select! {
                served = server => served.map_err(GatewayError::Serve),
                () = async {
                    stop.cancelled().await;
                    tokio::time::sleep(HTTP_DRAIN_TIMEOUT).await;
                } => {
                    tracing::warn!("HTTP requests still open after the drain timeout; not waiting");
                    Ok(())
                }
            };
            stop.cancel();
            served
        };
        // Sessions are closed as soon as stop fires, while plain HTTP requests drain.
        let close_sessions = async {
            stop.cancelled().await;
            registry.close_all(CloseCause::Shutdown);
        };
        let (served, ()) = tokio::join!(serve, close_sessions);
        tracker.close();
        tracker.wait().await;
        tracing::info!("gateway stopped");
        served
    }
}
