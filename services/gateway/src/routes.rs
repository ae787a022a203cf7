//! The HTTP routes and the layers in front of them: which need a token, which check the
//! browser's Origin, and the bounds on REST (concurrency, time) — tower and tower-http layers.

use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router, middleware};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{BoxError, ServiceBuilder};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::{self, Origins, Tokens};
use crate::{AppState, GatewayError, dashboard, rest, ws};

/// REST requests served at once; more are refused with 503 at once rather than queued.
const REST_CONCURRENCY: usize = 64;
/// A REST request taking longer than this is answered with 504.
const REST_TIMEOUT: Duration = Duration::from_secs(10);

/// Every HTTP route of the gateway.
///
/// # Errors
/// When the OpenAPI document cannot be written (a bug in the handlers' descriptions).
pub(crate) fn router(
    state: AppState,
    tokens: Tokens,
    origins: Origins,
) -> Result<Router, GatewayError> {
    let (api, openapi) = rest::router().split_for_parts();
    let openapi = rest::describe(openapi)
        .to_json()
        .map_err(|e| GatewayError::Config(format!("cannot write the OpenAPI document: {e}")))?;

    // Static pages and their assets: open, they hold no data (they fetch it with the token).
    let pages = Router::new()
        .route("/", get(dashboard::index))
        .route("/docs", get(dashboard::docs))
        .route("/assets/{name}", get(dashboard::asset));

    // WebSockets: the token, and the Origin (browsers apply no CORS to WebSockets).
    let sockets = Router::new()
        .route("/ws", get(ws::session::upgrade))
        .route("/ws/realtime", get(ws::legacy::realtime))
        .route("/ws/realtime_charts", get(ws::legacy::realtime_charts))
        .route_layer(middleware::from_fn_with_state(
            origins.clone(),
            auth::require_origin,
        ))
        .route_layer(middleware::from_fn_with_state(
            tokens.clone(),
            auth::require_token,
        ));

    // REST: the token, bounded concurrency and time, CORS for the allowed origins.
    let rest = api
        .route(
            "/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], openapi) }),
        )
        .route_layer(middleware::from_fn_with_state(tokens, auth::require_token))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(overloaded))
                .load_shed()
                // One semaphore for the whole API: axum applies a layer to each route and
                // method separately, so a plain concurrency limit would allow 64 per route.
                .layer(GlobalConcurrencyLimitLayer::new(REST_CONCURRENCY))
                .timeout(REST_TIMEOUT),
        )
        .layer(cors(&origins));

    Ok(Router::new()
        .merge(pages)
        .merge(sockets)
        .merge(rest)
        .with_state(state))
}

/// CORS answers for the allowed origins (none: same-origin only, no CORS headers).
fn cors(origins: &Origins) -> CorsLayer {
    let list = origins.list();
    let allow = if list.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        // Checked at start (config validation), so every entry is a valid header value.
        AllowOrigin::list(list.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET])
        .allow_headers([header::AUTHORIZATION])
        .max_age(Duration::from_secs(600))
}

/// A REST request refused by the limits: 503 when at the concurrency cap, 504 past the time.
async fn overloaded(e: BoxError) -> impl IntoResponse {
    let (status, code, message) = if e.is::<tower::timeout::error::Elapsed>() {
        (
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the request took too long",
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many REST requests at once; retry",
        )
    };
    metrics::counter!("spreadagg_gateway_rejected_total", "reason" => code).increment(1);
    (
        status,
        Json(serde_json::json!({"code": code, "message": message})),
    )
}
