//! Binance spot public market data, served the way Binance documents it.
//!
//! WebSocket streams (<https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams>):
//! raw streams at `/ws` and `/ws/<stream>[/<stream>..]`, combined streams at
//! `/stream?streams=<a>/<b>` (payloads wrapped as `{"stream":..,"data":..}`), `timeUnit=MICROSECOND`
//! for microsecond times; live `SUBSCRIBE` / `UNSUBSCRIBE` / `LIST_SUBSCRIPTIONS` /
//! `SET_PROPERTY` / `GET_PROPERTY` requests with Binance's error objects; `<symbol>@bookTicker`
//! and `<symbol>@trade` streams. Any other well-formed stream name is accepted and stays silent,
//! as on Binance. Limits: 1024 streams per connection, 5 incoming messages per second (pings,
//! pongs and requests count; one more and the connection is closed), a server Ping every
//! `binance_ping_interval_s` that must be answered with a Pong echoing its payload within a
//! minute, a 24 h connection lifetime, and a `serverShutdown` event before the simulator stops.
//!
//! REST (<https://developers.binance.com/docs/binance-spot-api-docs/rest-api>): `/api/v3/ping`,
//! `/api/v3/time`, `/api/v3/exchangeInfo`, `/api/v3/ticker/24hr`, `/api/v3/ticker/bookTicker`,
//! with `symbol=` / `symbols=[..]` and Binance's `{"code":-1121,"msg":"Invalid symbol."}` errors.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, MissedTickBehavior};

use crate::format::{float, padded};
use crate::market::{Instrument, MarketEvent, Quote, SlotView, Trade, Universe, now_us};
use crate::ws::{self, End, ExchangeCtx, RateWindow, SessionMetrics, Socket, to_json};

/// Binance spot writes every price and quantity with 8 decimals.
const DECIMALS: u32 = 8;
/// Streams one connection may listen to.
pub(crate) const MAX_STREAMS: usize = 1024;
/// Incoming messages (requests, pings, pongs) allowed per second; one more disconnects.
pub(crate) const MAX_INBOUND_PER_SECOND: usize = 5;
/// A Ping must be answered by a Pong with its payload within this long.
pub(crate) const PONG_TIMEOUT: Duration = Duration::from_secs(60);
/// Binance closes every connection at the 24 h mark.
pub(crate) const MAX_CONNECTION_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// Unanswered pings remembered for matching Pongs (the oldest one times the connection out).
const MAX_UNANSWERED_PINGS: usize = 64;
/// Longest stream name accepted; real ones are far shorter.
const MAX_STREAM_NAME: usize = 100;
/// Longest string request id Binance accepts.
const MAX_ID_LEN: usize = 36;

const WANT_BOOK: u8 = 1;
const WANT_TRADE: u8 = 2;

/// The Binance listener's routes.
pub(crate) fn router(ctx: Arc<ExchangeCtx>) -> Router {
    Router::new()
        .route("/ws", get(ws_raw))
        .route("/ws/", get(ws_raw))
        .route("/ws/{*streams}", get(ws_raw_streams))
        .route("/stream", get(ws_combined))
        .route("/api/v3/ping", get(rest_ping))
        .route("/api/v3/time", get(rest_time))
        .route("/api/v3/exchangeInfo", get(exchange_info))
        .route("/api/v3/ticker/24hr", get(ticker_24hr))
        .route("/api/v3/ticker/bookTicker", get(book_ticker))
        .with_state(ctx)
}

// ---------------------------------------------------------------------------------------------
// WebSocket

type Params = Query<HashMap<String, String>>;

async fn ws_raw(
    State(ctx): State<Arc<ExchangeCtx>>,
    Query(q): Params,
    ws: WebSocketUpgrade,
) -> Response {
    open(ctx, ws, &q, &[], false)
}

async fn ws_raw_streams(
    State(ctx): State<Arc<ExchangeCtx>>,
    Path(streams): Path<String>,
    Query(q): Params,
    ws: WebSocketUpgrade,
) -> Response {
    let streams: Vec<&str> = streams.split('/').filter(|s| !s.is_empty()).collect();
    open(ctx, ws, &q, &streams, false)
}

async fn ws_combined(
    State(ctx): State<Arc<ExchangeCtx>>,
    Query(q): Params,
    ws: WebSocketUpgrade,
) -> Response {
    let streams: Vec<&str> = q
        .get("streams")
        .map(|s| s.split('/').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    open(ctx, ws, &q, &streams, true)
}

fn open(
    ctx: Arc<ExchangeCtx>,
    ws: WebSocketUpgrade,
    query: &HashMap<String, String>,
    streams: &[&str],
    combined: bool,
) -> Response {
    let micros = matches!(
        query.get("timeUnit").map(String::as_str),
        Some("MICROSECOND" | "microsecond")
    );
    let mut session = Session::new(ctx.universe.clone(), combined, micros);
    if let Err(msg) = session.subscribe(streams.iter().copied()) {
        return (StatusCode::BAD_REQUEST, msg).into_response();
    }
    let context = ctx.clone();
    ws::accept(&ctx, ws, move |socket, events| {
        run(socket, context, session, events)
    })
}

/// The request body of Binance's live subscription protocol.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    method: Method,
    #[serde(default)]
    params: Option<Vec<Value>>,
    /// Validated from the raw value before this parse (errors need it); listed so that
    /// `deny_unknown_fields` accepts it.
    #[serde(default, rename = "id")]
    _id: serde::de::IgnoredAny,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum Method {
    Subscribe,
    Unsubscribe,
    ListSubscriptions,
    SetProperty,
    GetProperty,
}

/// `{"result":..,"id":..}`, in Binance's field order.
#[derive(Serialize)]
struct Reply<'a, T: Serialize> {
    result: T,
    id: &'a Value,
}

/// `{"error":{"code":..,"msg":..},"id":..}`.
#[derive(Serialize)]
struct ErrorReply<'a> {
    error: ErrorBody<'a>,
    id: &'a Value,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: i64,
    msg: &'a str,
}

/// `{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}`
#[derive(Serialize)]
struct BookTicker<'a> {
    u: u64,
    s: &'a str,
    b: String,
    #[serde(rename = "B")]
    bid_qty: String,
    a: String,
    #[serde(rename = "A")]
    ask_qty: String,
}

/// `{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","T":1672515782136,"m":true,"M":true}`
#[derive(Serialize)]
struct TradeEvent<'a> {
    e: &'static str,
    #[serde(rename = "E")]
    event_time: i64,
    s: &'a str,
    t: u64,
    p: String,
    q: String,
    #[serde(rename = "T")]
    trade_time: i64,
    /// Is the buyer the maker, i.e. did the taker sell?
    m: bool,
    #[serde(rename = "M")]
    ignore: bool,
}

/// `{"e":"serverShutdown","E":1770123456789}`
#[derive(Serialize)]
struct ServerShutdown {
    e: &'static str,
    #[serde(rename = "E")]
    event_time: i64,
}

/// `{"stream":"btcusdt@bookTicker","data":{..}}` on combined connections.
#[derive(Serialize)]
struct Combined<'a, T: Serialize> {
    stream: &'a str,
    data: T,
}

/// Why a request got an error reply (metric label).
#[derive(Debug, Clone, Copy)]
enum Reject {
    InvalidJson,
    InvalidRequest,
    BadId,
    BadStream,
    TooManyStreams,
    UnknownProperty,
    BadPropertyValue,
}

impl Reject {
    const fn label(self) -> &'static str {
        match self {
            Reject::InvalidJson => "invalid_json",
            Reject::InvalidRequest => "invalid_request",
            Reject::BadId => "bad_id",
            Reject::BadStream => "bad_stream",
            Reject::TooManyStreams => "too_many_streams",
            Reject::UnknownProperty => "unknown_property",
            Reject::BadPropertyValue => "bad_property_value",
        }
    }
}

/// One connection's protocol state: its streams and properties. Pure; [`run`] does the I/O.
#[derive(Debug)]
pub(crate) struct Session {
    universe: Arc<Universe>,
    streams: BTreeSet<String>,
    /// Per symbol: which of its streams are wanted (`WANT_BOOK | WANT_TRADE`).
    wants: Vec<u8>,
    combined: bool,
    micros: bool,
}

fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_STREAM_NAME
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

/// Binance accepts a 64-bit signed integer, an alphanumeric string of up to 36 characters, or null.
fn valid_id(id: &Value) -> bool {
    match id {
        Value::Null => true,
        Value::Number(n) => n.is_i64(),
        Value::String(s) => s.len() <= MAX_ID_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric()),
        _ => false,
    }
}

impl Session {
    pub(crate) fn new(universe: Arc<Universe>, combined: bool, micros: bool) -> Self {
        let wants = vec![0; universe.instruments.len()];
        Self {
            universe,
            streams: BTreeSet::new(),
            wants,
            combined,
            micros,
        }
    }

    /// The (symbol, flag) a stream name carries data for, if it is one we publish.
    fn target(&self, name: &str) -> Option<(usize, u8)> {
        let (symbol, kind) = name.split_once('@')?;
        let flag = match kind {
            "bookTicker" => WANT_BOOK,
            "trade" => WANT_TRADE,
            _ => return None,
        };
        Some((self.universe.by_stream(symbol)?, flag))
    }

    fn recompute(&mut self) {
        self.wants.iter_mut().for_each(|w| *w = 0);
        for name in &self.streams {
            if let Some((symbol, flag)) = self.target(name)
                && let Some(w) = self.wants.get_mut(symbol)
            {
                *w |= flag;
            }
        }
    }

    /// Adds streams, all or none.
    fn subscribe<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
        let mut added = Vec::new();
        for name in names {
            if !valid_stream_name(name) {
                return Err(format!("Invalid request: invalid stream name {name:?}"));
            }
            if !self.streams.contains(name) && !added.contains(&name) {
                added.push(name);
            }
        }
        if self.streams.len() + added.len() > MAX_STREAMS {
            return Err(format!(
                "Invalid request: too many streams (at most {MAX_STREAMS} per connection)"
            ));
        }
        self.streams.extend(added.into_iter().map(str::to_owned));
        self.recompute();
        Ok(())
    }

    fn error(code: i64, msg: &str, id: &Value) -> String {
        to_json(&ErrorReply {
            error: ErrorBody { code, msg },
            id,
        })
    }

    /// Answers one request frame with exactly one reply frame; `Err` carries the reply when
    /// the request was refused.
    fn handle(&mut self, text: &str) -> Result<String, (String, Reject)> {
        let raw: Value = serde_json::from_str(text).map_err(|e| {
            (
                Self::error(3, &format!("Invalid JSON: {e}"), &Value::Null),
                Reject::InvalidJson,
            )
        })?;
        let id = raw.get("id").cloned().unwrap_or(Value::Null);
        if !valid_id(&id) {
            return Err((
                Self::error(
                    2,
                    "Invalid request: request ID must be an unsigned integer",
                    &Value::Null,
                ),
                Reject::BadId,
            ));
        }
        let request: Request = serde_json::from_str(text).map_err(|e| {
            (
                Self::error(2, &format!("Invalid request: {e}"), &id),
                Reject::InvalidRequest,
            )
        })?;
        let params = request.params.unwrap_or_default();
        let invalid = |msg: &str, why: Reject| (Self::error(2, msg, &id), why);
        match request.method {
            Method::Subscribe | Method::Unsubscribe => {
                let mut names = Vec::with_capacity(params.len());
                for p in &params {
                    match p.as_str() {
                        Some(name) => names.push(name),
                        None => {
                            return Err(invalid(
                                "Invalid request: stream names must be strings",
                                Reject::BadStream,
                            ));
                        }
                    }
                }
                if matches!(request.method, Method::Subscribe) {
                    self.subscribe(names).map_err(|msg| {
                        let why = if msg.contains("too many") {
                            Reject::TooManyStreams
                        } else {
                            Reject::BadStream
                        };
                        invalid(&msg, why)
                    })?;
                } else {
                    for name in names {
                        self.streams.remove(name);
                    }
                    self.recompute();
                }
                Ok(to_json(&Reply {
                    result: Value::Null,
                    id: &id,
                }))
            }
            Method::ListSubscriptions => {
                if !params.is_empty() {
                    return Err(invalid(
                        "Invalid request: too many parameters",
                        Reject::InvalidRequest,
                    ));
                }
                let list: Vec<&str> = self.streams.iter().map(String::as_str).collect();
                Ok(to_json(&Reply {
                    result: list,
                    id: &id,
                }))
            }
            Method::SetProperty | Method::GetProperty => {
                let expected = if matches!(request.method, Method::SetProperty) {
                    2
                } else {
                    1
                };
                if params.len() > expected {
                    return Err(invalid(
                        "Invalid request: too many parameters",
                        Reject::InvalidRequest,
                    ));
                }
                let Some(name) = params.first().and_then(Value::as_str) else {
                    return Err(invalid(
                        "Invalid request: property name must be a string",
                        Reject::InvalidRequest,
                    ));
                };
                if name != "combined" {
                    return Err((
                        Self::error(0, "Unknown property", &id),
                        Reject::UnknownProperty,
                    ));
                }
                if matches!(request.method, Method::GetProperty) {
                    return Ok(to_json(&Reply {
                        result: self.combined,
                        id: &id,
                    }));
                }
                match params.get(1).and_then(Value::as_bool) {
                    Some(on) => {
                        self.combined = on;
                        Ok(to_json(&Reply {
                            result: Value::Null,
                            id: &id,
                        }))
                    }
                    None => Err((
                        Self::error(1, "Invalid value type: expected Boolean", &id),
                        Reject::BadPropertyValue,
                    )),
                }
            }
        }
    }

    fn time(&self, ts_us: i64) -> i64 {
        if self.micros { ts_us } else { ts_us / 1_000 }
    }

    fn wrap<T: Serialize>(&self, stream: &str, data: T) -> String {
        if self.combined {
            to_json(&Combined { stream, data })
        } else {
            to_json(&data)
        }
    }

    /// The frame for a market event, if this connection listens to it.
    fn encode(&self, event: &MarketEvent) -> Option<String> {
        match event {
            MarketEvent::Quote(q) => {
                if self.wants.get(q.symbol).copied().unwrap_or(0) & WANT_BOOK == 0 {
                    return None;
                }
                let inst = self.universe.instruments.get(q.symbol)?;
                let stream = format!("{}@bookTicker", inst.stream);
                Some(self.wrap(&stream, book_ticker_payload(inst, q)))
            }
            MarketEvent::Trade(t) => {
                if self.wants.get(t.symbol).copied().unwrap_or(0) & WANT_TRADE == 0 {
                    return None;
                }
                let inst = self.universe.instruments.get(t.symbol)?;
                let stream = format!("{}@trade", inst.stream);
                Some(self.wrap(&stream, self.trade_payload(inst, t)))
            }
        }
    }

    fn trade_payload<'a>(&self, inst: &'a Instrument, t: &Trade) -> TradeEvent<'a> {
        TradeEvent {
            e: "trade",
            event_time: self.time(t.ts_us),
            s: &inst.concat,
            t: t.trade_id,
            p: padded(t.price, inst.price_decimals, DECIMALS),
            q: padded(t.qty, inst.qty_decimals, DECIMALS),
            trade_time: self.time(t.ts_us),
            m: !t.taker_buy,
            ignore: true,
        }
    }

    fn server_shutdown(&self) -> String {
        self.wrap(
            "!serverShutdown",
            ServerShutdown {
                e: "serverShutdown",
                event_time: self.time(now_us()),
            },
        )
    }
}

fn book_ticker_payload<'a>(inst: &'a Instrument, q: &Quote) -> BookTicker<'a> {
    BookTicker {
        u: q.seq,
        s: &inst.concat,
        b: padded(q.book.bid, inst.price_decimals, DECIMALS),
        bid_qty: padded(q.book.bid_qty, inst.qty_decimals, DECIMALS),
        a: padded(q.book.ask, inst.price_decimals, DECIMALS),
        ask_qty: padded(q.book.ask_qty, inst.qty_decimals, DECIMALS),
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
    // How Binance says goodbye; a client that left or stopped reading gets nothing.
    let goodbye = match end {
        End::Shutdown | End::MarketClosed => Some((1001, "server shutdown")),
        End::MaxLifetime => Some((1000, "connection lifetime exceeded")),
        End::PongTimeout => Some((1008, "pong timeout")),
        End::RateLimited => Some((1008, "too many requests")),
        End::ClientClosed
        | End::SocketError
        | End::SlowClient
        | End::Idle
        | End::NoSubscription => None,
    };
    if let Some((code, reason)) = goodbye {
        let notice =
            matches!(end, End::Shutdown | End::MarketClosed).then(|| session.server_shutdown());
        ws::close(&mut socket, notice, code, reason).await;
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
    let started = Instant::now();
    let every = ctx.binance_ping_interval;
    let mut ping = tokio::time::interval_at(started + every, every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let lifetime = tokio::time::sleep_until(started + MAX_CONNECTION_AGE);
    tokio::pin!(lifetime);
    let mut unanswered: VecDeque<(Bytes, Instant)> = VecDeque::new();
    let mut inbound = RateWindow::new(MAX_INBOUND_PER_SECOND, Duration::from_secs(1));
    loop {
        let pong_due = unanswered.front().map(|(_, sent)| *sent + PONG_TIMEOUT);
        tokio::select! {
            biased;
            () = ctx.stop.cancelled() => return End::Shutdown,
            () = &mut lifetime => return End::MaxLifetime,
            () = ws::sleep_until_opt(pong_due) => return End::PongTimeout,
            _ = ping.tick() => {
                let payload = Bytes::from((now_us() / 1_000).to_string());
                if let Err(end) = ws::send(socket, Message::Ping(payload.clone()), &ctx.stop).await {
                    return end;
                }
                if unanswered.len() < MAX_UNANSWERED_PINGS {
                    unanswered.push_back((payload, Instant::now()));
                }
            }
            frame = socket.next() => {
                let frame = match frame {
                    None | Some(Ok(Message::Close(_))) => return End::ClientClosed,
                    Some(Err(_)) => return End::SocketError,
                    Some(Ok(frame)) => frame,
                };
                if !inbound.allow(Instant::now()) {
                    metrics.rejected("rate_limited");
                    return End::RateLimited;
                }
                let reply = match frame {
                    Message::Text(text) => Some(session.handle(text.as_str())),
                    Message::Binary(data) => Some(match std::str::from_utf8(&data) {
                        Ok(text) => session.handle(text),
                        Err(_) => Err((
                            Session::error(3, "Invalid JSON: invalid UTF-8", &Value::Null),
                            Reject::InvalidJson,
                        )),
                    }),
                    Message::Pong(payload) => {
                        // Only a Pong echoing one of our Pings counts; unsolicited ones do not.
                        if let Some(i) = unanswered.iter().position(|(p, _)| *p == payload) {
                            unanswered.drain(..=i);
                        }
                        None
                    }
                    // Answered by the WebSocket layer; it still counted against the limit.
                    Message::Ping(_) | Message::Close(_) => None,
                };
                let text = match reply {
                    None => continue,
                    Some(Ok(text)) => text,
                    Some(Err((text, why))) => {
                        metrics.rejected(why.label());
                        text
                    }
                };
                if let Err(end) = ws::send_text(socket, text, &ctx.stop).await {
                    return end;
                }
            }
            event = events.recv() => match event {
                Ok(event) => {
                    if let Some(text) = session.encode(&event)
                        && let Err(end) = ws::send_text(socket, text, &ctx.stop).await
                    {
                        return end;
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

/// Binance's REST error: HTTP 400 with `{"code":-1121,"msg":"Invalid symbol."}`.
#[derive(Debug, Clone, Copy)]
struct RestError {
    code: i64,
    msg: &'static str,
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

const fn rest_error(code: i64, msg: &'static str) -> RestError {
    RestError { code, msg }
}

fn now_ms() -> i64 {
    now_us() / 1_000
}

/// Which symbols a request names: `symbol=BTCUSDT`, `symbols=["BTCUSDT","ETHBTC"]`, or all.
/// The flag says a single `symbol` was asked for (some endpoints then answer an object).
fn select(
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

async fn rest_ping() -> Json<Value> {
    Json(json!({}))
}

async fn rest_time() -> Json<Value> {
    Json(json!({"serverTime": now_ms()}))
}

fn symbol_info(inst: &Instrument) -> Value {
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

async fn exchange_info(State(ctx): State<Arc<ExchangeCtx>>, Query(q): Params) -> Response {
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

fn ticker(inst: &Instrument, view: &SlotView, mini: bool, now: i64) -> Value {
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

async fn ticker_24hr(State(ctx): State<Arc<ExchangeCtx>>, Query(q): Params) -> Response {
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

async fn book_ticker(State(ctx): State<Arc<ExchangeCtx>>, Query(q): Params) -> Response {
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
fn respond(mut items: Vec<Value>, single: bool) -> Response {
    if single && let Some(one) = items.pop() {
        return Json(one).into_response();
    }
    Json(Value::Array(items)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::{Board, Model};
    use crate::ws::mock;
    use spreadagg_model::ExchangeId;
    use tokio::sync::Semaphore;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    fn universe() -> Arc<Universe> {
        let symbols = vec!["BTC-USDT".to_owned(), "ETH-BTC".to_owned()];
        Arc::new(Universe::new(&symbols, &[ExchangeId::Binance]).expect("universe"))
    }

    fn session() -> Session {
        Session::new(universe(), false, false)
    }

    fn reply(s: &mut Session, text: &str) -> Value {
        let frame = match s.handle(text) {
            Ok(t) | Err((t, _)) => t,
        };
        serde_json::from_str(&frame).expect("replies are JSON")
    }

    #[test]
    fn requests_get_binance_replies() {
        let mut s = session();
        let cases: &[(&str, &str, Value)] = &[
            (
                "subscribe",
                r#"{"method":"SUBSCRIBE","params":["btcusdt@bookTicker","btcusdt@trade"],"id":1}"#,
                json!({"result": null, "id": 1}),
            ),
            (
                "list",
                r#"{"method":"LIST_SUBSCRIPTIONS","id":"abc"}"#,
                json!({"result": ["btcusdt@bookTicker", "btcusdt@trade"], "id": "abc"}),
            ),
            (
                "unsubscribe",
                r#"{"method":"UNSUBSCRIBE","params":["btcusdt@trade"],"id":2}"#,
                json!({"result": null, "id": 2}),
            ),
            (
                "unknown symbol accepted",
                r#"{"method":"SUBSCRIBE","params":["foousdt@bookTicker"],"id":3}"#,
                json!({"result": null, "id": 3}),
            ),
            (
                "get combined",
                r#"{"method":"GET_PROPERTY","params":["combined"],"id":4}"#,
                json!({"result": false, "id": 4}),
            ),
            (
                "set combined",
                r#"{"method":"SET_PROPERTY","params":["combined",true],"id":5}"#,
                json!({"result": null, "id": 5}),
            ),
            (
                "null id",
                r#"{"method":"GET_PROPERTY","params":["combined"],"id":null}"#,
                json!({"result": true, "id": null}),
            ),
            (
                "bad json",
                "{not json",
                json!({"error": {"code": 3, "msg": "Invalid JSON: key must be a string at line 1 column 2"}, "id": null}),
            ),
            (
                "unknown method",
                r#"{"method":"SUBSCRIB","id":7}"#,
                json!({"error": {"code": 2, "msg": "Invalid request: unknown variant `SUBSCRIB`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY` at line 1 column 20"}, "id": 7}),
            ),
            (
                "missing method",
                r#"{"params":[],"id":8}"#,
                json!({"error": {"code": 2, "msg": "Invalid request: missing field `method` at line 1 column 20"}, "id": 8}),
            ),
            (
                "bad id",
                r#"{"method":"LIST_SUBSCRIPTIONS","id":[1]}"#,
                json!({"error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}, "id": null}),
            ),
            (
                "unknown property",
                r#"{"method":"GET_PROPERTY","params":["colour"],"id":9}"#,
                json!({"error": {"code": 0, "msg": "Unknown property"}, "id": 9}),
            ),
            (
                "bad property value",
                r#"{"method":"SET_PROPERTY","params":["combined","yes"],"id":10}"#,
                json!({"error": {"code": 1, "msg": "Invalid value type: expected Boolean"}, "id": 10}),
            ),
            (
                "non-string stream",
                r#"{"method":"SUBSCRIBE","params":[42],"id":11}"#,
                json!({"error": {"code": 2, "msg": "Invalid request: stream names must be strings"}, "id": 11}),
            ),
        ];
        for (name, request, want) in cases {
            assert_eq!(&reply(&mut s, request), want, "{name}");
        }
    }

    #[test]
    fn stream_cap_is_all_or_nothing() {
        let mut s = session();
        let many: Vec<String> = (0..MAX_STREAMS).map(|i| format!("sym{i}@trade")).collect();
        let request = json!({"method": "SUBSCRIBE", "params": many, "id": 1}).to_string();
        assert_eq!(reply(&mut s, &request), json!({"result": null, "id": 1}));
        let over = r#"{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":2}"#;
        let r = reply(&mut s, over);
        assert_eq!(r["error"]["code"], 2, "{r}");
        assert_eq!(s.streams.len(), MAX_STREAMS);
        assert_eq!(s.wants[0], 0, "the refused stream was not added");
    }

    #[test]
    fn payloads_have_binance_shapes() {
        let mut s = session();
        reply(
            &mut s,
            r#"{"method":"SUBSCRIBE","params":["btcusdt@bookTicker","ethbtc@trade"],"id":1}"#,
        );
        let inst = &s.universe.instruments[0];
        let q = Quote {
            symbol: 0,
            seq: 400_900_217,
            book: crate::market::Book {
                bid: 2_535_190,
                bid_qty: 3_121_000,
                ask: 2_536_520,
                ask_qty: 4_066_000,
                bid_orders: 1,
                ask_orders: 1,
            },
            stats: Model::new(s.universe.clone(), Duration::from_millis(100), 0.0, 1).snapshot(0)
                [0]
            .quote
            .stats,
            ts_us: 1_672_515_782_136_000,
        };
        let text = s.encode(&MarketEvent::Quote(q)).expect("subscribed");
        assert_eq!(inst.price_decimals, 2);
        assert_eq!(
            text,
            r#"{"u":400900217,"s":"BTCUSDT","b":"25351.90000000","B":"31.21000000","a":"25365.20000000","A":"40.66000000"}"#
        );
        let trade = Trade {
            symbol: 1,
            seq: 1,
            trade_id: 12_345,
            price: 4_684,
            qty: 1_000_000,
            taker_buy: false,
            ts_us: 1_672_515_782_136_000,
        };
        assert_eq!(
            s.encode(&MarketEvent::Trade(trade)).expect("subscribed"),
            r#"{"e":"trade","E":1672515782136,"s":"ETHBTC","t":12345,"p":"0.04684000","q":"100.00000000","T":1672515782136,"m":true,"M":true}"#
        );
        assert!(
            s.encode(&MarketEvent::Trade(Trade { symbol: 0, ..trade }))
                .is_none(),
            "not subscribed"
        );
        s.combined = true;
        s.micros = true;
        let wrapped: Value =
            serde_json::from_str(&s.encode(&MarketEvent::Trade(trade)).expect("subscribed"))
                .expect("json");
        assert_eq!(wrapped["stream"], "ethbtc@trade");
        assert_eq!(wrapped["data"]["T"], 1_672_515_782_136_000_i64);
        let shutdown: Value = serde_json::from_str(&s.server_shutdown()).expect("json");
        assert_eq!(shutdown["stream"], "!serverShutdown");
        assert_eq!(shutdown["data"]["e"], "serverShutdown");
    }

    struct Harness {
        ctx: Arc<ExchangeCtx>,
        market: broadcast::Sender<MarketEvent>,
        stop: CancellationToken,
    }

    fn harness(ping: Duration) -> Harness {
        let u = universe();
        let model = Model::new(u.clone(), Duration::from_millis(100), 0.0, 1);
        let board = Arc::new(Board::new(u.instruments.len(), model.snapshot(0)));
        let (market, _) = broadcast::channel(16);
        let stop = CancellationToken::new();
        let ctx = Arc::new(ExchangeCtx {
            exchange: ExchangeId::Binance,
            index: 0,
            universe: u,
            board,
            events: market.clone(),
            stop: stop.clone(),
            tracker: TaskTracker::new(),
            sessions: Arc::new(Semaphore::new(1)),
            binance_ping_interval: ping,
        });
        Harness { ctx, market, stop }
    }

    fn start(h: &Harness) -> (tokio::task::JoinHandle<()>, mock::Client) {
        let (socket, client) = mock::socket();
        let session = Session::new(h.ctx.universe.clone(), false, false);
        let task = tokio::spawn(run(socket, h.ctx.clone(), session, h.market.subscribe()));
        (task, client)
    }

    #[tokio::test(start_paused = true)]
    async fn pings_and_drops_a_client_that_never_pongs() {
        let h = harness(Duration::from_secs(20));
        let (task, mut client) = start(&h);
        let t0 = Instant::now();
        let Some(Message::Ping(first)) = client.next().await else {
            panic!("a ping first")
        };
        assert_eq!(t0.elapsed(), Duration::from_secs(20));
        assert!(!first.is_empty());
        let mut closed = None;
        while let Some(frame) = client.next().await {
            if let Message::Close(Some(c)) = frame {
                closed = Some(c.code);
                break;
            }
        }
        assert_eq!(closed, Some(1008));
        // The first ping went out at 20 s; a minute later the connection is gone.
        assert_eq!(t0.elapsed(), Duration::from_secs(80));
        task.await.expect("session");
    }

    #[tokio::test(start_paused = true)]
    async fn pongs_echoing_the_payload_keep_the_connection() {
        let h = harness(Duration::from_secs(20));
        let (task, mut client) = start(&h);
        for _ in 0..10 {
            match client.next().await {
                Some(Message::Ping(p)) => {
                    let _ = client.to_server.send(Message::Pong(p));
                }
                other => panic!("expected a ping, got {other:?}"),
            }
        }
        // 200 s in, well past one pong timeout: still open. An unsolicited pong does not help.
        let _ = client
            .to_server
            .send(Message::Pong(Bytes::from_static(b"x")));
        h.stop.cancel();
        let shutdown = client.next_text().await.expect("serverShutdown");
        assert!(shutdown.contains("serverShutdown"), "{shutdown}");
        assert!(matches!(client.next().await, Some(Message::Close(Some(c))) if c.code == 1001));
        task.await.expect("session");
    }

    #[tokio::test(start_paused = true)]
    async fn a_sixth_message_within_a_second_disconnects() {
        let h = harness(Duration::from_secs(20));
        let (task, mut client) = start(&h);
        for i in 0..5 {
            client.send_text(&format!(r#"{{"method":"LIST_SUBSCRIPTIONS","id":{i}}}"#));
            let r = client.next_text().await.expect("reply");
            assert!(r.contains("result"), "{r}");
        }
        client.send_text(r#"{"method":"LIST_SUBSCRIPTIONS","id":5}"#);
        assert!(matches!(client.next().await, Some(Message::Close(Some(c))) if c.code == 1008));
        task.await.expect("session");
    }

    #[tokio::test(start_paused = true)]
    async fn closes_at_the_24_hour_mark() {
        let h = harness(Duration::from_secs(3_600 * 25));
        let (task, mut client) = start(&h);
        let t0 = Instant::now();
        assert!(matches!(client.next().await, Some(Message::Close(Some(c))) if c.code == 1000));
        assert_eq!(t0.elapsed(), MAX_CONNECTION_AGE);
        task.await.expect("session");
    }

    #[tokio::test(start_paused = true)]
    async fn lagging_sessions_skip_and_carry_on() {
        let h = harness(Duration::from_secs(20));
        let (socket, mut client) = mock::socket();
        let mut session = Session::new(h.ctx.universe.clone(), false, false);
        session.subscribe(["btcusdt@trade"]).expect("subscribe");
        let events = h.market.subscribe();
        let trade = |id| {
            MarketEvent::Trade(Trade {
                symbol: 0,
                seq: id,
                trade_id: id,
                price: 1,
                qty: 1,
                taker_buy: true,
                ts_us: 0,
            })
        };
        // Overflow the 16-slot channel before the session reads anything.
        for id in 0..40 {
            let _ = h.market.send(trade(id));
        }
        let task = tokio::spawn(run(socket, h.ctx.clone(), session, events));
        let first: Value =
            serde_json::from_str(&client.next_text().await.expect("trade")).expect("json");
        assert_eq!(first["t"], 24, "the oldest 24 were skipped");
        h.stop.cancel();
        task.await.expect("session");
    }
}
