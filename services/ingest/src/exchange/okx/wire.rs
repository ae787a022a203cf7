//! OKX wire types, named after the exchange's fields.

use std::borrow::Cow;

use serde::Deserialize;

/// REST envelope: `{"code":"0","msg":"","data":[..]}`.
#[derive(Debug, Deserialize)]
pub(super) struct Response<T> {
    pub code: String,
    #[serde(default)]
    pub msg: String,
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
}

/// `GET /api/v5/public/instruments?instType=SPOT` element.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Instrument<'a> {
    #[serde(borrow)]
    pub inst_id: Cow<'a, str>,
    #[serde(borrow)]
    pub base_ccy: Cow<'a, str>,
    #[serde(borrow)]
    pub quote_ccy: Cow<'a, str>,
    #[serde(borrow)]
    pub state: Cow<'a, str>,
}

/// `GET /api/v5/market/tickers?instType=SPOT` element.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Ticker<'a> {
    #[serde(borrow)]
    pub inst_id: Cow<'a, str>,
    #[serde(rename = "volCcy24h", borrow)]
    pub vol_ccy_24h: Cow<'a, str>,
}

/// What every WebSocket frame may carry: an event (`subscribe`, `error`, `notice`) or a
/// push for a channel argument. The `data` is read in a second pass, by channel.
#[derive(Debug, Deserialize)]
pub(super) struct Envelope<'a> {
    /// Echo of the request's `id`, on acks and errors.
    #[serde(borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub event: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub msg: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub arg: Option<Arg<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Arg<'a> {
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    #[serde(borrow, default)]
    pub inst_id: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Push<T> {
    pub data: Vec<T>,
}

/// `bbo-tbt`: `{"asks":[["8476.98","415","0","13"]],"bids":[[..]],"ts":"1597026383085","seqId":123456}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Bbo<'a> {
    #[serde(borrow)]
    pub asks: Vec<Vec<Cow<'a, str>>>,
    #[serde(borrow)]
    pub bids: Vec<Vec<Cow<'a, str>>>,
    #[serde(borrow)]
    pub ts: Cow<'a, str>,
    #[serde(default)]
    pub seq_id: i64,
}

/// `trades`: `{"instId":"BTC-USDT","tradeId":"130639474","px":"42219.9","sz":"0.12","side":"buy","ts":"1630048897897"}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TradeData<'a> {
    #[serde(borrow)]
    pub trade_id: Cow<'a, str>,
    #[serde(borrow)]
    pub px: Cow<'a, str>,
    #[serde(borrow)]
    pub sz: Cow<'a, str>,
    #[serde(borrow)]
    pub side: Cow<'a, str>,
    #[serde(borrow)]
    pub ts: Cow<'a, str>,
}
