//! The fault admin API, served on every exchange's own listener:
//!
//! * `POST /sim/faults` with a [`Fault`] as JSON (`{"fault":"stall","duration_ms":5000}`):
//!   `200 {"injected":"stall"}`, or `400 {"error":".."}` for a body that is not a known fault
//!   or has parameters out of range, `413` for a body over [`MAX_BODY_BYTES`];
//! * `GET /sim/faults`: `200 {"exchange":"okx","active":[{"fault":"stall","remaining_ms":4200}]}`;
//! * `DELETE /sim/faults`: ends every windowed and counted fault, `200 {"cleared":true}`.
//!
//! A refused request counts in `spreadagg_sim_admin_rejected_total{exchange,reason}`; the
//! body is read with a hard cap, so a client cannot make the process buffer more.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;
use tokio::time::Instant;

use super::{Fault, Faults};

/// The admin path on every exchange's listener.
pub const PATH: &str = "/sim/faults";
/// Largest request body accepted (a fault is a few dozen bytes).
pub const MAX_BODY_BYTES: usize = 4 * 1024;

/// The admin routes for one exchange.
pub(crate) fn router(faults: Arc<Faults>) -> Router {
    Router::new()
        .route(PATH, get(list).post(inject).delete(clear))
        .with_state(faults)
}

fn rejected(faults: &Faults, status: StatusCode, reason: &'static str, msg: String) -> Response {
    metrics::counter!("spreadagg_sim_admin_rejected_total", "exchange" => faults.exchange.as_str(), "reason" => reason)
        .increment(1);
    tracing::info!(
        exchange = faults.exchange.as_str(),
        reason,
        "fault request refused"
    );
    (status, Json(json!({"error": msg}))).into_response()
}

async fn inject(State(faults): State<Arc<Faults>>, body: Body) -> Response {
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return rejected(
            &faults,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body over {MAX_BODY_BYTES} bytes"),
        );
    };
    let fault: Fault = match serde_json::from_slice(&bytes) {
        Ok(f) => f,
        Err(e) => {
            return rejected(
                &faults,
                StatusCode::BAD_REQUEST,
                "bad_request",
                e.to_string(),
            );
        }
    };
    match faults.inject(fault) {
        Ok(()) => Json(json!({"injected": fault.label()})).into_response(),
        Err(e) => rejected(
            &faults,
            StatusCode::BAD_REQUEST,
            "out_of_range",
            e.to_string(),
        ),
    }
}

async fn list(State(faults): State<Arc<Faults>>) -> Response {
    Json(json!({
        "exchange": faults.exchange.as_str(),
        "active": faults.active(Instant::now()),
    }))
    .into_response()
}

async fn clear(State(faults): State<Arc<Faults>>) -> Response {
    faults.clear();
    Json(json!({"cleared": true})).into_response()
}
