//! KuCoin wire types, named after the exchange's fields.

use std::borrow::Cow;

use serde::Deserialize;

/// REST envelope: `{"code":"200000","data":..}`; errors carry `msg`.
#[derive(Debug, Deserialize)]
pub(super) struct Response<T> {
    pub code: Cow<'static, str>,
    #[serde(default)]
    pub msg: Option<String>,
    pub data: Option<T>,
}

/// `GET /api/v2/symbols` element:
/// `{"symbol":"BTC-USDT","baseCurrency":"BTC","quoteCurrency":"USDT","enableTrading":true,..}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Symbol<'a> {
    #[serde(borrow)]
    pub symbol: Cow<'a, str>,
    #[serde(borrow)]
    pub base_currency: Cow<'a, str>,
    #[serde(borrow)]
    pub quote_currency: Cow<'a, str>,
    #[serde(default)]
    pub enable_trading: bool,
}

/// `GET /api/v1/market/allTickers` data: `{"time":1602832092060,"ticker":[..]}`.
#[derive(Debug, Deserialize)]
pub(super) struct AllTickers<'a> {
    #[serde(borrow)]
    pub ticker: Vec<Ticker<'a>>,
}

/// One 24 h ticker: `{"symbol":"BTC-USDT","vol":"..","volValue":"..",..}`; `volValue` is in
/// the quote currency. It may be `null` for an idle symbol.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Ticker<'a> {
    #[serde(borrow)]
    pub symbol: Cow<'a, str>,
    #[serde(borrow, default)]
    pub vol_value: Option<Cow<'a, str>>,
}

/// `POST /api/v1/bullet-public` data.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Bullet {
    pub token: String,
    pub instance_servers: Vec<InstanceServer>,
}

/// `{"endpoint":"wss://ws-api-spot.kucoin.com/","encrypt":true,"protocol":"websocket","pingInterval":18000,"pingTimeout":10000}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct InstanceServer {
    pub endpoint: String,
    #[serde(default)]
    pub protocol: Option<String>,
    pub ping_interval: u64,
    #[serde(default)]
    pub ping_timeout: Option<u64>,
}

/// What every WebSocket frame carries: `type` (`welcome`, `ack`, `pong`, `error`, `message`),
/// the echoed `id`, and for pushes `topic` and `subject`. `data` is read in a second pass.
#[derive(Debug, Deserialize)]
pub(super) struct Envelope<'a> {
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub topic: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub subject: Option<Cow<'a, str>>,
}

/// `{"id":"1","type":"error","code":404,"data":"topic /market/ticker:FOO-USDT is not found"}`.
#[derive(Debug, Deserialize)]
pub(super) struct ErrorFrame {
    #[serde(default)]
    pub code: Option<serde_json::Value>,
    #[serde(default)]
    pub data: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Push<T> {
    pub data: T,
}

/// `trade.ticker`: `{"sequence":"1545896668986","price":"0.08","size":"0.011","bestAsk":"0.08",
/// "bestAskSize":"0.18","bestBid":"0.049","bestBidSize":"0.036","time":1704873323416}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TickerData<'a> {
    #[serde(borrow, default)]
    pub sequence: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub best_ask: Cow<'a, str>,
    #[serde(borrow)]
    pub best_ask_size: Cow<'a, str>,
    #[serde(borrow)]
    pub best_bid: Cow<'a, str>,
    #[serde(borrow)]
    pub best_bid_size: Cow<'a, str>,
    /// Milliseconds. KuCoin's schema (docs-new 3470063w0) names it `time`, and captured
    /// frames carry `time`; only the docs' example writes `Time`, which is accepted too.
    #[serde(rename = "time", alias = "Time")]
    pub time: i64,
}

/// `trade.l3match`: `{"sequence":"..","symbol":"BTC-USDT","side":"buy","price":"..","size":"..",
/// "tradeId":"..","time":"1545913818099033203"}`; `time` is nanoseconds, `side` the taker's.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct MatchData<'a> {
    #[serde(borrow)]
    pub side: Cow<'a, str>,
    #[serde(borrow)]
    pub price: Cow<'a, str>,
    #[serde(borrow)]
    pub size: Cow<'a, str>,
    #[serde(borrow)]
    pub trade_id: Cow<'a, str>,
    #[serde(borrow)]
    pub time: Cow<'a, str>,
}
