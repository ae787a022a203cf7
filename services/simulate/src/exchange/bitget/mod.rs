//! Bitget v2 public spot market data, served the way Bitget documents it.
//!
//! WebSocket (<https://www.bitget.com/api-doc/common/websocket-intro>) at
//! [`WS_PATH`]: `{"op":"subscribe"|"unsubscribe","args":[{"instType":"SPOT","channel":..,"instId":..}]}`
//! answered with one `{"event":"subscribe","arg":{..}}` per argument, or
//! `{"event":"error","arg":{..},"code":30001,"msg":"instType:SPOT,channel:..,instId:.. doesn't exist","op":"subscribe"}`
//! for an argument it cannot serve (the error layout of Bitget's changelog of 2023-08-23).
//! Channels `ticker` (<https://www.bitget.com/api-doc/spot/websocket/public/Tickers-Channel>:
//! a snapshot right after subscribing, then one on every change of the quote) and `trade`
//! (<https://www.bitget.com/api-doc/spot/websocket/public/Trades-Channel>: a `snapshot` of
//! the latest trade right after subscribing, then an `update` per trade). Requests carry no id.
//!
//! The text `ping` gets the text `pong`. A connection that has sent no `ping` for 30 s, or
//! has subscribed to nothing within 30 s of connecting, is closed (the stricter of the
//! intro page's versions; a later one says 2 min). More than 10 messages a second from the
//! client, `ping`s included, close the connection; at most 240 subscribe/unsubscribe
//! requests per hour and 1000 channels per connection (refused with 30006).
//!
//! Error codes not shown on the pages above come from Bitget's WebSocket error code list
//! (also in ccxt): 30001 channel does not exist, 30003 invalid op, 30006 request too many,
//! 30016 param error. Bitget documents no notice before it closes a connection, so none is
//! sent.
//!
//! REST: `GET /api/v2/spot/public/symbols` and `GET /api/v2/spot/market/tickers`
//! (<https://www.bitget.com/api-doc/spot/market/Get-Symbols>,
//! <https://www.bitget.com/api-doc/spot/market/Get-Tickers>), both with an optional
//! `symbol`; bodies `{"code":"00000","msg":"success","requestTime":..,"data":[..]}`, and for a
//! symbol Bitget does not list HTTP 400 with `{"code":"40034","msg":"Parameter .. does not exist",..,"data":null}`.

mod session;
#[cfg(test)]
mod tests;
mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::format::{float_trimmed, step, trimmed};
use crate::market::{Instrument, SlotView, now_us};
use crate::ws::{self, ExchangeCtx};

/// The public WebSocket path Bitget documents.
pub(crate) const WS_PATH: &str = "/v2/ws/public";
/// No `ping` for this long closes a connection; so does no subscription this long after
/// connecting.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages a client may send per second, `ping`s included.
pub(crate) const MAX_MESSAGES_PER_SECOND: usize = 10;
/// Subscribe/unsubscribe requests per connection per hour.
pub(crate) const MAX_OPS_PER_HOUR: usize = 240;
/// Channels one connection may hold.
pub(crate) const MAX_CHANNELS: usize = 1_000;

/// The Bitget listener's routes.
pub(crate) fn router(ctx: Arc<ExchangeCtx>) -> Router {
    Router::new()
        .route(WS_PATH, get(ws_public))
        .route("/api/v2/spot/public/symbols", get(symbols))
        .route("/api/v2/spot/market/tickers", get(tickers))
        .with_state(ctx)
}

async fn ws_public(State(ctx): State<Arc<ExchangeCtx>>, ws: WebSocketUpgrade) -> Response {
    let session = session::Session::new(ctx.universe.clone(), ctx.board.clone(), ctx.index);
    ws::accept(&ctx, ws, session)
}

type Params = Query<HashMap<String, String>>;

fn ok(data: Vec<Value>) -> Response {
    Json(json!({
        "code": "00000",
        "msg": "success",
        "requestTime": now_us() / 1_000,
        "data": data,
    }))
    .into_response()
}

/// Bitget's answer for a `symbol` it does not list.
fn no_such_symbol(symbol: &str) -> Response {
    let shown: String = symbol.chars().take(64).collect();
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "code": "40034",
            "msg": format!("Parameter {shown} does not exist"),
            "requestTime": now_us() / 1_000,
            "data": null,
        })),
    )
        .into_response()
}

/// The instruments a request asks for: all, or the one its `symbol` names (`Err`: the
/// `symbol` Bitget does not list).
fn selected<'a>(ctx: &ExchangeCtx, q: &'a HashMap<String, String>) -> Result<Vec<usize>, &'a str> {
    match q.get("symbol").map(String::as_str) {
        None | Some("") => Ok((0..ctx.universe.instruments.len()).collect()),
        Some(s) => ctx.universe.by_concat(s).map(|i| vec![i]).ok_or(s),
    }
}

fn symbol_json(inst: &Instrument) -> Value {
    json!({
        "symbol": inst.concat,
        "baseCoin": inst.symbol.base(),
        "quoteCoin": inst.symbol.quote(),
        "minTradeAmount": step(inst.qty_decimals),
        "maxTradeAmount": "10000000",
        "takerFeeRate": "0.001",
        "makerFeeRate": "0.001",
        "pricePrecision": inst.price_decimals.to_string(),
        "quantityPrecision": inst.qty_decimals.to_string(),
        "quotePrecision": inst.price_decimals.to_string(),
        "minTradeUSDT": "1",
        "status": "online",
        "buyLimitPriceRatio": "0.05",
        "sellLimitPriceRatio": "0.05",
        "orderQuantity": "200",
        "areaSymbol": "no",
    })
}

async fn symbols(State(ctx): State<Arc<ExchangeCtx>>, Query(q): Params) -> Response {
    match selected(&ctx, &q) {
        Ok(list) => ok(list
            .into_iter()
            .map(|i| symbol_json(&ctx.universe.instruments[i]))
            .collect()),
        Err(s) => no_such_symbol(s),
    }
}

fn ticker_json(inst: &Instrument, view: &SlotView) -> Value {
    let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
    let t = wire::ticker(inst, &view.quote);
    json!({
        "symbol": inst.concat,
        "high24h": t.high24h,
        "open": t.open24h,
        "low24h": t.low24h,
        "lastPr": t.last_pr,
        "quoteVolume": float_trimmed(view.quote.stats.quote_volume, pd),
        "baseVolume": float_trimmed(view.quote.stats.base_volume, qd),
        "usdtVolume": float_trimmed(view.quote.stats.quote_volume, pd),
        "bidPr": trimmed(view.quote.book.bid, pd),
        "askPr": trimmed(view.quote.book.ask, pd),
        "bidSz": t.bid_sz,
        "askSz": t.ask_sz,
        "openUtc": t.open_utc,
        "ts": (now_us() / 1_000).to_string(),
        "changeUtc24h": t.change_utc24h,
        "change24h": t.change24h,
    })
}

async fn tickers(State(ctx): State<Arc<ExchangeCtx>>, Query(q): Params) -> Response {
    let list = match selected(&ctx, &q) {
        Ok(list) => list,
        Err(s) => return no_such_symbol(s),
    };
    let views = ctx.board.exchange(ctx.index);
    ok(list
        .into_iter()
        .filter_map(|i| Some(ticker_json(&ctx.universe.instruments[i], views.get(i)?)))
        .collect())
}
