//! MEXC spot public market data, served the way MEXC documents it (the protobuf API).
//!
//! Docs: <https://mexcdevelop.github.io/apidocs/spot_v3_en/#websocket-market-streams>,
//! `#websocket-limits`, `#exchange-information` and `#24hr-ticker-price-change-statistics`
//! on the same page; field numbers from the public repository `mexcdevelop/websocket-proto`.
//!
//! WebSocket at `/ws`. The client subscribes with
//! `{"method":"SUBSCRIPTION","params":["spot@public.aggre.bookTicker.v3.api.pb@100ms@BTCUSDT",
//! "spot@public.aggre.deals.v3.api.pb@100ms@BTCUSDT"],"id":7}` (also `@10ms@`), answered in
//! JSON text `{"id":7,"code":0,"msg":"<the params, comma-separated>"}`; a request with an
//! unknown topic (or a lower-case symbol) is refused whole with
//! `{"id":7,"code":0,"msg":"Not Subscribed successfully! [<params>].  Reason： Blocked! "}`.
//! `{"method":"PING"}` is answered `{"id":0,"code":0,"msg":"PONG"}`. Pushes are binary
//! protobuf envelopes (book ticker body 315, deals body 314), one per market event: the
//! simulator does not batch events into 10/100 ms windows, it only names the interval the
//! client chose. Limits and deadlines are in [`session`].
//!
//! REST: `GET /api/v3/exchangeInfo` (`symbols[]` with `symbol`, `status` `"1"`, `baseAsset`,
//! `quoteAsset`, ..), `GET /api/v3/ticker/24hr` (an array; prices and volumes as strings,
//! `quoteVolume` in the quote currency), `GET /api/v3/ping` (`{}`) and `GET /api/v3/time`
//! (`{"serverTime":..}`).
//!
//! Choices where MEXC's docs are silent: the echoed `id` is the request's own when it is an
//! unsigned integer (the docs' examples show 0, which is what a request without one gets);
//! the 31st subscription is refused like an unknown topic, with the reason
//! `Exceeded the limit of 30 subscriptions!`; unreadable client messages get no answer.

mod session;
mod wire;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::format::{fixed, float, step};
use crate::market::{Instrument, SlotView, now_us};
use crate::ws::{self, ExchangeCtx};

/// The WebSocket path MEXC documents.
pub(crate) const WS_PATH: &str = "/ws";

/// The MEXC listener's routes.
pub(crate) fn router(ctx: Arc<ExchangeCtx>) -> Router {
    Router::new()
        .route(WS_PATH, get(ws_market))
        .route("/api/v3/exchangeInfo", get(exchange_info))
        .route("/api/v3/ticker/24hr", get(tickers))
        .route("/api/v3/ping", get(ping))
        .route("/api/v3/time", get(time))
        .with_state(ctx)
}

async fn ws_market(State(ctx): State<Arc<ExchangeCtx>>, ws: WebSocketUpgrade) -> Response {
    let state = session::Session::new(ctx.universe.clone(), Instant::now());
    ws::accept(&ctx, ws, state)
}

fn symbol_json(inst: &Instrument) -> Value {
    json!({
        "symbol": inst.concat,
        "status": "1",
        "baseAsset": inst.symbol.base(),
        "baseAssetPrecision": inst.qty_decimals,
        "quoteAsset": inst.symbol.quote(),
        "quotePrecision": inst.price_decimals,
        "quoteAssetPrecision": inst.price_decimals,
        "baseCommissionPrecision": inst.qty_decimals,
        "quoteCommissionPrecision": inst.price_decimals,
        "orderTypes": ["LIMIT", "MARKET", "LIMIT_MAKER"],
        "isSpotTradingAllowed": true,
        "isMarginTradingAllowed": false,
        "quoteAmountPrecision": "1",
        "baseSizePrecision": step(inst.qty_decimals),
        "permissions": ["SPOT"],
        "filters": [],
        "maxQuoteAmount": "2000000",
        "makerCommission": "0",
        "takerCommission": "0.0005",
        "quoteAmountPrecisionMarket": "1",
        "maxQuoteAmountMarket": "100000",
        "fullName": inst.symbol.base(),
        "tradeSideType": "1",
    })
}

async fn exchange_info(State(ctx): State<Arc<ExchangeCtx>>) -> Response {
    let symbols: Vec<Value> = ctx.universe.instruments.iter().map(symbol_json).collect();
    Json(json!({
        "timezone": "CST",
        "serverTime": now_us() / 1_000,
        "rateLimits": [],
        "exchangeFilters": [],
        "symbols": symbols,
    }))
    .into_response()
}

fn ticker(inst: &Instrument, view: &SlotView, now_ms: i64) -> Value {
    let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
    let (q, s) = (view.quote.book, view.quote.stats);
    let change = s.last - s.open;
    // MEXC writes the change as a fraction, not a percentage.
    #[allow(clippy::cast_precision_loss)]
    let fraction = if s.open > 0 {
        change as f64 / s.open as f64
    } else {
        0.0
    };
    json!({
        "symbol": inst.concat,
        "priceChange": fixed(change, pd),
        "priceChangePercent": float(fraction, 8),
        "prevClosePrice": fixed(s.open, pd),
        "lastPrice": fixed(s.last, pd),
        "bidPrice": fixed(q.bid, pd),
        "bidQty": fixed(q.bid_qty, qd),
        "askPrice": fixed(q.ask, pd),
        "askQty": fixed(q.ask_qty, qd),
        "openPrice": fixed(s.open, pd),
        "highPrice": fixed(s.high, pd),
        "lowPrice": fixed(s.low, pd),
        "volume": float(s.base_volume, qd),
        "quoteVolume": float(s.quote_volume, 2),
        "openTime": now_ms - 86_400_000,
        "closeTime": now_ms,
        "count": s.trade_count,
    })
}

async fn tickers(State(ctx): State<Arc<ExchangeCtx>>) -> Response {
    let now_ms = now_us() / 1_000;
    let views = ctx.board.exchange(ctx.index);
    let data: Vec<Value> = ctx
        .universe
        .instruments
        .iter()
        .zip(&views)
        .map(|(inst, view)| ticker(inst, view, now_ms))
        .collect();
    Json(Value::Array(data)).into_response()
}

async fn ping() -> Response {
    Json(json!({})).into_response()
}

async fn time() -> Response {
    Json(json!({"serverTime": now_us() / 1_000})).into_response()
}
