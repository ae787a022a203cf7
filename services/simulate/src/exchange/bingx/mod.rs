//! BingX spot public market data, served the way BingX documents it.
//!
//! Docs: <https://bingx-api.github.io/docs/#/en-us/spot/socket/> (endpoint, gzip, heartbeat,
//! subscribe, error codes), <https://bingx-api.github.io/docs/#/en-us/spot/socket/market.html>
//! (`<SYMBOL>@trade`, `<SYMBOL>@bookTicker`) and
//! <https://bingx-api.github.io/docs/#/en-us/spot/market-api.html> (REST); where they are
//! silent, frames follow what ccxt captured from the live service (see the ingest adapter's
//! module docs for what was uncertain).
//!
//! WebSocket at `/market`: every server frame is gzip-compressed binary. The client subscribes
//! one `dataType` per request, `{"id":"id1","reqType":"sub","dataType":"BTC-USDT@bookTicker"}`
//! (`reqType` may be left out), answered `{"code":0,"id":"id1","msg":"SUCCESS","timestamp":..}`
//! or refused `{"code":100400,"id":"id1","msg":"..","timestamp":..}` (several `dataType`s in
//! one request are refused too). The server pings `{"ping":"<id>","time":".."}` every 5 s and
//! closes the connection when a ping has gone unanswered by `{"pong":"<id>",..}` for 10 s
//! (see [`session`]). BingX documents no per-connection topic cap or request rate, so none is
//! enforced.
//!
//! REST: `GET /openApi/spot/v1/common/symbols` (`{"code":0,"msg":"","debugMsg":"",
//! "data":{"symbols":[{"symbol":"BTC-USDT","status":1,..}]}}`) and
//! `GET /openApi/spot/v1/ticker/24hr` (`data[]` with `volume`, base, and `quoteVolume`,
//! quote), which is refused with code 100400 without a `timestamp` query parameter, as BingX
//! does although the endpoint is public.

mod session;
mod wire;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::market::{Instrument, now_us};
use crate::ws::{self, ExchangeCtx};

/// The WebSocket path BingX documents.
pub(crate) const WS_PATH: &str = "/market";

/// The BingX listener's routes.
pub(crate) fn router(ctx: Arc<ExchangeCtx>) -> Router {
    Router::new()
        .route(WS_PATH, get(ws_market))
        .route("/openApi/spot/v1/common/symbols", get(symbols))
        .route("/openApi/spot/v1/ticker/24hr", get(tickers))
        .with_state(ctx)
}

async fn ws_market(State(ctx): State<Arc<ExchangeCtx>>, ws: WebSocketUpgrade) -> Response {
    ws::accept(&ctx, ws, session::Session::new(ctx.universe.clone()))
}

/// A JSON number with exactly the instrument's decimals.
fn number(units: i64, decimals: u32) -> Value {
    crate::format::trimmed(units, decimals)
        .parse::<serde_json::Number>()
        .map_or(Value::Null, Value::Number)
}

fn step(decimals: u32) -> Value {
    number(1, decimals)
}

fn symbol_json(inst: &Instrument) -> Value {
    json!({
        "symbol": inst.symbol.as_str(),
        "minQty": step(inst.qty_decimals),
        "maxQty": 1_000_000,
        "minNotional": 5,
        "maxNotional": 1_000_000,
        "status": 1,
        "tickSize": step(inst.price_decimals),
        "stepSize": step(inst.qty_decimals),
        "apiStateSell": true,
        "apiStateBuy": true,
        "timeOnline": 1_640_995_200_000_i64,
    })
}

async fn symbols(State(ctx): State<Arc<ExchangeCtx>>) -> Response {
    let list: Vec<Value> = ctx.universe.instruments.iter().map(symbol_json).collect();
    Json(json!({"code": 0, "msg": "", "debugMsg": "", "data": {"symbols": list}})).into_response()
}

async fn tickers(
    State(ctx): State<Arc<ExchangeCtx>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let now_ms = now_us() / 1_000;
    if query
        .get("timestamp")
        .and_then(|t| t.parse::<i64>().ok())
        .is_none()
    {
        return Json(json!({
            "code": session::ILLEGAL_ARGUMENT,
            "msg": "timestamp is required",
            "timestamp": now_ms,
        }))
        .into_response();
    }
    let views = ctx.board.exchange(ctx.index);
    let data: Vec<Value> = ctx
        .universe
        .instruments
        .iter()
        .zip(&views)
        .map(|(inst, view)| {
            let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
            let (q, s) = (view.quote.book, view.quote.stats);
            json!({
                "symbol": inst.symbol.as_str(),
                "openPrice": number(s.open, pd),
                "highPrice": number(s.high, pd),
                "lowPrice": number(s.low, pd),
                "lastPrice": number(s.last, pd),
                "volume": s.base_volume,
                "quoteVolume": s.quote_volume,
                "openTime": now_ms - 86_400_000,
                "closeTime": now_ms,
                "bidPrice": number(q.bid, pd),
                "bidQty": number(q.bid_qty, qd),
                "askPrice": number(q.ask, pd),
                "askQty": number(q.ask_qty, qd),
            })
        })
        .collect();
    Json(json!({"code": 0, "msg": "", "timestamp": now_ms, "data": data})).into_response()
}
