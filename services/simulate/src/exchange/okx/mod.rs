//! OKX v5 public market data, served the way OKX documents it.
//!
//! WebSocket (<https://www.okx.com/docs-v5/en/#overview-websocket>) at `/ws/v5/public`:
//! `{"id"?,"op":"subscribe"|"unsubscribe","args":[{"channel":..,"instId":..}]}` answered with
//! one `{"event":"subscribe","arg":{..},"connId":..}` per argument or an `{"event":"error"}` with
//! OKX's codes (60012 invalid request, 60014 too frequent, 60018 no such channel or instrument,
//! 60019 invalid op, 60027 missing parameter); channels `bbo-tbt` (a snapshot right after
//! subscribing, then every change), `trades` and `tickers`. Text `ping` gets text `pong`.
//! OKX closes a connection that has not subscribed within 30 s, or on which nothing has moved
//! in either direction for 30 s, with close code 4004 "No data received in 30s"; at most 480
//! subscribe/unsubscribe requests per connection per hour. Before the simulator stops, every
//! session gets OKX's 64008 service-upgrade notice and a Close frame.
//!
//! REST: `GET /api/v5/public/instruments`, `/api/v5/market/tickers`, `/api/v5/market/ticker`
//! and `/api/v5/public/time`, with `{"code":"..","msg":"..","data":[..]}` bodies and OKX's
//! HTTP statuses (50014 and 51000 are 400, 51001 is 200).

//!
//! Layout: this file has the routes, [`session`] the protocol state machine and its serve
//! loop, [`wire`] the payload shapes, [`rest`] the REST API.

mod rest;
mod session;
#[cfg(test)]
mod tests;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;
use axum::routing::get;

use crate::ws::{self, ExchangeCtx};
use rest::{instruments, rest_time, ticker_one, tickers};
use session::Session;

/// OKX drops a connection with no subscription, or no traffic, for this long.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Subscribe/unsubscribe requests allowed per connection per hour.
pub(crate) const MAX_OPS_PER_HOUR: usize = 480;
/// Longest request id OKX accepts.
const MAX_ID_LEN: usize = 32;
/// How much of a bad request is echoed back in the error message.
const MAX_ECHO: usize = 512;
/// OKX's close frame for an idle connection.
const IDLE_CLOSE: (u16, &str) = (4004, "No data received in 30s");

/// A channel we publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    BboTbt,
    Trades,
    Tickers,
}

impl Channel {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "bbo-tbt" => Some(Channel::BboTbt),
            "trades" => Some(Channel::Trades),
            "tickers" => Some(Channel::Tickers),
            _ => None,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Channel::BboTbt => "bbo-tbt",
            Channel::Trades => "trades",
            Channel::Tickers => "tickers",
        }
    }

    const fn flag(self) -> u8 {
        match self {
            Channel::BboTbt => 1,
            Channel::Trades => 2,
            Channel::Tickers => 4,
        }
    }
}

/// The OKX listener's routes.
pub(crate) fn router(ctx: Arc<ExchangeCtx>) -> Router {
    Router::new()
        .route("/ws/v5/public", get(ws_public))
        .route("/api/v5/public/instruments", get(instruments))
        .route("/api/v5/public/time", get(rest_time))
        .route("/api/v5/market/tickers", get(tickers))
        .route("/api/v5/market/ticker", get(ticker_one))
        .with_state(ctx)
}

async fn ws_public(State(ctx): State<Arc<ExchangeCtx>>, ws: WebSocketUpgrade) -> Response {
    let session = Session::new(ctx.universe.clone(), ctx.board.clone(), ctx.index);
    ws::accept(&ctx, ws, session)
}
