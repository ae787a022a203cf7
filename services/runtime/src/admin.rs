//! The admin HTTP server every role runs: `/healthz` (liveness), `/readyz` (readiness),
//! `/metrics` (Prometheus text), `/health` (JSON detail), `POST /drain` (the preStop hook),
//! and `/config` (the effective configuration, secrets redacted).
//!
//! `/healthz`, `/readyz`, `/metrics` and `/health` are open (kubelet and Prometheus scrape them).
//! `POST /drain` and `/config` answer loopback callers only (the preStop hook runs in the pod),
//! 403 to others, while no [`AdminToken`] is configured. Once one is, every caller, loopback
//! included, must present it as `Authorization: Bearer` (401 otherwise): a service-mesh sidecar
//! delivers remote requests from loopback, so the peer address proves nothing then (`spreadagg
//! drain` in the pod reads the same token). Refusals are counted in
//! `spreadagg_admin_refused_total{path}`.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
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
    token: Option<AdminToken>,
}

/// The shared secret that lets a non-loopback caller use `POST /drain` and `/config`.
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    /// A token; `None` when it is empty after trimming (an empty Secret is a mistake, not an
    /// open door).
    pub fn new(secret: &str) -> Option<Self> {
        let t = secret.trim();
        (!t.is_empty()).then(|| Self(t.to_owned()))
    }

    /// The secret itself, for clients such as `spreadagg drain`.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Compares in time that depends only on the lengths, so a remote caller cannot find the
    /// token byte by byte by timing refusals. (Nine lines do not justify a dependency.)
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(***)")
    }
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
        token: Option<AdminToken>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let state = AdminState {
            health,
            shutdown,
            config,
            token,
        };
        let router = router(state);
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
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    }
}

fn router(state: AdminState) -> Router {
    let guarded = Router::new()
        .route("/config", get(config_dump))
        .route("/drain", post(drain))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            local_or_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/health", get(health_report))
        .merge(guarded)
        .with_state(state)
}

/// Lets loopback callers through, and others only with the configured token.
async fn local_or_token(
    State(s): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let refuse = |status: StatusCode, why: &'static str| {
        metrics::counter!("spreadagg_admin_refused_total", "path" => path.clone()).increment(1);
        tracing::warn!(path = %path, peer = %peer.ip(), reason = why, "admin request refused");
        (status, Json(json!({"error": why}))).into_response()
    };
    let Some(token) = &s.token else {
        if peer.ip().to_canonical().is_loopback() {
            return next.run(request).await;
        }
        return refuse(
            StatusCode::FORBIDDEN,
            "loopback only: no admin token is configured",
        );
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(p) if token.matches(p.trim()) => next.run(request).await,
        _ => refuse(StatusCode::UNAUTHORIZED, "a valid bearer token is required"),
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::extract::connect_info::MockConnectInfo;
    use tower::ServiceExt;

    use super::*;

    fn app(token: Option<&str>, peer: &str) -> (Router, Shutdown) {
        let shutdown = Shutdown::new();
        let state = AdminState {
            health: Health::new(),
            shutdown: shutdown.clone(),
            config: json!({"k": "v"}),
            token: token.and_then(AdminToken::new),
        };
        let peer: SocketAddr = peer.parse().expect("address");
        (router(state).layer(MockConnectInfo(peer)), shutdown)
    }

    async fn call(app: Router, method: &str, path: &str, bearer: Option<&str>) -> StatusCode {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(b) = bearer {
            request = request.header("authorization", format!("Bearer {b}"));
        }
        app.oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("infallible")
            .status()
    }

    #[tokio::test]
    async fn a_remote_drain_is_refused_without_a_configured_token() {
        let (a, shutdown) = app(None, "10.1.2.3:5555");
        assert_eq!(
            call(a.clone(), "POST", "/drain", None).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            call(a.clone(), "POST", "/drain", Some("guess")).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            call(a.clone(), "GET", "/config", None).await,
            StatusCode::FORBIDDEN
        );
        assert!(
            !shutdown.token().is_cancelled(),
            "a refused drain drains nothing"
        );
        // The probes and the scrape stay open to the cluster.
        assert_eq!(
            call(a.clone(), "GET", "/healthz", None).await,
            StatusCode::OK
        );
        assert_eq!(
            call(a.clone(), "GET", "/metrics", None).await,
            StatusCode::OK
        );
        assert_eq!(
            call(a, "GET", "/readyz", None).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn a_remote_drain_needs_the_configured_token() {
        let (a, shutdown) = app(Some("s3cret\n"), "[2001:db8::7]:5555");
        assert_eq!(
            call(a.clone(), "POST", "/drain", None).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call(a.clone(), "POST", "/drain", Some("s3cre")).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call(a.clone(), "POST", "/drain", Some("s3cret!")).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call(a.clone(), "GET", "/config", Some("s3cret")).await,
            StatusCode::OK
        );
        assert!(!shutdown.token().is_cancelled());
        assert_eq!(
            call(a, "POST", "/drain", Some("s3cret")).await,
            StatusCode::ACCEPTED
        );
        assert!(shutdown.token().is_cancelled(), "the drain started");
    }

    #[tokio::test]
    async fn loopback_callers_need_no_token_while_none_is_configured() {
        for peer in ["127.0.0.1:1", "[::1]:1", "[::ffff:127.0.0.1]:1"] {
            let (a, shutdown) = app(None, peer);
            assert_eq!(
                call(a.clone(), "GET", "/config", None).await,
                StatusCode::OK,
                "{peer}"
            );
            assert_eq!(
                call(a, "POST", "/drain", None).await,
                StatusCode::ACCEPTED,
                "{peer}"
            );
            assert!(shutdown.token().is_cancelled(), "{peer}");
        }
    }

    #[tokio::test]
    async fn with_a_token_configured_loopback_needs_it_too() {
        // A sidecar proxy (Istio, Linkerd) delivers remote requests from 127.0.0.1 or 127.0.0.6.
        for peer in ["127.0.0.1:1", "127.0.0.6:15006", "[::ffff:127.0.0.1]:1"] {
            let (a, shutdown) = app(Some("s3cret"), peer);
            assert_eq!(
                call(a.clone(), "GET", "/config", None).await,
                StatusCode::UNAUTHORIZED,
                "{peer}"
            );
            assert_eq!(
                call(a.clone(), "POST", "/drain", None).await,
                StatusCode::UNAUTHORIZED,
                "{peer}"
            );
            assert!(!shutdown.token().is_cancelled(), "{peer}");
            assert_eq!(
                call(a, "POST", "/drain", Some("s3cret")).await,
                StatusCode::ACCEPTED,
                "{peer}"
            );
            assert!(shutdown.token().is_cancelled(), "{peer}");
        }
    }

    #[test]
    fn an_empty_token_is_no_token() {
        assert!(AdminToken::new(" \n").is_none());
        assert!(AdminToken::new("x").is_some_and(|t| t.matches("x") && !t.matches("y")));
        assert_eq!(
            format!("{:?}", AdminToken::new("x")),
            "Some(AdminToken(***))"
        );
    }
}
