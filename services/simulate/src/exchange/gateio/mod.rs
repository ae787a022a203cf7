//! Gate.io (Gate) spot API v4 public market data, served the way Gate documents it.
//!
//! Docs: <https://www.gate.io/docs/developers/apiv4/ws/en/> (WebSocket) and
//! <https://www.gate.io/docs/developers/apiv4/en/#list-all-currency-pairs-supported>,
//! <https://www.gate.io/docs/developers/apiv4/en/#retrieve-ticker-information> (REST).
//!
//! WebSocket at `/ws/v4/`: a request is `{"time":<s>,"id":<n>?,"channel":"spot.book_ticker",
//! "event":"subscribe"|"unsubscribe","payload":["BTC_USDT",..]}`; `time` is required and must be
//! within 60 s of the server's clock, `id` (an integer) is optional and echoed in the answer
//! `{"time":..,"time_ms":..,"id":7,"conn_id":"..","channel":..,"event":"subscribe",
//! "result":{"status":"success"}}`. A refused request is answered with Gate's error object and
//! a null result, `"error":{"code":2,"message":"unknown currency pair FOO_USDT"}` (codes: 1
//! invalid request body format, 2 invalid argument, 3 server side error); a request naming any
//! unknown pair is refused whole, as is an unknown channel (code 2, "unknown channel ..": the
//! message text is ours). `{"time":..,"channel":"spot.ping"}` is answered
//! `{"time":..,"time_ms":..,"conn_id":..,"channel":"spot.pong","event":"","result":null}`.
//! Updates: `spot.book_ticker` (`result.{t,u,s,b,B,a,A}`, on every book change) and
//! `spot.trades` (`result.{id,create_time,create_time_ms,side,currency_pair,amount,price,..}`,
//! `create_time_ms` a string with fractional milliseconds).
//!
//! What Gate does not document and the simulator chooses: no per-request or per-connection
//! subscription cap and no inbound rate limit are enforced (none is documented); a connection
//! on which the client has sent nothing (no request, no `spot.ping`, no WebSocket ping) for
//! [`IDLE_TIMEOUT`] (30 s) is closed with code 1000 "idle timeout" (Gate documents no idle
//! timeout; its demo client pings every 10 s); no notice precedes a close (none is documented).
//!
//! REST: `GET /api/v4/spot/currency_pairs` (array of `{"id":"BTC_USDT","base":"BTC",
//! "quote":"USDT","trade_status":"tradable",..}`), `GET /api/v4/spot/currency_pairs/{pair}` and
//! `GET /api/v4/spot/tickers[?currency_pair=..]` (array with `currency_pair`, `quote_volume`,
//! ..); errors are `{"label":"INVALID_CURRENCY_PAIR","message":".."}` with HTTP 400.

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
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::format::{float_trimmed, step, trimmed};
use crate::market::{Instrument, Quote};
use crate::ws::{self, ExchangeCtx};

/// The WebSocket path Gate documents (`wss://api.gateio.ws/ws/v4/`).
pub(crate) const WS_PATH: &str = "/ws/v4/";
/// A connection whose client has sent nothing for this long is closed (our choice; see above).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The close for an idle connection.
const IDLE_CLOSE: (u16, &str) = (1000, "idle timeout");
/// Largest gap between a request's `time` and the server's clock (documented: 60 s).
const MAX_TIME_SKEW_S: i64 = 60;
/// How much of a bad request is echoed back in an error message.
const MAX_ECHO: usize = 128;

/// The Gate listener's routes.
pub(crate) fn router(ctx: Arc<ExchangeCtx>) -> Router {
    Router::new()
        .route(WS_PATH, get(ws_v4))
        .route("/ws/v4", get(ws_v4))
        .route("/api/v4/spot/currency_pairs", get(currency_pairs))
        .route("/api/v4/spot/currency_pairs/{pair}", get(currency_pair))
        .route("/api/v4/spot/tickers", get(tickers))
        .with_state(ctx)
}

async fn ws_v4(State(ctx): State<Arc<ExchangeCtx>>, ws: WebSocketUpgrade) -> Response {
    ws::accept(&ctx, ws, session::Session::new(ctx.universe.clone()))
}

/// Gate's REST error: `{"label":"INVALID_CURRENCY_PAIR","message":".."}`.
fn rest_error(status: StatusCode, label: &str, message: &str) -> Response {
    (status, Json(json!({"label": label, "message": message}))).into_response()
}

fn no_such_pair(name: &str) -> Response {
    let name: String = name.chars().take(MAX_ECHO).collect();
    rest_error(
        StatusCode::BAD_REQUEST,
        "INVALID_CURRENCY_PAIR",
        &format!("Invalid currency pair {name}"),
    )
}

fn lookup(ctx: &ExchangeCtx, name: &str) -> Option<usize> {
    if name.contains('-') {
        return None;
    }
    ctx.universe.by_canonical(&name.replacen('_', "-", 1))
}

fn pair_json(inst: &Instrument) -> Value {
    let name = wire::pair(inst);
    json!({
        "id": name,
        "base": inst.symbol.base(),
        "base_name": inst.symbol.base(),
        "quote": inst.symbol.quote(),
        "quote_name": inst.symbol.quote(),
        "fee": "0.2",
        "min_base_amount": step(inst.qty_decimals),
        "min_quote_amount": "1",
        "max_base_amount": "",
        "max_quote_amount": "5000000",
        "amount_precision": inst.qty_decimals,
        "precision": inst.price_decimals,
        "trade_status": "tradable",
        "sell_start": 1_516_378_650,
        "buy_start": 1_516_378_650,
        "delisting_time": 0,
        "type": "normal",
        "trade_url": format!("https://www.gate.io/trade/{name}"),
        "st_tag": false,
    })
}

async fn currency_pairs(State(ctx): State<Arc<ExchangeCtx>>) -> Response {
    let data: Vec<Value> = ctx.universe.instruments.iter().map(pair_json).collect();
    Json(data).into_response()
}

async fn currency_pair(State(ctx): State<Arc<ExchangeCtx>>, Path(name): Path<String>) -> Response {
    match lookup(&ctx, &name) {
        Some(i) => Json(pair_json(&ctx.universe.instruments[i])).into_response(),
        None => no_such_pair(&name),
    }
}

fn ticker_json(inst: &Instrument, q: &Quote) -> Value {
    let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
    let (b, s) = (q.book, q.stats);
    let change = if s.open > 0 {
        (s.last - s.open) as f64 / s.open as f64 * 100.0
    } else {
        0.0
    };
    let change = format!("{change:.2}");
    json!({
        "currency_pair": wire::pair(inst),
        "last": trimmed(s.last, pd),
        "lowest_ask": trimmed(b.ask, pd),
        "lowest_size": trimmed(b.ask_qty, qd),
        "highest_bid": trimmed(b.bid, pd),
        "highest_size": trimmed(b.bid_qty, qd),
        "change_percentage": change,
        "change_utc0": change,
        "change_utc8": change,
        "base_volume": float_trimmed(s.base_volume, qd),
        "quote_volume": float_trimmed(s.quote_volume, pd),
        "high_24h": trimmed(s.high, pd),
        "low_24h": trimmed(s.low, pd),
    })
}

async fn tickers(
    State(ctx): State<Arc<ExchangeCtx>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(name) = q.get("currency_pair").filter(|n| !n.is_empty()) {
        let Some(i) = lookup(&ctx, name) else {
            return no_such_pair(name);
        };
        return match ctx.board.get(ctx.index, i) {
            Some(view) => {
                Json(vec![ticker_json(&ctx.universe.instruments[i], &view.quote)]).into_response()
            }
            None => no_such_pair(name),
        };
    }
    let views = ctx.board.exchange(ctx.index);
    let data: Vec<Value> = ctx
        .universe
        .instruments
        .iter()
        .zip(&views)
        .map(|(inst, view)| ticker_json(inst, &view.quote))
        .collect();
    Json(data).into_response()
}
