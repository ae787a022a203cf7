//! BingX wire types, named after the exchange's fields.
//!
//! BingX writes prices and sizes as decimal strings in its examples, but some of its
//! captured frames (ccxt's spot `24hTicker`) and REST bodies carry JSON numbers; every price,
//! size and volume here accepts either ([`Decimal`]).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::value::RawValue;

use super::super::num;

/// A decimal as BingX writes it: a string (`"40125.48"`) or a JSON number, finite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Decimal(pub f64);

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Decimal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal string or number")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Decimal, E> {
                num(s).map(Decimal).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Decimal, E> {
                if v.is_finite() {
                    Ok(Decimal(v))
                } else {
                    Err(E::custom("not finite"))
                }
            }
            #[allow(clippy::cast_precision_loss)]
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Decimal, E> {
                Ok(Decimal(v as f64))
            }
            #[allow(clippy::cast_precision_loss)]
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Decimal, E> {
                Ok(Decimal(v as f64))
            }
        }
        d.deserialize_any(V)
    }
}

/// An id BingX writes as a string (`"t":"33685717"`) or, in some captures, a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Id(pub String);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an id string or integer")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Id, E> {
                Ok(Id(s.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
                Ok(Id(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
                Ok(Id(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// REST envelope: `{"code":0,"msg":"","data":..}`; an error is a nonzero `code` with a `msg`
/// (`{"code":100400,"msg":"Invalid parameters","data":{}}`), `data` then absent or empty.
#[derive(Debug, Deserialize)]
pub(super) struct Response<T> {
    pub code: i64,
    #[serde(default)]
    pub msg: Option<String>,
    #[serde(default = "Option::default")]
    pub data: Option<T>,
}

/// `GET /openApi/spot/v1/common/symbols` `data`: `{"symbols":[..]}`.
#[derive(Debug, Deserialize)]
pub(super) struct Symbols<'a> {
    // Error bodies may carry `"data":{}`: the code is checked after parsing.
    #[serde(borrow, default)]
    pub symbols: Vec<SymbolInfo<'a>>,
}

/// One listed symbol: `{"symbol":"BTC-USDT","minQty":..,"maxQty":..,"minNotional":..,
/// "maxNotional":..,"status":1,"tickSize":..,"stepSize":..,"apiStateSell":true,
/// "apiStateBuy":true,"timeOnline":..}`. `status` 1 is online (0 offline, 5 pre-open,
/// 25 suspended, 29 pre-delisted, 30 delisted); written as a number, accepted as a string.
#[derive(Debug, Deserialize)]
pub(super) struct SymbolInfo<'a> {
    #[serde(borrow)]
    pub symbol: Cow<'a, str>,
    #[serde(default)]
    pub status: Option<serde_json::Value>,
}

/// `GET /openApi/spot/v1/ticker/24hr` element: `{"symbol":"BTC-USDT","openPrice":..,
/// "highPrice":..,"lowPrice":..,"lastPrice":..,"priceChange":..,"priceChangePercent":"..",
/// "volume":..,"quoteVolume":..,"openTime":..,"closeTime":..,"askPrice":..,"askQty":..,
/// "bidPrice":..,"bidQty":..}`; `volume` is base, `quoteVolume` quote.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Ticker<'a> {
    #[serde(borrow)]
    pub symbol: Cow<'a, str>,
    #[serde(default)]
    pub quote_volume: Option<Decimal>,
}

/// What every (decompressed) JSON frame may be:
/// - a server ping `{"ping":"2177c68e4d0e45679965f482929b59c2","time":"2022-06-07T16:27:36.323+0800"}`;
/// - a subscribe answer `{"id":"id1","code":0,"msg":""}` (captured with `"dataType":"",
///   "data":null` or `"msg":"SUCCESS","timestamp":..` too) or a refusal with a nonzero
///   `code` (`{"id":"..","code":100400,"msg":"..","timestamp":..}`, also without `id`);
/// - a push `{"code":0,"dataType":"BTC-USDT@trade","data":{..},"success":true,
///   "timestamp":..}`; `data` is read in a second pass.
#[derive(Debug, Deserialize)]
pub(super) struct Envelope<'a> {
    #[serde(borrow, default)]
    pub ping: Option<Cow<'a, str>>,
    /// The ping's time, to be echoed exactly: a string in the docs, but any JSON value is
    /// taken as it came (a number must not fail the frame, or no pong goes out).
    #[serde(borrow, default)]
    pub time: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub code: Option<i64>,
    #[serde(borrow, default)]
    pub msg: Option<Cow<'a, str>>,
    #[serde(rename = "dataType", borrow, default)]
    pub data_type: Option<Cow<'a, str>>,
    #[serde(default)]
    pub timestamp: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Push<T> {
    pub data: T,
}

/// `<SYMBOL>@bookTicker` `data`: `{"e":"bookTicker","u":..,"E":..,"T":..,"s":"BTC-USDT",
/// "b":"..","B":"..","a":"..","A":".."}`. Only `b`, `B`, `a`, `A` are required: BingX does
/// not document this payload's fields, so the update id `u` and the times `E`/`T` are read
/// when present.
#[derive(Debug, Deserialize)]
pub(super) struct BookTicker {
    #[serde(rename = "b")]
    pub bid: Decimal,
    #[serde(rename = "B")]
    pub bid_qty: Decimal,
    #[serde(rename = "a")]
    pub ask: Decimal,
    #[serde(rename = "A")]
    pub ask_qty: Decimal,
    #[serde(rename = "u", default)]
    pub update_id: u64,
    #[serde(rename = "E", default)]
    pub event_time: Option<i64>,
    #[serde(rename = "T", default)]
    pub time: Option<i64>,
}

/// `<SYMBOL>@trade` `data`: `{"E":1690214529432,"T":1690214529386,"e":"trade","m":true,
/// "p":"29110.19","q":"0.1868","s":"BTC-USDT","t":"57903921"}`. `m` true: the buyer is the
/// maker, so the taker sold; the docs' own example has no `m` (side then unspecified).
#[derive(Debug, Deserialize)]
pub(super) struct Trade {
    #[serde(rename = "t")]
    pub trade_id: Id,
    #[serde(rename = "p")]
    pub price: Decimal,
    #[serde(rename = "q")]
    pub qty: Decimal,
    #[serde(rename = "T", default)]
    pub time: Option<i64>,
    #[serde(rename = "E", default)]
    pub event_time: Option<i64>,
    #[serde(rename = "m", default)]
    pub buyer_is_maker: Option<bool>,
}
