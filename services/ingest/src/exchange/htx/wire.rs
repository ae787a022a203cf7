//! HTX wire types, named after the exchange's fields (kebab-case where HTX uses it).

use std::borrow::Cow;

use serde::Deserialize;

/// REST envelope: `{"status":"ok","data":[..]}` or
/// `{"status":"error","err-code":"invalid-parameter","err-msg":"..","data":null}`.
#[derive(Debug, Deserialize)]
pub(super) struct Response<'a, T> {
    #[serde(borrow)]
    pub status: Cow<'a, str>,
    #[serde(rename = "err-code", borrow, default)]
    pub err_code: Option<Cow<'a, str>>,
    #[serde(rename = "err-msg", borrow, default)]
    pub err_msg: Option<Cow<'a, str>>,
    #[serde(default = "Option::default")]
    pub data: Option<Vec<T>>,
}

/// `GET /v1/common/symbols` element:
/// `{"base-currency":"btc","quote-currency":"usdt","symbol":"btcusdt","state":"online",..}`.
#[derive(Debug, Deserialize)]
pub(super) struct SymbolInfo<'a> {
    #[serde(borrow)]
    pub symbol: Cow<'a, str>,
    #[serde(rename = "base-currency", borrow)]
    pub base_currency: Cow<'a, str>,
    #[serde(rename = "quote-currency", borrow)]
    pub quote_currency: Cow<'a, str>,
    #[serde(borrow)]
    pub state: Cow<'a, str>,
}

/// `GET /market/tickers` element: `{"symbol":"btcusdt","amount":..,"vol":..,..}`, where
/// `amount` is the 24 h volume in the base currency and `vol` in the quote currency.
#[derive(Debug, Deserialize)]
pub(super) struct Ticker<'a> {
    #[serde(borrow)]
    pub symbol: Cow<'a, str>,
    pub vol: Option<f64>,
}

/// What every (decompressed) WebSocket frame may be: a server ping `{"ping":1492420473027}`,
/// a subscribe answer `{"id":"7","status":"ok","subbed":"market.btcusdt.bbo","ts":..}` or
/// `{"id":"7","status":"error","err-code":"bad-request","err-msg":"..","ts":..}`, or a push
/// `{"ch":"market.btcusdt.bbo","ts":..,"tick":{..}}`. The `tick` is read in a second pass;
/// acks are matched by `id`, so `subbed` is not read.
#[derive(Debug, Deserialize)]
pub(super) struct Envelope<'a> {
    pub ping: Option<u64>,
    #[serde(borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub status: Option<Cow<'a, str>>,
    #[serde(rename = "err-code", borrow)]
    pub err_code: Option<Cow<'a, str>>,
    #[serde(rename = "err-msg", borrow)]
    pub err_msg: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub ch: Option<Cow<'a, str>>,
    pub ts: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Push<T> {
    pub tick: T,
}

/// `market.<sym>.bbo` tick:
/// `{"seqId":161499562790,"ask":16829.51,"askSize":0.707776,"bid":16829.5,"bidSize":1.685945,"quoteTime":1671941599612,"symbol":"btcusdt"}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Bbo {
    #[serde(default)]
    pub seq_id: u64,
    pub ask: f64,
    pub ask_size: f64,
    pub bid: f64,
    pub bid_size: f64,
    pub quote_time: Option<i64>,
}

/// `market.<sym>.trade.detail` tick: `{"id":..,"ts":..,"data":[..]}`.
#[derive(Debug, Deserialize)]
pub(super) struct TradeTick {
    pub data: Vec<TradeData>,
}

/// One trade: `{"id":10232..,"ts":1630994963173,"tradeId":102523573486,"amount":0.006754,
/// "price":52648.62,"direction":"buy"}`. The `id` overflows `u64`, so it is not declared (serde skips it unread);
/// `tradeId` identifies the trade. `direction` is the taker's side.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TradeData {
    pub ts: i64,
    pub trade_id: u64,
    pub amount: f64,
    pub price: f64,
    pub direction: Direction,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Direction {
    Buy,
    Sell,
}
