//! Kraken wire types, named after the exchange's fields: REST (`/0/public/...`, legacy asset
//! codes) and WebSocket v2 (JSON objects, prices as JSON numbers, RFC 3339 times).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

/// REST envelope: `{"error":[],"result":{..}}`; on failure `{"error":["EQuery:Unknown asset
/// pair"]}` (no `result`).
#[derive(Debug, Deserialize)]
pub(super) struct Response<'a, T> {
    #[serde(borrow, default)]
    pub error: Vec<Cow<'a, str>>,
    #[serde(default = "Option::default")]
    pub result: Option<BTreeMap<String, T>>,
}

/// `GET /0/public/AssetPairs` value, keyed by the pair key (`XXBTZUSD`):
/// `{"altname":"XBTUSD","wsname":"XBT/USD","base":"XXBT","quote":"ZUSD","status":"online",..}`.
#[derive(Debug, Deserialize)]
pub(super) struct AssetPair<'a> {
    #[serde(borrow, default)]
    pub wsname: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub base: Cow<'a, str>,
    #[serde(borrow)]
    pub quote: Cow<'a, str>,
    #[serde(borrow, default)]
    pub status: Option<Cow<'a, str>>,
}

/// `GET /0/public/Ticker` value, keyed by the pair key: `v` is the base volume `[today, last
/// 24 h]`, `p` the volume-weighted average price `[today, last 24 h]`, both decimal strings.
#[derive(Debug, Deserialize)]
pub(super) struct Ticker<'a> {
    #[serde(borrow, default)]
    pub v: Vec<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub p: Vec<Cow<'a, str>>,
}

/// What every WebSocket v2 frame may be: a push `{"channel":"ticker","type":"update",
/// "data":[..]}` (also `heartbeat`, `status`), or a method response
/// `{"method":"subscribe","req_id":1,"success":true,"result":{"channel":"ticker",
/// "symbol":"BTC/USD",..},"time_in":..,"time_out":..}`, a refusal
/// `{"method":"subscribe","req_id":1,"success":false,"error":"Currency pair not supported
/// XYZ/USD","symbol":"XYZ/USD",..}`, or `{"method":"pong","req_id":7,..}`. The `data` is read
/// in a second pass, by channel.
#[derive(Debug, Deserialize)]
pub(super) struct Envelope<'a> {
    #[serde(borrow)]
    pub channel: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub method: Option<Cow<'a, str>>,
    pub req_id: Option<u64>,
    pub success: Option<bool>,
    /// `Error` in the message-rate refusal third-party clients report
    /// (`{"Error":"Exceeded msg rate"}`).
    #[serde(borrow, alias = "Error")]
    pub error: Option<Cow<'a, str>>,
    /// The symbol of a refused subscription (top level on errors).
    #[serde(borrow)]
    pub symbol: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub result: Option<AckResult<'a>>,
}

/// `result` of a subscribe ack: one per symbol.
#[derive(Debug, Deserialize)]
pub(super) struct AckResult<'a> {
    #[serde(borrow)]
    pub channel: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub symbol: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Push<T> {
    pub data: Vec<T>,
}

/// `status` element: `{"api_version":"v2","connection_id":..,"system":"online","version":".."}`.
#[derive(Debug, Deserialize)]
pub(super) struct Status<'a> {
    #[serde(borrow)]
    pub system: Cow<'a, str>,
}

/// `ticker` element: `{"symbol":"BTC/USD","bid":105944.2,"bid_qty":2.5,"ask":105944.3,
/// "ask_qty":3.2,"last":..,"volume":..,"vwap":..,"low":..,"high":..,"change":..,
/// "change_pct":..,"timestamp":"2022-12-25T09:30:59.123456Z"}`; the rest is not read.
/// `timestamp` is in the docs' examples but not in their field list: optional.
#[derive(Debug, Deserialize)]
pub(super) struct Tick<'a> {
    #[serde(borrow)]
    pub symbol: Cow<'a, str>,
    pub bid: f64,
    pub bid_qty: f64,
    pub ask: f64,
    pub ask_qty: f64,
    #[serde(borrow, default)]
    pub timestamp: Option<Cow<'a, str>>,
}

/// `trade` element: `{"symbol":"MATIC/USD","side":"buy","price":0.5147,"qty":6423.46326,
/// "ord_type":"limit","trade_id":4665846,"timestamp":"2023-09-25T07:48:36.925533Z"}`; `side` is
/// the taker's.
#[derive(Debug, Deserialize)]
pub(super) struct TradeData<'a> {
    #[serde(borrow)]
    pub symbol: Cow<'a, str>,
    #[serde(borrow)]
    pub side: Cow<'a, str>,
    pub price: f64,
    pub qty: f64,
    pub trade_id: u64,
    #[serde(borrow)]
    pub timestamp: Cow<'a, str>,
}
