//! Binance's REST API: ping, time, exchangeInfo, 24 h tickers and book tickers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};

use super::{DECIMALS, Params};
use crate::format::{float, padded};
use crate::market::{Instrument, SlotView, Universe, now_us};
use crate::ws::ExchangeCtx;

/// Binance's REST error: HTTP 400 with `{"code":-1121,"msg":"Invalid symbol."}`.
#[derive(Debug, Clone, Copy)]
pub(super) struct RestError {
    pub(super) code: i64,
    pub(super) msg: &'static str,
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": self.code, "msg": self.msg})),
        )
            .into_response()
    }
}

pub(super) const fn rest_error(code: i64, msg: &'static str) -> RestError {
    RestError { code, msg }
}

pub(super) fn now_ms() -> i64 {
    now_us() / 1_000
}

/// Which symbols a request names: `symbol=BTCUSDT`, `symbols=["BTCUSDT","ETHBTC"]`, or all.
/// The flag says a single `symbol` was asked for (some endpoints then answer an object).
pub(super) fn select(
    universe: &Universe,
    q: &HashMap<String, String>,
) -> Result<(Vec<usize>, bool), RestError> {
    match (q.get("symbol"), q.get("symbols")) {
        (Some(_), Some(_)) => Err(rest_error(
            -1128,
            "Combination of optional parameters invalid.",
        )),
        (Some(symbol), None) => universe
            .by_concat(symbol)
            .map(|i| (vec![i], true))
            .ok_or_else(|| rest_error(-1121, "Invalid symbol.")),
        (None, Some(list)) => {
            let names: Vec<String> = serde_json::from_str(list).map_err(|_| {
                rest_error(
                    -1100,
                    "Illegal characters found in parameter 'symbols'; legal range is '^\\[(\"[A-Z0-9-_.]{1,20}\"(,\"[A-Z0-9-_.]{1,20}\"){0,}){0,1}\\]$'.",
                )
            })?;
            names
                .iter()
                .map(|n| {
                    universe
                        .by_concat(n)
                        .ok_or_else(|| rest_error(-1121, "Invalid symbol."))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|v| (v, false))
        }
        (None, None) => Ok(((0..universe.instruments.len()).collect(), false)),
    }
}

pub(super) async fn rest_ping() -> Json<Value> {
    Json(json!({}))
}

pub(super) async fn rest_time() -> Json<Value> {
    Json(json!({"serverTime": now_ms()}))
}

pub(super) fn symbol_info(inst: &Instrument) -> Value {
    let tick = padded(1, inst.price_decimals, DECIMALS);
    let step = padded(1, inst.qty_decimals, DECIMALS);
    json!({
        "symbol": inst.concat,
        "status": "TRADING",
        "baseAsset": inst.symbol.base(),
        "baseAssetPrecision": 8,
        "quoteAsset": inst.symbol.quote(),
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": true,
        "ocoAllowed": true,
        "otoAllowed": true,
        "quoteOrderQtyMarketAllowed": true,
        "allowTrailingStop": true,
        "cancelReplaceAllowed": true,
        "amendAllowed": true,
        "isSpotTradingAllowed": true,
        "isMarginTradingAllowed": false,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00000000", "tickSize": tick},
            {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "9000000.00000000", "stepSize": step},
            {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": true, "maxNotional": "9000000.00000000", "applyMaxToMarket": false, "avgPriceMins": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    })
}

pub(super) async fn exchange_info(
    State(ctx): State<Arc<ExchangeCtx>>,
    Query(q): Params,
) -> Response {
    let (selected, _) = match select(&ctx.universe, &q) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let symbols: Vec<Value> = selected
        .iter()
        .filter_map(|&i| ctx.universe.instruments.get(i))
        .map(symbol_info)
        .collect();
    Json(json!({
        "timezone": "UTC",
        "serverTime": now_ms(),
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
        ],
        "exchangeFilters": [],
        "symbols": symbols,
    }))
    .into_response()
}

pub(super) fn ticker(inst: &Instrument, view: &SlotView, mini: bool, now: i64) -> Value {
    let s = view.quote.stats;
    let b = view.quote.book;
    let pd = inst.price_decimals;
    let qd = inst.qty_decimals;
    let price = |units: i64| padded(units, pd, DECIMALS);
    let first_id = s
        .last_trade_id
        .saturating_sub(s.trade_count.saturating_sub(1));
    let mut t = json!({
        "symbol": inst.concat,
        "openPrice": price(s.open),
        "highPrice": price(s.high),
        "lowPrice": price(s.low),
        "lastPrice": price(s.last),
        "volume": float(s.base_volume, DECIMALS),
        "quoteVolume": float(s.quote_volume, DECIMALS),
        "openTime": now - 86_400_000,
        "closeTime": now,
        "firstId": first_id,
        "lastId": s.last_trade_id,
        "count": s.trade_count,
    });
    if !mini {
        let change = s.last - s.open;
        let percent = change as f64 / s.open.max(1) as f64 * 100.0;
        let weighted = if s.base_volume > 0.0 {
            s.quote_volume / s.base_volume
        } else {
            0.0
        };
        if let Value::Object(map) = &mut t {
            for (k, v) in [
                ("priceChange", json!(price(change))),
                ("priceChangePercent", json!(float(percent, 3))),
                ("weightedAvgPrice", json!(float(weighted, DECIMALS))),
                ("prevClosePrice", json!(price(s.open))),
                ("lastQty", json!(padded(s.last_qty, qd, DECIMALS))),
                ("bidPrice", json!(price(b.bid))),
                ("bidQty", json!(padded(b.bid_qty, qd, DECIMALS))),
                ("askPrice", json!(price(b.ask))),
                ("askQty", json!(padded(b.ask_qty, qd, DECIMALS))),
            ] {
                map.insert(k.to_owned(), v);
            }
        }
    }
    t
}

pub(super) async fn ticker_24hr(State(ctx): State<Arc<ExchangeCtx>>, Query(q): Params) -> Response {
    let (selected, single) = match select(&ctx.universe, &q) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let mini = match q.get("type").map(String::as_str) {
        None | Some("FULL") => false,
        Some("MINI") => true,
        Some(_) => {
            return rest_error(
                -1102,
                "Mandatory parameter 'type' was not sent, was empty/null, or malformed.",
            )
            .into_response();
        }
    };
    let views = ctx.board.exchange(ctx.index);
    let now = now_ms();
    let tickers: Vec<Value> = selected
        .iter()
        .filter_map(|&i| {
            Some(ticker(
                ctx.universe.instruments.get(i)?,
                views.get(i)?,
                mini,
                now,
            ))
        })
        .collect();
    respond(tickers, single)
}

pub(super) async fn book_ticker(State(ctx): State<Arc<ExchangeCtx>>, Query(q): Params) -> Response {
    let (selected, single) = match select(&ctx.universe, &q) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let views = ctx.board.exchange(ctx.index);
    let tickers: Vec<Value> = selected
        .iter()
        .filter_map(|&i| {
            let inst = ctx.universe.instruments.get(i)?;
            let b = views.get(i)?.quote.book;
            Some(json!({
                "symbol": inst.concat,
                "bidPrice": padded(b.bid, inst.price_decimals, DECIMALS),
                "bidQty": padded(b.bid_qty, inst.qty_decimals, DECIMALS),
                "askPrice": padded(b.ask, inst.price_decimals, DECIMALS),
                "askQty": padded(b.ask_qty, inst.qty_decimals, DECIMALS),
            }))
        })
        .collect();
    respond(tickers, single)
}

/// An object for a single `symbol=`, an array otherwise.
pub(super) fn respond(mut items: Vec<Value>, single: bool) -> Response {
    if single && let Some(one) = items.pop() {
        return Json(one).into_response();
    }
    Json(Value::Array(items)).into_response()
}
