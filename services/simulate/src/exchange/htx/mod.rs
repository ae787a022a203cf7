//! HTX (formerly Huobi) spot public market data, served the way HTX documents it.
//!
//! Docs: <https://huobiapi.github.io/docs/spot/v1/en/#websocket-market-data> and
//! <https://huobiapi.github.io/docs/spot/v1/en/#get-all-supported-trading-symbol-v1>.
//!
//! WebSocket at `/ws`: every server frame is gzip-compressed binary. The client subscribes one
//! topic per request, `{"sub":"market.btcusdt.bbo","id":"id1"}` (also
//! `market.<sym>.trade.detail`), answered `{"id":"id1","status":"ok","subbed":..,"ts":..}` or
//! `{"id":"id1","status":"error","err-code":"bad-request","err-msg":"invalid topic ..","ts":..}`.
//! The server pings `{"ping":<n>}` every 5 s and closes the connection when a ping has gone
//! unanswered by `{"pong":<n>}` for 10 s (two pings). Topics per connection and requests per
//! second are capped (see [`session`]).
//!
//! REST: `GET /v1/common/symbols` (`{"status":"ok","data":[{"symbol":"btcusdt",
//! "base-currency":"btc","quote-currency":"usdt","state":"online",..}]}`) and
//! `GET /market/tickers` (`data[]` with `amount`, 24 h base volume, and `vol`, 24 h quote
//! volume, prices as JSON numbers).

mod session;
mod wire;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::market::{Instrument, now_us};
use crate::ws::{self, ExchangeCtx};

/// The WebSocket path HTX documents.
pub(crate) const WS_PATH: &str = "/ws";

/// The HTX listener's routes.
pub(crate) fn router(ctx: Arc<ExchangeCtx>) -> Router {
    Router::new()
        .route(WS_PATH, get(ws_market))
        .route("/v1/common/symbols", get(symbols))
        .route("/market/tickers", get(tickers))
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

fn symbol_json(inst: &Instrument) -> Value {
    json!({
        "base-currency": inst.symbol.base().to_ascii_lowercase(),
        "quote-currency": inst.symbol.quote().to_ascii_lowercase(),
        "price-precision": inst.price_decimals,
        "amount-precision": inst.qty_decimals,
        "symbol-partition": "main",
        "symbol": inst.stream,
        "state": "online",
        "value-precision": 8,
        "api-trading": "enabled",
    })
}

async fn symbols(State(ctx): State<Arc<ExchangeCtx>>) -> Response {
    let data: Vec<Value> = ctx.universe.instruments.iter().map(symbol_json).collect();
    Json(json!({"status": "ok", "data": data})).into_response()
}

async fn tickers(State(ctx): State<Arc<ExchangeCtx>>) -> Response {
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
                "symbol": inst.stream,
                "open": number(s.open, pd),
                "high": number(s.high, pd),
                "low": number(s.low, pd),
                "close": number(s.last, pd),
                "amount": s.base_volume,
                "vol": s.quote_volume,
                "count": s.trade_count,
                "bid": number(q.bid, pd),
                "bidSize": number(q.bid_qty, qd),
                "ask": number(q.ask, pd),
                "askSize": number(q.ask_qty, qd),
            })
        })
        .collect();
    Json(json!({"status": "ok", "ts": now_us() / 1_000, "data": data})).into_response()
}
