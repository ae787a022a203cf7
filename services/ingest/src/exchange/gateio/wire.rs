//! Gate.io API v4 wire types, named after the exchange's fields.

use std::borrow::Cow;

use serde::Deserialize;

/// REST error body: `{"label":"INVALID_PARAM_VALUE","message":".."}` (with a non-2xx status).
#[derive(Debug, Deserialize)]
pub(super) struct RestError<'a> {
    #[serde(borrow)]
    pub label: Cow<'a, str>,
    #[serde(borrow, default)]
    pub message: Option<Cow<'a, str>>,
}

/// A REST body: the documented array, or Gate's error object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RestBody<'a, T> {
    List(Vec<T>),
    #[serde(borrow)]
    Error(RestError<'a>),
}

/// `GET /api/v4/spot/currency_pairs` element (more fields are ignored).
#[derive(Debug, Deserialize)]
pub(super) struct CurrencyPair<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow)]
    pub base: Cow<'a, str>,
    #[serde(borrow)]
    pub quote: Cow<'a, str>,
    /// `tradable`, `untradable`, `buyable` or `sellable`.
    #[serde(borrow, default)]
    pub trade_status: Option<Cow<'a, str>>,
}

/// `GET /api/v4/spot/tickers` element: `quote_volume` is the 24 h volume in the quote currency.
#[derive(Debug, Deserialize)]
pub(super) struct Ticker<'a> {
    #[serde(borrow)]
    pub currency_pair: Cow<'a, str>,
    #[serde(borrow, default)]
    pub quote_volume: Option<Cow<'a, str>>,
}

/// What every server frame may carry: an answer to a request (`id`, `event`, `error`) or a
/// channel update (`"event":"update"`). `result` is read in a second pass, by kind.
#[derive(Debug, Deserialize)]
pub(super) struct Envelope<'a> {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(borrow, default)]
    pub channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub event: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub error: Option<WsError<'a>>,
}

/// The `result` of an answer to a subscribe request: `{"status":"success"}` (or `null`).
#[derive(Debug, Deserialize)]
pub(super) struct Answer<'a> {
    #[serde(borrow, default)]
    pub result: Option<Status<'a>>,
}

/// The `result` of a channel update.
#[derive(Debug, Deserialize)]
pub(super) struct Push<T> {
    pub result: T,
}

/// `"error":{"code":2,"message":"unknown currency pair GIBBERISH_USD"}`.
#[derive(Debug, Deserialize)]
pub(super) struct WsError<'a> {
    #[serde(default)]
    pub code: Option<i64>,
    #[serde(borrow, default)]
    pub message: Option<Cow<'a, str>>,
}

/// `"result":{"status":"success"}` of a subscribe answer.
#[derive(Debug, Deserialize)]
pub(super) struct Status<'a> {
    #[serde(borrow, default)]
    pub status: Option<Cow<'a, str>>,
}

/// `spot.book_ticker`: `{"t":1606293275123,"u":48733182,"s":"BTC_USDT","b":"19177.79",
/// "B":"0.0003341504","a":"19179.38","A":"0.09"}`.
#[derive(Debug, Deserialize)]
pub(super) struct BookTicker<'a> {
    pub t: i64,
    #[serde(default)]
    pub u: u64,
    #[serde(borrow)]
    pub s: Cow<'a, str>,
    #[serde(borrow)]
    pub b: Cow<'a, str>,
    #[serde(rename = "B", borrow)]
    pub bid_qty: Cow<'a, str>,
    #[serde(borrow)]
    pub a: Cow<'a, str>,
    #[serde(rename = "A", borrow)]
    pub ask_qty: Cow<'a, str>,
}

/// `spot.trades`: `{"id":309143071,"create_time":1606292218,"create_time_ms":"1606292218213.4578",
/// "side":"sell","currency_pair":"GT_USDT","amount":"16.47","price":"0.4705"}` (newer pushes add
/// `range`, `sequence_id`, `text`: ignored).
#[derive(Debug, Deserialize)]
pub(super) struct Trade<'a> {
    pub id: u64,
    #[serde(default)]
    pub create_time: Option<i64>,
    #[serde(borrow, default)]
    pub create_time_ms: Option<Millis<'a>>,
    #[serde(borrow)]
    pub side: Cow<'a, str>,
    #[serde(borrow)]
    pub currency_pair: Cow<'a, str>,
    #[serde(borrow)]
    pub amount: Cow<'a, str>,
    #[serde(borrow)]
    pub price: Cow<'a, str>,
}

/// Milliseconds as Gate writes them: a decimal string with a fraction (documented), or a
/// JSON number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Millis<'a> {
    #[serde(borrow)]
    Text(Cow<'a, str>),
    Int(u64),
    Float(f64),
}
