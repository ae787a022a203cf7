//! KuCoin spot public market data, served the way KuCoin documents it.
//!
//! Docs: <https://www.kucoin.com/docs-new/websocket-api/base-info/introduction>,
//! <https://www.kucoin.com/docs-new/websocket-api/base-info/get-public-token-spot-margin>,
//! <https://www.kucoin.com/docs-new/3470063w0> (ticker), <https://www.kucoin.com/docs-new/3470072w0>
//! (match), and the classic docs (github.com/Kucoin/kucoin-api-docs, "Websocket Feed", "Get
//! Symbols List" v2, "Get All Tickers", "Server Time").
//!
//! KuCoin has no fixed WebSocket URL. `POST /api/v1/bullet-public` returns a fresh token and a
//! server: `{"code":"200000","data":{"token":"..","instanceServers":[{"endpoint":"ws://../",
//! "encrypt":false,"protocol":"websocket","pingInterval":18000,"pingTimeout":10000}]}}`
//! (`encrypt` is false here: the simulator speaks plain `ws://`). The client dials
//! `{endpoint}?token=..&connectId=..`; a valid token is greeted with
//! `{"id":"<connectId>","type":"welcome"}`, an expired or unknown one with
//! `{"id":"<connectId>","type":"error","code":401,"data":"token is expired"}` and a Close (the
//! upgrade itself succeeds: clients report the refusal as a message, not an HTTP 401). Tokens
//! live 24 h ([`tokens`]). See [`session`] for the connection itself.
//!
//! REST: `GET /api/v2/symbols` (`symbol`, `baseCurrency`, `quoteCurrency`, `enableTrading`,
//! increments, ..), `GET /api/v1/market/allTickers` (`data.ticker[]` with `buy`/`sell` = best
//! bid/ask, `vol` = 24 h base volume, `volValue` = 24 h quote volume), `GET /api/v1/timestamp`.
//! Every body is `{"code":"200000","data":..}`; numbers are decimal strings.

mod session;
mod tokens;
mod wire;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

pub(crate) use session::Timing;

use crate::format::trimmed;
use crate::market::{Instrument, now_us};
use crate::ws::{self, ExchangeCtx};

/// The WebSocket path: KuCoin's endpoint is the server root (`wss://ws-api-spot.kucoin.com/`).
pub(crate) const WS_PATH: &str = "/";

/// KuCoin's documented `pingInterval`, the simulator's default.
pub(crate) const DEFAULT_PING_INTERVAL_MS: u64 = 18_000;
/// KuCoin's documented `pingTimeout`, the simulator's default.
pub(crate) const DEFAULT_PING_TIMEOUT_MS: u64 = 10_000;

/// KuCoin's documented keep-alive.
#[cfg(test)]
pub(crate) const DEFAULT_TIMING: Timing = Timing {
    ping_interval: Duration::from_millis(DEFAULT_PING_INTERVAL_MS),
    ping_timeout: Duration::from_millis(DEFAULT_PING_TIMEOUT_MS),
};

/// What the KuCoin listener keeps across requests: the endpoint it advertises, the keep-alive
/// it announces, the tokens it issued, and the fault knob for token refusals.
#[derive(Debug)]
pub(crate) struct KucoinState {
    /// `ws://host:port/`, returned as `instanceServers[0].endpoint`.
    ws_url: String,
    timing: Timing,
    tokens: Mutex<tokens::TokenStore>,
    /// Connections still to refuse with "token is expired", whatever their token.
    reject_tokens: AtomicU32,
}

impl KucoinState {
    pub(crate) fn new(ws_url: String, timing: Timing) -> Self {
        Self {
            ws_url,
            timing,
            tokens: Mutex::new(tokens::TokenStore::default()),
            reject_tokens: AtomicU32::new(0),
        }
    }

    fn tokens(&self) -> MutexGuard<'_, tokens::TokenStore> {
        // Each operation leaves the store consistent, so a poisoned lock is still usable.
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refuses the next `n` connections as if their token had expired, and revokes each
    /// token so refused, so a client that dials again with it is refused again: only a fresh
    /// bullet-public token recovers, as on KuCoin after a day.
    pub(crate) fn reject_next_tokens(&self, n: u32) {
        self.reject_tokens.store(n, Ordering::Relaxed);
    }

    /// Forced refusals still to come.
    pub(crate) fn pending_rejections(&self) -> u32 {
        self.reject_tokens.load(Ordering::Relaxed)
    }

    /// Takes one pending forced refusal, if any.
    fn take_rejection(&self) -> bool {
        self.reject_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Whether a connection dialled with `token` is admitted; `Err` carries the error data.
    fn admit(&self, token: Option<&str>, now: Instant) -> Result<(), &'static str> {
        let Some(token) = token else {
            return Err(tokens::EXPIRED);
        };
        let mut store = self.tokens();
        if !store.is_valid(token, now) {
            return Err(tokens::EXPIRED);
        }
        if self.take_rejection() {
            store.revoke(token);
            return Err(tokens::EXPIRED);
        }
        Ok(())
    }
}

/// The KuCoin listener's routes.
pub(crate) fn router(ctx: Arc<ExchangeCtx>, state: Arc<KucoinState>) -> Router {
    Router::new()
        .route(WS_PATH, get(ws_market))
        .route("/api/v1/bullet-public", post(bullet_public))
        .route("/api/v2/symbols", get(symbols))
        .route("/api/v1/market/allTickers", get(all_tickers))
        .route("/api/v1/timestamp", get(timestamp))
        .with_state((ctx, state))
}

type Shared = (Arc<ExchangeCtx>, Arc<KucoinState>);

/// The dial query: `?token=..&connectId=..` (KuCoin writes `connectId` as optional).
#[derive(Debug, Deserialize)]
struct Dial {
    token: Option<String>,
    #[serde(rename = "connectId")]
    connect_id: Option<String>,
}

async fn ws_market(
    State((ctx, state)): State<Shared>,
    Query(dial): Query<Dial>,
    ws: WebSocketUpgrade,
) -> Response {
    // Without a connectId the server picks one; the welcome carries it either way.
    let connect_id = match dial.connect_id {
        Some(id) if !id.is_empty() => session::cut(&id, session::MAX_ID_LEN).to_owned(),
        _ => format!("{:016x}", rand::random::<u64>()),
    };
    let now = Instant::now();
    let opening = match state.admit(dial.token.as_deref(), now) {
        Ok(()) => session::Opening::Welcome(Box::new(session::Session::new(
            ctx.universe.clone(),
            &connect_id,
            state.timing,
            now,
        ))),
        Err(reason) => session::Opening::Refused {
            frame: session::refusal(&connect_id, reason),
            reason: "token_refused",
        },
    };
    ws::accept(&ctx, ws, opening)
}

fn ok(data: Value) -> Response {
    Json(json!({"code": "200000", "data": data})).into_response()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

async fn bullet_public(State((_, state)): State<Shared>) -> Response {
    let token = state.tokens().issue(Instant::now());
    ok(json!({
        "token": token,
        "instanceServers": [{
            "endpoint": state.ws_url,
            "encrypt": false,
            "protocol": "websocket",
            "pingInterval": millis(state.timing.ping_interval),
            "pingTimeout": millis(state.timing.ping_timeout),
        }],
    }))
}

/// `0.01` for 2 decimals: one step of the instrument.
fn step(decimals: u32) -> String {
    trimmed(1, decimals)
}

fn symbol_json(inst: &Instrument) -> Value {
    let quote = inst.symbol.quote();
    json!({
        "symbol": inst.symbol.as_str(),
        "name": inst.symbol.as_str(),
        "baseCurrency": inst.symbol.base(),
        "quoteCurrency": quote,
        "feeCurrency": quote,
        "market": if quote.starts_with("USD") { "USDS" } else { quote },
        "baseMinSize": step(inst.qty_decimals),
        "quoteMinSize": "0.1",
        "baseMaxSize": "10000000000",
        "quoteMaxSize": "99999999",
        "baseIncrement": step(inst.qty_decimals),
        "quoteIncrement": step(inst.price_decimals),
        "priceIncrement": step(inst.price_decimals),
        "priceLimitRate": "0.1",
        "minFunds": "0.1",
        "isMarginEnabled": false,
        "enableTrading": true,
    })
}

async fn symbols(State((ctx, _)): State<Shared>) -> Response {
    let data: Vec<Value> = ctx.universe.instruments.iter().map(symbol_json).collect();
    ok(Value::Array(data))
}

/// A float volume as KuCoin's decimal string (Rust's `Display` never writes an exponent).
fn volume(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.8}")
    } else {
        "0".to_owned()
    }
}

async fn all_tickers(State((ctx, _)): State<Shared>) -> Response {
    let views = ctx.board.exchange(ctx.index);
    let ticker: Vec<Value> = ctx
        .universe
        .instruments
        .iter()
        .zip(&views)
        .map(|(inst, view)| {
            let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
            let (q, s) = (view.quote.book, view.quote.stats);
            let change = s.last - s.open;
            // Rate to four places, as KuCoin writes it; the open is never zero (positive ticks).
            let rate = if s.open > 0 {
                format!("{:.4}", change as f64 / s.open as f64)
            } else {
                "0".to_owned()
            };
            let average = if s.base_volume > 0.0 {
                volume(s.quote_volume / s.base_volume)
            } else {
                trimmed(s.last, pd)
            };
            json!({
                "symbol": inst.symbol.as_str(),
                "symbolName": inst.symbol.as_str(),
                "buy": trimmed(q.bid, pd),
                "bestBidSize": trimmed(q.bid_qty, qd),
                "sell": trimmed(q.ask, pd),
                "bestAskSize": trimmed(q.ask_qty, qd),
                "changeRate": rate,
                "changePrice": trimmed(change, pd),
                "high": trimmed(s.high, pd),
                "low": trimmed(s.low, pd),
                "vol": volume(s.base_volume),
                "volValue": volume(s.quote_volume),
                "last": trimmed(s.last, pd),
                "averagePrice": average,
                "takerFeeRate": "0.001",
                "makerFeeRate": "0.001",
                "takerCoefficient": "1",
                "makerCoefficient": "1",
            })
        })
        .collect();
    ok(json!({"time": now_us() / 1_000, "ticker": ticker}))
}

async fn timestamp() -> Response {
    ok(json!(now_us() / 1_000))
}

#[cfg(test)]
mod tests;
