//! Kraken spot public market data, served the way Kraken documents it: REST with its legacy
//! asset codes, WebSocket v2 with `BTC/USD` symbols.
//!
//! Docs: <https://docs.kraken.com/api/docs/guides/spot-ws-intro>,
//! <https://docs.kraken.com/api/docs/websocket-v2/ticker>,
//! <https://docs.kraken.com/api/docs/websocket-v2/trade>,
//! <https://docs.kraken.com/api/docs/websocket-v2/heartbeat>,
//! <https://docs.kraken.com/api/docs/websocket-v2/status>,
//! <https://docs.kraken.com/api/docs/websocket-v2/ping>,
//! <https://docs.kraken.com/api/docs/rest-api/get-tradable-asset-pairs>,
//! <https://docs.kraken.com/api/docs/rest-api/get-ticker-information>.
//!
//! WebSocket at `/v2`: a `status` update on connect; `{"method":"subscribe","params":
//! {"channel":"ticker"|"trade","symbol":[..],..},"req_id":N}` answered with one ack per symbol
//! (or one refusal per symbol it does not list, `"Currency pair not supported XYZ/USD"`),
//! then a snapshot (ticker: on by default; trade: the recent trades, on by default, off with
//! `"snapshot":false`); `ticker` with `"event_trigger":"bbo"` pushes on every best bid/offer
//! change, without it (`trades`, the default) only when a trade prints; `{"channel":
//! "heartbeat"}` once a second without other traffic, once subscribed; `{"method":"ping"}`
//! answered `{"method":"pong"}`. Kraken documents no idle timeout; the simulator closes a
//! connection whose client has sent nothing for [`IDLE_TIMEOUT`] (a minute, as third-party
//! clients report), which the adapter's 30 s pings stay well inside. Kraken documents no
//! notice before closing a connection, so none is sent.
//!
//! REST: `GET /0/public/AssetPairs` (`{"error":[],"result":{"XXBTZUSD":{"altname":"XBTUSD",
//! "wsname":"XBT/USD","base":"XXBT","quote":"ZUSD","status":"online",..}}}`, optional
//! `pair=` filter, unknown pairs answered `{"error":["EQuery:Unknown asset pair"]}`) and
//! `GET /0/public/Ticker` (keyed the same; `v` base volume and `p` VWAP, today and 24 h).

mod session;
mod wire;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::format::{fixed, float};
use crate::market::{Instrument, Trade};
use crate::ws::{self, ExchangeCtx};

/// The WebSocket path Kraken documents (`wss://ws.kraken.com/v2`).
pub(crate) const WS_PATH: &str = "/v2";
/// A connection whose client has sent nothing for this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Heartbeats go out after this long without other traffic, once subscribed.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// Trades a snapshot carries (Kraken: the last 50).
pub(crate) const SNAPSHOT_TRADES: usize = 50;

/// What every Kraken connection shares: the recent trades per symbol, for trade snapshots.
#[derive(Debug)]
pub(crate) struct KrakenState {
    ctx: Arc<ExchangeCtx>,
    recent: Mutex<Vec<VecDeque<Trade>>>,
}

impl KrakenState {
    /// Remembers a trade (once, whichever session saw it first).
    pub(crate) fn note_trade(&self, t: &Trade) {
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(ring) = recent.get_mut(t.symbol)
            && ring.back().is_none_or(|last| last.trade_id < t.trade_id)
        {
            if ring.len() >= SNAPSHOT_TRADES {
                ring.pop_front();
            }
            ring.push_back(*t);
        }
    }

    /// The recent trades of one symbol, oldest first.
    pub(crate) fn recent_trades(&self, symbol: usize) -> Vec<Trade> {
        let recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        recent
            .get(symbol)
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// The Kraken listener's routes.
pub(crate) fn router(ctx: Arc<ExchangeCtx>) -> Router {
    let state = Arc::new(KrakenState {
        recent: Mutex::new(vec![VecDeque::new(); ctx.universe.instruments.len()]),
        ctx,
    });
    Router::new()
        .route(WS_PATH, get(ws_market))
        .route("/0/public/AssetPairs", get(asset_pairs))
        .route("/0/public/Ticker", get(ticker))
        .with_state(state)
}

async fn ws_market(State(state): State<Arc<KrakenState>>, ws: WebSocketUpgrade) -> Response {
    let ctx = state.ctx.clone();
    ws::accept(&ctx, ws, session::Session::new(state))
}

fn rest_ok(result: Map<String, Value>) -> Response {
    Json(json!({"error": [], "result": result})).into_response()
}

fn rest_error(message: &str) -> Response {
    Json(json!({"error": [message]})).into_response()
}

/// Kraken's answer to a `pair=` naming no pair it lists.
const UNKNOWN_PAIR: &str = "EQuery:Unknown asset pair";

/// The instruments a `pair=` filter names (by pair key or altname, comma-separated), or all;
/// `Err` when one is unknown.
fn selected<'a>(
    ctx: &'a ExchangeCtx,
    q: &HashMap<String, String>,
) -> Result<Vec<(usize, &'a Instrument)>, &'static str> {
    let all = ctx.universe.instruments.iter().enumerate();
    let Some(filter) = q.get("pair").filter(|p| !p.is_empty()) else {
        return Ok(all.collect());
    };
    let mut out = Vec::new();
    for name in filter.split(',') {
        let found = ctx.universe.instruments.iter().enumerate().find(|(_, i)| {
            let n = wire::pair_names(i);
            n.key == name || n.altname == name
        });
        match found {
            Some(hit) => out.push(hit),
            None => return Err(UNKNOWN_PAIR),
        }
    }
    Ok(out)
}

fn pair_json(inst: &Instrument) -> Value {
    let n = wire::pair_names(inst);
    json!({
        "altname": n.altname,
        "wsname": n.wsname,
        "aclass_base": "currency",
        "base": n.base,
        "aclass_quote": "currency",
        "quote": n.quote,
        "lot": "unit",
        "cost_decimals": 5,
        "pair_decimals": inst.price_decimals,
        "lot_decimals": inst.qty_decimals,
        "lot_multiplier": 1,
        "leverage_buy": [],
        "leverage_sell": [],
        "fees": [[0, 0.4], [10_000, 0.35]],
        "fees_maker": [[0, 0.25], [10_000, 0.2]],
        "fee_volume_currency": "ZUSD",
        "margin_call": 80,
        "margin_stop": 40,
        "ordermin": fixed(1, inst.qty_decimals),
        "costmin": "0.5",
        "tick_size": fixed(1, inst.price_decimals),
        "status": "online",
    })
}

async fn asset_pairs(
    State(state): State<Arc<KrakenState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    match selected(&state.ctx, &q) {
        Ok(list) => rest_ok(
            list.into_iter()
                .map(|(_, inst)| (wire::pair_names(inst).key, pair_json(inst)))
                .collect(),
        ),
        Err(e) => rest_error(e),
    }
}

async fn ticker(
    State(state): State<Arc<KrakenState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let list = match selected(&state.ctx, &q) {
        Ok(list) => list,
        Err(e) => return rest_error(e),
    };
    let ctx = &state.ctx;
    let mut result = Map::new();
    for (i, inst) in list {
        let Some(view) = ctx.board.get(ctx.index, i) else {
            continue;
        };
        let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
        let (b, s) = (view.quote.book, view.quote.stats);
        let vwap = if s.base_volume > 0.0 {
            s.quote_volume / s.base_volume
        } else {
            0.0
        };
        // Today's figures: the simulator keeps one rolling day, so both columns agree.
        let volume = float(s.base_volume, 8);
        let vwap = float(vwap, pd + 3);
        let count = s.trade_count;
        result.insert(
            wire::pair_names(inst).key,
            json!({
                "a": [fixed(b.ask, pd), "1", fixed(b.ask_qty, qd)],
                "b": [fixed(b.bid, pd), "1", fixed(b.bid_qty, qd)],
                "c": [fixed(s.last, pd), fixed(s.last_qty, qd)],
                "v": [volume, volume],
                "p": [vwap, vwap],
                "t": [count, count],
                "l": [fixed(s.low, pd), fixed(s.low, pd)],
                "h": [fixed(s.high, pd), fixed(s.high, pd)],
                "o": fixed(s.open, pd),
            }),
        );
    }
    rest_ok(result)
}
