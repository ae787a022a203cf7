//! Coinbase Advanced Trade public market data, served the way Coinbase documents it.
//!
//! Docs: <https://docs.cdp.coinbase.com/advanced-trade/docs/ws-overview>,
//! <https://docs.cdp.coinbase.com/advanced-trade/docs/ws-channels>,
//! <https://docs.cdp.coinbase.com/coinbase-app/advanced-trade-apis/websocket/websocket-rate-limits>
//! and <https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/rest-api/public/list-public-products>.
//!
//! WebSocket at `/` (Coinbase's endpoint is the bare host): see [`session`] for the protocol
//! (5 s to subscribe, one channel per message, `subscriptions` replies, heartbeats, `l2_data`
//! snapshot and updates synthesized around the model's top of book, `market_trades`, and a
//! `ticker` that moves only on trades, so that its staleness can be measured against level2).
//!
//! REST: `GET /api/v3/brokerage/market/products` (`product_type=SPOT` or none lists every
//! simulated product; `FUTURE` lists none; any other value is refused with Coinbase's error
//! body shape `{"error":"INVALID_ARGUMENT","error_details":"..","message":".."}` and HTTP 400).

pub(crate) mod session;
#[cfg(test)]
mod tests;
pub(crate) mod wire;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::format::{float, step, trimmed};
use crate::market::{Instrument, SlotView};
use crate::ws::{self, ExchangeCtx};

/// The WebSocket path: Coinbase's endpoint is the bare host.
pub(crate) const WS_PATH: &str = "/";

/// The Coinbase listener's routes.
pub(crate) fn router(ctx: Arc<ExchangeCtx>) -> Router {
    Router::new()
        .route(WS_PATH, get(ws_market))
        .route("/api/v3/brokerage/market/products", get(products))
        .with_state(ctx)
}

async fn ws_market(State(ctx): State<Arc<ExchangeCtx>>, ws: WebSocketUpgrade) -> Response {
    let session = session::Session::new(ctx.universe.clone(), ctx.board.clone(), ctx.index);
    ws::accept(&ctx, ws, session)
}

/// One product as the public product list shows it.
pub(crate) fn product_json(inst: &Instrument, view: &SlotView) -> Value {
    let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
    let s = view.quote.stats;
    let (base, quote) = (inst.symbol.base(), inst.symbol.quote());
    let mid = (view.quote.book.bid + view.quote.book.ask) / 2;
    json!({
        "product_id": inst.symbol.as_str(),
        "price": trimmed(s.last, pd),
        "price_percentage_change_24h": "0",
        "volume_24h": float(s.base_volume, qd),
        "volume_percentage_change_24h": "0",
        "base_increment": step(qd),
        "quote_increment": step(pd),
        "quote_min_size": "1",
        "quote_max_size": "10000000",
        "base_min_size": step(qd),
        "base_max_size": "100000",
        "base_name": base,
        "quote_name": quote,
        "watched": false,
        "is_disabled": false,
        "new": false,
        "status": "online",
        "cancel_only": false,
        "limit_only": false,
        "post_only": false,
        "trading_disabled": false,
        "auction_mode": false,
        "product_type": "SPOT",
        "quote_currency_id": quote,
        "base_currency_id": base,
        "fcm_trading_session_details": null,
        "mid_market_price": trimmed(mid, pd),
        "alias": "",
        "alias_to": [],
        "base_display_symbol": base,
        "quote_display_symbol": quote,
        "view_only": false,
        "price_increment": step(pd),
        "display_name": inst.symbol.as_str(),
        "product_venue": "CBE",
        "approximate_quote_24h_volume": float(s.quote_volume, 2),
    })
}

async fn products(
    State(ctx): State<Arc<ExchangeCtx>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let list = match q.get("product_type").map(String::as_str) {
        None | Some("SPOT") => true,
        Some("FUTURE") => false,
        Some(other) => {
            let msg = format!("invalid product_type {other:?}");
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "INVALID_ARGUMENT", "error_details": msg, "message": msg})),
            )
                .into_response();
        }
    };
    let views = ctx.board.exchange(ctx.index);
    let products: Vec<Value> = if list {
        ctx.universe
            .instruments
            .iter()
            .zip(&views)
            .map(|(inst, view)| product_json(inst, view))
            .collect()
    } else {
        Vec::new()
    };
    let n = products.len();
    Json(json!({"products": products, "num_products": n})).into_response()
}
