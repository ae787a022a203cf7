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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::format::{float_trimmed, step, trimmed};
use crate::market::{Board, Instrument, MarketEvent, Quote, Trade, Universe, now_us};
use crate::ws::{self, End, ExchangeCtx, RateWindow, SessionMetrics, Socket, to_json};

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

// ---------------------------------------------------------------------------------------------
// WebSocket

async fn ws_public(State(ctx): State<Arc<ExchangeCtx>>, ws: WebSocketUpgrade) -> Response {
    let session = Session::new(ctx.universe.clone(), ctx.board.clone(), ctx.index);
    let context = ctx.clone();
    ws::accept(&ctx, ws, move |socket, events| {
        run(socket, context, session, events)
    })
}

/// `{"channel":"bbo-tbt","instId":"BTC-USDT"}`
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Arg<'a> {
    channel: &'a str,
    inst_id: &'a str,
}

/// `{"id":"1512","event":"subscribe","arg":{..},"connId":"a4d3ae55"}`
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Ack<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    event: &'a str,
    arg: Arg<'a>,
    conn_id: &'a str,
}

/// `{"id":"1512","event":"error","code":"60012","msg":"Invalid request: ..","connId":".."}`
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorEvent<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    event: &'static str,
    code: &'a str,
    msg: &'a str,
    conn_id: &'a str,
}

/// `{"arg":{..},"data":[..]}`
#[derive(Serialize)]
struct Push<'a, T: Serialize> {
    arg: Arg<'a>,
    data: [T; 1],
}

/// `{"asks":[["8476.98","415","0","13"]],"bids":[["8476.97","256","0","12"]],"ts":"1597026383085","seqId":123456}`
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bbo {
    asks: [[String; 4]; 1],
    bids: [[String; 4]; 1],
    ts: String,
    seq_id: u64,
}

/// `{"instId":"BTC-USDT","tradeId":"130639474","px":"42219.9","sz":"0.12060306","side":"buy","ts":"1630048897897","count":"1","source":"0","seqId":1234}`
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OkxTrade<'a> {
    inst_id: &'a str,
    trade_id: String,
    px: String,
    sz: String,
    /// The taker's side.
    side: &'static str,
    ts: String,
    count: &'static str,
    source: &'static str,
    seq_id: u64,
}

/// A `tickers` push and a REST ticker: last, best bid/ask and 24 h statistics. For SPOT,
/// `vol24h` is in the base currency and `volCcy24h` in the quote currency.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OkxTicker<'a> {
    inst_type: &'static str,
    inst_id: &'a str,
    last: String,
    last_sz: String,
    ask_px: String,
    ask_sz: String,
    bid_px: String,
    bid_sz: String,
    open24h: String,
    high24h: String,
    low24h: String,
    vol_ccy24h: String,
    vol24h: String,
    sod_utc0: String,
    sod_utc8: String,
    ts: String,
}

fn okx_ticker<'a>(inst: &'a Instrument, q: &Quote) -> OkxTicker<'a> {
    let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
    let s = q.stats;
    OkxTicker {
        inst_type: "SPOT",
        inst_id: inst.symbol.as_str(),
        last: trimmed(s.last, pd),
        last_sz: trimmed(s.last_qty, qd),
        ask_px: trimmed(q.book.ask, pd),
        ask_sz: trimmed(q.book.ask_qty, qd),
        bid_px: trimmed(q.book.bid, pd),
        bid_sz: trimmed(q.book.bid_qty, qd),
        open24h: trimmed(s.open, pd),
        high24h: trimmed(s.high, pd),
        low24h: trimmed(s.low, pd),
        vol_ccy24h: float_trimmed(s.quote_volume, pd),
        vol24h: float_trimmed(s.base_volume, qd),
        sod_utc0: trimmed(s.open, pd),
        sod_utc8: trimmed(s.open, pd),
        ts: (q.ts_us / 1_000).to_string(),
    }
}

fn bbo(inst: &Instrument, q: &Quote) -> Bbo {
    let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
    let b = q.book;
    Bbo {
        asks: [[
            trimmed(b.ask, pd),
            trimmed(b.ask_qty, qd),
            "0".to_owned(),
            b.ask_orders.to_string(),
        ]],
        bids: [[
            trimmed(b.bid, pd),
            trimmed(b.bid_qty, qd),
            "0".to_owned(),
            b.bid_orders.to_string(),
        ]],
        ts: (q.ts_us / 1_000).to_string(),
        seq_id: q.seq,
    }
}

fn okx_trade<'a>(inst: &'a Instrument, t: &Trade) -> OkxTrade<'a> {
    OkxTrade {
        inst_id: inst.symbol.as_str(),
        trade_id: t.trade_id.to_string(),
        px: trimmed(t.price, inst.price_decimals),
        sz: trimmed(t.qty, inst.qty_decimals),
        side: if t.taker_buy { "buy" } else { "sell" },
        ts: (t.ts_us / 1_000).to_string(),
        count: "1",
        source: "0",
        seq_id: t.seq,
    }
}

/// The frames answering one client message, and the labels of any refusals among them.
#[derive(Debug, Default)]
struct Replies {
    frames: Vec<String>,
    rejected: Vec<&'static str>,
}

/// One connection's protocol state. Pure apart from reading the board; [`run`] does the I/O.
#[derive(Debug)]
pub(crate) struct Session {
    universe: Arc<Universe>,
    board: Arc<Board>,
    exchange: usize,
    conn_id: String,
    /// Per symbol: which channels are subscribed (`Channel::flag` bits).
    wants: Vec<u8>,
    ops: RateWindow,
    subscribed_ever: bool,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The start of `text`, cut at a character boundary.
fn echo(text: &str) -> &str {
    if text.len() <= MAX_ECHO {
        return text;
    }
    let mut end = MAX_ECHO;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Session {
    pub(crate) fn new(universe: Arc<Universe>, board: Arc<Board>, exchange: usize) -> Self {
        let wants = vec![0; universe.instruments.len()];
        Self {
            universe,
            board,
            exchange,
            conn_id: format!("{:08x}", rand::random::<u32>()),
            wants,
            ops: RateWindow::new(MAX_OPS_PER_HOUR, Duration::from_secs(3_600)),
            subscribed_ever: false,
        }
    }

    fn error(&self, id: Option<&str>, code: &str, msg: &str) -> String {
        to_json(&ErrorEvent {
            id,
            event: "error",
            code,
            msg,
            conn_id: &self.conn_id,
        })
    }

    fn notice(&self) -> String {
        to_json(&json!({
            "event": "notice",
            "code": "64008",
            "msg": "The connection will soon be closed for a service upgrade. Please reconnect.",
            "connId": self.conn_id,
        }))
    }

    /// Answers one text message (other than `ping`).
    fn handle(&mut self, text: &str, now: Instant) -> Replies {
        let mut out = Replies::default();
        let invalid = |s: &Self, id: Option<&str>| {
            s.error(id, "60012", &format!("Invalid request: {}", echo(text)))
        };
        let Ok(Value::Object(request)) = serde_json::from_str::<Value>(text) else {
            out.frames.push(invalid(self, None));
            out.rejected.push("invalid_request");
            return out;
        };
        let id = match request.get("id") {
            None => None,
            Some(Value::String(id)) if valid_id(id) => Some(id.as_str()),
            Some(_) => {
                out.frames.push(invalid(self, None));
                out.rejected.push("bad_id");
                return out;
            }
        };
        let Some(op) = request.get("op").and_then(Value::as_str) else {
            out.frames.push(invalid(self, id));
            out.rejected.push("invalid_request");
            return out;
        };
        let subscribe = match op {
            "subscribe" => true,
            "unsubscribe" => false,
            other => {
                out.frames
                    .push(self.error(id, "60019", &format!("Invalid op: {}", echo(other))));
                out.rejected.push("invalid_op");
                return out;
            }
        };
        let Some(args) = request
            .get("args")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
        else {
            out.frames.push(invalid(self, id));
            out.rejected.push("invalid_request");
            return out;
        };
        if !self.ops.allow(now) {
            out.frames
                .push(self.error(id, "60014", "Requests too frequent."));
            out.rejected.push("too_frequent");
            return out;
        }
        for arg in args {
            let channel = arg.get("channel").and_then(Value::as_str);
            let inst_id = arg.get("instId").and_then(Value::as_str);
            let Some(channel) = channel else {
                out.frames.push(invalid(self, id));
                out.rejected.push("invalid_request");
                continue;
            };
            let known = Channel::parse(channel);
            let (Some(ch), Some(inst_id)) = (known, inst_id) else {
                if known.is_some() {
                    out.frames
                        .push(self.error(id, "60027", "Parameter instId can not be empty."));
                } else {
                    let what = match inst_id {
                        Some(i) => format!("channel:{},instId:{}", echo(channel), echo(i)),
                        None => format!("channel:{}", echo(channel)),
                    };
                    out.frames.push(self.error(
                        id,
                        "60018",
                        &format!("Wrong URL or {what} doesn't exist. Please use the correct URL, channel and parameters referring to API document."),
                    ));
                }
                out.rejected.push("no_such_channel");
                continue;
            };
            let Some(symbol) = self.universe.by_canonical(inst_id) else {
                out.frames.push(self.error(
                    id,
                    "60018",
                    &format!(
                        "Wrong URL or channel:{},instId:{} doesn't exist. Please use the correct URL, channel and parameters referring to API document.",
                        ch.name(),
                        echo(inst_id)
                    ),
                ));
                out.rejected.push("unknown_instrument");
                continue;
            };
            let inst = &self.universe.instruments[symbol];
            out.frames.push(to_json(&Ack {
                id,
                event: op,
                arg: Arg {
                    channel: ch.name(),
                    inst_id: inst.symbol.as_str(),
                },
                conn_id: &self.conn_id,
            }));
            if subscribe {
                self.wants[symbol] |= ch.flag();
                self.subscribed_ever = true;
                // bbo-tbt (and tickers) start with the current snapshot.
                if ch != Channel::Trades
                    && let Some(view) = self.board.get(self.exchange, symbol)
                    && let Some(frame) = self.encode_quote(ch, &view.quote)
                {
                    out.frames.push(frame);
                }
            } else {
                self.wants[symbol] &= !ch.flag();
            }
        }
        out
    }

    fn encode_quote(&self, ch: Channel, q: &Quote) -> Option<String> {
        let inst = self.universe.instruments.get(q.symbol)?;
        let arg = Arg {
            channel: ch.name(),
            inst_id: inst.symbol.as_str(),
        };
        Some(match ch {
            Channel::BboTbt => to_json(&Push {
                arg,
                data: [bbo(inst, q)],
            }),
            Channel::Tickers => to_json(&Push {
                arg,
                data: [okx_ticker(inst, q)],
            }),
            Channel::Trades => return None,
        })
    }

    /// The frames for a market event this connection listens to (bbo-tbt and tickers both
    /// follow quotes).
    fn encode(&self, event: &MarketEvent) -> Vec<String> {
        let mut frames = Vec::new();
        match event {
            MarketEvent::Quote(q) => {
                let wants = self.wants.get(q.symbol).copied().unwrap_or(0);
                for ch in [Channel::BboTbt, Channel::Tickers] {
                    if wants & ch.flag() != 0 {
                        frames.extend(self.encode_quote(ch, q));
                    }
                }
            }
            MarketEvent::Trade(t) => {
                let wants = self.wants.get(t.symbol).copied().unwrap_or(0);
                if let (true, Some(inst)) = (
                    wants & Channel::Trades.flag() != 0,
                    self.universe.instruments.get(t.symbol),
                ) {
                    frames.push(to_json(&Push {
                        arg: Arg {
                            channel: Channel::Trades.name(),
                            inst_id: inst.symbol.as_str(),
                        },
                        data: [okx_trade(inst, t)],
                    }));
                }
            }
        }
        frames
    }
}

/// Serves one connection until it ends, then records why.
pub(crate) async fn run<S: Socket>(
    mut socket: S,
    ctx: Arc<ExchangeCtx>,
    mut session: Session,
    mut events: broadcast::Receiver<MarketEvent>,
) {
    let metrics = SessionMetrics::open(ctx.exchange);
    let end = serve(&mut socket, &ctx, &mut session, &mut events, &metrics).await;
    // How OKX says goodbye; a client that left or stopped reading gets nothing.
    match end {
        End::Shutdown | End::MarketClosed => {
            ws::close(&mut socket, Some(session.notice()), 1001, "server shutdown").await;
        }
        End::Idle | End::NoSubscription => {
            ws::close(&mut socket, None, IDLE_CLOSE.0, IDLE_CLOSE.1).await;
        }
        End::ClientClosed
        | End::SocketError
        | End::SlowClient
        | End::RateLimited
        | End::PongTimeout
        | End::MaxLifetime => {}
    }
    metrics.ended(end);
}

async fn serve<S: Socket>(
    socket: &mut S,
    ctx: &ExchangeCtx,
    session: &mut Session,
    events: &mut broadcast::Receiver<MarketEvent>,
    metrics: &SessionMetrics,
) -> End {
    let connected = Instant::now();
    let mut last_traffic = connected;
    loop {
        let must_subscribe_by = (!session.subscribed_ever).then_some(connected + IDLE_TIMEOUT);
        tokio::select! {
            biased;
            () = ctx.stop.cancelled() => return End::Shutdown,
            () = ws::sleep_until_opt(must_subscribe_by) => return End::NoSubscription,
            () = tokio::time::sleep_until(last_traffic + IDLE_TIMEOUT) => return End::Idle,
            frame = socket.next() => {
                last_traffic = Instant::now();
                let replies = match frame {
                    None | Some(Ok(Message::Close(_))) => return End::ClientClosed,
                    Some(Err(_)) => return End::SocketError,
                    Some(Ok(Message::Text(text))) if text.as_str() == "ping" => Replies {
                        frames: vec!["pong".to_owned()],
                        rejected: Vec::new(),
                    },
                    Some(Ok(Message::Text(text))) => session.handle(text.as_str(), last_traffic),
                    Some(Ok(Message::Binary(data))) => match std::str::from_utf8(&data) {
                        Ok(text) => session.handle(text, last_traffic),
                        Err(_) => Replies {
                            frames: vec![session.error(None, "60012", "Invalid request: binary frame")],
                            rejected: vec!["invalid_request"],
                        },
                    },
                    // Control frames: answered by the WebSocket layer; they count as traffic.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                };
                for why in replies.rejected {
                    metrics.rejected(why);
                }
                for frame in replies.frames {
                    if let Err(end) = ws::send_text(socket, frame, &ctx.stop).await {
                        return end;
                    }
                }
            }
            event = events.recv() => match event {
                Ok(event) => {
                    for frame in session.encode(&event) {
                        if let Err(end) = ws::send_text(socket, frame, &ctx.stop).await {
                            return end;
                        }
                        last_traffic = Instant::now();
                    }
                }
                Err(RecvError::Lagged(skipped)) => metrics.lagged(skipped),
                Err(RecvError::Closed) => return End::MarketClosed,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// REST

type Params = Query<HashMap<String, String>>;

/// OKX's REST error: `{"code":"51000","msg":"Parameter instType error","data":[]}` with the
/// HTTP status OKX documents for the code.
#[derive(Debug, Clone, Copy)]
struct RestError {
    status: StatusCode,
    code: &'static str,
    msg: &'static str,
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"code": self.code, "msg": self.msg, "data": []})),
        )
            .into_response()
    }
}

fn rest_error(status: StatusCode, code: &'static str, msg: &'static str) -> Response {
    RestError { status, code, msg }.into_response()
}

fn rest_ok(data: Vec<Value>) -> Response {
    Json(json!({"code": "0", "msg": "", "data": data})).into_response()
}

/// `instType`: required; `SPOT` is what we simulate, the other real types list nothing.
fn spot_requested(q: &HashMap<String, String>) -> Result<bool, RestError> {
    match q.get("instType").map(String::as_str) {
        None | Some("") => Err(RestError {
            status: StatusCode::BAD_REQUEST,
            code: "50014",
            msg: "Parameter instType can not be empty.",
        }),
        Some("SPOT") => Ok(true),
        Some("MARGIN" | "SWAP" | "FUTURES" | "OPTION" | "EVENTS") => Ok(false),
        Some(_) => Err(RestError {
            status: StatusCode::BAD_REQUEST,
            code: "51000",
            msg: "Parameter instType error",
        }),
    }
}

fn no_such_instrument() -> Response {
    rest_error(
        StatusCode::OK,
        "51001",
        "Instrument ID, Instrument ID code or Spread ID doesn't exist.",
    )
}

fn instrument_json(i: usize, inst: &Instrument) -> Value {
    let lot = step(inst.qty_decimals);
    json!({
        "instType": "SPOT",
        "instId": inst.symbol.as_str(),
        "uly": "",
        "instFamily": "",
        "baseCcy": inst.symbol.base(),
        "quoteCcy": inst.symbol.quote(),
        "settleCcy": "",
        "ctVal": "",
        "ctMult": "",
        "ctValCcy": "",
        "ctType": "",
        "optType": "",
        "stk": "",
        "alias": "",
        "category": "1",
        "groupId": "1",
        "listTime": "1606468572000",
        "auctionEndTime": "",
        "contTdSwTime": "",
        "preMktSwTime": "",
        "openType": "",
        "expTime": "",
        "lever": "",
        "tickSz": step(inst.price_decimals),
        "lotSz": lot,
        "minSz": lot,
        "state": "live",
        "ruleType": "normal",
        "maxLmtSz": "9999999999",
        "maxMktSz": "1000000",
        "maxLmtAmt": "20000000",
        "maxMktAmt": "1000000",
        "maxTwapSz": "9999999999",
        "maxIcebergSz": "9999999999",
        "maxTriggerSz": "9999999999",
        "maxStopSz": "1000000",
        "futureSettlement": false,
        "tradeQuoteCcyList": [inst.symbol.quote()],
        "instIdCode": 1_000_000_000_u64 + i as u64,
        "instCategory": "1",
        "upcChg": [],
    })
}

async fn instruments(State(ctx): State<Arc<ExchangeCtx>>, Query(q): Params) -> Response {
    let spot = match spot_requested(&q) {
        Ok(spot) => spot,
        Err(e) => return e.into_response(),
    };
    if !spot {
        return rest_ok(Vec::new());
    }
    let u = &ctx.universe;
    match q.get("instId") {
        Some(id) => match u.by_canonical(id) {
            Some(i) => rest_ok(vec![instrument_json(i, &u.instruments[i])]),
            None => no_such_instrument(),
        },
        None => rest_ok(
            u.instruments
                .iter()
                .enumerate()
                .map(|(i, inst)| instrument_json(i, inst))
                .collect(),
        ),
    }
}

fn ticker_json(inst: &Instrument, q: &Quote) -> Value {
    serde_json::to_value(okx_ticker(inst, q)).unwrap_or(Value::Null)
}

async fn tickers(State(ctx): State<Arc<ExchangeCtx>>, Query(q): Params) -> Response {
    let spot = match spot_requested(&q) {
        Ok(spot) => spot,
        Err(e) => return e.into_response(),
    };
    if !spot {
        return rest_ok(Vec::new());
    }
    let views = ctx.board.exchange(ctx.index);
    let data = ctx
        .universe
        .instruments
        .iter()
        .zip(&views)
        .map(|(inst, view)| ticker_json(inst, &view.quote))
        .collect();
    rest_ok(data)
}

async fn ticker_one(State(ctx): State<Arc<ExchangeCtx>>, Query(q): Params) -> Response {
    let Some(id) = q.get("instId").filter(|s| !s.is_empty()) else {
        return rest_error(
            StatusCode::BAD_REQUEST,
            "50014",
            "Parameter instId can not be empty.",
        );
    };
    let Some(i) = ctx.universe.by_canonical(id) else {
        return no_such_instrument();
    };
    match ctx.board.get(ctx.index, i) {
        Some(view) => rest_ok(vec![ticker_json(&ctx.universe.instruments[i], &view.quote)]),
        None => no_such_instrument(),
    }
}

async fn rest_time() -> Response {
    rest_ok(vec![json!({"ts": (now_us() / 1_000).to_string()})])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::Model;
    use crate::ws::mock;
    use spreadagg_model::ExchangeId;
    use tokio::sync::Semaphore;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    fn setup() -> (Arc<Universe>, Arc<Board>) {
        let symbols = vec!["BTC-USDT".to_owned(), "ETH-USDT".to_owned()];
        let u = Arc::new(Universe::new(&symbols, &[ExchangeId::Okx]).expect("universe"));
        let model = Model::new(u.clone(), Duration::from_millis(100), 0.0, 1);
        let board = Arc::new(Board::new(u.instruments.len(), model.snapshot(now_us())));
        (u, board)
    }

    fn session() -> Session {
        let (u, board) = setup();
        Session::new(u, board, 0)
    }

    fn json_frames(r: &Replies) -> Vec<Value> {
        r.frames
            .iter()
            .map(|f| serde_json::from_str(f).expect("json"))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn subscribe_acks_each_arg_and_pushes_a_snapshot() {
        let mut s = session();
        let r = s.handle(
            r#"{"id":"1512","op":"subscribe","args":[{"channel":"bbo-tbt","instId":"BTC-USDT"},{"channel":"trades","instId":"BTC-USDT"}]}"#,
            Instant::now(),
        );
        let f = json_frames(&r);
        assert_eq!(f.len(), 3, "{f:?}");
        assert_eq!(
            f[0],
            json!({"id": "1512", "event": "subscribe", "arg": {"channel": "bbo-tbt", "instId": "BTC-USDT"}, "connId": s.conn_id})
        );
        assert_eq!(
            f[1]["arg"],
            json!({"channel": "bbo-tbt", "instId": "BTC-USDT"})
        );
        let level = &f[1]["data"][0]["asks"][0];
        assert_eq!(level.as_array().map(Vec::len), Some(4));
        assert_eq!(level[2], "0");
        assert_eq!(f[2]["event"], "subscribe");
        assert_eq!(f[2]["arg"]["channel"], "trades");
        assert_eq!(s.conn_id.len(), 8);
        assert!(s.conn_id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(r.rejected.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn errors_use_okx_codes() {
        let mut s = session();
        let now = Instant::now();
        let cases: &[(&str, &str, &str)] = &[
            ("{oops", "60012", "Invalid request: {oops"),
            (
                r#"{"op":"subscribe"}"#,
                "60012",
                r#"Invalid request: {"op":"subscribe"}"#,
            ),
            (r#"{"op":"login","args":[]}"#, "60019", "Invalid op: login"),
            (
                r#"{"op":"subscribe","args":[{"channel":"bbo-tbt","instId":"FOO-USDT"}]}"#,
                "60018",
                "Wrong URL or channel:bbo-tbt,instId:FOO-USDT doesn't exist. Please use the correct URL, channel and parameters referring to API document.",
            ),
            (
                r#"{"op":"subscribe","args":[{"channel":"books42","instId":"BTC-USDT"}]}"#,
                "60018",
                "Wrong URL or channel:books42,instId:BTC-USDT doesn't exist. Please use the correct URL, channel and parameters referring to API document.",
            ),
            (
                r#"{"op":"subscribe","args":[{"channel":"trades"}]}"#,
                "60027",
                "Parameter instId can not be empty.",
            ),
        ];
        for (request, code, msg) in cases {
            let f = json_frames(&s.handle(request, now));
            assert_eq!(f.len(), 1, "{request}");
            assert_eq!(f[0]["event"], "error", "{request}");
            assert_eq!(f[0]["code"], *code, "{request}");
            assert_eq!(f[0]["msg"], *msg, "{request}");
            assert_eq!(f[0]["connId"], s.conn_id.as_str());
        }
        assert!(!s.subscribed_ever);
    }

    #[tokio::test(start_paused = true)]
    async fn mixed_args_get_one_answer_each_and_unsubscribe_stops_data() {
        let mut s = session();
        let now = Instant::now();
        let r = s.handle(
            r#"{"op":"subscribe","args":[{"channel":"trades","instId":"ETH-USDT"},{"channel":"trades","instId":"NOPE-USDT"}]}"#,
            now,
        );
        let f = json_frames(&r);
        assert_eq!(
            (f[0]["event"].as_str(), f[1]["event"].as_str()),
            (Some("subscribe"), Some("error"))
        );
        let trade = MarketEvent::Trade(Trade {
            symbol: 1,
            seq: 9,
            trade_id: 130_639_474,
            price: 4_221_990,
            qty: 12_060,
            taker_buy: true,
            ts_us: 1_630_048_897_897_000,
        });
        let pushed: Value = serde_json::from_str(&s.encode(&trade)[0]).expect("json");
        assert_eq!(
            pushed,
            json!({"arg": {"channel": "trades", "instId": "ETH-USDT"}, "data": [{"instId": "ETH-USDT", "tradeId": "130639474", "px": "42219.9", "sz": "1.206", "side": "buy", "ts": "1630048897897", "count": "1", "source": "0", "seqId": 9}]})
        );
        let r = s.handle(
            r#"{"op":"unsubscribe","args":[{"channel":"trades","instId":"ETH-USDT"}]}"#,
            now,
        );
        assert_eq!(json_frames(&r)[0]["event"], "unsubscribe");
        assert!(s.encode(&trade).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_481st_request_in_an_hour_is_refused() {
        let mut s = session();
        let now = Instant::now();
        let req = r#"{"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"}]}"#;
        for _ in 0..MAX_OPS_PER_HOUR {
            assert!(s.handle(req, now).rejected.is_empty());
        }
        let f = json_frames(&s.handle(req, now));
        assert_eq!(f[0]["code"], "60014");
        assert!(
            s.handle(req, now + Duration::from_secs(3_600))
                .rejected
                .is_empty()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tickers_carry_24h_statistics() {
        let mut s = session();
        let f = json_frames(&s.handle(
            r#"{"op":"subscribe","args":[{"channel":"tickers","instId":"BTC-USDT"}]}"#,
            Instant::now(),
        ));
        let t = &f[1]["data"][0];
        for key in [
            "instType",
            "instId",
            "last",
            "lastSz",
            "askPx",
            "askSz",
            "bidPx",
            "bidSz",
            "open24h",
            "high24h",
            "low24h",
            "volCcy24h",
            "vol24h",
            "sodUtc0",
            "sodUtc8",
            "ts",
        ] {
            assert!(t[key].is_string(), "{key} in {t}");
        }
        let bid: f64 = t["bidPx"]
            .as_str()
            .and_then(|x| x.parse().ok())
            .expect("bid");
        let ask: f64 = t["askPx"]
            .as_str()
            .and_then(|x| x.parse().ok())
            .expect("ask");
        assert!(0.0 < bid && bid < ask);
    }

    fn harness() -> (
        Arc<ExchangeCtx>,
        broadcast::Sender<MarketEvent>,
        CancellationToken,
    ) {
        let (u, board) = setup();
        let (market, _) = broadcast::channel(16);
        let stop = CancellationToken::new();
        let ctx = Arc::new(ExchangeCtx {
            exchange: ExchangeId::Okx,
            index: 0,
            universe: u,
            board,
            events: market.clone(),
            stop: stop.clone(),
            tracker: TaskTracker::new(),
            sessions: Arc::new(Semaphore::new(1)),
            binance_ping_interval: Duration::from_secs(20),
        });
        (ctx, market, stop)
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_subscribes_is_closed_after_30s_even_if_it_pings() {
        let (ctx, market, _stop) = harness();
        let (socket, mut client) = mock::socket();
        let session = Session::new(ctx.universe.clone(), ctx.board.clone(), 0);
        let task = tokio::spawn(run(socket, ctx.clone(), session, market.subscribe()));
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(20)).await;
        client.send_text("ping");
        assert_eq!(client.next_text().await.as_deref(), Some("pong"));
        assert!(
            matches!(client.next().await, Some(Message::Close(Some(c))) if c.code == 4004 && c.reason.as_str() == "No data received in 30s")
        );
        assert_eq!(t0.elapsed(), IDLE_TIMEOUT);
        task.await.expect("session");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_and_pings_keep_it_open() {
        let (ctx, market, stop) = harness();
        let (socket, mut client) = mock::socket();
        let session = Session::new(ctx.universe.clone(), ctx.board.clone(), 0);
        let task = tokio::spawn(run(socket, ctx.clone(), session, market.subscribe()));
        client.send_text(r#"{"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"}]}"#);
        assert!(
            client
                .next_text()
                .await
                .is_some_and(|t| t.contains("\"subscribe\""))
        );
        // No trades arrive; pings every 25 s keep the connection for two minutes.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(25)).await;
            client.send_text("ping");
            assert_eq!(client.next_text().await.as_deref(), Some("pong"));
        }
        let t0 = Instant::now();
        assert!(matches!(client.next().await, Some(Message::Close(Some(c))) if c.code == 4004));
        assert_eq!(t0.elapsed(), IDLE_TIMEOUT);
        task.await.expect("session");
        drop(stop);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_sends_the_upgrade_notice_then_closes() {
        let (ctx, market, stop) = harness();
        let (socket, mut client) = mock::socket();
        let session = Session::new(ctx.universe.clone(), ctx.board.clone(), 0);
        let task = tokio::spawn(run(socket, ctx.clone(), session, market.subscribe()));
        stop.cancel();
        let notice: Value =
            serde_json::from_str(&client.next_text().await.expect("notice")).expect("json");
        assert_eq!(
            (notice["event"].as_str(), notice["code"].as_str()),
            (Some("notice"), Some("64008"))
        );
        assert!(matches!(client.next().await, Some(Message::Close(Some(c))) if c.code == 1001));
        task.await.expect("session");
    }
}
