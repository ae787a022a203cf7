//! Bybit v5 public market data, spot, served the way Bybit documents it.
//!
//! Docs: <https://bybit-exchange.github.io/docs/v5/ws/connect>,
//! <https://bybit-exchange.github.io/docs/v5/websocket/public/orderbook>,
//! <https://bybit-exchange.github.io/docs/v5/websocket/public/trade>,
//! <https://bybit-exchange.github.io/docs/v5/market/instrument> and
//! <https://bybit-exchange.github.io/docs/v5/market/tickers>.
//!
//! WebSocket at `/v5/public/spot`: `{"req_id":"1","op":"subscribe","args":["orderbook.1.BTCUSDT",
//! "publicTrade.BTCUSDT"]}` answered once per request `{"success":true,"ret_msg":"subscribe",
//! "conn_id":"..","req_id":"1","op":"subscribe"}`; more than 10 args is refused
//! `{"success":false,"ret_msg":"args size >10",..}`. `orderbook.1.<SYM>` pushes a snapshot
//! right after subscribing, then one whenever the top of book changes, and the unchanged one
//! again (same `u`) after 3 s without a change; `publicTrade.<SYM>` pushes each trade, `S` the
//! taker's side. `{"op":"ping"}` is answered `{"success":true,"ret_msg":"pong","conn_id":..,
//! "req_id":..,"op":"ping"}`; a client that sends no ping for the idle timeout (the
//! simulator's `bybit_idle_timeout_s`, default 10 minutes as documented) is dropped without a
//! Close frame, data or not (stricter than Bybit, which counts its own data too). Details and
//! the choices made where the docs are silent are in [`session`].
//!
//! REST: `GET /v5/market/instruments-info?category=spot` and
//! `GET /v5/market/tickers?category=spot` in Bybit's envelope `{"retCode":0,"retMsg":"OK",
//! "result":{"category":"spot","list":[..]},"retExtInfo":{},"time":..}`; a missing or unknown
//! `category` is `retCode` 10001 (HTTP 200, as Bybit answers parameter errors); the other
//! real categories list nothing here.

mod session;
#[cfg(test)]
mod tests;
mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::format::{fixed, float, step};
use crate::market::{Instrument, SlotView, now_us};
use crate::ws::{self, ExchangeCtx};

/// The WebSocket path Bybit documents for spot.
pub(crate) const WS_PATH: &str = "/v5/public/spot";
/// Default idle timeout: no ping for this long drops the connection (Bybit: 10 minutes).
pub(crate) const DEFAULT_IDLE_TIMEOUT_S: u64 = 600;

/// The `orderbook.1` sequences (`u`) of every symbol, shared by all sessions: `u` is the
/// market's sequence less a per-symbol offset, which a service restart moves so that every
/// sequence starts again from 1 (Bybit: "Occasionally, you'll receive "u"=1, which is a
/// snapshot data due to the restart of the service").
#[derive(Debug)]
pub(crate) struct Sequences {
    restarts: AtomicU64,
    offsets: Vec<AtomicU64>,
}

impl Sequences {
    pub(crate) fn new(symbols: usize) -> Self {
        Self {
            restarts: AtomicU64::new(0),
            offsets: (0..symbols).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Restarts every sequence: the book each symbol has now (market sequence `seqs[i]`)
    /// becomes `u` 1, and each open session pushes it as such.
    pub(crate) fn restart(&self, seqs: impl IntoIterator<Item = u64>) {
        for (offset, seq) in self.offsets.iter().zip(seqs) {
            offset.store(seq.saturating_sub(1), Ordering::Relaxed);
        }
        self.restarts.fetch_add(1, Ordering::Release);
    }

    /// How many restarts there have been.
    pub(crate) fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Acquire)
    }

    /// `u` for the market sequence `seq` of `symbol`; `None` for an update from before the
    /// last restart.
    pub(crate) fn u(&self, symbol: usize, seq: u64) -> Option<u64> {
        let offset = self.offsets.get(symbol)?.load(Ordering::Relaxed);
        seq.checked_sub(offset).filter(|u| *u >= 1)
    }
}

/// What the Bybit routes share; [`crate::Simulator::bybit_restart`] uses it too.
#[derive(Debug)]
pub(crate) struct BybitState {
    ctx: Arc<ExchangeCtx>,
    idle_timeout: Duration,
    sequences: Arc<Sequences>,
}

impl BybitState {
    /// A client silent (no ping) for `idle_timeout` is dropped.
    pub(crate) fn new(ctx: Arc<ExchangeCtx>, idle_timeout: Duration) -> Self {
        let sequences = Arc::new(Sequences::new(ctx.universe.instruments.len()));
        Self {
            ctx,
            idle_timeout,
            sequences,
        }
    }

    /// A service restart: every `orderbook.1` sequence starts again from 1.
    pub(crate) fn restart(&self) {
        let views = self.ctx.board.exchange(self.ctx.index);
        self.sequences.restart(views.iter().map(|v| v.quote.seq));
    }
}

/// The Bybit listener's routes.
pub(crate) fn router(state: Arc<BybitState>) -> Router {
    Router::new()
        .route(WS_PATH, get(ws_spot))
        .route("/v5/market/instruments-info", get(instruments))
        .route("/v5/market/tickers", get(tickers))
        .with_state(state)
}

async fn ws_spot(State(b): State<Arc<BybitState>>, ws: WebSocketUpgrade) -> Response {
    let ctx = &b.ctx;
    let session = session::Session::new(
        ctx.universe.clone(),
        ctx.board.clone(),
        ctx.index,
        b.idle_timeout,
        b.sequences.clone(),
    );
    ws::accept(ctx, ws, session)
}

type Params = Query<HashMap<String, String>>;

/// Bybit's envelope around a result.
fn envelope(ret_code: u32, ret_msg: &str, result: Value) -> Response {
    Json(json!({
        "retCode": ret_code,
        "retMsg": ret_msg,
        "result": result,
        "retExtInfo": {},
        "time": now_us() / 1_000,
    }))
    .into_response()
}

/// `category`: required; `spot` is what we simulate, the other real categories list nothing;
/// `Err` is the message of Bybit's 10001 answer ([`bad_category`]).
fn spot_requested(q: &HashMap<String, String>) -> Result<bool, &'static str> {
    match q.get("category").map(String::as_str) {
        Some("spot") => Ok(true),
        Some("linear" | "inverse" | "option") => Ok(false),
        None | Some("") => Err("params error: category is required"),
        Some(_) => Err("Illegal category"),
    }
}

fn bad_category(msg: &str) -> Response {
    envelope(10_001, msg, json!({}))
}

fn instrument_json(inst: &Instrument) -> Value {
    let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
    json!({
        "symbol": inst.concat,
        "baseCoin": inst.symbol.base(),
        "quoteCoin": inst.symbol.quote(),
        "innovation": "0",
        "status": "Trading",
        "marginTrading": "none",
        "stTag": "0",
        "lotSizeFilter": {
            "basePrecision": step(qd),
            "quotePrecision": step(pd),
            "minOrderQty": step(qd),
            "maxOrderQty": "1000000",
            "minOrderAmt": "1",
            "maxOrderAmt": "2000000",
        },
        "priceFilter": {"tickSize": step(pd)},
        "riskParameters": {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.1"},
    })
}

async fn instruments(State(b): State<Arc<BybitState>>, Query(q): Params) -> Response {
    let spot = match spot_requested(&q) {
        Ok(spot) => spot,
        Err(msg) => return bad_category(msg),
    };
    let u = &b.ctx.universe;
    let list: Vec<Value> = if spot {
        u.instruments
            .iter()
            .filter(|i| q.get("symbol").is_none_or(|s| *s == i.concat))
            .map(instrument_json)
            .collect()
    } else {
        Vec::new()
    };
    let category = q.get("category").map_or("spot", String::as_str);
    envelope(0, "OK", json!({"category": category, "list": list}))
}

fn ticker_json(inst: &Instrument, view: &SlotView) -> Value {
    let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
    let (book, s) = (view.quote.book, view.quote.stats);
    #[allow(clippy::cast_precision_loss)]
    let change = if s.open > 0 {
        (s.last - s.open) as f64 / s.open as f64
    } else {
        0.0
    };
    json!({
        "symbol": inst.concat,
        "bid1Price": fixed(book.bid, pd),
        "bid1Size": fixed(book.bid_qty, qd),
        "ask1Price": fixed(book.ask, pd),
        "ask1Size": fixed(book.ask_qty, qd),
        "lastPrice": fixed(s.last, pd),
        "prevPrice24h": fixed(s.open, pd),
        "price24hPcnt": float(change, 4),
        "highPrice24h": fixed(s.high, pd),
        "lowPrice24h": fixed(s.low, pd),
        // turnover24h is in the quote coin, volume24h in the base coin.
        "turnover24h": float(s.quote_volume, 8),
        "volume24h": float(s.base_volume, qd),
        "usdIndexPrice": "",
    })
}

async fn tickers(State(b): State<Arc<BybitState>>, Query(q): Params) -> Response {
    let spot = match spot_requested(&q) {
        Ok(spot) => spot,
        Err(msg) => return bad_category(msg),
    };
    let ctx = &b.ctx;
    let list: Vec<Value> = if spot {
        let views = ctx.board.exchange(ctx.index);
        ctx.universe
            .instruments
            .iter()
            .zip(&views)
            .filter(|(i, _)| q.get("symbol").is_none_or(|s| *s == i.concat))
            .map(|(inst, view)| ticker_json(inst, view))
            .collect()
    } else {
        Vec::new()
    };
    let category = q.get("category").map_or("spot", String::as_str);
    envelope(0, "OK", json!({"category": category, "list": list}))
}
