//! The gateway role: live market data to people and programs.
//!
//! Four feed tasks read `MD_SPREADS`, `MD_TICKS`, `MD_TRADES` and `MD_SIGNALS` from the bus
//! into the [`hub`], which keeps the latest values and offers every event to the clients whose
//! subscriptions select it, each through its own bounded drop-oldest queue: a slow client
//! loses its own oldest events (counted) and is disconnected past a limit, and never slows
//! anyone else. Surfaces: `GET /ws` ([`ws::protocol`], docs/gateway-websocket.md), the
//! prototype's `GET /ws/realtime` and `GET /ws/realtime_charts` ([`ws::legacy`]), `GET /`
//! (the dashboard), the REST API under `/api` ([`rest`]) with `GET /openapi.json` and its
//! browsable page `GET /docs`.
//!
//! Metrics: `spreadagg_gateway_clients`, `spreadagg_gateway_client_queue_depth_max`,
//! `spreadagg_gateway_dropped_total`, `spreadagg_gateway_slow_disconnects_total`,
//! `spreadagg_gateway_rejected_total{reason}`, `spreadagg_gateway_points_total` (spreads),
//! `spreadagg_gateway_messages_total{channel}`,
//! `spreadagg_gateway_feed_rejected_total{channel,reason}`,
//! `spreadagg_gateway_feed_errors_total{channel}`,
//! `spreadagg_gateway_chart_requests_total{outcome}`.

mod auth;
mod charts;
mod config;
pub mod dashboard;
mod grpc;
mod hub;
mod json;
mod legacy;
mod limits;
mod pair;
mod rest;
mod routes;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use spreadagg_bus::Bus;
use spreadagg_runtime::Health;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::config::GatewayConfig;
/// The gRPC API's generated types and client (`proto/spreadagg/gateway/v1/gateway.proto`).
pub use crate::grpc::pb as grpc_api;
pub use crate::pair::Pair;

use crate::auth::{Origins, Tokens};
use crate::charts::Charts;
use crate::hub::event::Channel;
use crate::hub::queue::{CloseCause, QueueLimits};
use crate::hub::{Hub, HubLimits};
use crate::limits::Admission;

/// How long `run` lets in-flight plain HTTP requests finish after `stop` before it stops
/// waiting for them (WebSocket sessions are closed separately, within about a second).
const HTTP_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest `run` waits for sessions and feeds after stop.
const TASKS_JOIN_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the clients' gauges are refreshed.
const REPORT_EVERY: Duration = Duration::from_secs(1);

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
    pub(crate) hub: Arc<Hub>,
    pub(crate) config: Arc<GatewayConfig>,
    pub(crate) admission: Arc<Admission>,
    pub(crate) charts: Charts,
    pub(crate) queue_limits: QueueLimits,
    /// Owns every session: `run` waits for all of them.
    pub(crate) tracker: TaskTracker,
    /// Cancelled when the gateway stops.
    pub(crate) stop: CancellationToken,
    pub(crate) started: Instant,
    pub(crate) symbol_warmup: Duration,
    /// The prototype's `AllSymbolInfo` greeting, reused for a second (`ws::legacy`).
    pub(crate) legacy_hello: Arc<std::sync::Mutex<Option<(Instant, axum::extract::ws::Utf8Bytes)>>>,
}

/// The gateway, bound and ready to serve.
#[derive(Debug)]
pub struct Gateway {
    listener: TcpListener,
    local_addr: SocketAddr,
    grpc: Option<TcpListener>,
    grpc_addr: Option<SocketAddr>,
    tokens: Tokens,
    config: GatewayConfig,
}

impl Gateway {
    /// Validates the configuration, reads the tokens file, then binds `config.listen` (and
    /// `config.grpc_listen`).
    ///
    /// # Errors
    /// On an invalid configuration or tokens file (before any port is bound), or when an
    /// address cannot be bound.
    pub async fn bind(config: GatewayConfig) -> Result<Gateway, GatewayError> {
        config.validate()?;
        let tokens = match &config.auth_tokens_file {
            Some(path) => Tokens::load(path)?,
            None => Tokens::default(),
        };
        let bind = |addr: SocketAddr| async move {
            let bind_err = |source| GatewayError::Bind { addr, source };
            let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
            let local = listener.local_addr().map_err(bind_err)?;
            Ok::<_, GatewayError>((listener, local))
        };
        let (listener, local_addr) = bind(config.listen).await?;
        let (grpc, grpc_addr) = match config.grpc_listen {
            Some(addr) => {
                let (l, a) = bind(addr).await?;
                (Some(l), Some(a))
            }
            None => (None, None),
        };
        Ok(Gateway {
            listener,
            local_addr,
            grpc,
            grpc_addr,
            tokens,
            config,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The gRPC address actually bound, when one was configured.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    /// Serves until `stop` is cancelled: then stops accepting, closes every client with
    /// Close 1012 (reconnect), joins all tasks and returns (within about two seconds).
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
        let config = self.config;
        let hub = Arc::new(Hub::new(&HubLimits {
            max_subscriptions: config.max_subscriptions_per_client,
            max_symbols: config.max_symbols,
        }));
        metrics::gauge!("spreadagg_gateway_clients").set(0.0);
        for channel in Channel::ALL {
            tracker.spawn(hub::feed::run_feed(
                bus.clone(),
                Arc::clone(&hub),
                channel,
                health.register(format!("gateway.feed.{}", channel.as_str())),
                stop.clone(),
            ));
        }
        let origins = Origins::new(&config.allowed_origins);
        let state = AppState {
            hub: Arc::clone(&hub),
            admission: Admission::new(config.max_clients, config.max_connections_per_ip),
            charts: Charts::new(bus, Duration::from_millis(config.chart_timeout_ms)),
            queue_limits: QueueLimits {
                capacity: config.client_queue,
                drop_limit: config.slow_client_drop_limit,
                max_lag: Duration::from_millis(config.max_client_lag_ms),
            },
            tracker: tracker.clone(),
            stop: stop.clone(),
            started: Instant::now(),
            symbol_warmup: Duration::from_secs(config.symbol_warmup_s),
            legacy_hello: Arc::default(),
            config: Arc::new(config),
        };
        tracker.spawn(report_clients(
            state.clone(),
            health.register("gateway.clients"),
        ));
        let router = routes::router(state.clone(), self.tokens.clone(), origins)?;
        let grpc = self.grpc.map(|listener| {
            grpc::serve(listener, state.clone(), self.tokens.clone(), stop.clone())
        });
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
            hub.registry.close_all(CloseCause::Drain);
        };
        let grpc = async {
            let served = match grpc {
                Some(serving) => serving.await,
                None => Ok(()),
            };
            if served.is_err() {
                // A failed gRPC server stops the gateway rather than leaving it half there.
                stop.cancel();
            }
            served
        };
        let (served, (), grpc_served) = tokio::join!(serve, close_sessions, grpc);
        let served = served.and(grpc_served);
        tracker.close();
        // Every session ends within about a second of the closes above (bounded sends and
        // closes); should one not, say so rather than hang the drain.
        if tokio::time::timeout(TASKS_JOIN_TIMEOUT, tracker.wait())
            .await
            .is_err()
        {
            tracing::error!(
                tasks = tracker.len(),
                "gateway tasks still running after the drain; returning without them"
            );
        }
        tracing::info!("gateway stopped");
        served
    }
}

/// Refreshes the clients' gauges and the `gateway.clients` health detail (always ready: the
/// clients never make the gateway unready).
async fn report_clients(app: AppState, component: spreadagg_runtime::Component) {
    let mut every = tokio::time::interval(REPORT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = app.stop.cancelled() => break,
            _ = every.tick() => {}
        }
        let depth = app.hub.registry.max_queue_depth();
        metrics::gauge!("spreadagg_gateway_client_queue_depth_max").set(depth as f64);
        let stats = &app.hub.registry.stats;
        component.set(
            true,
            json!({
                "clients": app.hub.registry.client_count(),
                "connected": app.admission.connected(),
                "queue_depth_max": depth,
                "dropped": stats.dropped.load(std::sync::atomic::Ordering::Relaxed),
                "slow_disconnects": stats.slow_disconnects.load(std::sync::atomic::Ordering::Relaxed),
                "symbols": app.hub.latest.symbol_count(),
                "symbols_not_kept": app.hub.latest.not_kept.load(std::sync::atomic::Ordering::Relaxed),
            }),
        );
    }
    component.set(false, json!({"state": "stopped"}));
}
