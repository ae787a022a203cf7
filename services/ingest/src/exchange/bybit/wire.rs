//! Bybit v5 wire types, named after the exchange's fields.

use std::borrow::Cow;

use serde::Deserialize;

/// REST envelope: `{"retCode":0,"retMsg":"OK","result":{..},"retExtInfo":{},"time":..}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Response<T> {
    pub ret_code: i64,
    #[serde(default)]
    pub ret_msg: String,
    /// Absent (or `{}`) on errors.
    pub result: Option<T>,
}

/// `GET /v5/market/instruments-info?category=spot` result.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct InstrumentsResult<'a> {
    #[serde(borrow, default)]
    pub list: Vec<InstrumentInfo<'a>>,
    /// Non-empty when another page follows (spot answers in one page).
    #[serde(borrow, default)]
    pub next_page_cursor: Option<Cow<'a, str>>,
}

/// One spot instrument: `{"symbol":"BTCUSDT","baseCoin":"BTC","quoteCoin":"USDT","status":"Trading",..}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct InstrumentInfo<'a> {
    #[serde(borrow)]
    pub symbol: Cow<'a, str>,
    #[serde(borrow)]
    pub base_coin: Cow<'a, str>,
    #[serde(borrow)]
    pub quote_coin: Cow<'a, str>,
    #[serde(borrow)]
    pub status: Cow<'a, str>,
}

/// `GET /v5/market/tickers?category=spot` result.
#[derive(Debug, Deserialize)]
pub(super) struct TickersResult<'a> {
    #[serde(borrow, default)]
    pub list: Vec<Ticker<'a>>,
}

/// One spot ticker; `turnover24h` is the 24 h volume in the quote coin.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Ticker<'a> {
    #[serde(borrow)]
    pub symbol: Cow<'a, str>,
    #[serde(rename = "turnover24h", borrow, default)]
    pub turnover_24h: Option<Cow<'a, str>>,
}

/// What every WebSocket frame may carry: an operation's answer (`op`: subscribe acks and
/// refusals, pongs) or a push for a `topic`. The `data` is read in a second pass, by topic.
#[derive(Debug, Deserialize)]
pub(super) struct Envelope<'a> {
    #[serde(borrow)]
    pub op: Option<Cow<'a, str>>,
    pub success: Option<bool>,
    #[serde(borrow)]
    pub ret_msg: Option<Cow<'a, str>>,
    /// Echo of the request's `req_id` (may be absent or empty).
    #[serde(borrow)]
    pub req_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub topic: Option<Cow<'a, str>>,
}

/// `orderbook.1.<SYM>`: `{"topic":..,"type":"snapshot","ts":..,"data":{..},"cts":..}`.
#[derive(Debug, Deserialize)]
pub(super) struct BookPush<'a> {
    /// `snapshot` (level 1 sends nothing else).
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    pub ts: i64,
    #[serde(borrow)]
    pub data: Book<'a>,
}

/// `{"s":"BTCUSDT","b":[["27450.00","0.500"]],"a":[["27451.00","0.750"]],"u":123456789,"seq":987654321}`.
#[derive(Debug, Deserialize)]
pub(super) struct Book<'a> {
    #[serde(borrow)]
    pub s: Cow<'a, str>,
    #[serde(borrow)]
    pub b: Vec<Vec<Cow<'a, str>>>,
    #[serde(borrow)]
    pub a: Vec<Vec<Cow<'a, str>>>,
    pub u: u64,
}

/// `publicTrade.<SYM>`: `{"topic":..,"type":"snapshot","ts":..,"data":[..]}`.
#[derive(Debug, Deserialize)]
pub(super) struct TradePush<'a> {
    #[serde(borrow)]
    pub data: Vec<Trade<'a>>,
}

/// `{"T":1672304486865,"s":"BTCUSDT","S":"Buy","v":"0.001","p":"16578.50","i":"20f4..","BT":false}`;
/// `S` is the taker's side.
#[derive(Debug, Deserialize)]
pub(super) struct Trade<'a> {
    #[serde(rename = "T")]
    pub time: i64,
    #[serde(borrow)]
    pub s: Cow<'a, str>,
    #[serde(rename = "S", borrow)]
    pub side: Cow<'a, str>,
    #[serde(borrow)]
    pub v: Cow<'a, str>,
    #[serde(borrow)]
    pub p: Cow<'a, str>,
    #[serde(borrow)]
    pub i: Cow<'a, str>,
}
