//! Binance wire types, named after the exchange's fields.

use std::borrow::Cow;

use serde::Deserialize;

/// `GET /api/v3/exchangeInfo` (only what discovery needs):
/// `{"symbols":[{"symbol":"BTCUSDT","status":"TRADING","baseAsset":"BTC","quoteAsset":"USDT",..}]}`
#[derive(Debug, Deserialize)]
pub(super) struct ExchangeInfo<'a> {
    #[serde(borrow)]
    pub symbols: Vec<SymbolInfo<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SymbolInfo<'a> {
    #[serde(borrow)]
    pub symbol: Cow<'a, str>,
    #[serde(borrow)]
    pub status: Cow<'a, str>,
    #[serde(borrow)]
    pub base_asset: Cow<'a, str>,
    #[serde(borrow)]
    pub quote_asset: Cow<'a, str>,
}

/// `GET /api/v3/ticker/24hr`: `[{"symbol":"BTCUSDT","quoteVolume":"123.4",..}]`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Ticker24h<'a> {
    #[serde(borrow)]
    pub symbol: Cow<'a, str>,
    #[serde(borrow)]
    pub quote_volume: Cow<'a, str>,
}

/// Any frame on a raw stream connection. One struct with optional fields, because the three
/// kinds share no tag: bookTicker `{"u":..,"s":..,"b":..,"B":..,"a":..,"A":..}`, trade
/// `{"e":"trade","E":..,"s":..,"t":..,"p":..,"q":..,"T":..,"m":..}`, and responses
/// `{"result":null,"id":1}` or `{"error":{"code":2,"msg":".."},"id":1}`.
#[derive(Debug, Deserialize)]
pub(super) struct Frame<'a> {
    #[serde(borrow)]
    pub e: Option<Cow<'a, str>>,
    pub u: Option<u64>,
    #[serde(borrow)]
    pub s: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub b: Option<Cow<'a, str>>,
    #[serde(rename = "B", borrow)]
    pub bid_qty: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub a: Option<Cow<'a, str>>,
    #[serde(rename = "A", borrow)]
    pub ask_qty: Option<Cow<'a, str>>,
    pub t: Option<u64>,
    #[serde(borrow)]
    pub p: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub q: Option<Cow<'a, str>>,
    #[serde(rename = "T")]
    pub trade_time: Option<i64>,
    pub m: Option<bool>,
    pub id: Option<serde_json::Value>,
    pub error: Option<ErrorBody>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ErrorBody {
    pub code: i64,
    pub msg: String,
}
