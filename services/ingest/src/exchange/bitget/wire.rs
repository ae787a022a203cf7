//! Bitget v2 wire types, named after the exchange's fields.

use std::borrow::Cow;

use serde::Deserialize;

/// REST envelope: `{"code":"00000","msg":"success","requestTime":1695808949356,"data":[..]}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Response<T> {
    pub code: String,
    #[serde(default)]
    pub msg: String,
    /// `null` on some errors.
    #[serde(default = "Option::default")]
    pub data: Option<Vec<T>>,
}

/// `GET /api/v2/spot/public/symbols` element.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Symbol<'a> {
    #[serde(borrow)]
    pub symbol: Cow<'a, str>,
    #[serde(borrow)]
    pub base_coin: Cow<'a, str>,
    #[serde(borrow)]
    pub quote_coin: Cow<'a, str>,
    /// `online`, `gray`, `halt` or `offline`.
    #[serde(borrow)]
    pub status: Cow<'a, str>,
}

/// `GET /api/v2/spot/market/tickers` element (only what discovery reads).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Ticker<'a> {
    #[serde(borrow)]
    pub symbol: Cow<'a, str>,
    #[serde(borrow)]
    pub quote_volume: Cow<'a, str>,
}

/// Bitget's error codes are numbers in its documented error events and strings in some
/// client libraries' captures; either is read.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Code<'a> {
    Number(i64),
    Text(#[serde(borrow)] Cow<'a, str>),
}

impl std::fmt::Display for Code<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Code::Number(n) => write!(f, "{n}"),
            Code::Text(t) => f.write_str(t),
        }
    }
}

/// What every WebSocket frame may carry: an event (`subscribe`, `unsubscribe`, `error`) or
/// a push (`action` with `data`) for a channel argument. The `data` is read in a second pass,
/// by channel.
#[derive(Debug, Deserialize)]
pub(super) struct Envelope<'a> {
    #[serde(borrow)]
    pub event: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub action: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub code: Option<Code<'a>>,
    #[serde(borrow)]
    pub msg: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub op: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub arg: Option<Arg<'a>>,
}

/// `{"instType":"SPOT","channel":"ticker","instId":"BTCUSDT"}`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Arg<'a> {
    #[serde(borrow, default)]
    pub inst_type: Cow<'a, str>,
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    #[serde(borrow, default)]
    pub inst_id: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Push<T> {
    pub data: Vec<T>,
}

/// `ticker` (spot): `{"instId":"BTCUSDT","lastPr":"..","bidPr":"..","askPr":"..","bidSz":"..","askSz":"..","ts":"1695702438018",..}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TickerData<'a> {
    #[serde(borrow)]
    pub bid_pr: Cow<'a, str>,
    #[serde(borrow)]
    pub bid_sz: Cow<'a, str>,
    #[serde(borrow)]
    pub ask_pr: Cow<'a, str>,
    #[serde(borrow)]
    pub ask_sz: Cow<'a, str>,
    #[serde(borrow)]
    pub ts: Cow<'a, str>,
}

/// `trade`: `{"ts":"1695709835822","price":"26293.4","size":"0.0013","side":"buy","tradeId":"1000000000"}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TradeData<'a> {
    #[serde(borrow)]
    pub ts: Cow<'a, str>,
    #[serde(borrow)]
    pub price: Cow<'a, str>,
    #[serde(borrow)]
    pub size: Cow<'a, str>,
    #[serde(borrow)]
    pub side: Cow<'a, str>,
    #[serde(borrow)]
    pub trade_id: Cow<'a, str>,
}
