//! Binance spot public market data, served the way Binance documents it.
//!
//! WebSocket streams (<https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams>):
//! raw streams at `/ws` and `/ws/<stream>[/<stream>..]`, combined streams at
//! `/stream?streams=<a>/<b>` (payloads wrapped as `{"stream":..,"data":..}`), `timeUnit=MICROSECOND`
//! for microsecond times; live `SUBSCRIBE` / `UNSUBSCRIBE` / `LIST_SUBSCRIPTIONS` /
//! `SET_PROPERTY` / `GET_PROPERTY` requests with Binance's error objects; `<symbol>@bookTicker`
//! and `<symbol>@trade` streams. Any other well-formed stream name is accepted and stays silent,
//! as on Binance. Limits: 1024 streams per connection, 5 incoming messages per second (pings,
//! pongs and requests count; one more and the connection is closed), a server Ping every
//! `binance_ping_interval_s` that must be answered with a Pong echoing its payload within a
//! minute, a 24 h connection lifetime, and a `serverShutdown` event before the simulator stops.
//!
//! REST (<https://developers.binance.com/docs/binance-spot-api-docs/rest-api>): `/api/v3/ping`,
//! `/api/v3/time`, `/api/v3/exchangeInfo`, `/api/v3/ticker/24hr`, `/api/v3/ticker/bookTicker`,
//! with `symbol=` / `symbols=[..]` and Binance's `{"code":-1121,"msg":"Invalid symbol."}` errors.
//!
//! Layout: this file has the routes and the connection parameters, [`session`] the protocol
//! state machine and its serve loop, [`wire`] the payload shapes, [`rest`] the REST API.

mod rest;
mod session;
#[cfg(test)]
mod tests;
mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::ws::{self, ExchangeCtx};
use rest::{book_ticker, exchange_info, rest_ping, rest_time, ticker_24hr};
use session::Session;

/// Binance spot writes every price and quantity with 8 decimals.
const DECIMALS: u32 = 8;
/// Streams one connection may listen to.
pub(crate) const MAX_STREAMS: usize = 1024;
/// Incoming messages (requests, pings, pongs) allowed per second; one more disconnects.
pub(crate) const MAX_INBOUND_PER_SECOND: usize = 5;
/// A Ping must be answered by a Pong with its payload within this long.
pub(crate) const PONG_TIMEOUT: Duration = Duration::from_secs(60);
/// Binance closes every connection at the 24 h mark.
pub(crate) const MAX_CONNECTION_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// Binance's server ping period unless configured otherwise.
const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(20);
/// Unanswered pings remembered for matching Pongs (the oldest one times the connection out).
const MAX_UNANSWERED_PINGS: usize = 64;
/// Longest stream name accepted; real ones are far shorter.
const MAX_STREAM_NAME: usize = 100;
/// Longest string request id Binance accepts.
const MAX_ID_LEN: usize = 36;

const WANT_BOOK: u8 = 1;
const WANT_TRADE: u8 = 2;

/// The Binance listener's routes.
pub(crate) fn router(ctx: Arc<ExchangeCtx>) -> Router {
    Router::new()
        .route("/ws", get(ws_raw))
        .route("/ws/", get(ws_raw))
        .route("/ws/{*streams}", get(ws_raw_streams))
        .route("/stream", get(ws_combined))
        .route("/api/v3/ping", get(rest_ping))
        .route("/api/v3/time", get(rest_time))
        .route("/api/v3/exchangeInfo", get(exchange_info))
        .route("/api/v3/ticker/24hr", get(ticker_24hr))
        .route("/api/v3/ticker/bookTicker", get(book_ticker))
        .with_state(ctx)
}

// ---------------------------------------------------------------------------------------------
// WebSocket

type Params = Query<HashMap<String, String>>;

async fn ws_raw(
    State(ctx): State<Arc<ExchangeCtx>>,
    Query(q): Params,
    ws: WebSocketUpgrade,
) -> Response {
    open(ctx, ws, &q, &[], false)
}

async fn ws_raw_streams(
    State(ctx): State<Arc<ExchangeCtx>>,
    Path(streams): Path<String>,
    Query(q): Params,
    ws: WebSocketUpgrade,
) -> Response {
    let streams: Vec<&str> = streams.split('/').filter(|s| !s.is_empty()).collect();
    open(ctx, ws, &q, &streams, false)
}

async fn ws_combined(
    State(ctx): State<Arc<ExchangeCtx>>,
    Query(q): Params,
    ws: WebSocketUpgrade,
) -> Response {
    let streams: Vec<&str> = q
        .get("streams")
        .map(|s| s.split('/').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    open(ctx, ws, &q, &streams, true)
}

fn open(
    ctx: Arc<ExchangeCtx>,
    ws: WebSocketUpgrade,
    query: &HashMap<String, String>,
    streams: &[&str],
    combined: bool,
) -> Response {
    let micros = matches!(
        query.get("timeUnit").map(String::as_str),
        Some("MICROSECOND" | "microsecond")
    );
    let mut session = Session::new(ctx.universe.clone(), combined, micros)
        .with_ping_interval(ctx.binance_ping_interval);
    if let Err(msg) = session.subscribe(streams.iter().copied()) {
        return (StatusCode::BAD_REQUEST, msg).into_response();
    }
    ws::accept(&ctx, ws, session)
}
